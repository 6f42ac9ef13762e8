import json
import math

import pytest
import torch
from PIL import Image

from conftest import photo_like
from turbosr.metrics import evaluate_folders, get_metrics, psnr, rgb_to_y, ssim
from turbosr.reports import write_results


def test_psnr_hand_computed_and_identical():
    image = torch.full((1, 3, 8, 8), 100 / 255)
    assert math.isinf(float(psnr(image, image)))
    for k in (1, 5, 20):
        shifted = torch.full((1, 3, 8, 8), (100 + k) / 255)
        assert float(psnr(shifted, image)) == pytest.approx(20 * math.log10(255 / k), abs=1e-9)


def test_psnr_of_known_noise_level():
    g = torch.Generator().manual_seed(0)
    image = torch.full((1, 3, 256, 256), 0.5)
    noisy = image + torch.randn(image.shape, generator=g) * (5 / 255)
    assert float(psnr(noisy, image)) == pytest.approx(20 * math.log10(255 / 5), abs=0.1)


def test_y_channel_of_pure_colours():
    colours = torch.tensor([[0.0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]]).view(5, 3, 1, 1)
    y = rgb_to_y(colours).flatten() * 255
    assert y.tolist() == pytest.approx([16.0, 235.0, 16 + 65.481, 16 + 128.553, 16 + 24.966], abs=1e-4)


def test_ssim_properties():
    g = torch.Generator().manual_seed(1)
    image = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=48, mode="bicubic").clamp(0, 1)
    assert float(ssim(image, image)) == pytest.approx(1.0)
    slightly = (image + 0.02 * torch.randn(image.shape, generator=g)).clamp(0, 1)
    heavily = (image + 0.2 * torch.randn(image.shape, generator=g)).clamp(0, 1)
    assert float(ssim(slightly, image)) == pytest.approx(float(ssim(image, slightly)), abs=1e-12)
    assert 1 > float(ssim(slightly, image)) > float(ssim(heavily, image))


def test_crop_border_ignores_the_border():
    image = torch.rand(1, 3, 20, 20)
    damaged = image.clone()
    damaged[..., :3, :] = 0
    assert math.isinf(float(psnr(damaged, image, crop_border=3)))
    assert not math.isinf(float(psnr(damaged, image, crop_border=2)))


def test_size_mismatch_and_unknown_metric():
    with pytest.raises(ValueError, match="differ in size"):
        psnr(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 5))
    with pytest.raises(ValueError, match="unknown metric"):
        get_metrics(["psnr", "vibes"])


def test_evaluate_folders_schema_and_outputs(tmp_path):
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    for name, value in (("a", 100), ("b", 50)):
        Image.new("RGB", (16, 16), (value,) * 3).save(tmp_path / "ref" / f"{name}.png")
        Image.new("RGB", (16, 16), (value + 5,) * 3).save(tmp_path / "pred" / f"{name}.png")
    results = evaluate_folders(tmp_path / "pred", tmp_path / "ref", ["psnr", "ssim_y"], crop_border=2)
    assert results["count"] == 2
    assert set(results["per_image"]) == {"a.png", "b.png"}
    assert results["mean"]["psnr"] == pytest.approx(20 * math.log10(255 / 5))
    assert results["metrics"]["psnr"]["higher_is_better"] is True
    written = write_results(results, tmp_path / "res.json")
    assert [p.suffix for p in written] == [".json", ".csv", ".md"]
    assert json.loads((tmp_path / "res.json").read_text())["count"] == 2
    assert "psnr" in (tmp_path / "res.md").read_text()
    (tmp_path / "ref" / "c.png").write_bytes((tmp_path / "ref" / "a.png").read_bytes())
    with pytest.raises(ValueError, match="no prediction"):
        evaluate_folders(tmp_path / "pred", tmp_path / "ref", ["psnr"])
    Image.new("RGB", (8, 8)).save(tmp_path / "pred" / "c.png")
    with pytest.raises(ValueError, match="c.png"):
        evaluate_folders(tmp_path / "pred", tmp_path / "ref", ["psnr"])


def test_grid_figure_of_a_photo_is_about_one_and_a_faint_grid_is_caught():
    from turbosr.metrics.artifacts import grid_figure

    photo = photo_like()
    clean = float(grid_figure(photo, 8))
    assert 1.0 <= clean < 1.03
    pattern = torch.zeros_like(photo[:, :1])
    pattern[..., :, ::8] = 3 / 255  # a faint column pattern of period 8 (3 grey levels)
    pattern[..., ::8, :] += 3 / 255
    gridded = float(grid_figure((photo + pattern).clamp(0, 1), 8))
    assert gridded > clean + 0.03  # the default rule's tolerance (docs/realism.md)
    assert float(grid_figure((photo + pattern).clamp(0, 1), 7)) < gridded  # another period does not see it


def test_grid_figure_ignores_a_pure_shift_of_the_phase():
    from turbosr.metrics.artifacts import grid_figure

    photo = photo_like()
    pattern = torch.zeros_like(photo[:, :1])
    pattern[..., :, ::8] = 4 / 255
    figures = [float(grid_figure((photo + pattern.roll(shift, dims=-1)).clamp(0, 1), 8)) for shift in range(8)]
    assert max(figures) - min(figures) < 0.01  # the same pattern on any phase scores the same
    rolled = float(grid_figure(photo.roll((3, 5), dims=(-2, -1)), 8))  # the whole image moved: the phases permute
    assert abs(rolled - float(grid_figure(photo, 8))) < 0.01


def _diagonal_hatch(shape: torch.Size, levels: float, shift: int = 0) -> torch.Tensor:
    """A pattern stamped on every 8 x 8 patch that runs diagonally (like a perceptual loss's hatch)."""
    rows, columns = torch.meshgrid(torch.arange(shape[-2]), torch.arange(shape[-1]), indexing="ij")
    return torch.cos(2 * math.pi * ((rows + columns + shift) % 8) / 8) * levels / 255


def test_lattice_figure_sees_a_diagonal_hatch_the_grid_figure_misses():
    from turbosr.metrics.artifacts import grid_figure, lattice_figure

    photo = photo_like()
    hatched = (photo + _diagonal_hatch(photo.shape, 2)).clamp(0, 1)
    clean = float(lattice_figure(photo, 8))
    assert clean < 10  # a photo: estimator noise only, a few dB
    assert float(lattice_figure(hatched, 8)) > clean + 3  # the rule's tolerance (docs/realism.md)
    assert float(grid_figure(hatched, 8)) < float(grid_figure(photo, 8)) + 0.03  # the 1-D figure is blind to it
    assert float(lattice_figure(hatched, 7)) < clean + 3  # another lattice does not see it


def test_lattice_figure_sees_any_stamped_patch_pattern_and_ignores_its_phase():
    from turbosr.metrics.artifacts import lattice_figure

    photo = photo_like()
    stamp = torch.randn(8, 8, generator=torch.Generator().manual_seed(1)) * 1.5 / 255  # one random 8 x 8 stamp
    stamped = (photo + stamp.repeat(32, 32)).clamp(0, 1)
    assert float(lattice_figure(stamped, 8)) > float(lattice_figure(photo, 8)) + 3
    figures = [float(lattice_figure((photo + _diagonal_hatch(photo.shape, 3, shift)).clamp(0, 1), 8))
               for shift in range(8)]
    assert max(figures) - min(figures) < 1.0  # the same pattern on any phase: the same peak (dB)
    with pytest.raises(ValueError, match="at least 34 pixels"):
        lattice_figure(photo[..., :33, :33], 8)


def test_grid_is_an_eval_metric_with_the_references_own_value(tmp_path):
    from turbosr.image_files import save_image

    photo = photo_like()
    save_image(photo, tmp_path / "ref" / "a.png")
    save_image(photo, tmp_path / "pred" / "a.png")
    results = evaluate_folders(tmp_path / "pred", tmp_path / "ref", ["psnr", "grid", "lattice"], grid_period=8)
    assert results["mean"]["grid"] == pytest.approx(results["reference_mean"]["grid"], abs=1e-12)
    assert results["mean"]["lattice"] == pytest.approx(results["reference_mean"]["lattice"], abs=1e-12)
    assert "psnr" not in results["reference_mean"]
    with pytest.raises(ValueError, match="period"):
        get_metrics(["grid"], grid_period=1)
