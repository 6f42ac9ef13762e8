import json

import numpy as np
import pytest
import torch
from PIL import Image

from turbosr.data import HRFolderDataset, hr_sources, make_lq, make_pairs


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for index in range(3):
        Image.fromarray((rng.random((80, 96, 3)) * 255).astype(np.uint8)).save(tmp_path / f"im{index}.png")
    return tmp_path


def test_crops_shapes_ranges_and_seeded_reproducibility(folder):
    dataset = HRFolderDataset(folder, crop_size=64, scale=4)
    assert len(dataset) == 3
    a = dataset.crop(1, torch.Generator().manual_seed(0))
    b = dataset.crop(1, torch.Generator().manual_seed(0))
    c = dataset.crop(1, torch.Generator().manual_seed(1))
    assert a.shape == (3, 64, 64) and 0 <= float(a.min()) and float(a.max()) <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    first = dataset[0]
    assert torch.equal(first, dataset[0])
    dataset.set_epoch(1)
    assert not torch.equal(first, dataset[0])


def test_dataset_errors(folder, tmp_path_factory):
    with pytest.raises(ValueError, match="multiple of the scale"):
        HRFolderDataset(folder, crop_size=62, scale=4)
    with pytest.raises(ValueError, match="smaller than the crop size"):
        HRFolderDataset(folder, crop_size=96, scale=4)
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(ValueError, match="no images"):
        HRFolderDataset(empty, crop_size=64)
    (folder / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="bad.png"):
        HRFolderDataset(folder, crop_size=64)


def test_manifest_split(folder):
    records = [{"file": "im0.png", "split": "train"}, {"file": "im1.png", "split": "heldout"},
               {"file": "im2.png", "split": "train"}]
    (folder / "manifest.json").write_text(json.dumps(records))
    train = HRFolderDataset.from_manifest(folder / "manifest.json", "train", crop_size=32, scale=4)
    assert [p.name for p in train.files] == ["im0.png", "im2.png"]
    assert [p.name for p in hr_sources(folder / "manifest.json", "heldout")] == ["im1.png"]
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        HRFolderDataset.from_manifest(folder / "nope.json", crop_size=32)


def test_make_lq_unknown_degradation():
    with pytest.raises(ValueError, match="unknown degradation"):
        make_lq(torch.rand(1, 3, 8, 8), 2, "gaussian-ish")


def test_make_pairs_is_reproducible_and_never_overwrites(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("pairs")
    make_pairs(folder, out / "a", scale=4, degradation="realesrgan", seed=3, crop_size=64)
    make_pairs(folder, out / "b", scale=4, degradation="realesrgan", seed=3, crop_size=64)
    for name in ("im0.png", "im1.png", "im2.png"):
        hq, lq = Image.open(out / "a" / "hq" / name), Image.open(out / "a" / "lq" / name)
        assert hq.size == (64, 64) and lq.size == (16, 16)
        assert (out / "a" / "lq" / name).read_bytes() == (out / "b" / "lq" / name).read_bytes()
    manifest = json.loads((out / "a" / "manifest.json").read_text())
    assert manifest["scale"] == 4 and len(manifest["pairs"]) == 3
    with pytest.raises(FileExistsError):
        make_pairs(folder, out / "a", scale=4)
    make_pairs(folder, out / "a", scale=2, overwrite=True)
    assert Image.open(out / "a" / "lq" / "im0.png").size == (48, 40)
