import pytest
import torch

from turbosr.models import MODEL_PRESETS, PatchAutoencoder, build_model, model_config


def test_patch_autoencoder_full_rank_is_exact_and_truncated_is_unit_variance():
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    full = PatchAutoencoder(4, 48)
    full.fit(images)
    assert torch.allclose(full.decode(full.encode(images)), images, atol=1e-5)
    small = PatchAutoencoder(4, 6)
    explained = small.fit(images)
    latents = small.encode(images)
    assert latents.shape == (3, 6, 8, 8)
    assert torch.allclose(latents.std(dim=(0, 2, 3)), torch.ones(6), atol=0.02)
    assert torch.all(explained[:-1] >= explained[1:])
    # orthonormal basis: decode(encode(x)) is the orthogonal projection, so applying it twice changes nothing
    once = small.decode(small.encode(images))
    assert torch.allclose(small.decode(small.encode(once)), once, atol=1e-5)


def test_patch_fit_is_deterministic():
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    a, b = PatchAutoencoder(4, 5), PatchAutoencoder(4, 5)
    a.fit(images)
    b.fit(images)
    assert torch.equal(a.basis, b.basis)


def test_refiner_starts_as_exact_linear_inverse():
    ae = PatchAutoencoder(4, 8, refine_channels=8)
    z = torch.randn(1, 8, 4, 4)
    assert torch.equal(ae.decode(z), ae.decode_linear(z))


def test_without_refiner_keeps_the_latent_space_and_drops_the_trained_refiner():
    ae = PatchAutoencoder(4, 8, refine_channels=8)
    ae.fit(torch.rand(2, 3, 16, 16) * 2 - 1)
    torch.nn.init.normal_(ae.refiner[-1].weight)  # as if fine-tuned: decode now differs from the linear inverse
    z, images = torch.randn(1, 8, 4, 4), torch.rand(1, 3, 16, 16)
    plain = ae.without_refiner()
    assert plain.refiner is None and plain.config()["refine_channels"] == 0
    assert not torch.allclose(ae.decode(z), ae.decode_linear(z))
    assert torch.equal(plain.decode(z), ae.decode_linear(z)) and torch.equal(plain.encode(images), ae.encode(images))


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_untrained_residual_model_reproduces_the_lq_latent(preset):
    """Zero output layer + residual target: at the last timestep x0 = 0, i.e. exactly bicubic."""
    config = model_config(preset)
    denoiser, autoencoder = build_model(config)
    latent = torch.randn(1, autoencoder.latent_channels, 8, 8)
    with torch.no_grad():
        output = denoiser(torch.randn_like(latent), latent, 999)
    assert torch.count_nonzero(output) == 0
    assert torch.equal(denoiser.from_x0(torch.zeros_like(latent), latent), latent)


def test_x0_conversions_invert_each_other():
    denoiser, _ = build_model(model_config("tiny"))
    denoiser.residual_scale.copy_(torch.linspace(0.5, 2.0, 8))
    hq, lq = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4)
    assert torch.allclose(denoiser.from_x0(denoiser.to_x0(hq, lq), lq), hq, atol=1e-6)


def test_presets_have_documented_shapes():
    assert set(MODEL_PRESETS) == {"tiny", "small", "sd"}
    denoiser, _ = build_model(model_config("small"))
    params = sum(p.numel() for p in denoiser.parameters())
    assert 10e6 < params < 20e6  # fp16 weights stay far below the 40 MB budget
