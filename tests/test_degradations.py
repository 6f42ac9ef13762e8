import math

import numpy as np
import pytest
import torch

from turbosr.degradations import (
    RealESRGANConfig,
    bicubic_degrade,
    cubic,
    degrade_realesrgan,
    imresize,
    jpeg_compress,
    mixed_kernel,
    quantisation_table,
    resize_weights,
    sinc_kernel,
    upsample_lq,
)


def keys(x: float, a: float = -0.5) -> float:
    """Keys' cubic convolution kernel, written out independently."""
    x = abs(x)
    if x <= 1:
        return (a + 2) * x**3 - (a + 3) * x**2 + 1
    if x < 2:
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return 0.0


def test_cubic_kernel_values():
    xs = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, -0.5, 2.5], dtype=torch.float64)
    expected = torch.tensor([1.0, 0.5625, 0.0, -0.0625, 0.0, 0.5625, 0.0], dtype=torch.float64)
    assert torch.allclose(cubic(xs), expected)
    assert [keys(float(x)) for x in xs] == pytest.approx(expected.tolist())


def test_downscale_weights_match_matlab_rule_derived_in_numpy():
    in_length, scale = 12, 0.5
    indices, weights = resize_weights(in_length, 6, scale, antialias=True)
    for out_index in range(6):
        x = out_index + 1
        u = x / scale + 0.5 * (1 - 1 / scale)
        width = 4 / scale
        left = math.floor(u - width / 2)
        taps = np.arange(left, left + math.ceil(width) + 2)
        raw = np.array([scale * keys(scale * (u - j)) for j in taps])
        raw /= raw.sum()
        mirrored = [(j - 1) if 1 <= j <= in_length else (-j if j < 1 else 2 * in_length - j) for j in taps]
        dense_expected = np.zeros(in_length)
        for j, w in zip(mirrored, raw, strict=True):
            dense_expected[j] += w
        dense = np.zeros(in_length)
        for j, w in zip(indices[out_index].tolist(), weights[out_index].tolist(), strict=True):
            dense[j] += w
        assert dense == pytest.approx(dense_expected, abs=1e-12)
    assert torch.allclose(weights.sum(1), torch.ones(6, dtype=torch.float64))


def test_upscale_known_values_on_a_tiny_array():
    # x2 upscale of [0, 1, 2, 3]: interior output pixel 4 (1-based) sits at u = 2.25
    signal = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64).view(1, 1, 1, 4)
    out = imresize(signal, size=(1, 8))
    u = 4 / 2 + 0.5 * (1 - 1 / 2)
    expected = sum(keys(u - j) * v for j, v in zip(range(1, 5), [0.0, 1.0, 2.0, 3.0], strict=True))
    expected /= sum(keys(u - j) for j in range(0, 6))
    assert float(out[0, 0, 0, 3]) == pytest.approx(1.25)  # cubic interpolation is exact on a linear ramp
    assert float(out[0, 0, 0, 3]) == pytest.approx(expected, abs=1e-9)


def test_constants_stay_constant_and_ramps_stay_linear_inside():
    constant = torch.full((1, 3, 13, 9), 0.3, dtype=torch.float64)
    for scale in (0.25, 0.5, 2, 3):
        assert torch.allclose(imresize(constant, scale), torch.full_like(imresize(constant, scale), 0.3))
    ramp = torch.arange(16, dtype=torch.float64).view(1, 1, 1, 16).repeat(1, 1, 4, 1)
    up = imresize(ramp, 4)
    interior = up[0, 0, 0, 8:-8]
    steps = interior[1:] - interior[:-1]
    assert torch.allclose(steps, torch.full_like(steps, 0.25))


def test_shapes_dtype_and_errors():
    x = torch.rand(2, 3, 10, 14)
    assert imresize(x, 0.5).shape == (2, 3, 5, 7)
    assert imresize(x, size=(7, 3)).shape == (2, 3, 7, 3)
    assert imresize(x.double(), 2).dtype == torch.float64
    with pytest.raises(ValueError):
        imresize(x)
    with pytest.raises(ValueError):
        imresize(x, 2, size=(4, 4))
    with pytest.raises(ValueError, match="divisible"):
        bicubic_degrade(torch.rand(1, 3, 10, 10), 4)


def test_bicubic_degrade_and_upsample_ranges():
    hq = torch.rand(1, 3, 32, 32)
    lq = bicubic_degrade(hq, 4, quantize=True)
    assert lq.shape == (1, 3, 8, 8) and 0 <= float(lq.min()) and float(lq.max()) <= 1
    assert torch.allclose(lq * 255, (lq * 255).round(), atol=1e-4)
    up = upsample_lq(lq, 4)
    assert up.shape == hq.shape and 0 <= float(up.min()) and float(up.max()) <= 1


def test_kernels_sum_to_one_and_are_symmetric():
    for kind in ("iso", "aniso", "generalized_iso", "plateau_aniso"):
        kernel = mixed_kernel(kind, 15, 2.0, 1.0, 0.3, beta=1.5)
        assert float(kernel.sum()) == pytest.approx(1.0)
        assert torch.allclose(kernel, kernel.flip(0).flip(1))  # point symmetric
    sinc = sinc_kernel(21, math.pi / 3)
    assert float(sinc.sum()) == pytest.approx(1.0)
    assert int(sinc.argmax()) == 10 * 21 + 10


def test_realesrgan_shape_range_seed_and_identity_at_zero_strength():
    hq = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    a = degrade_realesrgan(hq, 4, generator=torch.Generator().manual_seed(1))
    b = degrade_realesrgan(hq, 4, generator=torch.Generator().manual_seed(1))
    c = degrade_realesrgan(hq, 4, generator=torch.Generator().manual_seed(2))
    assert a.shape == (3, 3, 16, 16) and 0 <= float(a.min()) and float(a.max()) <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    zero = degrade_realesrgan(hq, 4, RealESRGANConfig(strength=0.0), generator=torch.Generator().manual_seed(1))
    assert torch.equal(zero, bicubic_degrade(hq, 4))


def test_stronger_degradation_loses_more():
    hq = torch.nn.functional.interpolate(torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(3)),
                                         size=128, mode="bicubic").clamp(0, 1)
    reference = bicubic_degrade(hq, 4)
    errors = []
    for strength in (0.25, 1.0):
        lq = degrade_realesrgan(hq, 4, RealESRGANConfig(strength=strength), torch.Generator().manual_seed(5))
        errors.append(float((lq - reference).abs().mean()))
    assert errors[0] < errors[1]


def test_jpeg_has_8x8_block_structure():
    """On a smooth image, JPEG makes the jumps across 8-pixel block borders larger than inside blocks."""
    x = torch.linspace(0, 1, 64)
    smooth = (0.5 + 0.4 * torch.sin(6 * x[None, :] + 3 * x[:, None])).expand(1, 3, 64, 64).contiguous()
    compressed = jpeg_compress(smooth, 10)
    steps = (compressed[..., :, 1:] - compressed[..., :, :-1]).abs().mean(dim=(0, 1, 2))  # per column boundary
    at_borders = steps[7::8].mean()
    inside = torch.cat([steps[i::8] for i in range(7)]).mean()
    assert float(at_borders) > 2 * float(inside)
    assert torch.equal(jpeg_compress(smooth, 100), smooth)


def test_quantisation_tables_follow_libjpeg_scaling():
    base = torch.tensor([[16.0, 100.0]])
    assert quantisation_table(base, 50).tolist() == [[16.0, 100.0]]
    assert quantisation_table(base, 100).tolist() == [[1.0, 1.0]]
    assert quantisation_table(base, 25).tolist() == [[32.0, 200.0]]


def test_mixed_degradation_is_bicubic_or_blind_per_image_and_seeded():
    from turbosr.degradations import DEGRADATIONS, bicubic_degrade, degrade_mixed

    hq = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    first = DEGRADATIONS["mixed"](hq, 2, generator=torch.Generator().manual_seed(4))
    again = degrade_mixed(hq, 2, generator=torch.Generator().manual_seed(4))
    assert torch.equal(first, again)
    bicubic = bicubic_degrade(hq, 2)
    same = [torch.equal(a, b) for a, b in zip(first, bicubic, strict=True)]
    chosen = torch.rand(8, generator=torch.Generator().manual_seed(4)) < 0.5
    assert same == [not bool(c) for c in chosen] and 0 < sum(same) < 8
    assert torch.equal(degrade_mixed(hq, 2, generator=torch.Generator().manual_seed(4), blind_fraction=0.0), bicubic)
