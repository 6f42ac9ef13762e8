"""Merging LoRA adapters (Hu et al. 2021, "LoRA: Low-Rank Adaptation") into plain weights, as peft applies them.

An adapted layer computes ``W x + (alpha / r) * B(A(x))``. For a linear layer A is (r, in) and B (out, r); for a
convolution A is a (r, in, kh, kw) convolution and B a (out, r, 1, 1) one, so B(A(x)) is the convolution with the
kernel ``B[:, :, 0, 0] @ A`` (per kernel position). Merging adds ``(alpha / r)`` times that product to W once, at
import: neither peft nor the adapters are needed at run time, and the network is the plain one.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from turbosr.importers.safe_load import ImportFailed


def lora_groups(state: dict[str, torch.Tensor]) -> dict[tuple[str, str], dict[str, torch.Tensor]]:
    """``<module>.lora_A.<adapter>.weight`` / ``lora_B`` keys -> {(module, adapter): {"A": ..., "B": ...}}."""
    groups: dict[tuple[str, str], dict[str, torch.Tensor]] = defaultdict(dict)
    for key, value in state.items():
        for part in ("A", "B"):
            marker = f".lora_{part}."
            if marker in key and key.endswith(".weight"):
                module, rest = key.split(marker)
                groups[(module, rest[: -len(".weight")])][part] = value
    return dict(groups)


def lora_delta(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The weight change ``B A`` of one adapter (before the alpha / r scale)."""
    if a.dim() == 2 and b.dim() == 2:
        return b.double() @ a.double()
    if a.dim() == 4 and b.dim() == 4 and b.shape[-2:] == (1, 1):
        return torch.einsum("or,rikl->oikl", b[:, :, 0, 0].double(), a.double())
    raise ImportFailed(f"LoRA factors of shapes {tuple(a.shape)} and {tuple(b.shape)} are neither linear nor conv")


def merge_lora(network: nn.Module, state: dict[str, torch.Tensor], rank: int, alpha: float, what: str,
               prefix: str = "") -> int:
    """Add every adapter in ``state`` (keys relative to ``network``, after removing ``prefix``) into its layer's
    weight with scale alpha / rank. Returns the number of adapters merged; ImportFailed on a mismatch."""
    groups = lora_groups({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    scale = alpha / rank
    for (module_name, adapter), factors in sorted(groups.items()):
        if set(factors) != {"A", "B"}:
            raise ImportFailed(f"{what}: adapter {adapter} of {module_name} lacks its lora_A or lora_B")
        try:
            layer = network.get_submodule(module_name)
        except AttributeError:
            raise ImportFailed(f"{what}: LoRA for {module_name}, which the base model does not have") from None
        if not isinstance(layer, nn.Linear | nn.Conv2d):
            raise ImportFailed(f"{what}: LoRA for {module_name}, a {type(layer).__name__} (not linear or conv)")
        a, b = factors["A"], factors["B"]
        if a.shape[0] != rank or b.shape[1] != rank:
            raise ImportFailed(f"{what}: LoRA of {module_name} has rank {a.shape[0]}, the file says {rank}")
        delta = lora_delta(a, b)
        if delta.shape != layer.weight.shape:
            raise ImportFailed(f"{what}: LoRA of {module_name} makes a {tuple(delta.shape)} change for a "
                               f"{tuple(layer.weight.shape)} weight (the base model does not fit)")
        with torch.no_grad():
            layer.weight.copy_((layer.weight.double() + scale * delta).to(layer.weight.dtype))
    return len(groups)
