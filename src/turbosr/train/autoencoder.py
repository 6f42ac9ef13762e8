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
from pathlib import Path

import torch
from torch import nn

from turbosr.config import TrainConfig
from turbosr.image import from_model_range, to_model_range
from turbosr.losses import image_loss
from turbosr.models.autoencoders import Autoencoder, KLAutoencoder, PatchAutoencoder
from turbosr.models.presets import build_autoencoder
from turbosr.train.common import (
    Checkpointer,
    fit_patch_autoencoder,
    load_dataset,
    make_accelerator,
    micro_batches,
    sample_hq_batch,
    save_autoencoder,
    start_run,
)

logger = logging.getLogger(__name__)


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


def train(config: TrainConfig) -> Path:
    """Fit/train the latent space; returns the checkpoint folder (``model/`` is the autoencoder folder)."""
    accelerator = make_accelerator(config)
    torch.manual_seed(config.seed)
    dataset = load_dataset(config)
    autoencoder = build_autoencoder(config.model)
    checkpointer = Checkpointer(config)
    if isinstance(autoencoder, PatchAutoencoder):
        fit_patch_autoencoder(autoencoder, dataset, config.pca_images, config.seed)
    trained = trainable_part(autoencoder)
    if trained is None or config.max_steps == 0:
        autoencoder.requires_grad_(False)
        held = sample_hq_batch(dataset, config.batch_size, torch.Generator().manual_seed(config.seed + 11))
        psnr = reconstruction_psnr(autoencoder, held)
        return checkpointer.save(accelerator, 0, None, None, {"train_crop_psnr": psnr},
                                 write_model=lambda folder: save_autoencoder(folder, autoencoder))
    autoencoder.to(accelerator.device)
    run = start_run(config, accelerator, trained, adversarial=True)

    def write_model(folder: Path) -> None:
        import copy

        averaged = copy.deepcopy(autoencoder).to("cpu", torch.float32)
        run.ema.copy_to(trainable_part(averaged))
        save_autoencoder(folder, averaged)

    for step in range(run.start, config.max_steps):
        for generator, sync in micro_batches(config, step, accelerator, run.model):
            hq = sample_hq_batch(dataset, config.batch_size, generator).to(accelerator.device)
            with sync, accelerator.autocast():
                prediction, kl = reconstruct(autoencoder, hq)
                terms = image_loss(prediction, hq, config.loss)
                loss = run.adversary.add_generator_term(terms["total"] + config.loss.kl * kl, terms, prediction, step)
                accelerator.backward(loss / config.gradient_accumulation_steps)
            d_loss = run.adversary.discriminator_backward(hq, prediction)
            if d_loss is not None:
                terms["discriminator"] = d_loss
        run.end_step(step, loss, terms, None, write_model=write_model)
    run.report.close()
    return run.checkpointer.latest
