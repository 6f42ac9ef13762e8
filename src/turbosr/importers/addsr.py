"""``turbosr import addsr`` and ``turbosr import seesr``: AddSR's released 4-step student (Xie et al. 2024, arXiv
2404.01717; NJU-PCALab/AddSR, Apache-2.0) and SeeSR's released model, its 50-step parent (Wu et al. 2024, CVPR;
cswry/SeeSR, Apache-2.0), as ordinary turbosr model folders. The two releases share one layout and one converter.

Inputs a user has on disk: the release's folder (``unet/`` and ``controlnet/`` in diffusers format, their configs
carrying ``use_image_cross_attention``), a diffusers SD-2-base folder (VAE, text encoder, tokenizer, scheduler),
RAM's ``ram_swin_large_14m.pth`` and SeeSR's ``DAPE.pth`` (a LoRA on RAM, merged here), and for RAM tags
(``--tag-data``) the ``ram/`` folder of recognize-anything or SeeSR (tag list, thresholds, tagging-head config).

AddSR's folder runs the released pipeline: the LQ image bicubic-upsampled to the output size is encoded (a
posterior sample) and noised to t = 999; at each of 999/749/499/249 the ControlNet (on the control image in
pixels) and the UNet (both with image cross-attention to RAM tokens of that image) predict eps, x0 is re-noised
to the next timestep with fresh noise; from the second step the control image is the prediction-based
self-refinement blend ``0.4 * decode(x0) + 0.6 * LQ`` in pixels (the pipeline's default weight, which the
released test script never overrides), re-embedded by the tower. AdaIN colour correction by default.

SeeSR's folder runs test_seesr.py's defaults: the LQ latent noised to t = 999, then 50 ancestral DDPM steps on
the SD scheduler's "leading" grid (981, 961, ..., 1 with SD-2's steps_offset 1), classifier-free guidance 5.5 on
the negative prompt "dotted, noise, blur, lowres, smooth", the tower's tokens of the LQ image at every step,
AdaIN colour correction.

The prompts are the released scripts' with no tags (``"{tags}, {user prompt}," + added prompt``, tags and user
prompt empty), embedded once; with ``--tag-data`` the folder also holds RAM's tagging head and the SD text
encoder, and ``turbosr upscale --tags`` fills the template with each image's tags (the releases' behaviour).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
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

PSR_WEIGHT = 0.4  # AddSR's StableDiffusionControlNetPipeline.__call__ default, what the released script runs
TIMESTEPS = 4  # AddSR's student grid: 999, 749, 499, 249
RAM_THRESHOLD = 0.68  # RAM's default tag threshold (ram(threshold=0.68)), for classes its threshold file leaves out
PROCESS_SIZE = 512  # both scripts' --process_size: smaller outputs are made at 512 and resized back
RAM_LICENCES = {"RAM (xinyu1205/recognize-anything)": "Apache-2.0", "DAPE (cswry/SeeSR)": "Apache-2.0",
                "Stable Diffusion 2 weights (Stability AI)": "CreativeML Open RAIL++-M"}


@dataclass(frozen=True)
class Release:
    """What differs between the two ControlNet releases: their prompts and how their scripts sample."""

    family: str
    title: str
    added_prompt: str  # the script's --added_prompt default; the prompt is f"{tags}, {user prompt}," + it
    negative_prompt: str | None  # classifier-free guidance's negative prompt (None: no guidance)
    default_steps: int
    licence: str  # the release's own weights
    runs: str  # one line for the card

    @property
    def template(self) -> str:
        return "{tags}, ," + self.added_prompt

    @property
    def prompt(self) -> str:
        return self.template.replace("{tags}", "")

    def sampler(self, scheduler: dict[str, Any]) -> Sampler:
        if self.family == "addsr":
            return Sampler(kind="renoise", psr_weight=PSR_WEIGHT, trained_steps=TIMESTEPS, psr_space="pixel",
                           allowed_steps=tuple(range(1, TIMESTEPS + 1)))
        return Sampler(kind="ddpm", spacing="leading", steps_offset=int(scheduler.get("steps_offset", 0)),
                       start_timestep=int(scheduler.get("num_train_timesteps", 1000)) - 1, guidance=GUIDANCE)


GUIDANCE = 5.5  # test_seesr.py's --guidance_scale default
RELEASES = {
    "addsr": Release("addsr", "AddSR", "clean, high-resolution, 8k, extremely detailed, best quality, sharp", None,
                     TIMESTEPS, "AddSR weights (NJU-PCALab/AddSR): Apache-2.0",
                     f"{TIMESTEPS} steps on 999/749/499/249 (`--steps k` runs the first k), re-noising with fresh "
                     f"noise, pixel-space self-refinement at weight {PSR_WEIGHT}, AdaIN colour fix by default."),
    "seesr": Release("seesr", "SeeSR", "clean, high-resolution, 8k", "dotted, noise, blur, lowres, smooth", 50,
                     "SeeSR weights (cswry/SeeSR): Apache-2.0",
                     f"50 DDPM steps on the SD scheduler's leading grid (981 ... 1) from the LQ latent noised to "
                     f"999, classifier-free guidance {GUIDANCE} on the negative prompt, AdaIN colour fix by default "
                     "(`--steps k` runs a k-step leading grid)."),
}
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


def check_scheduler(release: Release, scheduler: dict[str, Any]) -> None:
    """SeeSR samples with diffusers' DDPMScheduler built from the SD folder's scheduler config: turbosr runs the
    configs Stable Diffusion 2 ships (leading spacing, no x0 clipping, fixed small variance) and refuses others."""
    if release.family != "seesr":
        return
    spacing = scheduler.get("timestep_spacing", "leading")
    if spacing != "leading":
        raise ImportFailed(f"the SD folder's scheduler uses timestep_spacing {spacing!r}; SeeSR's DDPM run is "
                           "supported on the SD-2 scheduler's 'leading' grid")
    if scheduler.get("clip_sample", True) or scheduler.get("thresholding", False) \
            or scheduler.get("variance_type", "fixed_small") != "fixed_small":
        raise ImportFailed("the SD folder's scheduler clips or thresholds x0 or has a learned variance; SeeSR's DDPM "
                           "run is supported with SD-2's scheduler (clip_sample false, fixed_small variance)")


def convert_controlnet_release(release: Release, unet_config: dict[str, Any], unet_state: dict[str, torch.Tensor],
                               controlnet_config: dict[str, Any], controlnet_state: dict[str, torch.Tensor],
                               ram: dict[str, torch.Tensor], dape: dict[str, torch.Tensor] | None,
                               configs: dict[str, Any], prompt: torch.Tensor, negative: torch.Tensor | None = None,
                               scale: int = 4, *, sd: Path | None = None, device: str | None = None) -> Any:
    """The pipeline of an AddSR or SeeSR release (every load strict and shape-checked; ``device="meta"`` checks
    a full-size layout without weights, and then ``sd`` may be None)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from turbosr.models.autoencoders import KLAutoencoder
    from turbosr.models.denoiser import Denoiser
    from turbosr.models.ram_tower import RamTower, merge_dape, tower_settings
    from turbosr.pipeline import SRPipeline

    check_scheduler(release, configs["scheduler"])
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
                            tower=tower, negative_embedding=negative)
        control = denoiser.released_control
        assert control is not None
        stock, image = split_image_attention(unet_state, control.unet_images.release_names(), "the UNet")
        load_strict(unet, stock, f"the {release.title} UNet")
        load_strict(control.unet_images.blocks, image, f"the {release.title} UNet's image attentions")
        stock, image = split_image_attention(controlnet_state, control.control_images.release_names(), "the ControlNet")
        load_strict(control.controlnet, stock, f"the {release.title} ControlNet")
        load_strict(control.control_images.blocks, image, f"the {release.title} ControlNet's image attentions")
        vae = AutoencoderKL.from_config({k: v for k, v in configs["vae"].items() if not k.startswith("_")})
        if sd is not None:
            load_strict(vae, sd_weights(sd, "vae"), f"the SD folder's VAE ({sd})")
        autoencoder = KLAutoencoder(vae, float(configs["vae"].get("scaling_factor", 0.18215)), "sample")
    if unet.config.cross_attention_dim != prompt.shape[-1]:
        raise ImportFailed(f"the SD folder's text encoder gives {prompt.shape[-1]}-d states, the UNet reads "
                           f"{unet.config.cross_attention_dim}-d (use the SD-2-base folder {release.title} was "
                           "trained on)")
    config = released_model_config(configs, unet, scale, "controlnet", predictions=("epsilon",))
    return SRPipeline(denoiser, autoencoder, config, sampler=release.sampler(configs["scheduler"]),
                      default_steps=release.default_steps, default_color_fix="adain", min_side=PROCESS_SIZE)


def read_tag_data(folder: Path) -> tuple[dict[str, Any], list[str], list[float]]:
    """(tagging-head config, tag names, thresholds) from RAM's ``ram/`` folder (configs/q2l_config.json,
    data/ram_tag_list.txt, data/ram_tag_list_threshold.txt), checked to agree."""
    q2l = read_json(folder / "configs" / "q2l_config.json", "RAM's tagging-head config")
    try:
        names = (folder / "data" / "ram_tag_list.txt").read_text(encoding="utf-8").splitlines()
        lines = (folder / "data" / "ram_tag_list_threshold.txt").read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ImportFailed(f"{folder} is not RAM's ram/ folder (needs data/ram_tag_list.txt and "
                           f"data/ram_tag_list_threshold.txt: {error})") from None
    try:
        thresholds = [float(line) for line in lines if line.strip()]
    except ValueError as error:
        raise ImportFailed(f"{folder}/data/ram_tag_list_threshold.txt: {error}") from None
    if len(thresholds) > len(names):
        raise ImportFailed(f"{folder}: {len(thresholds)} thresholds for {len(names)} tags")
    return q2l, names, thresholds


def build_tagger(ram: dict[str, torch.Tensor], dape: dict[str, torch.Tensor] | None, tag_data: Path,
                 template: str) -> Any:
    """The Tagger of RAM's tagging head (DAPE's LoRA on it merged), the tag names and thresholds of ``tag_data``
    and the release's prompt ``template``; its text encoder is copied into the folder when it is written."""
    from turbosr.models.ram_tagger import RamTagger, Tagger, merge_tagging_lora, tagger_state

    q2l, names, thresholds = read_tag_data(tag_data)
    state = {k: v.float() for k, v in tagger_state(ram).items()}
    if "label_embed" not in state:
        raise ImportFailed("the RAM checkpoint has no tagging head (label_embed, tagging_head.*): tags need RAM's "
                           "full checkpoint")
    if state["label_embed"].shape[0] != len(names):
        raise ImportFailed(f"the RAM checkpoint has {state['label_embed'].shape[0]} classes, {tag_data} lists "
                           f"{len(names)} tags")
    try:
        head = RamTagger(len(names), int(q2l["hidden_size"]), int(q2l["num_attention_heads"]),
                         int(q2l["num_hidden_layers"]), int(q2l["intermediate_size"]),
                         int(state["label_embed"].shape[1]), float(q2l.get("layer_norm_eps", 1e-12)))
    except (KeyError, ValueError) as error:
        raise ImportFailed(f"{tag_data}/configs/q2l_config.json is not a tagging-head config ({error})") from None
    # RAM's class_threshold: its default threshold for every class, then the file's values in order
    thresholds_tensor = torch.full((len(names),), RAM_THRESHOLD)
    thresholds_tensor[:len(thresholds)] = torch.tensor(thresholds)
    load_strict(head, {**state, "thresholds": thresholds_tensor}, "RAM's tagging head")
    if dape is not None:
        try:
            merge_tagging_lora(head, {k: v.float() for k, v in dape.items()})
        except ValueError as error:
            raise ImportFailed(f"the DAPE file does not fit RAM's tagging head: {str(error)[:120]}") from None
    return Tagger(head, names, template)


def import_controlnet_release(family: str, sd: str | Path, model: str | Path, ram: str | Path,
                              dape: str | Path | None, output: str | Path, scale: int = 4, storage: str = "float32",
                              tag_data: str | Path | None = None) -> Path:
    """Convert an AddSR or SeeSR release into the model folder ``output`` (which must not exist; staged, then
    renamed); ``tag_data`` (RAM's ``ram/`` folder) adds the tagger for ``--tags``."""
    release = RELEASES[family]
    sd, model, ram, output = Path(sd), Path(model), Path(ram), Path(output)
    dape = Path(dape) if dape is not None else None
    if output.exists():
        raise ImportFailed(f"{output} already exists: choose a new output folder (nothing was written)")
    if not 1 <= scale <= 16:
        raise ImportFailed(f"scale must be in [1, 16], got {scale}")
    configs = read_sd_folder(sd)
    unet_config, unet_state = read_network(model / "unet", "UNet")
    controlnet_config, controlnet_state = read_network(model / "controlnet", "ControlNet")
    ram_file = load_checkpoint(ram, "the RAM checkpoint")
    ram_weights = ram_state(ram_file, ram)
    dape_weights = None
    if dape is not None:
        dape_weights = load_checkpoint(dape, "the DAPE checkpoint")
        if not all(torch.is_tensor(v) for v in dape_weights.values()) or not any("lora_" in k for k in dape_weights):
            raise ImportFailed(f"{dape} is not a DAPE file: it holds no lora_ tensors")
    tagger = None
    if tag_data is not None:
        tagger = build_tagger(ram_file.get("model", ram_file), dape_weights, Path(tag_data), release.template)
    negative = prompt_embedding(sd, release.negative_prompt) if release.negative_prompt is not None else None
    pipeline = convert_controlnet_release(release, unet_config, unet_state, controlnet_config, controlnet_state,
                                          ram_weights, dape_weights, configs, prompt_embedding(sd, release.prompt),
                                          negative, scale, sd=sd)
    if tagger is not None:
        pipeline = pipeline.replace(tagger=tagger)
    with staging_folder(output) as staging:
        pipeline.save_pretrained(staging, storage=storage, max_shard_bytes=2 << 30)
        if tagger is not None:  # the SD folder's text encoder and tokenizer, for per-image tag prompts
            copy_text_encoder(sd, staging)
        sources = [("RAM", ram), *([("DAPE", dape)] if dape is not None else [])]
        lines = [f"# {release.title} (imported)", "",
                 f"Converted by `turbosr import {family}` from files the user supplied; turbosr ships no released "
                 "weights.", "", "## Sources", "", f"- {release.title} folder: `{model}` (unet/, controlnet/)",
                 f"- Stable Diffusion folder: `{sd}` (VAE; its text encoder once, for the prompts"
                 f"{'; copied for tag prompts' if tagger is not None else ''})"]
        lines += [f"- {what}: `{path.name}` sha256 `{file_digest(path)}`" for what, path in sources]
        if tag_data is not None:
            lines.append(f"- RAM tag data: `{tag_data}` (tag list, thresholds, tagging-head config)")
        lines += ["", "## Licences", "", f"- {release.licence}"] + [f"- {w}: {lic}" for w, lic in RAM_LICENCES.items()]
        lines += ["", "## How it runs", "", f"- {release.runs}",
                  f"- Fixed prompt {release.prompt!r}" + (f", negative prompt {release.negative_prompt!r}"
                                                          if release.negative_prompt else "")
                  + ("; `--tags` puts each image's RAM tags in front, as the release does." if tagger is not None
                     else " (no RAM tags: the release adds per-image tags; import with --tag-data for `--tags`)."),
                  "- Verified in turbosr by parity with the reference code on random weights in the released layout;"
                  " no run with the real weights was made by turbosr's developers.", ""]
        (staging / "README.md").write_text("\n".join(lines))
        (staging / "import.json").write_text(json.dumps({"family": family, "prompt": release.prompt,
                                                         "negative_prompt": release.negative_prompt}, indent=1))
    return output


def copy_text_encoder(sd: Path, folder: Path) -> None:
    """The SD folder's text encoder (re-saved as safetensors) and tokenizer files into ``folder``."""
    from transformers import CLIPTextModel

    encoder = CLIPTextModel.from_pretrained(sd / "text_encoder", local_files_only=True, torch_dtype=torch.float32)
    encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
    (folder / "tokenizer").mkdir()
    for file in sorted((sd / "tokenizer").iterdir()):
        if file.suffix in (".json", ".txt") and file.is_file():
            shutil.copyfile(file, folder / "tokenizer" / file.name)


def import_addsr(sd: str | Path, model: str | Path, ram: str | Path, dape: str | Path | None, output: str | Path,
                 scale: int = 4, storage: str = "float32", tag_data: str | Path | None = None) -> Path:
    """``turbosr import addsr``: :func:`import_controlnet_release` for AddSR."""
    return import_controlnet_release("addsr", sd, model, ram, dape, output, scale, storage, tag_data)


def import_seesr(sd: str | Path, model: str | Path, ram: str | Path, dape: str | Path | None, output: str | Path,
                 scale: int = 4, storage: str = "float32", tag_data: str | Path | None = None) -> Path:
    """``turbosr import seesr``: :func:`import_controlnet_release` for SeeSR."""
    return import_controlnet_release("seesr", sd, model, ram, dape, output, scale, storage, tag_data)
