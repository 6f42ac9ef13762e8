"""The periodic-artifact figure: how much stronger image gradients are on one phase of a period than on the rest.

A latent space with a factor-f patch grid (or a stride-f upsampler) turns every latent error into a pattern of
period f; JPEG adds 8-px blocks. For each phase p in [0, period), take the mean |horizontal gradient of Y| over the
pixel columns x with x mod period = p (the step between columns x and x + 1), and the mean |vertical gradient|
over the rows of that phase. Per direction the figure is strongest phase / median phase; the two directions are
averaged. A photo scores about 1.0 (no phase is special); a visible grid 1.1 and more. A pure shift of the image
permutes the phases and leaves the figure unchanged (max and median do not depend on the order).
"""

from __future__ import annotations

import torch

from turbosr.metrics.pixel import quantize, rgb_to_y


def _phase_ratio(gradient: torch.Tensor, period: int) -> torch.Tensor:
    """gradient (B, N) mean |gradient| per line -> (B,) strongest phase over the median phase."""
    usable = gradient.shape[1] // period * period
    if usable < period:
        raise ValueError(f"the artifact figure needs at least {period + 1} pixels per side")
    phases = gradient[:, :usable].reshape(gradient.shape[0], -1, period).mean(1)  # (B, period)
    ordered = phases.sort(1).values
    median = ordered[:, (period - 1) // 2: period // 2 + 1].mean(1)  # the middle value, or the middle two's mean
    return ordered[:, -1] / median.clamp_min(1e-12)


def grid_figure(images: torch.Tensor, period: int = 8, crop_border: int = 0) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> (B,) periodic-artifact figure (rounded to 8-bit levels first, like a file)."""
    if period < 2:
        raise ValueError(f"the artifact period must be at least 2 pixels, got {period}")
    y = rgb_to_y(quantize(images.double()))[:, 0]
    if crop_border:
        y = y[..., crop_border:-crop_border, crop_border:-crop_border]
    horizontal = (y[..., :, 1:] - y[..., :, :-1]).abs().mean(dim=-2)  # (B, W - 1): one value per column step
    vertical = (y[..., 1:, :] - y[..., :-1, :]).abs().mean(dim=-1)  # (B, H - 1): one value per row step
    return (_phase_ratio(horizontal, period) + _phase_ratio(vertical, period)) / 2
