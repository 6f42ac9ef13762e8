"""Image I/O and conversions: the only module that knows PIL, NumPy and uint8.

Tensor contract (used at every public boundary of turbosr): images are float tensors of shape
(B, 3, H, W), RGB, values in [0, 1]. The range [-1, 1] exists only inside models and is reached
through the one helper pair :func:`to_model_range` / :func:`from_model_range`.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """Map images in [0, 1] to the model range [-1, 1]."""
    return images * 2.0 - 1.0


def from_model_range(images: torch.Tensor) -> torch.Tensor:
    """Map model-range images in [-1, 1] back to [0, 1] (clamped)."""
    return ((images + 1.0) * 0.5).clamp(0.0, 1.0)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL image (any mode convertible to RGB) -> float tensor (1, 3, H, W) in [0, 1]."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


def tensor_to_pil(images: torch.Tensor) -> Image.Image:
    """Float tensor (1, 3, H, W) or (3, H, W) in [0, 1] -> RGB PIL image (rounded to uint8)."""
    if images.dim() == 4:
        if images.shape[0] != 1:
            raise ValueError(f"tensor_to_pil takes one image, got a batch of {images.shape[0]}")
        images = images[0]
    array = images.detach().float().clamp(0, 1).mul(255.0).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, mode="RGB")
