"""StableSR (turbosr train stablesr) on the tiny preset: the SFT stage trains only the encoder and SFT layers (the
prior stays bit-identical), resumes and loads; the CFW stage gives a model whose w = 0 output is exactly the
model without CFW and whose distance to the HR image falls as w rises; models without CFW refuse --fidelity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from turbosr.config import load_config
from turbosr.pipeline import SRPipeline
from turbosr.train import stablesr


@pytest.fixture(scope="module")
def hr_folder(smooth_photos) -> Path:
    return smooth_photos


@pytest.fixture(scope="module")
def prior_dir(tiny_x4_folder) -> Path:
    return tiny_x4_folder


def config_for(tmp_path: Path, hr_folder: Path, prior_dir: Path, *extra: str):
    return load_config(stablesr.StableSRConfig, None, [
        f"prior={prior_dir}", "model.preset=tiny", f"data.folder={hr_folder}", "data.crop_size=64",
        f"run.output_dir={tmp_path / 'run'}", "run.max_steps=2", "run.batch_size=2", "run.log_every_steps=1",
        "run.checkpoint_every_steps=1", "run.validate_every_steps=2", "run.validation_images=2", *extra])


@pytest.mark.parametrize("time_aware", [True, False])
def test_sft_stage_trains_only_the_conditioner_resumes_and_loads(tmp_path, hr_folder, prior_dir, time_aware):
    prior = SRPipeline.from_pretrained(prior_dir)
    extra = [f"model.sft_time_aware={str(time_aware).lower()}"]
    stablesr.train(config_for(tmp_path, hr_folder, prior_dir, *extra))
    folder = stablesr.train(config_for(tmp_path, hr_folder, prior_dir, *extra, "run.max_steps=3"))
    assert json.loads((folder / "progress.json").read_text())["step"] == 3
    model = SRPipeline.from_pretrained(folder / "model")
    assert model.config.sft and model.config.sft_time_aware == time_aware
    unet_before, unet_after = prior.denoiser.unet.state_dict(), model.denoiser.unet.state_dict()
    assert all(torch.equal(unet_before[key], unet_after[key]) for key in unet_before)  # the prior is untouched
    trained = [p for p in model.denoiser.sft.parameters() if p.abs().sum() > 0]
    assert trained and any(torch.any(layer.gamma.weight != 0) for layer in model.denoiser.sft.layers)
    assert (model.denoiser.sft.encoder.time_embedding is not None) == time_aware
    lq = torch.rand(1, 3, 16, 16)
    assert not torch.equal(model(lq, generator=torch.Generator().manual_seed(0)),
                           prior(lq, generator=torch.Generator().manual_seed(0)))


@pytest.fixture(scope="module")
def cfw_model(tmp_path_factory, hr_folder, prior_dir) -> Path:
    """The prior with CFW modules trained for 60 steps."""
    out = tmp_path_factory.mktemp("cfw")
    folder = stablesr.train(config_for(out, hr_folder, prior_dir, "stage=cfw", "run.max_steps=60",
                                       "run.batch_size=4", "run.checkpoint_every_steps=60", "optim.warmup_steps=5",
                                       "optim.learning_rate=0.002", "run.validation_images=0"))
    return folder / "model"


def test_cfw_at_zero_is_exactly_the_model_without_it(cfw_model, prior_dir):
    prior, model = SRPipeline.from_pretrained(prior_dir), SRPipeline.from_pretrained(cfw_model)
    assert model.fidelity_warp is not None and prior.fidelity_warp is None
    lq = torch.rand(1, 3, 20, 24, generator=torch.Generator().manual_seed(4))
    reference = prior(lq, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model(lq, fidelity=0.0, generator=torch.Generator().manual_seed(0)), reference)
    assert torch.equal(model(lq, generator=torch.Generator().manual_seed(0)), reference)  # not asked: not applied
    with pytest.raises(ValueError, match="no CFW"):
        prior(lq, fidelity=0.5)


def test_distance_to_the_hr_image_falls_as_w_rises(cfw_model, hr_folder):
    from turbosr.data import make_lq
    from turbosr.image_files import load_image

    model = SRPipeline.from_pretrained(cfw_model)
    hq = torch.cat([load_image(path).rgb[..., :64, :64] for path in sorted(hr_folder.glob("*.png"))])
    lq = make_lq(hq, 4)
    distances = [float((model(lq, fidelity=w, generator=torch.Generator().manual_seed(0)) - hq).pow(2).mean())
                 for w in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert all(later < earlier for earlier, later in zip(distances, distances[1:], strict=False)), distances


def test_fidelity_option_on_the_command_line(cfw_model, prior_dir, tmp_path, capsys):
    from turbosr.cli import main

    Image.fromarray((np.random.default_rng(1).random((12, 16, 3)) * 255).astype(np.uint8)).save(tmp_path / "a.png")

    def run(model: Path, *extra: str) -> int:
        return main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / f"out-{model.parent.name}-"
                     f"{'-'.join(extra)}.png"), "--model", str(model), *extra])

    assert run(prior_dir, "--fidelity", "0.5") == 2
    err = capsys.readouterr().err
    assert "no CFW" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert run(cfw_model, "--fidelity", "1") == 0
    assert run(cfw_model, "--fidelity", "2") == 2 and "fidelity must be in [0, 1]" in capsys.readouterr().err


def test_training_on_a_model_with_cfw_leaves_the_stale_module_out(tmp_path, hr_folder, cfw_model):
    """A CFW module is trained for one generator's outputs: SFT on top of that model, or a new decoder for it,
    changes them, so the new model must not carry the old module (it would "correct" the wrong thing)."""
    from turbosr.train import decoder

    assert SRPipeline.from_pretrained(cfw_model).fidelity_warp is not None
    folder = stablesr.train(config_for(tmp_path / "sft", hr_folder, cfw_model))
    assert SRPipeline.from_pretrained(folder / "model").fidelity_warp is None
    tuned = decoder.train(load_config(decoder.DecoderConfig, None, [
        f"init_from={cfw_model}", "model.preset=tiny", "decoder_kind=refiner", "model.refine_channels=8", f"data.folder={hr_folder}",
        "data.crop_size=64", f"run.output_dir={tmp_path / 'decoder'}", "run.max_steps=1", "run.batch_size=2",
        "run.validation_images=0"]))
    assert SRPipeline.from_pretrained(tuned / "model").fidelity_warp is None
    from turbosr.train import adversarial_distill

    assert adversarial_distill.student_from(str(cfw_model), 0.5).fidelity_warp is None  # an AddSR student, too


def test_sft_conditioning_follows_the_latent_tiles(prior_dir):
    """Aggregation sampling with SFT: each latent tile is conditioned on its own part of the LQ latent, so tiled
    output stays close to untiled (as for the plain UNet in test_pipeline) and differs from the prior's."""
    model = stablesr.with_sft(str(prior_dir), time_aware=True)
    torch.manual_seed(0)
    for layer in model.denoiser.sft.layers:  # a conditioner that does something (trained ones start at zero)
        torch.nn.init.normal_(layer.gamma.weight, 0, 0.05)
        torch.nn.init.normal_(layer.beta.weight, 0, 0.05)
    lq = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(3))
    whole = model(lq, tile=256, generator=torch.Generator().manual_seed(0))
    tiled = model(lq, tile=96, tile_overlap=32, generator=torch.Generator().manual_seed(0))
    prior = SRPipeline.from_pretrained(prior_dir)(lq, tile=256, generator=torch.Generator().manual_seed(0))
    assert tiled.shape == whole.shape == (1, 3, 192, 192)
    assert float((whole - tiled).abs().mean()) < 0.05
    assert float((whole - tiled).abs().mean()) < float((whole - prior).abs().mean())


def test_sft_sits_in_the_down_blocks_by_default_and_older_folders_keep_their_placement(prior_dir, tmp_path):
    """StableSR's released placement: an SFT layer on every ResNet of the down, mid and up blocks; the layers on
    the down blocks are live (a non-zero one changes the output). A folder without the field (written before it
    existed) loads with the mid and up blocks only."""
    import json

    pipeline = stablesr.with_sft(str(prior_dir), True)
    unet = pipeline.denoiser.unet
    counts = {name: sum(len(b.resnets) for b in blocks) for name, blocks in
              (("down", unet.down_blocks), ("up", unet.up_blocks))}
    mid = len(unet.mid_block.resnets)
    assert len(pipeline.denoiser.sft.layers) == counts["down"] + mid + counts["up"] and pipeline.config.sft_down
    bare = stablesr.with_sft(str(prior_dir), True, down=False)
    assert len(bare.denoiser.sft.layers) == mid + counts["up"]
    lq_latent = torch.randn(1, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    before = pipeline.denoise_latents(lq_latent, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.nn.init.normal_(pipeline.denoiser.sft.layers[0].beta.weight, 0, 0.5)  # a down-block layer
    assert pipeline.denoiser.sft.levels[0] == 0
    assert not torch.allclose(pipeline.denoise_latents(lq_latent, generator=torch.Generator().manual_seed(1)), before)
    bare.save_pretrained(tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "config.json").read_text())
    del meta["model"]["sft_down"]  # as a folder written before the field existed
    (tmp_path / "old" / "config.json").write_text(json.dumps(meta))
    assert not SRPipeline.from_pretrained(tmp_path / "old").config.sft_down
