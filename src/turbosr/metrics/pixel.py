"""PSNR and SSIM by the conventions of SR papers (BasicSR / MATLAB).

Inputs are (B, 3, H, W) RGB tensors in [0, 1]; they are first rounded to 8-bit levels (as SR papers evaluate
saved uint8 images), ``crop_border`` pixels are removed on each side, and the ``y_channel`` variants use the
BT.601 luma of MATLAB's ``rgb2ycbcr`` (Y in [16, 235] / 255).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Round [0, 1] images to the 256 levels of an 8-bit file (values stay in [0, 1])."""
    return (images.clamp(0, 1) * 255.0).round() / 255.0


def rgb_to_y(images: torch.Tensor) -> torch.Tensor:
    """MATLAB rgb2ycbcr luma: Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255 for RGB in [0, 1]; (B, 1, H, W)."""
    weights = torch.tensor([65.481, 128.553, 24.966], device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (16.0 + (images * weights).sum(dim=1, keepdim=True)) / 255.0


def _prepare(images: torch.Tensor, crop_border: int, y_channel: bool) -> torch.Tensor:
    images = quantize(images.double())
    if crop_border:
        images = images[..., crop_border:-crop_border, crop_border:-crop_border]
    return rgb_to_y(images) if y_channel else images


def psnr(prediction: torch.Tensor, reference: torch.Tensor, crop_border: int = 0, y_channel: bool = False
         ) -> torch.Tensor:
    """PSNR in dB on the 0-255 scale, per image (B,); identical images give +inf."""
    _check_pair(prediction, reference)
    x, y = _prepare(prediction, crop_border, y_channel), _prepare(reference, crop_border, y_channel)
    mse = ((x - y) * 255.0).pow(2).flatten(1).mean(1)
    return torch.where(mse == 0, torch.full_like(mse, math.inf), 10.0 * torch.log10(255.0**2 / mse))


def _gaussian_kernel(size: int = 11, sigma: float = 1.5, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    coords = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(prediction: torch.Tensor, reference: torch.Tensor, crop_border: int = 0, y_channel: bool = False
         ) -> torch.Tensor:
    """SSIM (Wang et al. 2004) as BasicSR computes it: 0-255 scale, 11x11 Gaussian window (sigma 1.5), 'valid'
    filtering, C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2, mean over pixels and channels; per image (B,)."""
    _check_pair(prediction, reference)
    x = _prepare(prediction, crop_border, y_channel) * 255.0
    y = _prepare(reference, crop_border, y_channel) * 255.0
    channels = x.shape[1]
    kernel = _gaussian_kernel().to(x.device).expand(channels, 1, 11, 11)

    def filt(image: torch.Tensor) -> torch.Tensor:
        return F.conv2d(image, kernel, groups=channels)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = filt(x), filt(y)
    sigma_x = filt(x * x) - mu_x**2
    sigma_y = filt(y * y) - mu_y**2
    sigma_xy = filt(x * y) - mu_x * mu_y
    value = ((2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sigma_x + sigma_y + c2))
    return value.flatten(1).mean(1)


def _check_pair(prediction: torch.Tensor, reference: torch.Tensor) -> None:
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and reference {tuple(reference.shape)} differ in size")
