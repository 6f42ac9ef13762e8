import pytest
import torch

from turbosr.colorfix import COLOR_FIXES, adain_color_fix, wavelet_color_fix, wavelet_decompose
from turbosr.metrics import psnr


@pytest.fixture
def image():
    g = torch.Generator().manual_seed(0)
    base = torch.rand(1, 3, 16, 16, generator=g)
    return torch.nn.functional.interpolate(base, size=64, mode="bicubic").clamp(0.05, 0.95)


@pytest.mark.parametrize("fix", [adain_color_fix, wavelet_color_fix])
def test_colour_shift_is_corrected(image, fix):
    shifted = (image * torch.tensor([1.0, 0.8, 0.9]).view(1, 3, 1, 1) + torch.tensor([0.05, 0.0, -0.04]).view(1, 3, 1, 1))
    shifted = shifted.clamp(0, 1)
    fixed = fix(shifted, image)
    assert float(psnr(fixed, image)) > float(psnr(shifted, image)) + 5
    assert fixed.shape == image.shape and 0 <= float(fixed.min()) and float(fixed.max()) <= 1


def test_identity_when_image_equals_reference(image):
    assert torch.allclose(adain_color_fix(image, image), image, atol=1e-4)
    assert torch.allclose(wavelet_color_fix(image, image), image, atol=1e-6)


def test_wavelet_bands_sum_back_to_the_image(image):
    details, low = wavelet_decompose(image, levels=4)
    assert torch.allclose(sum(details) + low, image, atol=1e-6)


def test_smaller_reference_and_dtype(image):
    small = torch.nn.functional.interpolate(image, size=32, mode="area")
    for name, fix in COLOR_FIXES.items():
        out = fix(image.double(), small)
        assert out.dtype == torch.float64 and out.shape == image.shape, name
