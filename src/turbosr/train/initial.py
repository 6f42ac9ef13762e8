"""Where a training run's model starts: loaded weights, or a fresh model whose latent space is fitted and whose
residual target is normalised on the run's own data.

Training set-up, so it lives in ``train/`` (it builds pipelines: the import direction is config <- models <-
pipeline <- train).
"""

from __future__ import annotations

import dataclasses
import logging

import torch
from torch import nn

from turbosr.config import ModelConfig
from turbosr.data import HRFolderDataset, make_lq
from turbosr.degradations import RealESRGANConfig, upsample_lq
from turbosr.image import to_model_range
from turbosr.models.autoencoders import Autoencoder, PatchAutoencoder, load_autoencoder
from turbosr.models.presets import build_model, describe_loaded
from turbosr.pipeline import SRPipeline

logger = logging.getLogger(__name__)


SETUP_PURPOSES = {"weights": 1, "latent": 2, "residual": 3}


def setup_generator(seed: int, purpose: str) -> torch.Generator:
    """The generator of one kind of set-up draw of a run ("weights", "latent" or "residual"): each kind has its
    own stream, so e.g. a warm-started run measures its residual scale on the same batches as a fresh one."""
    return torch.Generator().manual_seed(seed * 1_000_003 + 999_983 * SETUP_PURPOSES[purpose])


def stored_as(pipeline: SRPipeline, storage: str) -> SRPipeline:
    """``pipeline`` as it reads back from a folder written with ``storage`` (float32: itself): what a model that
    ships compactly (the built-ins' int8 UNet) really computes, for training the parts that follow it."""
    if storage == "float32":
        return pipeline
    import tempfile

    with tempfile.TemporaryDirectory(prefix="turbosr-stored-") as folder:
        pipeline.save_pretrained(folder, storage=storage)
        return SRPipeline.from_pretrained(folder)


def without_fidelity_warp(pipeline: SRPipeline, source: str, decoder_cfw: bool = True) -> SRPipeline:
    """``pipeline`` without its CFW modules (an image-level module, and with ``decoder_cfw`` the CFW branch of a
    learned decoder), for training that changes the model's outputs: they were trained to correct those outputs
    and must not ride along (train CFW again afterwards: `turbosr train decoder`, which trains the decoder's
    CFW itself and so keeps it, or `turbosr train stablesr` for older folders)."""
    autoencoder = pipeline.autoencoder
    strip_decoder = decoder_cfw and autoencoder.has_cfw
    if pipeline.fidelity_warp is None and not strip_decoder:
        return pipeline
    logger.warning("%s: its CFW modules are left out (trained for the outputs this run changes)", source)
    if strip_decoder and isinstance(autoencoder, PatchAutoencoder):
        autoencoder = autoencoder.without_cfw()
    return pipeline.replace(autoencoder=autoencoder, fidelity_warp=None)


def lq_condition(autoencoder: Autoencoder, lq: torch.Tensor, scale: int) -> torch.Tensor:
    """The denoiser's condition for LQ images (B, 3, h, w) in [0, 1]: the latent of their bicubic upsampling."""
    return autoencoder.encode(to_model_range(upsample_lq(lq, scale)))


def fit_patch_autoencoder(autoencoder: Autoencoder, dataset: HRFolderDataset, num_crops: int,
                          generator: torch.Generator) -> None:
    """PCA-fit a patch autoencoder on ``num_crops`` training crops drawn from ``generator`` (seconds on a CPU)."""
    crops = dataset.sample(num_crops, generator)
    explained = autoencoder.fit(to_model_range(crops), generator=generator)  # type: ignore[operator]
    logger.info("patch latent fitted on %d crops: %d components explain %.4f of the variance",
                num_crops, autoencoder.latent_channels, float(explained.sum()))


@torch.no_grad()
def measure_residual_scale(denoiser: nn.Module, autoencoder: Autoencoder, dataset: HRFolderDataset, scale: int,
                           degradation: str, realesrgan: RealESRGANConfig, batches: int, batch_size: int,
                           generator: torch.Generator) -> None:
    """Set ``denoiser.residual_scale`` to the per-channel std of HQ-minus-LQ latents of training pairs made with
    this run's scale and degradation (``batches`` batches drawn from ``generator``)."""
    residuals = []
    for _ in range(batches):
        hq = dataset.sample(batch_size, generator)
        lq = make_lq(hq, scale, degradation, generator=generator, realesrgan=realesrgan)
        difference = autoencoder.encode(to_model_range(hq)) - lq_condition(autoencoder, lq, scale)
        residuals.append(difference.transpose(0, 1).reshape(autoencoder.latent_channels, -1))
    std = torch.cat(residuals, dim=1).std(dim=1).clamp_min(1e-4)
    denoiser.residual_scale.copy_(std.to(denoiser.residual_scale))
    logger.info("residual std per channel: min %.4f, max %.4f", float(std.min()), float(std.max()))


def initial_pipeline(model: ModelConfig, dataset: HRFolderDataset, *, degradation: str,
                     realesrgan: RealESRGANConfig, seed: int, init_from: str | None = None,
                     autoencoder_from: str | None = None, refit_residual_scale: bool = False,
                     pca_images: int = 256, residual_scale_batches: int = 8, batch_size: int = 16) -> SRPipeline:
    """The model a run starts from.

    - ``init_from``: that folder's weights (a warm start: weights only; the run's optimizer is new), retargeted
      to ``model.scale``; with ``refit_residual_scale`` the residual std is measured again on this run's data.
    - else a fresh model from ``model`` (the ``sd`` preset loads its local folder): the latent space comes from
      ``autoencoder_from`` or is PCA-fitted on ``pca_images`` crops, and for the residual target the per-channel
      residual std is measured on ``residual_scale_batches`` batches.
    Set-up draws come from :func:`setup_generator` (``seed``); network initialisation uses the global RNG
    (diffusers draws from it) inside a forked RNG state seeded from the "weights" stream.
    """
    if init_from:
        loaded = without_fidelity_warp(SRPipeline.from_pretrained(init_from), init_from)
        pipeline = loaded.replace(config=dataclasses.replace(loaded.config, scale=model.scale))
        logger.info("initialised from %s (trained at x%d) for x%d", init_from, loaded.scale, pipeline.scale)
        if refit_residual_scale and pipeline.config.target == "residual":
            measure_residual_scale(pipeline.denoiser, pipeline.autoencoder, dataset, model.scale, degradation,
                                   realesrgan, residual_scale_batches, batch_size, setup_generator(seed, "residual"))
        return pipeline
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=setup_generator(seed, "weights"))))
        denoiser, autoencoder = build_model(model)
    if model.preset == "sd":
        model = describe_loaded(model, denoiser, autoencoder)
    if autoencoder_from:
        autoencoder = load_autoencoder(autoencoder_from)
    elif model.latent == "patch":
        fit_patch_autoencoder(autoencoder, dataset, pca_images, setup_generator(seed, "latent"))
    elif model.preset != "sd":
        raise ValueError("a KL latent must be trained first (turbosr train autoencoder) and given as autoencoder_from")
    if (autoencoder.factor, autoencoder.latent_channels) != (model.latent_factor, model.latent_channels):
        raise ValueError(f"the latent space has factor {autoencoder.factor} and {autoencoder.latent_channels} "
                         f"channels but model.latent_factor/latent_channels say {model.latent_factor}/"
                         f"{model.latent_channels}")
    if model.target == "residual":
        measure_residual_scale(denoiser, autoencoder, dataset, model.scale, degradation, realesrgan,
                               residual_scale_batches, batch_size, setup_generator(seed, "residual"))
    return SRPipeline(denoiser, autoencoder, model)
