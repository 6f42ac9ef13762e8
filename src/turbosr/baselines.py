"""Baseline upscalers to compare against, each ``(1, 3, h, w) [0, 1] -> (1, 3, h*s, w*s)``.

Classical: MATLAB-compatible bicubic (the reference every SR paper reports) and PIL's Lanczos.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from turbosr.degradations import upsample_lq

Upscaler = Callable[[torch.Tensor], torch.Tensor]


def _lanczos(lq: torch.Tensor, scale: int) -> torch.Tensor:
    outputs = []
    for image in lq:
        array = (image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        pil = Image.fromarray(array).resize((array.shape[1] * scale, array.shape[0] * scale), Image.Resampling.LANCZOS)
        outputs.append(torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1).float() / 255)
    return torch.stack(outputs).to(lq.device)


CLASSICAL: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "bicubic": upsample_lq,
    "lanczos": _lanczos,
}


def classical_upscaler(name: str, scale: int) -> Upscaler:
    """A classical interpolation upscaler by name ('bicubic' or 'lanczos')."""
    if name not in CLASSICAL:
        raise ValueError(f"unknown classical upscaler {name!r}; choose one of {', '.join(CLASSICAL)}")
    return lambda lq: CLASSICAL[name](lq, scale)
