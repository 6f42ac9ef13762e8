"""Degradation models in torch: MATLAB-compatible bicubic resize (the SR papers' "bicubic" setting) and the
Real-ESRGAN second-order blind degradation (blur, resize, noise, JPEG, twice, then a final sinc filter), used by
AddSR and StableSR.

All functions take (B, C, H, W) float tensors on any device and follow the input's device and dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


def cubic(x: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``), support [-2, 2]."""
    absx = x.abs()
    absx2, absx3 = absx**2, absx**3
    near = (a + 2) * absx3 - (a + 3) * absx2 + 1
    far = a * absx3 - 5 * a * absx2 + 8 * a * absx - 4 * a
    return torch.where(absx <= 1, near, torch.where(absx < 2, far, torch.zeros_like(x)))


def resize_weights(in_length: int, out_length: int, scale: float, antialias: bool = True
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """MATLAB ``imresize`` contributions along one axis: (indices, weights), each (out_length, taps).

    Output pixel x (1-based) maps to input coordinate u = x / scale + 0.5 * (1 - 1 / scale). When shrinking with
    antialiasing the kernel is stretched by 1 / scale (and scaled by ``scale``). Indices outside the input are
    mirrored symmetrically (edge pixel repeated), as MATLAB does. Weights in each row sum to 1.
    """
    kernel_width = 4.0
    stretch = scale < 1 and antialias
    if stretch:
        kernel_width /= scale
    x = torch.arange(1, out_length + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]
    distance = u[:, None] - indices
    weights = scale * cubic(distance * scale) if stretch else cubic(distance)
    weights = weights / weights.sum(dim=1, keepdim=True)
    # symmetric padding: ... 2 1 | 1 2 ... n | n n-1 ...
    mirror = torch.cat([torch.arange(in_length), torch.arange(in_length - 1, -1, -1)])
    zero_based = (indices - 1).long() % (2 * in_length)
    indices = mirror[zero_based]
    keep = weights.abs().sum(dim=0) > 0  # drop taps that are zero for every output pixel
    return indices[:, keep], weights[:, keep]


def _resize_axis(images: torch.Tensor, axis: int, out_length: int, scale: float, antialias: bool) -> torch.Tensor:
    in_length = images.shape[axis]
    indices, weights = resize_weights(in_length, out_length, scale, antialias)
    indices = indices.to(images.device)
    weights = weights.to(images.device, images.dtype)
    moved = images.movedim(axis, -1)  # (..., in_length)
    # accumulate tap by tap: gathering all taps at once would hold `taps` output-sized copies in memory
    result = moved[..., indices[:, 0]] * weights[:, 0]
    for tap in range(1, indices.shape[1]):
        result.addcmul_(moved[..., indices[:, tap]], weights[:, tap])
    return result.movedim(-1, axis)


def imresize(images: torch.Tensor, scale: float | None = None, size: tuple[int, int] | None = None,
             antialias: bool = True) -> torch.Tensor:
    """MATLAB-compatible bicubic resize of (B, C, H, W); give ``scale`` or ``size`` (H, W). No clamping.

    Height is resized first, then width (MATLAB's order for equal factors). Output size for a scale is
    ceil(H * scale) x ceil(W * scale), as in MATLAB.
    """
    height, width = images.shape[-2:]
    if (scale is None) == (size is None):
        raise ValueError("imresize needs exactly one of scale or size")
    if size is not None:
        out_h, out_w = size
        scale_h, scale_w = out_h / height, out_w / width
    else:
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        out_h, out_w = math.ceil(height * scale), math.ceil(width * scale)
        scale_h = scale_w = scale
    if out_h < 1 or out_w < 1:
        raise ValueError(f"resize to {out_h}x{out_w} is empty")
    result = _resize_axis(images, -2, out_h, scale_h, antialias)
    return _resize_axis(result, -1, out_w, scale_w, antialias)


def bicubic_degrade(hq: torch.Tensor, scale: int, generator: torch.Generator | None = None,
                    quantize: bool = False) -> torch.Tensor:
    """HR (B, C, H, W) in [0, 1] -> LQ (B, C, H/scale, W/scale): MATLAB bicubic with antialiasing, clamped.

    ``quantize`` rounds to 8-bit levels like saving the LQ image as PNG. ``generator`` is unused (deterministic).
    """
    if hq.shape[-2] % scale or hq.shape[-1] % scale:
        raise ValueError(f"image size {tuple(hq.shape[-2:])} is not divisible by the scale {scale}")
    lq = imresize(hq, 1.0 / scale).clamp(0, 1)
    return (lq * 255).round() / 255 if quantize else lq


def upsample_lq(lq: torch.Tensor, scale: int) -> torch.Tensor:
    """LQ (B, C, h, w) -> bicubic-upsampled (B, C, h*scale, w*scale) in [0, 1] (the SR model's condition)."""
    return imresize(lq, float(scale)).clamp_(0, 1)


# --------------------------------------------------------------------------------- Real-ESRGAN blind degradation
@dataclass(frozen=True)
class RealESRGANConfig:
    """Every probability and range of the second-order degradation of Real-ESRGAN (Wang et al. 2021, sec. 3),
    defaults = the published x4plus training options. ``strength`` scales the severity: 0 is exactly the plain
    bicubic downscale, 1 the published setting, > 1 harsher: blur sigmas, noise levels and JPEG quality loss
    (100 - q, quality floored at 10) scale linearly, resize factors geometrically (f ** strength)."""

    strength: float = 1.0
    kernel_sizes: tuple[int, ...] = (7, 9, 11, 13, 15, 17, 19, 21)
    kernel_list: tuple[str, ...] = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso",
                                    "plateau_aniso")
    kernel_prob: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)  # up, down, keep
    resize_range: tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 30.0)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[float, float] = (30.0, 95.0)
    second_blur_prob: float = 0.8
    sinc_prob2: float = 0.1
    blur_sigma2: tuple[float, float] = (0.2, 1.5)
    betag_range2: tuple[float, float] = (0.5, 4.0)
    betap_range2: tuple[float, float] = (1.0, 2.0)
    resize_prob2: tuple[float, float, float] = (0.3, 0.4, 0.3)
    resize_range2: tuple[float, float] = (0.3, 1.2)
    gaussian_noise_prob2: float = 0.5
    noise_range2: tuple[float, float] = (1.0, 25.0)
    poisson_scale_range2: tuple[float, float] = (0.05, 2.5)
    gray_noise_prob2: float = 0.4
    jpeg_range2: tuple[float, float] = (30.0, 95.0)
    final_sinc_prob: float = 0.8


class _Draw:
    """Scalar random draws from one torch.Generator (CPU), so a seed fixes every parameter."""

    def __init__(self, generator: torch.Generator | None) -> None:
        self.generator = generator

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=self.generator))

    def chance(self, probability: float) -> bool:
        return float(torch.rand((), generator=self.generator)) < probability

    def choice(self, options: Sequence, weights: Sequence[float] | None = None) -> Any:
        w = torch.tensor(weights if weights is not None else [1.0] * len(options), dtype=torch.float64)
        return options[int(torch.multinomial(w, 1, generator=self.generator))]


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    axis = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    return torch.meshgrid(axis, axis, indexing="ij")


def mixed_kernel(kind: str, size: int, sigma_x: float, sigma_y: float, theta: float, beta: float = 1.0
                 ) -> torch.Tensor:
    """Gaussian-family blur kernel (size, size) summing to 1: Gaussian (beta=1), generalized Gaussian
    exp(-0.5 (d^T S^-1 d)^beta) or plateau 1 / (1 + (d^T S^-1 d)^beta), S = R diag(sx^2, sy^2) R^T."""
    yy, xx = _grid(size)
    cos, sin = math.cos(theta), math.sin(theta)
    u, v = cos * xx + sin * yy, -sin * xx + cos * yy
    quadratic = (u / sigma_x) ** 2 + (v / sigma_y) ** 2
    if kind.startswith("plateau"):
        kernel = 1.0 / (1.0 + quadratic**beta)
    else:
        kernel = torch.exp(-0.5 * quadratic ** (beta if kind.startswith("generalized") else 1.0))
    return kernel / kernel.sum()


def sinc_kernel(size: int, cutoff: float) -> torch.Tensor:
    """2-D circular low-pass (jinc) kernel with cutoff ``cutoff`` (radians/pixel), summing to 1."""
    yy, xx = _grid(size)
    radius = torch.sqrt(xx**2 + yy**2)
    safe = torch.where(radius == 0, torch.ones_like(radius), radius)
    kernel = cutoff * torch.special.bessel_j1(cutoff * safe) / (2 * math.pi * safe)
    kernel = torch.where(radius == 0, torch.full_like(radius, cutoff**2 / (4 * math.pi)), kernel)
    return kernel / kernel.sum()


def _random_blur_kernel(draw: _Draw, config: RealESRGANConfig, second: bool) -> torch.Tensor:
    size = int(draw.choice(config.kernel_sizes))
    if draw.chance((config.sinc_prob2 if second else config.sinc_prob) * min(1.0, config.strength)):
        cutoff = draw.uniform(math.pi / 3, math.pi) if size < 13 else draw.uniform(math.pi / 5, math.pi)
        return sinc_kernel(size, cutoff)
    kind = draw.choice(config.kernel_list, config.kernel_prob)
    low, high = config.blur_sigma2 if second else config.blur_sigma
    low, high = low * config.strength, high * config.strength
    sigma_x = max(draw.uniform(low, high), 1e-3)
    sigma_y, theta = sigma_x, 0.0
    if "aniso" in kind:
        sigma_y, theta = max(draw.uniform(low, high), 1e-3), draw.uniform(-math.pi, math.pi)
    beta = 1.0
    if kind.startswith("generalized"):
        beta = draw.uniform(*(config.betag_range2 if second else config.betag_range))
    elif kind.startswith("plateau"):
        beta = draw.uniform(*(config.betap_range2 if second else config.betap_range))
    return mixed_kernel(kind, size, sigma_x, sigma_y, theta, beta)


def filter2d(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Convolve (B, C, H, W) with one (k, k) kernel per image or shared, reflect padding."""
    size = kernel.shape[-1]
    padded = F.pad(image, (size // 2,) * 4, mode="reflect")
    weight = kernel.to(image.device, image.dtype).view(1, 1, size, size).repeat(image.shape[1], 1, 1, 1)
    return F.conv2d(padded, weight, groups=image.shape[1])


def _random_resize(image: torch.Tensor, draw: _Draw, probs: Sequence[float], value_range: tuple[float, float],
                   strength: float, base: tuple[int, int] | None = None) -> torch.Tensor:
    direction = draw.choice(("up", "down", "keep"), probs)
    factor = 1.0
    if direction == "up":
        factor = draw.uniform(1.0, value_range[1])
    elif direction == "down":
        factor = draw.uniform(value_range[0], 1.0)
    factor = factor**strength  # geometric scaling: strength 0 keeps the size, 1 is the drawn factor
    mode = draw.choice(("area", "bilinear", "bicubic"))
    height, width = base if base is not None else image.shape[-2:]
    size = (max(1, int(height * factor)), max(1, int(width * factor)))
    kwargs = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(image, size=size, mode=mode, **kwargs).clamp(0, 1)


def _random_noise(image: torch.Tensor, draw: _Draw, gaussian_prob: float, sigma_range: tuple[float, float],
                  poisson_range: tuple[float, float], gray_prob: float, strength: float,
                  generator: torch.Generator | None) -> torch.Tensor:
    gray = draw.chance(gray_prob)
    if draw.chance(gaussian_prob):
        sigma = draw.uniform(*sigma_range) / 255.0 * strength
        shape = (1, 1, *image.shape[-2:]) if gray else image.shape
        noise = torch.randn(shape, generator=generator, dtype=torch.float32).to(image.device, image.dtype) * sigma
        return (image + noise).clamp(0, 1)
    scale = draw.uniform(*poisson_range) * strength
    source = image.mean(dim=1, keepdim=True) if gray else image
    levels = float(2 ** math.ceil(math.log2(max(2, len(torch.unique((source * 255).round()))))))
    counts = torch.poisson((source.clamp(0, 1) * levels).float().cpu(), generator=generator)
    noise = counts.to(image.device, image.dtype) / levels - source
    return (image + noise * scale).clamp(0, 1)


def degrade_realesrgan(hq: torch.Tensor, scale: int, config: RealESRGANConfig | None = None,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Real-ESRGAN second-order degradation of (B, 3, H, W) [0, 1] -> (B, 3, H/scale, W/scale), per-image
    random parameters drawn from ``generator``; output rounded to 8-bit levels like the published pipeline."""
    config = config or RealESRGANConfig()
    if hq.shape[-2] % scale or hq.shape[-1] % scale:
        raise ValueError(f"image size {tuple(hq.shape[-2:])} is not divisible by the scale {scale}")
    if config.strength == 0:
        return bicubic_degrade(hq, scale)
    draw = _Draw(generator)
    strength = config.strength
    target = (hq.shape[-2] // scale, hq.shape[-1] // scale)
    outputs = []
    for image in hq.split(1):
        # first order: blur, resize, noise, JPEG
        out = filter2d(image, _random_blur_kernel(draw, config, second=False))
        out = _random_resize(out, draw, config.resize_prob, config.resize_range, strength)
        out = _random_noise(out, draw, config.gaussian_noise_prob, config.noise_range, config.poisson_scale_range,
                            config.gray_noise_prob, strength, generator)
        out = jpeg_compress(out, _quality(draw.uniform(*config.jpeg_range), strength))
        # second order
        if draw.chance(config.second_blur_prob):
            out = filter2d(out, _random_blur_kernel(draw, config, second=True))
        base = (int(image.shape[-2] / scale), int(image.shape[-1] / scale))
        out = _random_resize(out, draw, config.resize_prob2, config.resize_range2, strength, base=base)
        out = _random_noise(out, draw, config.gaussian_noise_prob2, config.noise_range2,
                            config.poisson_scale_range2, config.gray_noise_prob2, strength, generator)
        # final: resize to the target + sinc filter, and JPEG, in random order
        final_kernel = (sinc_kernel(21, draw.uniform(math.pi / 3, math.pi))
                        if draw.chance(config.final_sinc_prob * min(1.0, strength)) else None)
        quality = _quality(draw.uniform(*config.jpeg_range2), strength)
        mode = draw.choice(("area", "bilinear", "bicubic"))
        kwargs = {} if mode == "area" else {"align_corners": False}
        if draw.chance(0.5):
            out = F.interpolate(out, size=target, mode=mode, **kwargs).clamp(0, 1)
            out = filter2d(out, final_kernel) if final_kernel is not None else out
            out = jpeg_compress(out, quality)
        else:
            out = jpeg_compress(out, quality)
            out = F.interpolate(out, size=target, mode=mode, **kwargs).clamp(0, 1)
            out = filter2d(out, final_kernel) if final_kernel is not None else out
        outputs.append((out.clamp(0, 1) * 255).round() / 255)
    return torch.cat(outputs)


def _quality(quality: float, strength: float) -> int:
    return int(round(min(100.0, max(10.0, 100.0 - strength * (100.0 - quality)))))


# ----------------------------------------------------------------------------------------------------- JPEG
_LUMA_TABLE = torch.tensor([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55], [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62], [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], dtype=torch.float64)
_CHROMA_TABLE = torch.full((8, 8), 99.0, dtype=torch.float64)
_CHROMA_TABLE[:4, :4] = torch.tensor([[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]],
                                     dtype=torch.float64)


def quantisation_table(base: torch.Tensor, quality: int) -> torch.Tensor:
    """libjpeg's quality scaling of a base table: scale = 5000/q (q < 50) or 200 - 2q; entries in [1, 255]."""
    quality = min(100, max(1, int(quality)))
    factor = 5000 / quality if quality < 50 else 200 - 2 * quality
    return torch.floor((base * factor + 50) / 100).clamp(1, 255)


def _dct_matrix(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    n = torch.arange(8, dtype=torch.float64)
    matrix = torch.cos((2 * n[None, :] + 1) * n[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    matrix[0] /= math.sqrt(2)
    return matrix.to(device, dtype)


def _blocks_roundtrip(plane: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """DCT-quantise-dequantise-IDCT every 8x8 block of (B, H, W) planes (H, W multiples of 8), 0-255 scale."""
    batch, height, width = plane.shape
    dct = _dct_matrix(plane.device, plane.dtype)
    blocks = (plane - 128).reshape(batch, height // 8, 8, width // 8, 8).permute(0, 1, 3, 2, 4)
    coefficients = dct @ blocks @ dct.T
    table = table.to(plane.device, plane.dtype)
    coefficients = torch.round(coefficients / table) * table
    restored = dct.T @ coefficients @ dct
    return restored.permute(0, 1, 3, 2, 4).reshape(batch, height, width) + 128


def jpeg_compress(image: torch.Tensor, quality: int) -> torch.Tensor:
    """Baseline JPEG round trip of (B, 3, H, W) [0, 1] in torch: YCbCr, 4:2:0 chroma subsampling, 8x8 DCT,
    libjpeg-scaled standard tables, rounding (the lossy step); returns (B, 3, H, W) in [0, 1]."""
    if quality >= 100:
        return image
    height, width = image.shape[-2:]
    pad_h, pad_w = (-height) % 16, (-width) % 16
    x = F.pad(image.double() * 255, (0, pad_w, 0, pad_h), mode="replicate")
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b + 128
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b + 128
    y = _blocks_roundtrip(y, quantisation_table(_LUMA_TABLE, quality))
    chroma = F.avg_pool2d(torch.stack([cb, cr], 1), 2)
    chroma = torch.stack([_blocks_roundtrip(chroma[:, i], quantisation_table(_CHROMA_TABLE, quality))
                          for i in range(2)], 1)
    chroma = F.interpolate(chroma, scale_factor=2, mode="nearest")
    cb, cr = chroma[:, 0] - 128, chroma[:, 1] - 128
    rgb = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1)
    return (rgb[..., :height, :width] / 255).clamp(0, 1).to(image.dtype)


def degrade_mixed(hq: torch.Tensor, scale: int, generator: torch.Generator | None = None,
                  config: RealESRGANConfig | None = None, blind_fraction: float = 0.5) -> torch.Tensor:
    """Per image, the Real-ESRGAN degradation with probability ``blind_fraction``, else plain bicubic: a model
    trained on it must both restore clean inputs and clean up degraded ones."""
    blind = torch.rand(hq.shape[0], generator=generator) < blind_fraction
    out = bicubic_degrade(hq, scale)
    if blind.any():
        index = blind.nonzero().flatten().to(hq.device)
        out[index] = degrade_realesrgan(hq[index], scale, config, generator=generator).to(out.dtype)
    return out


Degradation = Callable[..., torch.Tensor]

DEGRADATIONS: dict[str, Degradation] = {
    "bicubic": bicubic_degrade,
    "realesrgan": degrade_realesrgan,
    "mixed": degrade_mixed,
}
