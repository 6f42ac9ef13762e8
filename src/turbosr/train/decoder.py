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
from pathlib import Path

import torch
from torch import nn

from turbosr.config import TrainConfig
from turbosr.data import make_lq
from turbosr.degradations import upsample_lq
from turbosr.image import to_model_range
from turbosr.losses import hinge_discriminator_loss, hinge_generator_loss, image_loss
from turbosr.models.autoencoders import KLAutoencoder, PatchAutoencoder
from turbosr.models.discriminator import PatchDiscriminator
from turbosr.pipeline import SRPipeline
from turbosr.train.common import (
    EMA,
    Checkpointer,
    StepReport,
    finite_or_raise,
    load_dataset,
    make_accelerator,
    make_optimizer,
    micro_batches,
    optimizer_step,
    sample_hq_batch,
)

logger = logging.getLogger(__name__)


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


def train(config: TrainConfig) -> Path:
    """Run (or resume) decoder fine-tuning; returns the checkpoint folder (its ``model/`` is the full model)."""
    if not config.init_from:
        raise ValueError("decoder fine-tuning starts from a trained model: set init_from=<model folder>")
    accelerator = make_accelerator(config)
    torch.manual_seed(config.seed)
    dataset = load_dataset(config)
    pipeline = with_refiner(SRPipeline.from_pretrained(config.init_from), config.model.refine_channels)
    if pipeline.scale != config.model.scale:
        raise ValueError(f"{config.init_from} is x{pipeline.scale}; set model.scale={pipeline.scale}")
    pipeline.to(accelerator.device)
    pipeline.denoiser.requires_grad_(False)
    pipeline.autoencoder.requires_grad_(False)
    decoder = decoder_module(pipeline).requires_grad_(True).train()
    optimizer, scheduler = make_optimizer(config, decoder.parameters())
    adversarial = config.loss.adversarial > 0
    if adversarial:
        discriminator = PatchDiscriminator(config.loss.discriminator_channels).to(accelerator.device)
        d_optimizer = torch.optim.AdamW(discriminator.parameters(), lr=config.loss.discriminator_learning_rate,
                                        betas=(0.5, 0.999))
        model, optimizer, scheduler, discriminator, d_optimizer = accelerator.prepare(
            decoder, optimizer, scheduler, discriminator, d_optimizer)
    else:
        model, optimizer, scheduler = accelerator.prepare(decoder, optimizer, scheduler)
    ema = EMA(decoder, config.ema_decay)
    checkpointer = Checkpointer(config, trained=decoder_module)
    resumed = checkpointer.resume(accelerator, ema)
    start = resumed["step"] if resumed else 0
    report = StepReport(config, accelerator, start)

    for step in range(start, config.max_steps):
        for generator, sync in micro_batches(config, step, accelerator, model):
            # data and the frozen one-step latents
            hq = sample_hq_batch(dataset, config.batch_size, generator).to(accelerator.device)
            lq = make_lq(hq, pipeline.scale, config.data.degradation, generator=generator)
            with torch.no_grad():
                lq_latent = pipeline.autoencoder.encode(to_model_range(upsample_lq(lq, pipeline.scale)))
                latent = pipeline.denoise_latents(lq_latent, num_steps=config.sample_steps, generator=generator)
            # decode with the trainable decoder and compare with the HR crop
            with sync, accelerator.autocast():
                prediction = (pipeline.autoencoder.decode(latent).float() + 1.0) / 2.0
                terms = image_loss(prediction, hq, config.loss)
                loss = terms["total"]
                if adversarial and step >= config.loss.adversarial_start_step:
                    discriminator.requires_grad_(False)  # the generator term must not train the discriminator
                    terms["generator"] = config.loss.adversarial * hinge_generator_loss(
                        discriminator(to_model_range(prediction)))
                    loss = loss + terms["generator"]
                accelerator.backward(loss / config.gradient_accumulation_steps)
            if adversarial:
                discriminator.requires_grad_(True)
                with accelerator.autocast():
                    d_loss = hinge_discriminator_loss(discriminator(to_model_range(hq)),
                                                      discriminator(to_model_range(prediction.detach())))
                accelerator.backward(d_loss / config.gradient_accumulation_steps)
                terms["discriminator"] = d_loss
        optimizer_step(accelerator, model, optimizer, scheduler, config)
        if adversarial:
            d_optimizer.step()
            d_optimizer.zero_grad(set_to_none=True)
        ema.update(decoder, step)
        finite_or_raise(loss, step)
        done = step + 1
        report.after_step(done, {k: float(v.detach()) for k, v in terms.items()}, scheduler.get_last_lr()[0])
        if checkpointer.due(done) or done == config.max_steps:
            checkpointer.save(accelerator, done, pipeline, ema)
    report.close()
    return checkpointer.latest
