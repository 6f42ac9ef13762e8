"""Streaming large images (turbosr.streaming): the strips are the in-memory result bit for bit, the region
upsampler is the whole-image upsampling exactly, files are written strip by strip (PNG, TIFF; alpha, 16-bit) and
a run that dies leaves no output file behind."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_model_with_learned_decoder
from turbosr import streaming
from turbosr.degradations import upsample_lq
from turbosr.image_files import LoadedImage, load_image
from turbosr.pipeline import SRPipeline, _pad_to_multiple


@pytest.fixture(scope="module")
def pipeline() -> SRPipeline:
    """A tiny x4 model with a learned decoder + CFW whose every weight is non-zero, and a non-zero UNet output."""
    config, denoiser, autoencoder = tiny_model_with_learned_decoder()
    return SRPipeline(denoiser, autoencoder, config)


def _lq(height: int = 61, width: int = 87, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("height", "width"), [(61, 87), (24, 40), (33, 8)])
def test_region_upsampler_equals_upsampling_the_whole_image(height, width):
    lq = _lq(height, width)
    padded = _pad_to_multiple(upsample_lq(lq, 4), 32)
    regions = streaming.RegionUpsampler(lq, 4, *padded.shape[-2:])
    for y0, y1, x0, x1 in ((0, padded.shape[-2], 0, padded.shape[-1]), (8, 40, 16, 56), (padded.shape[-2] - 16,
                                                                                          padded.shape[-2], 0, 24)):
        assert torch.equal(regions.region(y0, y1, x0, x1), padded[..., y0:y1, x0:x1])


@pytest.mark.parametrize(("fidelity", "default"), [(None, 0.0), (0.6, 0.0), (None, 0.6)])
def test_strips_are_the_in_memory_result_bit_for_bit(pipeline, fidelity, default):
    model = pipeline.replace(default_fidelity=default)
    lq = _lq()
    generator = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    whole = model(lq, tile=64, tile_overlap=16, fidelity=fidelity, generator=generator())
    strips = list(streaming.upscale_strips(model, lq, tile=64, tile_overlap=16, fidelity=fidelity,
                                           generator=generator()))
    assert len(strips) > 2 and all(s.shape[-1] == whole.shape[-1] for s in strips)  # several rows of tiles
    assert torch.equal(torch.cat(strips, dim=-2), whole)
    if default:  # the strips ran at the model's default w, as the whole image did
        assert torch.equal(whole, pipeline(lq, tile=64, tile_overlap=16, fidelity=default, generator=generator()))


@pytest.mark.parametrize(("suffix", "bit_depth", "alpha"), [(".png", 8, False), (".png", 16, True),
                                                            (".tif", 8, True), (".tif", 16, False)])
def test_streamed_files_equal_the_in_memory_files(pipeline, tmp_path, monkeypatch, suffix, bit_depth, alpha):
    lq = _lq()
    loaded = LoadedImage(rgb=lq, alpha=_lq(seed=5)[:, :1] if alpha else None, icc_profile=None, bit_depth=bit_depth,
                         mode="RGB", format="PNG")
    options = {"tile": 64, "tile_overlap": 16}
    streaming.upscale_file(pipeline, loaded, tmp_path / f"memory{suffix}", generator=torch.Generator().manual_seed(3),
                           **options)
    monkeypatch.setattr(streaming, "STREAM_PIXELS", 1000)  # everything larger is streamed
    calls = []
    real = streaming.upscale_strips
    monkeypatch.setattr(streaming, "upscale_strips", lambda *a, **k: calls.append(1) or real(*a, **k))
    streaming.upscale_file(pipeline, loaded, tmp_path / f"stream{suffix}", generator=torch.Generator().manual_seed(3),
                           **options)
    assert calls  # it did stream
    memory, streamed = load_image(tmp_path / f"memory{suffix}"), load_image(tmp_path / f"stream{suffix}")
    assert streamed.bit_depth == memory.bit_depth == bit_depth
    assert torch.equal(streamed.rgb, memory.rgb)
    assert (streamed.alpha is None) == (not alpha)
    if alpha:
        assert torch.equal(streamed.alpha, memory.alpha)


def test_a_run_that_dies_mid_stream_leaves_no_file(pipeline, tmp_path, monkeypatch):
    monkeypatch.setattr(streaming, "STREAM_PIXELS", 1000)
    real = streaming.upscale_strips

    def dying(*args, **kwargs):
        for index, strip in enumerate(real(*args, **kwargs)):
            if index == 1:
                raise RuntimeError("killed")
            yield strip

    monkeypatch.setattr(streaming, "upscale_strips", dying)
    loaded = LoadedImage(rgb=_lq(), alpha=None, icc_profile=None, bit_depth=8, mode="RGB", format="PNG")
    with pytest.raises(RuntimeError, match="killed"):
        streaming.upscale_file(pipeline, loaded, tmp_path / "out.png", tile=64, tile_overlap=16)
    assert list(tmp_path.iterdir()) == []  # neither the output nor a temporary file


def test_large_outputs_that_cannot_stream_are_refused_in_one_line(pipeline, tmp_path, monkeypatch):
    monkeypatch.setattr(streaming, "STREAM_PIXELS", 1000)
    monkeypatch.setattr(streaming, "MAX_WHOLE_PIXELS", 2000)
    loaded = LoadedImage(rgb=_lq(), alpha=None, icc_profile=None, bit_depth=8, mode="RGB", format="PNG")
    for name, extra in (("out.jpg", {}), ("out.png", {"color_fix": "wavelet"})):
        with pytest.raises(ValueError, match="too large to make in memory"):
            streaming.upscale_file(pipeline, loaded, tmp_path / name, **extra)
    assert list(tmp_path.iterdir()) == []


def test_png_strips_carry_the_icc_profile_and_exif(tmp_path):
    from PIL import ImageCms

    from turbosr.image_files import save_image_strips

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010E] = "a description"
    image = torch.rand(1, 3, 30, 20, generator=torch.Generator().manual_seed(0))
    strips = ((image[..., i:i + 7, :], None) for i in range(0, 30, 7))
    save_image_strips(tmp_path / "a.png", 20, 30, strips, icc_profile=icc, exif=exif.tobytes())
    with Image.open(tmp_path / "a.png") as reopened:
        assert reopened.info.get("icc_profile") == icc
        assert reopened.getexif().get(0x010E) == "a description"
        assert np.array_equal(np.asarray(reopened), (image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
