"""Scoring folders of images: predictions against references, or an upscaler run on a folder of LQ images."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from turbosr.image_files import read_rgb_uint8
from turbosr.inputs import list_images
from turbosr.metrics.pixel import quantize
from turbosr.metrics.table import DEFAULT_GRID_PERIOD, FOLDER_METRICS, Metric, get_metrics


def match_files(pred_dir: Path, ref_dir: Path) -> list[tuple[Path, Path]]:
    """Pairs (prediction, reference) matched by file stem; errors for empty folders or missing partners."""
    predictions = {p.stem: p for p in list_images(Path(pred_dir))}
    references = {p.stem: p for p in list_images(Path(ref_dir))}
    missing = sorted(set(references) - set(predictions))
    if missing:
        raise ValueError(f"{len(missing)} reference image(s) have no prediction in {pred_dir}, e.g. {missing[0]}")
    return [(predictions[stem], references[stem]) for stem in sorted(references)]


def evaluate_folders(pred_dir: Path, ref_dir: Path, metrics: Sequence[str], crop_border: int = 0,
                     grid_period: int = DEFAULT_GRID_PERIOD) -> dict[str, Any]:
    """Score every prediction against its reference; returns the JSON-able results dict."""
    chosen = get_metrics(metrics, grid_period)
    per_image: dict[str, dict[str, float]] = {}
    pairs = match_files(pred_dir, ref_dir)
    for prediction_path, reference_path in pairs:
        prediction = read_rgb_uint8(prediction_path).unsqueeze(0).double() / 255
        reference = read_rgb_uint8(reference_path).unsqueeze(0).double() / 255
        if prediction.shape != reference.shape:
            raise ValueError(f"{prediction_path.name}: prediction is {prediction.shape[-1]}x{prediction.shape[-2]}, "
                             f"reference is {reference.shape[-1]}x{reference.shape[-2]}")
        per_image[reference_path.name] = {m.name: float(m(prediction, reference, crop_border)[0]) for m in chosen}
    results = summarise(per_image, chosen, crop_border, reference_scores([r for _, r in pairs], chosen, crop_border))
    for name in metrics:
        if name in FOLDER_METRICS:
            results["mean"][name] = FOLDER_METRICS[name](Path(pred_dir), Path(ref_dir))
            results["metrics"][name] = {"higher_is_better": False, "needs_reference": True, "folder_level": True}
    return results


def reference_scores(references: Sequence[Path], chosen: Sequence[Metric], crop_border: int) -> dict[str, Any]:
    """``{"reference_mean": {name: mean}}`` for the chosen metrics that report the references' own value (the
    artifact figure: HR photos are the yardstick), or {} when there are none."""
    scored = [m for m in chosen if m.score_reference]
    if not scored:
        return {}
    totals = dict.fromkeys((m.name for m in scored), 0.0)
    for path in references:
        image = read_rgb_uint8(path).unsqueeze(0).double() / 255
        for metric in scored:
            totals[metric.name] += float(metric(image, None, crop_border)[0])
    return {"reference_mean": {name: total / max(1, len(references)) for name, total in totals.items()}}


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


def check_save_dir(save_dir: Path, inputs: list[Path], lq_files: list[Path], overwrite: bool) -> None:
    """ValueError/FileExistsError (one line) if outputs in ``save_dir`` would land in an input folder, replace a
    file without ``overwrite``, or two inputs would write one output name."""
    from turbosr.inputs import inside, png_names

    for folder in inputs:
        if inside(save_dir, folder) or inside(folder, save_dir):
            raise ValueError(f"--save-outputs {save_dir} is (or holds, or lies inside) the input folder {folder}: "
                             "outputs are never written among the inputs; choose another folder")
    for name in png_names(lq_files):
        if (save_dir / name).exists() and not overwrite:
            raise FileExistsError(f"{save_dir / name} exists (use --overwrite to replace it; nothing was run)")


def evaluate_upscaler(upscale: Callable[[torch.Tensor], torch.Tensor], lq_dir: Path, ref_dir: Path,
                      metrics: Sequence[str], crop_border: int = 0, save_dir: Path | None = None,
                      grid_period: int = DEFAULT_GRID_PERIOD, overwrite: bool = False) -> dict[str, Any]:
    """Run ``upscale`` ((1, 3, h, w) -> (1, 3, H, W), [0, 1]) on every LQ image and score it against the
    reference of the same name; records seconds per image and peak memory (CUDA, or RSS growth on CPU).
    ``save_dir`` (outputs as PNG) may not be or lie inside the LQ or reference folder, nor hold them; an existing
    output is replaced only with ``overwrite``; both are checked before anything runs."""
    import resource

    chosen = get_metrics(metrics, grid_period)
    folder_metrics = [n for n in metrics if n in FOLDER_METRICS]
    if folder_metrics and save_dir is None:
        import tempfile

        with tempfile.TemporaryDirectory() as temp:  # folder metrics need the outputs on disk
            return evaluate_upscaler(upscale, lq_dir, ref_dir, metrics, crop_border, Path(temp), grid_period)
    per_image: dict[str, dict[str, float]] = {}
    seconds = []
    start_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    pairs = match_files(lq_dir, ref_dir)
    if save_dir is not None:
        check_save_dir(Path(save_dir), [Path(lq_dir), Path(ref_dir)], [p for p, _ in pairs], overwrite)
    for lq_path, reference_path in pairs:
        lq = read_rgb_uint8(lq_path).unsqueeze(0).float() / 255
        reference = read_rgb_uint8(reference_path).unsqueeze(0).double() / 255
        begin = time.perf_counter()
        prediction = upscale(lq)
        seconds.append(time.perf_counter() - begin)
        if prediction.shape[-2:] != reference.shape[-2:]:
            raise ValueError(f"{lq_path.name}: output {prediction.shape[-1]}x{prediction.shape[-2]} differs from the "
                             f"reference {reference.shape[-1]}x{reference.shape[-2]} (wrong --scale?)")
        if save_dir is not None:
            from turbosr.image_files import save_image

            save_image(prediction.float().cpu(), Path(save_dir) / f"{lq_path.stem}.png", overwrite=overwrite)
        prediction = quantize(prediction.double().cpu())
        per_image[reference_path.name] = {m.name: float(m(prediction, reference, crop_border)[0]) for m in chosen}
    peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start_rss) / 1024
    if torch.cuda.is_available():
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    extra = {"seconds_per_image": sum(seconds) / max(1, len(seconds)), "peak_memory_mb": peak_mb,
             **reference_scores([r for _, r in pairs], chosen, crop_border)}
    results = summarise(per_image, chosen, crop_border, extra)
    for name in folder_metrics:
        assert save_dir is not None
        results["mean"][name] = FOLDER_METRICS[name](Path(save_dir), Path(ref_dir))
        results["metrics"][name] = {"higher_is_better": False, "needs_reference": True, "folder_level": True}
    return results
