"""``turbosr import osediff``: OSEDiff's released one-step model (Wu et al. 2024, "One-Step Effective Diffusion
Network for Real-World Image Super-Resolution"; cswry/OSEDiff, Apache-2.0) as an ordinary turbosr model folder.

Inputs a user has on disk: a diffusers SD-2.1-base folder and ``osediff.pkl`` (a ``torch.save`` dict: the LoRA
ranks, the lists of adapted modules, peft LoRA tensors for the UNet, with a fully trained ``conv_in``, and for the
VAE encoder). The LoRA is merged into plain weights here (scale alpha / rank, alpha = peft's default 8, which
the release relies on), so neither peft nor the pickle is needed at run time.

The folder runs OSEDiff's inference: the LQ image (bicubic-upsampled to the output size) is encoded by the
adapted encoder (a posterior sample), the UNet runs once at t = 999 on that latent itself with no noise added
(conditioning "direct", sampler start "latent", one step only), x0 from its eps, the plain SD decoder, and AdaIN
colour correction by default. The prompt is fixed at import (empty, or ``--prompt``): OSEDiff was trained with
per-image RAM tags, so a fixed prompt is off its training distribution (docs/osediff.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from turbosr.diffusion import Sampler
from turbosr.importers.lora import merge_lora
from turbosr.importers.safe_load import ImportFailed, file_digest, load_checkpoint, staging_folder
from turbosr.importers.sd_folder import (
    load_strict,
    prompt_embedding,
    read_sd_folder,
    released_model_config,
    sd_weights,
)

LORA_ALPHA = 8.0  # peft's LoraConfig default; OSEDiff passes none and the pickle does not store it
KEYS = ("rank_unet", "rank_vae", "state_dict_unet", "state_dict_vae")
LICENCES = {"OSEDiff weights (cswry/OSEDiff)": "Apache-2.0",
            "Stable Diffusion 2.1 weights (Stability AI)": "CreativeML Open RAIL++-M"}


def check_release(data: dict[str, Any], path: Path | str) -> None:
    """ImportFailed unless ``data`` has OSEDiff's layout: integer ranks and two dicts of tensors with LoRA keys."""
    missing = [key for key in KEYS if key not in data]
    if missing:
        raise ImportFailed(f"{path} is not an OSEDiff checkpoint: it lacks {', '.join(missing)}")
    for key in ("rank_unet", "rank_vae"):
        if not isinstance(data[key], int) or isinstance(data[key], bool) or not 1 <= data[key] <= 1024:
            raise ImportFailed(f"{path}: {key} must be a LoRA rank, got {data[key]!r}")
    for key in ("state_dict_unet", "state_dict_vae"):
        state = data[key]
        if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()) or not any(
                ".lora_A." in k for k in state):
            raise ImportFailed(f"{path}: {key} holds no LoRA tensors")


def convert_osediff(data: dict[str, Any], configs: dict[str, Any], prompt: torch.Tensor, scale: int = 4, *,
                    sd: Path | None = None, path: Path | str = "osediff.pkl", device: str | None = None) -> Any:
    """Build the SD UNet and VAE from ``configs`` (weights from ``sd`` unless ``device`` is "meta"), merge the
    release's LoRA, and return the pipeline."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from turbosr.models.autoencoders import KLAutoencoder
    from turbosr.models.denoiser import Denoiser
    from turbosr.pipeline import SRPipeline

    check_release(data, path)
    with torch.device(device or "cpu"):
        unet = UNet2DConditionModel.from_config({k: v for k, v in configs["unet"].items() if not k.startswith("_")})
        vae = AutoencoderKL.from_config({k: v for k, v in configs["vae"].items() if not k.startswith("_")})
        if sd is not None:
            load_strict(unet, sd_weights(sd, "unet"), f"the SD folder's UNet ({sd})")
            load_strict(vae, sd_weights(sd, "vae"), f"the SD folder's VAE ({sd})")
        unet_state = {k: v.float() for k, v in data["state_dict_unet"].items()}
        base = {k.replace(".base_layer.", "."): v for k, v in unet_state.items() if ".base_layer." in k}
        own = unet.state_dict()
        for key, value in base.items():  # the fully trained layers (conv_in) replace the SD ones
            if key not in own or own[key].shape != value.shape:
                raise ImportFailed(f"{path}: trained {key} {tuple(value.shape)} does not fit the SD folder's UNet")
        unet.load_state_dict(base, strict=False)
        others = sorted(k for k in unet_state if ".lora_" not in k and ".base_layer." not in k)
        if others:
            raise ImportFailed(f"{path}: unexpected UNet entry {others[0]}")
        merged = merge_lora(unet, unet_state, data["rank_unet"], LORA_ALPHA, f"{path} (UNet)")
        vae_state = {k: v.float() for k, v in data["state_dict_vae"].items()}
        if any(not (k.startswith("encoder.") or k.startswith("quant_conv.")) for k in vae_state):
            raise ImportFailed(f"{path}: the VAE LoRA must adapt only the encoder and quant_conv")
        merged += merge_lora(vae, vae_state, data["rank_vae"], LORA_ALPHA, f"{path} (VAE)")
        denoiser = Denoiser(unet, 4, "latent", prompt, conditioning="direct")
        autoencoder = KLAutoencoder(vae, float(configs["vae"].get("scaling_factor", 0.18215)), "sample")
    config = released_model_config(configs, unet, scale, "direct", predictions=("epsilon",))
    pipeline = SRPipeline(denoiser, autoencoder, config,
                          sampler=Sampler(kind="ddim", start="latent", allowed_steps=(1,)),
                          default_steps=1, default_color_fix="adain")
    pipeline.merged_adapters = merged
    return pipeline


def import_osediff(sd: str | Path, weights: str | Path, output: str | Path, prompt: str = "", scale: int = 4,
                   storage: str = "float32") -> Path:
    """Convert OSEDiff's release into the model folder ``output`` (which must not exist; staged, then renamed)."""
    sd, weights, output = Path(sd), Path(weights), Path(output)
    if output.exists():
        raise ImportFailed(f"{output} already exists: choose a new output folder (nothing was written)")
    if not 1 <= scale <= 16:
        raise ImportFailed(f"scale must be in [1, 16], got {scale}")
    configs = read_sd_folder(sd)
    data = load_checkpoint(weights, "the OSEDiff weights")
    check_release(data, weights)
    pipeline = convert_osediff(data, configs, prompt_embedding(sd, prompt), scale, sd=sd, path=weights)
    with staging_folder(output) as staging:
        pipeline.save_pretrained(staging, storage=storage, max_shard_bytes=2 << 30)
        lines = ["# OSEDiff (imported)", "",
                 "Converted by `turbosr import osediff` from files the user supplied; turbosr ships no released "
                 "weights.", "", "## Sources", "",
                 f"- Stable Diffusion folder: `{sd}` (UNet and VAE weights; its text encoder once, for the prompt)",
                 f"- OSEDiff weights: `{weights.name}` sha256 `{file_digest(weights)}` ({pipeline.merged_adapters} "
                 f"LoRA adapters merged at alpha {LORA_ALPHA:g} / rank)", "", "## Licences", ""]
        lines += [f"- {what}: {licence}" for what, licence in LICENCES.items()]
        lines += ["", "## How it runs", "",
                  "- One UNet call at t = 999 on the LQ latent itself (no noise), AdaIN colour fix by default.",
                  f"- Fixed prompt: {prompt!r} (OSEDiff was trained with per-image RAM tags: a fixed prompt is off "
                  "its training distribution).",
                  "- Verified in turbosr by parity with the reference (peft + diffusers) on random weights in the "
                  "released layout; no run with the real weights was made by turbosr's developers.", ""]
        (staging / "README.md").write_text("\n".join(lines))
    return output
