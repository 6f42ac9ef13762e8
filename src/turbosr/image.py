"""Pixels and tensors: the conversions between PIL images, uint8 and turbosr's tensors.

Tensor contract (used at every public boundary of turbosr): images are float tensors of shape
(B, 3, H, W), RGB, values in [0, 1]. The range [-1, 1] exists only inside models and is reached
through the one helper pair :func:`to_model_range` / :func:`from_model_range`. Files (reading, writing,
formats) are :mod:`turbosr.image_files`; finding inputs is :mod:`turbosr.inputs`.
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
    """PIL image (any mode convertible to RGB) -> float tensor (1, 3, H, W) in [0, 1]. Deep grey modes are read
    as the command line reads them: "I;16"/"I" scaled from 0..65535, "F" taken as [0, 1] (clipped); 1-bit, grey,
    palette and CMYK images through PIL's RGB conversion."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.clip(np.asarray(image, dtype=np.float64), 0, 65535)
        return array_to_tensor(array, 65535.0).expand(-1, 3, -1, -1).contiguous()
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        if not np.isfinite(array).all():
            raise ValueError("a float (mode F) image with NaN or infinite pixels")
        return array_to_tensor(np.clip(array, 0, 1), 1.0).expand(-1, 3, -1, -1).contiguous()
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


# ------------------------------------------------------------------------------------------------ file I/O
def upscale_alpha(alpha: torch.Tensor, scale: int) -> torch.Tensor:
    """Alpha (1, 1, h, w) -> (1, 1, h*scale, w*scale) by the same (MATLAB) bicubic as the colour condition,
    clamped to [0, 1] (so a streamed image can upscale it strip by strip, exactly)."""
    from turbosr.degradations import upsample_lq

    return upsample_lq(alpha.float(), scale)

def array_to_tensor(array: np.ndarray, maximum: float) -> torch.Tensor:
    """(H, W) or (H, W, C) integer-valued array with full scale ``maximum`` -> (1, C, H, W) float in [0, 1]."""
    array = np.asarray(array, dtype=np.float32) / maximum
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).unsqueeze(0)
