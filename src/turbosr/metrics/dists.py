"""DISTS (Ding et al. 2020, "Image Quality Assessment: Unifying Structure and Texture Similarity") without
torchvision: VGG16 with its max-pools replaced by L2 pooling, and per-channel structure/texture similarities
weighted by the learned alpha/beta, from LOCAL files only.

Expected in the folder of ``TURBOSR_DISTS_WEIGHTS`` (or ``weights_dir``), ``.safetensors`` or ``.pth``:
``vgg16`` (torchvision ImageNet backbone, keys ``features.N.*``) and ``dists`` (keys ``alpha``, ``beta``, each
(1, 1475, 1, 1)). Score = 1 - sum_k sum_c (alpha S1 + beta S2); 0 for identical images, lower is better.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from turbosr.metrics.lpips import Backbone, _read

ENV_VAR = "TURBOSR_DISTS_WEIGHTS"
CHANNELS = (3, 64, 128, 256, 512, 512)
STAGES = ((0, 4), (5, 9), (10, 16), (17, 23), (24, 30))  # torchvision vgg16.features slices between max-pools
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def l2_pool(x: torch.Tensor) -> torch.Tensor:
    """sqrt of a 3x3 Hann-weighted average of x^2, stride 2 (replaces VGG's max-pool: no aliasing)."""
    window = torch.tensor([0.5, 1.0, 0.5], device=x.device, dtype=x.dtype)
    kernel = (window[:, None] * window[None, :])
    kernel = (kernel / kernel.sum()).expand(x.shape[1], 1, 3, 3)
    return (F.conv2d(x * x, kernel, stride=2, padding=1, groups=x.shape[1]) + 1e-12).sqrt()


class DISTS(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = Backbone("vgg")
        self.register_buffer("alpha", torch.full((1, sum(CHANNELS), 1, 1), 0.1))
        self.register_buffer("beta", torch.full((1, sum(CHANNELS), 1, 1), 0.1))
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = [x]
        h = (x - self.mean) / self.std
        for index, (start, stop) in enumerate(STAGES):
            if index:
                h = l2_pool(h)
            for layer in self.backbone.features[start:stop]:
                h = layer(h)
            outputs.append(h)
        return outputs

    def forward(self, prediction: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        total = self.alpha.sum() + self.beta.sum()
        alphas = torch.split(self.alpha / total, CHANNELS, dim=1)
        betas = torch.split(self.beta / total, CHANNELS, dim=1)
        structure = prediction.new_zeros(prediction.shape[0])
        texture = prediction.new_zeros(prediction.shape[0])
        c1 = c2 = 1e-6
        for a, b, fx, fy in zip(alphas, betas, self.features(prediction), self.features(reference), strict=True):
            mx, my = fx.mean((2, 3), keepdim=True), fy.mean((2, 3), keepdim=True)
            s1 = (2 * mx * my + c1) / (mx**2 + my**2 + c1)
            vx, vy = ((fx - mx) ** 2).mean((2, 3), keepdim=True), ((fy - my) ** 2).mean((2, 3), keepdim=True)
            cov = (fx * fy).mean((2, 3), keepdim=True) - mx * my
            s2 = (2 * cov + c2) / (vx + vy + c2)
            structure = structure + (a * s1).sum((1, 2, 3))
            texture = texture + (b * s2).sum((1, 2, 3))
        return 1 - (structure + texture)


def load_dists(weights_dir: str | Path | None = None) -> DISTS:
    """DISTS with weights from local files (see the module docstring)."""
    location = str(weights_dir or os.environ.get(ENV_VAR, ""))
    try:
        if not location:
            raise FileNotFoundError("vgg16")
        backbone = _read(Path(location), "vgg16")
        heads = _read(Path(location), "dists")
    except FileNotFoundError:
        raise FileNotFoundError(f"DISTS needs local weights: set {ENV_VAR} to a folder holding vgg16.safetensors|.pth "
                                "(torchvision ImageNet backbone) and dists.safetensors|.pth (alpha, beta)") from None
    model = DISTS()
    model.backbone.load_state_dict({k: v for k, v in backbone.items() if k.startswith("features.")})
    model.alpha.copy_(heads["alpha"].view_as(model.alpha))
    model.beta.copy_(heads["beta"].view_as(model.beta))
    return model.eval()


_MODEL: list[DISTS] = []


def dists(prediction: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """DISTS per image (B,) with the locally stored weights."""
    if not _MODEL:
        _MODEL.append(load_dists())
    with torch.inference_mode():
        return _MODEL[0](prediction.float(), reference.float()).double()
