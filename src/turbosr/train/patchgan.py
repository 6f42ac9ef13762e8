"""The optional PatchGAN hinge term of image-space training (autoencoder, decoder fine-tuning).

One object holds the discriminator and its optimizer; the method's loop calls :meth:`PatchGAN.generator_loss`
inside its generator forward pass and :meth:`PatchGAN.discriminator_step` after its backward pass.
"""

from __future__ import annotations

from typing import Any

import torch

from turbosr.config import AdversarialConfig
from turbosr.image import to_model_range
from turbosr.losses import hinge_discriminator_loss, hinge_generator_loss
from turbosr.models.discriminator import PatchDiscriminator


class PatchGAN:
    """A PatchGAN discriminator (Isola et al. 2017) trained with the hinge loss; inert when ``weight`` is 0."""

    def __init__(self, adversarial: AdversarialConfig, accelerator: Any) -> None:
        self.config = adversarial
        self.accelerator = accelerator
        self.enabled = adversarial.weight > 0
        if self.enabled:
            discriminator = PatchDiscriminator(adversarial.discriminator_channels).to(accelerator.device)
            optimizer = torch.optim.AdamW(discriminator.parameters(), lr=adversarial.discriminator_learning_rate,
                                          betas=(0.5, 0.999))
            self.discriminator, self.optimizer = accelerator.prepare(discriminator, optimizer)

    def generator_loss(self, prediction: torch.Tensor, step: int) -> torch.Tensor | None:
        """Weighted generator term on a [0, 1] prediction (None when off or before ``start_step``)."""
        if not self.enabled or step < self.config.start_step:
            return None
        self.discriminator.requires_grad_(False)  # this term must not train the discriminator
        return self.config.weight * hinge_generator_loss(self.discriminator(to_model_range(prediction)))

    def add_generator_loss(self, loss: torch.Tensor, terms: dict[str, torch.Tensor], prediction: torch.Tensor,
                           step: int) -> torch.Tensor:
        """``loss`` plus the generator term when it is on (recorded in ``terms`` as "generator")."""
        term = self.generator_loss(prediction, step)
        if term is None:
            return loss
        terms["generator"] = term
        return loss + term

    def discriminator_step(self, real: torch.Tensor, fake: torch.Tensor,
                           terms: dict[str, torch.Tensor] | None = None) -> torch.Tensor | None:
        """One hinge-loss update of the discriminator on real vs (detached) fake images; returns its loss (also
        recorded in ``terms`` as "discriminator")."""
        if not self.enabled:
            return None
        self.discriminator.requires_grad_(True)
        with self.accelerator.autocast():
            loss = hinge_discriminator_loss(self.discriminator(to_model_range(real)),
                                            self.discriminator(to_model_range(fake.detach())))
        self.accelerator.backward(loss)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if terms is not None:
            terms["discriminator"] = loss.detach()
        return loss.detach()
