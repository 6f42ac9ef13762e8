"""A ControlNet-style conditioning branch for the denoiser's UNet (Zhang et al. 2023, "Adding Conditional
Control to Text-to-Image Diffusion Models"; the student of AddSR, arXiv 2404.01717, and SeeSR use one).

The branch is a trainable copy of the UNet's encoder half (``conv_in``, time embedding, down blocks, mid block).
It sees what the UNet sees plus a condition latent, added after ``conv_in`` through a zero-initialised
convolution, and hands one residual per skip connection and one for the mid block back to the UNet through
zero-initialised 1x1 convolutions. At initialisation every residual is exactly zero, so the controlled UNet
computes exactly what the UNet alone does (tested), and training starts from the teacher it was copied from.

:func:`unet_with_residuals` runs a diffusers UNet with those residuals: ``UNet2DConditionModel`` takes them as
arguments; for ``UNet2DModel`` (which does not) its forward pass is written out here with the additions.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def zero_conv(channels_in: int, channels_out: int, kernel: int = 1) -> nn.Conv2d:
    """A convolution whose weights and bias start at zero (its output is zero until it trains)."""
    conv = nn.Conv2d(channels_in, channels_out, kernel, padding=kernel // 2)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def embed_timesteps(unet: nn.Module, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A diffusers UNet's (or an encoder copy's) time embedding of ``t`` ((B,) or ()) for a batch like ``like``."""
    t = t.to(like.device).expand(like.shape[0]) if t.dim() else t.to(like.device).repeat(like.shape[0])
    return unet.time_embedding(unet.time_proj(t).to(like.dtype))


def down_half(net: nn.Module, hidden: torch.Tensor, emb: torch.Tensor, context: torch.Tensor | None = None
              ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """A diffusers UNet's (or an encoder copy's) down blocks and mid block, from the ``conv_in`` output
    ``hidden``: (skips: ``hidden`` and every down-block residual, in order; outputs: each down block's output,
    then the mid block's). ``context``: cross-attention states (UNet2DConditionModel), None for UNet2DModel."""
    skips, outputs = [hidden], []
    for block in net.down_blocks:
        if context is not None and getattr(block, "has_cross_attention", False):
            hidden, residuals = block(hidden_states=hidden, temb=emb, encoder_hidden_states=context)
        else:
            hidden, residuals = block(hidden_states=hidden, temb=emb)
        skips += residuals
        outputs.append(hidden)
    if context is not None:
        outputs.append(net.mid_block(hidden, emb, encoder_hidden_states=context))
    else:
        outputs.append(net.mid_block(hidden, emb))
    return skips, outputs


def _skip_channels(unet: nn.Module) -> list[int]:
    """Channels of each skip connection the down half produces, in order (conv_in first)."""
    channels = [unet.conv_in.out_channels]
    for block in unet.down_blocks:
        channels += [resnet.out_channels for resnet in block.resnets]
        if block.downsamplers:
            channels.append(block.resnets[-1].out_channels)
    return channels


class ControlBranch(nn.Module):
    """Trainable encoder copy of ``unet`` fed with a ``condition_channels`` latent; returns zero-initialised
    residuals for the UNet's skip connections and mid block."""

    def __init__(self, unet: nn.Module, condition_channels: int) -> None:
        super().__init__()
        self.conv_in = copy.deepcopy(unet.conv_in)
        self.time_proj = copy.deepcopy(unet.time_proj)
        self.time_embedding = copy.deepcopy(unet.time_embedding)
        self.down_blocks = copy.deepcopy(unet.down_blocks)
        self.mid_block = copy.deepcopy(unet.mid_block)
        self.condition_in = zero_conv(condition_channels, unet.conv_in.out_channels, kernel=3)
        self.zero_convs = nn.ModuleList(zero_conv(c, c) for c in _skip_channels(unet))
        mid_channels = unet.config.block_out_channels[-1]
        self.zero_mid = zero_conv(mid_channels, mid_channels)

    def forward(self, unet_input: torch.Tensor, condition: torch.Tensor, t: torch.Tensor,
                context: torch.Tensor | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """unet_input: what the UNet receives (B, C_in, h, w); condition: (B, C_cond, h, w); t: (B,) or ()."""
        emb = embed_timesteps(self, t, unet_input)
        hidden = self.conv_in(unet_input) + self.condition_in(condition.to(unet_input.dtype))
        skips, outputs = down_half(self, hidden, emb, context)
        return [conv(skip) for conv, skip in zip(self.zero_convs, skips, strict=True)], self.zero_mid(outputs[-1])


def unet_with_residuals(unet: nn.Module, sample: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None,
                        down_residuals: list[torch.Tensor], mid_residual: torch.Tensor) -> torch.Tensor:
    """The UNet's output with the branch's residuals added to its skip connections and mid-block output."""
    if hasattr(unet.config, "cross_attention_dim"):
        return unet(sample, t, encoder_hidden_states=context, down_block_additional_residuals=tuple(down_residuals),
                    mid_block_additional_residual=mid_residual).sample
    # UNet2DModel.forward (diffusers) for this project's configurations (positional time embedding, no class
    # labels, no skip-sample blocks), with the residuals added where ControlNet adds them
    emb = embed_timesteps(unet, t, sample)
    skips, outputs = down_half(unet, unet.conv_in(sample), emb)
    skips = [skip + residual for skip, residual in zip(skips, down_residuals, strict=True)]
    hidden = outputs[-1] + mid_residual
    for block in unet.up_blocks:
        residuals, skips = skips[-len(block.resnets):], skips[: -len(block.resnets)]
        hidden = block(hidden, tuple(residuals), emb)
    return unet.conv_out(unet.conv_act(unet.conv_norm_out(hidden)))
