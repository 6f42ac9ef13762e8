"""Train an SD-SR model with the standard diffusion loss (the multi-step teacher; also "direct" training).

YONOS-SR conditioning: the LQ image is bicubic-upsampled to HR size, encoded, and concatenated to the noisy
latent. The loss is the MSE between the network output and the ``prediction_type`` target at a sampled timestep
(Ho et al. 2020 "simple" loss; v-target as in Salimans & Ho 2022); ``terminal_fraction`` of the samples sit at
the last timestep, where one-step sampling starts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from turbosr.config import ConfigError, ModelConfig, model_folders, to_dict
from turbosr.data import make_lq
from turbosr.diffusion import add_noise, sample_training_timesteps, training_target
from turbosr.image import to_model_range
from turbosr.losses import diffusion_loss
from turbosr.run_config import DataConfig, OptimConfig, RunConfig
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
from turbosr.train.initial import initial_pipeline, lq_condition
from turbosr.train.reporting import StepReport
from turbosr.train.validation import validate, validation_crops

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherConfig:
    """``turbosr train teacher``: a diffusion SR model trained on (HR crop, degraded LQ) pairs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    init_from: str | None = None  # warm start: this model folder's weights (the optimizer starts fresh)
    autoencoder_from: str | None = None  # reuse this folder's latent space (frozen) instead of fitting one
    # with init_from: measure the residual std again on this run's scale and degradation instead of keeping
    # the loaded model's (a new degradation can exceed it by 100x, e.g. bicubic -> realesrgan)
    refit_residual_scale: bool = False
    pca_images: int = 256  # patch latent: training crops its PCA is fitted on
    residual_scale_batches: int = 8  # residual target: batches its per-channel std is measured on
    terminal_fraction: float = 0.0  # fraction of samples at the last timestep (one-step sampling's start)

    def __post_init__(self) -> None:
        self.data.check_crop(self.model)
        if self.refit_residual_scale and not self.init_from:
            raise ConfigError("refit_residual_scale applies to runs with init_from (a new model measures its own)")
        if not 0.0 <= self.terminal_fraction <= 1.0:
            raise ConfigError(f"terminal_fraction must be in [0, 1], got {self.terminal_fraction}")


def train(config: TeacherConfig) -> Path:
    """Run (or resume) teacher training; returns the checkpoint folder (its ``model/`` loads in SRPipeline)."""
    run, data, scale = config.run, config.data, config.model.scale
    accelerator = make_accelerator(run)
    check_starts(run.output_dir, model_folders(config), accelerator.is_main_process, run)
    dataset = load_dataset(data, scale)
    pipeline = initial_pipeline(
        config.model, dataset, degradation=data.degradation, realesrgan=data.realesrgan,
        seed=run.seed, init_from=config.init_from, autoencoder_from=config.autoencoder_from,
        refit_residual_scale=config.refit_residual_scale, pca_images=config.pca_images,
        residual_scale_batches=config.residual_scale_batches, batch_size=run.batch_size)
    autoencoder = pipeline.autoencoder.to(accelerator.device).requires_grad_(False)
    denoiser = pipeline.denoiser.train()
    model, forward, optimizer, scheduler, ema, start = prepare(accelerator, denoiser, config.optim, run)
    report = StepReport(run, accelerator, start)
    validation = validation_crops(data, scale, run.validation_images)
    cadence = Cadence(run)
    alpha_bar = pipeline.alpha_bar.to(accelerator.device)
    steps_total = config.model.schedule.num_train_timesteps

    for step in range(start, run.max_steps):
        for generator, sync in micro_batches(run.seed, step, run.gradient_accumulation_steps, accelerator, model):
            # data: HR crops degraded on the training device; both sides encoded by the frozen latent space
            hq = hq_batch(dataset, run.batch_size, generator, accelerator.device)
            lq = make_lq(hq, scale, data.degradation, generator, data.realesrgan)
            with torch.no_grad():
                lq_latent = lq_condition(autoencoder, lq, scale)
                x0 = denoiser.to_x0(autoencoder.encode(to_model_range(hq)), lq_latent)
            # diffusion: timestep, Gaussian noise, forward process, the prediction-type target
            t = sample_training_timesteps(len(x0), steps_total, config.terminal_fraction, generator)
            t = t.to(accelerator.device)
            noise = torch.randn(x0.shape, generator=generator).to(accelerator.device)
            x_t = add_noise(x0, noise, t, alpha_bar)
            target = training_target(x0, noise, t, alpha_bar, config.model.prediction_type)
            # forward/backward (gradients synchronised only on the last micro-batch)
            with sync, accelerator.autocast():
                loss = diffusion_loss(forward(x_t, lq_latent, t).float(), target)
                accelerator.backward(loss / run.gradient_accumulation_steps)
        # update, average, log
        optimizer_step(accelerator, model, optimizer, scheduler, config.optim.grad_clip)
        ema.update(denoiser, step)
        report.after_step(step + 1, {"loss": loss.detach()}, scheduler.get_last_lr()[0])
        # validate and checkpoint the averaged model; stop when the time budget is spent
        done, checkpointing = step + 1, cadence.checkpoint_due(step + 1)
        validating = validation is not None and cadence.validation_due(done)
        averaged = averaged_copy(pipeline, ema, lambda p: p.denoiser) if validating or checkpointing else None
        if validating and accelerator.is_main_process:
            validate(averaged, validation, data, done, report.log)
        if checkpointing:
            save_checkpoint(accelerator, run.output_dir, done, ema, to_dict(config), averaged.save_pretrained)
        if cadence.out_of_time():
            logger.info("time budget of %.1f minutes spent at step %d", run.max_minutes, done)
            break
    report.close()
    if start >= run.max_steps:
        logger.info("nothing to do: the checkpoint is already at step %d >= max_steps %d", start, run.max_steps)
    return Path(run.output_dir) / LATEST
