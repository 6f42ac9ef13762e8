import pytest
import torch
from PIL import Image

from turbosr.models import build_model, model_config
from turbosr.pipeline import SRPipeline


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_output_is_exactly_scale_times_input(scale):
    config = model_config("tiny", scale=scale)
    pipeline = SRPipeline(*build_model(config), config)
    lq = torch.rand(2, 3, 13, 17)
    out = pipeline(lq, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 13 * scale, 17 * scale)
    assert out.dtype == lq.dtype and 0 <= out.min() and out.max() <= 1


def test_untrained_residual_model_is_bicubic(lq_image):
    """Zero output layer, residual target, full-rank latent: the one-step output is the bicubic upsampling."""
    from turbosr.degradations import upsample_lq

    config = model_config("tiny", scale=4, latent_channels=48)
    denoiser, autoencoder = build_model(config)
    autoencoder.fit(torch.rand(2, 3, 32, 32) * 2 - 1)
    out = SRPipeline(denoiser, autoencoder, config)(lq_image, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, upsample_lq(lq_image, 4), atol=2e-5)


def test_same_seed_same_output_different_seed_differs(tiny_pipeline, lq_image):
    a = tiny_pipeline(lq_image, generator=torch.Generator().manual_seed(5))
    b = tiny_pipeline(lq_image, generator=torch.Generator().manual_seed(5))
    c = tiny_pipeline(lq_image, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_save_load_bit_identical(tiny_pipeline, lq_image, tmp_path):
    tiny_pipeline.save_pretrained(tmp_path / "model")
    loaded = SRPipeline.from_pretrained(tmp_path / "model")
    for key, value in tiny_pipeline.denoiser.state_dict().items():
        assert torch.equal(value, loaded.denoiser.state_dict()[key]), key
    for key, value in tiny_pipeline.autoencoder.state_dict().items():
        assert torch.equal(value, loaded.autoencoder.state_dict()[key]), key
    out_a = tiny_pipeline(lq_image, num_steps=2, generator=torch.Generator().manual_seed(1))
    out_b = loaded(lq_image, num_steps=2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out_a, out_b)
    assert not list(tmp_path.glob("model/*.tmp"))



def test_the_sampler_is_stored_beside_the_network_shape_and_old_folders_still_load(tiny_pipeline, lq_image,
                                                                                    tmp_path):
    """config.json: "model" is the networks' shape only, "sampler" how the model samples. A folder written before
    the split (sampler fields among the model's) loads to the same sampler and the same output."""
    import json

    from turbosr.diffusion import Sampler

    student = tiny_pipeline.replace(sampler=Sampler("renoise", 0.25, 4))
    student.save_pretrained(tmp_path / "new")
    meta = json.loads((tmp_path / "new" / "config.json").read_text())
    assert meta["sampler"] == {"kind": "renoise", "psr_weight": 0.25, "trained_steps": 4}
    assert not {"sampler", "psr_weight", "sampler_steps"} & set(meta["model"])
    assert SRPipeline.from_pretrained(tmp_path / "new").sampler == Sampler("renoise", 0.25, 4)

    (tmp_path / "old").mkdir()
    for file in (tmp_path / "new").iterdir():
        (tmp_path / "old" / file.name).write_bytes(file.read_bytes())
    old = {**meta, "model": {**meta["model"], "sampler": "renoise", "psr_weight": 0.25, "sampler_steps": 4}}
    del old["sampler"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(old))
    loaded = SRPipeline.from_pretrained(tmp_path / "old")
    assert loaded.sampler == Sampler("renoise", 0.25, 4)
    seed = torch.Generator().manual_seed(3)
    assert torch.equal(loaded(lq_image, num_steps=2, generator=seed),
                       student(lq_image, num_steps=2, generator=torch.Generator().manual_seed(3)))

    broken = {**meta, "sampler": {"kind": "renoise", "psr_weight": 2.0}}
    (tmp_path / "old" / "config.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="psr_weight must be a number in"):
        SRPipeline.from_pretrained(tmp_path / "old")

def test_load_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        SRPipeline.from_pretrained(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not a turbosr model folder"):
        SRPipeline.from_pretrained(tmp_path / "bad")


def test_lowest_strength_keeps_the_bicubic_estimate(tiny_pipeline, lq_image):
    """At the smallest strength sampling starts at t = 0 from the bicubic estimate, where any model returns
    (almost) its input: the output is the encode/decode of the bicubic upsampling, whatever the weights."""
    from turbosr.degradations import upsample_lq
    from turbosr.image import from_model_range, to_model_range
    from turbosr.metrics import psnr

    kept = tiny_pipeline(lq_image, num_steps=4, strength=1e-4, generator=torch.Generator().manual_seed(0))
    autoencoder = tiny_pipeline.autoencoder
    reconstruction = from_model_range(autoencoder.decode(autoencoder.encode(to_model_range(upsample_lq(lq_image, 4)))))
    assert float(psnr(kept, reconstruction)) > 40
    full = tiny_pipeline(lq_image, num_steps=4, generator=torch.Generator().manual_seed(0))
    assert float(psnr(full, reconstruction)) < float(psnr(kept, reconstruction)) - 5


@pytest.mark.parametrize("kind", ["ddim", "renoise"])
def test_tiled_equals_untiled_for_a_pointwise_denoiser(lq_image, kind, monkeypatch):
    """A denoiser of 1x1 convolutions is pointwise, so Gaussian-weighted tiles must reproduce the untiled result,
    under either update rule; and each tile runs its whole step: neither the network nor the noise ever sees
    more than one latent tile (this is what keeps memory flat in the image size)."""
    from turbosr import pipeline as pipeline_module
    from turbosr.diffusion import Sampler

    config = model_config("tiny", scale=4)
    denoiser, autoencoder = build_model(config)
    autoencoder.fit(torch.rand(2, 3, 32, 32) * 2 - 1)
    network_sizes: list[tuple[int, int]] = []
    noise_sizes: list[tuple[int, int]] = []

    class Pointwise(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(16, 8, 1)
            self.config = denoiser.unet.config

        def forward(self, x, t):
            network_sizes.append(tuple(x.shape[-2:]))

            class Out:
                pass
            out = Out()
            out.sample = torch.tanh(self.conv(x)) * (1 + t.float().view(-1, 1, 1, 1) / 1000)
            return out

    def keyed_noise(seed, step, shape, rows=None, cols=None):
        noise_sizes.append((rows[1] - rows[0], cols[1] - cols[0]))
        return real_noise(seed, step, shape, rows, cols)

    real_noise = pipeline_module.keyed_noise
    monkeypatch.setattr(pipeline_module, "keyed_noise", keyed_noise)
    denoiser.unet = Pointwise()
    pipeline = SRPipeline(denoiser, autoencoder, config, sampler=Sampler(kind))
    lq = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(2))
    whole = pipeline(lq, tile=256, num_steps=2, generator=torch.Generator().manual_seed(0))
    factor = autoencoder.factor
    latent = (160 // factor, 224 // factor)
    assert set(network_sizes) == {latent} and set(noise_sizes) == {latent}  # one window: the whole latent
    network_sizes.clear(), noise_sizes.clear()
    tiled = pipeline(lq, tile=64, tile_overlap=16, num_steps=2, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(whole, tiled, atol=1e-5)
    latent_tile = 64 // factor
    assert max(max(size) for size in network_sizes + noise_sizes) == latent_tile < min(latent)
    assert len(noise_sizes) == (len(network_sizes) if kind == "renoise" else len(network_sizes) // 2)


def test_real_unet_tile_borders_are_not_worse_than_elsewhere(tiny_pipeline):
    lq = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(3))
    whole = tiny_pipeline(lq, tile=256, generator=torch.Generator().manual_seed(0))
    tiled = tiny_pipeline(lq, tile=96, tile_overlap=32, generator=torch.Generator().manual_seed(0))
    difference = (whole - tiled).abs().mean(dim=(0, 1))
    assert float(difference.mean()) < 0.05
    from turbosr.tiling import plan_tiles

    borders = torch.zeros(192, 192, dtype=torch.bool)
    for tile in plan_tiles(192, 192, 96, 32):
        for y in (tile.y0, tile.y1 - 1):
            borders[y, tile.x0 : tile.x1] = True
        for x in (tile.x0, tile.x1 - 1):
            borders[tile.y0 : tile.y1, x] = True
    borders[[0, -1], :] = False
    borders[:, [0, -1]] = False
    inner = difference[borders].mean()
    assert inner <= 2.0 * difference.mean() + 1e-6


def test_pil_in_pil_out_keeps_alpha(tiny_pipeline):
    image = Image.new("RGBA", (12, 10), (200, 30, 40, 128))
    out = tiny_pipeline(image, generator=torch.Generator().manual_seed(0))
    assert isinstance(out, Image.Image)
    assert out.size == (48, 40) and out.mode == "RGBA"
    assert abs(out.getpixel((20, 20))[3] - 128) <= 1


def test_bad_arguments(tiny_pipeline, lq_image):
    with pytest.raises(ValueError, match="tile must be"):
        tiny_pipeline(lq_image, tile=30)
    with pytest.raises(ValueError, match="tile_overlap"):
        tiny_pipeline(lq_image, tile=64, tile_overlap=64)
    with pytest.raises(ValueError, match="color_fix"):
        tiny_pipeline(lq_image, color_fix="sepia")
    with pytest.raises(ValueError, match="expected a PIL image"):
        tiny_pipeline(torch.rand(3, 8, 8))


@pytest.mark.parametrize("fix", ["adain", "wavelet"])
def test_color_fix_matches_the_bicubic_input_after_sampling(tiny_pipeline, lq_image, fix):
    """The pipeline's colour fix is the named correction of the sampled output against the bicubic-upsampled
    input, then clamped (not of the input, not before decoding)."""
    from turbosr.colorfix import COLOR_FIXES
    from turbosr.degradations import upsample_lq

    out = tiny_pipeline(lq_image, color_fix=fix, generator=torch.Generator().manual_seed(0))
    plain = tiny_pipeline(lq_image, color_fix="none", generator=torch.Generator().manual_seed(0))
    reference = upsample_lq(lq_image, 4)
    assert out.shape == (1, 3, 80, 112)
    assert torch.allclose(out, COLOR_FIXES[fix](plain, reference).clamp(0, 1), atol=1e-6)
    assert not torch.allclose(out, plain, atol=1e-3)  # the correction does act on this output
    if fix == "adain":  # AdaIN: the per-channel means are the reference's
        assert torch.allclose(out.mean((-2, -1)), reference.mean((-2, -1)), atol=2e-3)


def test_sd_preset_from_a_fake_local_folder(tmp_path, lq_image):
    """Preset sd: UNet conv_in widened with zero weights for the condition; VAE reused; prompt embedding stored."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    folder = tmp_path / "fake-sd"
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=4,
    )
    unet.save_pretrained(folder / "unet")
    vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8,
                        layers_per_block=1)
    vae.save_pretrained(folder / "vae")
    from turbosr.models.presets import build_model as build

    config = model_config("sd", scale=2, sd_path=str(folder))
    denoiser, autoencoder = build(config)
    assert denoiser.unet.conv_in.in_channels == 8
    assert torch.equal(denoiser.unet.conv_in.weight[:, :4], unet.conv_in.weight)
    assert torch.count_nonzero(denoiser.unet.conv_in.weight[:, 4:]) == 0
    assert denoiser.prompt_embedding.shape == (1, 77, 16)
    # with zero condition weights the widened UNet computes exactly what the original did
    x, t = torch.randn(1, 4, 8, 8), torch.tensor([10])
    context = denoiser.prompt_embedding
    with torch.no_grad():
        assert torch.allclose(denoiser(x, torch.randn(1, 4, 8, 8), t), unet(x, t, encoder_hidden_states=context).sample,
                              atol=1e-5)
    from turbosr.models.presets import describe_loaded

    pipeline = SRPipeline(denoiser, autoencoder, describe_loaded(config, denoiser, autoencoder))
    out = pipeline(lq_image[..., :16, :16], generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 32, 32)
    pipeline.save_pretrained(tmp_path / "saved")
    again = SRPipeline.from_pretrained(tmp_path / "saved")
    assert torch.equal(again(lq_image[..., :16, :16], generator=torch.Generator().manual_seed(0)), out)
    with pytest.raises(FileNotFoundError, match="not a diffusers Stable Diffusion folder"):
        build(model_config("sd", sd_path=str(tmp_path)))


def test_bfloat16_pipeline_matches_float32(tiny_pipeline, lq_image):
    from turbosr.metrics import psnr

    reference = tiny_pipeline(lq_image, generator=torch.Generator().manual_seed(0))
    tiny_pipeline.to(dtype=torch.bfloat16)
    low = tiny_pipeline(lq_image, generator=torch.Generator().manual_seed(0))
    assert low.dtype == lq_image.dtype and low.shape == reference.shape
    assert float(psnr(low, reference)) > 35


@pytest.mark.parametrize("target", ["residual", "latent"])
def test_strength_below_one_starts_from_the_noised_bicubic_estimate(tiny_config, target):
    """x_start = sqrt(ab_t0) * x0_bicubic + sqrt(1 - ab_t0) * noise, where x0_bicubic is the LQ latent expressed as
    the diffusion variable: 0 for the residual target, the LQ latent itself for the latent target."""
    import dataclasses

    from turbosr.diffusion import add_noise, keyed_noise, noise_seed, sampling_timesteps

    config = dataclasses.replace(tiny_config, target=target)
    denoiser, autoencoder = build_model(config)
    pipeline = SRPipeline(denoiser, autoencoder, config)
    lq_latent = torch.randn(1, config.latent_channels, 8, 8, generator=torch.Generator().manual_seed(1)) + 2.0
    seen = []
    forward = pipeline.denoiser.forward
    pipeline.denoiser.forward = lambda x_t, condition, t, control=None: (seen.append(x_t.clone())
                                                                         or forward(x_t, condition, t, control))
    pipeline.denoise_latents(lq_latent, num_steps=2, strength=0.5, generator=torch.Generator().manual_seed(3))
    first = sampling_timesteps(2, config.schedule.num_train_timesteps, 0.5)[0]
    noise = keyed_noise(noise_seed(torch.Generator().manual_seed(3)), 0, tuple(lq_latent.shape))
    bicubic_x0 = lq_latent if target == "latent" else torch.zeros_like(lq_latent)
    expected = add_noise(bicubic_x0, noise, torch.tensor([first]), pipeline.alpha_bar)
    assert torch.allclose(seen[0], expected, atol=1e-5)


def test_min_side_makes_small_outputs_at_that_size_and_resizes_them_back(tiny_pipeline, tmp_path):
    """AddSR's and SeeSR's scripts (process_size 512): an output whose shorter side is below min_side is made from
    the LR enlarged to min_side // scale on its shorter side and resized to the asked-for size; larger outputs
    are untouched; the folder keeps the field."""
    from turbosr.degradations import imresize

    lq = torch.rand(1, 3, 8, 12, generator=torch.Generator().manual_seed(2))
    small = tiny_pipeline.replace(min_side=64)
    out = small(lq, generator=torch.Generator().manual_seed(0))
    enlarged = imresize(lq, size=(16, 24)).clamp(0, 1)  # 64 // 4 = 16 on the shorter side
    expected = imresize(tiny_pipeline(enlarged, generator=torch.Generator().manual_seed(0)), size=(32, 48)).clamp(0, 1)
    assert out.shape == (1, 3, 32, 48) and torch.allclose(out, expected, atol=1e-6)
    assert not torch.allclose(out, tiny_pipeline(lq, generator=torch.Generator().manual_seed(0)), atol=1e-3)
    big = torch.rand(1, 3, 20, 20, generator=torch.Generator().manual_seed(3))  # 80 >= 64: as without it
    assert torch.equal(small(big, generator=torch.Generator().manual_seed(0)),
                       tiny_pipeline(big, generator=torch.Generator().manual_seed(0)))
    small.save_pretrained(tmp_path / "m")
    assert SRPipeline.from_pretrained(tmp_path / "m").min_side == 64
    with pytest.raises(ValueError, match="min_side"):
        tiny_pipeline.replace(min_side=-1)
