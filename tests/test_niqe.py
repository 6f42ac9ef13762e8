import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("scipy")

from turbosr.metrics import get_metrics  # noqa: E402
from turbosr.metrics.niqe import aggd_fit, niqe  # noqa: E402

# NIQE values computed by BasicSR 1.4.2's own implementation (calculate_niqe, Y channel) on the same
# synthetic images, in a scratch environment; see docs/metrics.md.
BASICSR_REFERENCE = {0: 9.365540934762526, 1: 9.982521116821914}


def synthetic(seed: int) -> np.ndarray:
    rng = np.random.RandomState(seed)
    image = np.zeros((288, 288, 3))
    for size in (9, 36, 144):
        noise = rng.rand(size, size, 3)
        image += np.asarray(Image.fromarray((noise * 255).astype(np.uint8)).resize((288, 288), Image.BICUBIC),
                            dtype=np.float64) / 3
    return image.clip(0, 255).round().astype(np.uint8)


def as_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].double() / 255


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_basicsr_reference_values(seed):
    assert float(niqe(as_tensor(synthetic(seed)))[0]) == pytest.approx(BASICSR_REFERENCE[seed], abs=1e-3)


def test_blurred_photo_scores_worse_than_sharp():
    from turbosr.corpus import sample_path
    from turbosr.image_files import load_image

    photo = load_image(sample_path("astronaut")).rgb  # 128 x 128: mirror-tile to 256 x 256 (4 NIQE blocks)
    row = torch.cat([photo, photo.flip(-1)], -1)
    sharp = torch.cat([row, row.flip(-2)], -2)
    blurred = torch.nn.functional.avg_pool2d(sharp, 5, 1, 2)
    assert float(niqe(blurred)[0]) > float(niqe(sharp)[0]) + 1


def test_aggd_fit_recovers_a_gaussian_shape():
    values = np.random.RandomState(0).randn(200_000)
    alpha, left, right = aggd_fit(values)
    assert alpha == pytest.approx(2.0, abs=0.05)
    assert left == pytest.approx(right, rel=0.02)


def test_metric_protocol_and_size_error():
    metric = get_metrics(["niqe"])[0]
    assert not metric.higher_is_better and not metric.needs_reference
    with pytest.raises(ValueError, match="at least 96"):
        niqe(torch.rand(1, 3, 64, 64))
