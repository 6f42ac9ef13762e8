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
