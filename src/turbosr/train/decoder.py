"""YONOS-SR decoder fine-tuning (arXiv 2401.17258, sec. 3.3): freeze the distilled UNet, run it for one step,
and fine-tune the decoder on its latents against the HR image. The encoder stays frozen, so the condition
latents the UNet was trained on do not move.

Patch latent: the linear decoder is kept and a residual refiner (zero-initialised, so training starts from the
exact linear inverse) is added and trained. KL latent: ``vae.decoder`` and ``post_quant_conv`` are trained.
Losses: L1 + SSIM + Sobel-edge (+ FFT amplitude) terms that need no downloaded network, and an optional
PatchGAN hinge term.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from turbosr.config import (
    AdversarialConfig,
    ConfigError,
    DataConfig,
    ImageLossConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    to_dict,
)
from turbosr.data import make_lq
from turbosr.losses import image_loss
from turbosr.models.autoencoders import KLAutoencoder, PatchAutoencoder
from turbosr.models.initial import lq_condition, without_fidelity_warp
from turbosr.pipeline import SRPipeline
from turbosr.train.common import (
    LATEST,
    Cadence,
    average_gradients,
    averaged_copy,
    hq_batch,
    load_dataset,
    make_accelerator,
    micro_batches,
    optimizer_step,
    prepare,
    save_checkpoint,
)
from turbosr.train.patchgan import PatchGAN
from turbosr.train.reporting import StepReport
from turbosr.train.validation import validate, validation_crops

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecoderConfig:
    """``turbosr train decoder``: the trained model's UNet frozen, its decoder fine-tuned on one-step latents."""

    init_from: str  # the trained model folder (its UNet is frozen)
    model: ModelConfig = field(default_factory=ModelConfig)  # scale and refine_channels are read from it
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    loss: ImageLossConfig = field(default_factory=ImageLossConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    sample_steps: int = 1  # denoising steps that make the latents the decoder learns to decode

    def __post_init__(self) -> None:
        self.data.check_crop(self.model)
        if self.sample_steps < 1:
            raise ConfigError(f"sample_steps must be >= 1, got {self.sample_steps}")


def decoder_module(pipeline: SRPipeline) -> nn.Module:
    """The part of the latent space that decoder fine-tuning trains."""
    autoencoder = pipeline.autoencoder
    if isinstance(autoencoder, PatchAutoencoder):
        if autoencoder.refiner is None:
            raise ValueError("this patch autoencoder has no refiner to fine-tune (see with_refiner)")
        return autoencoder.refiner
    assert isinstance(autoencoder, KLAutoencoder)
    return nn.ModuleList([autoencoder.vae.decoder, autoencoder.vae.post_quant_conv])


def with_refiner(pipeline: SRPipeline, refine_channels: int) -> SRPipeline:
    """Give a patch-latent pipeline a zero-initialised decoder refiner (a no-op for KL or existing refiners)."""
    autoencoder = pipeline.autoencoder
    if not isinstance(autoencoder, PatchAutoencoder) or autoencoder.refiner is not None:
        return pipeline
    if refine_channels <= 0:
        raise ValueError("decoder fine-tuning of a patch latent needs model.refine_channels > 0 (e.g. 32)")
    refined = PatchAutoencoder(autoencoder.factor, autoencoder.latent_channels, refine_channels)
    refined.load_state_dict(autoencoder.state_dict(), strict=False)
    config = dataclasses.replace(pipeline.config, refine_channels=refine_channels)
    return SRPipeline(pipeline.denoiser, refined, config)


def train(config: DecoderConfig) -> Path:
    """Run (or resume) decoder fine-tuning; returns the checkpoint folder (its ``model/`` is the full model)."""
    run, data = config.run, config.data
    accelerator = make_accelerator(run)
    dataset = load_dataset(data, config.model.scale)
    loaded = without_fidelity_warp(SRPipeline.from_pretrained(config.init_from), config.init_from)
    pipeline = with_refiner(loaded, config.model.refine_channels)
    if pipeline.scale != config.model.scale:
        raise ValueError(f"{config.init_from} is x{pipeline.scale}; set model.scale={pipeline.scale}")
    pipeline.to(accelerator.device)
    pipeline.denoiser.requires_grad_(False)
    pipeline.autoencoder.requires_grad_(False)
    decoder = decoder_module(pipeline).requires_grad_(True).train()
    gan = PatchGAN(config.adversarial, accelerator)
    # (the decoder runs inside autoencoder.decode: of the speed options only the memory format applies)
    model, _, optimizer, scheduler, ema, start = prepare(accelerator, decoder, config.optim, run)
    report = StepReport(run, accelerator, start)
    validation = validation_crops(data, pipeline.scale, run.validation_images)
    cadence = Cadence(run)

    for step in range(start, run.max_steps):
        for generator, sync in micro_batches(run.seed, step, run.gradient_accumulation_steps, accelerator, model):
            # data and the frozen model's one-step latents
            hq = hq_batch(dataset, run.batch_size, generator, accelerator.device)
            lq = make_lq(hq, pipeline.scale, data.degradation, generator, data.realesrgan)
            with torch.no_grad():
                lq_latent = lq_condition(pipeline.autoencoder, lq, pipeline.scale)
                latent = pipeline.denoise_latents(lq_latent, num_steps=config.sample_steps, generator=generator)
            # decode with the trainable decoder and compare with the HR crop
            with sync, accelerator.autocast():
                prediction = (pipeline.autoencoder.decode(latent).float() + 1.0) / 2.0
                terms = image_loss(prediction, hq, config.loss)
                loss = terms["total"]
                loss = gan.add_generator_loss(loss, terms, prediction, step)
                accelerator.backward(loss / run.gradient_accumulation_steps)
            gan.discriminator_step(hq, prediction, terms)
        # update, average, log
        average_gradients(accelerator, decoder)  # it ran outside its DDP wrapper
        optimizer_step(accelerator, model, optimizer, scheduler, config.optim.grad_clip)
        ema.update(decoder, step)
        report.after_step(step + 1, {k: v.detach() for k, v in terms.items()}, scheduler.get_last_lr()[0])
        # validate and checkpoint the model with the averaged decoder; stop when the time budget is spent
        done, checkpointing = step + 1, cadence.checkpoint_due(step + 1)
        validating = validation is not None and cadence.validation_due(done)
        averaged = averaged_copy(pipeline, ema, decoder_module) if validating or checkpointing else None
        if validating and accelerator.is_main_process:
            validate(averaged, validation, data, done, report.log)
        if checkpointing:
            save_checkpoint(accelerator, run.output_dir, done, ema, to_dict(config), averaged.save_pretrained)
        if cadence.out_of_time():
            break
    report.close()
    return Path(run.output_dir) / LATEST
