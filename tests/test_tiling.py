import random

import pytest
import torch
import torch.nn.functional as F

from turbosr.tiling import gaussian_weights, plan_tiles, tiled_map


def test_plan_tiles_covers_every_pixel_with_full_size_tiles():
    rng = random.Random(0)
    for _ in range(200):
        height, width = rng.randint(1, 300), rng.randint(1, 300)
        tile = rng.randint(2, 128)
        overlap = rng.randint(0, tile - 1)
        tiles = plan_tiles(height, width, tile, overlap)
        covered = torch.zeros(height, width, dtype=torch.int32)
        for t in tiles:
            assert 0 <= t.y0 < t.y1 <= height and 0 <= t.x0 < t.x1 <= width
            assert t.y1 - t.y0 == min(tile, height) and t.x1 - t.x0 == min(tile, width)
            covered[t.y0 : t.y1, t.x0 : t.x1] += 1
        assert int(covered.min()) >= 1


def test_plan_tiles_errors():
    with pytest.raises(ValueError, match="positive"):
        plan_tiles(10, 10, 0, 0)
    with pytest.raises(ValueError, match="overlap"):
        plan_tiles(10, 10, 8, 8)


def test_gaussian_weights_positive_peaked_and_follow_dtype():
    w = gaussian_weights(9, 12, dtype=torch.float64)
    assert w.shape == (1, 1, 9, 12) and w.dtype == torch.float64
    assert float(w.min()) > 0 and float(w.max()) <= 1
    assert w[0, 0, 4, 5] > w[0, 0, 0, 0]


@pytest.mark.parametrize(("height", "width"), [(64, 64), (70, 93), (33, 130)])
def test_pointwise_functions_tiled_equal_untiled(height, width):
    x = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(0))
    conv = torch.nn.Conv2d(3, 5, 1)
    with torch.no_grad():
        whole = conv(x)
        tiled = tiled_map(lambda t, _: conv(t), x, tile=24, overlap=8)
    assert torch.allclose(whole, tiled, atol=1e-6)


def test_decoder_and_encoder_scales_map_tiles_exactly():
    x = torch.randn(1, 4, 20, 28)
    decode = lambda t, _: F.interpolate(t, scale_factor=8, mode="nearest") * 2  # noqa: E731
    assert torch.allclose(tiled_map(decode, x, 8, 4, out_scale=8), decode(x, None), atol=1e-6)
    image = torch.randn(1, 3, 96, 160)
    encode = lambda t, _: F.avg_pool2d(t, 8)  # noqa: E731
    assert torch.allclose(tiled_map(encode, image, 64, 16, out_scale=1 / 8), encode(image, None), atol=1e-6)
    with pytest.raises(ValueError, match="divisible"):
        tiled_map(encode, image, 60, 16, out_scale=1 / 8)


def test_fast_path_calls_once_and_tiles_are_bounded():
    calls = []

    def fn(t, tile):
        calls.append(tuple(t.shape[-2:]))
        return t

    x = torch.randn(1, 1, 40, 40)
    tiled_map(fn, x, 64, 8)
    assert calls == [(40, 40)]
    calls.clear()
    tiled_map(fn, torch.randn(1, 1, 100, 130), 32, 8)
    assert len(calls) == len(plan_tiles(100, 130, 32, 8)) and all(h <= 32 and w <= 32 for h, w in calls)


def test_blur_seams_are_not_worse_at_tile_borders():
    """A 3x3 blur (receptive field 1 px) with overlap 8: tiled output matches away from image borders, and
    the error at tile borders is no larger than elsewhere."""
    x = torch.randn(1, 1, 96, 96, generator=torch.Generator().manual_seed(1))
    kernel = torch.full((1, 1, 3, 3), 1 / 9)
    blur = lambda t, _: F.conv2d(F.pad(t, (1, 1, 1, 1), mode="replicate"), kernel)  # noqa: E731
    error = (tiled_map(blur, x, 32, 8) - blur(x, None)).abs()[0, 0]
    interior = error[2:-2, 2:-2]
    assert float(interior.max()) < 0.05  # blended edge effects are small
    assert float(interior.mean()) < 0.01
