"""Colour correction against colour shift (as StableSR and AddSR ship): match the output's low-frequency colour
to a reference (the bicubic-upsampled input). Pure tensor functions on (B, 3, H, W) images in [0, 1]."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def _match_size(reference: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if reference.shape[-2:] == like.shape[-2:]:
        return reference.to(like.dtype)
    return F.interpolate(reference.to(like.dtype), size=like.shape[-2:], mode="bicubic", align_corners=False)


def adain_color_fix(image: torch.Tensor, reference: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-channel mean and std of ``image`` set to those of ``reference`` (adaptive instance normalisation)."""
    reference = _match_size(reference, image)
    mean_i, std_i = image.mean(dim=(-2, -1), keepdim=True), image.std(dim=(-2, -1), keepdim=True)
    mean_r, std_r = reference.mean(dim=(-2, -1), keepdim=True), reference.std(dim=(-2, -1), keepdim=True)
    return ((image - mean_i) / (std_i + eps) * std_r + mean_r).clamp(0, 1)


def wavelet_decompose(image: torch.Tensor, levels: int = 5) -> tuple[list[torch.Tensor], torch.Tensor]:
    """A trous wavelet decomposition: ``levels`` detail bands and the low-frequency residual; they sum to ``image``."""
    kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], device=image.device,
                          dtype=image.dtype) / 16
    kernel = kernel.view(1, 1, 3, 3).repeat(image.shape[1], 1, 1, 1)
    details = []
    low = image
    for level in range(levels):
        dilation = 2**level
        padded = F.pad(low, (dilation,) * 4, mode="replicate")
        blurred = F.conv2d(padded, kernel, groups=image.shape[1], dilation=dilation)
        details.append(low - blurred)
        low = blurred
    return details, low


def wavelet_color_fix(image: torch.Tensor, reference: torch.Tensor, levels: int = 5) -> torch.Tensor:
    """Keep ``image``'s high-frequency bands, take ``reference``'s lowest-frequency band."""
    reference = _match_size(reference, image)
    details, _ = wavelet_decompose(image, levels)
    _, reference_low = wavelet_decompose(reference, levels)
    return (sum(details) + reference_low).clamp(0, 1)


def no_color_fix(image: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Identity."""
    return image


COLOR_FIXES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "none": no_color_fix,
    "adain": adain_color_fix,
    "wavelet": wavelet_color_fix,
}
