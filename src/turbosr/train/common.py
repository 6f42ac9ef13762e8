"""What every training method shares: accelerator set-up, seeded batches, EMA, checkpoints, logging.

Kept small on purpose: each method's file (teacher.py, scale_distill.py, decoder.py, autoencoder.py) reads top
to bottom as a plain ``for step in ...`` loop and calls these helpers.

Data order is a pure function of (seed, step, process index): batch ``step`` of process ``rank`` always holds
the same crops, so a resumed run continues exactly where the killed one stopped, and processes of a
multi-process run draw disjoint random streams.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from turbosr import checkpoint
from turbosr.config import TrainConfig, to_dict
from turbosr.data import HRFolderDataset, make_lq
from turbosr.degradations import upsample_lq
from turbosr.image import to_model_range
from turbosr.models.autoencoders import Autoencoder
from turbosr.pipeline import SRPipeline
from turbosr.train.reporting import RunLog, StepReport

logger = logging.getLogger(__name__)

LATEST = "checkpoint-latest"


def make_accelerator(config: TrainConfig) -> Any:
    """An ``accelerate.Accelerator`` for the run (devices, mixed precision, accumulation, distribution)."""
    from accelerate import Accelerator

    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    from turbosr.distributed import use_cpu_group

    return Accelerator(mixed_precision=config.mixed_precision, cpu=use_cpu_group())


def load_dataset(config: TrainConfig, split: str | None = None) -> HRFolderDataset:
    """The HR crop dataset named by ``config.data`` (a corpus manifest or a folder)."""
    data = config.data
    if data.manifest:
        return HRFolderDataset.from_manifest(Path(data.manifest), split=split or data.split,
                                             crop_size=data.crop_size, scale=config.model.scale)
    if data.folder:
        return HRFolderDataset(Path(data.folder), crop_size=data.crop_size, scale=config.model.scale)
    raise ValueError("no training data: set data.manifest (a corpus manifest.json) or data.folder (HR images)")


def batch_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The generator that defines batch ``step`` of process ``rank`` (data order is resumable by construction)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 1_009 + rank)


def sample_hq_batch(dataset: HRFolderDataset, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """(B, 3, crop, crop) HR crops in [0, 1]: random images, random crops/flips, all drawn from ``generator``."""
    indices = torch.randint(len(dataset), (batch_size,), generator=generator).tolist()
    return torch.stack([dataset.crop(index, generator) for index in indices])


def encode_pair(autoencoder: Autoencoder, hq: torch.Tensor, scale: int, degradation: str,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Degrade ``hq`` by ``scale``, upsample back, encode both: returns (lq, lq_latent, hq_latent)."""
    lq = make_lq(hq, scale, degradation, generator=generator)
    with torch.no_grad():
        lq_latent = autoencoder.encode(to_model_range(upsample_lq(lq, scale)))
        hq_latent = autoencoder.encode(to_model_range(hq))
    return lq, lq_latent, hq_latent


def learning_rate_factor(step: int, warmup_steps: int) -> float:
    """Linear warm-up to 1, then constant."""
    return min(1.0, (step + 1) / max(1, warmup_steps))


class EMA:
    """Exponential moving average of a module's floating-point parameters (kept in float32)."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().float().clone() for k, v in module.named_parameters()}

    @torch.no_grad()
    def update(self, module: nn.Module, step: int) -> None:
        # warm-up of the decay (as in common EMA practice) so early averages are not dominated by the init
        decay = min(self.decay, (1 + step) / (10 + step))
        for name, param in module.named_parameters():
            self.shadow[name].lerp_(param.detach().float(), 1.0 - decay)

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        for name, param in module.named_parameters():
            param.copy_(self.shadow[name].to(param.dtype))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"ema.{k}": v for k, v in self.shadow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name in self.shadow:
            self.shadow[name].copy_(state[f"ema.{name}"])


def trained_denoiser(pipeline: SRPipeline) -> nn.Module:
    """The module most methods train (and average with EMA): the denoiser."""
    return pipeline.denoiser


def ema_pipeline(pipeline: SRPipeline, ema: EMA | None,
                 trained: Callable[[SRPipeline], nn.Module] = trained_denoiser) -> SRPipeline:
    """A CPU float32 copy of ``pipeline`` whose trained module carries the EMA weights (for saving/validation)."""
    copied = copy.deepcopy(pipeline).to("cpu", torch.float32)
    if ema is not None:
        ema.copy_to(trained(copied))
    return copied


class Checkpointer:
    """Decides when to checkpoint and writes/reads ``output_dir/checkpoint-latest`` atomically.

    The folder holds ``model/`` (EMA weights, loadable by ``SRPipeline.from_pretrained``), ``training_state/``
    (Accelerate: model, optimizer, RNG states), ``ema.safetensors``, ``progress.json`` and ``run_config.json``.
    """

    def __init__(self, config: TrainConfig,
                 trained: Callable[[SRPipeline], nn.Module] = trained_denoiser) -> None:
        self.config = config
        self.trained = trained
        self.output_dir = Path(config.output_dir)
        self.last_time = time.monotonic()

    @property
    def latest(self) -> Path:
        return self.output_dir / LATEST

    def due(self, step: int) -> bool:
        every = self.config.checkpoint_every_steps
        minutes = self.config.checkpoint_every_minutes
        return (every > 0 and step % every == 0) or (minutes > 0 and time.monotonic() - self.last_time > 60 * minutes)

    def save(self, accelerator: Any, step: int, pipeline: SRPipeline | None, ema: EMA | None,
             extra: dict[str, Any] | None = None, write_model: Callable[[Path], Any] | None = None) -> Path:
        """Write the checkpoint for ``step`` (all processes must call; the main process writes the files).

        ``model/`` is ``pipeline`` with the EMA weights, or whatever ``write_model(folder)`` writes.
        """
        accelerator.wait_for_everyone()
        staging = checkpoint.staging_folder(self.latest) if accelerator.is_main_process else None
        # Accelerate writes per-process RNG states into the folder, so every process needs the same path.
        staging_list = [str(staging) if staging else ""]
        if accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            staging_list = broadcast_object_list(staging_list)
        staging = Path(staging_list[0])
        accelerator.save_state(str(staging / "training_state"), safe_serialization=True)
        if accelerator.is_main_process:
            if write_model is not None:
                write_model(staging / "model")
            else:
                assert pipeline is not None
                ema_pipeline(pipeline, ema, self.trained).save_pretrained(staging / "model")
            if ema is not None:
                checkpoint.save_tensors(staging / "ema.safetensors", ema.state_dict())
            checkpoint.write_json(staging / "progress.json", {"step": step, **(extra or {})})
            checkpoint.write_json(staging / "run_config.json", to_dict(self.config))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            checkpoint.replace_folder(staging, self.latest)
        accelerator.wait_for_everyone()
        self.last_time = time.monotonic()
        return self.latest

    def resume(self, accelerator: Any, ema: EMA | None) -> dict[str, Any] | None:
        """Restore the latest checkpoint if there is one; returns its progress dict (with ``step``) or None."""
        if checkpoint.recover_folder(self.latest) is None or not (self.latest / "progress.json").is_file():
            return None
        accelerator.load_state(str(self.latest / "training_state"))
        if ema is not None and (self.latest / "ema.safetensors").is_file():
            ema.load_state_dict(checkpoint.load_tensors(self.latest / "ema.safetensors"))
        progress = checkpoint.read_json(self.latest / "progress.json")
        logger.info("resumed from %s at step %d", self.latest, progress["step"])
        return progress


def finite_or_raise(loss: torch.Tensor, step: int) -> None:
    """Stop a run whose loss diverged instead of checkpointing garbage."""
    if not math.isfinite(float(loss.detach())):
        raise FloatingPointError(f"loss is {float(loss)} at step {step}: lower optim.learning_rate or check the data")


def load_autoencoder(folder: str | Path) -> Autoencoder:
    """The latent space stored in a model folder (or an autoencoder-only folder with the same two files)."""
    from turbosr.models.autoencoders import autoencoder_from_config

    folder = Path(folder)
    meta = checkpoint.read_json(folder / "config.json")
    if "autoencoder" not in meta:
        raise ValueError(f"{folder}/config.json describes no autoencoder")
    autoencoder = autoencoder_from_config(meta["autoencoder"])
    autoencoder.load_state_dict(checkpoint.load_tensors(folder / "autoencoder.safetensors"), strict=True)
    return autoencoder


def save_autoencoder(folder: str | Path, autoencoder: Autoencoder, extra: dict[str, Any] | None = None) -> Path:
    """Write an autoencoder-only folder (``config.json`` + ``autoencoder.safetensors``), atomically per file."""
    folder = Path(folder)
    checkpoint.save_tensors(folder / "autoencoder.safetensors",
                            {k: v.float() for k, v in autoencoder.state_dict().items()})
    checkpoint.write_json(folder / "config.json", {"autoencoder": autoencoder.config(), **(extra or {})})
    return folder


def fit_patch_autoencoder(autoencoder: Autoencoder, dataset: HRFolderDataset, num_crops: int, seed: int) -> None:
    """PCA-fit a patch autoencoder on ``num_crops`` seeded training crops (seconds on a CPU)."""
    generator = torch.Generator().manual_seed(seed + 7)
    crops = sample_hq_batch(dataset, num_crops, generator)
    explained = autoencoder.fit(to_model_range(crops), generator=generator)
    logger.info("patch latent fitted on %d crops: %d components explain %.4f of the variance",
                num_crops, autoencoder.latent_channels, float(explained.sum()))


def initial_pipeline(config: TrainConfig, dataset: HRFolderDataset) -> SRPipeline:
    """The model a run starts from: ``init_from`` weights, or fresh from the preset (latent fitted/reused).

    For the residual target, the per-channel std of (HQ latent - LQ latent) is measured on training batches and
    stored in the denoiser, so the diffusion variable has unit variance per channel.
    """
    import dataclasses

    from turbosr.models.presets import build_model, describe_loaded

    if config.init_from:
        loaded = SRPipeline.from_pretrained(config.init_from)
        pipeline = SRPipeline(loaded.denoiser, loaded.autoencoder, dataclasses.replace(loaded.config,
                                                                                      scale=config.model.scale))
        logger.info("initialised from %s (trained at x%d) for x%d", config.init_from, loaded.scale, pipeline.scale)
        if config.refit_residual_scale and pipeline.config.target == "residual":
            measure_residual_scale(config, dataset, pipeline.autoencoder, pipeline.denoiser)
        return pipeline
    denoiser, autoencoder = build_model(config.model)
    model = config.model
    if model.preset == "sd":
        model = describe_loaded(model, denoiser, autoencoder)
    if config.autoencoder_from:
        autoencoder = load_autoencoder(config.autoencoder_from)
    elif config.model.latent == "patch":
        fit_patch_autoencoder(autoencoder, dataset, config.pca_images, config.seed)
    elif config.model.preset != "sd":
        raise ValueError("a KL latent must be trained first (turbosr train autoencoder) and given as autoencoder_from")
    if (autoencoder.factor, autoencoder.latent_channels) != (model.latent_factor, model.latent_channels):
        raise ValueError(f"the latent space has factor {autoencoder.factor} and {autoencoder.latent_channels} "
                         f"channels but model.latent_factor/latent_channels say {model.latent_factor}/"
                         f"{model.latent_channels}")
    if config.model.target == "residual":
        measure_residual_scale(config, dataset, autoencoder, denoiser)
    return SRPipeline(denoiser, autoencoder, model)


@torch.no_grad()
def measure_residual_scale(config: TrainConfig, dataset: Any, autoencoder: nn.Module, denoiser: nn.Module) -> None:
    """Set ``denoiser.residual_scale`` to the per-channel std of HQ-minus-LQ latents of this run's training pairs
    (scale and degradation of ``config``), measured on ``residual_scale_batches`` seeded batches."""
    residuals = []
    for index in range(config.residual_scale_batches):
        generator = batch_generator(config.seed + 1, index, 0)
        hq = sample_hq_batch(dataset, config.batch_size, generator)
        _, lq_latent, hq_latent = encode_pair(autoencoder, hq, config.model.scale, config.data.degradation, generator)
        residuals.append((hq_latent - lq_latent).transpose(0, 1).reshape(autoencoder.latent_channels, -1))
    scale = torch.cat(residuals, dim=1).std(dim=1).clamp_min(1e-4)
    denoiser.residual_scale.copy_(scale.to(denoiser.residual_scale))
    logger.info("residual std per channel: min %.4f, max %.4f", float(scale.min()), float(scale.max()))




def make_optimizer(config: TrainConfig, parameters: Any) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW with the configured betas/weight decay and a linear warm-up schedule."""
    optimizer = torch.optim.AdamW(parameters, lr=config.optim.learning_rate,
                                  betas=(config.optim.beta1, config.optim.beta2),
                                  weight_decay=config.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(step, config.optim.warmup_steps))
    return optimizer, scheduler


def optimizer_step(accelerator: Any, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                   config: TrainConfig) -> None:
    """Clip, step, advance the learning-rate schedule, clear gradients."""
    if config.optim.grad_clip > 0:
        accelerator.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def micro_batches(config: TrainConfig, step: int, accelerator: Any, model: nn.Module) -> Any:
    """Yield (generator, sync context) per micro-batch of optimizer step ``step``.

    The generator seeds that micro-batch's data and noise (resumable data order); gradients are synchronised
    across processes only on the last micro-batch.
    """
    import contextlib

    accumulation = config.gradient_accumulation_steps
    for micro in range(accumulation):
        generator = batch_generator(config.seed, step * accumulation + micro, accelerator.process_index)
        last = micro + 1 == accumulation
        yield generator, (contextlib.nullcontext() if last else accelerator.no_sync(model))




class Adversary:
    """The optional PatchGAN hinge term of autoencoder and decoder training (off when loss.adversarial is 0)."""

    def __init__(self, config: TrainConfig, accelerator: Any) -> None:
        from turbosr.models.discriminator import PatchDiscriminator

        self.config = config
        self.accelerator = accelerator
        self.enabled = config.loss.adversarial > 0
        if self.enabled:
            discriminator = PatchDiscriminator(config.loss.discriminator_channels).to(accelerator.device)
            optimizer = torch.optim.AdamW(discriminator.parameters(), lr=config.loss.discriminator_learning_rate,
                                          betas=(0.5, 0.999))
            self.discriminator, self.optimizer = accelerator.prepare(discriminator, optimizer)

    def generator_term(self, prediction: torch.Tensor, step: int) -> torch.Tensor | None:
        """Weighted generator loss on a [0, 1] prediction (None when off or before the start step)."""
        from turbosr.losses import hinge_generator_loss

        if not self.enabled or step < self.config.loss.adversarial_start_step:
            return None
        self.discriminator.requires_grad_(False)  # the generator term must not train the discriminator
        return self.config.loss.adversarial * hinge_generator_loss(self.discriminator(to_model_range(prediction)))

    def add_generator_term(self, loss: torch.Tensor, terms: dict[str, torch.Tensor], prediction: torch.Tensor,
                           step: int) -> torch.Tensor:
        """``loss`` plus the generator term when it is on (recorded in ``terms`` as "generator")."""
        term = self.generator_term(prediction, step)
        if term is None:
            return loss
        terms["generator"] = term
        return loss + term

    def discriminator_backward(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor | None:
        """Backpropagate the discriminator's hinge loss on real vs (detached) fake images; returns it."""
        from turbosr.losses import hinge_discriminator_loss

        if not self.enabled:
            return None
        self.discriminator.requires_grad_(True)
        with self.accelerator.autocast():
            loss = hinge_discriminator_loss(self.discriminator(to_model_range(real)),
                                            self.discriminator(to_model_range(fake.detach())))
        self.accelerator.backward(loss / self.config.gradient_accumulation_steps)
        return loss

    def step(self) -> None:
        if self.enabled:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)


@dataclass
class Run:
    """Everything a training loop needs besides its data: prepared model/optimizer, EMA, checkpoints, progress."""

    config: TrainConfig
    accelerator: Any
    trained: nn.Module
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ema: EMA
    checkpointer: Checkpointer
    report: StepReport
    adversary: Adversary | None
    start: int

    def end_step(self, step: int, loss: torch.Tensor, logged: dict[str, torch.Tensor], pipeline: SRPipeline | None,
                 validator: Validator | None = None, write_model: Callable[[Path], Any] | None = None) -> None:
        """After the backward passes of optimizer step ``step``: update, average, log, validate, checkpoint."""
        optimizer_step(self.accelerator, self.model, self.optimizer, self.scheduler, self.config)
        if self.adversary is not None:
            self.adversary.step()
        self.ema.update(self.trained, step)
        finite_or_raise(loss, step)
        done = step + 1
        self.report.after_step(done, {k: float(v.detach()) for k, v in logged.items()},
                               self.scheduler.get_last_lr()[0])
        if validator is not None and pipeline is not None and validator.due(done):
            validator.run(done, pipeline, self.ema, self.report.log, self.checkpointer.trained)
        if self.checkpointer.due(done) or done == self.config.max_steps:
            self.checkpointer.save(self.accelerator, done, pipeline, self.ema, write_model=write_model)


def start_run(config: TrainConfig, accelerator: Any, trained: nn.Module,
              trained_part: Callable[[SRPipeline], nn.Module] = trained_denoiser, adversarial: bool = False) -> Run:
    """Optimizer + Accelerate preparation + EMA of ``trained`` (and the discriminator when ``adversarial``), then
    resume from the latest checkpoint if there is one; ``start`` is the step to continue from."""
    optimizer, scheduler = make_optimizer(config, trained.parameters())
    model, optimizer, scheduler = accelerator.prepare(trained, optimizer, scheduler)
    adversary = Adversary(config, accelerator) if adversarial else None
    ema = EMA(trained, config.ema_decay)
    checkpointer = Checkpointer(config, trained=trained_part)
    resumed = checkpointer.resume(accelerator, ema)
    start = resumed["step"] if resumed else 0
    return Run(config, accelerator, trained, model, optimizer, scheduler, ema, checkpointer,
               StepReport(config, accelerator, start), adversary, start)


class Validator:
    """One-step PSNR-Y of the EMA model vs bicubic on fixed held-out crops, every ``validate_every_steps``.

    Uses the ``heldout`` split of the manifest when training from a manifest (else crops of the training
    folder, clearly labelled); logs to the run log and saves the latest side-by-side image.
    """

    def __init__(self, config: TrainConfig, accelerator: Any) -> None:
        self.config = config
        self.enabled = accelerator.is_main_process and config.validate_every_steps > 0
        self.source = "val" if config.data.manifest else "train-folder"
        self.hq: torch.Tensor | None = None
        if self.enabled:
            try:
                dataset = load_dataset(config, split="val") if config.data.manifest else load_dataset(config)
            except ValueError as error:
                logger.warning("validation disabled: %s", error)
                self.enabled = False
                return
            generator = torch.Generator().manual_seed(0)  # the same crops for every run, whatever its seed
            count = min(config.validation_images, len(dataset))
            self.hq = torch.stack([dataset.crop(i, generator) for i in range(count)])

    def due(self, step: int) -> bool:
        return self.enabled and step % self.config.validate_every_steps == 0

    def run(self, step: int, pipeline: SRPipeline, ema: EMA, log: RunLog, trained: Callable = trained_denoiser
            ) -> dict[str, float]:
        from turbosr.metrics import psnr

        assert self.hq is not None
        model = ema_pipeline(pipeline, ema, trained)
        lq = make_lq(self.hq, pipeline.scale, self.config.data.degradation, generator=torch.Generator().manual_seed(0))
        output = model(lq, generator=torch.Generator().manual_seed(0))
        bicubic = upsample_lq(lq, pipeline.scale)
        border = pipeline.scale
        record = {"step": step, "validation": self.source,
                  "val_psnr_y": float(psnr(output, self.hq, border, y_channel=True).mean()),
                  "val_psnr_y_bicubic": float(psnr(bicubic, self.hq, border, y_channel=True).mean())}
        log.write(record)
        if log.enabled:
            from turbosr.image import save_image

            strip = torch.cat([torch.cat([bicubic[i], output[i], self.hq[i]], dim=-1) for i in range(len(self.hq))],
                              dim=-2)
            save_image(strip[None], log.path.parent / "validation-latest.png", overwrite=True)
        return record
