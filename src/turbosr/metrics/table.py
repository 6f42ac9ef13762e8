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


METRICS: dict[str, Callable[[], Metric]] = {
    "psnr": lambda: Metric("psnr", lambda p, r, c: psnr(p, r, c), True, True, (0.0, math.inf)),
    "psnr_y": lambda: Metric("psnr_y", lambda p, r, c: psnr(p, r, c, y_channel=True), True, True, (0.0, math.inf)),
    "ssim": lambda: Metric("ssim", lambda p, r, c: ssim(p, r, c), True, True, (-1.0, 1.0)),
    "ssim_y": lambda: Metric("ssim_y", lambda p, r, c: ssim(p, r, c, y_channel=True), True, True, (-1.0, 1.0)),
    "niqe": lambda: Metric("niqe", _niqe, False, False, (0.0, math.inf)),
    "lpips": lambda: Metric("lpips", _lpips("alex"), False, True, (0.0, math.inf)),
    "lpips_vgg": lambda: Metric("lpips_vgg", _lpips("vgg"), False, True, (0.0, math.inf)),
    "dists": lambda: Metric("dists", _dists, False, True, (0.0, 1.0)),
}


def _fid(pred_dir: Path, ref_dir: Path) -> float:
    from turbosr.metrics.fid import fid_folders

    return fid_folders(pred_dir, ref_dir)


def _patch_fid(pred_dir: Path, ref_dir: Path) -> float:
    from turbosr.metrics.fid import fid_folders

    return fid_folders(pred_dir, ref_dir, patch=64)


# Folder-level metrics (a distribution distance, not a per-image value); lower is better.
FOLDER_METRICS: dict[str, Callable[[Path, Path], float]] = {
    "fid": _fid,
    "patch_fid": _patch_fid,  # 64 x 64 non-overlapping patches as samples, for small test sets
}


def get_metrics(names: Sequence[str]) -> list[Metric]:
    """Per-image metric objects for ``names`` (folder metrics are skipped), with a clear error for unknown names."""
    unknown = [n for n in names if n not in METRICS and n not in FOLDER_METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join([*METRICS, *FOLDER_METRICS])}")
    return [METRICS[n]() for n in names if n in METRICS]
