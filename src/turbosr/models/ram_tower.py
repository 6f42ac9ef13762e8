"""The image tower of AddSR's and SeeSR's releases: RAM's Swin Transformer encoder and its projection to image
tokens (Zhang et al. 2023, "Recognize Anything"; Liu et al. 2021, "Swin Transformer"), written here from the Swin
paper and the released key layout (``visual_encoder.*``, ``image_proj.*`` of ``ram_swin_large_14m.pth``).

Swin: a 4x4 patch embedding (convolution + LayerNorm), stages of blocks that attend within ``window`` x ``window``
windows with a learned relative-position bias (every second block on windows shifted by half a window, with the
cross-boundary pairs masked), a 2x2 patch merging (LayerNorm + linear, no bias) between stages, and a final
LayerNorm. The tokens are the mean of the final tokens followed by the tokens in row-major order, (B, 1 + N, C),
projected to (B, 1 + N, 512). SeeSR's DAPE (a LoRA on the q and v rows of every block's qkv) is merged into the
weights at import (:func:`merge_dape`).

The tower takes the control image in [0, 1], resizes it to its input size (bilinear for the first step's image,
bicubic for the self-refinement blends, as the released pipelines do; align_corners false, no antialiasing) and
normalises it with the ImageNet statistics.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * H/w * W/w, w * w, C), windows in row-major order."""
    batch, height, width, channels = x.shape
    x = x.view(batch, height // window, window, width // window, window, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, channels)


def window_reverse(windows: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: -> (B, H, W, C)."""
    channels = windows.shape[-1]
    x = windows.view(-1, height // window, width // window, window, window, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, channels)


def relative_position_index(window: int) -> torch.Tensor:
    """(w*w, w*w) index into the (2w - 1)^2 bias table of each pair of positions of a window."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return relative[..., 0] * (2 * window - 1) + relative[..., 1]


def shift_mask(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """(windows, w*w, w*w) additive mask (0 or -100) keeping attention inside each region of a shifted window."""
    regions = torch.zeros(1, height, width, 1)
    label = 0
    for rows in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for cols in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            regions[:, rows, cols, :] = label
            label += 1
    windows = window_partition(regions, window).squeeze(-1)
    differ = windows[:, None, :] - windows[:, :, None]
    return torch.where(differ != 0, torch.tensor(-100.0), torch.tensor(0.0))


class WindowAttention(nn.Module):
    def __init__(self, dim: int, window: int, heads: int) -> None:
        super().__init__()
        self.heads, self.window = heads, window
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        windows, tokens, dim = x.shape
        q, k, v = self.qkv(x).reshape(windows, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(tokens, tokens, -1).permute(2, 0, 1).unsqueeze(0).to(x.dtype)  # (1, heads, N, N)
        if mask is not None:  # (nW, N, N): windows are grouped per image, nW each
            count = mask.shape[0]
            bias = (bias.unsqueeze(0) + mask.to(x.dtype)[None, :, None]).expand(
                windows // count, -1, -1, -1, -1).reshape(windows, self.heads, tokens, tokens)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(windows, tokens, dim))


class SwinBlock(nn.Module):
    def __init__(self, dim: int, resolution: int, heads: int, window: int, shift: int, mlp_ratio: float) -> None:
        super().__init__()
        if resolution <= window:  # one window covers the map: no shift (Swin's rule)
            window, shift = resolution, 0
        self.resolution, self.window, self.shift = resolution, window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential()
        self.mlp.add_module("fc1", nn.Linear(dim, int(dim * mlp_ratio)))
        self.mlp.add_module("act", nn.GELU())
        self.mlp.add_module("fc2", nn.Linear(int(dim * mlp_ratio), dim))
        mask = shift_mask(resolution, resolution, window, shift) if shift else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        size = self.resolution
        h = self.norm1(x).view(batch, size, size, dim)
        if self.shift:
            h = torch.roll(h, shifts=(-self.shift, -self.shift), dims=(1, 2))
        h = window_reverse(self.attn(window_partition(h, self.window), self.attn_mask), self.window, size, size)
        if self.shift:
            h = torch.roll(h, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + h.reshape(batch, length, dim)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, dim: int, resolution: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, dim = x.shape
        x = x.view(batch, self.resolution, self.resolution, dim)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.view(batch, -1, 4 * dim)))


class _Stage(nn.Module):
    def __init__(self, dim: int, resolution: int, depth: int, heads: int, window: int, mlp_ratio: float,
                 merge: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(SwinBlock(dim, resolution, heads, window, window // 2 if i % 2 else 0, mlp_ratio)
                                    for i in range(depth))
        self.downsample = PatchMerging(dim, resolution) if merge else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x) if self.downsample is not None else x


class _PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class SwinEncoder(nn.Module):
    """(B, 3, S, S) normalised -> (B, 1 + (S / 32)^2, C): the mean token, then every final token."""

    def __init__(self, image_size: int, patch_size: int, embed_dim: int, depths: list[int], num_heads: list[int],
                 window_size: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.patch_embed = _PatchEmbed(patch_size, embed_dim)
        resolution = image_size // patch_size
        self.layers = nn.ModuleList()
        for index, (depth, heads) in enumerate(zip(depths, num_heads, strict=True)):
            last = index + 1 == len(depths)
            self.layers.append(_Stage(embed_dim * 2**index, resolution, depth, heads, window_size, mlp_ratio,
                                      not last))
            resolution //= 1 if last else 2
        self.norm = nn.LayerNorm(embed_dim * 2 ** (len(depths) - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x)
        return torch.cat([x.mean(1, keepdim=True), x], dim=1)


TOWER_KEYS = ("image_size", "patch_size", "embed_dim", "depths", "num_heads", "window_size", "embed_width")


class RamTower(nn.Module):
    """Control image (B, 3, H, W) in [0, 1] -> RAM image tokens (B, 1 + N, embed_width)."""

    def __init__(self, image_size: int = 384, patch_size: int = 4, embed_dim: int = 192,
                 depths: list[int] | tuple[int, ...] = (2, 2, 18, 2), num_heads: list[int] | tuple[int, ...] = (6, 12, 24, 48),
                 window_size: int = 12, embed_width: int = 512) -> None:
        super().__init__()
        self.settings = {"image_size": image_size, "patch_size": patch_size, "embed_dim": embed_dim,
                         "depths": list(depths), "num_heads": list(num_heads), "window_size": window_size,
                         "embed_width": embed_width}
        self.image_size = image_size
        self.visual_encoder = SwinEncoder(image_size, patch_size, embed_dim, list(depths), list(num_heads), window_size)
        self.image_proj = nn.Linear(embed_dim * 2 ** (len(depths) - 1), embed_width)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)

    def config(self) -> dict[str, Any]:
        return {"kind": "ram", **self.settings}

    def preprocess(self, image: torch.Tensor, first: bool) -> torch.Tensor:
        """[0, 1] image -> the tower's normalised square input (bilinear for the first step, else bicubic)."""
        size = (self.image_size, self.image_size)
        resized = F.interpolate(image, size=size, mode="bilinear" if first else "bicubic", align_corners=False)
        return (resized - self.mean.to(image.dtype)) / self.std.to(image.dtype)

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Normalised input (B, 3, S, S) -> image tokens (RAM's ``generate_image_embeds``)."""
        return self.image_proj(self.visual_encoder(pixel_values))

    def forward(self, image: torch.Tensor, first: bool = True) -> torch.Tensor:
        return self.embed(self.preprocess(image, first))


def tower_settings(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """RamTower settings read off a RAM state dict (``visual_encoder.*`` and ``image_proj.*`` keys)."""
    embed_dim, _, patch, _ = state["visual_encoder.patch_embed.proj.weight"].shape
    stages = sorted({int(k.split(".")[2]) for k in state if k.startswith("visual_encoder.layers.")})
    depths, heads = [], []
    for stage in stages:
        blocks = {int(k.split(".")[4]) for k in state if k.startswith(f"visual_encoder.layers.{stage}.blocks.")}
        depths.append(len(blocks))
        heads.append(int(state[f"visual_encoder.layers.{stage}.blocks.0.attn.relative_position_bias_table"].shape[1]))
    table = int(state["visual_encoder.layers.0.blocks.0.attn.relative_position_bias_table"].shape[0])
    window = (round(table**0.5) + 1) // 2
    mask = state.get("visual_encoder.layers.0.blocks.1.attn_mask")
    # the first stage's shifted-window mask counts its windows: resolution = window * sqrt(count)
    image_size = window * round(mask.shape[0] ** 0.5) * int(patch) if mask is not None else 384
    return {"image_size": image_size, "patch_size": int(patch), "embed_dim": int(embed_dim), "depths": depths,
            "num_heads": heads, "window_size": window, "embed_width": int(state["image_proj.weight"].shape[0])}


def merge_dape(tower: RamTower, dape: dict[str, torch.Tensor], alpha: float = 1.0) -> int:
    """Merge SeeSR's DAPE LoRA into the tower's Swin qkv weights: loralib's MergedLinear with the q and v rows
    adapted (``lora_A`` (2r, dim), ``lora_B`` (2 dim, r)), scale alpha / r. Returns the number of layers merged;
    keys outside the visual encoder (the tagging head's, the text BERTs') are left to their own users."""
    merged = 0
    for key, a in dape.items():
        if not (key.startswith("visual_encoder.") and key.endswith(".qkv.lora_A")):
            continue
        b = dape.get(key[: -len("lora_A")] + "lora_B")
        if b is None:
            raise ValueError(f"DAPE has {key} without its lora_B")
        layer = tower.get_submodule(key[: -len(".lora_A")])
        dim = layer.in_features
        rank = a.shape[0] // 2
        if a.shape != (2 * rank, dim) or b.shape != (2 * dim, rank) or layer.out_features != 3 * dim:
            raise ValueError(f"DAPE's {key} ({tuple(a.shape)}, {tuple(b.shape)}) does not fit a {dim}-wide qkv")
        scale = alpha / rank
        with torch.no_grad():
            q = b[:dim].double() @ a[:rank].double()
            v = b[dim:].double() @ a[rank:].double()
            weight = layer.weight.double()
            weight[:dim] += scale * q
            weight[2 * dim:] += scale * v
            layer.weight.copy_(weight.to(layer.weight.dtype))
        merged += 1
    return merged
