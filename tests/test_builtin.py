"""The built-in model is a product: it loads offline, upscales exactly x4 and beats bicubic on photos that are
not in its training data (the bundled samples come from scikit-image, the corpus from Debian packages)."""

import pytest
import torch

from turbosr import SRPipeline, builtin_model_dir
from turbosr.corpus import list_samples, sample_path
from turbosr.degradations import bicubic_degrade, upsample_lq
from turbosr.image import load_image
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


# sha256 (first 16 hex digits) of the built-in model's uint8 output on each bundled sample (one step, seed 0),
# keyed by the digest of the model folder's weights and config. Refactoring must not change these; a new
# built-in model changes both the key and the values, on purpose, in the same commit.
PINNED_OUTPUTS = {
    "x4": ("d2e07c170f5d9f39", {"astronaut": "636dbbc2bb9cb45e", "chelsea": "b983c56aa1687201",
                                "coffee": "de74aa31c512d914"}),
}


@pytest.mark.parametrize("name", sorted(PINNED_OUTPUTS))
def test_builtin_output_is_pinned(name):
    import hashlib

    from turbosr.reports import MODEL_FILES, folder_digest
    from turbosr.weights import WEIGHTS_DIR

    weights_digest, expected = PINNED_OUTPUTS[name]
    assert folder_digest(WEIGHTS_DIR / name, MODEL_FILES) == weights_digest, "the built-in model changed"
    pipeline = SRPipeline.from_pretrained(WEIGHTS_DIR / name)
    for sample, digest in expected.items():
        out = pipeline(load_image(sample_path(sample)).rgb, generator=torch.Generator().manual_seed(0))
        pixels = (out.clamp(0, 1) * 255).round().to(torch.uint8).numpy().tobytes()
        assert hashlib.sha256(pixels).hexdigest()[:16] == digest, f"{name} on {sample} changed"


def test_model_cards_are_generated_from_their_measurements():
    """Each built-in card is exactly what render_card makes of its measurements.json (no hand edits), and the
    measurements describe the weights that are actually there."""
    import json

    from turbosr.reports import MODEL_FILES, folder_digest
    from turbosr.weights import WEIGHTS_DIR
    from turbosr.weights.card import render_card

    folders = sorted(p for p in WEIGHTS_DIR.iterdir() if (p / "config.json").is_file())
    assert folders
    for folder in folders:
        measurements = json.loads((folder / "measurements.json").read_text())
        assert (folder / "README.md").read_text() == render_card(measurements), f"{folder.name}: card edited"
        assert measurements["model"]["digest"] == folder_digest(folder, MODEL_FILES), f"{folder.name}: stale"
