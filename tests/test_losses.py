import pytest
import torch

from turbosr.losses import (
    edge_loss,
    frequency_loss,
    image_loss,
    l1_loss,
    ssim_loss,
    timestep_adaptive_weight,
)
from turbosr.run_config import ImageLossConfig


def test_losses_are_zero_for_identical_images_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, 32, 32, generator=g), torch.rand(2, 3, 32, 32, generator=g)
    for loss in (l1_loss, ssim_loss, edge_loss, frequency_loss):
        assert float(loss(a, a)) < 1e-6
        assert float(loss(a, b)) > 1e-3


def test_image_loss_is_float32_even_under_bfloat16_autocast():
    """bf16 SSIM cancels catastrophically; image_loss must match its float32 value inside autocast."""
    g = torch.Generator().manual_seed(1)
    target = torch.rand(2, 3, 48, 48, generator=g)
    prediction = (target * 0.9 + 0.05).requires_grad_()
    reference = image_loss(prediction, target, ImageLossConfig())["total"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = image_loss(prediction, target, ImageLossConfig())["total"]
    assert mixed.dtype == torch.float32
    assert mixed.item() == reference.item()
    weights = ImageLossConfig(l1=1.0, ssim=0.0, edge=0.0)
    terms = image_loss(prediction, target, weights)
    assert set(terms) == {"l1", "total"}


def test_timestep_adaptive_weights_are_the_published_constants():
    steps = torch.arange(4)
    expected = [0.5 * 2.1**k for k in range(4)]  # 0.5, 1.05, 2.205, 4.6305
    assert torch.allclose(timestep_adaptive_weight(steps), torch.tensor(expected))
    assert torch.allclose(timestep_adaptive_weight(steps, "linear"), torch.tensor([0.7, 0.9, 1.1, 1.3]))
    assert torch.equal(timestep_adaptive_weight(steps, "fixed"), torch.ones(4))
    assert torch.all(timestep_adaptive_weight(steps)[1:] > timestep_adaptive_weight(steps)[:-1])
    with pytest.raises(ValueError, match="unknown weighting form"):
        timestep_adaptive_weight(steps, "cosine")



def test_grid_loss_is_zero_for_the_target_and_sees_only_a_periodic_pattern():
    from turbosr.losses import grid_loss

    generator = torch.Generator().manual_seed(0)
    target = torch.nn.functional.avg_pool2d(torch.rand(2, 3, 260, 260, generator=generator), 5, 1)
    assert float(grid_loss(target, target)) == 0.0
    noise = target + 0.02 * torch.randn(target.shape, generator=generator)  # unstructured: every phase alike
    pattern = target.clone()
    pattern[..., :, ::8] += 0.02  # the same amount of change, on one phase of 8
    assert float(grid_loss(pattern, target)) > 3 * float(grid_loss(noise, target))
    shifted = target.roll(3, dims=-1)  # content moves, no phase gains or loses gradient: small
    assert float(grid_loss(shifted, target)) < 0.5 * float(grid_loss(pattern, target))


def test_lattice_loss_sees_a_diagonal_hatch_more_than_noise_and_trains_it_away():
    import math

    from conftest import photo_like
    from turbosr.losses import lattice_loss

    target = torch.cat([photo_like(seed, 128) for seed in range(4)])
    assert float(lattice_loss(target, target)) == 0.0
    rows, columns = torch.meshgrid(torch.arange(128), torch.arange(128), indexing="ij")
    hatch = torch.cos(2 * math.pi * ((rows + columns) % 8) / 8) * 2 / 255  # stamped on every 8 x 8 patch
    noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(1)) * 2 / 255  # as strong, no lattice
    blurred = torch.nn.functional.avg_pool2d(target, 3, 1, 1)  # less power everywhere than the photo: no penalty
    assert float(lattice_loss(blurred, target)) == 0.0
    assert float(lattice_loss(blurred + hatch, target)) > 2 * float(lattice_loss(target + noise, target))
    # its gradient removes the hatch: a few steps on the image lower the loss
    image = (blurred + hatch).clone().requires_grad_(True)
    optimiser = torch.optim.Adam([image], lr=1e-3)
    start = float(lattice_loss(image.detach(), target))
    for _ in range(20):
        optimiser.zero_grad()
        lattice_loss(image, target).backward()
        optimiser.step()
    assert float(lattice_loss(image.detach(), target)) < 0.5 * start
