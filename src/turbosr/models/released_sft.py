"""StableSR's released conditioning (Wang et al. 2023, arXiv 2305.07015, sec. 3.1), in the release's key layout.

Two pieces, written here from the paper and the layout of the released checkpoints (key names and shapes are the
file format; no reference code is copied):

- :class:`StructureEncoder`: the **time-aware encoder**, an LDM-style UNet encoder half (ResNets that see the
  timestep embedding, attention at the configured resolutions and in the middle) on the LQ latent. The input of
  every downsampler and the middle block's output each pass through one more time-conditioned ResNet (a "feature
  transform") to ``out_channels``; the result is one feature map per latent resolution.
- :class:`SpadeConditioner`: one spatial feature transform per ResNet of a diffusers UNet (StableSR: all of
  them, 22 for SD-2). Each takes the ResNet's residual branch h (the output of its second convolution, before the
  skip addition), normalises it with a GroupNorm of its own (affine, 32 groups), and modulates it with the
  encoder feature of the same spatial size f: ``GN(h) * (1 + gamma(f)) + beta(f)``, where gamma and beta are 3x3
  convolutions of a shared 3x3 convolution + ReLU of f (Park et al. 2019's SPADE form, Wang et al. 2018's SFT).
  The layers act through forward hooks on the ResNets' ``conv2``: the diffusers UNet is unchanged, and with no
  features set it computes exactly the bare prior.

The UNet then sees only the 4-channel x_t: the LQ image reaches it through these layers alone (the folder's
conditioning mode "sft", :class:`~turbosr.models.denoiser.Denoiser`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding (Vaswani et al. 2017; DDPM's form): [cos(t w_i), sin(t w_i)], w_i = 10000^(-i/half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(embedding, (0, 1)) if dim % 2 else embedding


def group_norm(channels: int) -> nn.GroupNorm:
    """The LDM normalisation: 32 groups, affine, computed in float32 whatever the input dtype (see forward)."""
    return _Float32GroupNorm(32, channels)


class _Float32GroupNorm(nn.GroupNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).to(x.dtype)


class TimeResBlock(nn.Module):
    """Residual block with an additive timestep embedding: ``skip(x) + out(in(x) + emb)`` (DDPM's ResNet)."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int | None = None) -> None:
        super().__init__()
        out_channels = out_channels or channels
        self.in_layers = nn.Sequential(group_norm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(group_norm(out_channels), nn.SiLU(), nn.Dropout(0.0),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x) + self.emb_layers(emb).to(x.dtype)[..., None, None]
        return self.skip_connection(x) + self.out_layers(h)


class SelfAttention(nn.Module):
    """Spatial self-attention with a residual (the LDM encoder's block): 1x1 qkv, heads split before q/k/v
    ("legacy" channel order: each head's q, k, v are adjacent), 1x1 output projection."""

    def __init__(self, channels: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        flat = x.reshape(batch, channels, -1)
        qkv = self.qkv(self.norm(flat))
        head = channels // self.num_heads
        q, k, v = qkv.reshape(batch * self.num_heads, 3 * head, -1).split(head, dim=1)
        attended = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        out = self.proj_out(attended.transpose(1, 2).reshape(batch, channels, -1))
        return (flat + out).reshape(batch, channels, height, width)


class _Step(nn.ModuleList):
    """One entry of ``input_blocks``/``middle_block``: modules applied in order, ResNets with the embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for module in self:
            x = module(x, emb) if isinstance(module, TimeResBlock) else module(x)
        return x


class _Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


ENCODER_KEYS = ("in_channels", "model_channels", "out_channels", "num_res_blocks", "attention_resolutions",
                "channel_mult", "num_heads", "num_head_channels")


class StructureEncoder(nn.Module):
    """StableSR's time-aware encoder: LQ latent (B, C, h, w) and t -> {(h_i, w_i): (B, out_channels, h_i, w_i)},
    one feature per resolution (the input of each downsampler, then the middle block's output)."""

    def __init__(self, in_channels: int, model_channels: int, out_channels: int, num_res_blocks: int,
                 attention_resolutions: list[int], channel_mult: list[int], num_heads: int = 1,
                 num_head_channels: int = -1) -> None:
        super().__init__()
        self.settings = {"in_channels": in_channels, "model_channels": model_channels, "out_channels": out_channels,
                         "num_res_blocks": num_res_blocks, "attention_resolutions": list(attention_resolutions),
                         "channel_mult": list(channel_mult), "num_heads": num_heads,
                         "num_head_channels": num_head_channels}
        self.model_channels = model_channels
        emb = 4 * model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb), nn.SiLU(), nn.Linear(emb, emb))

        def heads(channels: int) -> int:
            return num_heads if num_head_channels == -1 else channels // num_head_channels

        self.input_blocks = nn.ModuleList([_Step([nn.Conv2d(in_channels, model_channels, 3, padding=1)])])
        feature_channels = []
        channels, scale = model_channels, 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [TimeResBlock(channels, emb, mult * model_channels)]
                channels = mult * model_channels
                if scale in attention_resolutions:
                    layers.append(SelfAttention(channels, heads(channels)))
                self.input_blocks.append(_Step(layers))
            if level + 1 < len(channel_mult):
                self.input_blocks.append(_Step([_Downsample(channels)]))
                feature_channels.append(channels)
                scale *= 2
        self.middle_block = _Step([TimeResBlock(channels, emb), SelfAttention(channels, heads(channels)),
                                   TimeResBlock(channels, emb)])
        feature_channels.append(channels)
        self.fea_tran = nn.ModuleList(TimeResBlock(c, emb, out_channels) for c in feature_channels)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> dict[tuple[int, int], torch.Tensor]:
        t = t.to(x.device).reshape(-1).expand(x.shape[0]) if t.numel() == 1 else t.to(x.device)
        emb = self.time_embed(timestep_embedding(t, self.model_channels).to(x.dtype))
        features = []
        h = x
        for block in self.input_blocks:
            if isinstance(block[0], _Downsample):
                features.append(h)
            h = block(h, emb)
        features.append(self.middle_block(h, emb))
        return {tuple(f.shape[-2:]): tran(f, emb) for f, tran in zip(features, self.fea_tran, strict=True)}


class SpadeLayer(nn.Module):
    """``GN(h) * (1 + gamma(f)) + beta(f)`` for one ResNet's residual branch h and the feature f of its size."""

    def __init__(self, channels: int, feature_channels: int, hidden: int = 128) -> None:
        super().__init__()
        self.param_free_norm = group_norm(channels)
        self.mlp_shared = nn.Sequential(nn.Conv2d(feature_channels, hidden, 3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, h: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        shared = self.mlp_shared(feature.to(h.dtype))
        return self.param_free_norm(h) * (1 + self.mlp_gamma(shared)) + self.mlp_beta(shared)


def unet_resnets(unet: nn.Module) -> list[tuple[str, nn.Module]]:
    """A diffusers UNet's ResNets in LDM order with their diffusers names: down blocks, mid block, up blocks."""
    named = []
    for i, block in enumerate(unet.down_blocks):
        named += [(f"down_blocks.{i}.resnets.{j}", r) for j, r in enumerate(block.resnets)]
    named += [(f"mid_block.resnets.{j}", r) for j, r in enumerate(unet.mid_block.resnets)]
    for i, block in enumerate(unet.up_blocks):
        named += [(f"up_blocks.{i}.resnets.{j}", r) for j, r in enumerate(block.resnets)]
    return named


class SpadeConditioner(nn.Module):
    """The structure encoder and one :class:`SpadeLayer` per ResNet of ``unet`` (hooked on its ``conv2``).

    Parameters: ``encoder.*`` (the release's ``structcond_stage_model.*``) and ``layers.<diffusers resnet name
    with dots as underscores>.*`` (its ``model.diffusion_model.<site>.spade.*``)."""

    def __init__(self, unet: nn.Module, encoder: dict[str, Any], hidden: int = 128) -> None:
        super().__init__()
        unknown = sorted(set(encoder) - set(ENCODER_KEYS))
        if unknown:
            raise ValueError(f"unknown structure encoder setting(s) {', '.join(unknown)}")
        self.encoder = StructureEncoder(**encoder)
        self.hidden = hidden
        self.layers = nn.ModuleDict()
        self._features: dict[tuple[int, int], torch.Tensor] | None = None
        for name, resnet in unet_resnets(unet):
            layer = SpadeLayer(resnet.out_channels, encoder["out_channels"], hidden)
            self.layers[name.replace(".", "_")] = layer
            resnet.conv2.register_forward_hook(self._hook(layer))

    def config(self) -> dict[str, Any]:
        return {"encoder": dict(self.encoder.settings), "hidden": self.hidden}

    def _hook(self, layer: SpadeLayer) -> Any:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
            if self._features is None:
                return output
            feature = self._features.get(tuple(output.shape[-2:]))
            if feature is None:
                raise ValueError(f"no structure feature of size {tuple(output.shape[-2:])} for a UNet map "
                                 f"(the latent's sides must be multiples of the UNet's downsampling)")
            return layer(output, feature)

        return hook

    def set(self, lq_latent: torch.Tensor | None, t: torch.Tensor | None = None) -> None:
        """Compute the encoder's features of ``lq_latent`` at ``t`` for the next UNet call (None: the bare prior)."""
        self._features = None if lq_latent is None else self.encoder(lq_latent, t)
