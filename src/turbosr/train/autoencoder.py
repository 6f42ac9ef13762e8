"""Train the latent space (``turbosr train autoencoder``).

Two kinds behind one interface (see ``turbosr.models.autoencoders``):
- ``model.latent=patch``: PCA of f x f RGB patches of training crops (seconds), then, if
  ``model.refine_channels > 0``, the zero-initialised residual refiner of the decoder is trained on
  reconstructions (it starts as the exact linear inverse, so it can only improve on it).
- ``model.latent=kl``: a diffusers AutoencoderKL trained from scratch with L1 + SSIM + edge terms, a small KL term
  and an optional PatchGAN hinge term (as in Stable Diffusion's autoencoder, at CPU scale).
The result is an autoencoder folder (``checkpoint-latest/model``: ``config.json`` + ``autoencoder.safetensors``) that
``turbosr train teacher --set autoencoder_from=...`` reuses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from turbosr.config import ModelConfig, model_folders, to_dict
from turbosr.image import from_model_range, to_model_range
from turbosr.losses import image_loss
from turbosr.models.autoencoders import Autoencoder, KLAutoencoder, PatchAutoencoder, save_autoencoder
from turbosr.models.presets import build_autoencoder
from turbosr.run_config import AdversarialConfig, DataConfig, ImageLossConfig, OptimConfig, RunConfig
from turbosr.train.common import (
    LATEST,
    Cadence,
    average_gradients,
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
from turbosr.train.critic import Critic
from turbosr.train.initial import fit_patch_autoencoder, setup_generator
from turbosr.train.reporting import StepReport

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AutoencoderConfig:
    """``turbosr train autoencoder``: fit (patch PCA) or train (KL, patch refiner) the latent space."""

    model: ModelConfig = field(default_factory=ModelConfig)  # latent, latent_factor/channels, kl_channels, refine
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    loss: ImageLossConfig = field(default_factory=ImageLossConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    pca_images: int = 256  # patch latent: training crops its PCA is fitted on


def trainable_part(autoencoder: Autoencoder) -> nn.Module | None:
    """What gradient steps train: the patch refiner, the whole KL autoencoder, or nothing (plain PCA)."""
    if isinstance(autoencoder, PatchAutoencoder):
        return autoencoder.refiner
    assert isinstance(autoencoder, KLAutoencoder)
    return autoencoder.vae


def reconstruct(autoencoder: Autoencoder, hq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """HQ (B, 3, H, W) [0, 1] -> (reconstruction in [0, 1], unclamped; KL divergence term, a scalar)."""
    images = to_model_range(hq)
    if isinstance(autoencoder, KLAutoencoder):
        posterior = autoencoder.vae.encode(images).latent_dist
        decoded = autoencoder.vae.decode(posterior.sample()).sample
        return (decoded + 1.0) / 2.0, posterior.kl().mean() / images[0].numel()
    return (autoencoder.decode(autoencoder.encode(images)) + 1.0) / 2.0, torch.zeros((), device=hq.device)


def reconstruction_psnr(autoencoder: Autoencoder, hq: torch.Tensor) -> float:
    """Mean RGB PSNR (dB) of encode -> decode on ``hq`` crops, reconstructions clamped and quantised to 8 bits."""
    with torch.no_grad():
        output = from_model_range(autoencoder.decode(autoencoder.encode(to_model_range(hq))))
    error = ((output * 255).round() / 255 - hq).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return float((10 * torch.log10(1.0 / error)).mean())


def train(config: AutoencoderConfig) -> Path:
    """Fit/train the latent space; returns the checkpoint folder (``model/`` is the autoencoder folder)."""
    run = config.run
    accelerator = make_accelerator(run)
    check_starts(run.output_dir, model_folders(config), accelerator.is_main_process, run)
    dataset = load_dataset(config.data, config.model.scale)
    with torch.random.fork_rng(devices=[]):  # diffusers initialises from the global RNG: seed it from ours
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=setup_generator(run.seed, "weights"))))
        autoencoder = build_autoencoder(config.model)
    generator = setup_generator(run.seed, "latent")
    if isinstance(autoencoder, PatchAutoencoder):
        fit_patch_autoencoder(autoencoder, dataset, config.pca_images, generator)
    trained = trainable_part(autoencoder)
    if trained is None or run.max_steps == 0:  # plain PCA: nothing to train, save the fit with its quality
        autoencoder.requires_grad_(False)
        psnr = reconstruction_psnr(autoencoder, dataset.sample(run.batch_size, generator))
        return save_checkpoint(accelerator, run.output_dir, 0, None, to_dict(config), lambda folder: save_autoencoder(
            folder, autoencoder, {"train_crop_psnr": psnr}))
    autoencoder.to(accelerator.device)
    critic = Critic(config.adversarial, accelerator)
    # (the network runs inside reconstruct(): of the speed options only the memory format applies)
    model, _, optimizer, scheduler, ema, start = prepare(accelerator, trained, config.optim, run)
    report = StepReport(run, accelerator, start)
    cadence = Cadence(run)

    for step in range(start, run.max_steps):
        for generator, sync in micro_batches(run.seed, step, run.gradient_accumulation_steps, accelerator, model):
            hq = hq_batch(dataset, run.batch_size, generator, accelerator.device)
            # reconstruct; image terms (+ KL) (+ the critic's generator term)
            with sync, accelerator.autocast():
                prediction, kl = reconstruct(autoencoder, hq)
                terms = image_loss(prediction, hq, config.loss)
                loss = terms["total"] + config.loss.kl * kl
                loss = critic.add_generator_loss(loss, terms, prediction, step)
                accelerator.backward(loss / run.gradient_accumulation_steps)
            critic.discriminator_step(hq, prediction, terms)
        # update, average, log, checkpoint (the averaged autoencoder); stop when the time budget is spent
        average_gradients(accelerator, trained)  # it ran outside its DDP wrapper
        optimizer_step(accelerator, model, optimizer, scheduler, config.optim.grad_clip)
        ema.update(trained, step)
        report.after_step(step + 1, {k: v.detach() for k, v in terms.items()}, scheduler.get_last_lr()[0])
        if cadence.checkpoint_due(step + 1):
            averaged = averaged_copy(autoencoder, ema, trainable_part)
            save_checkpoint(accelerator, run.output_dir, step + 1, ema, to_dict(config),
                            lambda folder, averaged=averaged: save_autoencoder(folder, averaged))
        if cadence.out_of_time():
            break
    report.close()
    return Path(run.output_dir) / LATEST
