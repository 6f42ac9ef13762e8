"""A small PatchGAN discriminator (Isola et al. 2017) with spectral normalisation, for adversarial losses.

Input: images (B, 3, H, W) in [-1, 1] (model range). Output: a logit map (B, 1, H/8, W/8): one real/fake score
per receptive-field patch, used with the hinge losses in ``turbosr.losses``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import spectral_norm


class PatchDiscriminator(nn.Module):
    def __init__(self, channels: int = 32, layers: int = 3) -> None:
        super().__init__()
        blocks: list[nn.Module] = [spectral_norm(nn.Conv2d(3, channels, 4, 2, 1)), nn.LeakyReLU(0.2)]
        width = channels
        for _ in range(layers - 1):
            blocks += [spectral_norm(nn.Conv2d(width, width * 2, 4, 2, 1)), nn.LeakyReLU(0.2)]
            width *= 2
        blocks.append(spectral_norm(nn.Conv2d(width, 1, 3, 1, 1)))
        self.net = nn.Sequential(*blocks)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)
