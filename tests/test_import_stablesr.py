"""StableSR's released layout imported with `turbosr import stablesr` matches the reference implementation.

The goldens in ../shared/parity/stablesr/ come from running IceClear/StableSR's own classes on random weights in
the released key layout (its README); every comparison goes through the import command and the public API, with
the README's tolerance |ours - golden| <= 1e-4 max|golden| + 1e-5.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import SHARED_PARITY, close, parity_available, parity_cases
from turbosr.cli import main
from turbosr.colorfix import COLOR_FIXES
from turbosr.diffusion import Sampler, ddpm_posterior, space_timesteps
from turbosr.importers.safe_load import ImportFailed, load_checkpoint
from turbosr.importers.stablesr import convert_stablesr, import_stablesr, read_sd_folder
from turbosr.pipeline import SRPipeline
from turbosr.tiling import stablesr_weights

PARITY = SHARED_PARITY / "stablesr"
pytestmark = parity_available("stablesr")


@pytest.fixture(scope="module")
def cases() -> dict[str, torch.Tensor]:
    return parity_cases("stablesr")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("import") / "stablesr-tiny"
    code = main(["import", "stablesr", "--sd", str(PARITY / "tiny_sd_folder"), "--ckpt",
                 str(PARITY / "tiny_stablesr.ckpt"), "--cfw", str(PARITY / "tiny_vqgan_cfw.ckpt"), "--scale", "2",
                 "-o", str(out)])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def pipeline(folder: Path) -> SRPipeline:
    return SRPipeline.from_pretrained(folder)


def test_the_folder_holds_no_pickle_and_names_its_sources(folder: Path) -> None:
    files = sorted(p.name for p in folder.iterdir())
    assert all(name.endswith((".safetensors", ".json", ".md")) for name in files), files
    card = (folder / "README.md").read_text()
    assert "S-Lab License 1.0" in card and "tiny_stablesr.ckpt" in card and "sha256" in card
    meta = json.loads((folder / "config.json").read_text())
    assert meta["model"]["conditioning"] == "sft" and meta["sampler"]["kind"] == "ddpm"
    assert meta["default_fidelity"] == 0.5 and meta["aggregation"] == "stablesr"


def test_prompt_embedding_is_the_empty_prompt_context(pipeline: SRPipeline, cases: dict) -> None:
    close(pipeline.denoiser.prompt_embedding, cases["context_empty_prompt"])


def test_encode_matches_the_cfw_encoder_posterior_sample(pipeline: SRPipeline, cases: dict) -> None:
    image = (cases["lq_image"] + 1) / 2
    with torch.inference_mode():
        close(pipeline.encode(image, noise=cases["cfw_encode.posterior_eps"]), cases["cfw_encode.latent"])
        mean, std = pipeline.autoencoder.moments(cases["lq_image"])
        close(torch.cat([mean, 2 * std.log()], 1), cases["cfw_encode.moments"])
        features = pipeline.autoencoder.encoder_features(cases["lq_image"])
    close(features[1], cases["cfw_encode.enc_fea.0"])
    close(features[2], cases["cfw_encode.enc_fea.1"])


@pytest.mark.parametrize("t", [999, 666, 333, 0])
def test_structure_encoder_and_unet_eps(pipeline: SRPipeline, cases: dict, t: int) -> None:
    denoiser = pipeline.denoiser
    assert denoiser.sft is not None
    with torch.inference_mode():
        features = denoiser.sft.encoder(cases["cfw_encode.latent"], torch.tensor([t]))
        eps = denoiser(cases[f"unet.t{t}.x_t"], cases["cfw_encode.latent"], t)
    close(features[(8, 8)], cases[f"struct_enc.t{t}.8"])
    close(features[(4, 4)], cases[f"struct_enc.t{t}.4"])
    close(eps, cases[f"unet.t{t}.eps"])


@pytest.mark.parametrize("weight", ["0.0", "0.5", "1.0"])
def test_cfw_decode_at_each_weight(pipeline: SRPipeline, cases: dict, weight: str) -> None:
    image = (cases["lq_image"] + 1) / 2
    with torch.inference_mode():
        decoded = pipeline.autoencoder.decode(cases["cfw_decode.z_scaled"], cases["lq_image"], float(weight))
        through = pipeline.decode(cases["cfw_decode.z_scaled"], None, float(weight), lq_image=image)
    close(decoded, cases[f"cfw_decode.w{weight}"])
    close(through, ((cases[f"cfw_decode.w{weight}"] + 1) / 2).clamp(0, 1))


def test_respaced_schedule_matches_the_reference(pipeline: SRPipeline, cases: dict) -> None:
    grid = space_timesteps(1000, 4)
    assert grid == [999, 666, 333, 0]
    alpha_bar = pipeline.alpha_bar
    for k, t in enumerate(sorted(grid)):
        ab_next = float(alpha_bar[sorted(grid)[k - 1]]) if k else 1.0
        coef_x0, coef_xt, std = ddpm_posterior(float(alpha_bar[t]), ab_next)
        assert coef_x0 == pytest.approx(float(cases["sched4.posterior_mean_coef1"][k]), rel=1e-5)
        assert coef_xt == pytest.approx(float(cases["sched4.posterior_mean_coef2"][k]), rel=1e-5, abs=1e-7)
        assert 2 * torch.tensor(std).log().item() == pytest.approx(
            float(cases["sched4.posterior_log_variance_clipped"][k]), rel=1e-5)


def test_four_step_sample_and_decode(pipeline: SRPipeline, cases: dict) -> None:
    """(d) and (d2): the old script's sample from pure noise with the stored per-step noise, then CFW at 0.5 and
    the colour fixes."""
    noisy = pipeline.replace(sampler=Sampler(kind="ddpm", start="noise"))
    image = (cases["lq_image"] + 1) / 2
    step_noise = cases["sample4.step_noise"]
    with torch.inference_mode():
        latent = noisy.encode(image, noise=cases["cfw_encode.posterior_eps"])
        out = noisy.denoise_latents(latent, num_steps=4, noise=[cases["sample4.x_T"], *step_noise])
        decoded = noisy.decode(out, latent, 0.5, lq_image=image)
    close(out, cases["sample4.out_latent"])
    close(decoded, cases["sample4.image_nofix"])
    unclamped = (cases["sample4.decoded_w0.5"] + 1) / 2
    for name in ("wavelet", "adain"):
        close(COLOR_FIXES[name](unclamped, image).clamp(0, 1), cases[f"sample4.image_{name}"])


def test_canvas_sample_over_tiles(pipeline: SRPipeline, cases: dict) -> None:
    """(e): the tile script's aggregation sampling, 8-latent tiles overlapping by 4, from the LQ latent noised
    to t = 999, with the reference's off-centre Gaussian tile weights."""
    weights = stablesr_weights(8, 8)[0, 0]
    ratio = cases["canvas.tile_weights"] / weights
    assert torch.allclose(ratio, ratio.mean(), rtol=1e-6)
    image = (cases["canvas.lq_image"] + 1) / 2
    step_noise = cases["canvas.step_noise"]
    with torch.inference_mode():
        latent = pipeline.encode(image, noise=cases["canvas.posterior_eps"], tile=1024)
        out = pipeline.denoise_latents(latent, num_steps=4, noise=[cases["canvas.start_noise"], *step_noise],
                                       latent_tile=8, latent_overlap=4)
    close(latent, cases["canvas.lq_latent"])
    close(out, cases["canvas.out_latent"])
    # the stablesr weights matter: the plain Gaussian blend is measurably elsewhere
    other = pipeline.replace(aggregation="uniform")
    with torch.inference_mode():
        moved = other.denoise_latents(latent, num_steps=4, noise=[cases["canvas.start_noise"], *step_noise],
                                      latent_tile=8, latent_overlap=4)
    assert (moved - cases["canvas.out_latent"]).abs().max() > 1e-3


def test_upscale_an_odd_sized_image_larger_than_a_tile(folder: Path, tmp_path: Path) -> None:
    source = tmp_path / "odd.png"
    Image.effect_noise((45, 37), 40).convert("RGB").save(source)
    target = tmp_path / "out.png"
    assert main(["upscale", str(source), "-o", str(target), "--model", str(folder), "--steps", "2",
                 "--tile", "32", "--tile-overlap", "16"]) == 0
    assert Image.open(target).size == (90, 74)


def test_one_step_is_refused_for_the_ddpm_grid(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "small.png"
    Image.new("RGB", (16, 16), (90, 120, 30)).save(source)
    assert main(["upscale", str(source), "-o", str(tmp_path / "x.png"), "--model", str(folder), "--steps", "1"]) == 2
    assert "at least 2 steps" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_full_size_release_layout_is_covered_on_the_meta_device() -> None:
    """Every key of the released stablesr_000117.ckpt and vqgan_cfw_00011.ckpt layouts is consumed at its shape
    (strict loads), and only the schedule buffers and the VAE that the CFW file replaces are left."""
    full = json.loads((PARITY / "keys_full.json").read_text())
    configs = json.loads((Path(__file__).parent / "data" / "sd21_configs.json").read_text())

    def meta(keys: dict) -> dict[str, torch.Tensor]:
        return {key: torch.empty(shape, device="meta", dtype=torch.float16) for key, shape in keys.items()}

    state = meta(full["stablesr_000117.ckpt"]["state_dict_built_from_code"])
    cfw = meta(full["vqgan_cfw_00011.ckpt"]["state_dict_built_from_code"])
    prompt = torch.empty(1, 77, 1024, device="meta")
    pipeline, consumed = convert_stablesr(state, configs, cfw, prompt, device="meta")
    left = set(state) - consumed
    assert left and all("." not in key or key.startswith("first_stage_model.") for key in left)
    assert sum(p.numel() for p in pipeline.denoiser.unet.parameters()) + sum(
        p.numel() for n, p in pipeline.denoiser.sft.named_parameters() if n.startswith("layers.")) == 918_930_884
    assert sum(p.numel() for p in pipeline.denoiser.sft.encoder.parameters()) == 52_494_080
    assert len(pipeline.denoiser.sft.layers) == 22
    assert pipeline.autoencoder.cfw_levels == [1, 2]
    _, plain = convert_stablesr(state, configs, None, prompt, device="meta")
    assert all("." not in key for key in set(state) - plain)  # without --cfw the ckpt's VAE is used


# ----------------------------------------------------------------------------------------------------- bad input
def _fails(tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], words: str) -> None:
    out = tmp_path / "new-model"
    assert main(["import", "stablesr", *args, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err
    assert not out.exists() and not list(tmp_path.glob(".new-model*"))


def test_a_checkpoint_of_another_model_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.out.2.weight": torch.zeros(4, 32, 3, 3)}}, other)
    _fails(tmp_path, capsys, ["--sd", str(PARITY / "tiny_sd_folder"), "--ckpt", str(other)], "not a StableSR")


def test_an_sd_folder_of_another_family_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sd15 = tmp_path / "sd15"
    shutil.copytree(PARITY / "tiny_sd_folder", sd15)
    config = json.loads((sd15 / "unet" / "config.json").read_text())
    (sd15 / "unet" / "config.json").write_text(json.dumps({**config, "cross_attention_dim": 24}))
    _fails(tmp_path, capsys, ["--sd", str(sd15), "--ckpt", str(PARITY / "tiny_stablesr.ckpt")], "text context")
    (sd15 / "unet" / "config.json").write_text(json.dumps({**config, "addition_embed_type": "text_time"}))
    _fails(tmp_path, capsys, ["--sd", str(sd15), "--ckpt", str(PARITY / "tiny_stablesr.ckpt")], "SDXL")


def test_a_cfw_file_that_does_not_fit_the_vae_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    state = load_checkpoint(PARITY / "tiny_vqgan_cfw.ckpt", "cfw")["state_dict"]
    state["decoder.fusion_layer_1.encode_enc_1.conv1.weight"] = torch.zeros(32, 48, 3, 3)
    bad = tmp_path / "bad_cfw.ckpt"
    torch.save({"state_dict": state}, bad)
    _fails(tmp_path, capsys, ["--sd", str(PARITY / "tiny_sd_folder"), "--ckpt", str(PARITY / "tiny_stablesr.ckpt"),
                              "--cfw", str(bad)], "does not fit")


def test_a_truncated_checkpoint_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = (PARITY / "tiny_stablesr.ckpt").read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[: len(data) // 2])
    _fails(tmp_path, capsys, ["--sd", str(PARITY / "tiny_sd_folder"), "--ckpt", str(cut)], "cannot be read")


def test_a_pickle_with_code_is_refused_without_running_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    class Payload:
        def __reduce__(self):  # would write a file when unpickled unsafely
            return (Path.touch, (tmp_path / "pwned",))

    evil = tmp_path / "evil.ckpt"
    with open(evil, "wb") as file:
        pickle.dump({"state_dict": Payload()}, file)
    _fails(tmp_path, capsys, ["--sd", str(PARITY / "tiny_sd_folder"), "--ckpt", str(evil)], "cannot be read")
    assert not (tmp_path / "pwned").exists()


def test_an_existing_output_folder_is_kept(tmp_path: Path, folder: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "mine.txt").write_text("keep")
    with pytest.raises(ImportFailed, match="already exists"):
        import_stablesr(PARITY / "tiny_sd_folder", PARITY / "tiny_stablesr.ckpt", target)
    assert (target / "mine.txt").read_text() == "keep"


def test_lightning_callback_globals_load_as_inert_stand_ins() -> None:
    data = load_checkpoint(PARITY / "tiny_stablesr.ckpt", "ckpt")
    (key,) = data["callbacks"]
    assert key.__name__ == "ModelCheckpoint" and key.__module__.startswith("pytorch_lightning")
    assert read_sd_folder(PARITY / "tiny_sd_folder")["unet"]["cross_attention_dim"] == 32


def test_a_v_prediction_sd_folder_gives_a_v_model(tmp_path: Path) -> None:
    """The 768v release is imported over SD-2.1-768, whose scheduler predicts v: the folder samples with v (no
    fixture has 768v goldens; this pins that the SD folder's prediction type reaches the model)."""
    sd = tmp_path / "sd768"
    shutil.copytree(PARITY / "tiny_sd_folder", sd)
    scheduler = json.loads((sd / "scheduler" / "scheduler_config.json").read_text())
    (sd / "scheduler" / "scheduler_config.json").write_text(json.dumps({**scheduler, "prediction_type": "v_prediction"}))
    out = tmp_path / "v-model"
    assert main(["import", "stablesr", "--sd", str(sd), "--ckpt", str(PARITY / "tiny_stablesr.ckpt"), "--scale", "2",
                 "-o", str(out)]) == 0
    pipeline = SRPipeline.from_pretrained(out)
    assert pipeline.config.prediction_type == "v" and not pipeline.has_cfw  # no --cfw: the plain VAE decodes
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    eps_model = pipeline.replace(config=dataclasses.replace(pipeline.config, prediction_type="epsilon"))
    with torch.inference_mode():
        v = pipeline(image, num_steps=2, generator=torch.Generator().manual_seed(0))
        eps = eps_model(image, num_steps=2, generator=torch.Generator().manual_seed(0))
    assert v.shape == (1, 3, 32, 32) and bool(torch.isfinite(v).all())
    assert (v - eps).abs().max() > 1e-3  # the same networks read as v give another sample
