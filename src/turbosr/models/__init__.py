"""Building the networks: presets, latent spaces, the conditioned denoiser."""

from turbosr.models.autoencoders import Autoencoder, KLAutoencoder, PatchAutoencoder, autoencoder_from_config
from turbosr.models.denoiser import Denoiser
from turbosr.models.presets import MODEL_PRESETS, build_model, build_unet, model_config

__all__ = [
    "MODEL_PRESETS", "Autoencoder", "Denoiser", "KLAutoencoder", "PatchAutoencoder", "autoencoder_from_config",
    "build_model", "build_unet", "model_config",
]
