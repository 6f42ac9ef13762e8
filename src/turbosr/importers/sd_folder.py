"""A diffusers Stable Diffusion folder as the base of an imported release: its configs, weights, and the fixed
prompt embeddings computed once from its text encoder; strict, shape-checked loading with one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from turbosr.config import ModelConfig, ScheduleConfig
from turbosr.importers.safe_load import ImportFailed


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ImportFailed(f"{what}: {path} not found") from None
    except (OSError, ValueError) as error:
        raise ImportFailed(f"{what}: {path} is not readable JSON ({error})") from None
    if not isinstance(data, dict):
        raise ImportFailed(f"{what}: {path} is not a JSON object")
    return data


def read_sd_folder(folder: Path) -> dict[str, Any]:
    """The SD folder's UNet, VAE and scheduler configs, checked to be a Stable Diffusion 2-style folder."""
    if not folder.is_dir():
        raise ImportFailed(f"Stable Diffusion folder not found: {folder}")
    unet = read_json(folder / "unet" / "config.json", "the SD folder's UNet")
    vae = read_json(folder / "vae" / "config.json", "the SD folder's VAE")
    scheduler = read_json(folder / "scheduler" / "scheduler_config.json", "the SD folder's scheduler")
    if unet.get("_class_name") != "UNet2DConditionModel" or vae.get("_class_name") != "AutoencoderKL":
        raise ImportFailed(f"{folder} is not a Stable Diffusion folder (needs a UNet2DConditionModel unet/ and an "
                           "AutoencoderKL vae/)")
    if unet.get("addition_embed_type") or unet.get("in_channels") != 4:
        raise ImportFailed(f"{folder} is not a Stable Diffusion 2 folder (its UNet has addition_embed_type "
                           f"{unet.get('addition_embed_type')!r} and {unet.get('in_channels')} input channels; "
                           "SDXL and inpainting/upscaler UNets do not fit StableSR)")
    return {"unet": unet, "vae": vae, "scheduler": scheduler}


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Strict load with a one-line error naming the first mismatch."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(key for key in set(own) & set(state) if own[key].shape != state[key].shape)
    if missing or unexpected or wrong:
        detail = (f"{len(missing)} missing (first {missing[0]})" if missing else
                  f"{len(unexpected)} unexpected (first {unexpected[0]})" if unexpected else
                  f"{wrong[0]} is {tuple(state[wrong[0]].shape)}, expected {tuple(own[wrong[0]].shape)}")
        raise ImportFailed(f"{what} does not fit: {detail}")
    module.load_state_dict(state, strict=True)


def prompt_embedding(folder: Path, prompt: str = "") -> torch.Tensor:
    """(1, 77, dim) text-encoder states of ``prompt`` from the SD folder's tokenizer and text encoder (SD-2:
    OpenCLIP's penultimate layer and final norm, which diffusers' conversion makes ``last_hidden_state``)."""
    try:
        from transformers import CLIPTextModel, CLIPTokenizer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    except ImportError as error:
        raise ImportError("importing released models computes the prompt embedding once with transformers: "
                          "pip install 'turbosr[import]'") from error
    try:
        tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
        encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", local_files_only=True,
                                                torch_dtype=torch.float32)
    except (OSError, ValueError) as error:
        raise ImportFailed(f"{folder}: cannot load its tokenizer/text_encoder ({str(error).strip()[:120]})") from None
    ids = tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    with torch.no_grad():
        return encoder(ids).last_hidden_state.float()


def sd_weights(folder: Path, part: str) -> dict[str, torch.Tensor]:
    from diffusers.models.model_loading_utils import load_state_dict

    files = sorted((folder / part).glob("diffusion_pytorch_model*.safetensors"))
    if not files:
        raise ImportFailed(f"{folder}/{part} has no safetensors weights")
    loaded: dict[str, torch.Tensor] = {}
    for file in files:
        loaded.update({k: v.float() for k, v in load_state_dict(file).items()})
    return loaded


PREDICTIONS = {"epsilon": "epsilon", "v_prediction": "v"}  # diffusers scheduler names -> turbosr's


def released_model_config(configs: dict[str, Any], unet: Any, scale: int, conditioning: str,
                          predictions: tuple[str, ...] = ("epsilon", "v")) -> ModelConfig:
    """The ModelConfig of an imported SD-based release: a KL latent of the SD folder's VAE, its UNet, the latent
    itself as x0, and the SD folder's scheduler (scaled_linear betas, no zero-terminal-SNR rescaling, its
    prediction type, which must be one of ``predictions``)."""
    scheduler = configs["scheduler"]
    name = scheduler.get("prediction_type", "epsilon")
    prediction = PREDICTIONS.get(name)
    if prediction not in predictions:
        raise ImportFailed(f"the SD folder's scheduler predicts {name!r}; this release was trained with "
                           f"{' or '.join(predictions)} (use the SD folder it was built on)")
    if scheduler.get("beta_schedule", "scaled_linear") != "scaled_linear":
        raise ImportFailed(f"the SD folder's scheduler has beta_schedule {scheduler.get('beta_schedule')!r}; "
                           "Stable Diffusion 2 (and every release built on it) uses scaled_linear")
    schedule = ScheduleConfig(num_train_timesteps=int(scheduler.get("num_train_timesteps", 1000)),
                              beta_start=float(scheduler.get("beta_start", 0.00085)),
                              beta_end=float(scheduler.get("beta_end", 0.012)), beta_schedule="scaled_linear",
                              zero_terminal_snr=False)
    levels = len(configs["vae"]["block_out_channels"])
    widths = tuple(unet.config.block_out_channels)
    return ModelConfig(preset="tiny", scale=scale, latent="kl", latent_factor=2 ** (levels - 1), latent_channels=4,
                       unet="unet2d_condition", unet_channels=widths, attention_levels=tuple(True for _ in widths),
                       prediction_type=prediction, target="latent", schedule=schedule, conditioning=conditioning)
