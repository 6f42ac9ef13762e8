"""Building the networks: presets, latent spaces, the conditioned denoiser."""

from turbosr.config import MODEL_PRESETS, model_config
from turbosr.models.autoencoders import Autoencoder, KLAutoencoder, PatchAutoencoder, autoencoder_from_config
from turbosr.models.denoiser import Denoiser
from turbosr.models.presets import build_model, build_unet

__all__ = [
    "MODEL_PRESETS", "Autoencoder", "Denoiser", "KLAutoencoder", "PatchAutoencoder", "autoencoder_from_config",
    "build_model", "build_unet", "model_config",
]
