"""A model folder on disk: ``config.json`` (the networks' shape, the sampler, the defaults) + safetensors files.

:func:`write_folder` writes one from a pipeline's parts, :func:`read_folder` reads one back into parts (checking every
field of config.json, bounding sizes before anything is allocated, and building the described networks on the
meta device first so that they must match the weight files exactly). :class:`~turbosr.pipeline.SRPipeline`'s
``save_pretrained`` / ``from_pretrained`` are these two.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from turbosr import checkpoint
from turbosr.config import ModelConfig, from_dict, to_dict
from turbosr.diffusion import Sampler
from turbosr.models.autoencoders import Autoencoder, autoencoder_from_config, diffusers_config
from turbosr.models.denoiser import Denoiser
from turbosr.models.ram_tagger import Tagger, tagger_from_config
from turbosr.models.stablesr import FidelityWarp

FORMAT = "turbosr-model"
FORMAT_VERSION = 1


class ModelFolderError(ValueError):
    """A model folder that cannot be loaded: not a turbosr folder, damaged, or inconsistent (one line)."""


def _unet_classes() -> dict[str, type]:
    from diffusers import UNet2DConditionModel, UNet2DModel

    return {"UNet2DModel": UNet2DModel, "UNet2DConditionModel": UNet2DConditionModel}


@dataclass
class FolderParts:
    """What a model folder holds, ready for :class:`~turbosr.pipeline.SRPipeline`."""

    denoiser: Denoiser
    autoencoder: Autoencoder
    config: ModelConfig
    fidelity_warp: FidelityWarp | None
    sampler: Sampler
    default_fidelity: float
    default_steps: int
    default_color_fix: str
    aggregation: str
    tagger: Tagger | None = None
    min_side: int = 0


def write_folder(parts: FolderParts, folder: str | Path, storage: str = "float32",
                 max_shard_bytes: int | None = None) -> Path:
    """Write ``config.json`` + ``denoiser.safetensors`` + ``autoencoder.safetensors`` into ``folder``.

    ``storage`` "float16" or "int8" (per output channel, with scales) stores the denoiser's parameters
    compactly (:func:`turbosr.checkpoint.compact_state`), and a learned latent decoder's parameters in float16;
    buffers and the rest of the latent space stay float32.
    ``max_shard_bytes`` splits a large denoiser file into shards with an index. Files are written atomically.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    parameter_names = {name for name, _ in parts.denoiser.named_parameters()}
    denoiser_state = checkpoint.compact_state(parts.denoiser.state_dict(), parameter_names, storage)
    checkpoint.save_tensors(folder / "denoiser.safetensors", denoiser_state, max_shard_bytes=max_shard_bytes)
    # the latent space's analytic part (patch basis, statistics) and every buffer stay float32; a learned
    # decoder's parameters are stored in half precision when the denoiser is stored compactly (never int8)
    decoder_parameters = {name for name, _ in parts.autoencoder.named_parameters() if name.startswith("decoder.")}
    checkpoint.save_tensors(folder / "autoencoder.safetensors", checkpoint.compact_state(
        parts.autoencoder.state_dict(), decoder_parameters, "float32" if storage == "float32" else "float16"))
    extra = {}
    if parts.denoiser.conditioning == "sft":
        extra["structure_encoder"] = parts.denoiser.sft.config()
    if parts.denoiser.released_control is not None:
        extra["controlnet"] = parts.denoiser.released_control.controlnet_config
        if parts.denoiser.released_control.tower is not None:
            extra["image_tower"] = parts.denoiser.released_control.tower.config()
    if parts.tagger is not None:
        checkpoint.save_tensors(folder / "tagger.safetensors",
                                {k: v.float().contiguous() for k, v in parts.tagger.head.state_dict().items()})
        extra["tagger"] = parts.tagger.config()
        source = parts.tagger.text_folder  # its text encoder and tokenizer travel with it
        if source is not None and Path(source).resolve() != folder.resolve():
            for part in ("text_encoder", "tokenizer"):
                if (Path(source) / part).is_dir() and not (folder / part).exists():
                    shutil.copytree(Path(source) / part, folder / part)
    if parts.min_side:
        extra["min_side"] = parts.min_side
    if parts.default_steps != 1:
        extra["default_steps"] = parts.default_steps
    if parts.aggregation != "gaussian":
        extra["aggregation"] = parts.aggregation
    if parts.default_color_fix != "none":
        extra["default_color_fix"] = parts.default_color_fix
    if parts.fidelity_warp is not None:
        checkpoint.save_tensors(folder / "fidelity_warp.safetensors",
                                {k: v.float() for k, v in parts.fidelity_warp.state_dict().items()})
        extra["fidelity_warp"] = parts.fidelity_warp.config()
    checkpoint.write_json(folder / "config.json", {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": to_dict(parts.config),
        "sampler": parts.sampler.to_dict(),
        "unet_class": type(parts.denoiser.unet).__name__,
        "unet": diffusers_config(parts.denoiser.unet),
        "autoencoder": parts.autoencoder.config(),
        "weights_storage": storage,
        **({"default_fidelity": parts.default_fidelity} if (parts.autoencoder.has_cfw or parts.fidelity_warp is not None) else {}),
        **extra,
    })
    return folder


def read_folder(folder: str | Path) -> FolderParts:
    """Read a model folder written by :func:`write_folder` (safetensors only, nothing downloaded).

    A folder that is not a turbosr model, is damaged, or describes networks of absurd size (checked before
    anything is allocated) raises ValueError (or FileNotFoundError) in one line naming the folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder not found: {folder}")
    meta = checkpoint.read_json(folder / "config.json")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFolderError(f"{folder} is not a turbosr model folder (config.json has no format '{FORMAT}')")
    version = meta.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelFolderError(f"{folder}/config.json: format_version must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise ModelFolderError(f"{folder} was written by a newer turbosr (format {version}); upgrade turbosr")
    try:
        return _parts(folder, meta)
    except (ModelFolderError, checkpoint.DamagedFile):
        raise
    except (TypeError, KeyError, AttributeError, IndexError, RuntimeError, ValueError, ZeroDivisionError,
            NotImplementedError) as error:
        text = str(error).strip().splitlines()
        reason = f"{type(error).__name__}: {text[0] if text else ''}"
        raise ModelFolderError(f"{folder}: damaged or inconsistent model folder ({reason})") from None


def _parts(folder: Path, meta: dict[str, Any]) -> FolderParts:
    for key, kind in (("model", dict), ("unet_class", str), ("unet", dict), ("autoencoder", dict)):
        if not isinstance(meta.get(key), kind):
            raise ModelFolderError(f"{folder}/config.json: '{key}' must be a {kind.__name__}, got "
                                   f"{meta.get(key)!r}")
    # folders written before SFT could sit in the down blocks modulate the mid and up blocks only; folders
    # written before the sampler had its own section kept its settings among the model's fields
    model = {"sft_down": False, **meta["model"]}
    legacy = {new: model.pop(old) for old, new in (("sampler", "kind"), ("psr_weight", "psr_weight"),
                                                    ("sampler_steps", "trained_steps")) if old in model}
    config = from_dict(ModelConfig, model)
    sampler = Sampler.from_dict(meta.get("sampler", legacy))
    classes = _unet_classes()
    if meta["unet_class"] not in classes:
        raise ModelFolderError(f"{folder}: unknown UNet class {meta['unet_class']!r}")
    check_network_size(meta["unet"], meta["autoencoder"], folder)
    state = checkpoint.expand_state(checkpoint.load_tensors(folder / "denoiser.safetensors"))
    prompt = state.get("prompt_embedding")
    structure = meta.get("structure_encoder")
    if structure is not None:
        check_structure_size(structure, folder)
    controlnet = meta.get("controlnet")

    def build() -> tuple[Denoiser, Autoencoder]:
        tower = image_tower_from_config(meta.get("image_tower"), folder) if controlnet is not None else None
        unet = classes[meta["unet_class"]].from_config(meta["unet"])
        denoiser = Denoiser(unet, config.latent_channels, config.target, prompt, config.control, config.sft,
                            config.sft_time_aware, config.sft_down, config.conditioning, structure, controlnet,
                            tower, state.get("negative_embedding"))
        return denoiser, autoencoder_from_config(meta["autoencoder"])

    # the networks config.json describes, first without memory (meta tensors): they must be exactly what the
    # weight files hold, so no description allocates more than its files (or absurd sizes) before failing
    with torch.device("meta"):
        shadow_denoiser, shadow_autoencoder = build()
    autoencoder_state = checkpoint.expand_state(checkpoint.load_tensors(folder / "autoencoder.safetensors"))
    check_layout(shadow_denoiser.state_dict(), state, folder / "denoiser.safetensors")
    check_layout(shadow_autoencoder.state_dict(), autoencoder_state, folder / "autoencoder.safetensors")
    del shadow_denoiser, shadow_autoencoder
    denoiser, autoencoder = build()
    denoiser.load_state_dict(state, strict=True)
    autoencoder.load_state_dict(autoencoder_state, strict=True)
    warp = None
    if "fidelity_warp" in meta:
        if not isinstance(meta["fidelity_warp"], dict):
            raise ModelFolderError(f"{folder}/config.json: 'fidelity_warp' must be a mapping")
        warp = FidelityWarp(**meta["fidelity_warp"])
        warp.load_state_dict(checkpoint.load_tensors(folder / "fidelity_warp.safetensors"), strict=True)
    default_fidelity = meta.get("default_fidelity", 0.0)
    if isinstance(default_fidelity, bool) or not isinstance(default_fidelity, (int, float)):
        raise ModelFolderError(f"{folder}/config.json: 'default_fidelity' must be a number, got {default_fidelity!r}")
    default_steps = meta.get("default_steps", 1)
    if isinstance(default_steps, bool) or not isinstance(default_steps, int) or not 1 <= default_steps <= 1000:
        raise ModelFolderError(f"{folder}/config.json: 'default_steps' must be an integer in [1, 1000], got "
                               f"{default_steps!r}")
    tagger = None
    if "tagger" in meta:
        tagger = tagger_from_config(meta["tagger"], folder)
        tagger.head.load_state_dict(checkpoint.load_tensors(folder / "tagger.safetensors"), strict=True)
    # default_color_fix, aggregation and min_side are checked by SRPipeline, which from_pretrained builds from these parts
    return FolderParts(denoiser, autoencoder, config, warp, sampler, float(default_fidelity), default_steps,
                       meta.get("default_color_fix", "none"), meta.get("aggregation", "gaussian"), tagger,
                       meta.get("min_side", 0))


# Bounds on a model folder's network description, checked before anything is built: far above every real model
# (SD-class UNets have 4 levels of at most 1280 channels), far below what would exhaust memory or time.
MAX_LEVELS, MAX_WIDTH, MAX_LAYERS, MAX_LATENT_CHANNELS, MAX_FACTOR = 8, 4096, 16, 1024, 64


def check_network_size(unet: dict[str, Any], autoencoder: dict[str, Any], folder: Path) -> None:
    """Refuse a config.json whose networks would be absurdly large (or mistyped sizes) before allocating them."""
    def bad(what: str, value: Any) -> ModelFolderError:
        return ModelFolderError(f"{folder}/config.json: {what} {value!r} is not a plausible network size")

    def integer(value: Any, low: int, high: int) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high

    widths = unet.get("block_out_channels", ())
    if not isinstance(widths, (list, tuple)) or not 1 <= len(widths) <= MAX_LEVELS or \
            not all(integer(w, 1, MAX_WIDTH) for w in widths):
        raise bad("unet.block_out_channels", widths)
    for key in ("in_channels", "out_channels"):
        if key in unet and not integer(unet[key], 1, 2 * MAX_LATENT_CHANNELS + 3):
            raise bad(f"unet.{key}", unet[key])
    layers = unet.get("layers_per_block", 1)
    if not integer(layers, 1, MAX_LAYERS):
        raise bad("unet.layers_per_block", layers)
    for key in ("attention_head_dim", "norm_num_groups", "num_attention_heads"):  # divisors: never 0
        value = unet.get(key)
        values = value if isinstance(value, list) else [value]
        if value is not None and not all(integer(v, 1, MAX_WIDTH) for v in values):
            raise bad(f"unet.{key}", value)
    if autoencoder.get("kind") == "patch":
        for key, high in (("factor", MAX_FACTOR), ("latent_channels", MAX_LATENT_CHANNELS)):
            if not integer(autoencoder.get(key), 1, high):
                raise bad(f"autoencoder.{key}", autoencoder.get(key))
        if not integer(autoencoder.get("refine_channels", 0), 0, MAX_WIDTH):
            raise bad("autoencoder.refine_channels", autoencoder.get("refine_channels"))
        decoder = autoencoder.get("decoder")
        if decoder is not None:
            if not isinstance(decoder, dict):
                raise bad("autoencoder.decoder", decoder)
            for key in ("channels", "blocks", "head_channels", "cfw_channels"):
                values = decoder.get(key)
                if not isinstance(values, list) or len(values) > MAX_LEVELS or \
                        not all(integer(v, 0, MAX_WIDTH) for v in values):
                    raise bad(f"autoencoder.decoder.{key}", values)


def check_layout(expected: dict[str, torch.Tensor], stored: dict[str, torch.Tensor], path: Path) -> None:
    """ModelFolderError (one line) unless ``stored`` has exactly the keys and shapes of ``expected``."""
    missing = sorted(set(expected) - set(stored))
    extra = sorted(set(stored) - set(expected))
    wrong = sorted(k for k in set(expected) & set(stored) if tuple(expected[k].shape) != tuple(stored[k].shape))
    if missing or extra or wrong:
        described = sum(v.numel() for v in expected.values())
        held = sum(v.numel() for v in stored.values())
        detail = (f"{len(missing)} tensor(s) missing, first {missing[0]}" if missing else
                  f"{len(extra)} unexpected tensor(s), first {extra[0]}" if extra else
                  f"{wrong[0]} is {tuple(stored[wrong[0]].shape)}, config.json says {tuple(expected[wrong[0]].shape)}")
        raise ModelFolderError(f"{path.parent}/config.json describes {described:,} values but {path.name} holds "
                               f"{held:,} ({detail}): damaged or inconsistent model folder")


def image_tower_from_config(config: Any, folder: Path) -> torch.nn.Module | None:
    """The image tower a ControlNet model folder describes (config.json "image_tower"), or None without one."""
    if config is None:
        return None
    from turbosr.models.ram_tower import TOWER_KEYS, RamTower

    if not isinstance(config, dict) or config.get("kind") != "ram":
        raise ModelFolderError(f"{folder}/config.json: 'image_tower' must be a mapping with kind 'ram'")
    settings = {k: v for k, v in config.items() if k != "kind"}
    unknown = sorted(set(settings) - set(TOWER_KEYS))
    if unknown:
        raise ModelFolderError(f"{folder}/config.json: unknown image_tower key(s) {', '.join(unknown)}")
    for key in ("image_size", "embed_dim", "window_size", "embed_width", "patch_size"):
        value = settings.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_WIDTH:
            raise ModelFolderError(f"{folder}/config.json: image_tower.{key} {value!r} is not a plausible size")
    return RamTower(**settings)


def check_structure_size(structure: Any, folder: Path) -> None:
    """Refuse an absurd structure-encoder description (config.json "structure_encoder") before building it."""
    encoder = structure.get("encoder") if isinstance(structure, dict) else None
    if not isinstance(encoder, dict):
        raise ModelFolderError(f"{folder}/config.json: 'structure_encoder' must hold an 'encoder' mapping")
    for key in ("in_channels", "model_channels", "out_channels", "num_res_blocks"):
        value = encoder.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_WIDTH:
            raise ModelFolderError(f"{folder}/config.json: structure_encoder.encoder.{key} {value!r} is not a "
                                   "plausible network size")
    mult = encoder.get("channel_mult")
    if not isinstance(mult, list) or not 1 <= len(mult) <= MAX_LEVELS or not all(
            isinstance(m, int) and 1 <= m * encoder["model_channels"] <= MAX_WIDTH for m in mult):
        raise ModelFolderError(f"{folder}/config.json: structure_encoder.encoder.channel_mult {mult!r} is not "
                               "a plausible network size")


