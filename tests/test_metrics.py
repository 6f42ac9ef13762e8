import json
import math

import pytest
import torch
from PIL import Image

from turbosr.metrics import evaluate_folders, get_metrics, psnr, rgb_to_y, ssim
from turbosr.reports import write_results


def test_psnr_hand_computed_and_identical():
    image = torch.full((1, 3, 8, 8), 100 / 255)
    assert math.isinf(float(psnr(image, image)))
    for k in (1, 5, 20):
        shifted = torch.full((1, 3, 8, 8), (100 + k) / 255)
        assert float(psnr(shifted, image)) == pytest.approx(20 * math.log10(255 / k), abs=1e-9)


def test_psnr_of_known_noise_level():
    g = torch.Generator().manual_seed(0)
    image = torch.full((1, 3, 256, 256), 0.5)
    noisy = image + torch.randn(image.shape, generator=g) * (5 / 255)
    assert float(psnr(noisy, image)) == pytest.approx(20 * math.log10(255 / 5), abs=0.1)


def test_y_channel_of_pure_colours():
    colours = torch.tensor([[0.0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]]).view(5, 3, 1, 1)
    y = rgb_to_y(colours).flatten() * 255
    assert y.tolist() == pytest.approx([16.0, 235.0, 16 + 65.481, 16 + 128.553, 16 + 24.966], abs=1e-4)


def test_ssim_properties():
    g = torch.Generator().manual_seed(1)
    image = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=48, mode="bicubic").clamp(0, 1)
    assert float(ssim(image, image)) == pytest.approx(1.0)
    slightly = (image + 0.02 * torch.randn(image.shape, generator=g)).clamp(0, 1)
    heavily = (image + 0.2 * torch.randn(image.shape, generator=g)).clamp(0, 1)
    assert float(ssim(slightly, image)) == pytest.approx(float(ssim(image, slightly)), abs=1e-12)
    assert 1 > float(ssim(slightly, image)) > float(ssim(heavily, image))


def test_crop_border_ignores_the_border():
    image = torch.rand(1, 3, 20, 20)
    damaged = image.clone()
    damaged[..., :3, :] = 0
    assert math.isinf(float(psnr(damaged, image, crop_border=3)))
    assert not math.isinf(float(psnr(damaged, image, crop_border=2)))


def test_size_mismatch_and_unknown_metric():
    with pytest.raises(ValueError, match="differ in size"):
        psnr(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 5))
    with pytest.raises(ValueError, match="unknown metric"):
        get_metrics(["psnr", "vibes"])


def test_evaluate_folders_schema_and_outputs(tmp_path):
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    for name, value in (("a", 100), ("b", 50)):
        Image.new("RGB", (16, 16), (value,) * 3).save(tmp_path / "ref" / f"{name}.png")
        Image.new("RGB", (16, 16), (value + 5,) * 3).save(tmp_path / "pred" / f"{name}.png")
    results = evaluate_folders(tmp_path / "pred", tmp_path / "ref", ["psnr", "ssim_y"], crop_border=2)
    assert results["count"] == 2
    assert set(results["per_image"]) == {"a.png", "b.png"}
    assert results["mean"]["psnr"] == pytest.approx(20 * math.log10(255 / 5))
    assert results["metrics"]["psnr"]["higher_is_better"] is True
    written = write_results(results, tmp_path / "res.json")
    assert [p.suffix for p in written] == [".json", ".csv", ".md"]
    assert json.loads((tmp_path / "res.json").read_text())["count"] == 2
    assert "psnr" in (tmp_path / "res.md").read_text()
    (tmp_path / "ref" / "c.png").write_bytes((tmp_path / "ref" / "a.png").read_bytes())
    with pytest.raises(ValueError, match="no prediction"):
        evaluate_folders(tmp_path / "pred", tmp_path / "ref", ["psnr"])
    Image.new("RGB", (8, 8)).save(tmp_path / "pred" / "c.png")
    with pytest.raises(ValueError, match="c.png"):
        evaluate_folders(tmp_path / "pred", tmp_path / "ref", ["psnr"])
