"""Shared fixtures: tiny random-weight models built from config, small images; nothing is downloaded."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` run where CUDA is available and are skipped, with the reason, elsewhere."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run `pytest -m gpu` on a machine with one)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def tiny_config():
    from turbosr.models import model_config

    return model_config("tiny", scale=4)


@pytest.fixture
def tiny_pipeline(tiny_config):
    """A tiny x4 pipeline whose denoiser has small random (non-zero) output weights."""
    from turbosr.models import build_model
    from turbosr.pipeline import SRPipeline

    torch.manual_seed(0)
    denoiser, autoencoder = build_model(tiny_config)
    with torch.no_grad():
        denoiser.unet.conv_out.weight.normal_(0, 0.02)
    autoencoder.fit(torch.rand(4, 3, 32, 32) * 2 - 1)
    return SRPipeline(denoiser, autoencoder, tiny_config)


def load_script(path):
    """A script of scripts/ or benchmarks/ (not a package) imported as a module, by its file path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def save_tiny_model(folder, scale: int = 4, fit_images: int = 4, output_std: float = 0.0,
                    fit_generator: torch.Generator | None = None):
    """Save a tiny random model (global seed 0; the latent space fitted on ``fit_images`` random 32² crops; the
    UNet's output layer drawn with std ``output_std``, 0 keeps it zero) to ``folder``; returns ``folder``."""
    from turbosr.models import build_model, model_config
    from turbosr.pipeline import SRPipeline

    torch.manual_seed(0)
    config = model_config("tiny", scale=scale)
    denoiser, autoencoder = build_model(config)
    if output_std:
        torch.nn.init.normal_(denoiser.unet.conv_out.weight, 0, output_std)
    autoencoder.fit(torch.rand(fit_images, 3, 32, 32, generator=fit_generator) * 2 - 1)
    SRPipeline(denoiser, autoencoder, config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_x4_folder(tmp_path_factory):
    """A saved tiny x4 model with random, non-zero output weights and a fitted latent space (a teacher, a prior
    or a start for the training tests)."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny_x4") / "model", output_std=0.05,
                           fit_generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def smooth_photos(tmp_path_factory):
    """Three 128 x 96 photo-like images (smooth noise at two scales), for tiny training runs."""
    import numpy as np
    from PIL import Image

    folder = tmp_path_factory.mktemp("hr")
    rng = np.random.default_rng(0)
    for index in range(3):
        image = np.zeros((96, 128, 3))
        for size in (6, 24):
            noise = rng.random((size, size * 4 // 3, 3))
            image += np.asarray(Image.fromarray((noise * 255).astype(np.uint8)).resize((128, 96), Image.BICUBIC)) / 2
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(folder / f"p{index}.png")
    return folder


@pytest.fixture
def lq_image():
    generator = torch.Generator().manual_seed(1)
    return torch.rand(1, 3, 20, 28, generator=generator)


# a tiny learned latent decoder with CFW (tests of models/decoders.py, streaming, the fidelity knob)
TINY_SHAPE = {"kind": "conv", "channels": [16, 8], "blocks": [1, 1], "head_channels": [], "cfw_channels": [8, 4]}


def randomised(decoder, seed: int = 0):
    """Every weight drawn again (the zero-initialised output layers too), so each path really contributes."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in decoder.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.15)
    return decoder


def tiny_model_with_learned_decoder() -> tuple:
    """A tiny x4 model (config, denoiser, autoencoder): non-zero UNet output, a randomised learned decoder + CFW."""
    from turbosr.models import build_model, model_config

    torch.manual_seed(0)
    config = model_config("tiny", scale=4)
    denoiser, autoencoder = build_model(config)
    torch.nn.init.normal_(denoiser.unet.conv_out.weight, 0, 0.02)
    autoencoder.fit(torch.rand(4, 3, 32, 32) * 2 - 1)
    autoencoder = autoencoder.with_decoder(TINY_SHAPE)
    randomised(autoencoder.decoder, seed=3)
    return config, denoiser, autoencoder


def photo_like(seed: int = 0, size: int = 256) -> torch.Tensor:
    """A photo-like image with no preferred pixel phase: noise with a natural image's falling spectrum (amplitude
    ~ 1/f^1.25; mean |gradient| about 9 grey levels, like the corpus photos). The bundled samples are too small for
    the figure (16 columns per phase)."""
    generator = torch.Generator().manual_seed(seed)
    frequency = torch.fft.fftfreq(size)
    radius = (frequency[:, None] ** 2 + frequency[None, :] ** 2).sqrt().clamp_min(1 / size)
    image = torch.fft.ifft2(torch.randn(3, size, size, generator=generator, dtype=torch.complex64) / radius**1.25).real
    return ((image - image.mean()) / image.std() * 0.15 + 0.5).clamp(0, 1)[None]


# ------------------------------------------------------------------------------------- released-model parity
SHARED_PARITY = Path(__file__).resolve().parents[1].parent / "shared" / "parity"


def parity_available(family: str) -> pytest.MarkDecorator:
    """Skip (with the reason) where ../shared/parity/<family> is absent."""
    folder = SHARED_PARITY / family
    return pytest.mark.skipif(not (folder / "cases.json").is_file(),
                              reason=f"parity fixtures not found at {folder} (../shared is absent)")


def close(ours: torch.Tensor, golden: torch.Tensor) -> None:
    """The fixtures' tolerance: |ours - golden| <= 1e-4 max|golden| + 1e-5 (shapes equal)."""
    assert ours.shape == golden.shape
    error = (ours.float() - golden).abs().max().item()
    assert error <= 1e-4 * golden.abs().max().item() + 1e-5, error


def parity_cases(family: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(SHARED_PARITY / family / "cases.safetensors")


def small_process_size(folder, side: int = 96):
    """An imported AddSR/SeeSR folder made at ``side`` instead of the release's 512 (min_side in config.json), so
    that tiny-network tests exercise the enlarge-and-resize-back path at a tiny cost."""
    import json

    meta = json.loads((folder / "config.json").read_text())
    assert meta["min_side"] == 512  # what the importer writes
    (folder / "config.json").write_text(json.dumps({**meta, "min_side": side}, indent=1))
    return folder
