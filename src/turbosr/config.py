"""Configuration: frozen dataclasses are the defaults and their documentation.

YAML files fill them (unknown keys are an error), ``--set a.b=value`` overrides single fields, and the
resolved config is saved beside every checkpoint. Only the model config travels with inference weights.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override is invalid (unknown key, wrong type, bad value)."""


@dataclass(frozen=True)
class ScheduleConfig:
    """Diffusion noise schedule (DDPM betas; Lin et al. 2023 zero-terminal-SNR rescaling optional)."""

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"  # "scaled_linear" | "linear"
    zero_terminal_snr: bool = True

    def __post_init__(self) -> None:
        if self.beta_schedule not in ("scaled_linear", "linear"):
            raise ConfigError(f"schedule.beta_schedule must be 'scaled_linear' or 'linear', got {self.beta_schedule!r}")
        if not 2 <= self.num_train_timesteps <= 100_000:
            raise ConfigError(f"schedule.num_train_timesteps must be in [2, 100000], got {self.num_train_timesteps}")
        if not 0 < self.beta_start < self.beta_end < 1:
            raise ConfigError(f"schedule betas need 0 < beta_start < beta_end < 1, got {self.beta_start}, "
                              f"{self.beta_end}")


@dataclass(frozen=True)
class ModelConfig:
    """Shape of an SR model: latent space, denoiser, and how the diffusion target is defined.

    ``target="residual"`` diffuses the per-channel-normalised difference between the HQ latent and the latent of
    the bicubic-upsampled LQ image (an untrained zero-output model reproduces bicubic); ``target="latent"``
    diffuses the HQ latent itself, as in the YONOS-SR and StableSR papers.
    """

    preset: str = "small"
    scale: int = 4
    latent: str = "patch"  # "patch" (analytic patch-PCA autoencoder) | "kl" (diffusers AutoencoderKL)
    latent_factor: int = 8
    latent_channels: int = 32
    refine_channels: int = 0  # patch autoencoder: width of the learned residual refiner (0 = none)
    kl_channels: tuple[int, ...] = (64, 128, 128, 128)  # AutoencoderKL block widths (latent_factor = 2**(len-1))
    unet: str = "unet2d"  # "unet2d" (UNet2DModel) | "unet2d_condition" (SD-style, fixed prompt embedding)
    unet_channels: tuple[int, ...] = (64, 128, 256)
    attention_levels: tuple[bool, ...] = (False, False, True)
    layers_per_block: int = 2
    norm_groups: int = 32
    attention_head_dim: int = 8
    cross_attention_dim: int = 64  # unet2d_condition only
    prompt_tokens: int = 8  # unet2d_condition only: length of the stored fixed prompt embedding
    prediction_type: str = "v"  # "epsilon" | "v" | "sample"
    target: str = "residual"  # "residual" | "latent"
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    sd_path: str | None = None  # preset "sd": local diffusers Stable Diffusion folder to initialise from
    # AddSR students (turbosr train adversarial-distill): a ControlNet-style branch (how they sample, re-noising
    # and self-refinement, is the model folder's "sampler": diffusion.Sampler, not part of the network's shape)
    control: bool = False
    # StableSR (turbosr train stablesr): a time-aware LQ encoder whose features modulate the frozen prior UNet
    # through SFT layers (models/stablesr.py); sft_time_aware=false is the paper's time-agnostic ablation
    sft: bool = False
    sft_time_aware: bool = True
    # SFT placement: every ResNet of the down, mid and up blocks (true; StableSR's released code) or of the mid
    # and up blocks only (false; turbosr before 2026-12-01, so older model folders without the field load so)
    sft_down: bool = True
    # how the LQ latent reaches the UNet: "concat" (YONOS-SR: concatenated to x_t), "sft" (StableSR's released
    # models: the UNet sees only x_t; a structure encoder modulates its ResNets, models/released_sft.py) or
    # "direct" (OSEDiff: the UNet sees only x_t, and the sampler starts from the LQ latent itself) or "controlnet"
    # (AddSR/SeeSR releases: a ControlNet on the LQ image in pixels, image cross-attention to RAM tokens)
    conditioning: str = "concat"

    def __post_init__(self) -> None:
        checks = {
            "conditioning": ("concat", "sft", "direct", "controlnet"),
            "latent": ("patch", "kl"),
            "unet": ("unet2d", "unet2d_condition"),
            "prediction_type": ("epsilon", "v", "sample"),
            "target": ("residual", "latent"),
        }
        for name, allowed in checks.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"model.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not 1 <= self.scale <= 16:
            raise ConfigError(f"model.scale must be an integer in [1, 16], got {self.scale}")
        sizes = {"latent_factor": (self.latent_factor, 64), "latent_channels": (self.latent_channels, 1024),
                 "layers_per_block": (self.layers_per_block, 16), "norm_groups": (self.norm_groups, 1024),
                 "attention_head_dim": (self.attention_head_dim, 4096), "prompt_tokens": (self.prompt_tokens, 1024),
                 "cross_attention_dim": (self.cross_attention_dim, 8192), "refine_channels": (self.refine_channels, 4096)}
        for name, (value, high) in sizes.items():
            if not (0 if name == "refine_channels" else 1) <= value <= high:
                raise ConfigError(f"model.{name} must be in [1, {high}], got {value}")
        for name in ("unet_channels", "kl_channels"):
            widths = getattr(self, name)
            if not 1 <= len(widths) <= 8 or not all(1 <= w <= 4096 for w in widths):
                raise ConfigError(f"model.{name} needs 1 to 8 widths in [1, 4096], got {list(widths)}")
        if len(self.attention_levels) != len(self.unet_channels):
            raise ConfigError("model.attention_levels needs one entry per model.unet_channels entry")
        if self.prediction_type == "epsilon" and self.schedule.zero_terminal_snr:
            raise ConfigError(
                "epsilon prediction cannot recover x0 at zero terminal SNR: set model.schedule.zero_terminal_snr=false "
                "or use prediction_type v/sample"
            )

    @property
    def pixel_multiple(self) -> int:
        """Input sizes (at output resolution) must be multiples of this; the pipeline pads to it."""
        return self.latent_factor * 2 ** (len(self.unet_channels) - 1)


# The model presets: plain ModelConfig data in one place. A model section names a preset, and its fields fill in
# everything the section does not set (:func:`model_config`, the only merge).
MODEL_PRESETS: dict[str, ModelConfig] = {
    # random-weight test model (< 2 s per call on CPU)
    "tiny": ModelConfig(
        preset="tiny", latent="patch", latent_factor=4, latent_channels=8, unet_channels=(16, 32),
        attention_levels=(False, False), layers_per_block=1, norm_groups=8, attention_head_dim=8,
    ),
    # the built-in model's shape: patch-PCA latent (f = 8, 32 channels), a 15.7 M-parameter UNet2DModel with
    # attention only at the lowest resolution; trainable on 2 CPU cores
    "small": ModelConfig(
        preset="small", latent="patch", latent_factor=8, latent_channels=32, unet_channels=(64, 128, 256),
        attention_levels=(False, False, True), layers_per_block=2, norm_groups=32, attention_head_dim=8,
    ),
    # Stable-Diffusion-2.x-shaped, initialised from a LOCAL diffusers folder (model.sd_path)
    "sd": ModelConfig(
        preset="sd", latent="kl", unet="unet2d_condition", latent_factor=8, latent_channels=4,
        unet_channels=(320, 640, 1280, 1280), attention_levels=(True, True, True, False), norm_groups=32,
        prediction_type="v", target="latent",
        schedule=ScheduleConfig(beta_schedule="scaled_linear", zero_terminal_snr=True),
    ),
}


def model_config(preset: str = "small", **overrides: Any) -> ModelConfig:
    """The preset's ModelConfig with ``overrides`` (plain values; ``schedule`` may be a dict of its fields)."""
    if preset not in MODEL_PRESETS:
        raise ConfigError(f"unknown model preset {preset!r}; choose one of {', '.join(MODEL_PRESETS)}")
    merged = to_dict(MODEL_PRESETS[preset])
    for key, value in overrides.items():
        if key == "schedule" and isinstance(value, dict):
            merged["schedule"] = {**merged["schedule"], **value}
        elif key == "schedule" and isinstance(value, ScheduleConfig):
            merged["schedule"] = to_dict(value)
        else:
            merged[key] = value
    return from_dict(ModelConfig, {**merged, "preset": preset}, "model", merge_preset=False)


def _coerce(value: Any, annotation: Any, where: str, merge_preset: bool = True) -> Any:
    """Convert a YAML/CLI value to the dataclass field's annotated type, or raise ConfigError."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        if annotation is ModelConfig and merge_preset:
            preset = value.get("preset", "small")
            if preset not in MODEL_PRESETS:
                raise ConfigError(f"{where}.preset: unknown model preset {preset!r}; choose one of "
                                  f"{', '.join(MODEL_PRESETS)}")
            return model_config(**{"preset": preset, **value})
        return from_dict(annotation, value, where)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is tuple:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item_type = args[0] if args else Any
        return tuple(_coerce(v, item_type, where) for v in value)
    if annotation is bool:
        if isinstance(value, str):
            if value.lower() in ("true", "1", "yes"):
                return True
            if value.lower() in ("false", "0", "no"):
                return False
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if annotation in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            number = float(value)
            if not math.isfinite(number):
                raise ConfigError(f"{where}: expected a finite number, got {value!r}")
            converted = annotation(value) if annotation is float or not isinstance(value, str) else int(number)
        except (TypeError, ValueError, OverflowError) as error:
            if isinstance(error, ConfigError):
                raise
            raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}") from None
        if annotation is int and number != converted:
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return converted
    if annotation is str:
        return str(value)
    return value


def _model_fields_read(cls: type) -> frozenset[str] | None:
    """The model fields a method that starts from a model folder reads (its MODEL_FIELDS_READ and the preset), or
    None for a method that builds its network from the model section."""
    read = getattr(cls, "MODEL_FIELDS_READ", None)
    return None if read is None else frozenset(read) | {"preset"}


def from_dict(cls: type[T], data: dict[str, Any], where: str = "", merge_preset: bool = True) -> T:
    """Build dataclass ``cls`` from a (nested) dict; unknown keys raise ConfigError. A nested ModelConfig is
    filled from its preset (:func:`model_config`) unless ``merge_preset`` is false."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join((where + '.' if where else '') + k for k in unknown)}; "
                          f"known: {', '.join(sorted(names))}")
    read = _model_fields_read(cls)  # methods that start from a model folder: its config rules
    if read is not None and isinstance(data.get("model"), dict):
        ignored = sorted(set(data["model"]) - read)
        if ignored:
            raise ConfigError(f"model.{', model.'.join(ignored)}: not read by this method, which takes the network "
                              f"from its starting model folder; it reads only "
                              f"model.{', model.'.join(sorted(read - {'preset'}))}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k, merge_preset) for k, v in data.items()}
    try:
        built = cls(**kwargs)
    except TypeError as error:  # a required field without a default
        raise ConfigError(f"{where or cls.__name__}: {error}") from None
    for name in COUNT_FIELDS:  # counts that several methods share, checked here once for all of them
        value = getattr(built, name, None)
        if value is not None and value < 1:
            raise ConfigError(f"{(where + '.') if where else ''}{name} must be at least 1, got {value}")
    return built


# how many crops or batches a method measures something on: each must be at least 1
COUNT_FIELDS = ("pca_images", "residual_scale_batches")


def to_dict(config: Any) -> dict[str, Any]:
    """Dataclass -> plain JSON-able dict (tuples become lists) that :func:`from_dict` reads back to the same config:
    a method that takes its network from a model folder keeps only the model fields it reads."""
    data = json.loads(json.dumps(dataclasses.asdict(config)))
    read = _model_fields_read(type(config))
    if read is not None and isinstance(data.get("model"), dict):
        data["model"] = {k: v for k, v in data["model"].items() if k in read}
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` strings (values parsed as YAML scalars/lists) to a nested dict, returning a new dict."""
    result = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = result
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {part} is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as error:
            raise ConfigError(f"--set {item}: the value is not valid YAML ({_yaml_problem(error)})") from None
    return result


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping with the same key twice (PyYAML keeps the last silently)."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"duplicate key {key!r} (line {key_node.start_mark.line + 1})")
        seen.add(key)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _yaml_problem(error: yaml.YAMLError) -> str:
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    mark = getattr(error, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}" if mark is not None else str(problem)


# Config fields that name a model folder a run reads at its start (weights it trains on from, or keeps frozen).
MODEL_FOLDER_FIELDS = ("init_from", "autoencoder_from", "teacher", "prior", "sd_path")
# Config fields that name an existing file or folder (a run's inputs); checked by missing_inputs before a run.
INPUT_PATH_FIELDS = ("manifest", "folder", *MODEL_FOLDER_FIELDS)


def path_fields(config: Any, names: tuple[str, ...], where: str = "") -> dict[str, str]:
    """{field (dotted for nested sections): path} for the fields of ``config`` named in ``names`` that are set."""
    found: dict[str, str] = {}
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        name = f"{where}.{item.name}" if where else item.name
        if dataclasses.is_dataclass(value):
            found |= path_fields(value, names, name)
        elif item.name in names and isinstance(value, str) and value:
            found[name] = value
    return found


def model_folders(config: Any) -> dict[str, str]:
    """{field: folder} for the MODEL_FOLDER_FIELDS of ``config`` that are set (nested sections too)."""
    return path_fields(config, MODEL_FOLDER_FIELDS)


def missing_inputs(config: Any) -> list[str]:
    """``field = path`` for every input path of ``config`` (INPUT_PATH_FIELDS, nested sections too) that does not
    exist, so that ``--dry-run`` and a run's start both say it at once."""
    return [f"{name} = {path}" for name, path in path_fields(config, INPUT_PATH_FIELDS).items()
            if not Path(path).exists()]


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                method: str | None = None) -> T:
    """Defaults of ``cls``, filled from the YAML file at ``path``, then the ``--set`` overrides. A recipe names its
    training method (top-level ``method:``); with ``method`` given, a file naming another one is refused."""
    data = read_recipe(path)
    named = data.pop("method", None)
    if method is not None and named is not None and named != method:
        raise ConfigError(f"{path} is a recipe for `turbosr train {named}`, not {method}")
    data = apply_overrides(data, overrides or [])
    return from_dict(cls, data)


def recipe_method(path: str | Path) -> str | None:
    """The training method a recipe file names (its top-level ``method:``), or None."""
    method = read_recipe(path).get("method")
    if method is not None and not isinstance(method, str):
        raise ConfigError(f"{path}: method must be a method name, got {method!r}")
    return method


def read_recipe(path: str | Path | None, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML config file as a mapping (empty for None), every problem a one-line ConfigError.

    An overlay names its base recipe (top-level ``base:``, a path relative to the overlay's folder) and holds only
    the keys it changes: the base is read first (itself possibly an overlay) and the overlay's mappings merged
    into it key by key (any other value replaces the base's), except the start pins (``run.start_digests``,
    ``run.start_recipes``), which an overlay that gives either replaces whole; an overlay that moves a pinned start
    must give its own."""
    data = _read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    assert path is not None
    path = Path(path)
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base must be the path of a recipe, got {base!r}")
    base_path = (path.parent / base).resolve()
    if base_path in _seen or base_path == path.resolve():
        raise ConfigError(f"{path}: its base chain comes back to {base_path}")
    based = read_recipe(base_path, (*_seen, path.resolve()))
    base_run = based.get("run") if isinstance(based.get("run"), dict) else {}
    own_run = data.get("run") if isinstance(data.get("run"), dict) else {}
    pinned = {*base_run.get("start_digests", {}), *base_run.get("start_recipes", {})}
    restated = [kind for kind in PIN_KINDS if kind in own_run]
    moved = sorted(field for field in pinned if field in data and data[field] != based.get(field))
    if moved and not restated:
        raise ConfigError(f"{path} starts {moved[0]} from {data[moved[0]]}, but its base pins the base's "
                          f"{moved[0]}: give run.start_digests or run.start_recipes here too (the new start's, or {{}})")
    merged = merge_recipe(based, data)
    if restated:  # an overlay's pins replace the base's whole: they describe its own starts
        for kind in PIN_KINDS:
            merged["run"][kind] = own_run.get(kind, {})
    return merged


PIN_KINDS = ("start_digests", "start_recipes")  # run fields that pin a recipe's starts (run_config.RunConfig)


def merge_recipe(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``overlay`` merged into ``base``: nested mappings key by key, anything else replaced."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_recipe(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: str | Path | None) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506  (a SafeLoader)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML for a config ({_yaml_problem(error)})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a text (YAML) file") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        data = loaded or {}
    return data




# ------------------------------------------------------------------------------- parts of a training config
# Each training method (turbosr/train/<method>.py) defines its own config dataclass from these parts.
