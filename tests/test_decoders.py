"""The learned latent decoder with CFW (models/decoders.py) and its training (turbosr train decoder): it starts as
the linear decoder, sees no further than its stated receptive radius (so halo tiling is exact), w = 0 is exactly
the decoder without CFW, and training changes what it should and nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import TINY_SHAPE, randomised, tiny_model_with_learned_decoder
from turbosr.config import load_config
from turbosr.models.autoencoders import PatchAutoencoder
from turbosr.models.decoders import LatentDecoder
from turbosr.pipeline import SRPipeline
from turbosr.tiling import tiled_map


def test_a_new_decoder_decodes_exactly_as_the_linear_one():
    plain = PatchAutoencoder(4, 8)
    plain.fit(torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    learned = plain.with_decoder(TINY_SHAPE)
    latents = torch.randn(2, 8, 9, 7)
    assert torch.equal(learned.decode(latents), plain.decode(latents))
    assert torch.equal(learned.decode(latents, latents.flip(0), 1.0), plain.decode(latents))  # CFW starts at zero


def test_an_impulse_reaches_exactly_as_far_as_the_receptive_radius_says():
    decoder = randomised(LatentDecoder(8, 4, (16, 8), (1, 1), (), (8, 4))).eval()
    radius, factor = decoder.receptive_radius, 4
    for fidelity in (0.0, 1.0):
        base = torch.zeros(1, 8, 41, 41)
        bumped = base.clone()
        bumped[..., 20, 20] = 1.0  # in the latent and the LQ latent alike
        with torch.no_grad():
            change = (decoder(bumped, bumped, fidelity) - decoder(base, base, fidelity)).abs().sum(dim=(0, 1))
        rows = torch.nonzero(change.sum(1) > 1e-7).flatten()
        reach = max(20 * factor - int(rows.min()), int(rows.max()) - (21 * factor - 1))  # output px beyond the patch
        assert 0 < reach <= radius * factor
    assert reach > (radius - 1) * factor  # with CFW on, the radius is not a loose bound either


@pytest.mark.parametrize("fidelity", [0.0, 0.7])
def test_halo_tiling_equals_untiled_decoding(fidelity):
    decoder = randomised(LatentDecoder(8, 4, (16, 8), (1, 1), (), (8, 4))).eval()
    latents, lq_latent = torch.randn(1, 8, 37, 45), torch.randn(1, 8, 37, 45)
    stacked = torch.cat([latents, lq_latent], dim=1)

    def decode(x: torch.Tensor, _: object) -> torch.Tensor:
        return decoder(x[:, :8], x[:, 8:], fidelity)

    with torch.no_grad():
        whole = decode(stacked, None)
        tiled = tiled_map(decode, stacked, 16, decoder.receptive_radius, out_scale=4, aggregation="crop")
        short = tiled_map(decode, stacked, 16, decoder.receptive_radius - 2, out_scale=4, aggregation="crop")
    assert torch.allclose(tiled, whole, atol=1e-5 * float(whole.abs().max()))
    if fidelity:  # the radius counts the CFW paths: with CFW on, a shorter halo is noticed
        assert not torch.allclose(short, whole, atol=1e-3 * float(whole.abs().max()))


def test_cfw_at_zero_is_exactly_the_decoder_without_it():
    autoencoder = PatchAutoencoder(4, 8, 0, TINY_SHAPE)
    randomised(autoencoder.decoder)
    bare = autoencoder.without_cfw()
    assert not bare.has_cfw and autoencoder.has_cfw
    latents, lq_latent = torch.randn(1, 8, 6, 5), torch.randn(1, 8, 6, 5)
    with torch.no_grad():
        assert torch.equal(autoencoder.decode(latents, lq_latent, 0.0), bare.decode(latents))
        assert not torch.allclose(autoencoder.decode(latents, lq_latent, 1.0), bare.decode(latents))


def test_pipeline_with_a_learned_decoder_saves_loads_and_tiles(tmp_path):
    config, denoiser, autoencoder = tiny_model_with_learned_decoder()
    with torch.no_grad():  # keep the decoder's residual small, like a trained one
        autoencoder.decoder.to_rgb.conv.weight.mul_(0.05)
    pipeline = SRPipeline(denoiser, autoencoder, config)
    assert pipeline.has_cfw
    lq = torch.rand(1, 3, 40, 36, generator=torch.Generator().manual_seed(1))
    out = pipeline(lq, fidelity=0.5, generator=torch.Generator().manual_seed(0))
    pipeline.save_pretrained(tmp_path / "model")
    loaded = SRPipeline.from_pretrained(tmp_path / "model")
    assert torch.equal(loaded(lq, fidelity=0.5, generator=torch.Generator().manual_seed(0)), out)
    # compact storage: the decoder's parameters in float16, the analytic latent (basis, statistics) float32
    from safetensors.torch import load_file

    pipeline.save_pretrained(tmp_path / "half", storage="float16")
    stored = load_file(tmp_path / "half" / "autoencoder.safetensors")
    assert {v.dtype for k, v in stored.items() if k.startswith("decoder.")} == {torch.float16}
    assert all(v.dtype == torch.float32 for k, v in stored.items() if not k.startswith("decoder."))
    half = SRPipeline.from_pretrained(tmp_path / "half")
    for name, value in half.autoencoder.state_dict().items():
        assert torch.equal(value, autoencoder.state_dict()[name].half().float() if name.startswith("decoder.")
                           and value.is_floating_point() and name in dict(autoencoder.named_parameters())
                           else autoencoder.state_dict()[name]), name
    # a single latent tile vs several: the decoder is tiled exactly, only the denoiser's blending differs
    latent = pipeline.denoise_latents(torch.randn(1, 8, 40, 36, generator=torch.Generator().manual_seed(2)))
    condition = torch.randn(latent.shape, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        whole = pipeline.decode(latent, condition, 0.5)
        tiled = pipeline.decode(latent, condition, 0.5, latent_tile=8)
    assert torch.allclose(whole, tiled, atol=1e-5)


def test_a_folders_default_fidelity_is_the_weight_a_call_without_one_runs_at(tmp_path):
    config, denoiser, autoencoder = tiny_model_with_learned_decoder()
    lq = torch.rand(1, 3, 40, 36, generator=torch.Generator().manual_seed(1))

    def run(model: SRPipeline, fidelity: float | None) -> torch.Tensor:
        return model(lq, fidelity=fidelity, generator=torch.Generator().manual_seed(0))

    plain = SRPipeline(denoiser, autoencoder, config)
    assert plain.default_fidelity == 0.0 and torch.equal(run(plain, None), run(plain, 0.0))
    faithful = plain.replace(default_fidelity=1.0)
    assert torch.equal(run(faithful, None), run(plain, 1.0))
    assert torch.equal(run(faithful, 0.0), run(plain, 0.0))  # an explicit w wins
    assert not torch.allclose(run(faithful, None), run(faithful, 0.0))
    # it is part of the folder; a folder without the field (older ones) means 0
    faithful.save_pretrained(tmp_path / "model")
    loaded = SRPipeline.from_pretrained(tmp_path / "model")
    assert loaded.default_fidelity == 1.0 and torch.equal(run(loaded, None), run(faithful, None))
    meta = json.loads((tmp_path / "model" / "config.json").read_text())
    (tmp_path / "model" / "config.json").write_text(json.dumps({k: v for k, v in meta.items()
                                                                if k != "default_fidelity"}))
    assert SRPipeline.from_pretrained(tmp_path / "model").default_fidelity == 0.0
    # and it is checked like --fidelity: in [0, 1], and only on a model that has CFW
    from turbosr.pipeline import ModelFolderError

    for bad in (1.5, "1", True):
        (tmp_path / "model" / "config.json").write_text(json.dumps({**meta, "default_fidelity": bad}))
        with pytest.raises(ModelFolderError, match="default_fidelity|fidelity"):
            SRPipeline.from_pretrained(tmp_path / "model")
    with pytest.raises(ValueError, match="no CFW"):
        SRPipeline(denoiser, autoencoder.without_cfw(), config, default_fidelity=0.5)


@pytest.fixture(scope="module")
def hr_folder(smooth_photos) -> Path:
    return smooth_photos


@pytest.fixture(scope="module")
def model_dir(tiny_x4_folder) -> Path:
    return tiny_x4_folder


def tiny_run(tmp_path: Path, hr_folder: Path, model_dir: Path) -> list[str]:
    """The overrides of a two-step run of a tiny decoder (decoder fine-tuning and one-step training alike)."""
    return [f"init_from={model_dir}", "model.preset=tiny", f"data.folder={hr_folder}", "data.crop_size=64",
            f"run.output_dir={tmp_path / 'run'}", "run.max_steps=2", "run.batch_size=2", "run.log_every_steps=1",
            "run.checkpoint_every_steps=1", "run.validate_every_steps=2", "run.validation_images=2",
            "decoder_shape.channels=[16,8]", "decoder_shape.blocks=[1,1]", "decoder_shape.head_channels=[]",
            "decoder_shape.cfw_channels=[8,4]"]


def decoder_config(tmp_path: Path, hr_folder: Path, model_dir: Path, *extra: str):
    from turbosr.train import decoder

    return load_config(decoder.DecoderConfig, None, [*tiny_run(tmp_path, hr_folder, model_dir), *extra])


def test_decoder_training_trains_the_trunk_and_cfw_only_and_resumes(tmp_path, hr_folder, model_dir):
    from turbosr.train import decoder

    start = SRPipeline.from_pretrained(model_dir)
    decoder.train(decoder_config(tmp_path, hr_folder, model_dir))
    folder = decoder.train(decoder_config(tmp_path, hr_folder, model_dir, "run.max_steps=3"))
    assert json.loads((folder / "progress.json").read_text())["step"] == 3
    tuned = SRPipeline.from_pretrained(folder / "model")
    for key, value in start.denoiser.state_dict().items():  # the UNet is frozen
        assert torch.equal(value, tuned.denoiser.state_dict()[key]), key
    for key in ("basis", "mean", "std"):  # so is the latent space
        assert torch.equal(getattr(start.autoencoder, key), getattr(tuned.autoencoder, key))
    learned = tuned.autoencoder.decoder
    assert learned is not None and tuned.has_cfw
    assert torch.any(learned.to_rgb.conv.weight != 0)  # the trunk's zero layer trained
    assert torch.any(learned.fusions[0].out.weight != 0)  # and CFW's
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    records = [r for r in log if "val_grid" in r]
    assert records and {"val_grid_hr", "val_psnr_y_fidelity1", "val_grid_fidelity1"} <= set(records[0])
    assert [r["step"] for r in log if "cfw" in r] == [1, 2, 3]


def test_cfw_loss_does_not_move_the_trunk(tmp_path, hr_folder, model_dir):
    """The w = 1 loss trains the CFW branch only: from a trained decoder, with the w = 0 loss switched off (all
    its terms 0), the trunk stays bit for bit as it was, so w = 0 still means that decoder; CFW learns."""
    from turbosr.train import decoder

    first = decoder.train(decoder_config(tmp_path / "a", hr_folder, model_dir, "decoder_shape.cfw_channels=[]"))
    trained = SRPipeline.from_pretrained(first / "model")
    assert not trained.has_cfw
    folder = decoder.train(decoder_config(tmp_path / "b", hr_folder, model_dir, f"init_from={first / 'model'}",
                                          "loss.l1=0", "loss.ssim=0", "loss.edge=0"))
    tuned = SRPipeline.from_pretrained(folder / "model")
    assert tuned.has_cfw
    for key, value in trained.autoencoder.state_dict().items():
        assert torch.equal(value, tuned.autoencoder.state_dict()[key]), key
    assert torch.any(tuned.autoencoder.decoder.fusions[0].out.weight != 0)


def one_step_config(tmp_path: Path, hr_folder: Path, model_dir: Path, *extra: str):
    """decoder_config's run as the one-step method (turbosr train one-step)."""
    from turbosr.train import one_step

    return load_config(one_step.OneStepConfig, None, [*tiny_run(tmp_path, hr_folder, model_dir), *extra])


def test_one_step_training_trains_the_whole_unet_through_the_decoder(tmp_path, hr_folder, model_dir):
    from turbosr.train import one_step

    start = SRPipeline.from_pretrained(model_dir)
    folder = one_step.train(one_step_config(tmp_path, hr_folder, model_dir, "cfw_loss.l1=0", "cfw_loss.ssim=0",
                                            "cfw_loss.edge=0"))
    tuned = SRPipeline.from_pretrained(folder / "model")
    moved = {k for k, v in start.denoiser.state_dict().items() if not torch.equal(v, tuned.denoiser.state_dict()[k])}
    # the pixel loss reaches the whole UNet through the decode: its first and last layers both learn (decoder
    # fine-tuning, the other method, keeps every UNet tensor: test above)
    assert {"unet.conv_in.weight", "unet.conv_out.weight"} <= moved
    assert not any(k.startswith("residual_scale") for k in moved)  # a buffer, not trained
    assert torch.all(tuned.autoencoder.decoder.fusions[0].out.weight == 0)  # no CFW loss: CFW untouched


def test_refitting_the_residual_scale_keeps_the_one_step_model(tmp_path, hr_folder, model_dir):
    """A new degradation's residual std replaces the old one and the UNet's output layer is rescaled to match:
    the one-step latent (and so the output) is the same function before training moves it."""
    from turbosr.data import make_lq
    from turbosr.train import one_step
    from turbosr.train.common import load_dataset
    from turbosr.train.initial import lq_condition

    config = one_step_config(tmp_path, hr_folder, model_dir, "refit_residual_scale=true",
                             "data.degradation=realesrgan", "residual_scale_batches=1")
    pipeline = SRPipeline.from_pretrained(model_dir)
    before = pipeline.denoiser.residual_scale.clone()
    lq = make_lq(torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)), 4, "bicubic")
    with torch.no_grad():
        condition = lq_condition(pipeline.autoencoder, lq, 4)
        expected = pipeline.denoise_latents(condition, generator=torch.Generator().manual_seed(1))
        dataset = load_dataset(config.data, 4)
        one_step.refit_one_step_residual_scale(pipeline, dataset, config.data, 1, 2, 0)
        assert not torch.allclose(pipeline.denoiser.residual_scale, before)
        again = pipeline.denoise_latents(condition, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(again, expected, atol=1e-5)


def test_a_resume_stops_when_the_folder_it_started_from_has_changed(tmp_path, hr_folder, model_dir):
    """The checkpoint restores only what the run trains; the frozen UNet and the folder's settings come from
    init_from again. A resume after that folder changed (a built-in replaced under a running lane) stops with a
    one-line error naming the field, instead of pairing the trained decoder with other weights."""
    import shutil

    from turbosr.train import decoder

    start = tmp_path / "start"
    shutil.copytree(model_dir, start)
    decoder.train(decoder_config(tmp_path, hr_folder, start))
    recorded = json.loads((tmp_path / "run" / "starts.json").read_text())
    assert set(recorded) == {"init_from"} and recorded["init_from"]["folder"] == str(start)
    decoder.train(decoder_config(tmp_path, hr_folder, start, "run.max_steps=3"))  # unchanged: resumes
    meta = json.loads((start / "config.json").read_text())
    (start / "config.json").write_text(json.dumps({**meta, "default_fidelity": 1.0}))  # a new folder's setting
    with pytest.raises(ValueError, match=r"init_from .* has changed since this run started") as error:
        decoder.train(decoder_config(tmp_path, hr_folder, start, "run.max_steps=4"))
    assert "\n" not in str(error.value)
    assert json.loads((tmp_path / "run" / "checkpoint-latest" / "progress.json").read_text())["step"] == 3


def test_validation_reports_w_0_as_the_models_own_output_whatever_its_default(tmp_path, hr_folder):
    """A folder whose default CFW weight is 1 (the shipped x4) is validated at w = 0 in ``val_psnr_y`` and at
    w = 1 in ``val_psnr_y_fidelity1``: the two training ends, not the default twice."""
    from turbosr.data import make_lq
    from turbosr.metrics import psnr
    from turbosr.run_config import DataConfig
    from turbosr.train.reporting import RunLog
    from turbosr.train.validation import validate, validation_crops

    config, denoiser, autoencoder = tiny_model_with_learned_decoder()
    with torch.no_grad():  # keep the decoder's residual small, like a trained one
        autoencoder.decoder.to_rgb.conv.weight.mul_(0.05)
    model = SRPipeline(denoiser, autoencoder, config, default_fidelity=1.0)
    data = DataConfig(folder=str(hr_folder), crop_size=64)
    hq = validation_crops(data, model.scale, 2)
    record = validate(model, hq, data, 1, RunLog(tmp_path / "log", enabled=False))
    lq = make_lq(hq, model.scale, data.degradation, torch.Generator().manual_seed(0), data.realesrgan)
    ends = {w: float(psnr(model(lq, generator=torch.Generator().manual_seed(0), fidelity=w), hq, model.scale,
                          y_channel=True).mean()) for w in (0.0, 1.0)}
    assert ends[0.0] != ends[1.0]  # CFW trained: the two ends differ, so the check below can tell them apart
    assert record["val_psnr_y"] == pytest.approx(ends[0.0], abs=1e-9)
    assert record["val_psnr_y_fidelity1"] == pytest.approx(ends[1.0], abs=1e-9)
