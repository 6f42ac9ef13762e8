"""The metrics by name: ``METRICS`` (per image) and ``FOLDER_METRICS`` (distribution distances).

Every metric declares its direction, range and whether it needs a reference.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from turbosr.metrics.pixel import psnr, quantize, ssim


@dataclass(frozen=True)
class Metric:
    """A per-image metric: ``fn(prediction, reference, crop_border)`` -> (B,)."""

    name: str
    fn: Callable[..., torch.Tensor]
    higher_is_better: bool
    needs_reference: bool
    value_range: tuple[float, float]
    score_reference: bool = False  # also report the reference images' own value (what "good" is for this metric)

    def __call__(self, prediction: torch.Tensor, reference: torch.Tensor | None = None, crop_border: int = 0
                 ) -> torch.Tensor:
        if self.needs_reference and reference is None:
            raise ValueError(f"metric {self.name} needs a reference image")
        return self.fn(prediction, reference, crop_border)


def _niqe(prediction: torch.Tensor, reference: torch.Tensor | None, crop_border: int) -> torch.Tensor:
    from turbosr.metrics.niqe import niqe

    return niqe(prediction, crop_border)


def _lpips(net: str) -> Callable[..., torch.Tensor]:
    def compute(prediction: torch.Tensor, reference: torch.Tensor | None, crop_border: int) -> torch.Tensor:
        from turbosr.metrics.lpips import lpips

        if crop_border:
            prediction = prediction[..., crop_border:-crop_border, crop_border:-crop_border]
            reference = reference[..., crop_border:-crop_border, crop_border:-crop_border]  # type: ignore[index]
        return lpips(quantize(prediction), quantize(reference), net)  # type: ignore[arg-type]

    return compute


def _dists(prediction: torch.Tensor, reference: torch.Tensor | None, crop_border: int) -> torch.Tensor:
    from turbosr.metrics.dists import dists

    if crop_border:
        prediction = prediction[..., crop_border:-crop_border, crop_border:-crop_border]
        reference = reference[..., crop_border:-crop_border, crop_border:-crop_border]  # type: ignore[index]
    return dists(quantize(prediction), quantize(reference))  # type: ignore[arg-type]


def _artifact(figure: str, period: int) -> Callable[..., torch.Tensor]:
    def compute(prediction: torch.Tensor, reference: torch.Tensor | None, crop_border: int) -> torch.Tensor:
        from turbosr.metrics import artifacts

        return getattr(artifacts, figure)(prediction, period, crop_border)

    return compute


DEFAULT_GRID_PERIOD = 8  # the built-in models' latent factor (and JPEG's block size)

# Per-image metrics by name; each factory takes the options a metric may use (today the artifact period).
METRICS: dict[str, Callable[..., Metric]] = {
    "psnr": lambda **_: Metric("psnr", lambda p, r, c: psnr(p, r, c), True, True, (0.0, math.inf)),
    "psnr_y": lambda **_: Metric("psnr_y", lambda p, r, c: psnr(p, r, c, y_channel=True), True, True, (0.0, math.inf)),
    "ssim": lambda **_: Metric("ssim", lambda p, r, c: ssim(p, r, c), True, True, (-1.0, 1.0)),
    "ssim_y": lambda **_: Metric("ssim_y", lambda p, r, c: ssim(p, r, c, y_channel=True), True, True, (-1.0, 1.0)),
    "niqe": lambda **_: Metric("niqe", _niqe, False, False, (0.0, math.inf)),
    "lpips": lambda **_: Metric("lpips", _lpips("alex"), False, True, (0.0, math.inf)),
    "lpips_vgg": lambda **_: Metric("lpips_vgg", _lpips("vgg"), False, True, (0.0, math.inf)),
    "dists": lambda **_: Metric("dists", _dists, False, True, (0.0, 1.0)),
    # periodic-artifact figure (metrics/artifacts.py): about 1.0 for photos; compare with the reference's own
    "grid": lambda grid_period=DEFAULT_GRID_PERIOD, **_: Metric("grid", _artifact("grid_figure", grid_period), False,
                                                                 False, (1.0, math.inf), score_reference=True),
    # its 2-D counterpart (any orientation, e.g. a diagonal hatch): the strongest spectral peak on the period's
    # lattice over its neighbours, in dB; a few dB for photos; compare with the reference's own
    "lattice": lambda grid_period=DEFAULT_GRID_PERIOD, **_: Metric(
        "lattice", _artifact("lattice_figure", grid_period), False, False, (-math.inf, math.inf),
        score_reference=True),
}


def _fid(pred_dir: Path, ref_dir: Path) -> float:
    from turbosr.metrics.fid import fid_folders

    return fid_folders(pred_dir, ref_dir)


def _patch_fid(pred_dir: Path, ref_dir: Path) -> float:
    from turbosr.metrics.fid import fid_folders

    return fid_folders(pred_dir, ref_dir, patch=64)


def _patch_kid(pred_dir: Path, ref_dir: Path) -> float:
    from turbosr.metrics.fid import kid_folders

    return 1000.0 * kid_folders(pred_dir, ref_dir, patch=64)


# Folder-level metrics (a distribution distance, not a per-image value); lower is better.
FOLDER_METRICS: dict[str, Callable[[Path, Path], float]] = {
    "fid": _fid,
    "patch_fid": _patch_fid,  # 64 x 64 non-overlapping patches as samples, for small test sets
    "patch_kid": _patch_kid,  # KID x 1000 on the same patches (unbiased: stable where FID is not)
}


METRIC_NAMES = (*METRICS, *FOLDER_METRICS)  # every name `turbosr eval --metrics` accepts


def get_metrics(names: Sequence[str], grid_period: int = DEFAULT_GRID_PERIOD) -> list[Metric]:
    """Per-image metric objects for ``names`` (folder metrics are skipped), with a clear error for unknown names."""
    unknown = [n for n in names if n not in METRIC_NAMES]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(METRIC_NAMES)}")
    if grid_period < 2:
        raise ValueError(f"the artifact (grid) period must be at least 2 pixels, got {grid_period}")
    return [METRICS[n](grid_period=grid_period) for n in names if n in METRICS]
