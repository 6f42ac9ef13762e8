"""StableSR's two additions to a frozen diffusion prior (Wang et al. 2023, "Exploiting Diffusion Prior for
Real-World Image Super-Resolution", arXiv 2305.07015):

- :class:`SFTConditioner`: a **time-aware encoder** of the LQ latent (its blocks see the timestep embedding,
  sec. 3.1) whose multi-scale features modulate the prior UNet's decoder features through **spatial feature
  transform** layers, h <- h * (1 + gamma) + beta (Wang et al. 2018), at every resolution. gamma and beta come
  from zero-initialised convolutions, so the conditioned UNet starts exactly as the prior. Only the encoder and
  the SFT layers train. (The modulation is applied by forward hooks on the UNet's up-block ResNets: the
  diffusers UNet itself is not modified, and any UNet2DModel / UNet2DConditionModel works.)
- :class:`FidelityWarp`: **controllable feature wrapping** (CFW, sec. 3.3): a trainable residual module fed with
  the LQ image's features and the decoded output; at inference a weight w in [0, 1] scales its correction
  (0: the prior's realism, exactly the output without CFW; 1: fidelity to the input). StableSR fuses inside the
  VAE decoder's feature maps; turbosr's built-in latent is a linear patch transform with no decoder features,
  so the warp works at image level after decoding (the same module then fits every latent space).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from turbosr.models.control import zero_conv


class TimeAwareEncoder(nn.Module):
    """LQ latent (B, C, h, w) + timestep -> features at h, h/2, h/4, ... (one per UNet level). With
    ``time_aware`` false it ignores the timestep (the paper's time-agnostic ablation)."""

    def __init__(self, in_channels: int, channels: tuple[int, ...], time_aware: bool = True, groups: int = 8) -> None:
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps
        from diffusers.models.resnet import ResnetBlock2D

        self.time_aware = time_aware
        time_dim = 4 * channels[0]
        self.time_proj = Timesteps(channels[0], flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(channels[0], time_dim) if time_aware else None
        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        previous = channels[0]
        for level, width in enumerate(channels):
            self.blocks.append(ResnetBlock2D(in_channels=previous, out_channels=width, groups=min(groups, previous),
                                             groups_out=min(groups, width), temb_channels=time_dim if time_aware else None))
            self.downsamplers.append(nn.Conv2d(width, width, 3, stride=2, padding=1)
                                     if level + 1 < len(channels) else nn.Identity())
            previous = width

    def forward(self, lq_latent: torch.Tensor, t: torch.Tensor) -> list[torch.Tensor]:
        emb = None
        if self.time_embedding is not None:
            t = t.to(lq_latent.device).expand(lq_latent.shape[0]) if t.dim() else t.repeat(lq_latent.shape[0])
            emb = self.time_embedding(self.time_proj(t).to(lq_latent.dtype))
        hidden = self.conv_in(lq_latent)
        features = []
        for block, down in zip(self.blocks, self.downsamplers, strict=True):
            hidden = block(hidden, emb)
            features.append(hidden)
            hidden = down(hidden)
        return features


class SFTLayer(nn.Module):
    """h <- h * (1 + gamma(f)) + beta(f) for one UNet ResNet's output, f = the encoder feature of its level.
    Registered as that ResNet's forward hook; inert while no feature is set."""

    def __init__(self, feature_channels: int, hidden_channels: int) -> None:
        super().__init__()
        self.gamma = zero_conv(feature_channels, hidden_channels, kernel=3)
        self.beta = zero_conv(feature_channels, hidden_channels, kernel=3)
        self.feature: torch.Tensor | None = None

    def hook(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        if self.feature is None:
            return output
        feature = self.feature
        if feature.shape[-2:] != output.shape[-2:]:
            feature = nn.functional.interpolate(feature, size=output.shape[-2:], mode="nearest")
        feature = feature.to(output.dtype)
        return output * (1 + self.gamma(feature)) + self.beta(feature)


class SFTConditioner(nn.Module):
    """The time-aware encoder and one SFT layer per ResNet of the UNet's mid and up blocks, and with ``down``
    (StableSR's released placement) of its down blocks too."""

    def __init__(self, unet: nn.Module, latent_channels: int, channels: tuple[int, ...] | None = None,
                 time_aware: bool = True, down: bool = True) -> None:
        super().__init__()
        widths = tuple(unet.config.block_out_channels)
        self.channels = channels or tuple(max(32, width // 2) for width in widths)
        if len(self.channels) != len(widths):
            raise ValueError(f"the SFT encoder needs one width per UNet level ({len(widths)}), got {self.channels}")
        self.encoder = TimeAwareEncoder(latent_channels, self.channels, time_aware)
        self.levels: list[int] = []  # encoder level of each layer
        self.layers = nn.ModuleList()
        targets = []
        if down:  # a down block's ResNets run at its level's resolution (its downsampler comes after them)
            for index, block in enumerate(unet.down_blocks):
                targets += [(index, resnet) for resnet in block.resnets]
        targets += [(len(widths) - 1, resnet) for resnet in unet.mid_block.resnets]
        for index, block in enumerate(unet.up_blocks):
            targets += [(len(widths) - 1 - index, resnet) for resnet in block.resnets]
        for level, resnet in targets:
            layer = SFTLayer(self.channels[level], resnet.out_channels)
            resnet.register_forward_hook(layer.hook)  # a bound method: deep copies stay consistent
            self.layers.append(layer)
            self.levels.append(level)

    def set(self, lq_latent: torch.Tensor | None, t: torch.Tensor | None = None) -> None:
        """Compute the encoder features for this call (None: the bare prior)."""
        features = self.encoder(lq_latent, t) if lq_latent is not None else None
        for layer, level in zip(self.layers, self.levels, strict=True):
            layer.feature = features[level] if features is not None else None


class FidelityWarp(nn.Module):
    """CFW at image level: output = decoded + w * C(decoded, E(LQ upsampled)), C's last layer zero-initialised.
    Images in the model range [-1, 1]."""

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        self.channels = channels
        self.encode_lq = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.SiLU(),
                                       nn.Conv2d(channels, channels, 3, padding=1), nn.SiLU())
        self.fuse = nn.Sequential(nn.Conv2d(3 + channels, channels, 3, padding=1), nn.SiLU(),
                                  nn.Conv2d(channels, channels, 3, padding=1), nn.SiLU(), zero_conv(channels, 3, kernel=3))

    def config(self) -> dict[str, Any]:
        return {"channels": self.channels}

    def forward(self, decoded: torch.Tensor, lq_upsampled: torch.Tensor, weight: float) -> torch.Tensor:
        if weight == 0:
            return decoded  # exactly the output without CFW
        correction = self.fuse(torch.cat([decoded, self.encode_lq(lq_upsampled.to(decoded.dtype))], dim=1))
        return decoded + weight * correction
