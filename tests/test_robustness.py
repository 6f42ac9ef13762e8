"""Round 3 of careless-user probes: commands that must never write over their inputs, a folder run that survives
damaged files, the Python API's tensor and PIL contracts, and model folders that describe more than they hold."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import save_tiny_model
from turbosr.cli import main


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("robust") / "model", scale=2, fit_images=2)


def _photos(folder: Path, names: list[str], size: int = 32) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / name)
    return folder


def test_make_pairs_never_writes_into_its_sources(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = _photos(tmp_path / "mp" / "hq", ["a.png", "b.png"])
    before = digest(tmp_path / "mp")
    # the output's hq/ is the source folder itself
    assert main(["data", "make-pairs", str(source), str(tmp_path / "mp"), "--scale", "4", "--crop", "16"]) == 2
    assert "source folder" in capsys.readouterr().err
    assert digest(tmp_path / "mp") == before
    # one stem, two formats: two sources for one pair
    _photos(source, ["a.jpg"])
    before = digest(tmp_path / "mp")
    assert main(["data", "make-pairs", str(source), str(tmp_path / "pairs"), "--scale", "4", "--crop", "16"]) == 2
    assert "would both become a.png" in capsys.readouterr().err
    assert not (tmp_path / "pairs").exists() and digest(tmp_path / "mp") == before
    (source / "a.jpg").unlink()
    # an existing pair file is kept without --overwrite, even without a manifest
    (tmp_path / "pairs" / "hq").mkdir(parents=True)
    (tmp_path / "pairs" / "hq" / "b.png").write_bytes(b"mine")
    assert main(["data", "make-pairs", str(source), str(tmp_path / "pairs"), "--scale", "4", "--crop", "16"]) == 2
    assert (tmp_path / "pairs" / "hq" / "b.png").read_bytes() == b"mine"
    assert not (tmp_path / "pairs" / "hq" / "a.png").exists()  # nothing was written
    assert main(["data", "make-pairs", str(source), str(tmp_path / "pairs"), "--scale", "4", "--crop", "16",
                 "--overwrite"]) == 0
    assert Image.open(tmp_path / "pairs" / "hq" / "b.png").size == (16, 16)


def test_eval_never_saves_outputs_over_its_inputs(tmp_path: Path, model: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    lq = _photos(tmp_path / "pairs" / "lq", ["a.png", "b.png"], size=16)
    ref = _photos(tmp_path / "pairs" / "hq", ["a.png", "b.png"], size=32)
    before = digest(tmp_path / "pairs")
    for target in (lq, ref, tmp_path / "pairs"):
        assert main(["eval", "--model", str(model), "--lq", str(lq), "--ref", str(ref), "--metrics", "psnr",
                     "--save-outputs", str(target)]) == 2
        assert "input folder" in capsys.readouterr().err
    assert digest(tmp_path / "pairs") == before
    out = tmp_path / "outputs"
    out.mkdir()
    (out / "a.png").write_bytes(b"mine")
    assert main(["eval", "--model", str(model), "--lq", str(lq), "--ref", str(ref), "--metrics", "psnr",
                 "--save-outputs", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "a.png").read_bytes() == b"mine"
    assert main(["eval", "--model", str(model), "--lq", str(lq), "--ref", str(ref), "--metrics", "psnr",
                 "--save-outputs", str(out), "--overwrite"]) == 0
    assert Image.open(out / "a.png").size == (32, 32)


def test_a_folder_run_goes_on_past_damaged_files(tmp_path: Path, model: Path, capsys: pytest.CaptureFixture) -> None:
    folder = _photos(tmp_path / "in", ["a.png", "c.png"], size=16)
    (folder / "b.tif").write_bytes(b"II*\x00\x08\x00\x00\x00")
    (folder / "b2.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 12)
    assert main(["upscale", str(folder), "-o", str(tmp_path / "out"), "--model", str(model)]) == 1
    err = capsys.readouterr().err
    assert "skipped" in err and "b.tif" in err and "b2.png" in err and "internal error" not in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "c.png"]


def test_pil_modes_read_as_the_command_line_reads_them(tmp_path: Path) -> None:
    from turbosr.image import pil_to_tensor
    from turbosr.image_files import load_image

    values = np.linspace(0, 65535, 64, dtype=np.float64).reshape(8, 8)
    deep = Image.fromarray(values.astype(np.uint16))
    path = tmp_path / "deep.png"
    deep.save(path)
    from_file = load_image(path).rgb
    assert torch.allclose(pil_to_tensor(Image.open(path)), from_file, atol=1e-6)
    assert torch.allclose(pil_to_tensor(deep.convert("I")), from_file, atol=1e-6)
    floats = Image.fromarray((values.astype(np.uint16) / 65535).astype(np.float32), mode="F")
    assert torch.allclose(pil_to_tensor(floats), from_file, atol=1e-5)  # the file holds them rounded to 16 bits
    assert 0.45 < float(pil_to_tensor(deep).mean()) < 0.55  # not white (clipped to 255) nor black


@pytest.mark.parametrize("images", [
    torch.full((1, 3, 8, 8), 128, dtype=torch.uint8), torch.full((1, 3, 8, 8), 128, dtype=torch.int64),
    torch.ones(1, 3, 8, 8, dtype=torch.bool), torch.ones(1, 3, 8, 8, dtype=torch.complex64),
    torch.full((1, 3, 8, 8), 200.0), torch.full((1, 3, 8, 8), -0.5), torch.zeros(0, 3, 8, 8),
])
def test_tensors_outside_the_contract_are_refused(model: Path, images: torch.Tensor) -> None:
    from turbosr.pipeline import SRPipeline

    pipeline = SRPipeline.from_pretrained(model)
    with pytest.raises(ValueError):
        pipeline(images)


def test_a_non_integer_tile_is_refused(model: Path) -> None:
    from turbosr.pipeline import SRPipeline

    with pytest.raises(ValueError, match="tile must be an integer"):
        SRPipeline.from_pretrained(model)(torch.rand(1, 3, 8, 8), tile=64.0)


def test_a_config_that_describes_more_than_its_files_is_refused_before_building(tmp_path: Path, model: Path,
                                                                              monkeypatch) -> None:
    """Within the size bounds, a config.json whose networks do not match the weight files fails before any
    network is built in memory (the real build is never reached)."""
    from turbosr import model_folder as pipeline_module
    from turbosr.pipeline import ModelFolderError, SRPipeline

    folder = tmp_path / "model"
    shutil.copytree(model, folder)
    config = json.loads((folder / "config.json").read_text())
    config["unet"]["layers_per_block"] = 16
    (folder / "config.json").write_text(json.dumps(config))
    built = []
    original = pipeline_module.Denoiser

    def counting(*args, **kwargs):
        built.append(next(args[0].parameters()).device.type)
        return original(*args, **kwargs)

    monkeypatch.setattr(pipeline_module, "Denoiser", counting)
    with pytest.raises(ModelFolderError, match="describes .* values but denoiser.safetensors holds"):
        SRPipeline.from_pretrained(folder)
    assert built == ["meta"]


@pytest.mark.parametrize("name", ["x4", "x4-real"])
def test_the_builtins_refuse_step_counts_they_were_not_trained_for(name: str, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    from turbosr.demo import step_limit
    from turbosr.pipeline import SRPipeline
    from turbosr.weights import resolve_model

    pipeline = SRPipeline.from_pretrained(resolve_model(name))
    assert pipeline.sampler.allowed_steps == (1,) and pipeline.default_steps == 1 and step_limit(pipeline) == 1
    source = tmp_path / "in.png"
    Image.new("RGB", (16, 16), (40, 90, 160)).save(source)
    assert main(["upscale", str(source), "-o", str(tmp_path / "out.png"), "--model", name, "--steps", "4"]) == 2
    assert "supports --steps 1 only" in capsys.readouterr().err and not (tmp_path / "out.png").exists()


def test_leftovers_of_a_killed_run_are_removed_by_the_next_write(tmp_path: Path) -> None:
    import os
    import time

    from turbosr import checkpoint

    target = tmp_path / "out.png"
    old_file = tmp_path / ".out.png.abc123.tmp"
    fresh_file = tmp_path / ".out.png.def456.tmp"  # a writer still at work: kept
    old_folder = tmp_path / ".checkpoint-latest.xyz.partial"
    other = tmp_path / ".notes.txt.abc.tmp"  # another file's temporary: not this write's business
    for path in (old_file, fresh_file, other):
        path.write_bytes(b"partial")
    old_folder.mkdir()
    (old_folder / "model.safetensors").write_bytes(b"partial")
    stale = time.time() - 2 * checkpoint.STALE_SECONDS
    for path in (old_file, old_folder, other):
        os.utime(path, (stale, stale))
    checkpoint.atomic_write_bytes(target, b"done")
    checkpoint.staging_folder(tmp_path / "checkpoint-latest")
    assert target.read_bytes() == b"done"
    assert not old_file.exists() and not old_folder.exists()
    assert fresh_file.exists() and other.exists()


def test_a_literal_file_name_with_pattern_characters_is_read_as_a_file(tmp_path: Path, model: Path) -> None:
    source = tmp_path / "shot[1].png"
    Image.new("RGB", (16, 16), (1, 2, 3)).save(source)
    assert main(["upscale", str(source), "-o", str(tmp_path / "out.png"), "--model", str(model)]) == 0
    assert Image.open(tmp_path / "out.png").size == (32, 32)


def test_saving_non_finite_weights_is_refused(tmp_path: Path) -> None:
    from turbosr import checkpoint

    with pytest.raises(FloatingPointError, match="NaN or infinite"):
        checkpoint.save_tensors(tmp_path / "w.safetensors", {"w": torch.tensor([1.0, float("nan")])})
    assert not list(tmp_path.iterdir())


def test_count_options_and_threads_are_checked_once(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for option in ("pca_images=0", "residual_scale_batches=0", "run.num_threads=100000"):
        assert main(["train", "teacher", "--dry-run", "--set", option]) == 2, option
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and option.split("=")[0].split(".")[-1] in err, err


def test_a_resume_that_drops_a_recorded_start_or_has_a_damaged_record_stops(tmp_path: Path, model: Path) -> None:
    from turbosr.train.common import STARTS, check_starts

    run = tmp_path / "run"
    (run / "checkpoint-latest").mkdir(parents=True)
    (run / "checkpoint-latest" / "progress.json").write_text('{"step": 2}')
    check_starts(run, {"init_from": str(model)})  # unchanged folder: resumes
    (run / STARTS).write_text(json.dumps({"init_from": {"folder": str(model), "digest": "x"}}))
    with pytest.raises(ValueError, match="no longer gives"):
        check_starts(run, {})
    (run / STARTS).write_text("[]")
    with pytest.raises(ValueError, match="damaged"):
        check_starts(run, {"init_from": str(model)})


def test_a_one_bit_tiff_is_read_and_the_demo_takes_float_tiffs(tmp_path: Path, model: Path) -> None:
    import tifffile

    from turbosr import demo
    from turbosr.image_files import load_image

    bits = np.random.default_rng(2).random((16, 16)) > 0.5
    Image.fromarray(bits).convert("1").save(tmp_path / "bilevel.tif")
    loaded = load_image(tmp_path / "bilevel.tif")
    assert torch.equal(loaded.rgb[0, 0], torch.from_numpy(bits.astype(np.float32)))
    tifffile.imwrite(tmp_path / "float.tif", np.random.default_rng(3).random((16, 16, 3)).astype(np.float32),
                     photometric="rgb")
    cache = demo.ModelCache({"tiny": model})
    for name in ("bilevel.tif", "float.tif"):
        result = demo.upscale_upload(cache, tmp_path / name, "tiny", 1, 0, "none", 256, tmp_path / "work")
        assert result.size == (32, 32)
