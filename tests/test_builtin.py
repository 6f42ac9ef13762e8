"""The built-in model is a product: it loads offline, upscales exactly x4 and beats bicubic on photos that are
not in its training data (the bundled samples come from scikit-image, the corpus from Debian packages)."""

import pytest
import torch

from turbosr import SRPipeline, builtin_model_dir
from turbosr.corpus import list_samples, sample_path
from turbosr.degradations import bicubic_degrade, upsample_lq
from turbosr.image_files import load_image
from turbosr.metrics import psnr


@pytest.fixture(scope="module")
def builtin():
    try:
        return SRPipeline.from_pretrained(builtin_model_dir(4))
    except FileNotFoundError as error:
        pytest.fail(f"the built-in x4 model must ship with turbosr: {error}")


@pytest.mark.parametrize("name", list_samples())
def test_builtin_beats_bicubic_on_unseen_photos(builtin, name):
    hq = load_image(sample_path(name)).rgb
    hq = hq[..., : hq.shape[-2] // 4 * 4, : hq.shape[-1] // 4 * 4]
    lq = bicubic_degrade(hq, 4, quantize=True)
    out = builtin(lq, generator=torch.Generator().manual_seed(0))
    assert out.shape == hq.shape
    gain = float(psnr(out, hq, 4, y_channel=True)) - float(psnr(upsample_lq(lq, 4), hq, 4, y_channel=True))
    assert gain > 0.2, f"{name}: only {gain:.2f} dB over bicubic"


def test_builtin_is_sharper_than_bicubic(builtin):
    """Mean |Laplacian| of the output is closer to the HR photo's than bicubic's is (visible detail)."""
    hq = load_image(sample_path("coffee")).rgb[..., :100, :148]
    lq = bicubic_degrade(hq, 4, quantize=True)
    out = builtin(lq, generator=torch.Generator().manual_seed(0))
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)

    def detail(image):
        return float(torch.nn.functional.conv2d(image.mean(1, keepdim=True), kernel).abs().mean())

    assert detail(upsample_lq(lq, 4)) < detail(out) <= detail(hq) * 1.5


def builtin_folders():
    from turbosr.weights import WEIGHTS_DIR, installed_builtins

    return [WEIGHTS_DIR / name for name in installed_builtins()]


def test_a_killed_packaging_runs_staging_folder_is_not_a_model(tmp_path, monkeypatch):
    from turbosr import weights

    for name in ("x4", ".x4.staging"):  # package_builtin.py stages the new folder as .<name>.staging
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    assert weights.installed_builtins() == ["x4"]


TOLERANCE = 2e-4  # largest block-mean change (0..1 range) of a pinned output that is not a change of behaviour


@pytest.mark.parametrize("folder", builtin_folders(), ids=lambda p: p.name)
def test_builtin_output_is_pinned(folder):
    """Each built-in's one-step output on every bundled sample (seed 0) matches the fingerprint recorded when it was
    packaged (32x32 block means, turbosr.reports.output_fingerprint). Refactoring must not move them; a new model
    records new ones (scripts/package_builtin.py). The tolerance is far above float noise between CPUs and below
    the smallest change of behaviour we could think of: another noise seed (3e-3 to 5e-3 on the first x4 model,
    5e-4 on the x4 of 2026-12-03, whose one-step UNet has learned to nearly ignore its noise), which the test
    checks is noticed. Block means of float32 outputs differ between CPUs by about 1e-6."""
    import json

    from turbosr.corpus import list_samples
    from turbosr.reports import fingerprint_distance, output_fingerprint

    measurements = json.loads((folder / "measurements.json").read_text())
    recorded = measurements["fingerprints"]
    assert sorted(recorded) == list_samples()
    pipeline = SRPipeline.from_pretrained(folder)
    for sample, expected in recorded.items():
        out = pipeline(load_image(sample_path(sample)).rgb, num_steps=1,
                       generator=torch.Generator().manual_seed(measurements["seed"]))
        error = fingerprint_distance(output_fingerprint(out), expected)
        assert error < TOLERANCE, f"{folder.name} on {sample} changed by {error:.5f}"
    other_seed = pipeline(load_image(sample_path(sample)).rgb, num_steps=1,
                          generator=torch.Generator().manual_seed(measurements["seed"] + 1))
    assert fingerprint_distance(output_fingerprint(other_seed), expected) > TOLERANCE


def test_model_cards_are_generated_from_their_measurements():
    """Each built-in card is exactly what render_card makes of its measurements.json (no hand edits), and the
    measurements describe the weights that are actually there."""
    import json

    from turbosr.reports import MODEL_FILES, folder_digest
    from turbosr.weights.card import render_card

    folders = builtin_folders()
    assert folders
    for folder in folders:
        measurements = json.loads((folder / "measurements.json").read_text())
        assert (folder / "README.md").read_text() == render_card(measurements), f"{folder.name}: card edited"
        assert measurements["model"]["digest"] == folder_digest(folder, MODEL_FILES), f"{folder.name}: stale"


def test_builtin_weights_fit_the_repository_budget():
    """All built-in weights together stay within 40 MB, so the repository plus a GPU bundle fit a 64 MiB transfer."""
    total = sum(f.stat().st_size for folder in builtin_folders() for f in folder.glob("*.safetensors"))
    assert total <= 40 * 10**6, f"built-in weights take {total / 1e6:.1f} MB"


def test_packaging_reuses_a_baseline_only_for_the_same_pairs_metrics_and_software():

    from turbosr.reports import software_versions
    from turbosr.weights import packaging as script
    pairs = {"lq_digest": "a", "ref_digest": "b"}
    card = {"versions": software_versions(), "evaluations": [{"pairs": pairs, "scores": {
        "turbosr (1 step)": {"psnr_y": 30.0, "grid": 1.0}, "bicubic": {"psnr_y": 27.0, "grid": 1.1},
        "span_x4": {"psnr_y": 29.0}, "HR": {"grid": 1.05}}}]}
    # our own rows never; span_x4 lacks the grid figure; HR (the photos' own grid) is measured with our rows
    assert script.reusable_baselines(card, pairs, ["psnr_y", "grid"]) == {"bicubic": {"psnr_y": 27.0, "grid": 1.1}}
    assert script.reusable_baselines(card, pairs, ["psnr_y"]).keys() == {"bicubic", "span_x4"}  # HR: no psnr_y
    assert script.reusable_baselines(card, {"lq_digest": "a", "ref_digest": "c"}, ["psnr_y"]) == {}
    assert script.reusable_baselines({**card, "versions": {"torch": "0"}}, pairs, ["psnr_y"]) == {}
