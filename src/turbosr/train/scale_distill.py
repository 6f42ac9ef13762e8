"""YONOS-SR scale distillation (Noroozi et al. 2024, arXiv 2401.17258, sec. 3).

A frozen teacher trained at a small factor (x2) supplies the targets for a student at a larger factor (x4; then
the x4 student teaches an x8 one). For one HR crop, two LQ versions are made at the two factors and both are
upsampled back to HR size. Teacher and student see the same noisy HR latent at the same timestep; the teacher
is conditioned on the less-degraded input, the student on the more-degraded one, and the student regresses the
teacher's prediction, so its target adapts to the noise level instead of being the ground truth.

Residual target: teacher and student anchor their diffusion variable on different LQ latents. The teacher's
output is converted to an HQ-latent estimate and re-expressed for the student's anchor
(:func:`student_target_from_teacher`); with the residual scale shared (the student keeps the teacher's), both
see exactly the same noisy HQ latent and the conversion is exact.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from turbosr.config import ConfigError, ModelConfig, model_folders, to_dict
from turbosr.data import make_lq
from turbosr.diffusion import add_noise, output_from_x0_eps, predict_x0_eps, sample_training_timesteps
from turbosr.image import to_model_range
from turbosr.losses import diffusion_loss
from turbosr.models.denoiser import Denoiser
from turbosr.pipeline import SRPipeline
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
class ScaleDistillConfig:
    """``turbosr train scale-distill``: a student at ``model.scale`` regresses a frozen teacher at a smaller one."""

    teacher: str  # the frozen teacher's model folder (trained at the smaller factor)
    teacher_scale: int = 2  # the factor the teacher was trained at (checked against its folder)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    init_from: str | None = None  # the student's starting weights (usually the teacher's folder)
    autoencoder_from: str | None = None  # else the latent space is fitted: it must equal the teacher's
    pca_images: int = 256
    residual_scale_batches: int = 8  # (the student keeps the teacher's residual scale; see below)

    def __post_init__(self) -> None:
        self.data.check_crop(self.model)
        if self.model.scale <= self.teacher_scale:
            raise ConfigError(f"the student's scale (model.scale={self.model.scale}) must be larger than "
                              f"teacher_scale={self.teacher_scale}")


def teacher_inputs(teacher: Denoiser, student: Denoiser, x_t_student: torch.Tensor, student_lq_latent: torch.Tensor,
                   teacher_lq_latent: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
    """The teacher's noisy input that represents the same noisy HQ latent as the student's ``x_t``.

    x_t = signal * x0 + sigma * eps with x0 = to_x0(z_hq, anchor); changing the anchor shifts x0 by
    (to_x0(z, teacher anchor) - to_x0(z, student anchor)), which does not depend on z when the two share the
    residual scale, so x_t shifts by signal times that difference. For the latent target this is the identity.
    """
    probe = torch.zeros_like(student_lq_latent)
    shift = teacher.to_x0(probe, teacher_lq_latent) - student.to_x0(probe, student_lq_latent)
    return x_t_student + signal * shift


def student_target_from_teacher(teacher_output: torch.Tensor, teacher_x_t: torch.Tensor, t: torch.Tensor,
                                alpha_bar: torch.Tensor, teacher: Denoiser, student: Denoiser,
                                teacher_lq_latent: torch.Tensor, student_lq_latent: torch.Tensor,
                                teacher_prediction: str, student_prediction: str) -> torch.Tensor:
    """Convert the teacher's network output into the student's regression target.

    teacher output -> (x0, eps) at the teacher's anchor -> HQ latent estimate -> student's x0 for its anchor ->
    the student's parameterisation (eps / v / sample) with the teacher's noise estimate.
    """
    x0_teacher, eps = predict_x0_eps(teacher_output, teacher_x_t, t, alpha_bar, teacher_prediction)
    hq_estimate = teacher.from_x0(x0_teacher, teacher_lq_latent)
    x0_student = student.to_x0(hq_estimate, student_lq_latent)
    return output_from_x0_eps(x0_student, eps, t, alpha_bar, student_prediction)


def _check_compatible(teacher: SRPipeline, student: SRPipeline) -> None:
    if teacher.autoencoder.config() != student.autoencoder.config():
        raise ValueError("teacher and student must share one latent space (set init_from or autoencoder_from "
                         "to the teacher's folder)")
    if teacher.config.schedule != student.config.schedule:
        raise ValueError("teacher and student must use the same noise schedule")
    if teacher.config.target != student.config.target:
        raise ValueError(f"teacher target {teacher.config.target!r} differs from student target {student.config.target!r}")
    if student.scale <= teacher.scale:
        raise ValueError(f"the student's scale (x{student.scale}) must be larger than the teacher's (x{teacher.scale})")


def train(config: ScaleDistillConfig) -> Path:
    """Run (or resume) scale distillation; returns the checkpoint folder (its ``model/`` is the student)."""
    run, data, scale = config.run, config.data, config.model.scale
    accelerator = make_accelerator(run)
    check_starts(run.output_dir, model_folders(config), accelerator.is_main_process, run)
    dataset = load_dataset(data, scale)
    teacher = SRPipeline.from_pretrained(config.teacher, device=accelerator.device)
    if teacher.scale != config.teacher_scale:
        raise ValueError(f"{config.teacher} is an x{teacher.scale} model but teacher_scale is {config.teacher_scale}")
    pipeline = initial_pipeline(
        config.model, dataset, degradation=data.degradation, realesrgan=data.realesrgan,
        seed=run.seed, init_from=config.init_from, autoencoder_from=config.autoencoder_from,
        pca_images=config.pca_images, residual_scale_batches=config.residual_scale_batches,
        batch_size=run.batch_size)
    _check_compatible(teacher, pipeline)
    pipeline.denoiser.residual_scale.copy_(teacher.denoiser.residual_scale)  # shared scale: exact conversion
    teacher.denoiser.requires_grad_(False)
    autoencoder = teacher.autoencoder.requires_grad_(False)
    alpha_bar = pipeline.alpha_bar.to(accelerator.device)  # the schedule both share (checked above)
    steps_total = config.model.schedule.num_train_timesteps
    denoiser = pipeline.denoiser.train()
    model, forward, optimizer, scheduler, ema, start = prepare(accelerator, denoiser, config.optim, run)
    report = StepReport(run, accelerator, start)
    validation = validation_crops(data, scale, run.validation_images)
    cadence = Cadence(run)

    for step in range(start, run.max_steps):
        for generator, sync in micro_batches(run.seed, step, run.gradient_accumulation_steps, accelerator, model):
            hq = hq_batch(dataset, run.batch_size, generator, accelerator.device)
            # two degraded versions of the same crop: the teacher's (small factor) and the student's (large)
            with torch.no_grad():
                hq_latent = autoencoder.encode(to_model_range(hq))
                student_lq = make_lq(hq, scale, data.degradation, generator, data.realesrgan)
                teacher_lq = make_lq(hq, teacher.scale, data.degradation, generator, data.realesrgan)
                student_lq_latent = lq_condition(autoencoder, student_lq, scale)
                teacher_lq_latent = lq_condition(autoencoder, teacher_lq, teacher.scale)
            # the same noisy HQ latent for both, at a uniformly drawn timestep
            x0 = denoiser.to_x0(hq_latent, student_lq_latent)
            t = sample_training_timesteps(len(x0), steps_total, 0.0, generator).to(accelerator.device)
            noise = torch.randn(x0.shape, generator=generator).to(accelerator.device)
            x_t = add_noise(x0, noise, t, alpha_bar)
            signal = alpha_bar[t].sqrt().view(-1, 1, 1, 1)
            # the frozen teacher's prediction, re-expressed as the student's target
            with torch.no_grad(), accelerator.autocast():
                teacher_x_t = teacher_inputs(teacher.denoiser, denoiser, x_t, student_lq_latent,
                                             teacher_lq_latent, signal)
                teacher_output = teacher.denoiser(teacher_x_t, teacher_lq_latent, t).float()
            target = student_target_from_teacher(
                teacher_output, teacher_x_t, t, alpha_bar, teacher.denoiser, denoiser, teacher_lq_latent,
                student_lq_latent, teacher.config.prediction_type, config.model.prediction_type)
            with sync, accelerator.autocast():
                loss = diffusion_loss(forward(x_t, student_lq_latent, t).float(), target)
                accelerator.backward(loss / run.gradient_accumulation_steps)
        # update, average, log
        optimizer_step(accelerator, model, optimizer, scheduler, config.optim.grad_clip)
        ema.update(denoiser, step)
        report.after_step(step + 1, {"loss": loss.detach()}, scheduler.get_last_lr()[0])
        # validate the averaged student; checkpoint; stop when the time budget is spent
        done, checkpointing = step + 1, cadence.checkpoint_due(step + 1)
        validating = validation is not None and cadence.validation_due(done)
        student = averaged_copy(pipeline, ema, lambda p: p.denoiser) if validating or checkpointing else None
        if validating and accelerator.is_main_process:
            validate(student, validation, data, done, report.log)
        if checkpointing:
            save_checkpoint(accelerator, run.output_dir, done, ema, to_dict(config), student.save_pretrained)
        if cadence.out_of_time():
            break
    report.close()
    return Path(run.output_dir) / LATEST
