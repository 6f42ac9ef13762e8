"""AddSR: adversarial diffusion distillation for blind SR (Xie et al. 2024, arXiv 2404.01717).

The student is the blind teacher's UNet plus a ControlNet-style branch (``models/control.py``) whose outputs
start at zero, so training starts from the teacher. The schedule has K steps t_1 = 999 > ... > t_K (trailing
spacing: 999, 749, 499, 249 for K = 4). One training step:

1. **Which step learns.** With probability ``one_step_fraction`` a sample trains the first step (t_1, from pure
   noise, conditioned on the LQ latent): one-step generation. With prediction-based self-refinement (PSR) the
   others draw a start index k < K: the student predicts x0 at t_k from the noised HR latent, without gradient,
   and the trained step is k + 1, with x at t_{k+1} the HR latent noised again, and the control branch
   conditioned on that prediction (the reference code's scheme). Without PSR the trained step is drawn
   uniformly and always conditioned on the LQ latent.
2. **Distillation.** The student's HQ-latent estimate is noised to a random s and denoised by the frozen
   teacher, conditioned on the HR latent (HR-regulated teacher) or on the LQ latent. Both are expressed as HQ
   latents first, so the residual target's anchor change (LQ -> HR) is exact. The loss is the squared error of
   the decoded images, weighted by sqrt(alpha_bar_s) (reference code) and by the timestep-adaptive weight of
   the trained step (``losses.timestep_adaptive_weight``; ``adaptive_indexing`` picks the paper's indexing, by
   the trained step, or the reference code's, by the no-grad start step, which gives pure one-step samples the
   largest weight).
3. **Adversarial.** A hinge loss from a discriminator on noised latents read by the frozen teacher UNet's
   encoder with small trainable heads conditioned on the LQ latent (LADD-style; DINOv2 features are not
   available offline), or a PatchGAN on decoded images beside the bicubic LQ; DiffAugment (translation,
   cutout) before either: the shared critic of train/critic.py in its latent mode, configured by the shared
   ``adversarial`` section (``critic: teacher | patchgan``, weight 0.02 as in the reference code).

The student is saved as a normal model folder (control branch, re-noising sampler, PSR weight for inference in
its config); ``turbosr upscale --model FOLDER --steps 1..4`` runs it.
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
from turbosr.diffusion import Sampler, add_noise, predict_x0_eps, sampling_timesteps
from turbosr.image import from_model_range, to_model_range
from turbosr.losses import timestep_adaptive_weight
from turbosr.pipeline import SRPipeline
from turbosr.run_config import AdversarialConfig, DataConfig, OptimConfig, RunConfig
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
from turbosr.train.critic import Critic, LatentSpace
from turbosr.train.initial import lq_condition, without_fidelity_warp
from turbosr.train.reporting import StepReport
from turbosr.train.validation import validate, validation_crops

logger = logging.getLogger(__name__)


def _blind() -> DataConfig:
    return DataConfig(degradation="realesrgan")


@dataclass(frozen=True)
class AddSRAdversarialConfig(AdversarialConfig):
    """:class:`AdversarialConfig` with AddSR's defaults; its critics read the student's latents (or their decodes),
    so only "teacher" and "patchgan" apply, with no feature matching and no delayed start."""

    weight: float = 0.02
    critic: str = "teacher"
    discriminator_channels: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.critic not in ("teacher", "patchgan"):
            raise ConfigError(f"adversarial.critic for AddSR must be teacher or patchgan, got {self.critic!r}")
        if self.feature_matching or self.start_step:
            raise ConfigError("adversarial.feature_matching and start_step do not apply to AddSR's latent critic")


@dataclass(frozen=True)
class AdversarialDistillConfig:
    """``turbosr train adversarial-distill``: an AddSR student distilled from a frozen blind teacher."""

    teacher: str  # the multi-step blind teacher's model folder (frozen)
    init_from: str | None = None  # the student's starting weights (default: the teacher's)
    # the network comes from the starting folder; of a model section only these are read (others: ConfigError)
    MODEL_FIELDS_READ: ClassVar[tuple[str, ...]] = ("scale",)
    model: ModelConfig = field(default_factory=ModelConfig)  # scale (checked)
    data: DataConfig = field(default_factory=_blind)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    trained_steps: int = 4  # K: the student's schedule (trailing spacing)
    one_step_fraction: float = 0.5  # share of samples that train pure one-step generation
    psr: bool = True  # prediction-based self-refinement
    psr_weight: float = 0.5  # its blend at inference, stored in the student's sampler (diffusion.Sampler)
    psr_train_weight: float = 1.0  # training condition: w * previous prediction + (1 - w) * LQ (reference: 1)
    hr_regulated: bool = True  # the teacher is conditioned on the HR latent (else on the LQ latent)
    distill_weighting: str = "exponential"  # "exponential" | "linear" | "fixed" (losses.ADAPTIVE_WEIGHT_FORMS)
    # "reference" (the released code, HEAD 8721d93: by the no-grad start step, pure one-step samples last) |
    # "paper" (by the trained step); reference is the default: it is the released recipe and it won the CPU ablation
    adaptive_indexing: str = "reference"
    # the adversarial term: the one adversarial config of every method, with AddSR's defaults (weight 0.02; critic
    # "teacher": heads on the frozen teacher's encoder features of noised latents; "patchgan": on decoded images
    # beside the bicubic LQ); 0 switches it off
    adversarial: AddSRAdversarialConfig = field(default_factory=AddSRAdversarialConfig)

    def __post_init__(self) -> None:
        from turbosr.losses import ADAPTIVE_WEIGHT_FORMS

        self.data.check_crop(self.model)
        checks = {"distill_weighting": tuple(ADAPTIVE_WEIGHT_FORMS), "adaptive_indexing": ("paper", "reference")}
        for name, allowed in checks.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if not 1 <= self.trained_steps <= len(ADAPTIVE_WEIGHT_FORMS["fixed"]):
            raise ConfigError(f"trained_steps must be in 1..4 (the weighting tables have 4 entries), got {self.trained_steps}")
        for name in ("one_step_fraction", "psr_train_weight", "psr_weight"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")


def weight_index(one_step: torch.Tensor, trained_index: torch.Tensor, start_index: torch.Tensor, trained_steps: int,
                 indexing: str) -> torch.Tensor:
    """Which entry of the timestep-adaptive weight table each sample's distillation loss gets (B,):

    - ``paper`` (AddSR, sec. 3.3): the schedule step that is trained, so pure one-step samples get the first
      (smallest) weight;
    - ``reference`` (the released train_addsr.py at HEAD, 8721d93, 2024-05-23: ``TA_weight(t_TA)`` with
      ``t_TA`` the no-grad start timestep of a two-step sample, 1000 for a pure one-step sample): the start step,
      and the last (largest) entry for pure one-step samples.
    """
    if indexing == "paper":
        return trained_index
    return torch.where(one_step, trained_steps - 1, start_index)


def student_from(folder: str, psr_weight: float, trained_steps: int = 4) -> SRPipeline:
    """The teacher's model with a zero-initialised control branch and the AddSR sampler settings (re-noising,
    self-refinement weight, the K-step grid it trains on)."""
    loaded = without_fidelity_warp(SRPipeline.from_pretrained(folder), folder)
    loaded.denoiser.add_control()
    return loaded.replace(config=dataclasses.replace(loaded.config, control=True),
                          sampler=Sampler("renoise", psr_weight, trained_steps))


def teacher_target(teacher: SRPipeline, student_hq_latent: torch.Tensor, anchor: torch.Tensor, s: torch.Tensor,
                   noise: torch.Tensor) -> torch.Tensor:
    """The frozen teacher's HQ-latent estimate for the student's HQ latent noised to timestep ``s`` (B,),
    conditioned on ``anchor`` (the HR latent: HR-regulated; or the LQ latent).

    The student's estimate is re-expressed in the teacher's diffusion variable for that anchor (for the
    residual target x0 = (z - anchor) / scale: the anchor change is exact because it happens on z), noised,
    denoised, and converted back to an HQ latent.
    """
    alpha_bar = teacher.alpha_bar.to(anchor.device)
    x_s = add_noise(teacher.denoiser.to_x0(student_hq_latent, anchor), noise, s, alpha_bar)
    output = teacher.denoiser(x_s, anchor, s).float()
    x0, _ = predict_x0_eps(output, x_s, s, alpha_bar, teacher.config.prediction_type)
    return teacher.denoiser.from_x0(x0, anchor)


def train(config: AdversarialDistillConfig) -> Path:
    """Run (or resume) AddSR training; returns the checkpoint folder (its ``model/`` is the student)."""
    run, data, scale = config.run, config.data, config.model.scale
    accelerator = make_accelerator(run)
    check_starts(run.output_dir, model_folders(config), accelerator.is_main_process, run)
    dataset = load_dataset(data, scale)
    teacher = SRPipeline.from_pretrained(config.teacher, device=accelerator.device)
    if teacher.scale != scale:
        raise ValueError(f"{config.teacher} is an x{teacher.scale} model; set model.scale={teacher.scale}")
    teacher.denoiser.requires_grad_(False).eval()
    autoencoder = teacher.autoencoder.requires_grad_(False)
    pipeline = student_from(config.init_from or config.teacher, config.psr_weight, config.trained_steps)
    if pipeline.autoencoder.config() != autoencoder.config():
        raise ValueError("the student must share the teacher's latent space (init_from a folder that does)")
    denoiser = pipeline.denoiser.to(accelerator.device).train()
    model, forward, optimizer, scheduler, ema, start = prepare(accelerator, denoiser, config.optim, run)
    alpha_bar = pipeline.alpha_bar.to(accelerator.device)
    steps_total = pipeline.config.schedule.num_train_timesteps
    # the critic (train/critic.py) on HQ latents: heads on the frozen teacher's features, or a PatchGAN on decodes
    adversarial = config.adversarial
    critic = Critic(adversarial, accelerator, latent=LatentSpace(teacher.denoiser, denoiser, autoencoder, scale,
                                                                  alpha_bar, steps_total))
    report = StepReport(run, accelerator, start)
    validation = validation_crops(data, scale, run.validation_images)
    cadence = Cadence(run)
    schedule = torch.tensor(sampling_timesteps(config.trained_steps, steps_total), device=accelerator.device)

    for step in range(start, run.max_steps):
        for generator, sync in micro_batches(run.seed, step, run.gradient_accumulation_steps, accelerator, model):
            # data: HR crops, blind-degraded on the device; latents from the shared frozen latent space
            hq = hq_batch(dataset, run.batch_size, generator, accelerator.device)
            lq = make_lq(hq, scale, data.degradation, generator, data.realesrgan)
            with torch.no_grad():
                lq_latent = lq_condition(autoencoder, lq, scale)
                hr_latent = autoencoder.encode(to_model_range(hq))
                x0_hr = denoiser.to_x0(hr_latent, lq_latent)
            batch = len(hq)
            noise = torch.randn(x0_hr.shape, generator=generator).to(accelerator.device)
            # 1. which step of the schedule learns, from which state, with which control condition
            one_step = (torch.rand(batch, generator=generator) < config.one_step_fraction).to(accelerator.device)
            if config.psr and config.trained_steps > 1:
                start_index = torch.randint(config.trained_steps - 1, (batch,), generator=generator).to(one_step.device)
                trained_index = torch.where(one_step, 0, start_index + 1)
                with torch.no_grad(), accelerator.autocast():  # the previous step, without gradient
                    t_start = schedule[start_index]
                    x_start = add_noise(x0_hr, noise, t_start, alpha_bar)
                    previous = predict_x0_eps(forward(x_start, lq_latent, t_start, lq_latent).float(), x_start,
                                              t_start, alpha_bar, pipeline.config.prediction_type)[0]
                    previous_hq = denoiser.from_x0(previous, lq_latent)
                refined = config.psr_train_weight * previous_hq + (1 - config.psr_train_weight) * lq_latent
                control = torch.where(one_step[:, None, None, None], lq_latent, refined)
            else:
                trained_index = torch.randint(config.trained_steps, (batch,), generator=generator).to(one_step.device)
                trained_index = torch.where(one_step, 0, trained_index)
                control = lq_latent
                start_index = trained_index  # without self-refinement a sample starts where it trains
            t = schedule[trained_index]
            x_t = add_noise(x0_hr, noise, t, alpha_bar)
            with sync, accelerator.autocast():
                # the student's prediction at its step, as an HQ latent and as an image
                output = forward(x_t, lq_latent, t, control).float()
                student_hq = denoiser.from_x0(predict_x0_eps(output, x_t, t, alpha_bar,
                                                             pipeline.config.prediction_type)[0], lq_latent)
                student_image = from_model_range(autoencoder.decode(student_hq).float())
                # 2. distillation towards the (HR-regulated) teacher's denoising of the noised student output
                s = torch.randint(steps_total, (batch,), generator=generator).to(accelerator.device)
                teacher_noise = torch.randn(x0_hr.shape, generator=generator).to(accelerator.device)
                with torch.no_grad():
                    anchor = hr_latent if config.hr_regulated else lq_latent
                    target = from_model_range(autoencoder.decode(
                        teacher_target(teacher, student_hq.detach(), anchor, s, teacher_noise)).float())
                index = weight_index(one_step, trained_index, start_index, config.trained_steps, config.adaptive_indexing)
                weight = timestep_adaptive_weight(index, config.distill_weighting) * alpha_bar[s].sqrt()
                distill = (weight * (student_image - target).pow(2).flatten(1).mean(1)).mean()
                loss, terms = distill, {"distill": distill.detach()}
                # 3. the generator side of the adversarial loss
                if critic.enabled:
                    fooled = critic.latent_generator_loss(student_hq, lq, lq_latent, generator)
                    loss = loss + adversarial.weight * fooled
                    terms["adversarial"] = fooled.detach()
                accelerator.backward(loss / run.gradient_accumulation_steps)
            # the discriminator: real HR latents vs the student's (detached)
            if critic.enabled:
                terms["discriminator"] = critic.latent_discriminator_step(hr_latent, student_hq, lq, lq_latent,
                                                                          generator)
        # update, average, log
        optimizer_step(accelerator, model, optimizer, scheduler, config.optim.grad_clip)
        ema.update(denoiser, step)
        report.after_step(step + 1, {"loss": loss.detach(), **terms}, scheduler.get_last_lr()[0])
        # validate (one step) and checkpoint the averaged student; stop when the time budget is spent
        done, checkpointing = step + 1, cadence.checkpoint_due(step + 1)
        due = validation is not None and cadence.validation_due(done)
        student = averaged_copy(pipeline, ema, lambda p: p.denoiser) if due or checkpointing else None
        if due and accelerator.is_main_process:
            validate(student, validation, data, done, report.log)
        if checkpointing:
            save_checkpoint(accelerator, run.output_dir, done, ema, to_dict(config), student.save_pretrained)
        if cadence.out_of_time():
            break
    report.close()
    return Path(run.output_dir) / LATEST
