"""AddSR's released student imported with `turbosr import addsr` matches the reference code on the parity fixtures
(../shared/parity/addsr: networks and the 4-step loop with pixel-space self-refinement, using the README's stub
image embedder; ../shared/parity/ram: the RAM/DAPE image tower), within |ours - golden| <= 1e-4 max|golden| +
1e-5; the full-size layouts are covered on the meta device; bad input fails in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from conftest import SHARED_PARITY, close, parity_available, parity_cases, small_process_size
from turbosr.cli import main
from turbosr.diffusion import Sampler
from turbosr.importers.addsr import RELEASES, convert_controlnet_release, ram_state
from turbosr.importers.safe_load import load_checkpoint
from turbosr.models.ram_tower import RamTower, merge_dape, tower_settings
from turbosr.pipeline import SRPipeline

PARITY, RAM, SD = SHARED_PARITY / "addsr", SHARED_PARITY / "ram", SHARED_PARITY / "stablesr" / "tiny_sd_folder"
pytestmark = [parity_available("addsr"), parity_available("ram")]


@pytest.fixture(scope="module")
def cases() -> dict[str, torch.Tensor]:
    return parity_cases("addsr")


class StubEmbedder(nn.Module):
    """The fixture README's deterministic stand-in for RAM/DAPE: 4x4 block means of the [0, 1] image as 16 tokens
    of 3 values, each mapped by a stored affine map to 512."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight, self.bias = weight, bias

    def forward(self, image: torch.Tensor, first: bool = True) -> torch.Tensor:
        return F.adaptive_avg_pool2d(image, (4, 4)).flatten(2).transpose(1, 2) @ self.weight + self.bias


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("import") / "addsr-tiny"
    assert main(["import", "addsr", "--sd", str(SD), "--model", str(PARITY), "--ram", str(RAM / "tiny_ram.pth"),
                 "--dape", str(RAM / "tiny_dape.pth"), "--scale", "2", "-o", str(out)]) == 0
    return small_process_size(out)


@pytest.fixture(scope="module")
def stubbed(folder: Path, cases: dict) -> SRPipeline:
    """The imported folder with the fixture's stub embedder and random prompt standing in (as its goldens do)."""
    pipeline = SRPipeline.from_pretrained(folder).replace()
    pipeline.denoiser.released_control.tower = StubEmbedder(cases["stub_embedder.weight"], cases["stub_embedder.bias"])
    pipeline.denoiser.prompt_embedding.copy_(cases["text_embedding"])
    return pipeline


def test_the_folder_is_plain_weights_with_the_release_sampler(folder: Path) -> None:
    assert all(p.suffix in (".safetensors", ".json", ".md") for p in folder.iterdir())
    meta = json.loads((folder / "config.json").read_text())
    assert meta["model"]["conditioning"] == "controlnet" and meta["image_tower"]["kind"] == "ram"
    assert meta["sampler"] == {"kind": "renoise", "psr_weight": 0.4, "trained_steps": 4, "allowed_steps": [1, 2, 3, 4],
                               "psr_space": "pixel"}
    assert meta["default_steps"] == 4 and meta["default_color_fix"] == "adain"
    assert meta["min_side"] == 96  # the importer's 512, made small by small_process_size for these tests
    card = (folder / "README.md").read_text()
    assert "tiny_ram.pth" in card and "tiny_dape.pth" in card and "Apache-2.0" in card


@pytest.mark.parametrize("t", [999, 499])
def test_controlnet_residuals_and_unet_eps(stubbed: SRPipeline, cases: dict, t: int) -> None:
    control = stubbed.denoiser.released_control
    image, x_t, context = cases["cond_image"], cases[f"net.t{t}.x_t"], cases["text_embedding"]
    tokens = control.tokens(image, first=True)
    close(tokens, cases["image_embedding"])
    control.unet_images.tokens = control.control_images.tokens = tokens
    try:
        with torch.inference_mode():
            down, mid = control.controlnet(x_t, torch.tensor([t]), encoder_hidden_states=context,
                                           controlnet_cond=image, return_dict=False)
            bare = stubbed.denoiser.unet(x_t, torch.tensor([t]), encoder_hidden_states=context).sample
    finally:
        control.unet_images.tokens = control.control_images.tokens = None
    for index, residual in enumerate(down):
        close(residual, cases[f"net.t{t}.controlnet_down.{index}"])
    close(mid, cases[f"net.t{t}.controlnet_mid"])
    close(bare, cases[f"net.t{t}.unet_eps_no_control"])
    with torch.inference_mode():
        close(stubbed.denoiser(x_t, x_t, t, image, first_step=True), cases[f"net.t{t}.unet_eps"])


@pytest.mark.parametrize("weight", [0.4, 0.5])
def test_four_step_loop_with_pixel_self_refinement(stubbed: SRPipeline, cases: dict, weight: float) -> None:
    pipeline = stubbed.replace(sampler=Sampler(kind="renoise", psr_weight=weight, trained_steps=4, psr_space="pixel"))
    image = cases["cond_image"]
    with torch.inference_mode():
        latent = pipeline.encode(image, noise=cases["loop.posterior_eps"])
        out = pipeline.denoise_latents(latent, num_steps=4, noise=[cases["loop.start_noise"], *cases["loop.renoise"]],
                                       lq_image=image)
        decoded = pipeline.decode(out, latent)
    close(out, cases[f"loop_w{weight}.out_latent"])
    close(decoded, cases[f"loop_w{weight}.image"])
    if weight == 0.4:  # the folder's own sampler is the released code's weight
        assert stubbed.sampler.psr_weight == 0.4


def test_the_ram_tower_with_and_without_dape(folder: Path) -> None:
    golden = parity_cases("ram")
    state = ram_state(load_checkpoint(RAM / "tiny_ram.pth", "ram"), "ram")
    plain = RamTower(**tower_settings(state))
    plain.load_state_dict({k: v.float() for k, v in state.items()
                           if not k.endswith(("relative_position_index", "attn_mask"))})
    imported = SRPipeline.from_pretrained(folder).denoiser.released_control.tower
    with torch.inference_mode():
        close(plain.visual_encoder(golden["inputs.pixel_values"]), golden["ram.swin_tokens"])
        close(plain.embed(golden["inputs.pixel_values"]), golden["ram.image_embeds"])
        close(imported.embed(golden["inputs.pixel_values"]), golden["dape.image_embeds"])
        close(imported.visual_encoder(golden["inputs.pixel_values"]), golden["dape.swin_tokens"])
        close(imported(golden["prepro.lr_image_u8"].float() / 255, first=True), golden["prepro.lr_image_embeds"])
        close(imported(golden["prepro.psr_image_u8"].float() / 255, first=False), golden["prepro.psr_image_embeds"])
    merge_dape(plain, {k: v.float() for k, v in load_checkpoint(RAM / "tiny_dape.pth", "dape").items()})
    with torch.inference_mode():
        close(plain.embed(golden["inputs.pixel_values"]), golden["dape.image_embeds"])


def test_upscale_four_steps_over_tiles(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "odd.png"
    Image.effect_noise((45, 37), 40).convert("RGB").save(source)
    assert main(["upscale", str(source), "-o", str(tmp_path / "out.png"), "--model", str(folder),
                 "--tile", "32", "--tile-overlap", "16"]) == 0
    assert Image.open(tmp_path / "out.png").size == (90, 74)
    assert main(["upscale", str(source), "-o", str(tmp_path / "five.png"), "--model", str(folder), "--steps", "5"]) == 2
    assert "supports --steps 1, 2, 3, 4 only" in capsys.readouterr().err


def test_full_size_layouts_are_covered_on_the_meta_device() -> None:
    full = json.loads((PARITY / "keys_full.json").read_text())
    ram_full = json.loads((RAM / "keys_full.json").read_text())
    configs = json.loads((Path(__file__).parent / "data" / "sd21_configs.json").read_text())

    def meta(keys: dict) -> dict[str, torch.Tensor]:
        return {key: torch.empty(shape, device="meta") for key, shape in keys.items()}

    unet_config = full["unet_config_used"]
    controlnet_config = {**{k: v for k, v in unet_config.items() if k not in (
        "sample_size", "out_channels", "center_input_sample", "up_block_types")},
        "conditioning_embedding_out_channels": [16, 32, 96, 256]}
    ram = {k: v for k, v in meta(ram_full["ram_swin_large_14m.pth"]["state_dict"]).items()
           if k.startswith(("visual_encoder.", "image_proj."))}
    settings = tower_settings(ram)
    assert settings == {"image_size": 384, "patch_size": 4, "embed_dim": 192, "depths": [2, 2, 18, 2],
                        "num_heads": [6, 12, 24, 48], "window_size": 12, "embed_width": 512}
    pipeline = convert_controlnet_release(RELEASES["addsr"], unet_config, meta(full["unet"]), controlnet_config,
                                          meta(full["controlnet"]), ram, meta(ram_full["DAPE.pth"]["state_dict"]),
                                          configs, torch.empty(1, 77, 1024, device="meta"), device="meta")
    control = pipeline.denoiser.released_control
    counts = full["param_counts"]
    assert sum(p.numel() for p in pipeline.denoiser.unet.parameters()) + sum(
        p.numel() for p in control.unet_images.parameters()) == counts["unet"]
    assert sum(p.numel() for p in control.unet_images.parameters()) == counts["unet_image_attentions"]
    assert sum(p.numel() for p in control.controlnet.parameters()) + sum(
        p.numel() for p in control.control_images.parameters()) == counts["controlnet"]
    assert len(control.unet_images.blocks) == 16 and len(control.control_images.blocks) == 7


def _fails(tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], words: str) -> None:
    out = tmp_path / "new-model"
    assert main(["import", "addsr", "--sd", str(SD), *args, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err
    assert not out.exists() and not list(tmp_path.glob(".new-model*"))


def test_a_unet_without_image_attentions_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = tmp_path / "plain"
    shutil.copytree(PARITY, model)
    shutil.rmtree(model / "unet")
    shutil.copytree(SD / "unet", model / "unet")
    _fails(tmp_path, capsys, ["--model", str(model), "--ram", str(RAM / "tiny_ram.pth")], "use_image_cross_attention")


def test_a_ram_file_without_swin_keys_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "ram.pth"
    torch.save({"model": {"label_embed": torch.zeros(4, 512)}}, bad)
    _fails(tmp_path, capsys, ["--model", str(PARITY), "--ram", str(bad)], "not a RAM checkpoint")


def test_a_dape_that_does_not_fit_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    dape = load_checkpoint(RAM / "tiny_dape.pth", "dape")
    key = next(k for k in dape if k.startswith("visual_encoder.") and k.endswith("qkv.lora_A"))
    dape[key] = torch.zeros(16, 24)
    bad = tmp_path / "dape.pth"
    torch.save(dape, bad)
    _fails(tmp_path, capsys, ["--model", str(PARITY), "--ram", str(RAM / "tiny_ram.pth"), "--dape", str(bad)],
           "does not fit")
