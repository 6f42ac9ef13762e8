"""The sections of a training run's config: data, optimiser, run (devices, checkpoints, budget), image losses
and the adversarial critic. Each option is checked here, when the config is read (:func:`turbosr.config.load_config`
fills these from YAML). Split from :mod:`turbosr.config`, which keeps the model's shape and the loading rules."""

from __future__ import annotations

from dataclasses import dataclass, field

from turbosr.config import ConfigError, ModelConfig
from turbosr.degradations import DEGRADATIONS, RealESRGANConfig


@dataclass(frozen=True)
class DataConfig:
    """Training data: HR photos (a corpus manifest split, or a folder), random crops, degradation on the fly
    (on the training device)."""

    manifest: str | None = None  # corpus manifest.json (scripts/build_corpus.py); uses the records of `split`
    folder: str | None = None  # or a plain folder of HR images
    split: str = "train"  # training split; validation always uses the manifest's "val" split
    crop_size: int = 128  # HR crop side in pixels (a multiple of the model's pixel multiple and of its scale)
    degradation: str = "bicubic"  # "bicubic" | "realesrgan" | "mixed" (per image one of the two, 50/50)
    realesrgan: RealESRGANConfig = field(default_factory=RealESRGANConfig)  # the blind pipeline's knobs

    def __post_init__(self) -> None:
        if self.degradation not in DEGRADATIONS:
            raise ConfigError(f"data.degradation must be one of {', '.join(DEGRADATIONS)}, got {self.degradation!r}")
        if self.split not in ("train", "val", "test"):
            raise ConfigError(f"data.split must be train, val or test, got {self.split!r}")
        if self.crop_size < 8:
            raise ConfigError(f"data.crop_size must be at least 8, got {self.crop_size}")

    def check_crop(self, model: ModelConfig) -> None:
        """The crop must tile into the model's latent grid and be divisible by its scale."""
        if self.crop_size % model.pixel_multiple or self.crop_size % model.scale:
            raise ConfigError(f"data.crop_size {self.crop_size} must be a multiple of the model's pixel multiple "
                              f"({model.pixel_multiple}) and of its scale ({model.scale})")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up, an optional linear decay to zero at the end of the run, gradient clipping."""

    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    warmup_steps: int = 200
    decay_steps: int = 0  # the last N steps of run.max_steps (at most all of them) fall linearly to 0; 0 = constant
    grad_clip: float = 1.0  # 0 = off

    def __post_init__(self) -> None:
        if not self.learning_rate > 0:
            raise ConfigError(f"optim.learning_rate must be positive, got {self.learning_rate}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError(f"optim.beta1 and beta2 must be in [0, 1), got {self.beta1}, {self.beta2}")
        if self.weight_decay < 0 or self.warmup_steps < 0 or self.decay_steps < 0 or self.grad_clip < 0:
            raise ConfigError("optim.weight_decay, warmup_steps, decay_steps and grad_clip must be >= 0")


@dataclass(frozen=True)
class RunConfig:
    """How a run executes: length, batch, precision and speed options, seed, cadences, output folder."""

    output_dir: str = "runs/run"
    max_steps: int = 10_000
    max_minutes: float = 0.0  # wall-clock budget of this invocation (0 = none): stop, checkpoint, exit
    batch_size: int = 16
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"  # "no" | "bf16" | "fp16"
    channels_last: bool = False  # NHWC memory format for the trained network (faster convolutions on GPUs)
    compile: bool = False  # torch.compile the trained network's forward
    tf32: bool = True  # TensorFloat-32 matmuls/convolutions on CUDA (ignored on CPU)
    seed: int = 0
    num_threads: int = 0  # torch intra-op threads; 0 = torch's default
    ema_decay: float = 0.999
    checkpoint_every_steps: int = 500
    checkpoint_every_minutes: float = 5.0
    validate_every_steps: int = 1000
    validation_images: int = 21  # one fixed crop of each of N val images (all 21; docs/data.md: the choice)
    log_every_steps: int = 20
    tensorboard: bool = False  # also write TensorBoard scalars to output_dir/tensorboard (extra "tensorboard")
    # {start field: content digest}: the start folders (init_from, teacher, prior, ...) this recipe was written
    # for, checked whenever a run starts or resumes and by --dry-run (model_identity's digest: config + weights)
    start_digests: dict[str, str] = field(default_factory=dict)
    # {start field: recipe}: starts that are the model/ of a run of that recipe (a chain's earlier step), checked
    # to be its finished output (the checkpoint's run_config.json is the recipe's resolved config)
    start_recipes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.start_digests, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and len(v) == 16
                and all(c in "0123456789abcdef" for c in v) for k, v in self.start_digests.items()):
            raise ConfigError(f"run.start_digests must map start fields to 16-hex-digit digests, got "
                              f"{self.start_digests!r}")
        if not isinstance(self.start_recipes, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and v.endswith((".yaml", ".yml"))
                for k, v in self.start_recipes.items()):
            raise ConfigError(f"run.start_recipes must map start fields to recipe files, got {self.start_recipes!r}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ConfigError(f"run.mixed_precision must be no, bf16 or fp16, got {self.mixed_precision!r}")
        for name in ("max_steps", "batch_size", "gradient_accumulation_steps", "log_every_steps"):
            if getattr(self, name) < (0 if name == "max_steps" else 1):
                raise ConfigError(f"run.{name} must be positive, got {getattr(self, name)}")
        if self.max_minutes < 0:
            raise ConfigError(f"run.max_minutes must be >= 0 (0 = no budget), got {self.max_minutes}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"run.ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"run.seed must be in [0, 2^63), got {self.seed}")
        for name in ("checkpoint_every_steps", "checkpoint_every_minutes", "validate_every_steps",
                     "validation_images", "num_threads"):
            if getattr(self, name) < 0:
                raise ConfigError(f"run.{name} must be >= 0, got {getattr(self, name)}")
        if self.num_threads > 1024:
            raise ConfigError(f"run.num_threads must be at most 1024 (0 = torch's default), got {self.num_threads}")


@dataclass(frozen=True)
class ImageLossConfig:
    """Weights of the image-space loss terms (autoencoder and decoder training); 0 switches a term off."""

    l1: float = 1.0
    ssim: float = 0.2
    edge: float = 0.5
    frequency: float = 0.0
    grid: float = 0.0  # losses.grid_loss: per-phase gradient profile vs the target's (punishes a latent grid)
    lattice: float = 0.0  # losses.lattice_loss: 2-D spectral peaks on the latent lattice vs the target's
    grid_period: int = 8  # the period of both, in pixels (the latent factor)
    kl: float = 1e-6  # KL autoencoder only: weight of the KL term

    def __post_init__(self) -> None:
        for name in ("l1", "ssim", "edge", "frequency", "grid", "lattice", "kl"):
            if getattr(self, name) < 0:
                raise ConfigError(f"loss weight {name} must be >= 0, got {getattr(self, name)}")
        if self.grid_period < 2:
            raise ConfigError(f"grid_period must be at least 2, got {self.grid_period}")


CRITICS = ("patchgan", "inception", "teacher")


@dataclass(frozen=True)
class AdversarialConfig:
    """The optional adversarial hinge term of image-space training and its critic (train/critic.py); off when
    ``weight`` is 0. ``feature_matching`` adds an L1 between frozen Inception features (with any critic)."""

    weight: float = 0.0
    start_step: int = 0  # the generator sees the adversarial term from this step on
    critic: str = "patchgan"  # "patchgan" | "inception" (frozen InceptionV3 + heads) | "teacher" (frozen UNet)
    feature_matching: float = 0.0
    diffaugment: bool = True  # DiffAugment translation + cutout on what the critic sees
    discriminator_channels: int = 32
    discriminator_learning_rate: float = 2e-4

    def __post_init__(self) -> None:
        if self.critic not in CRITICS:
            raise ConfigError(f"adversarial.critic must be one of {', '.join(CRITICS)}, got {self.critic!r}")
        if self.weight < 0 or self.feature_matching < 0 or self.start_step < 0:
            raise ConfigError("adversarial.weight, feature_matching and start_step must be >= 0")
        if not self.discriminator_learning_rate > 0 or self.discriminator_channels < 1:
            raise ConfigError("adversarial.discriminator_learning_rate and discriminator_channels must be positive")
