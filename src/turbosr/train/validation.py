"""Validation during training: fixed crops of the val split, and a one-step PSNR-Y record beside bicubic's."""

from __future__ import annotations

import logging
from typing import Any

import torch

from turbosr.data import make_lq
from turbosr.degradations import upsample_lq
from turbosr.run_config import DataConfig
from turbosr.train.common import load_dataset
from turbosr.train.reporting import RunLog

logger = logging.getLogger(__name__)


def validation_crops(data: DataConfig, scale: int, count: int) -> torch.Tensor | None:
    """Fixed HR crops for validation during training: one crop of each of ``count`` images spread evenly over
    the manifest's val split (the same crops for every run, whatever its seed), or over the training folder
    when there is no manifest."""
    if count <= 0:
        return None
    try:
        dataset = load_dataset(data, scale, "val") if data.manifest else load_dataset(data, scale)
    except (ValueError, FileNotFoundError) as error:
        logger.warning("validation disabled: %s", error)
        return None
    generator = torch.Generator().manual_seed(0)
    count = min(count, len(dataset))
    return torch.stack([dataset.crop(index * len(dataset) // count, generator) for index in range(count)])


@torch.no_grad()
def validate(model: Any, hq: torch.Tensor, data: DataConfig, step: int, log: RunLog,
             fidelity: float | None = None) -> dict[str, Any]:
    """One-step PSNR-Y and periodic-artifact figure (period: the latent factor) of ``model`` (a pipeline; at CFW
    weight ``fidelity`` when given, else at w = 0, the model's own output, whatever its folder's default weight)
    beside bicubic's PSNR and the HR crops' figure, on the fixed crops ``hq`` degraded as in training (seed 0); a
    model with CFW is also measured at w = 1 (``val_*_fidelity1``). Writes the record to ``log`` and the strip
    bicubic | model | HR (a row per crop) beside it."""
    from turbosr.image_files import save_image
    from turbosr.metrics import psnr
    from turbosr.metrics.artifacts import grid_figure

    lq = make_lq(hq, model.scale, data.degradation, torch.Generator().manual_seed(0), data.realesrgan)
    own = 0.0 if model.has_cfw else None  # w = 0 even where the folder's default_fidelity says otherwise
    output = model(lq, generator=torch.Generator().manual_seed(0), fidelity=own if fidelity is None else fidelity)
    bicubic = upsample_lq(lq, model.scale)
    border, period = model.scale, model.autoencoder.factor
    record = {"step": step, "validation": "val" if data.manifest else "train-folder", "images": len(hq),
              "val_psnr_y": float(psnr(output, hq, border, y_channel=True).mean()),
              "val_psnr_y_bicubic": float(psnr(bicubic, hq, border, y_channel=True).mean()),
              "val_grid": float(grid_figure(output, period, border).mean()),
              "val_grid_hr": float(grid_figure(hq, period, border).mean())}
    if fidelity is None and model.has_cfw:
        faithful = model(lq, generator=torch.Generator().manual_seed(0), fidelity=1.0)
        record["val_psnr_y_fidelity1"] = float(psnr(faithful, hq, border, y_channel=True).mean())
        record["val_grid_fidelity1"] = float(grid_figure(faithful, period, border).mean())
    log.write(record)
    if log.enabled:
        strip = torch.cat([torch.cat([bicubic[i], output[i], hq[i]], dim=-1) for i in range(len(hq))], dim=-2)
        save_image(strip[None], log.path.parent / "validation-latest.png", overwrite=True)
    return record
