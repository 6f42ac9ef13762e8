"""The CUDA paths (marked ``gpu``; skipped with the reason where there is no GPU): half-precision inference of
the built-in model against float32 on the CPU, and training steps with the GPU speed options on."""

import json

import pytest
import torch

from turbosr import SRPipeline, builtin_model_dir
from turbosr.corpus import sample_path
from turbosr.image_files import load_image
from turbosr.metrics import psnr

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_builtin_half_precision_on_cuda_matches_float32_on_cpu(dtype):
    lq = load_image(sample_path("astronaut")).rgb
    reference = SRPipeline.from_pretrained(builtin_model_dir(4))(lq, generator=torch.Generator().manual_seed(0))
    pipeline = SRPipeline.from_pretrained(builtin_model_dir(4), device="cuda", dtype=dtype)
    output = pipeline(lq.cuda(), generator=torch.Generator().manual_seed(0))
    assert output.device.type == "cuda" and output.shape == reference.shape
    assert float(psnr(output.float().cpu(), reference)) > 35  # half precision changes detail, not the image


@pytest.mark.parametrize("compiled", [False, True])
def test_training_steps_on_cuda_with_bf16_and_channels_last(tmp_path, compiled):
    import numpy as np
    from PIL import Image

    from turbosr.config import load_config
    from turbosr.train import teacher

    for index in range(2):
        Image.fromarray(np.random.default_rng(index).integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(
            tmp_path / f"p{index}.png")
    config = load_config(teacher.TeacherConfig, None, [
        "model.preset=tiny", f"data.folder={tmp_path}", "data.crop_size=64", "data.degradation=realesrgan",
        f"run.output_dir={tmp_path / 'run'}", "run.max_steps=3", "run.batch_size=4", "run.log_every_steps=1",
        "run.mixed_precision=bf16", "run.channels_last=true", f"run.compile={str(compiled).lower()}",
        "pca_images=8", "residual_scale_batches=1", "run.validate_every_steps=3", "run.validation_images=2"])
    folder = teacher.train(config)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) for r in log if "loss" in r)
    pipeline = SRPipeline.from_pretrained(folder / "model")
    assert pipeline(torch.rand(1, 3, 16, 16)).shape == (1, 3, 64, 64)
