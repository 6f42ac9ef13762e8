"""NIQE, the "completely blind" natural image quality evaluator (Mittal, Soundararajan & Bovik 2013).

Our implementation of the published algorithm with the pristine multivariate-Gaussian model of the official
MATLAB release (parameters from BasicSR's sdist, ``turbosr/assets/niqe_pris_params.npz``):

1. Y channel (MATLAB rgb2ycbcr) on the 0-255 scale, rounded; the image is cut to whole 96 x 96 blocks.
2. At two scales (full, then MATLAB-bicubic half size): mean-subtracted contrast-normalised (MSCN) coefficients
   (I - mu) / (sigma + 1) with the 7 x 7 Gaussian window (paper eq. 1).
3. Per block: an asymmetric generalised Gaussian (AGGD) fit of the MSCN coefficients (shape, mean spread) and of
   their products with the horizontal, vertical and two diagonal neighbours (shape, mean, left and right
   spreads): 18 features per scale, 36 per block (paper eqs. 2-8).
4. A Gaussian fit of the block features, compared to the pristine model:
   sqrt((mu_p - mu_d)^T ((S_p + S_d) / 2)^+ (mu_p - mu_d)) (paper eq. 10). Lower is better.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

ASSET = Path(__file__).resolve().parent.parent / "assets" / "niqe_pris_params.npz"
BLOCK = 96


@lru_cache(maxsize=1)
def pristine_model() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mu (36,), covariance (36, 36), Gaussian window (7, 7)) of the pristine model."""
    with np.load(ASSET, allow_pickle=False) as data:
        return data["mu_pris_param"].reshape(-1), data["cov_pris_param"], data["gaussian_window"]


@lru_cache(maxsize=1)
def _aggd_table() -> tuple[np.ndarray, np.ndarray]:
    from scipy.special import gamma

    shapes = np.arange(0.2, 10.001, 0.001)
    ratio = gamma(2 / shapes) ** 2 / (gamma(1 / shapes) * gamma(3 / shapes))
    return shapes, ratio


def aggd_fit(values: np.ndarray) -> tuple[float, float, float]:
    """Moment-matching fit of an asymmetric generalised Gaussian: (shape alpha, left spread, right spread)."""
    from scipy.special import gamma

    values = values.reshape(-1)
    left = math.sqrt(np.mean(values[values < 0] ** 2))
    right = math.sqrt(np.mean(values[values > 0] ** 2))
    asymmetry = left / right
    moment_ratio = np.mean(np.abs(values)) ** 2 / np.mean(values**2)
    normalised = moment_ratio * (asymmetry**3 + 1) * (asymmetry + 1) / (asymmetry**2 + 1) ** 2
    shapes, table = _aggd_table()
    alpha = float(shapes[np.argmin((table - normalised) ** 2)])
    factor = math.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    return alpha, left * factor, right * factor


def block_features(mscn: np.ndarray) -> list[float]:
    """The 18 NIQE features of one block of MSCN coefficients."""
    from scipy.special import gamma

    alpha, left, right = aggd_fit(mscn)
    features = [alpha, (left + right) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        alpha, left, right = aggd_fit(mscn * np.roll(mscn, shift, axis=(0, 1)))
        mean = (right - left) * gamma(2 / alpha) / gamma(1 / alpha)
        features += [alpha, mean, left, right]
    return features


def _mscn(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    from scipy.ndimage import convolve

    mu = convolve(image, window, mode="nearest")
    sigma = np.sqrt(np.abs(convolve(image * image, window, mode="nearest") - mu * mu))
    return (image - mu) / (sigma + 1)


def niqe_y(y: np.ndarray) -> float:
    """NIQE of a Y image (H, W) on the 0-255 scale (at least 96 x 96 after cropping to whole blocks)."""
    from turbosr.degradations import imresize

    mu_pristine, cov_pristine, window = pristine_model()
    blocks_h, blocks_w = y.shape[0] // BLOCK, y.shape[1] // BLOCK
    if blocks_h == 0 or blocks_w == 0:
        raise ValueError(f"NIQE needs at least {BLOCK}x{BLOCK} pixels, got {y.shape[1]}x{y.shape[0]}")
    image = y[: blocks_h * BLOCK, : blocks_w * BLOCK].astype(np.float64)
    per_scale = []
    for scale in (1, 2):
        mscn = _mscn(image, window)
        size = BLOCK // scale
        per_scale.append(np.array([block_features(mscn[i * size : (i + 1) * size, j * size : (j + 1) * size])
                                   for j in range(blocks_w) for i in range(blocks_h)]))
        if scale == 1:
            half = imresize(torch.from_numpy(image / 255.0)[None, None], 0.5)[0, 0].numpy()
            image = half * 255.0
    features = np.concatenate(per_scale, axis=1)
    mu = np.nanmean(features, axis=0)
    finite = features[~np.isnan(features).any(axis=1)]
    covariance = np.cov(finite, rowvar=False)
    difference = mu_pristine - mu
    value = difference @ np.linalg.pinv((cov_pristine + covariance) / 2) @ difference
    return float(np.sqrt(value))


def niqe(images: torch.Tensor, crop_border: int = 0) -> torch.Tensor:
    """NIQE per image of (B, 3, H, W) RGB in [0, 1] (Y channel, rounded to 8-bit levels as MATLAB); (B,)."""
    from turbosr.metrics.pixel import rgb_to_y

    y = (rgb_to_y(images.double().clamp(0, 1)) * 255.0).round()[:, 0]
    if crop_border:
        y = y[:, crop_border:-crop_border, crop_border:-crop_border]
    return torch.tensor([niqe_y(plane.cpu().numpy()) for plane in y], dtype=torch.float64)
