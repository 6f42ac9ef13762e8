"""The periodic-artifact figure: how much stronger image gradients are on one phase of a period than on the rest.

A latent space with a factor-f patch grid (or a stride-f upsampler) turns every latent error into a pattern of
period f; JPEG adds 8-px blocks. For each phase p in [0, period), take the mean |horizontal gradient of Y| over the
pixel columns x with x mod period = p (the step between columns x and x + 1), and the mean |vertical gradient|
over the rows of that phase. Per direction the figure is strongest phase / median phase; the two directions are
averaged. A photo scores about 1.0 (no phase is special); a visible grid 1.1 and more. A pure shift of the image
permutes the phases and leaves the figure unchanged (max and median do not depend on the order).

The grid figure looks at column and row phases only, so a pattern that runs diagonally (a checker or diamond hatch
stamped on every latent patch) moves all of them alike and goes unseen. The lattice figure looks at the whole 2-D
pattern in the frequency domain: anything stamped on every period x period patch is periodic on that lattice, so
its energy sits on the frequencies (k / period, l / period). Welch's averaged periodogram (Welch 1967) of the
Laplacian of Y (which flattens a photo's 1/f spectrum) is compared, at each of those frequencies but zero, with the
median of its 24 nearest frequencies; the figure is the strongest such peak, in dB (so a mean over images is not
ruled by one photo with a strong regular structure). A photo has no lattice and scores a few dB, set by estimator
noise and its own regular structure (windows, tiles); a pattern stamped alike on every patch, of any orientation,
raises it (a diagonal pattern of 1 grey level adds about 5 dB to 128-px crops). Block edges whose strength changes
from block to block (JPEG) spread along whole lines of frequencies rather than onto the lattice's points: those
are the grid figure's to catch, so the two are reported together. A shift changes only the spectrum's phases.
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


LATTICE_TILE = 32  # Welch tile side in pixels (rounded up to a multiple of the period): 1/32 cycle per pixel bins


def lattice_power(y: torch.Tensor, period: int = 8) -> torch.Tensor:
    """(B, H, W) luma -> (B, tile, tile): Welch's averaged periodogram of its Laplacian (32-px Hann tiles, rounded up
    to a multiple of ``period``, at half overlap); the lattice frequencies are every ``tile // period``-th bin."""
    if period < 2:
        raise ValueError(f"the artifact period must be at least 2 pixels, got {period}")
    tile = -(-LATTICE_TILE // period) * period
    if min(y.shape[-2:]) < tile + 2:
        raise ValueError(f"the lattice figure needs at least {tile + 2} pixels per side")
    laplacian = 4 * y[:, 1:-1, 1:-1] - y[:, :-2, 1:-1] - y[:, 2:, 1:-1] - y[:, 1:-1, :-2] - y[:, 1:-1, 2:]
    tiles = laplacian.unfold(1, tile, tile // 2).unfold(2, tile, tile // 2)  # (B, rows, columns, tile, tile)
    tiles = tiles - tiles.mean(dim=(-2, -1), keepdim=True)
    window = torch.hann_window(tile, periodic=False, dtype=y.dtype, device=y.device)
    return torch.fft.fft2(tiles * window[:, None] * window).abs().square().mean(dim=(1, 2))


def on_lattice(power: torch.Tensor, period: int) -> torch.Tensor:
    """(B, tile, tile) spectrum -> (B, period² - 1): its values at (k / period, l / period), all but zero."""
    step = power.shape[-1] // period
    return power[:, ::step, ::step].flatten(1)[:, 1:]


def lattice_ratios(y: torch.Tensor, period: int = 8) -> torch.Tensor:
    """(B, H, W) luma -> (B, period² - 1): at each lattice frequency but zero, the power of :func:`lattice_power`
    over the median of its 24 neighbouring frequencies."""
    power = lattice_power(y, period)
    neighbours = torch.stack([power.roll((dy, dx), dims=(1, 2)) for dy in range(-2, 3) for dx in range(-2, 3)
                              if (dy, dx) != (0, 0)], dim=1)
    return on_lattice(power / neighbours.median(dim=1).values.clamp_min(1e-12), period)


def lattice_figure(images: torch.Tensor, period: int = 8, crop_border: int = 0) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> (B,) strongest spectral peak on the period's lattice frequencies over the
    median of its 24 neighbouring frequencies, in dB (rounded to 8-bit levels first, like a file)."""
    y = rgb_to_y(quantize(images.double()))[:, 0]
    if crop_border:
        y = y[..., crop_border:-crop_border, crop_border:-crop_border]
    return 10 * lattice_ratios(y, period).max(dim=1).values.clamp_min(1e-12).log10()
