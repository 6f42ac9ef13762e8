"""Image-quality metrics by the conventions of SR papers (BasicSR / MATLAB), and folder evaluation.

Every metric declares its direction, range and whether it needs a reference; ``METRICS`` maps names to
factories. Inputs are (B, 3, H, W) RGB tensors in [0, 1]; they are first rounded to 8-bit levels (as SR papers
evaluate saved uint8 images), ``crop_border`` pixels are removed on each side, and "_y" variants use the
BT.601 luma of MATLAB's ``rgb2ycbcr`` (Y in [16, 235] / 255).
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from turbosr.checkpoint import atomic_write_bytes


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


def match_files(pred_dir: Path, ref_dir: Path) -> list[tuple[Path, Path]]:
    """Pairs (prediction, reference) matched by file stem; errors for empty folders or missing partners."""
    from turbosr.data import list_images

    predictions = {p.stem: p for p in list_images(Path(pred_dir))}
    references = {p.stem: p for p in list_images(Path(ref_dir))}
    missing = sorted(set(references) - set(predictions))
    if missing:
        raise ValueError(f"{len(missing)} reference image(s) have no prediction in {pred_dir}, e.g. {missing[0]}")
    return [(predictions[stem], references[stem]) for stem in sorted(references)]


def evaluate_folders(pred_dir: Path, ref_dir: Path, metrics: Sequence[str], crop_border: int = 0) -> dict[str, Any]:
    """Score every prediction against its reference; returns the JSON-able results dict."""
    from turbosr.data import read_rgb_uint8

    chosen = get_metrics(metrics)
    per_image: dict[str, dict[str, float]] = {}
    for prediction_path, reference_path in match_files(pred_dir, ref_dir):
        prediction = read_rgb_uint8(prediction_path).unsqueeze(0).double() / 255
        reference = read_rgb_uint8(reference_path).unsqueeze(0).double() / 255
        if prediction.shape != reference.shape:
            raise ValueError(f"{prediction_path.name}: prediction is {prediction.shape[-1]}x{prediction.shape[-2]}, "
                             f"reference is {reference.shape[-1]}x{reference.shape[-2]}")
        per_image[reference_path.name] = {m.name: float(m(prediction, reference, crop_border)[0]) for m in chosen}
    results = summarise(per_image, chosen, crop_border)
    for name in metrics:
        if name in FOLDER_METRICS:
            results["mean"][name] = FOLDER_METRICS[name](Path(pred_dir), Path(ref_dir))
            results["metrics"][name] = {"higher_is_better": False, "needs_reference": True, "folder_level": True}
    return results


def summarise(per_image: dict[str, dict[str, float]], chosen: Sequence[Metric], crop_border: int,
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Results dict: means, per-image values, metric directions, count (+ ``extra`` such as timing)."""
    mean = {m.name: sum(v[m.name] for v in per_image.values()) / max(1, len(per_image)) for m in chosen}
    return {
        "mean": mean,
        "per_image": per_image,
        "metrics": {m.name: {"higher_is_better": m.higher_is_better, "needs_reference": m.needs_reference}
                    for m in chosen},
        "crop_border": crop_border,
        "count": len(per_image),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **(extra or {}),
    }


def write_results(results: dict[str, Any], out_json: Path) -> list[Path]:
    """Write results as JSON, plus a per-image CSV and a Markdown table beside it (atomic writes)."""
    out_json = Path(out_json)
    names = list(results["mean"])
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["image", *names])
    for image, values in results["per_image"].items():
        writer.writerow([image, *(f"{values[n]:.6f}" if n in values else "" for n in names)])
    arrows = {n: ("↑" if results["metrics"][n]["higher_is_better"] else "↓") for n in names}
    table = ["| images | " + " | ".join(f"{n} {arrows[n]}" for n in names) + " |",
             "|---|" + "---|" * len(names),
             f"| {results['count']} | " + " | ".join(f"{results['mean'][n]:.4f}" for n in names) + " |"]
    written = [atomic_write_bytes(out_json, (json.dumps(results, indent=2) + "\n").encode()),
               atomic_write_bytes(out_json.with_suffix(".csv"), buffer.getvalue().encode()),
               atomic_write_bytes(out_json.with_suffix(".md"), ("\n".join(table) + "\n").encode())]
    return written


def evaluate_upscaler(upscale: Callable[[torch.Tensor], torch.Tensor], lq_dir: Path, ref_dir: Path,
                      metrics: Sequence[str], crop_border: int = 0, save_dir: Path | None = None) -> dict[str, Any]:
    """Run ``upscale`` ((1, 3, h, w) -> (1, 3, H, W), [0, 1]) on every LQ image and score it against the
    reference of the same name; records seconds per image and peak memory (CUDA, or RSS growth on CPU)."""
    import resource

    from turbosr.data import read_rgb_uint8

    chosen = get_metrics(metrics)
    folder_metrics = [n for n in metrics if n in FOLDER_METRICS]
    if folder_metrics and save_dir is None:
        import tempfile

        with tempfile.TemporaryDirectory() as temp:  # folder metrics need the outputs on disk
            return evaluate_upscaler(upscale, lq_dir, ref_dir, metrics, crop_border, Path(temp))
    per_image: dict[str, dict[str, float]] = {}
    seconds = []
    start_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for lq_path, reference_path in match_files(lq_dir, ref_dir):
        lq = read_rgb_uint8(lq_path).unsqueeze(0).float() / 255
        reference = read_rgb_uint8(reference_path).unsqueeze(0).double() / 255
        begin = time.perf_counter()
        prediction = upscale(lq)
        seconds.append(time.perf_counter() - begin)
        if prediction.shape[-2:] != reference.shape[-2:]:
            raise ValueError(f"{lq_path.name}: output {prediction.shape[-1]}x{prediction.shape[-2]} differs from the "
                             f"reference {reference.shape[-1]}x{reference.shape[-2]} (wrong --scale?)")
        if save_dir is not None:
            from turbosr.image import save_image

            save_image(prediction.float().cpu(), Path(save_dir) / f"{lq_path.stem}.png", overwrite=True)
        prediction = quantize(prediction.double().cpu())
        per_image[reference_path.name] = {m.name: float(m(prediction, reference, crop_border)[0]) for m in chosen}
    peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start_rss) / 1024
    if torch.cuda.is_available():
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    extra = {"seconds_per_image": sum(seconds) / max(1, len(seconds)), "peak_memory_mb": peak_mb}
    results = summarise(per_image, chosen, crop_border, extra)
    for name in folder_metrics:
        assert save_dir is not None
        results["mean"][name] = FOLDER_METRICS[name](Path(save_dir), Path(ref_dir))
        results["metrics"][name] = {"higher_is_better": False, "needs_reference": True, "folder_level": True}
    return results
