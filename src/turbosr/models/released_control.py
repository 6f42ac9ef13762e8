"""AddSR's and SeeSR's released conditioning (Xie et al. 2024, arXiv 2404.01717; Wu et al. 2024, SeeSR): a stock
ControlNet (Zhang et al. 2023) on the LQ image in pixels, and **image cross-attention** in both the ControlNet
and the UNet.

Image cross-attention: after each text cross-attention transformer of a block (down, mid and up), a second
transformer of the same shape attends to *image tokens* (B, N, 512) from an image tower (RAM's Swin-L encoder and
projection, :mod:`turbosr.models.ram_tower`). It is added here by forward hooks on the text transformers, so the
diffusers UNet and ControlNet classes are used unmodified; with no tokens set they compute the stock networks.
Written from the released key layout (``*.image_attentions.*``) and the papers; no reference code is copied.

The denoiser's conditioning mode "controlnet": the UNet sees x_t alone; the control condition is an image in
[0, 1] at the output size (the upsampled LQ image, or AddSR's pixel-space self-refinement blend), from which the
tower makes the image tokens for both networks and the ControlNet its residuals.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

IMAGE_TOKEN_WIDTH = 512  # hard-coded in RAM (image_proj) and in the released networks


def text_transformers(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name of its image twin in the release's layout, transformer) for every text cross-attention transformer of
    a diffusers UNet or ControlNet, in forward order of the blocks."""
    found = []
    for i, block in enumerate(getattr(net, "down_blocks", [])):
        found += [(f"down_blocks.{i}.image_attentions.{j}", a) for j, a in enumerate(getattr(block, "attentions", []))]
    found += [(f"mid_block.image_attentions.{j}", a) for j, a in enumerate(getattr(net.mid_block, "attentions", []))]
    for i, block in enumerate(getattr(net, "up_blocks", [])):
        found += [(f"up_blocks.{i}.image_attentions.{j}", a) for j, a in enumerate(getattr(block, "attentions", []))]
    return found


class ImageCrossAttention(nn.Module):
    """One image transformer per text transformer of ``net``, applied to the text transformer's output.

    Parameters are named like the release (``down_blocks.0.image_attentions.0.*``) with dots as underscores."""

    def __init__(self, net: nn.Module, image_width: int = IMAGE_TOKEN_WIDTH) -> None:
        super().__init__()
        from diffusers.models.transformers.transformer_2d import Transformer2DModel

        self.blocks = nn.ModuleDict()
        self.tokens: torch.Tensor | None = None
        self._names: dict[str, str] = {}
        for name, text in text_transformers(net):
            self._names[name.replace(".", "_")] = name
            config = {k: v for k, v in dict(text.config).items() if not k.startswith("_")}
            image = Transformer2DModel(**{**config, "cross_attention_dim": image_width})
            self.blocks[name.replace(".", "_")] = image
            text.register_forward_hook(self._hook(image))

    def _hook(self, image: nn.Module) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Any) -> Any:
            if self.tokens is None:
                return output
            hidden = output[0] if isinstance(output, tuple) else output.sample
            tokens = self.tokens.to(hidden.dtype)
            hidden = image(hidden, encoder_hidden_states=tokens, return_dict=False)[0]
            if isinstance(output, tuple):
                return (hidden, *output[1:])
            output.sample = hidden
            return output

        return hook

    def release_names(self) -> dict[str, str]:
        """Our block key -> the release's module name (``down_blocks.0.image_attentions.0``)."""
        return dict(self._names)


class ControlNetConditioning(nn.Module):
    """The ControlNet (a diffusers ``ControlNetModel`` with image cross-attention), the UNet's image
    cross-attention, and the image tower that turns the control image into tokens for both."""

    def __init__(self, unet: nn.Module, controlnet_config: dict[str, Any], tower: nn.Module | None) -> None:
        super().__init__()
        from diffusers import ControlNetModel

        config = {k: v for k, v in controlnet_config.items() if not k.startswith("_")}
        config.pop("use_image_cross_attention", None)
        self.controlnet_config = config
        self.controlnet = ControlNetModel.from_config(config)
        self.unet_images = ImageCrossAttention(unet)
        self.control_images = ImageCrossAttention(self.controlnet)
        self.tower = tower

    def tokens(self, image: torch.Tensor, first: bool) -> torch.Tensor:
        """Image tokens (B, N, 512) of a control image (B, 3, H, W) in [0, 1]; ``first``: the first step's
        condition (the tower may resize it differently, as the release does)."""
        if self.tower is None:
            raise ValueError("this model has no image tower")
        return self.tower(image, first=first)

    def forward(self, unet: nn.Module, x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                control_image: torch.Tensor, first: bool, tokens: torch.Tensor | None = None) -> torch.Tensor:
        """The UNet's output for x_t with the ControlNet's residuals and image tokens of ``control_image``
        (``tokens`` if already computed)."""
        if tokens is None:
            tokens = self.tokens(control_image.to(x_t.dtype), first)
        self.unet_images.tokens = self.control_images.tokens = tokens
        try:
            down, mid = self.controlnet(x_t, t, encoder_hidden_states=context, controlnet_cond=control_image.to(
                x_t.dtype), return_dict=False)
            return unet(x_t, t, encoder_hidden_states=context, down_block_additional_residuals=down,
                        mid_block_additional_residual=mid).sample
        finally:
            self.unet_images.tokens = self.control_images.tokens = None
