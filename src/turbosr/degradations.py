"""Degradation models: MATLAB-compatible bicubic resize (the SR papers' "bicubic" setting) in torch.

All functions take (B, C, H, W) float tensors on any device and follow the input's device and dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def cubic(x: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``), support [-2, 2]."""
    absx = x.abs()
    absx2, absx3 = absx**2, absx**3
    near = (a + 2) * absx3 - (a + 3) * absx2 + 1
    far = a * absx3 - 5 * a * absx2 + 8 * a * absx - 4 * a
    return torch.where(absx <= 1, near, torch.where(absx < 2, far, torch.zeros_like(x)))


def resize_weights(in_length: int, out_length: int, scale: float, antialias: bool = True
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """MATLAB ``imresize`` contributions along one axis: (indices, weights), each (out_length, taps).

    Output pixel x (1-based) maps to input coordinate u = x / scale + 0.5 * (1 - 1 / scale). When shrinking with
    antialiasing the kernel is stretched by 1 / scale (and scaled by ``scale``). Indices outside the input are
    mirrored symmetrically (edge pixel repeated), as MATLAB does. Weights in each row sum to 1.
    """
    kernel_width = 4.0
    stretch = scale < 1 and antialias
    if stretch:
        kernel_width /= scale
    x = torch.arange(1, out_length + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]
    distance = u[:, None] - indices
    weights = scale * cubic(distance * scale) if stretch else cubic(distance)
    weights = weights / weights.sum(dim=1, keepdim=True)
    # symmetric padding: ... 2 1 | 1 2 ... n | n n-1 ...
    mirror = torch.cat([torch.arange(in_length), torch.arange(in_length - 1, -1, -1)])
    zero_based = (indices - 1).long() % (2 * in_length)
    indices = mirror[zero_based]
    keep = weights.abs().sum(dim=0) > 0  # drop taps that are zero for every output pixel
    return indices[:, keep], weights[:, keep]


def _resize_axis(images: torch.Tensor, axis: int, out_length: int, scale: float, antialias: bool) -> torch.Tensor:
    in_length = images.shape[axis]
    indices, weights = resize_weights(in_length, out_length, scale, antialias)
    indices = indices.to(images.device)
    weights = weights.to(images.device, images.dtype)
    moved = images.movedim(axis, -1)  # (..., in_length)
    gathered = moved[..., indices]  # (..., out_length, taps)
    return (gathered * weights).sum(-1).movedim(-1, axis)


def imresize(images: torch.Tensor, scale: float | None = None, size: tuple[int, int] | None = None,
             antialias: bool = True) -> torch.Tensor:
    """MATLAB-compatible bicubic resize of (B, C, H, W); give ``scale`` or ``size`` (H, W). No clamping.

    Height is resized first, then width (MATLAB's order for equal factors). Output size for a scale is
    ceil(H * scale) x ceil(W * scale), as in MATLAB.
    """
    height, width = images.shape[-2:]
    if (scale is None) == (size is None):
        raise ValueError("imresize needs exactly one of scale or size")
    if size is not None:
        out_h, out_w = size
        scale_h, scale_w = out_h / height, out_w / width
    else:
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        out_h, out_w = math.ceil(height * scale), math.ceil(width * scale)
        scale_h = scale_w = scale
    if out_h < 1 or out_w < 1:
        raise ValueError(f"resize to {out_h}x{out_w} is empty")
    result = _resize_axis(images, -2, out_h, scale_h, antialias)
    return _resize_axis(result, -1, out_w, scale_w, antialias)


def bicubic_degrade(hq: torch.Tensor, scale: int, generator: torch.Generator | None = None,
                    quantize: bool = False) -> torch.Tensor:
    """HR (B, C, H, W) in [0, 1] -> LQ (B, C, H/scale, W/scale): MATLAB bicubic with antialiasing, clamped.

    ``quantize`` rounds to 8-bit levels like saving the LQ image as PNG. ``generator`` is unused (deterministic).
    """
    if hq.shape[-2] % scale or hq.shape[-1] % scale:
        raise ValueError(f"image size {tuple(hq.shape[-2:])} is not divisible by the scale {scale}")
    lq = imresize(hq, 1.0 / scale).clamp(0, 1)
    return (lq * 255).round() / 255 if quantize else lq


def upsample_lq(lq: torch.Tensor, scale: int) -> torch.Tensor:
    """LQ (B, C, h, w) -> bicubic-upsampled (B, C, h*scale, w*scale) in [0, 1] (the SR model's condition)."""
    return imresize(lq, float(scale)).clamp(0, 1)


Degradation = Callable[..., torch.Tensor]

DEGRADATIONS: dict[str, Degradation] = {
    "bicubic": bicubic_degrade,
}
