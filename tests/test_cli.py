"""The CLI as a user runs it: one-line errors, non-zero exits, nothing overwritten. The commands run in-process
through ``turbosr.cli.main`` with stdout, stderr and logging captured (an interpreter start per command made these
the suite's slowest tests); one end-to-end test and the two-process sharding test run ``python -m turbosr``."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def run_process(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "turbosr", *args], capture_output=True, text=True, env=ENV,
                          timeout=timeout)


def run(*args: str, cwd: Path | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    """``turbosr ARGS`` in this process: its exit status, stdout and stderr (log lines included), as a process
    would give them. ``timeout`` is not enforced in-process."""
    from turbosr.cli import main

    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    saved_handlers, saved_level, here = root.handlers[:], root.level, os.getcwd()
    root.handlers = []  # main's logging.basicConfig then writes to the captured stderr
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as stop:  # argparse's usage errors
                code = stop.code if isinstance(stop.code, int) else 1
    finally:
        os.chdir(here)
        root.handlers, root.level = saved_handlers, saved_level
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from turbosr.models import build_model, model_config
    from turbosr.pipeline import SRPipeline

    config = model_config("tiny", scale=2)
    torch.manual_seed(0)
    denoiser, autoencoder = build_model(config)
    autoencoder.fit(torch.rand(2, 3, 32, 32) * 2 - 1)
    folder = tmp_path_factory.mktemp("model")
    SRPipeline(denoiser, autoencoder, config).save_pretrained(folder)
    return folder


@pytest.fixture
def inputs(tmp_path) -> Path:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    Image.new("RGB", (20, 12), (10, 200, 30)).save(folder / "a.png")
    Image.new("RGBA", (9, 7), (100, 20, 30, 77)).save(folder / "sub" / "b.png")
    (folder / "sub" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


def test_upscale_folder_keeps_tree_reports_bad_file_and_exits_non_zero(model_dir, inputs, tmp_path):
    out = tmp_path / "out"
    result = run_process("upscale", str(inputs), "-o", str(out), "--model", str(model_dir))
    assert result.returncode == 1
    assert Image.open(out / "a.png").size == (40, 24)
    b = Image.open(out / "sub" / "b.png")
    assert b.size == (18, 14) and b.mode == "RGBA"
    errors = [line for line in result.stderr.splitlines() if line.startswith("turbosr:")]
    assert len(errors) == 1 and "broken.jpg" in errors[0]
    assert "Traceback" not in result.stderr
    # nothing is overwritten without --overwrite: an existing output is kept, and that is not a failure
    before = (out / "a.png").stat().st_mtime_ns
    again = run("upscale", str(inputs / "a.png"), "-o", str(out), "--model", str(model_dir))
    assert again.returncode == 0 and "kept 1 existing output" in again.stderr
    assert (out / "a.png").stat().st_mtime_ns == before
    assert run("upscale", str(inputs / "a.png"), "-o", str(out), "--model", str(model_dir),
               "--overwrite").returncode == 0
    # an input is never replaced, not even with --overwrite
    before = (inputs / "a.png").read_bytes()
    same = run("upscale", str(inputs / "a.png"), "-o", str(inputs), "--model", str(model_dir), "--overwrite")
    assert same.returncode == 2 and "is an input" in same.stderr
    assert (inputs / "a.png").read_bytes() == before


def test_single_file_output_and_glob(model_dir, inputs, tmp_path):
    result = run("upscale", str(inputs / "*.png"), "-o", str(tmp_path / "one.png"), "--model", str(model_dir),
                 "--steps", "2", "--seed", "3", "--tile", "32", "--tile-overlap", "8", "--color-fix", "wavelet")
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "one.png").size == (40, 24)


@pytest.mark.parametrize(("args", "message"), [
    (["upscale", "/nonexistent/x.png", "-o", "o"], "/nonexistent/x.png"),
    (["upscale", "{inputs}", "-o", "o.png"], "file name"),
    (["upscale", "{inputs}/a.png", "-o", "o", "--model", "/nonexistent-model"], "model folder not found"),
    (["upscale", "{inputs}/a.png", "-o", "o", "--model", "{model}", "--scale", "4"], "x2"),
    (["train", "teacher", "--set", "optim.nope=1"], "unknown config key"),
    (["upscale", "{inputs}/a.png", "-o", "o", "--model", "{model}", "--tile", "30"], "tile must be"),
    (["upscale", "{inputs}/a.png", "-o", "o", "--model", "{model}", "--strength", "0"], "strength"),
])
def test_bad_input_gives_one_line_error(args, message, model_dir, inputs, tmp_path):
    args = [a.replace("{inputs}", str(inputs)).replace("{model}", str(model_dir)) for a in args]
    result = run(*args, cwd=tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_without_builtin_model_says_so_clearly(inputs, tmp_path, monkeypatch):
    from turbosr import weights

    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no built-in x3 model"):
        weights.builtin_model_dir(3)


def test_train_dry_run_prints_resolved_config():
    result = run("train", "teacher", "--set", "model.preset=tiny", "--set", "data.crop_size=64", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "preset: tiny" in result.stdout and "terminal_fraction: 0.0" in result.stdout
    rejected = run("train", "teacher", "--set", "data.degradation=blurry", "--dry-run")  # checked at config time
    assert rejected.returncode == 2 and "data.degradation must be one of" in rejected.stderr


@pytest.mark.slow  # a second interpreter or a burst of requests: CI runs it (scripts/test.sh)
def test_sharding_across_two_processes_does_each_image_once(model_dir, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for index in range(5):
        Image.new("RGB", (8, 8), (index * 40, 0, 0)).save(folder / f"{index}.png")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "turbosr", "-v", "upscale", str(folder), "-o", str(out), "--model", str(model_dir)]
    result = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    written = [line.split("wrote ")[1] for line in result.stderr.splitlines() if "wrote " in line]
    assert sorted(written) == sorted(str(out / f"{i}.png") for i in range(5))  # each exactly once
    assert sorted(p.name for p in out.iterdir()) == [f"{i}.png" for i in range(5)]
    assert "process 0/2: 3 of 5 images" in result.stderr and "process 1/2: 2 of 5 images" in result.stderr


def test_eval_and_make_pairs_commands(tmp_path, model_dir):
    hr = tmp_path / "hr"
    hr.mkdir()
    for index in range(2):
        Image.effect_noise((40, 32), 40 + index).convert("RGB").save(hr / f"{index}.png")
    assert run("data", "make-pairs", str(hr), str(tmp_path / "pairs"), "--scale", "2").returncode == 0
    out = tmp_path / "res.json"
    result = run("eval", "--model", str(model_dir), "--lq", str(tmp_path / "pairs" / "lq"), "--ref",
                 str(tmp_path / "pairs" / "hq"), "--metrics", "psnr_y,ssim", "--crop-border", "2", "--out", str(out),
                 "--save-outputs", str(tmp_path / "outs"))
    assert result.returncode == 0, result.stderr
    import json

    data = json.loads(out.read_text())
    assert set(data["mean"]) == {"psnr_y", "ssim"} and data["count"] == 2 and data["seconds_per_image"] > 0
    assert out.with_suffix(".csv").is_file() and out.with_suffix(".md").is_file()
    scored = run("eval", "--pred", str(tmp_path / "outs"), "--ref", str(tmp_path / "pairs" / "hq"), "--metrics",
                 "psnr_y,ssim", "--crop-border", "2")
    assert scored.returncode == 0
    assert json.loads(scored.stdout)["mean"]["psnr_y"] == pytest.approx(data["mean"]["psnr_y"], abs=1e-6)
    missing = run("eval", "--ref", str(tmp_path / "pairs" / "hq"))
    assert missing.returncode == 2 and "nothing to evaluate" in missing.stderr


def test_two_inputs_mapping_to_one_output_stop_before_anything_is_written(model_dir, tmp_path):
    """A glob keeps the tree below its root, so shots/a/x.png and shots/x.png stay apart; a real collision
    (b.png and b.jpg both -> b.png) is refused before anything is written, naming both files."""
    shots = tmp_path / "shots"
    (shots / "a").mkdir(parents=True)
    for path in ("a/x.png", "b.png"):
        Image.new("RGB", (10, 6), (90, 120, 30)).save(shots / path)
    Image.new("RGB", (10, 6), (10, 20, 30)).save(shots / "b.jpg")
    out = tmp_path / "out"
    result = run("upscale", str(shots / "**" / "*.*"), "-o", str(out), "--model", str(model_dir))
    assert result.returncode != 0 and "b.jpg" in result.stderr and "b.png" in result.stderr
    assert not out.exists() or not any(out.rglob("*.png"))
    ok = run("upscale", str(shots / "**" / "*.png"), "-o", str(out), "--model", str(model_dir))
    assert ok.returncode == 0, ok.stderr
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == ["a/x.png", "b.png"]


def test_16bit_input_gives_16bit_output(model_dir, tmp_path):
    import png

    y, x = np.mgrid[0:6, 0:10]
    pixels = np.stack([1000 + 300 * x, 40000 + 90 * y, 65535 - 500 * x * y], -1).astype(np.uint16)
    png.from_array(pixels.reshape(6, -1), mode="RGB;16").save(str(tmp_path / "deep.png"))
    result = run("upscale", str(tmp_path / "deep.png"), "-o", str(tmp_path / "out"), "--model", str(model_dir))
    assert result.returncode == 0, result.stderr
    width, height, _, info = png.Reader(filename=str(tmp_path / "out" / "deep.png")).read()
    assert (width, height) == (20, 12) and info["bitdepth"] == 16 and info["planes"] == 3


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file below ``folder`` (links not followed), by relative path."""
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def test_an_output_folder_inside_the_inputs_is_never_read_or_replaced(model_dir, tmp_path):
    """`upscale g -o g/out` twice (the second with --overwrite): the first run's outputs are not inputs of the
    second (no g/out/out), no input changes, and the rerun says once what it left out."""
    folder = tmp_path / "g"
    folder.mkdir()
    Image.new("RGB", (12, 10), (10, 200, 30)).save(folder / "a.png")
    first = run("upscale", str(folder), "-o", str(folder / "out"), "--model", str(model_dir))
    assert first.returncode == 0, first.stderr
    inputs_before = {k: v for k, v in tree_digest(folder).items() if not k.startswith("out")}
    second = run("upscale", str(folder), "-o", str(folder / "out"), "--model", str(model_dir), "--overwrite")
    assert second.returncode == 0, second.stderr
    assert "1 image(s) inside the output folder" in second.stderr
    assert sorted(tree_digest(folder)) == ["a.png", "out/a.png"]  # no out/out/a.png
    assert {k: v for k, v in tree_digest(folder).items() if not k.startswith("out")} == inputs_before
    # naming a folder inside the output as an input: nothing is taken from it, nothing is written over it
    (folder / "out" / "sub").mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(folder / "out" / "sub" / "b.png")
    before = tree_digest(folder)
    third = run("upscale", str(folder / "in_missing_is_fine"), str(folder / "out" / "sub"), "-o", str(folder / "out"),
                "--model", str(model_dir), "--overwrite")
    assert third.returncode == 2 and "Traceback" not in third.stderr
    assert tree_digest(folder) == before


def test_no_run_writes_a_file_that_is_one_of_its_inputs(model_dir, tmp_path):
    """An input whose output would be the input itself (explicit files are inputs even inside the output folder):
    the run is refused before anything is written, even with --overwrite."""
    (tmp_path / "in").mkdir()
    (tmp_path / "b").mkdir()
    Image.new("RGB", (12, 10), (10, 200, 30)).save(tmp_path / "in" / "a.png")
    Image.new("RGB", (12, 10), (200, 10, 30)).save(tmp_path / "b" / "c.png")
    before = tree_digest(tmp_path)
    result = run("upscale", str(tmp_path / "in"), str(tmp_path / "b" / "c.png"), "-o", str(tmp_path / "b"),
                 "--format", "png", "--model", str(model_dir), "--overwrite")
    # c.png's output would be b/c.png, the input itself: refused before in/a.png's output is written either
    assert result.returncode == 2 and "is an input" in result.stderr and "Traceback" not in result.stderr
    assert tree_digest(tmp_path) == before


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks")
def test_link_loops_are_not_followed_and_each_file_is_read_once(model_dir, tmp_path):
    from turbosr.inputs import find_images

    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tree / "a.png")
    Image.new("RGB", (8, 8)).save(tree / "d" / "b.png")
    (tree / "loop").symlink_to(".")
    (tree / "d" / "up").symlink_to("..")
    (tree / "alias.png").symlink_to("a.png")
    for inputs in ([tree], [str(tree / "**" / "*.png")], [tree, str(tree / "*.png")]):
        items = find_images(inputs).items
        assert sorted(p.resolve().name for p, _ in items) == ["a.png", "b.png"], inputs
    out = tmp_path / "out"
    result = run("upscale", str(tree / "**" / "*.png"), "-o", str(out), "--model", str(model_dir), timeout=60)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.rglob("*.png")) == ["a.png", "b.png"]


def test_odd_options_fail_in_one_line(model_dir, inputs, tmp_path):
    """-o with a format turbosr cannot write, a CUDA device on a torch without one, a seed out of range: one line,
    exit 2, nothing written; unsupported files in a folder are reported, not silently dropped."""
    cases = [
        (["-o", str(tmp_path / "x.gif")], ".gif"),
        (["-o", str(tmp_path / "o"), "--seed", str(2**70)], "--seed"),
        (["-o", str(tmp_path / "o"), "--device", "nonsense"], "--device"),
    ]
    if not torch.cuda.is_available():
        cases.append((["-o", str(tmp_path / "o"), "--device", "cuda"], "no CUDA"))
    for extra, expected in cases:
        result = run("upscale", str(inputs / "a.png"), "--model", str(model_dir), *extra)
        assert result.returncode == 2 and expected in result.stderr, (extra, result.stderr)
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.gif").exists() and not (tmp_path / "o").exists()
    Image.new("RGB", (8, 8)).save(inputs / "anim.gif")
    result = run("upscale", str(inputs), "-o", str(tmp_path / "o2"), "--model", str(model_dir))
    assert "skipped 1 file(s) turbosr cannot read (.gif)" in result.stderr
