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
from turbosr.losses import image_loss
from turbosr.models.autoencoders import KLAutoencoder, PatchAutoencoder
from turbosr.pipeline import SRPipeline
from turbosr.train.common import (
    Validator,
    load_dataset,
    make_accelerator,
    micro_batches,
    sample_hq_batch,
    start_run,
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
    run = start_run(config, accelerator, decoder, trained_part=decoder_module, adversarial=True)
    validator = Validator(config, accelerator)

    for step in range(run.start, config.max_steps):
        for generator, sync in micro_batches(config, step, accelerator, run.model):
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
                loss = run.adversary.add_generator_term(terms["total"], terms, prediction, step)
                accelerator.backward(loss / config.gradient_accumulation_steps)
            d_loss = run.adversary.discriminator_backward(hq, prediction)
            if d_loss is not None:
                terms["discriminator"] = d_loss
        run.end_step(step, loss, terms, pipeline, validator)
    run.report.close()
    return run.checkpointer.latest
