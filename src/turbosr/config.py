"""Configuration: frozen dataclasses are the defaults and their documentation.

YAML files fill them (unknown keys are an error), ``--set a.b=value`` overrides single fields, and the
resolved config is saved beside every checkpoint. Only the model config travels with inference weights.
"""

from __future__ import annotations

import dataclasses
import json
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
        if self.num_train_timesteps < 2:
            raise ConfigError("schedule.num_train_timesteps must be >= 2")


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

    def __post_init__(self) -> None:
        checks = {
            "latent": ("patch", "kl"),
            "unet": ("unet2d", "unet2d_condition"),
            "prediction_type": ("epsilon", "v", "sample"),
            "target": ("residual", "latent"),
        }
        for name, allowed in checks.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"model.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.scale < 1:
            raise ConfigError(f"model.scale must be a positive integer, got {self.scale}")
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


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Convert a YAML/CLI value to the dataclass field's annotated type, or raise ConfigError."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        if annotation is ModelConfig:
            value = _merge_model_preset(value, where)
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
            converted = annotation(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}") from None
        if annotation is int and float(value) != converted:
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return converted
    if annotation is str:
        return str(value)
    return value


def _merge_model_preset(value: dict[str, Any], where: str) -> dict[str, Any]:
    """A model section names a preset; its fields fill in everything the section does not set."""
    from turbosr.models.presets import MODEL_PRESETS

    preset = value.get("preset", "small")
    if preset not in MODEL_PRESETS:
        raise ConfigError(f"{where}.preset: unknown model preset {preset!r}; choose one of {', '.join(MODEL_PRESETS)}")
    merged = to_dict(MODEL_PRESETS[preset])
    for key, item in value.items():
        if key == "schedule" and isinstance(item, dict):
            merged["schedule"] = {**merged["schedule"], **item}
        else:
            merged[key] = item
    return merged


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from a (nested) dict; unknown keys raise ConfigError."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join((where + '.' if where else '') + k for k in unknown)}; "
                          f"known: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """Dataclass -> plain JSON-able dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


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
        node[parts[-1]] = yaml.safe_load(raw)
    return result


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Defaults of ``cls``, filled from the YAML file at ``path``, then the ``--set`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        loaded = yaml.safe_load(path.read_text())
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        data = loaded or {}
    data = apply_overrides(data, overrides or [])
    return from_dict(cls, data)


@dataclass(frozen=True)
class DataConfig:
    """Training data: HR photos (a corpus manifest or a folder), random crops, degradation on the fly."""

    manifest: str | None = None  # corpus manifest.json (see scripts/build_corpus.py); uses records of `split`
    folder: str | None = None  # or a plain folder of HR images
    split: str = "train"
    crop_size: int = 128  # HR crop side in pixels (a multiple of the model's pixel multiple and of the scales)
    degradation: str = "bicubic"  # "bicubic" | "realesrgan" | "mixed" (each image one of the two, 50/50)
    num_workers: int = 0


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up, gradient clipping."""

    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    warmup_steps: int = 200
    grad_clip: float = 1.0


@dataclass(frozen=True)
class LossConfig:
    """Weights of the image-space losses (autoencoder and decoder fine-tuning); 0 switches a term off."""

    l1: float = 1.0
    ssim: float = 0.2
    edge: float = 0.5
    frequency: float = 0.0
    adversarial: float = 0.0  # PatchGAN hinge loss weight
    adversarial_start_step: int = 0  # the generator sees the adversarial term from this step on
    discriminator_channels: int = 32
    discriminator_learning_rate: float = 2e-4
    kl: float = 1e-6  # KL autoencoder: weight of the KL term


@dataclass(frozen=True)
class TrainConfig:
    """One training run. ``method`` picks the training file in ``turbosr.train``."""

    method: str = "teacher"  # "autoencoder" | "teacher" | "scale_distill" | "decoder"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    output_dir: str = "runs/teacher"
    max_steps: int = 10_000
    batch_size: int = 16
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"  # "no" | "bf16" | "fp16"
    seed: int = 0
    num_threads: int = 0  # torch intra-op threads; 0 = torch's default
    ema_decay: float = 0.999
    checkpoint_every_steps: int = 500
    checkpoint_every_minutes: float = 5.0
    validate_every_steps: int = 1000
    validation_images: int = 4
    log_every_steps: int = 20
    tensorboard: bool = False  # also write TensorBoard scalars to output_dir/tensorboard (extra "tensorboard")
    init_from: str | None = None  # model folder whose weights start the run (e.g. the teacher for the student)
    autoencoder_from: str | None = None  # model folder whose (fitted/trained) latent space is reused, frozen
    teacher: str | None = None  # scale distillation: frozen teacher model folder
    teacher_scale: int = 2  # scale distillation: the factor the teacher was trained at
    residual_scale_batches: int = 8  # residual target: batches used to measure the per-channel residual std
    # teacher runs with init_from: measure the residual std again on this run's scale and degradation instead
    # of keeping the loaded model's (which a new degradation can exceed by 100x, e.g. bicubic -> realesrgan)
    refit_residual_scale: bool = False
    pca_images: int = 64  # patch latent fitted at the start: number of training crops used
    sample_steps: int = 1  # decoder fine-tuning: denoising steps used to make the latents it decodes
    terminal_fraction: float = 0.0  # teacher: fraction of samples at the last timestep (one-step sampling's start)

    def __post_init__(self) -> None:
        if self.refit_residual_scale and (self.method != "teacher" or not self.init_from):
            raise ConfigError("refit_residual_scale applies to teacher runs with init_from only (a student keeps "
                              "its teacher's residual scale; a new model measures its own anyway)")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ConfigError(f"mixed_precision must be no, bf16 or fp16, got {self.mixed_precision!r}")
        if self.data.crop_size % self.model.pixel_multiple or self.data.crop_size % self.model.scale:
            raise ConfigError(
                f"data.crop_size {self.data.crop_size} must be a multiple of the model's pixel multiple "
                f"({self.model.pixel_multiple}) and of its scale ({self.model.scale})"
            )
