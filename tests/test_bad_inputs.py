"""A corpus of bad inputs, as careless users make them, through the CLI, the Python API and the HTTP API: every
case ends in a clear error (one line on the command line, a 4xx over HTTP, ValueError/OSError in Python), never a
traceback, a 500 or a wrong image, and no input file changes. The corpus is written by the fixtures below."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import save_tiny_model
from turbosr.cli import main


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _png_bomb(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def bad_images(tmp_path_factory) -> Path:
    """Files that look like images and are not, or that no reader should turn into a picture silently."""
    import tifffile

    folder = tmp_path_factory.mktemp("bad_images")
    good = io.BytesIO()
    Image.new("RGB", (24, 16), (9, 99, 199)).save(good, "PNG")
    data = good.getvalue()
    (folder / "empty.png").write_bytes(b"")
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "header_only.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00")
    (folder / "text.jpg").write_text("this is not an image\n")
    (folder / "random.webp").write_bytes(np.random.default_rng(0).bytes(300))
    (folder / "pickle.png").write_bytes(pickle.dumps({"a": 1}))
    (folder / "bomb.png").write_bytes(_png_bomb(30000, 30000))
    (folder / "folder.png").mkdir()
    (folder / "truncated_header.tif").write_bytes(b"II*\x00\x08\x00\x00\x00")  # a TIFF header and nothing else
    (folder / "tiny.png").write_bytes(data[:20])  # a PNG signature and half an IHDR
    values = np.random.default_rng(1).random((16, 20, 3)).astype(np.float32)
    values[3, 4, 1] = np.nan
    tifffile.imwrite(folder / "nan.tif", values, photometric="rgb")
    tifffile.imwrite(folder / "signed.tif", np.zeros((16, 20, 3), np.int16), photometric="rgb")
    tifffile.imwrite(folder / "ycbcr.tif", (np.nan_to_num(values) * 65535).astype(np.uint16), photometric="ycbcr",
                     subsampling=(1, 1))
    return folder


@pytest.fixture(scope="module")
def good_model(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("good") / "model", scale=2, fit_images=2)


def _edit_config(folder: Path, change) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(change(config)))


def _set(path: tuple[str, ...], value):
    def change(config):
        node = config
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return config
    return change


def _drop(key: str):
    def change(config):
        config.pop(key)
        return config
    return change


BROKEN_MODELS = {
    "config_list": lambda f: (f / "config.json").write_text("[]"),
    "config_null": lambda f: (f / "config.json").write_text("null"),
    "config_binary": lambda f: (f / "config.json").write_bytes(b"\xff\xfe\x00garbage"),
    "string_version": lambda f: _edit_config(f, _set(("format_version",), "1")),
    "no_model": lambda f: _edit_config(f, _drop("model")),
    "no_unet_class": lambda f: _edit_config(f, _drop("unet_class")),
    "layers_as_text": lambda f: _edit_config(f, _set(("unet", "layers_per_block"), "two")),
    "model_scale_as_text": lambda f: _edit_config(f, _set(("model", "scale"), "four")),
    "autoencoder_null": lambda f: _edit_config(f, _set(("autoencoder",), None)),
    "autoencoder_kind": lambda f: _edit_config(f, _set(("autoencoder", "kind"), "vqgan")),
    "huge_channels": lambda f: _edit_config(f, _set(("unet", "block_out_channels"), [1_000_000, 1_000_000])),
    "huge_scale": lambda f: _edit_config(f, _set(("model", "scale"), 1000)),
    "huge_timesteps": lambda f: _edit_config(f, _set(("model", "schedule", "num_train_timesteps"), 2_000_000_000)),
    "huge_latent": lambda f: _edit_config(f, _set(("autoencoder", "latent_channels"), 10**7)),
    "wrong_widths": lambda f: _edit_config(f, _set(("unet", "block_out_channels"), [32, 64])),
    "truncated_weights": lambda f: (f / "denoiser.safetensors").write_bytes(
        (f / "denoiser.safetensors").read_bytes()[:100]),
    "pickle_weights": lambda f: (f / "denoiser.safetensors").write_bytes(pickle.dumps({"w": [1, 2]})),
    "no_weights": lambda f: (f / "autoencoder.safetensors").unlink(),
    "index_list": lambda f: ((f / "denoiser.safetensors").unlink(),
                             (f / "denoiser.safetensors.index.json").write_text("[]")),
    "index_escape": lambda f: ((f / "denoiser.safetensors").unlink(),
                               (f / "denoiser.safetensors.index.json").write_text(
                                   json.dumps({"weight_map": {"a": "../../../../etc/passwd"}}))),
    "nan_weights": lambda f: _nan_weights(f),
    "zero_head_dim": lambda f: _edit_config(f, _set(("unet", "attention_head_dim"), 0)),
    "zero_norm_groups": lambda f: _edit_config(f, _set(("unet", "norm_num_groups"), 0)),
    "more_layers_than_weights": lambda f: _edit_config(f, _set(("unet", "layers_per_block"), 16)),
}


def _nan_weights(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / "denoiser.safetensors"))
    name = next(k for k, v in tensors.items() if v.is_floating_point() and v.numel() > 4)
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, str(folder / "denoiser.safetensors"))


@pytest.fixture(scope="module")
def broken_models(tmp_path_factory, good_model) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("broken")
    folders = {}
    for name, damage in BROKEN_MODELS.items():
        folder = root / name
        shutil.copytree(good_model, folder)
        damage(folder)
        folders[name] = folder
    return folders


def _one_clear_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and "internal error" not in err, err
    return "\n".join(lines)


def test_bad_images_through_the_cli(bad_images, good_model, tmp_path, capsys):
    before = digest(bad_images)
    for path in sorted(bad_images.iterdir()):
        rc = main(["upscale", str(path), "-o", str(tmp_path / "out" / f"{path.stem}.png"), "--model", str(good_model)])
        message = _one_clear_line(capsys)
        assert rc in (1, 2) and path.name in message and len(message.splitlines()) == 1, (path.name, message)
    assert not list((tmp_path / "out").rglob("*.png"))  # no output for any of them
    # the whole folder at once: each bad file is one line, the run ends non-zero, nothing is written
    rc = main(["upscale", str(bad_images), "-o", str(tmp_path / "all"), "--model", str(good_model)])
    message = _one_clear_line(capsys)
    assert rc == 1 and not list((tmp_path / "all").rglob("*.png"))
    assert len([line for line in message.splitlines() if line.startswith("turbosr: skipped")]) == 12
    assert digest(bad_images) == before


def test_bad_images_through_the_python_api(bad_images):
    from turbosr.image_files import load_image

    for path in sorted(bad_images.iterdir()):
        with pytest.raises((ValueError, OSError)) as error:
            load_image(path)
        assert path.name in str(error.value) and "\n" not in str(error.value)


def test_broken_model_folders_through_the_cli_and_api(broken_models, tmp_path, capsys):
    from turbosr.pipeline import SRPipeline

    image = tmp_path / "in.png"
    Image.new("RGB", (16, 16), (50, 60, 70)).save(image)
    before = {name: digest(folder) for name, folder in broken_models.items()}
    for name, folder in broken_models.items():
        rc = main(["upscale", str(image), "-o", str(tmp_path / f"{name}.png"), "--model", str(folder)])
        message = _one_clear_line(capsys)
        assert rc == 2 and len(message.splitlines()) == 1, (name, message)
        assert not (tmp_path / f"{name}.png").exists(), name
        with pytest.raises((ValueError, OSError)) as error:
            SRPipeline.from_pretrained(folder)
        assert str(folder) in str(error.value) and "passwd" not in str(error.value).split("shard")[0], name
    assert {name: digest(folder) for name, folder in broken_models.items()} == before


BAD_TRAINING_OPTIONS = [
    ["--set", "run.max_steps=.inf"], ["--set", "run.max_steps=[1"], ["--set", "optim.learning_rate=.nan"],
    ["--set", "run.max_minutes=.nan"], ["--set", "run.ema_decay=5"], ["--set", "model.unet_channels=[]"],
    ["--set", "run.batch_size=0"], ["--set", "run.seed=-1"], ["--set", "data.degradation=jpeg9"],
    ["--set", "model.preset=huge"], ["--set", "nonsense=1"], ["--set", "run"], ["--set", "data.manifest=nope.json"],
]


def test_bad_training_options_fail_in_one_line(tmp_path, capsys):
    cases = [*BAD_TRAINING_OPTIONS]
    (tmp_path / "bad.yaml").write_text("run:\n  max_steps: [1\n")
    (tmp_path / "tag.yaml").write_text("run: !!python/object/apply:os.system ['echo hi']\n")
    (tmp_path / "dup.yaml").write_text("run:\n  max_steps: 5\n  max_steps: 6\n")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    cases += [["--config", str(tmp_path / name)] for name in ("bad.yaml", "tag.yaml", "dup.yaml", "list.yaml")]
    cases += [["--config", str(tmp_path / "missing.yaml")]]
    for extra in cases:
        rc = main(["train", "teacher", *extra, "--dry-run"])
        message = _one_clear_line(capsys)
        assert rc == 2 and len(message.splitlines()) == 1, (extra, message)


def test_bad_images_through_the_http_api(bad_images, good_model):
    pytest.importorskip("gradio", reason="the demo extra is not installed")
    from fastapi.testclient import TestClient

    from turbosr.demo import build_app

    client = TestClient(build_app({"tiny": good_model}))
    for path in sorted(p for p in bad_images.iterdir() if p.is_file()):
        response = client.post("/api/upscale", files={"image": (path.name, path.read_bytes())},
                               data={"model": "tiny"})
        assert 400 <= response.status_code < 500, (path.name, response.status_code, response.text[:200])
        assert "error" in response.json()
