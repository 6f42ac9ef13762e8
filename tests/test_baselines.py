import importlib.util

import pytest
import torch

from turbosr.baselines import NCNN_MODELS, baseline_upscaler, ncnn_model_files
from turbosr.degradations import upsample_lq


def test_classical_baselines_have_the_right_size_and_bicubic_is_upsample_lq():
    lq = torch.rand(1, 3, 10, 12)
    assert torch.equal(baseline_upscaler("bicubic", 4)(lq), upsample_lq(lq, 4))
    out = baseline_upscaler("lanczos", 3)(lq)
    assert out.shape == (1, 3, 30, 36) and 0 <= float(out.min()) and float(out.max()) <= 1


def test_unknown_and_wrong_scale_errors():
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_upscaler("waifu", 4)
    with pytest.raises(ValueError, match="not x2"):
        baseline_upscaler("span_x4", 2)


def test_missing_extra_gives_a_clear_error(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="baselines"):
        ncnn_model_files("realesrgan_x4plus")


@pytest.mark.parametrize("name", sorted(NCNN_MODELS))
def test_ncnn_baselines_upscale_when_installed(name):
    try:
        ncnn_model_files(name)
        import ncnn  # noqa: F401
    except (FileNotFoundError, ImportError):
        pytest.skip(f"{name}: the 'baselines' extra is not installed")
    lq = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 4), size=16, mode="bicubic").clamp(0, 1)
    out = baseline_upscaler(name, 4)(lq)
    assert out.shape == (1, 3, 64, 64)
    # a real SR network stays close to the bicubic upsampling of a smooth input
    assert float((out - upsample_lq(lq, 4)).abs().mean()) < 0.1
