"""StableSR's controllable feature wrapping (CFW) inside a KL autoencoder's decoder (Wang et al. 2023, sec. 3.3),
in the layout of the released ``vqgan_cfw_00011.ckpt``.

The encoder's feature maps of the LQ image at the end of two levels (before their downsamplers) are fused into
the decoder at the same resolutions, after the ResNets of that decoder level and before its upsampler:
``h <- h + w * F(e, h)`` with ``w`` the fidelity weight (0 = the plain decoder, exactly). ``F`` concatenates the
encoder feature e with h, and runs a two-convolution residual block down to h's width, ``num_blocks``
residual-in-residual dense blocks (ESRGAN, Wang et al. 2018, sec. 3.1: five densely connected 3x3 convolutions,
residuals scaled by 0.2), and another residual block. Written from that description and the file's key layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PlainResBlock(nn.Module):
    """GN-SiLU-conv twice, with a 1x1 projection of the input when the width changes (no time embedding)."""

    def __init__(self, channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(32, channels, eps=1e-6)
        self.conv1 = nn.Conv2d(channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(32, out_channels, eps=1e-6)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_out = nn.Conv2d(channels, out_channels, 1) if channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))
        return h + (self.conv_out(x) if self.conv_out is not None else x)


class DenseBlock(nn.Module):
    """Five 3x3 convolutions, each seeing the input and every earlier output; residual scaled by 0.2."""

    def __init__(self, channels: int, growth: int) -> None:
        super().__init__()
        for i in range(1, 6):
            setattr(self, f"conv{i}", nn.Conv2d(channels + (i - 1) * growth, growth if i < 5 else channels, 3,
                                                padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for i in range(1, 5):
            features.append(F.leaky_relu(getattr(self, f"conv{i}")(torch.cat(features, 1)), 0.2))
        return self.conv5(torch.cat(features, 1)) * 0.2 + x


class RRDB(nn.Module):
    """Three dense blocks in a residual scaled by 0.2."""

    def __init__(self, channels: int, growth: int) -> None:
        super().__init__()
        self.rdb1, self.rdb2, self.rdb3 = (DenseBlock(channels, growth) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class FuseBlock(nn.Module):
    """F(e, h): the correction CFW adds (scaled by w) to the decoder feature h given the encoder feature e."""

    def __init__(self, channels: int, num_blocks: int = 2, growth: int = 32) -> None:
        super().__init__()
        self.encode_enc_1 = PlainResBlock(2 * channels, channels)
        self.encode_enc_2 = nn.Sequential(*(RRDB(channels, growth) for _ in range(num_blocks)))
        self.encode_enc_3 = PlainResBlock(channels, channels)

    def forward(self, encoder_feature: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        fused = self.encode_enc_1(torch.cat([encoder_feature.to(h.dtype), h], 1))
        return self.encode_enc_3(self.encode_enc_2(fused))
