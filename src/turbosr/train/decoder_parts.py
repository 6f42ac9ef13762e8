"""What decoder fine-tuning and one-step generator training share: the shape of a new learned latent decoder,
the module a run trains, and giving a model that module (train/decoder.py, train/one_step.py)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from turbosr.config import ModelConfig
from turbosr.losses import image_loss
from turbosr.models.autoencoders import KLAutoencoder, PatchAutoencoder
from turbosr.pipeline import SRPipeline
from turbosr.run_config import ImageLossConfig

logger = logging.getLogger(__name__)

DECODER_KINDS = ("learned", "refiner")


@dataclass(frozen=True)
class DecoderShape:
    """Shape of a new learned decoder (models/decoders.py). When the model already has one it is kept; only a
    missing CFW branch is added (``cfw_channels``)."""

    channels: tuple[int, ...] = (128,)  # trunk widths, at 1x, 2x, ... the latent resolution
    blocks: tuple[int, ...] = (4,)  # residual blocks per trunk stage
    head_channels: tuple[int, ...] = ()  # light x2 upsamplings after the trunk (to_rgb covers the rest)
    cfw_channels: tuple[int, ...] = (64,)  # StableSR CFW: LQ encoder widths at the first stages (empty: none)

    def as_dict(self) -> dict[str, object]:
        return {"kind": "conv", **{k: list(v) for k, v in dataclasses.asdict(self).items()}}


class DecoderOptions(Protocol):
    """The fields of a method config that say which decoder a run trains."""

    init_from: str
    model: ModelConfig
    decoder_kind: str
    decoder_shape: DecoderShape


def decoder_module(pipeline: SRPipeline) -> nn.Module:
    """The part of the latent space that decoder fine-tuning trains."""
    autoencoder = pipeline.autoencoder
    if isinstance(autoencoder, PatchAutoencoder):
        if autoencoder.decoder is not None:
            return autoencoder.decoder
        if autoencoder.refiner is None:
            raise ValueError("this patch autoencoder has no decoder to fine-tune (see with_trainable_decoder)")
        return autoencoder.refiner
    assert isinstance(autoencoder, KLAutoencoder)
    return nn.ModuleList([autoencoder.vae.decoder, autoencoder.vae.post_quant_conv])


def with_trainable_decoder(pipeline: SRPipeline, config: DecoderOptions) -> SRPipeline:
    """Give a patch-latent pipeline the decoder this run trains, zero-initialised (a learned decoder, or an RGB
    refiner of ``model.refine_channels``); a KL latent, or a model that already has that kind, is kept."""
    autoencoder = pipeline.autoencoder
    if not isinstance(autoencoder, PatchAutoencoder):
        return pipeline
    if config.decoder_kind == "learned":
        if autoencoder.decoder is not None:
            if autoencoder.has_cfw or not config.decoder_shape.cfw_channels:
                return pipeline
            return pipeline.replace(autoencoder=autoencoder.with_cfw(config.decoder_shape.cfw_channels))
        if autoencoder.refiner is not None:
            logger.warning("%s: its RGB refiner is replaced by a new learned decoder", config.init_from)
        return pipeline.replace(autoencoder=autoencoder.with_decoder(config.decoder_shape.as_dict()),
                                config=dataclasses.replace(pipeline.config, refine_channels=0))
    if autoencoder.refiner is not None:
        return pipeline
    if config.model.refine_channels <= 0:
        raise ValueError("decoder fine-tuning with a refiner needs model.refine_channels > 0 (e.g. 32)")
    refined = PatchAutoencoder(autoencoder.factor, autoencoder.latent_channels, config.model.refine_channels)
    refined.load_state_dict(autoencoder.without_refiner().state_dict(), strict=False)
    return pipeline.replace(autoencoder=refined,
                            config=dataclasses.replace(pipeline.config, refine_channels=config.model.refine_channels))


def cfw_backward(pipeline: SRPipeline, decoder: nn.Module, latent: torch.Tensor, lq_latent: torch.Tensor,
                 hq: torch.Tensor, loss: ImageLossConfig, accelerator: Any, accumulation: int) -> torch.Tensor:
    """StableSR's CFW step (arXiv 2305.07015, sec. 3.3): decode ``latent`` (detached) at w = 1 and back-propagate
    ``loss`` against the HR crop into the CFW branch only, the decoder's trunk held fixed (the trunk is what w = 0
    means). Returns the loss."""
    trunk = [p for p in decoder.trunk_parameters() if p.requires_grad]
    for parameter in trunk:
        parameter.requires_grad_(False)
    try:
        with accelerator.autocast():
            faithful = (pipeline.autoencoder.decode(latent.detach().float(), lq_latent, 1.0).float() + 1) / 2
            terms = image_loss(faithful, hq, loss)
            accelerator.backward(terms["total"] / accumulation)
    finally:
        for parameter in trunk:
            parameter.requires_grad_(True)
    return terms["total"]
