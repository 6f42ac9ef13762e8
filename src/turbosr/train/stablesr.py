"""StableSR (Wang et al. 2023, arXiv 2305.07015) on a frozen diffusion prior, in two stages.

- ``stage: sft``: a time-aware encoder of the LQ latent modulates the frozen prior UNet through SFT layers
  (``models/stablesr.py``; zero-initialised, so training starts from the prior). Only the encoder and the SFT
  layers train, with the prior's own diffusion loss (its prediction type and target) on (HR crop, degraded LQ)
  pairs. ``model.sft_time_aware: false`` is the paper's time-agnostic ablation.
- ``stage: cfw``: controllable feature wrapping. The whole diffusion model is frozen and produces its latents
  (``sample_steps`` steps); a CFW module learns a correction from the LQ image's features so that, at w = 1,
  the decoded output matches the HR crop (image losses). At inference w in [0, 1] scales the correction
  (``turbosr upscale --fidelity W``); w = 0 is exactly the output without CFW.

Sampling needs nothing new: the aggregation sampling over overlapping latent tiles (``tiling.tiled_map``) runs
the SFT-conditioned denoiser per tile unchanged, and few steps come from a distilled prior.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from turbosr.config import ConfigError, ModelConfig, model_folders, to_dict
from turbosr.data import make_lq
from turbosr.degradations import upsample_lq
from turbosr.diffusion import add_noise, sample_training_timesteps, training_target
from turbosr.image import from_model_range, to_model_range
from turbosr.losses import diffusion_loss, image_loss
from turbosr.models.stablesr import FidelityWarp
from turbosr.pipeline import SRPipeline
from turbosr.run_config import DataConfig, ImageLossConfig, OptimConfig, RunConfig
from turbosr.train.common import (
    LATEST,
    Cadence,
    averaged_copy,
    check_starts,
    hq_batch,
    load_dataset,
    make_accelerator,
    micro_batches,
    optimizer_step,
    prepare,
    save_checkpoint,
)
from turbosr.train.initial import lq_condition, without_fidelity_warp
from turbosr.train.reporting import StepReport
from turbosr.train.validation import validate, validation_crops

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StableSRConfig:
    """``turbosr train stablesr``: SFT conditioning of a frozen prior (stage sft), or CFW modules (stage cfw)."""

    prior: str  # model folder: the frozen prior (stage sft), or the model that gets CFW modules (stage cfw)
    stage: str = "sft"  # "sft" | "cfw"
    # the network comes from the starting folder; of a model section only these are read (others: ConfigError)
    MODEL_FIELDS_READ: ClassVar[tuple[str, ...]] = ("scale", "sft_time_aware", "sft_down")
    model: ModelConfig = field(default_factory=ModelConfig)  # scale (checked), sft_time_aware, sft_down (stage sft)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    loss: ImageLossConfig = field(default_factory=ImageLossConfig)  # stage cfw
    cfw_channels: int = 32  # stage cfw: width of the CFW module
    sample_steps: int = 1  # stage cfw: denoising steps that make the frozen model's latents

    def __post_init__(self) -> None:
        self.data.check_crop(self.model)
        if self.stage not in ("sft", "cfw"):
            raise ConfigError(f"stage must be sft or cfw, got {self.stage!r}")
        if self.sample_steps < 1 or self.cfw_channels < 1:
            raise ConfigError("sample_steps and cfw_channels must be positive")


def with_sft(folder: str, time_aware: bool, down: bool = True) -> SRPipeline:
    """The prior with a zero-initialised SFT conditioner; everything but the conditioner frozen. A CFW module of
    the prior is left out: it was trained for the prior's outputs, which SFT changes (train CFW again after)."""
    loaded = without_fidelity_warp(SRPipeline.from_pretrained(folder), folder)
    loaded.denoiser.requires_grad_(False)
    loaded.denoiser.add_sft(time_aware, down)
    return loaded.replace(config=dataclasses.replace(loaded.config, sft=True, sft_time_aware=time_aware, sft_down=down))


def train(config: StableSRConfig) -> Path:
    """Run (or resume) one StableSR stage; returns the checkpoint folder (``model/`` loads in SRPipeline)."""
    return (train_sft if config.stage == "sft" else train_cfw)(config)


def train_sft(config: StableSRConfig) -> Path:
    """Stage sft: the time-aware encoder and SFT layers learn the prior's diffusion loss; the prior is frozen."""
    run, data, scale = config.run, config.data, config.model.scale
    accelerator = make_accelerator(run)
    check_starts(run.output_dir, model_folders(config), accelerator.is_main_process, run)
    dataset = load_dataset(data, scale)
    pipeline = with_sft(config.prior, config.model.sft_time_aware, config.model.sft_down)
    if pipeline.scale != scale:
        raise ValueError(f"{config.prior} is an x{pipeline.scale} model; set model.scale={pipeline.scale}")
    autoencoder = pipeline.autoencoder.to(accelerator.device).requires_grad_(False)
    denoiser = pipeline.denoiser.to(accelerator.device)
    denoiser.sft.train()  # only the conditioner requires gradients (with_sft froze the rest)
    model, forward, optimizer, scheduler, ema, start = prepare(accelerator, denoiser, config.optim, run)
    report = StepReport(run, accelerator, start)
    validation = validation_crops(data, scale, run.validation_images)
    cadence = Cadence(run)
    alpha_bar = pipeline.alpha_bar.to(accelerator.device)
    steps_total = pipeline.config.schedule.num_train_timesteps

    for step in range(start, run.max_steps):
        for generator, sync in micro_batches(run.seed, step, run.gradient_accumulation_steps, accelerator, model):
            # data and latents (frozen latent space)
            hq = hq_batch(dataset, run.batch_size, generator, accelerator.device)
            lq = make_lq(hq, scale, data.degradation, generator, data.realesrgan)
            with torch.no_grad():
                lq_latent = lq_condition(autoencoder, lq, scale)
                x0 = denoiser.to_x0(autoencoder.encode(to_model_range(hq)), lq_latent)
            # the prior's diffusion loss; gradients reach only the encoder and SFT layers (via the hooks)
            t = sample_training_timesteps(len(x0), steps_total, 0.0, generator).to(accelerator.device)
            noise = torch.randn(x0.shape, generator=generator).to(accelerator.device)
            x_t = add_noise(x0, noise, t, alpha_bar)
            target = training_target(x0, noise, t, alpha_bar, pipeline.config.prediction_type)
            with sync, accelerator.autocast():
                loss = diffusion_loss(forward(x_t, lq_latent, t).float(), target)
                accelerator.backward(loss / run.gradient_accumulation_steps)
        # update, average, log
        optimizer_step(accelerator, model, optimizer, scheduler, config.optim.grad_clip)
        ema.update(denoiser, step)
        report.after_step(step + 1, {"loss": loss.detach()}, scheduler.get_last_lr()[0])
        # validate and checkpoint the model with the averaged conditioner; stop when the time budget is spent
        done, checkpointing = step + 1, cadence.checkpoint_due(step + 1)
        due = validation is not None and cadence.validation_due(done)
        averaged = averaged_copy(pipeline, ema, lambda p: p.denoiser) if due or checkpointing else None
        if due and accelerator.is_main_process:
            validate(averaged, validation, data, done, report.log)
        if checkpointing:
            save_checkpoint(accelerator, run.output_dir, done, ema, to_dict(config), averaged.save_pretrained)
        if cadence.out_of_time():
            break
    report.close()
    return Path(run.output_dir) / LATEST


def train_cfw(config: StableSRConfig) -> Path:
    """Stage cfw: a CFW module learns, at w = 1, the correction that takes the frozen model's output to the HR."""
    run, data, scale = config.run, config.data, config.model.scale
    accelerator = make_accelerator(run)
    check_starts(run.output_dir, model_folders(config), accelerator.is_main_process, run)
    dataset = load_dataset(data, scale)
    loaded = SRPipeline.from_pretrained(config.prior)
    pipeline = loaded.replace(fidelity_warp=FidelityWarp(config.cfw_channels))
    if pipeline.scale != scale:
        raise ValueError(f"{config.prior} is an x{pipeline.scale} model; set model.scale={pipeline.scale}")
    pipeline.to(accelerator.device)
    pipeline.denoiser.requires_grad_(False)
    pipeline.autoencoder.requires_grad_(False)
    warp = pipeline.fidelity_warp.train()
    model, forward, optimizer, scheduler, ema, start = prepare(accelerator, warp, config.optim, run)
    report = StepReport(run, accelerator, start)
    validation = validation_crops(data, scale, run.validation_images)
    cadence = Cadence(run)

    for step in range(start, run.max_steps):
        for generator, sync in micro_batches(run.seed, step, run.gradient_accumulation_steps, accelerator, model):
            # data and the frozen model's output for it
            hq = hq_batch(dataset, run.batch_size, generator, accelerator.device)
            lq = make_lq(hq, scale, data.degradation, generator, data.realesrgan)
            upsampled = to_model_range(upsample_lq(lq, scale))
            with torch.no_grad():
                latent = pipeline.denoise_latents(pipeline.autoencoder.encode(upsampled),
                                                  num_steps=config.sample_steps, generator=generator)
                decoded = pipeline.autoencoder.decode(latent).clamp(-1, 1)
            # the correction at w = 1 must take it to the HR crop
            with sync, accelerator.autocast():
                prediction = from_model_range(forward(decoded, upsampled, 1.0).float())
                terms = image_loss(prediction, hq, config.loss)
                loss = terms["total"]
                accelerator.backward(loss / run.gradient_accumulation_steps)
        # update, average, log
        optimizer_step(accelerator, model, optimizer, scheduler, config.optim.grad_clip)
        ema.update(warp, step)
        report.after_step(step + 1, {k: v.detach() for k, v in terms.items()}, scheduler.get_last_lr()[0])
        # validate at w = 1 and checkpoint the model with the averaged CFW module
        done, checkpointing = step + 1, cadence.checkpoint_due(step + 1)
        due = validation is not None and cadence.validation_due(done)
        averaged = averaged_copy(pipeline, ema, lambda p: p.fidelity_warp) if due or checkpointing else None
        if due and accelerator.is_main_process:
            validate(averaged, validation, data, done, report.log, fidelity=1.0)
        if checkpointing:
            save_checkpoint(accelerator, run.output_dir, done, ema, to_dict(config), averaged.save_pretrained)
        if cadence.out_of_time():
            break
    report.close()
    return Path(run.output_dir) / LATEST
