"""The GPU burst path, rehearsed on the CPU: pack a bundle from a small corpus, run the prepared command for two
steps with the GPUs hidden, load what it wrote."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A 6-photo corpus manifest: 4 train, 2 val (smooth random 'photos')."""
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "images").mkdir()
    rng = np.random.default_rng(0)
    records = []
    for index in range(6):
        noise = rng.random((24, 32, 3))
        image = Image.fromarray((noise * 255).astype(np.uint8)).resize((160, 120), Image.BICUBIC)
        image.save(folder / "images" / f"p{index}.png")
        records.append({"file": f"images/p{index}.png", "split": "val" if index >= 4 else "train",
                        "group": f"g{index}", "source_package": "test", "source_path": f"/p{index}.jpg"})
    (folder / "manifest.json").write_text(json.dumps(records))
    return folder


def pack(corpus: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    config = out.parent / "tiny.yaml"
    config.write_text("model:\n  preset: tiny\ndata:\n  crop_size: 64\npca_images: 8\nresidual_scale_batches: 1\n"
                      "run:\n  batch_size: 2\n  log_every_steps: 1\n  validate_every_steps: 2\n"
                      "  validation_images: 2\n")
    command = [sys.executable, str(ROOT / "scripts" / "gpu_bundle.py"), str(out), "--method", "teacher",
               "--config", str(config), "--set", f"data.manifest={corpus / 'manifest.json'}", "--wheels", *extra]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT)


def test_bundle_holds_what_a_run_needs_and_counts_its_size(tmp_path, corpus):
    result = pack(corpus, tmp_path / "bundle")
    assert result.returncode == 0, result.stderr[-2000:]
    bundle = tmp_path / "bundle"
    info = json.loads((bundle / "bundle.json").read_text())
    assert info["photos"]["photos"] == {"train": 4, "val": 2}
    on_disk = {str(p.relative_to(bundle)): p.stat().st_size for p in bundle.rglob("*") if p.is_file()}
    assert {k: v for k, v in on_disk.items() if k != "bundle.json"} == info["files"]
    assert abs(info["total_mb"] - sum(on_disk.values()) / 2**20) < 0.01
    packed = json.loads((bundle / "manifest.json").read_text())
    assert all((bundle / r["file"]).is_file() for r in packed) and len(packed) == 6
    assert "run.yaml" in info["files"] and info["photos"]["reencode_psnr_rgb_mean"] > 30
    refused = pack(corpus, tmp_path / "small", "--max-mb", "0.01")
    assert refused.returncode != 0 and "over --max-mb" in refused.stderr
    assert not (tmp_path / "small").exists()


@pytest.mark.slow  # a second interpreter or a burst of requests: CI runs it (scripts/test.sh)
def test_cpu_rehearsal_of_the_burst_command_writes_a_loadable_model(tmp_path, corpus):
    import torch

    from turbosr.pipeline import SRPipeline

    assert pack(corpus, tmp_path / "bundle").returncode == 0
    out = tmp_path / "out"
    command = [sys.executable, str(ROOT / "scripts" / "gpu_burst.py"), str(tmp_path / "bundle"), str(out),
               "--device", "cpu", "--minutes", "2", "--set", "run.max_steps=2"]
    assert len(" ".join(command)) < 2000
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and all(p.stat().st_size <= 16 * 2**20 for p in files)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["device"] == "cpu" and summary["storage"] == "float32"
    assert summary["last_validation"]["step"] == 2
    pipeline = SRPipeline.from_pretrained(out / "model")
    assert pipeline(torch.rand(1, 3, 16, 16)).shape == (1, 3, 64, 64)
