"""Discriminators for the adversarial losses (hinge losses in ``turbosr.losses``), and DiffAugment.

- :class:`PatchDiscriminator`: a small PatchGAN (Isola et al. 2017) with spectral normalisation on images in
  [-1, 1]; a logit per receptive-field patch.
- :class:`FeatureDiscriminator`: trainable heads on a frozen diffusion UNet's encoder features of noised latents
  (latent adversarial distillation), conditioned on the LQ latent: AddSR's default here.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import spectral_norm

from turbosr.models.control import down_half, embed_timesteps
from turbosr.models.denoiser import Denoiser


class PatchDiscriminator(nn.Module):
    """PatchGAN: ``in_channels`` 3 for an image, 6 for an image with its bicubic LQ beside it (conditioned)."""

    def __init__(self, channels: int = 32, layers: int = 3, in_channels: int = 3) -> None:
        super().__init__()
        blocks: list[nn.Module] = [spectral_norm(nn.Conv2d(in_channels, channels, 4, 2, 1)), nn.LeakyReLU(0.2)]
        width = channels
        for _ in range(layers - 1):
            blocks += [spectral_norm(nn.Conv2d(width, width * 2, 4, 2, 1)), nn.LeakyReLU(0.2)]
            width *= 2
        blocks.append(spectral_norm(nn.Conv2d(width, 1, 3, 1, 1)))
        self.net = nn.Sequential(*blocks)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


def diff_augment(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """DiffAugment's translation and cutout (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient
    GAN Training"), per sample: a shift of up to 1/8 of the size with zero fill, then one zeroed square of half
    the size. Differentiable in ``images``; the random choices come from ``generator`` (CPU)."""
    batch, _, height, width = images.shape
    shift = torch.randint(-(height // 8), height // 8 + 1, (batch, 2), generator=generator)
    pad = max(1, height // 8, width // 8)
    padded = nn.functional.pad(images, (pad, pad, pad, pad))
    rows = (torch.arange(height)[None, :] + pad - shift[:, :1]).to(images.device)  # (B, H)
    cols = (torch.arange(width)[None, :] + pad - shift[:, 1:]).to(images.device)  # (B, W)
    index = torch.arange(batch, device=images.device)[:, None, None]
    moved = padded.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    size_h, size_w = height // 2, width // 2
    top = torch.randint(0, height - size_h + 1, (batch,), generator=generator)
    left = torch.randint(0, width - size_w + 1, (batch,), generator=generator)
    y = torch.arange(height)[None, :, None]
    x = torch.arange(width)[None, None, :]
    keep = ~(((y >= top[:, None, None]) & (y < top[:, None, None] + size_h))
             & ((x >= left[:, None, None]) & (x < left[:, None, None] + size_w)))
    return moved * keep[:, None].to(images.device, images.dtype)


class FeatureDiscriminator(nn.Module):
    """Latent adversarial discriminator (LADD, Sauer et al. 2024): a frozen diffusion UNet's encoder features of
    a noised latent, scored by small trainable heads, one per feature level, each conditioned on a global
    embedding of the LQ latent (as AddSR conditions its heads on the LQ image's DINO class token; global, so
    DiffAugment's shifts of the scored latent cannot be matched against it). Only the heads and the embedding
    train; the teacher's denoiser (its UNet and, for a cross-attention UNet, its prompt embedding) is used, not
    owned."""

    def __init__(self, teacher: Denoiser, latent_channels: int, width: int = 64, embedding: int = 32) -> None:
        super().__init__()
        self.teacher = [teacher]  # a list: not registered as a submodule, so neither saved nor trained here
        widths = teacher.unet.config.block_out_channels
        levels = [*widths, widths[-1]]
        self.embed = nn.Sequential(nn.Conv2d(latent_channels, embedding, 3, padding=1), nn.SiLU(),
                                   nn.Conv2d(embedding, embedding, 3, padding=1))
        self.heads = nn.ModuleList(
            nn.Sequential(spectral_norm(nn.Conv2d(channels + embedding, width, 3, padding=1)), nn.LeakyReLU(0.2),
                          spectral_norm(nn.Conv2d(width, 1, 1))) for channels in levels)

    def forward(self, noisy_x0: torch.Tensor, lq_latent: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Logits (B, N) over all heads' positions for the noised diffusion variable of a latent."""
        teacher = self.teacher[0]
        inputs = torch.cat([noisy_x0, lq_latent], dim=1)
        emb = embed_timesteps(teacher.unet, t, inputs)
        _, features = down_half(teacher.unet, teacher.unet.conv_in(inputs), emb, teacher.context(inputs))
        embedding = self.embed(lq_latent.to(noisy_x0.dtype)).mean(dim=(-2, -1), keepdim=True)
        logits = []
        for head, feature in zip(self.heads, features, strict=True):
            condition = embedding.expand(-1, -1, *feature.shape[-2:])
            logits.append(head(torch.cat([feature, condition.to(feature.dtype)], dim=1)).flatten(1))
        return torch.cat(logits, dim=1)
