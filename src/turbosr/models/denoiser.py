"""The SR denoiser: a diffusers UNet that sees ``concat(noisy x_t, latent of the bicubic-upsampled LQ)``.

This is the YONOS-SR / SD-upscaler conditioning: the LQ image is upsampled to the output size, encoded by the
same autoencoder as the target, and concatenated channel-wise to the noisy latent. The denoiser also owns the
definition of the diffusion variable x0 (see :meth:`Denoiser.to_x0`): the HQ latent itself or the normalised
residual between the HQ latent and the LQ latent.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Denoiser(nn.Module):
    """Wraps a ``UNet2DModel`` or ``UNet2DConditionModel`` (with a stored, fixed prompt embedding).

    Buffers: ``residual_scale`` (C,) per-channel std of HQ-minus-LQ latents (residual target only) and
    ``prompt_embedding`` (1, tokens, dim) for cross-attention UNets (so inference needs no text encoder).
    """

    def __init__(self, unet: nn.Module, latent_channels: int, target: str,
                 prompt_embedding: torch.Tensor | None = None, control: bool = False, sft: bool = False,
                 sft_time_aware: bool = True, sft_down: bool = True, conditioning: str = "concat",
                 structure: dict[str, Any] | None = None, controlnet: dict[str, Any] | None = None,
                 tower: nn.Module | None = None, negative_embedding: torch.Tensor | None = None) -> None:
        super().__init__()
        self.conditioning = conditioning
        self.unet = unet
        self.latent_channels = latent_channels
        self.target = target
        self.register_buffer("residual_scale", torch.ones(latent_channels))
        self.cross_attention = hasattr(unet.config, "cross_attention_dim")
        if self.cross_attention:
            if prompt_embedding is None:
                dim = unet.config.cross_attention_dim
                prompt_embedding = torch.zeros(1, 8, dim if isinstance(dim, int) else dim[0])
            self.register_buffer("prompt_embedding", prompt_embedding.clone())
        # classifier-free guidance's unconditional branch: the release's negative prompt, embedded once (SeeSR)
        if negative_embedding is not None and (not self.cross_attention
                                               or negative_embedding.shape != self.prompt_embedding.shape):
            raise ValueError("a negative prompt embedding needs a cross-attention UNet and the prompt's shape")
        self.register_buffer("negative_embedding", None if negative_embedding is None else negative_embedding.clone())
        # AddSR student: a ControlNet-style branch that also sees a control condition (see models/control.py)
        self.control = None
        if control:
            self.add_control()
        # StableSR: SFT modulation of the (frozen) UNet by a time-aware encoder of the LQ latent
        self.sft = None
        if sft:
            self.add_sft(sft_time_aware, sft_down)
        # StableSR's released conditioning: the UNet sees x_t alone; a structure encoder's features of the LQ
        # latent modulate every ResNet through SPADE-form SFT layers (conditioning "sft")
        if conditioning == "sft":
            if structure is None:
                raise ValueError("conditioning 'sft' needs the structure encoder's settings")
            from turbosr.models.released_sft import SpadeConditioner

            self.sft = SpadeConditioner(unet, structure["encoder"], structure.get("hidden", 128))
        elif structure is not None:
            raise ValueError("a structure encoder is only used with conditioning 'sft'")
        # AddSR's and SeeSR's releases: a stock ControlNet on the control image (pixels, [0, 1]) and image
        # cross-attention in both networks to the tower's tokens of that image (conditioning "controlnet")
        self.released_control = None
        if conditioning == "controlnet":
            if controlnet is None:
                raise ValueError("conditioning 'controlnet' needs the ControlNet's config")
            from turbosr.models.released_control import ControlNetConditioning

            self.released_control = ControlNetConditioning(unet, controlnet, tower)

    def add_sft(self, time_aware: bool = True, down: bool = True) -> None:
        """Attach a zero-initialised SFT conditioner (the UNet's outputs stay exactly the same)."""
        from turbosr.models.stablesr import SFTConditioner

        if self.sft is None:
            self.sft = SFTConditioner(self.unet, self.latent_channels, time_aware=time_aware, down=down).to(
                self.residual_scale.device)

    def add_control(self) -> None:
        """Give this denoiser a zero-initialised control branch (its outputs stay exactly the same)."""
        from turbosr.models.control import ControlBranch

        if self.control is None:
            self.control = ControlBranch(self.unet, self.latent_channels).to(self.residual_scale.device)

    def context(self, like: torch.Tensor) -> torch.Tensor | None:
        """The UNet's cross-attention states for a batch like ``like`` (the stored prompt embedding), or None
        for a UNet without cross-attention."""
        if not self.cross_attention:
            return None
        return self.prompt_embedding.to(like.dtype).expand(like.shape[0], -1, -1)

    def forward(self, x_t: torch.Tensor, condition: torch.Tensor, t: torch.Tensor | int,
                control_condition: torch.Tensor | None = None, first_step: bool = True, *,
                context: torch.Tensor | None = None, guidance: float = 1.0,
                tokens: torch.Tensor | None = None) -> torch.Tensor:
        """x_t, condition: (B, C, h, w); t: int or (B,) -> network output (B, C, h, w).

        ``condition`` is the LQ latent (YONOS-SR conditioning, concatenated to x_t). A denoiser with a control
        branch also takes ``control_condition`` (AddSR: the LQ latent, or the previous step's prediction under
        self-refinement); None means the LQ latent. Under conditioning "controlnet" ``control_condition`` is the
        control image (B, 3, H, W) in [0, 1] at the output size (required), ``first_step`` says whether it is
        the first step's (the release makes the first step's image tokens from a differently resized input) and
        ``tokens``, if given, are its image tokens already computed. ``context`` (B, tokens, dim) replaces the
        stored prompt embedding (a per-image prompt, e.g. from RAM tags); ``guidance`` > 1 runs the networks on
        the stored negative prompt too, as one batch, and returns ``uncond + guidance * (cond - uncond)``
        (classifier-free guidance, Ho & Salimans 2022).
        """
        if not torch.is_tensor(t):
            t = torch.full((x_t.shape[0],), int(t), device=x_t.device, dtype=torch.long)
        context = self.context(x_t) if context is None else context.to(x_t.dtype)
        if guidance == 1.0:
            return self._forward(x_t, condition, t, control_condition, first_step, context, tokens)
        if self.negative_embedding is None or context is None:
            raise ValueError("classifier-free guidance needs a model with a negative prompt embedding")
        negative = self.negative_embedding.to(x_t.dtype).expand(x_t.shape[0], -1, -1)

        def twice(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else torch.cat([x, x])

        if self.released_control is not None and tokens is None and control_condition is not None:
            tokens = self.released_control.tokens(control_condition.to(x_t.dtype), first_step)
        output = self._forward(torch.cat([x_t, x_t]), torch.cat([condition, condition]), torch.cat([t, t]),
                               twice(control_condition), first_step, torch.cat([negative, context]), twice(tokens))
        uncond, cond = output.chunk(2)
        return uncond + guidance * (cond - uncond)

    def _forward(self, x_t: torch.Tensor, condition: torch.Tensor, t: torch.Tensor,
                 control_condition: torch.Tensor | None, first_step: bool, context: torch.Tensor | None,
                 tokens: torch.Tensor | None) -> torch.Tensor:
        # "sft" and "direct" UNets see x_t alone (the LQ latent reaches an "sft" UNet through its SFT layers, and
        # is a "direct" UNet's starting x_t)
        inputs = torch.cat([x_t, condition.to(x_t.dtype)], dim=1) if self.conditioning == "concat" else x_t
        if self.released_control is not None:
            if control_condition is None:
                raise ValueError("a ControlNet model needs the control image")
            return self.released_control(self.unet, x_t, t, context, control_condition, first_step, tokens)
        if self.sft is not None:
            self.sft.set(condition.to(x_t.dtype), t)
            try:
                return self._unet(inputs, t, context, condition, control_condition)
            finally:
                self.sft.set(None)
        return self._unet(inputs, t, context, condition, control_condition)

    def _unet(self, inputs: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None, condition: torch.Tensor,
              control_condition: torch.Tensor | None) -> torch.Tensor:
        if self.control is not None:
            from turbosr.models.control import unet_with_residuals

            control = condition if control_condition is None else control_condition
            down, mid = self.control(inputs, control, t, context)
            return unet_with_residuals(self.unet, inputs, t, context, down, mid)
        if context is not None:
            return self.unet(inputs, t, encoder_hidden_states=context).sample
        return self.unet(inputs, t).sample

    def _scale(self, like: torch.Tensor) -> torch.Tensor:
        return self.residual_scale.to(like.device, like.dtype).view(1, -1, 1, 1)

    def to_x0(self, hq_latent: torch.Tensor, lq_latent: torch.Tensor) -> torch.Tensor:
        """HQ latent -> diffusion variable x0 (the residual target anchors on the LQ latent)."""
        if self.target == "residual":
            return (hq_latent - lq_latent) / self._scale(hq_latent)
        return hq_latent

    def from_x0(self, x0: torch.Tensor, lq_latent: torch.Tensor) -> torch.Tensor:
        """Diffusion variable x0 -> HQ latent estimate (inverse of :meth:`to_x0`)."""
        if self.target == "residual":
            return lq_latent + x0 * self._scale(x0)
        return x0
