"""``turbosr import addsr``: AddSR's released 4-step student (Xie et al. 2024, arXiv 2404.01717; NJU-PCALab/AddSR,
Apache-2.0) as an ordinary turbosr model folder.

Inputs a user has on disk: AddSR's folder (``unet/`` and ``controlnet/`` in diffusers format, their configs
carrying ``use_image_cross_attention``), a diffusers SD-2-base folder (VAE, text encoder, tokenizer), RAM's
``ram_swin_large_14m.pth`` and SeeSR's ``DAPE.pth`` (a LoRA on RAM, merged here).

The folder runs the released pipeline: the LQ image bicubic-upsampled to the output size is encoded (a posterior
sample) and noised to t = 999; at each of 999/749/499/249 the ControlNet (on the control image in pixels) and the
UNet (both with image cross-attention to RAM tokens of that image) predict eps, x0 is re-noised to the next
timestep with fresh noise; from the second step the control image is the prediction-based self-refinement blend
``0.4 * decode(x0) + 0.6 * LQ`` in pixels (the pipeline's default weight, which the released test script never
overrides), re-embedded by the tower. AdaIN colour correction by default. The prompt is the released script's
with no tags, ``", ," + "clean, high-resolution, 8k, extremely detailed, best quality, sharp"``, embedded once.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from turbosr.diffusion import Sampler
from turbosr.importers.safe_load import ImportFailed, file_digest, load_checkpoint, staging_folder
from turbosr.importers.sd_folder import (
    load_strict,
    prompt_embedding,
    read_json,
    read_sd_folder,
    released_model_config,
    sd_weights,
)

ADDED_PROMPT = "clean, high-resolution, 8k, extremely detailed, best quality, sharp"
PROMPT = ", ," + ADDED_PROMPT  # test_addsr.py: f"{tags}, {prompt}," + added_prompt, tags and prompt empty
PSR_WEIGHT = 0.4  # StableDiffusionControlNetPipeline.__call__'s default, what the released script runs
TIMESTEPS = 4  # the student's grid: 999, 749, 499, 249
LICENCES = {"AddSR weights (NJU-PCALab/AddSR)": "Apache-2.0", "RAM (xinyu1205/recognize-anything)": "Apache-2.0",
            "DAPE (cswry/SeeSR)": "Apache-2.0", "Stable Diffusion 2 weights (Stability AI)": "CreativeML Open RAIL++-M"}
IMAGE_KEYS = re.compile(r"^(.*?\.image_attentions\.\d+)\.(.*)$")


def read_network(folder: Path, what: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A released diffusers network folder: its config (checked to carry image cross-attention) and weights."""
    from diffusers.models.model_loading_utils import load_state_dict

    config = read_json(folder / "config.json", what)
    if not config.get("use_image_cross_attention"):
        raise ImportFailed(f"{folder} is not an AddSR/SeeSR {what}: its config has no use_image_cross_attention")
    files = sorted(folder.glob("diffusion_pytorch_model*.safetensors"))
    if not files:
        raise ImportFailed(f"{folder} has no safetensors weights for the {what}")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            state.update({k: v.float() for k, v in load_state_dict(file).items()})
        except Exception as error:  # noqa: BLE001  (a damaged file is one line)
            raise ImportFailed(f"{file} cannot be read ({str(error).strip()[:100]})") from None
    if not any(".image_attentions." in key for key in state):
        raise ImportFailed(f"{folder}: the {what} has no image_attentions weights (not an AddSR/SeeSR network)")
    return {k: v for k, v in config.items() if not k.startswith("_") and k not in (
        "use_image_cross_attention", "image_cross_attention_dim")}, state


def split_image_attention(state: dict[str, torch.Tensor], names: dict[str, str], what: str
                          ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(stock keys, image-attention keys under our block names) of a released network's state."""
    ours = {release: key for key, release in names.items()}
    stock, image = {}, {}
    for key, value in state.items():
        match = IMAGE_KEYS.match(key)
        if match is None:
            stock[key] = value
        elif match.group(1) not in ours:
            raise ImportFailed(f"{what}: image attention {match.group(1)} has no text attention to follow")
        else:
            image[f"{ours[match.group(1)]}.{match.group(2)}"] = value
    return stock, image


def ram_state(ram: dict[str, Any], path: Path | str) -> dict[str, torch.Tensor]:
    """The tower's part of a RAM checkpoint (``{'model': state}``), its computed buffers left out."""
    state = ram.get("model", ram)
    if not isinstance(state, dict) or "visual_encoder.patch_embed.proj.weight" not in state \
            or "image_proj.weight" not in state:
        raise ImportFailed(f"{path} is not a RAM checkpoint: it has no visual_encoder (Swin) and image_proj keys")
    return {k: v for k, v in state.items() if (k.startswith("visual_encoder.") or k.startswith("image_proj."))}


def convert_addsr(unet_config: dict[str, Any], unet_state: dict[str, torch.Tensor],
                  controlnet_config: dict[str, Any], controlnet_state: dict[str, torch.Tensor],
                  ram: dict[str, torch.Tensor], dape: dict[str, torch.Tensor] | None, configs: dict[str, Any],
                  prompt: torch.Tensor, scale: int = 4, *, sd: Path | None = None, device: str | None = None) -> Any:
    """The pipeline of an AddSR release (every load strict and shape-checked; ``device="meta"`` checks a
    full-size layout without weights, and then ``sd`` may be None)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from turbosr.models.autoencoders import KLAutoencoder
    from turbosr.models.denoiser import Denoiser
    from turbosr.models.ram_tower import RamTower, merge_dape, tower_settings
    from turbosr.pipeline import SRPipeline

    with torch.device(device or "cpu"):
        unet = UNet2DConditionModel.from_config(unet_config)
        try:
            tower = RamTower(**tower_settings(ram))
        except (KeyError, ValueError, IndexError) as error:
            raise ImportFailed(f"the RAM checkpoint's Swin layout is not understood ({error})") from None
        load_strict(tower, {k: v.float() for k, v in ram.items()
                            if not k.endswith(("relative_position_index", "attn_mask"))}, "the RAM tower")
        if dape is not None:
            try:
                merged = merge_dape(tower, {k: v.float() for k, v in dape.items()})
            except (ValueError, AttributeError) as error:
                raise ImportFailed(f"the DAPE file does not fit this RAM: {str(error)[:120]}") from None
            if not merged:
                raise ImportFailed("the DAPE file has no LoRA for the Swin encoder's qkv layers")
        denoiser = Denoiser(unet, 4, "latent", prompt, conditioning="controlnet", controlnet=controlnet_config,
                            tower=tower)
        control = denoiser.released_control
        assert control is not None
        stock, image = split_image_attention(unet_state, control.unet_images.release_names(), "the UNet")
        load_strict(unet, stock, "the AddSR UNet")
        load_strict(control.unet_images.blocks, image, "the AddSR UNet's image attentions")
        stock, image = split_image_attention(controlnet_state, control.control_images.release_names(), "the ControlNet")
        load_strict(control.controlnet, stock, "the AddSR ControlNet")
        load_strict(control.control_images.blocks, image, "the AddSR ControlNet's image attentions")
        vae = AutoencoderKL.from_config({k: v for k, v in configs["vae"].items() if not k.startswith("_")})
        if sd is not None:
            load_strict(vae, sd_weights(sd, "vae"), f"the SD folder's VAE ({sd})")
        autoencoder = KLAutoencoder(vae, float(configs["vae"].get("scaling_factor", 0.18215)), "sample")
    if unet.config.cross_attention_dim != prompt.shape[-1]:
        raise ImportFailed(f"the SD folder's text encoder gives {prompt.shape[-1]}-d states, the UNet reads "
                           f"{unet.config.cross_attention_dim}-d (use the SD-2-base folder AddSR was trained on)")
    config = released_model_config(configs, unet, scale, "controlnet", predictions=("epsilon",))
    sampler = Sampler(kind="renoise", psr_weight=PSR_WEIGHT, trained_steps=TIMESTEPS, psr_space="pixel",
                      allowed_steps=tuple(range(1, TIMESTEPS + 1)))
    return SRPipeline(denoiser, autoencoder, config, sampler=sampler, default_steps=TIMESTEPS,
                      default_color_fix="adain")


def import_addsr(sd: str | Path, model: str | Path, ram: str | Path, dape: str | Path | None, output: str | Path,
                 scale: int = 4, storage: str = "float32") -> Path:
    """Convert AddSR's release into the model folder ``output`` (which must not exist; staged, then renamed)."""
    sd, model, ram, output = Path(sd), Path(model), Path(ram), Path(output)
    dape = Path(dape) if dape is not None else None
    if output.exists():
        raise ImportFailed(f"{output} already exists: choose a new output folder (nothing was written)")
    if not 1 <= scale <= 16:
        raise ImportFailed(f"scale must be in [1, 16], got {scale}")
    configs = read_sd_folder(sd)
    unet_config, unet_state = read_network(model / "unet", "UNet")
    controlnet_config, controlnet_state = read_network(model / "controlnet", "ControlNet")
    ram_weights = ram_state(load_checkpoint(ram, "the RAM checkpoint"), ram)
    dape_weights = None
    if dape is not None:
        dape_weights = load_checkpoint(dape, "the DAPE checkpoint")
        if not all(torch.is_tensor(v) for v in dape_weights.values()) or not any("lora_" in k for k in dape_weights):
            raise ImportFailed(f"{dape} is not a DAPE file: it holds no lora_ tensors")
    pipeline = convert_addsr(unet_config, unet_state, controlnet_config, controlnet_state, ram_weights,
                             dape_weights, configs, prompt_embedding(sd, PROMPT), scale, sd=sd)
    with staging_folder(output) as staging:
        pipeline.save_pretrained(staging, storage=storage, max_shard_bytes=2 << 30)
        sources = [("RAM", ram), *([("DAPE", dape)] if dape is not None else [])]
        lines = ["# AddSR (imported)", "",
                 "Converted by `turbosr import addsr` from files the user supplied; turbosr ships no released "
                 "weights.", "", "## Sources", "", f"- AddSR folder: `{model}` (unet/, controlnet/)",
                 f"- Stable Diffusion folder: `{sd}` (VAE; its text encoder once, for the prompt)"]
        lines += [f"- {what}: `{path.name}` sha256 `{file_digest(path)}`" for what, path in sources]
        lines += ["", "## Licences", ""] + [f"- {what}: {licence}" for what, licence in LICENCES.items()]
        lines += ["", "## How it runs", "",
                  f"- {TIMESTEPS} steps on 999/749/499/249 (`--steps k` runs the first k), re-noising with fresh "
                  f"noise, pixel-space self-refinement at weight {PSR_WEIGHT}, AdaIN colour fix by default.",
                  f"- Fixed prompt {PROMPT!r} (no RAM tags: the release adds per-image tags to it).",
                  "- Verified in turbosr by parity with the reference code on random weights in the released layout;"
                  " no run with the real weights was made by turbosr's developers.", ""]
        (staging / "README.md").write_text("\n".join(lines))
        (staging / "import.json").write_text(json.dumps({"family": "addsr", "prompt": PROMPT}, indent=1))
    return output
