"""The adversarial term of image-space training (autoencoder, decoder fine-tuning, one-step realism training).

One :class:`Critic` holds the discriminator and its optimizer; the method's loop calls
:meth:`Critic.add_generator_loss` inside its generator forward pass and :meth:`Critic.discriminator_step` after its
backward pass. ``adversarial.critic`` picks the discriminator:

- ``patchgan``: a small PatchGAN on the image (Isola et al. 2017), unconditioned;
- ``inception``: trainable projection heads on a frozen InceptionV3's mid-level features, conditioned on the LQ
  image (models/discriminator.py): a critic that knows what photos look like, as ADD/AddSR use DINO;
- ``teacher``: heads on a frozen diffusion UNet's encoder features of the noised latent (LADD), conditioned on
  the LQ latent: the UNet the run starts from, frozen (AddSR's discriminator, for image outputs).

Hinge losses (losses.py), DiffAugment on what the critic sees (translation + cutout, the same draw for real and
fake), and ``feature_matching``: an L1 between the frozen Inception features of output and HR (a perceptual term,
with any critic or none).

The same class scores **latents** for AddSR (adversarial distillation trains a latent-space student and never
decodes for its losses), given a :class:`LatentSpace`: ``teacher`` scores the noised x0 of an HQ latent through the
frozen *teacher's* encoder features (LADD), conditioned on the LQ latent; ``patchgan`` scores the decoded image
beside the bicubic LQ (6 channels). There, real and fake get their own augmentation and timestep draws, as AddSR
trains (``latent_generator_loss``, ``latent_discriminator_step``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from turbosr.diffusion import add_noise
from turbosr.image import to_model_range
from turbosr.losses import hinge_discriminator_loss, hinge_generator_loss
from turbosr.models.discriminator import (
    FeatureDiscriminator,
    InceptionDiscriminator,
    PatchDiscriminator,
    diff_augment,
)
from turbosr.run_config import AdversarialConfig


@dataclass(frozen=True)
class LatentSpace:
    """What a latent-space critic scores with (AddSR): the frozen teacher (its encoder features), the student's
    denoiser (its x0 convention), the shared frozen autoencoder, the scale, the schedule."""

    teacher: Any
    student: Any
    autoencoder: Any
    scale: int
    alpha_bar: torch.Tensor
    num_train_timesteps: int


class Critic:
    """The discriminator of ``adversarial.critic`` trained with the hinge loss; inert when ``weight`` and
    ``feature_matching`` are both 0. ``pipeline`` (the model being trained) is needed by the teacher critic: its
    denoiser is copied and frozen, its latent space encodes what the critic scores. With ``latent`` the critic
    scores HQ latents instead (AddSR; see the module docstring)."""

    def __init__(self, adversarial: AdversarialConfig, accelerator: Any, pipeline: Any = None,
                 latent: LatentSpace | None = None) -> None:
        self.config = adversarial
        self.accelerator = accelerator
        self.enabled = adversarial.weight > 0
        self.pipeline = pipeline
        self.latent = latent
        self.features: InceptionDiscriminator | None = None
        if latent is None and (adversarial.feature_matching > 0 or (adversarial.critic == "inception" and self.enabled)):
            self.features = InceptionDiscriminator(adversarial.discriminator_channels).to(accelerator.device)
        if not self.enabled:
            return
        if latent is not None:
            if adversarial.critic == "teacher":
                discriminator: torch.nn.Module = FeatureDiscriminator(
                    latent.teacher, latent.autoencoder.latent_channels, adversarial.discriminator_channels)
            elif adversarial.critic == "patchgan":
                discriminator = PatchDiscriminator(adversarial.discriminator_channels, in_channels=6)
            else:
                raise ValueError(f"a latent-space critic is teacher or patchgan, got {adversarial.critic!r}")
        elif adversarial.critic == "patchgan":
            discriminator = PatchDiscriminator(adversarial.discriminator_channels)
        elif adversarial.critic == "inception":
            assert self.features is not None
            discriminator = self.features
        else:
            if pipeline is None:
                raise ValueError("the teacher critic needs the model being trained (its UNet, frozen)")
            self.teacher = copy.deepcopy(pipeline.denoiser).requires_grad_(False).eval()
            discriminator = FeatureDiscriminator(self.teacher, pipeline.config.latent_channels,
                                                 adversarial.discriminator_channels)
        optimizer = torch.optim.AdamW([p for p in discriminator.parameters() if p.requires_grad],
                                      lr=adversarial.discriminator_learning_rate, betas=(0.5, 0.999))
        self.discriminator, self.optimizer = accelerator.prepare(discriminator.to(accelerator.device), optimizer)

    def _score(self, images: torch.Tensor, lq: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Logits for [0, 1] images (augmented with ``generator``: pass the same draw for real and fake)."""
        seen = to_model_range(images)
        if self.config.diffaugment:
            seen = diff_augment(seen, generator)
        if self.config.critic == "patchgan":
            return self.discriminator(seen)
        if self.config.critic == "inception":
            return self.discriminator(seen, to_model_range(lq))
        from turbosr.train.initial import lq_condition

        autoencoder, denoiser = self.pipeline.autoencoder, self.teacher
        lq_latent = lq_condition(autoencoder, lq, self.pipeline.scale)
        x0 = denoiser.to_x0(autoencoder.encode(seen), lq_latent)
        t = torch.randint(0, self.pipeline.config.schedule.num_train_timesteps, (len(images),),
                          generator=generator).to(images.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0)
        return self.discriminator(add_noise(x0, noise, t, self.pipeline.alpha_bar.to(x0.device)), lq_latent, t)

    def add_generator_loss(self, loss: torch.Tensor, terms: dict[str, torch.Tensor], prediction: torch.Tensor,
                           step: int, hq: torch.Tensor | None = None, lq: torch.Tensor | None = None,
                           generator: torch.Generator | None = None) -> torch.Tensor:
        """``loss`` plus the weighted generator term (after ``start_step``; "generator" in ``terms``) and the
        feature-matching term against ``hq`` ("feature_matching")."""
        if self.features is not None and self.config.feature_matching > 0 and hq is not None:
            fake = self.features.features(to_model_range(prediction))
            with torch.no_grad():
                real = self.features.features(to_model_range(hq))
            matching = sum((f - r).abs().mean() for f, r in zip(fake, real, strict=True)) / len(real)
            terms["feature_matching"] = self.config.feature_matching * matching
            loss = loss + terms["feature_matching"]
        if not self.enabled or step < self.config.start_step:
            return loss
        self.discriminator.requires_grad_(False)  # this term must not train the discriminator
        logits = self._score(prediction, lq if lq is not None else prediction, generator)
        terms["generator"] = self.config.weight * hinge_generator_loss(logits)
        return loss + terms["generator"]

    def discriminator_step(self, real: torch.Tensor, fake: torch.Tensor, terms: dict[str, torch.Tensor] | None = None,
                           lq: torch.Tensor | None = None, generator: torch.Generator | None = None
                           ) -> torch.Tensor | None:
        """One hinge-loss update of the discriminator on real vs (detached) fake [0, 1] images, both augmented
        with one draw; returns its loss (also "discriminator" in ``terms``)."""
        if not self.enabled:
            return None
        for parameter in self.discriminator.parameters():
            parameter.requires_grad_(True)
        if self.features is not None:
            for parameter in self.features.backbone[0].parameters():
                parameter.requires_grad_(False)
        state = generator.get_state() if generator is not None else None
        condition = lq if lq is not None else real
        with self.accelerator.autocast():
            real_logits = self._score(real, condition, generator)
            if state is not None:
                generator.set_state(state)  # the fake sees the same augmentation and timestep draws
            loss = hinge_discriminator_loss(real_logits, self._score(fake.detach(), condition, generator))
        self.accelerator.backward(loss)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if terms is not None:
            terms["discriminator"] = loss.detach()
        return loss.detach()

    # ---------------------------------------------------------------------------------------- latent space (AddSR)
    def _score_latent(self, hq_latent: torch.Tensor, lq: torch.Tensor, lq_latent: torch.Tensor,
                      generator: torch.Generator | None) -> torch.Tensor:
        """Logits for HQ latents (real: the HR latent; fake: the student's)."""
        from turbosr.degradations import upsample_lq

        space, augment = self.latent, self.config.diffaugment
        assert space is not None
        if self.config.critic == "patchgan":
            images = torch.cat([space.autoencoder.decode(hq_latent), to_model_range(upsample_lq(lq, space.scale))], 1)
            return self.discriminator(diff_augment(images, generator) if augment else images)
        x0 = space.student.to_x0(hq_latent, lq_latent)
        x0 = diff_augment(x0, generator) if augment else x0
        t = torch.randint(space.num_train_timesteps, (len(x0),), generator=generator).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        return self.discriminator(add_noise(x0, noise, t, space.alpha_bar), lq_latent, t)

    def latent_generator_loss(self, hq_latent: torch.Tensor, lq: torch.Tensor, lq_latent: torch.Tensor,
                              generator: torch.Generator | None) -> torch.Tensor:
        """The (unweighted) hinge generator term of the student's HQ latent; the discriminator is not trained
        by it."""
        self.discriminator.requires_grad_(False)
        return hinge_generator_loss(self._score_latent(hq_latent, lq, lq_latent, generator))

    def latent_discriminator_step(self, real: torch.Tensor, fake: torch.Tensor, lq: torch.Tensor,
                                  lq_latent: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """One hinge-loss update of the discriminator on real vs (detached) fake HQ latents; returns its loss."""
        self.discriminator.requires_grad_(True)
        with self.accelerator.autocast():
            loss = hinge_discriminator_loss(self._score_latent(real, lq, lq_latent, generator),
                                            self._score_latent(fake.detach(), lq, lq_latent, generator))
        self.accelerator.backward(loss)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()
