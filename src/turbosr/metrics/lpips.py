"""LPIPS (Zhang et al. 2018) without torchvision: AlexNet / VGG16 feature extractors built in plain torch with
the torchvision layer layout, so the published weights load into them from LOCAL files only.

Expected files in the folder given by ``TURBOSR_LPIPS_WEIGHTS`` (or the ``weights_dir`` argument), each as
``.safetensors`` or a ``.pth`` (read with ``torch.load(weights_only=True)``):

- ``alexnet`` / ``vgg16``: the torchvision ImageNet backbone state dict (keys ``features.N.weight``/``bias``);
- ``lpips_alex`` / ``lpips_vgg``: the LPIPS v0.1 linear heads (keys ``linK.model.1.weight``, shape (1, C, 1, 1)).

Nothing is downloaded; a missing file raises an error naming the files expected.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

ENV_VAR = "TURBOSR_LPIPS_WEIGHTS"
# layer layouts of torchvision's alexnet().features and vgg16().features; "M" = max-pool
LAYOUTS: dict[str, list] = {
    "alex": [(3, 64, 11, 4, 2), "R", "M", (64, 192, 5, 1, 2), "R", "M", (192, 384, 3, 1, 1), "R",
             (384, 256, 3, 1, 1), "R", (256, 256, 3, 1, 1), "R"],
    "vgg": [(3, 64, 3, 1, 1), "R", (64, 64, 3, 1, 1), "R", "M", (64, 128, 3, 1, 1), "R", (128, 128, 3, 1, 1), "R",
            "M", (128, 256, 3, 1, 1), "R", (256, 256, 3, 1, 1), "R", (256, 256, 3, 1, 1), "R", "M",
            (256, 512, 3, 1, 1), "R", (512, 512, 3, 1, 1), "R", (512, 512, 3, 1, 1), "R", "M",
            (512, 512, 3, 1, 1), "R", (512, 512, 3, 1, 1), "R", (512, 512, 3, 1, 1), "R"],
}
TAPS = {"alex": (1, 4, 7, 9, 11), "vgg": (3, 8, 15, 22, 29)}  # indices of the ReLUs LPIPS compares
FILES = {"alex": ("alexnet", "lpips_alex"), "vgg": ("vgg16", "lpips_vgg")}
# LPIPS's input scaling layer (on inputs in [-1, 1])
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


class Backbone(nn.Module):
    """``features`` with torchvision's indices, returning the activations at the LPIPS taps."""

    def __init__(self, net: str) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for item in LAYOUTS[net]:
            if item == "R":
                layers.append(nn.ReLU(inplace=False))
            elif item == "M":
                layers.append(nn.MaxPool2d(3, 2) if net == "alex" else nn.MaxPool2d(2, 2))
            else:
                layers.append(nn.Conv2d(item[0], item[1], item[2], item[3], item[4]))
        self.features = nn.Sequential(*layers)
        self.taps = TAPS[net]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.taps:
                outputs.append(x)
        return outputs


class LPIPS(nn.Module):
    """LPIPS distance between (B, 3, H, W) images in [0, 1]; returns (B,). Lower = more similar."""

    def __init__(self, net: str = "alex") -> None:
        super().__init__()
        if net not in LAYOUTS:
            raise ValueError(f"LPIPS net must be 'alex' or 'vgg', got {net!r}")
        self.backbone = Backbone(net)
        widths = [m.out_channels for m in self.backbone.features if isinstance(m, nn.Conv2d)]
        tap_widths = [widths[sum(1 for i in range(t) if isinstance(self.backbone.features[i], nn.Conv2d)) - 1]
                      for t in TAPS[net]]
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in tap_widths)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))

    def forward(self, prediction: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        def features(x: torch.Tensor) -> list[torch.Tensor]:
            return self.backbone(((x * 2 - 1) - self.shift) / self.scale)

        total = prediction.new_zeros(prediction.shape[0])
        for head, a, b in zip(self.heads, features(prediction), features(reference), strict=True):
            a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + head((a - b) ** 2).mean(dim=(1, 2, 3))
        return total


def _read(folder: Path, stem: str) -> dict[str, torch.Tensor]:
    if (folder / f"{stem}.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(str(folder / f"{stem}.safetensors"))
    if (folder / f"{stem}.pth").is_file():
        return torch.load(folder / f"{stem}.pth", map_location="cpu", weights_only=True)
    raise FileNotFoundError(stem)


def load_lpips(net: str = "alex", weights_dir: str | Path | None = None) -> LPIPS:
    """LPIPS with weights from local files (see the module docstring for the expected names)."""
    backbone_stem, head_stem = FILES[net]
    folder = Path(weights_dir or os.environ.get(ENV_VAR, ""))
    try:
        if not str(weights_dir or os.environ.get(ENV_VAR, "")):
            raise FileNotFoundError(backbone_stem)
        backbone_state = _read(folder, backbone_stem)
        head_state = _read(folder, head_stem)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"LPIPS-{net} needs local weights: set {ENV_VAR} to a folder holding {backbone_stem}.safetensors|.pth "
            f"(torchvision ImageNet backbone) and {head_stem}.safetensors|.pth (LPIPS v0.1 linear heads)"
        ) from None
    model = LPIPS(net)
    model.backbone.load_state_dict({k: v for k, v in backbone_state.items() if k.startswith("features.")})
    heads = {f"{i}.weight": head_state[f"lin{i}.model.1.weight"] for i in range(len(model.heads))}
    model.heads.load_state_dict(heads)
    return model.eval()


def lpips(prediction: torch.Tensor, reference: torch.Tensor, net: str = "alex") -> torch.Tensor:
    """LPIPS per image (B,) with the locally stored weights."""
    model = _cached(net)
    with torch.inference_mode():
        return model(prediction.float(), reference.float()).double()


_MODELS: dict[str, LPIPS] = {}


def _cached(net: str) -> LPIPS:
    if net not in _MODELS:
        _MODELS[net] = load_lpips(net)
    return _MODELS[net]


