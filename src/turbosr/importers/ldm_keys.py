"""Key maps between the LDM (CompVis) layout of released checkpoints and the diffusers layout turbosr runs.

The stock parts (UNet, KL autoencoder) are mapped by diffusers' own single-file converters, which are not a
documented API: :func:`convert_unet` and :func:`convert_vae` call them, and tests pin their behaviour on the parity
fixtures. The extras of released SR models (per-ResNet layers that the converters do not know) are placed by
:func:`ldm_resnet_sites`.
"""

from __future__ import annotations

from typing import Any

import torch


def convert_unet(state: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """LDM UNet keys (prefix ``model.diffusion_model.``) -> diffusers ``UNet2DConditionModel`` keys."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    return convert_ldm_unet_checkpoint(state, config)


def convert_vae(state: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """LDM autoencoder keys (``encoder.``, ``decoder.``, ``quant_conv.``, ``post_quant_conv.``, optionally under
    ``first_stage_model.``) -> diffusers ``AutoencoderKL`` keys."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    return convert_ldm_vae_checkpoint(state, config)


def ldm_resnet_sites(layers_per_block: int, levels: int) -> dict[str, str]:
    """LDM ResBlock site (``input_blocks.4.0``) -> diffusers ResNet name (``down_blocks.1.resnets.1``) for a UNet
    with ``levels`` levels of ``layers_per_block`` ResNets (the up path has one more per level)."""
    sites = {}
    step = layers_per_block + 1  # an input level: its ResNets, then its downsampler
    for level in range(levels):
        for j in range(layers_per_block):
            sites[f"input_blocks.{1 + level * step + j}.0"] = f"down_blocks.{level}.resnets.{j}"
    sites["middle_block.0"] = "mid_block.resnets.0"
    sites["middle_block.2"] = "mid_block.resnets.1"
    for level in range(levels):
        for j in range(step):
            sites[f"output_blocks.{level * step + j}.0"] = f"up_blocks.{level}.resnets.{j}"
    return sites
