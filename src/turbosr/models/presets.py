"""Building networks from a :class:`~turbosr.config.ModelConfig` (the presets themselves are data in config.py).

- ``tiny`` / ``small``: built from scratch (diffusers classes, zero output layer).
- ``sd``: Stable-Diffusion-2.x-shaped, initialised from a LOCAL diffusers folder (``model.sd_path``).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
from torch import nn

from turbosr.config import ConfigError, ModelConfig
from turbosr.models.autoencoders import Autoencoder, KLAutoencoder, PatchAutoencoder
from turbosr.models.denoiser import Denoiser

logger = logging.getLogger(__name__)

def build_unet(config: ModelConfig) -> nn.Module:
    """A randomly initialised diffusers UNet for the config (input: 2C channels, output: C)."""
    from diffusers import UNet2DConditionModel, UNet2DModel

    channels = config.latent_channels
    if config.unet == "unet2d":
        down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in config.attention_levels)
        up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.attention_levels))
        unet = UNet2DModel(
            in_channels=2 * channels, out_channels=channels, block_out_channels=config.unet_channels,
            down_block_types=down, up_block_types=up, layers_per_block=config.layers_per_block,
            norm_num_groups=config.norm_groups, attention_head_dim=config.attention_head_dim,
            add_attention=config.attention_levels[-1],
        )
    else:
        down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in config.attention_levels)
        up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.attention_levels))
        unet = UNet2DConditionModel(
            in_channels=2 * channels, out_channels=channels, block_out_channels=config.unet_channels,
            down_block_types=down, up_block_types=up, layers_per_block=config.layers_per_block,
            norm_num_groups=config.norm_groups, attention_head_dim=config.attention_head_dim,
            cross_attention_dim=config.cross_attention_dim,
        )
    # Zero output layer: an untrained model predicts x0 = 0 at the last timestep, i.e. plain bicubic under the
    # residual target, so training starts from the bicubic baseline instead of from noise.
    nn.init.zeros_(unet.conv_out.weight)
    nn.init.zeros_(unet.conv_out.bias)
    return unet


def build_autoencoder(config: ModelConfig) -> Autoencoder:
    """A fresh (unfitted / untrained) autoencoder for the config."""
    if config.latent == "patch":
        return PatchAutoencoder(config.latent_factor, config.latent_channels, config.refine_channels)
    from diffusers import AutoencoderKL

    blocks = len(config.kl_channels)
    if 2 ** (blocks - 1) != config.latent_factor:
        raise ConfigError(f"model.kl_channels has {blocks} levels, i.e. factor {2 ** (blocks - 1)}, "
                          f"but model.latent_factor is {config.latent_factor}")
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=config.latent_channels,
        block_out_channels=config.kl_channels, down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks, layers_per_block=1,
        norm_num_groups=min(32, config.kl_channels[0]),
    )
    return KLAutoencoder(vae, scaling_factor=1.0)


def build_model(config: ModelConfig) -> tuple[Denoiser, Autoencoder]:
    """Denoiser and autoencoder for ``config``; preset ``sd`` loads from the local folder ``config.sd_path``."""
    if config.preset == "sd":
        if not config.sd_path:
            raise ConfigError("preset 'sd' is initialised from a local diffusers Stable Diffusion folder: "
                              "set model.sd_path=/path/to/folder")
        return build_from_sd_folder(config)
    autoencoder = build_autoencoder(config)
    prompt = None
    if config.unet == "unet2d_condition":
        prompt = torch.zeros(1, config.prompt_tokens, config.cross_attention_dim)
    return Denoiser(build_unet(config), config.latent_channels, config.target, prompt, config.control, config.sft,
                    config.sft_time_aware, config.sft_down), autoencoder


def describe_loaded(config: ModelConfig, denoiser: Denoiser, autoencoder: Autoencoder) -> ModelConfig:
    """``config`` with the shape fields set from networks loaded from a folder (their shape wins)."""
    unet_config = denoiser.unet.config
    return dataclasses.replace(
        config, latent_factor=autoencoder.factor, latent_channels=autoencoder.latent_channels,
        unet_channels=tuple(unet_config.block_out_channels),
        attention_levels=tuple("Attn" in name for name in unet_config.down_block_types),
        layers_per_block=unet_config.layers_per_block,
    )


def build_from_sd_folder(config: ModelConfig) -> tuple[Denoiser, Autoencoder]:
    """Initialise from a local diffusers Stable Diffusion folder (``unet/``, ``vae/``, optional text encoder).

    The UNet's ``conv_in`` is widened from C to 2C input channels; the weights for the added condition channels
    start at zero, so the initial model behaves exactly like the original UNet on the noisy latent. The prompt
    embedding of the empty prompt is computed once when ``transformers`` and the text encoder are available,
    else it is zeros; it is stored with the model so inference never needs a text encoder.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel

    folder = Path(config.sd_path or "")
    for sub in ("unet", "vae"):
        if not (folder / sub / "config.json").is_file():
            raise FileNotFoundError(f"{folder} is not a diffusers Stable Diffusion folder: missing {sub}/config.json")
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", local_files_only=True)
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", local_files_only=True)
    channels = int(vae.config.latent_channels)
    old = unet.conv_in
    if old.in_channels != channels:
        raise ConfigError(f"{folder}/unet takes {old.in_channels} input channels, expected the VAE's {channels}")
    new = nn.Conv2d(2 * channels, old.out_channels, old.kernel_size, old.stride, old.padding)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, :channels] = old.weight
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=2 * channels)
    prompt = _empty_prompt_embedding(folder, unet.config.cross_attention_dim)
    denoiser = Denoiser(unet, channels, config.target, prompt)
    return denoiser, KLAutoencoder(vae)


def _empty_prompt_embedding(folder: Path, dim: int) -> torch.Tensor:
    """Text-encoder output for the empty prompt, or zeros (1, 77, dim) without transformers / encoder files."""
    if (folder / "text_encoder").is_dir() and (folder / "tokenizer").is_dir():
        try:
            from transformers import CLIPTextModel, CLIPTokenizer
        except ImportError:
            logger.warning("transformers is not installed: using a zero prompt embedding")
        else:
            tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)
            encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", local_files_only=True)
            tokens = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt")
            with torch.no_grad():
                return encoder(tokens.input_ids)[0].float()
    return torch.zeros(1, 77, dim)
