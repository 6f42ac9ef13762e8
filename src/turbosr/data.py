"""Datasets: HR photos with random crops and on-the-fly degradation (training); paired folders (evaluation).

Images are decoded once and kept in memory as uint8; crops, flips and rotations are drawn from an explicit
``torch.Generator`` so the data order of a run is a pure function of its seed (resumable, reproducible).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from turbosr.degradations import DEGRADATIONS, RealESRGANConfig
from turbosr.image_files import read_rgb_uint8, save_image
from turbosr.inputs import inside, list_images, png_names


class HRFolderDataset(Dataset):
    """Random (3, crop, crop) HR crops in [0, 1] from a folder of photos (or an explicit file list).

    ``crop(index, generator)`` draws a crop of image ``index`` (position, horizontal flip, 90-degree rotation)
    from ``generator``; ``__getitem__`` does the same with a generator seeded by (seed, epoch, index).
    """

    def __init__(self, folder: Path | None, crop_size: int, scale: int = 4, files: Sequence[Path] | None = None,
                 flips: bool = True, seed: int = 0) -> None:
        if crop_size % scale:
            raise ValueError(f"crop size {crop_size} must be a multiple of the scale {scale}")
        self.files = list(files) if files is not None else list_images(Path(folder))  # type: ignore[arg-type]
        if not self.files:
            raise ValueError("the dataset has no images")
        self.crop_size = crop_size
        self.flips = flips
        self.seed = seed
        self.epoch = 0
        self.images = [read_rgb_uint8(path) for path in self.files]
        for path, image in zip(self.files, self.images, strict=True):
            if min(image.shape[-2:]) < crop_size:
                raise ValueError(f"{path} is {image.shape[-1]}x{image.shape[-2]}, smaller than the crop size "
                                 f"{crop_size}: remove it or lower data.crop_size")

    @classmethod
    def from_manifest(cls, manifest: Path, split: str = "train", **kwargs: object) -> HRFolderDataset:
        """Images of one split of a corpus manifest (a JSON list of records with ``file`` and ``split``)."""
        manifest = Path(manifest)
        if not manifest.is_file():
            raise FileNotFoundError(f"corpus manifest not found: {manifest} (build it with scripts/build_corpus.py)")
        records = json.loads(manifest.read_text())
        files = [manifest.parent / r["file"] for r in records if r.get("split") == split]
        if not files:
            raise ValueError(f"{manifest} has no images in split {split!r}")
        return cls(None, files=files, **kwargs)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def crop_uint8(self, index: int, generator: torch.Generator) -> torch.Tensor:
        """A (3, crop, crop) uint8 crop of image ``index``: position, horizontal flip and 90-degree rotation
        drawn from ``generator``."""
        image = self.images[index]
        height, width = image.shape[-2:]
        y = int(torch.randint(height - self.crop_size + 1, (1,), generator=generator))
        x = int(torch.randint(width - self.crop_size + 1, (1,), generator=generator))
        patch = image[:, y : y + self.crop_size, x : x + self.crop_size]
        if self.flips:
            flip, turns = torch.randint(2, (1,), generator=generator), torch.randint(4, (1,), generator=generator)
            if int(flip):
                patch = patch.flip(-1)
            patch = torch.rot90(patch, int(turns), dims=(-2, -1))
        return patch

    def crop(self, index: int, generator: torch.Generator) -> torch.Tensor:
        """:meth:`crop_uint8` as float in [0, 1]."""
        return self.crop_uint8(index, generator).float().div(255.0)

    def sample_uint8(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """(B, 3, crop, crop) uint8 crops of random images, all drawn from ``generator`` (a training batch; kept
        as bytes so the copy to a GPU is 4x smaller and the conversion happens there)."""
        indices = torch.randint(len(self), (batch_size,), generator=generator).tolist()
        return torch.stack([self.crop_uint8(index, generator) for index in indices])

    def sample(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """:meth:`sample_uint8` as float in [0, 1]."""
        return self.sample_uint8(batch_size, generator).float().div(255.0)

    def __getitem__(self, index: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 100_003 + index)
        return self.crop(index, generator)


def make_lq(hq: torch.Tensor, scale: int, degradation: str = "bicubic", generator: torch.Generator | None = None,
            realesrgan: RealESRGANConfig | None = None) -> torch.Tensor:
    """Degrade a batch of HR crops (B, 3, H, W) in [0, 1] to LQ (B, 3, H/scale, W/scale) on their device;
    ``realesrgan`` sets the blind pipeline's knobs (for "realesrgan" and "mixed")."""
    if degradation not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {degradation!r}; choose one of {', '.join(DEGRADATIONS)}")
    if degradation == "bicubic":
        return DEGRADATIONS[degradation](hq, scale, generator=generator)
    return DEGRADATIONS[degradation](hq, scale, generator=generator, config=realesrgan)


def hr_sources(source: Path, split: str = "test") -> list[Path]:
    """HR image files from a folder, or from one split of a corpus ``manifest.json``."""
    source = Path(source)
    if source.suffix == ".json":
        if not source.is_file():
            raise FileNotFoundError(f"manifest not found: {source}")
        files = [source.parent / r["file"] for r in json.loads(source.read_text()) if r.get("split") == split]
        if not files:
            raise ValueError(f"{source} has no images in split {split!r}")
        return files
    return list_images(source)


def check_pair_targets(sources: list[Path], source: Path, out_dir: Path, overwrite: bool) -> None:
    """Stop before anything is written if a pair set would write into its source folder, over a source image,
    over an existing file without ``overwrite``, or write two sources to one name (ValueError / FileExistsError)."""
    roots = [source.parent if source.suffix == ".json" else source]
    for sub in ("hq", "lq"):
        target = out_dir / sub
        for root in roots:
            if source.suffix != ".json" and (inside(target, root) or inside(root, target)):
                raise ValueError(f"{target} is (or holds) the source folder {root}: a pair set is never written "
                                 "into its sources; choose another output folder")
    resolved = {path.resolve() for path in sources}
    for name in png_names(sources):
        for sub in ("hq", "lq"):
            target = out_dir / sub / name
            if target.resolve() in resolved:
                raise ValueError(f"{target} is a source image: a pair set never replaces its sources")
            if target.exists() and not overwrite:
                raise FileExistsError(f"{target} exists (use --overwrite to replace it; nothing was written)")


def make_pairs(source: Path, out_dir: Path, scale: int, degradation: str = "bicubic", seed: int = 0,
               crop_size: int | None = None, split: str = "test", overwrite: bool = False) -> Path:
    """Write an evaluation set: ``out_dir/hq`` (HR crops) and ``out_dir/lq`` (degraded) PNGs + manifest.json.

    Each HR image is centre-cropped to ``crop_size`` (or to the largest multiple of ``scale``); the LQ image is
    made by ``degradation`` with a generator seeded from (seed, index), so the set is exactly reproducible.
    """
    out_dir = Path(out_dir)
    if (out_dir / "manifest.json").exists() and not overwrite:
        raise FileExistsError(f"{out_dir} already holds a pair set (use --overwrite to rebuild it)")
    sources = hr_sources(source, split)
    check_pair_targets(sources, Path(source), out_dir, overwrite)
    records = []
    for index, path in enumerate(sources):
        image = read_rgb_uint8(path).float().div(255).unsqueeze(0)
        height, width = image.shape[-2:]
        size_h = crop_size or height - height % scale
        size_w = crop_size or width - width % scale
        if crop_size and crop_size % scale:
            raise ValueError(f"crop size {crop_size} must be a multiple of the scale {scale}")
        if size_h > height or size_w > width:
            raise ValueError(f"{path} ({width}x{height}) is smaller than the crop size {crop_size}")
        top, left = (height - size_h) // 2, (width - size_w) // 2
        hq = image[..., top : top + size_h, left : left + size_w]
        generator = torch.Generator().manual_seed(seed * 1_000_003 + index)
        lq = make_lq(hq, scale, degradation, generator=generator)
        name = f"{path.stem}.png"
        save_image(hq, out_dir / "hq" / name, overwrite=overwrite)
        save_image(lq, out_dir / "lq" / name, overwrite=overwrite)
        records.append({"file": name, "source": str(path), "hq_size": [size_w, size_h]})
    from turbosr.checkpoint import write_json

    return write_json(out_dir / "manifest.json", {"scale": scale, "degradation": degradation, "seed": seed,
                                                  "crop_size": crop_size, "source": str(source), "split": split,
                                                  "pairs": records})
