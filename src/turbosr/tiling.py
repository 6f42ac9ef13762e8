"""Tile planning and weighted blending, model-agnostic (used for latent denoising, encoding and decoding).

StableSR's aggregation sampling: a large input is covered by overlapping tiles; a function (denoiser step,
encoder, decoder) runs on one tile at a time and the outputs are fused with Gaussian weights that fall off towards
tile borders (and to ~0 at tile edges inside the image, where a neighbour covers), normalised by the summed
weights. Only one tile's output and two accumulators exist at a time, so
the networks' working memory depends on the tile size, not on the image size.

For a network with a known, bounded receptive field (the learned latent decoder, which has no normalisation
layers) there is an exact alternative, ``aggregation="crop"``: the image is cut into non-overlapping cores, each is
computed with a halo of ``overlap`` input pixels of real context on every side that has a neighbour, and only
the core of each result is kept. With a halo at least the receptive radius this equals the untiled result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import torch


@dataclass(frozen=True)
class Tile:
    """A half-open window [y0, y1) x [x0, x1) of the input."""

    y0: int
    x0: int
    y1: int
    x1: int


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)  # the last tile sits flush with the border: no tiny tiles
    return starts


def plan_tiles(height: int, width: int, tile: int, overlap: int) -> list[Tile]:
    """Tiles of ``tile`` x ``tile`` (or the whole side when smaller) with at least ``overlap`` shared pixels."""
    if tile <= 0:
        raise ValueError(f"tile size must be positive, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"tile overlap must be in [0, tile), got {overlap} for tile {tile}")
    return [Tile(y, x, min(y + tile, height), min(x + tile, width))
            for y in _starts(height, tile, overlap) for x in _starts(width, tile, overlap)]


def gaussian_weights(height: int, width: int, sigma_fraction: float = 0.3, *,
                     device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Separable Gaussian centred on the tile, (1, 1, height, width), strictly positive, peak 1."""

    def axis(length: int) -> torch.Tensor:
        coords = torch.arange(length, device=device, dtype=torch.float64) - (length - 1) / 2
        sigma = max(sigma_fraction * length, 1e-3)
        return torch.exp(-0.5 * (coords / sigma) ** 2)

    weights = axis(height)[:, None] * axis(width)[None, :]
    return weights.clamp_min(1e-12).to(dtype or torch.float32).view(1, 1, height, width)


def stablesr_weights(height: int, width: int, *, device: torch.device | str | None = None,
                     dtype: torch.dtype | None = None) -> torch.Tensor:
    """StableSR's released tile weights (aggregation sampling, sec. 3.4): a Gaussian of variance 0.01 over the
    unit tile, g(u) = exp(-(u - c)^2 / (2 * 0.01 * T^2)), with the reference's centres kept as they are:
    c = (T - 1) / 2 along x but T / 2 along y (a half-pixel shift down). Computed in float64, (1, 1, h, w)."""

    def axis(length: int, centre: float) -> torch.Tensor:
        coords = torch.arange(length, device=device, dtype=torch.float64)
        return torch.exp(-((coords - centre) ** 2) / (2 * 0.01 * length**2))

    weights = axis(height, height / 2)[:, None] * axis(width, (width - 1) / 2)[None, :]
    return weights.to(dtype or torch.float32).view(1, 1, height, width)


def edge_ramps(window: Tile, height: int, width: int, margin: int, *, device: torch.device | str | None = None,
               dtype: torch.dtype | None = None) -> torch.Tensor:
    """(1, 1, h, w) factor that falls linearly to ~0 over ``margin`` pixels at tile edges INSIDE the image.

    A network's output is least trustworthy at a tile edge (it saw padding there, not the neighbouring
    content); every interior edge lies inside a neighbour's overlap, so down-weighting it removes seams.
    Edges on the image border keep full weight.
    """

    def axis(start: int, stop: int, length: int) -> torch.Tensor:
        size = stop - start
        ramp = torch.ones(size, device=device, dtype=torch.float64)
        if margin <= 0:
            return ramp
        rising = (torch.arange(size, device=device, dtype=torch.float64) + 0.5) / margin
        if start > 0:
            ramp = torch.minimum(ramp, rising.clamp(max=1.0))
        if stop < length:
            ramp = torch.minimum(ramp, rising.flip(0).clamp(max=1.0))
        return ramp

    ramps = axis(window.y0, window.y1, height)[:, None] * axis(window.x0, window.x1, width)[None, :]
    return ramps.to(dtype or torch.float32).view(1, 1, *ramps.shape)


def plan_cores(height: int, width: int, tile: int, halo: int) -> list[tuple[Tile, Tile]]:
    """(core, window) pairs: cores of ``tile`` x ``tile`` (smaller at the bottom/right) that partition the image,
    each with its window = the core grown by ``halo`` pixels on every side, clipped to the image."""
    if tile <= 0 or halo < 0:
        raise ValueError(f"tile must be positive and the halo >= 0, got tile {tile}, halo {halo}")
    pairs = []
    for y in range(0, height, tile):
        for x in range(0, width, tile):
            core = Tile(y, x, min(y + tile, height), min(x + tile, width))
            window = Tile(max(y - halo, 0), max(x - halo, 0), min(core.y1 + halo, height), min(core.x1 + halo, width))
            pairs.append((core, window))
    return pairs


# How overlapping tile outputs are joined: "gaussian" (turbosr: sigma 0.3 x tile, and ramps to ~0 at tile edges
# inside the image), "stablesr" (StableSR's released weights: a Gaussian of variance 0.01 over the unit tile,
# sigma 0.1 x tile, its off-centre rows kept, no ramps), "uniform" (plain averaging), "crop" (exact cores with a halo, no blending).
AGGREGATIONS = ("gaussian", "stablesr", "uniform", "crop")


def tiled_map(fn: Callable[[torch.Tensor, Tile], torch.Tensor], x: torch.Tensor, tile: int, overlap: int,
              out_scale: float = 1.0, aggregation: str = "gaussian", rows: tuple[int, int] | None = None) -> torch.Tensor:
    """Apply ``fn(x_tile, tile)`` over tiles of ``x`` (B, C, H, W) and join the outputs.

    ``fn`` maps a (B, C, h, w) tile to (B, C', h * out_scale, w * out_scale); ``out_scale`` is an integer
    (e.g. 8 for a decoder) or 1 / integer (e.g. 1/8 for an encoder). ``aggregation`` "gaussian", "stablesr" or
    "uniform" blends tiles overlapping by ``overlap`` pixels (AGGREGATIONS); "crop" computes non-overlapping cores with a halo of ``overlap``
    pixels and keeps the cores (exact for a network whose receptive radius is at most the halo); with ``rows``
    (a, b), multiples of ``tile``, only the cores of input rows [a, b) are computed and their output returned:
    a horizontal strip of the whole result, bit for bit (the same windows), for streaming.
    If the whole input fits in one tile, ``fn`` is called once on it (exact fast path).
    """
    height, width = x.shape[-2:]
    if rows is not None and aggregation != "crop":
        raise ValueError("rows= needs aggregation='crop' (blended tiles have no final rows before their neighbours)")
    if height <= tile and width <= tile and rows is None:
        return fn(x, Tile(0, 0, height, width))
    ratio = Fraction(out_scale).limit_denominator(64)
    if ratio.numerator != 1 and ratio.denominator != 1:
        raise ValueError(f"out_scale must be an integer or 1/integer, got {out_scale}")
    for name, value in (("height", height), ("width", width), ("tile", tile), ("overlap", overlap)):
        if (value * ratio).denominator != 1:
            raise ValueError(f"{name} {value} is not divisible by {ratio.denominator} (out_scale {out_scale})")
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {aggregation!r}")
    if aggregation == "crop":
        return _cropped_map(fn, x, tile, overlap, ratio, rows)
    output: torch.Tensor | None = None
    total: torch.Tensor | None = None
    for window in plan_tiles(height, width, tile, overlap):
        result = fn(x[..., window.y0:window.y1, window.x0:window.x1], window)
        oy0, ox0 = int(window.y0 * ratio), int(window.x0 * ratio)
        oy1, ox1 = int(window.y1 * ratio), int(window.x1 * ratio)
        if result.shape[-2:] != (oy1 - oy0, ox1 - ox0):
            raise ValueError(f"fn returned {tuple(result.shape[-2:])} for a tile expected to give {(oy1 - oy0, ox1 - ox0)}")
        if output is None:
            output = result.new_zeros(*result.shape[:2], int(height * ratio), int(width * ratio))
            total = result.new_zeros(1, 1, int(height * ratio), int(width * ratio))
        if aggregation == "uniform":
            w = result.new_ones(1, 1, oy1 - oy0, ox1 - ox0)
        elif aggregation == "stablesr":
            w = stablesr_weights(oy1 - oy0, ox1 - ox0, device=result.device, dtype=result.dtype)
        else:
            w = gaussian_weights(oy1 - oy0, ox1 - ox0, 0.3, device=result.device, dtype=result.dtype)
        if aggregation != "stablesr":
            w = w * edge_ramps(Tile(oy0, ox0, oy1, ox1), int(height * ratio), int(width * ratio),
                               int(overlap * ratio) // 2, device=result.device, dtype=result.dtype)
        output[..., oy0:oy1, ox0:ox1] += result * w
        total[..., oy0:oy1, ox0:ox1] += w
    assert output is not None and total is not None
    return output.div_(total)  # in place: no second full-size buffer


def _cropped_map(fn: Callable[[torch.Tensor, Tile], torch.Tensor], x: torch.Tensor, tile: int, halo: int,
                 ratio: Fraction, rows: tuple[int, int] | None = None) -> torch.Tensor:
    """``tiled_map`` with ``aggregation="crop"``: each core's result, cut out of its window's result (only the cores
    of input rows ``rows``, when given, placed from row 0 of the output)."""
    height, width = x.shape[-2:]
    first, last = rows if rows is not None else (0, height)
    if first % tile or not (first < last <= height) or (last % tile and last != height):
        raise ValueError(f"rows {rows} must be a range of whole tile rows of a {height}-row input (tile {tile})")
    output: torch.Tensor | None = None
    shift = int(first * ratio)
    for core, window in plan_cores(height, width, tile, halo):
        if not first <= core.y0 < last:
            continue
        result = fn(x[..., window.y0:window.y1, window.x0:window.x1], window)
        expected = (int((window.y1 - window.y0) * ratio), int((window.x1 - window.x0) * ratio))
        if result.shape[-2:] != expected:
            raise ValueError(f"fn returned {tuple(result.shape[-2:])} for a tile expected to give {expected}")
        if output is None:
            output = result.new_empty(*result.shape[:2], int((last - first) * ratio), int(width * ratio))
        top, left = int((core.y0 - window.y0) * ratio), int((core.x0 - window.x0) * ratio)
        size_y, size_x = int((core.y1 - core.y0) * ratio), int((core.x1 - core.x0) * ratio)
        y, x0 = int(core.y0 * ratio) - shift, int(core.x0 * ratio)
        output[..., y:y + size_y, x0:x0 + size_x] = result[..., top:top + size_y, left:left + size_x]
    assert output is not None
    return output
