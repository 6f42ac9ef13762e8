"""A learned decoder for the patch latent, with StableSR's controllable feature wrapping (CFW) inside it.

The patch latent's own decoder is linear: each latent pixel becomes one 8 x 8 basis pattern, so every error of the
diffusion model's latent prints an 8-px pattern, and a refiner on the decoded RGB sees only a few pixels of it.
:class:`LatentDecoder` reads the latent itself over a receptive field of several latent pixels and adds a
residual to the linear decode (its last layer starts at zero, so a new decoder is exactly the linear one):

- most of the work runs at the latent resolution and at 2x it (for x4 models: the LQ image's resolution); the
  last doublings are a light head. Each x2 step is a sub-pixel convolution (a convolution at the lower
  resolution to 4x the channels, then a pixel shuffle: no full-size intermediate, which on a CPU costs more
  in memory traffic than in arithmetic), initialised by ICNR so that all output phases start with one filter:
  a sub-pixel convolution gives each phase its own filter and could print a periodic pattern of its own, so
  the periodic-artifact figure (metrics/artifacts.py) is part of its validation;
- no normalisation layers: nothing depends on image-wide statistics, so decoding tile by tile with a halo of
  :attr:`LatentDecoder.receptive_radius` latent pixels gives exactly the untiled result (``tiling.tiled_map``
  with ``blend="crop"``);
- CFW (Wang et al. 2023, "Exploiting Diffusion Prior for Real-World Image Super-Resolution", sec. 3.3, eq. 6):
  an encoder of the LQ condition latent gives features at the first decoder resolutions, fused into the
  decoder's features as ``F_d + w * C(F_e, F_d)`` with ``C`` ending in a zero-initialised convolution; ``w = 0``
  skips the branch, so it is exactly the decoder without CFW. The condition latent is the patch encoding of the
  bicubic-upsampled LQ image: at the latent resolution it holds that image almost exactly (its 8 x 8 patches
  are smooth), and it is aligned with the latent tiles.

Images are in the model range [-1, 1]; latents are (B, C, h, w), the output (B, 3, h * factor, w * factor).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def _zero(conv: nn.Conv2d) -> nn.Conv2d:
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class ResidualBlock(nn.Module):
    """x + conv(SiLU(conv(SiLU(x)))), 3x3, no normalisation (EDSR-style)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.first = nn.Conv2d(channels, channels, 3, padding=1)
        self.second = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.second(F.silu(self.first(F.silu(x))))


class Fusion(nn.Module):
    """CFW's C(F_e, F_d): two 3x3 convolutions on the concatenated features, the last zero-initialised."""

    def __init__(self, decoder_channels: int, encoder_channels: int) -> None:
        super().__init__()
        self.mix = nn.Conv2d(decoder_channels + encoder_channels, decoder_channels, 3, padding=1)
        self.out = _zero(nn.Conv2d(decoder_channels, decoder_channels, 3, padding=1))

    def forward(self, decoder_features: torch.Tensor, encoder_features: torch.Tensor) -> torch.Tensor:
        return self.out(F.silu(self.mix(torch.cat([decoder_features, encoder_features], dim=1))))


def icnr_(conv: nn.Conv2d, upscale: int = 2) -> nn.Conv2d:
    """Initialise a convolution that feeds ``PixelShuffle(upscale)`` so that all output phases share one filter
    (ICNR, Aitken et al. 2017, "Checkerboard artifact free sub-pixel convolution"): at the start the pair is a
    convolution followed by nearest-neighbour upsampling, with no phase pattern of its own."""
    groups = upscale * upscale
    out_channels = conv.out_channels // groups
    base = torch.empty(out_channels, *conv.weight.shape[1:])
    nn.init.kaiming_uniform_(base, a=math.sqrt(5))
    with torch.no_grad():
        conv.weight.copy_(base.repeat_interleave(groups, dim=0))
        conv.bias.copy_(torch.zeros(out_channels).repeat_interleave(groups))
    return conv


class Upsample(nn.Module):
    """x``factor`` by a sub-pixel convolution (3x3 conv to factor^2 * C channels, pixel shuffle), ICNR-initialised:
    the cost of a convolution at the lower resolution, no full-size intermediate. Factor 1 is a plain conv."""

    def __init__(self, in_channels: int, out_channels: int, factor: int = 2) -> None:
        super().__init__()
        self.factor = factor
        self.conv = icnr_(nn.Conv2d(in_channels, factor * factor * out_channels, 3, padding=1), factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.conv(x), self.factor) if self.factor > 1 else self.conv(x)


class LatentDecoder(nn.Module):
    """Residual decoder of the patch latent (+ CFW).

    Trunk stage k runs at 2^k x the latent resolution with width ``channels[k]`` and ``blocks[k]`` residual
    blocks; stages are joined by x2 sub-pixel upsampling. A light head of x2 upsamplings (widths
    ``head_channels``) follows, and one sub-pixel convolution to RGB covers the rest of the factor (with one trunk
    stage and no head: x8 at once, so every pixel of a latent patch has its own output filter, like the linear
    decoder). CFW fuses an LQ encoder's features (widths ``cfw_channels``) into the first len(cfw_channels)
    trunk stages; empty: no CFW. The last convolution starts at zero (the decoder starts as the linear one)."""

    kind = "conv"

    def __init__(self, latent_channels: int, factor: int, channels: tuple[int, ...] = (128,),
                 blocks: tuple[int, ...] = (4,), head_channels: tuple[int, ...] = (),
                 cfw_channels: tuple[int, ...] = (64,)) -> None:
        super().__init__()
        doublings = len(channels) - 1 + len(head_channels)
        if len(channels) < 1 or factor < 2**doublings or factor % 2**doublings:
            raise ValueError(f"the learned decoder's trunk and head double the resolution {doublings} times, which "
                             f"must divide the latent factor {factor} (channels {channels}, head {head_channels})")
        if len(blocks) != len(channels) or len(cfw_channels) > len(channels):
            raise ValueError(f"blocks {blocks} needs one count per trunk stage {channels}; cfw_channels "
                             f"{cfw_channels} may cover at most those stages")
        if min((*channels, *head_channels, *cfw_channels)) < 1 or min(blocks) < 0:
            raise ValueError("decoder widths must be positive and block counts >= 0")
        self.latent_channels, self.factor = latent_channels, factor
        self.channels, self.blocks = tuple(channels), tuple(blocks)
        self.head_channels, self.cfw_channels = tuple(head_channels), tuple(cfw_channels)
        # the trunk: stage 0 enters from the latent, each later stage from a x2 upsampling of the previous one
        self.entries = nn.ModuleList()
        self.stages = nn.ModuleList()
        previous = latent_channels
        for stage, (width, count) in enumerate(zip(channels, blocks, strict=True)):
            self.entries.append(nn.Conv2d(previous, width, 3, padding=1) if stage == 0 else Upsample(previous, width))
            self.stages.append(nn.Sequential(*(ResidualBlock(width) for _ in range(count))))
            previous = width
        # the head: x2 upsamplings to the output resolution, the last one to RGB and zero-initialised
        self.head = nn.ModuleList()
        for width in head_channels:
            self.head.append(Upsample(previous, width))
            previous = width
        self.to_rgb = Upsample(previous, 3, factor // 2**doublings)
        _zero(self.to_rgb.conv)
        # CFW: the LQ condition latent's encoder (one feature map per fused stage) and the fusions
        self.cfw_entries = nn.ModuleList()
        self.cfw_blocks = nn.ModuleList()
        self.fusions = nn.ModuleList()
        previous = latent_channels
        for stage, width in enumerate(cfw_channels):
            self.cfw_entries.append(nn.Conv2d(previous, width, 3, padding=1) if stage == 0 else Upsample(previous, width))
            self.cfw_blocks.append(ResidualBlock(width) if stage == 0 else nn.Identity())
            self.fusions.append(Fusion(channels[stage], width))
            previous = width

    @property
    def has_cfw(self) -> bool:
        return bool(self.cfw_channels)

    @property
    def receptive_radius(self) -> int:
        """How far (in latent pixels, rounded up) an output pixel can see: the halo for exact tiled decoding.

        A 3x3 convolution at 2^k x the latent resolution reaches 2^-k latent pixels further (an upsampling's
        convolution runs at the lower resolution). The CFW paths (the LQ encoder, then a fusion, then the rest
        of the trunk; or the trunk through a fusion) are counted the same way, and the longest path wins.
        """
        def reach(resolution: int, convolutions: int) -> float:
            return convolutions / 2**resolution

        # trunk stage k: its entry (at k - 1 for an upsampling) and two convolutions per residual block; a fusion
        # reads the trunk and the LQ encoder, so after it the reach is the longer of the two plus its own
        reach_so_far, encoder = 0.0, 0.0
        for stage, count in enumerate(self.blocks):
            reach_so_far += reach(max(stage - 1, 0), 1) + reach(stage, 2 * count)
            if stage < len(self.cfw_channels):
                encoder += reach(max(stage - 1, 0), 1) + (reach(0, 2) if stage == 0 else 0.0)
                reach_so_far = max(reach_so_far, encoder) + reach(stage, 2)
        last = len(self.channels) - 1  # the head's and to_rgb's convolutions run before their upsampling
        longest = reach_so_far + sum(reach(last + i, 1) for i in range(len(self.head_channels) + 1))
        return math.ceil(longest)

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "channels": list(self.channels), "blocks": list(self.blocks),
                "head_channels": list(self.head_channels), "cfw_channels": list(self.cfw_channels)}

    def cfw_parameters(self) -> list[nn.Parameter]:
        """The CFW branch's parameters (trained at w = 1 with the trunk fixed)."""
        return [p for module in (self.cfw_entries, self.cfw_blocks, self.fusions) for p in module.parameters()]

    def trunk_parameters(self) -> list[nn.Parameter]:
        """Everything but the CFW branch (what w = 0 uses)."""
        cfw = {id(p) for p in self.cfw_parameters()}
        return [p for p in self.parameters() if id(p) not in cfw]

    def forward(self, latents: torch.Tensor, lq_latent: torch.Tensor | None = None, fidelity: float = 0.0
                ) -> torch.Tensor:
        """(B, C, h, w) -> residual (B, 3, h * factor, w * factor) to add to the linear decode. With CFW,
        ``fidelity`` w in [0, 1] and ``lq_latent`` (the condition latent, same shape) add the LQ features."""
        use_cfw = fidelity != 0 and self.has_cfw
        if use_cfw and (lq_latent is None or lq_latent.shape != latents.shape):
            raise ValueError("CFW needs the LQ condition latent, shaped like the latent")
        hidden, encoded = latents, lq_latent
        for stage, (entry, blocks) in enumerate(zip(self.entries, self.stages, strict=True)):
            hidden = blocks(entry(hidden if stage == 0 else F.silu(hidden)))
            if use_cfw and stage < len(self.fusions):
                assert encoded is not None
                encoded = self.cfw_blocks[stage](self.cfw_entries[stage](
                    encoded.to(hidden.dtype) if stage == 0 else F.silu(encoded)))
                hidden = hidden + fidelity * self.fusions[stage](hidden, encoded)
        for upsample in self.head:
            hidden = upsample(F.silu(hidden))
        return self.to_rgb(F.silu(hidden))


def decoder_from_config(latent_channels: int, factor: int, config: dict[str, Any]) -> LatentDecoder:
    """Rebuild a decoder (random weights) from the dict its ``config()`` returned."""
    if config.get("kind") != LatentDecoder.kind:
        raise ValueError(f"unknown decoder kind {config.get('kind')!r} in model config (expected 'conv')")
    return LatentDecoder(latent_channels, factor, tuple(config["channels"]), tuple(config["blocks"]),
                         tuple(config["head_channels"]), tuple(config["cfw_channels"]))
