"""OSEDiff's released layout imported with `turbosr import osediff` (LoRA merged at import) matches the reference
(OSEDiff's own loading under peft + diffusers) on the parity fixtures, within |ours - golden| <= 1e-4 max|golden|
+ 1e-5; the full-size layout is covered on the meta device; bad input fails in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import SHARED_PARITY, close, parity_available, parity_cases
from turbosr.cli import main
from turbosr.importers.osediff import convert_osediff
from turbosr.importers.safe_load import load_checkpoint
from turbosr.pipeline import SRPipeline

PARITY, SD = SHARED_PARITY / "osediff", SHARED_PARITY / "stablesr" / "tiny_sd_folder"
pytestmark = parity_available("osediff")


@pytest.fixture(scope="module")
def cases() -> dict[str, torch.Tensor]:
    return parity_cases("osediff")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("import") / "osediff-tiny"
    assert main(["import", "osediff", "--sd", str(SD), "--weights", str(PARITY / "tiny_osediff.pkl"),
                 "--scale", "2", "-o", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def pipeline(folder: Path, cases: dict) -> SRPipeline:
    pipeline = SRPipeline.from_pretrained(folder)
    pipeline.denoiser.prompt_embedding.copy_(cases["prompt_embeds"])  # the fixture's stand-in for a tag prompt
    return pipeline


def test_the_folder_is_plain_weights(folder: Path) -> None:
    assert all(p.suffix in (".safetensors", ".json", ".md") for p in folder.iterdir())
    meta = json.loads((folder / "config.json").read_text())
    assert meta["model"]["conditioning"] == "direct" and meta["sampler"]["start"] == "latent"
    assert meta["sampler"]["allowed_steps"] == [1] and meta["default_color_fix"] == "adain"
    assert "Apache-2.0" in (folder / "README.md").read_text()


def test_one_step_matches_the_reference(pipeline: SRPipeline, cases: dict) -> None:
    image = (cases["lq"] + 1) / 2
    with torch.inference_mode():
        latent = pipeline.encode(image, noise=cases["posterior_eps"])
        eps = pipeline.denoiser(cases["lq_latent"], cases["lq_latent"], 999)
        x0 = pipeline.denoise_latents(cases["lq_latent"], noise=[])
        decoded = pipeline.decode(x0, x0)
    close(latent, cases["lq_latent"])
    close(eps, cases["unet_eps"])  # peft's adapter path
    close(eps, cases["unet_eps_merged"])  # peft's merge_and_unload path
    close(x0, cases["x_denoised"])
    close(decoded, (cases["output_image"] + 1) / 2)


def test_the_adapters_matter(pipeline: SRPipeline, cases: dict) -> None:
    """The merged UNet is measurably not the base SD UNet (the LoRA was applied, not dropped)."""
    with torch.inference_mode():
        eps = pipeline.denoiser(cases["lq_latent"], cases["lq_latent"], 999)
    assert (eps - cases["unet_eps_base_sd_folder"]).abs().max() > 100 * 1e-4 * cases["unet_eps"].abs().max()


def test_peft_adapted_copy_agrees_with_the_merged_folder(pipeline: SRPipeline, cases: dict) -> None:
    """The same pickle applied by peft itself (test-only dependency) gives the merged folder's eps."""
    peft = pytest.importorskip("peft")
    from diffusers import UNet2DConditionModel

    data = load_checkpoint(PARITY / "tiny_osediff.pkl", "pkl")
    unet = UNet2DConditionModel.from_pretrained(SD / "unet", torch_dtype=torch.float32)
    for adapter, modules in (("default_encoder", "unet_lora_encoder_modules"),
                             ("default_decoder", "unet_lora_decoder_modules"),
                             ("default_others", "unet_lora_others_modules")):
        config = peft.LoraConfig(r=data["rank_unet"], init_lora_weights="gaussian",
                                 target_modules=sorted(set(data[modules])))
        unet.add_adapter(config, adapter_name=adapter)
    state = unet.state_dict()
    for key, value in data["state_dict_unet"].items():
        state[key].copy_(value)
    unet.set_adapter(["default_encoder", "default_decoder", "default_others"])
    with torch.inference_mode():
        reference = unet(cases["lq_latent"], torch.tensor([999]), encoder_hidden_states=cases["prompt_embeds"]).sample
        ours = pipeline.denoiser(cases["lq_latent"], cases["lq_latent"], 999)
    close(ours, reference)


def test_upscale_an_odd_sized_image(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "odd.png"
    Image.effect_noise((45, 37), 40).convert("RGB").save(source)
    assert main(["upscale", str(source), "-o", str(tmp_path / "out.png"), "--model", str(folder),
                 "--tile", "32", "--tile-overlap", "16"]) == 0
    assert Image.open(tmp_path / "out.png").size == (90, 74)
    assert main(["upscale", str(source), "-o", str(tmp_path / "four.png"), "--model", str(folder), "--steps", "4"]) == 2
    assert "supports --steps 1 only" in capsys.readouterr().err


def test_full_size_layout_is_covered_on_the_meta_device() -> None:
    layout = json.loads((PARITY / "layout.json").read_text())
    configs = json.loads((Path(__file__).parent / "data" / "sd21_configs.json").read_text())

    def meta(keys: dict) -> dict[str, torch.Tensor]:
        return {key: torch.empty(shape, device="meta") for key, shape in keys.items()}

    data = {"rank_unet": 4, "rank_vae": 4, "state_dict_unet": meta(layout["state_dict_unet"]),
            "state_dict_vae": meta(layout["state_dict_vae"])}
    pipeline = convert_osediff(data, configs, torch.empty(1, 77, 1024, device="meta"), device="meta")
    assert pipeline.merged_adapters == (len(layout["state_dict_unet"]) - 2) // 2 + len(layout["state_dict_vae"]) // 2
    assert pipeline.merged_adapters == 258 + 32


@pytest.mark.parametrize("change, words", [
    (lambda d: d.pop("state_dict_vae"), "not an OSEDiff checkpoint"),
    (lambda d: d.update(rank_unet=8), "rank"),
    (lambda d: d["state_dict_unet"].update({"nowhere.lora_A.default_encoder.weight": torch.zeros(4, 4),
                                             "nowhere.lora_B.default_encoder.weight": torch.zeros(4, 4)}),
     "does not have"),
])
def test_bad_pickles_fail_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, change, words: str) -> None:
    data = load_checkpoint(PARITY / "tiny_osediff.pkl", "pkl")
    change(data)
    bad = tmp_path / "bad.pkl"
    torch.save(data, bad)
    out = tmp_path / "model"
    assert main(["import", "osediff", "--sd", str(SD), "--weights", str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err
    assert not out.exists() and not list(tmp_path.glob(".model*"))
