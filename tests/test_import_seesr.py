"""SeeSR's release (the same networks as AddSR's, sampled with 50 DDPM steps and classifier-free guidance) and RAM
tags, imported with `turbosr import seesr|addsr --tag-data`.

No SeeSR fixture exists: its networks are AddSR's layout (../shared/parity/addsr, whose goldens
test_import_addsr.py matches), the tagging head is matched here against ../shared/parity/ram's goldens (logits,
thresholded targets, tag strings), the DDPM loop against diffusers' DDPMScheduler (the class SeeSR's script
builds from the SD folder) with the same noise, and guidance and the tag prompt against their definitions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import SHARED_PARITY, close, parity_available, parity_cases, small_process_size
from turbosr.cli import main
from turbosr.config import ScheduleConfig
from turbosr.diffusion import make_alpha_bar
from turbosr.importers.addsr import GUIDANCE, RELEASES, build_tagger, ram_state
from turbosr.importers.safe_load import load_checkpoint
from turbosr.importers.sd_folder import prompt_embedding
from turbosr.models.ram_tower import RamTower, tower_settings
from turbosr.pipeline import SRPipeline

PARITY, RAM, SD = SHARED_PARITY / "addsr", SHARED_PARITY / "ram", SHARED_PARITY / "stablesr" / "tiny_sd_folder"
pytestmark = [parity_available("addsr"), parity_available("ram")]


def write_tag_data(folder: Path, names: list[str], thresholds: list[float], q2l: dict) -> Path:
    """A ram/ folder laid out like recognize-anything's and SeeSR's (what --tag-data reads)."""
    (folder / "data").mkdir(parents=True)
    (folder / "configs").mkdir()
    (folder / "data" / "ram_tag_list.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    (folder / "data" / "ram_tag_list_threshold.txt").write_text("\n".join(map(str, thresholds)) + "\n")
    (folder / "configs" / "q2l_config.json").write_text(json.dumps(q2l))
    return folder


@pytest.fixture(scope="module")
def tag_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    facts = json.loads((RAM / "cases.json").read_text())
    thresholds = parity_cases("ram")["labels.class_threshold"].tolist()
    return write_tag_data(tmp_path_factory.mktemp("ram"), facts["labels"]["tags"], thresholds,
                          facts["tiny_config"]["tagging_head_q2l_config"])


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, tag_data: Path) -> Path:
    out = tmp_path_factory.mktemp("import") / "seesr-tiny"
    assert main(["import", "seesr", "--sd", str(SD), "--model", str(PARITY), "--ram", str(RAM / "tiny_ram.pth"),
                 "--dape", str(RAM / "tiny_dape.pth"), "--tag-data", str(tag_data), "--scale", "2",
                 "-o", str(out)]) == 0
    return small_process_size(out)


@pytest.fixture(scope="module")
def pipeline(folder: Path) -> SRPipeline:
    return SRPipeline.from_pretrained(folder)


def test_the_folder_runs_seesr_s_script_defaults(folder: Path, pipeline: SRPipeline) -> None:
    meta = json.loads((folder / "config.json").read_text())
    assert meta["sampler"] == {"kind": "ddpm", "psr_weight": 0.5, "trained_steps": 0, "spacing": "leading",
                               "steps_offset": 1, "start_timestep": 999, "guidance": GUIDANCE}
    assert meta["default_steps"] == 50 and meta["default_color_fix"] == "adain"
    assert pipeline.sampler.timesteps(50, 1000)[:3] == [981, 961, 941] and pipeline.sampler.timesteps(50, 1000)[-1] == 1
    release = RELEASES["seesr"]
    close(pipeline.denoiser.prompt_embedding, prompt_embedding(SD, ", ,clean, high-resolution, 8k"))
    close(pipeline.denoiser.negative_embedding, prompt_embedding(SD, release.negative_prompt))
    assert not torch.equal(pipeline.denoiser.prompt_embedding, pipeline.denoiser.negative_embedding)
    # nothing but plain weights, JSON and the copied tokenizer's text files; no pickle anywhere
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} <= {".safetensors", ".json", ".md", ".txt"}
    assert (folder / "text_encoder" / "model.safetensors").exists() and "SeeSR" in (folder / "README.md").read_text()


def test_the_tagger_matches_ram_with_dape(pipeline: SRPipeline) -> None:
    golden = parity_cases("ram")
    facts = json.loads((RAM / "cases.json").read_text())
    images = golden["inputs.image_u8"].float() / 255  # already at the tower's size: the resize is the identity
    control = pipeline.denoiser.released_control
    with torch.inference_mode():
        tokens = control.tokens(images, first=True)
        close(pipeline.tagger.head.logits(tokens), golden["dape.logits"])
        assert torch.equal(pipeline.tagger.head.tagged(tokens).float(), golden["dape.targets"])
    assert pipeline.tag(images) == facts["tags_output"]["dape"]["english"]


def test_plain_ram_tags_without_dape(tmp_path: Path, tag_data: Path) -> None:
    golden = parity_cases("ram")
    facts = json.loads((RAM / "cases.json").read_text())
    ram = load_checkpoint(RAM / "tiny_ram.pth", "ram")["model"]
    tagger = build_tagger(ram, None, tag_data, "{tags}")
    head, names = tagger.head, tagger.names
    tower_state = ram_state({"model": ram}, "ram")
    tower = RamTower(**tower_settings(tower_state))
    tower.load_state_dict({k: v.float() for k, v in tower_state.items()
                           if not k.endswith(("relative_position_index", "attn_mask"))})
    with torch.inference_mode():
        tokens = tower.embed(golden["inputs.pixel_values"])
        close(head.logits(tokens), golden["ram.logits"])
        tagged = head.tagged(tokens)
    assert torch.equal(tagged.float(), golden["ram.targets"])
    assert [", ".join(names[i] for i in row.nonzero().flatten()) for row in tagged] == \
        facts["tags_output"]["ram"]["english"]


def test_the_tag_prompt_is_the_release_template_embedded_per_image(pipeline: SRPipeline) -> None:
    images = parity_cases("ram")["inputs.image_u8"].float() / 255
    tags = pipeline.tag(images)
    context = pipeline.tag_context(images)
    for index, tag in enumerate(tags):  # test_seesr.py: f"{tags}, {user prompt}," + added prompt
        close(context[index:index + 1], prompt_embedding(SD, f"{tag}, ,clean, high-resolution, 8k"))


def test_the_ddpm_loop_equals_diffusers_ddpm_scheduler() -> None:
    """SeeSR's loop: the LQ latent noised to 999 by the scheduler, then scheduler.step on the leading 50-step grid
    with the variance noise its generator draws; ours gets the same draws injected."""
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_pretrained(SD / "scheduler")
    scheduler.set_timesteps(50)
    sampler = RELEASES["seesr"].sampler(json.loads((SD / "scheduler" / "scheduler_config.json").read_text()))
    assert sampler.timesteps(50, 1000) == scheduler.timesteps.tolist()
    alpha_bar = make_alpha_bar(ScheduleConfig(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                              beta_schedule="scaled_linear", zero_terminal_snr=False))
    lq = torch.randn(1, 4, 6, 5, generator=torch.Generator().manual_seed(0))
    start = torch.randn(lq.shape, generator=torch.Generator().manual_seed(1))

    def network(x: torch.Tensor, t: int) -> torch.Tensor:  # any smooth function of (x_t, t) stands in
        return 0.3 * x + 0.1 * torch.sin(x * 3 + t / 100)

    latents = scheduler.add_noise(lq, start, torch.tensor([999]))
    generator = torch.Generator().manual_seed(7)
    drawn = []
    for t in scheduler.timesteps:
        state = generator.get_state()
        latents = scheduler.step(network(latents, int(t)), t, latents, generator=generator).prev_sample
        replay = torch.Generator()
        replay.set_state(state)
        drawn.append(torch.randn(lq.shape, generator=replay))
    noise = [start, *drawn]
    ours = sampler.sample(lambda x, t, previous, window: network(x, t), lambda i, window: noise[i][window],
                          lambda window: lq[window], sampler.timesteps(50, 1000), alpha_bar, "epsilon")
    close(ours, latents)


def test_guidance_is_uncond_plus_scale_times_the_difference(pipeline: SRPipeline) -> None:
    denoiser = pipeline.denoiser
    generator = torch.Generator().manual_seed(3)
    x_t, condition = torch.randn(1, 4, 8, 8, generator=generator), torch.randn(1, 4, 8, 8, generator=generator)
    image = torch.rand(1, 3, 64, 64, generator=generator)
    with torch.inference_mode():
        guided = denoiser(x_t, condition, 500, image, guidance=GUIDANCE)
        cond = denoiser(x_t, condition, 500, image)
        uncond = denoiser(x_t, condition, 500, image, context=denoiser.negative_embedding)
    close(guided, uncond + GUIDANCE * (cond - uncond))
    assert (cond - uncond).abs().max() > 1e-3  # the two prompts do differ, so the test can fail


def test_upscale_with_tags_over_tiles(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "odd.png"
    Image.effect_noise((45, 37), 40).convert("RGB").save(source)
    for name, extra in (("plain", []), ("tags", ["--tags"])):
        assert main(["upscale", str(source), "-o", str(tmp_path / f"{name}.png"), "--model", str(folder),
                     "--steps", "3", "--tile", "32", "--tile-overlap", "16", *extra]) == 0
        assert Image.open(tmp_path / f"{name}.png").size == (90, 74)
    plain, tagged = (torch.tensor(list(Image.open(tmp_path / f"{n}.png").getdata())) for n in ("plain", "tags"))
    assert not torch.equal(plain, tagged)  # the tag prompt reached the networks


def test_tags_on_a_model_without_a_tagger_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "no-tags"
    assert main(["import", "seesr", "--sd", str(SD), "--model", str(PARITY), "--ram", str(RAM / "tiny_ram.pth"),
                 "-o", str(out)]) == 0
    source = tmp_path / "in.png"
    Image.effect_noise((16, 16), 40).convert("RGB").save(source)
    assert main(["upscale", str(source), "-o", str(tmp_path / "x.png"), "--model", str(out), "--tags"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no RAM tagger" in err and not (tmp_path / "x.png").exists()
    assert not (out / "text_encoder").exists()  # no text encoder copied when no tags were asked for


def _fails(tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], words: str, sd: Path = SD) -> None:
    out = tmp_path / "new-model"
    assert main(["import", "seesr", "--sd", str(sd), "--model", str(PARITY), "--ram", str(RAM / "tiny_ram.pth"),
                 *args, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err
    assert not out.exists() and not list(tmp_path.glob(".new-model*"))


def test_a_clipping_scheduler_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import shutil

    sd = tmp_path / "sd"
    shutil.copytree(SD, sd)
    config = json.loads((sd / "scheduler" / "scheduler_config.json").read_text())
    (sd / "scheduler" / "scheduler_config.json").write_text(json.dumps({**config, "clip_sample": True}))
    _fails(tmp_path, capsys, [], "clip_sample false", sd)


def test_classes_the_threshold_file_leaves_out_take_ram_s_default(tmp_path: Path) -> None:
    """RAM starts every class at its default threshold, 0.68, and overwrites the ones its threshold file lists."""
    facts = json.loads((RAM / "cases.json").read_text())
    short = write_tag_data(tmp_path / "ram", facts["labels"]["tags"], [0.7] * 20,
                           facts["tiny_config"]["tagging_head_q2l_config"])
    ram = load_checkpoint(RAM / "tiny_ram.pth", "ram")["model"]
    thresholds = build_tagger(ram, None, short, "{tags}").head.thresholds
    assert torch.allclose(thresholds[:20], torch.full((20,), 0.7)) and torch.allclose(thresholds[20:], torch.full((4,), 0.68))


def test_tag_data_that_does_not_fit_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    facts = json.loads((RAM / "cases.json").read_text())
    short = write_tag_data(tmp_path / "ram", facts["labels"]["tags"][:20], [0.7] * 20,
                           facts["tiny_config"]["tagging_head_q2l_config"])
    _fails(tmp_path, capsys, ["--tag-data", str(short)], "24 classes")
    _fails(tmp_path, capsys, ["--tag-data", str(tmp_path / "nowhere")], "tagging-head config")


def test_full_size_tagger_is_covered_on_the_meta_device(tmp_path: Path) -> None:
    full = json.loads((RAM / "keys_full.json").read_text())

    def meta(keys: dict) -> dict[str, torch.Tensor]:
        return {key: torch.empty(shape, device="meta") for key, shape in keys.items()}

    q2l = {"hidden_size": 768, "num_attention_heads": 4, "num_hidden_layers": 2, "intermediate_size": 3072,
           "layer_norm_eps": 1e-12}  # recognize-anything's configs/q2l_config.json
    tag_data = write_tag_data(tmp_path / "ram", [f"tag {i}" for i in range(4585)], [0.68] * 4585, q2l)
    with torch.device("meta"):
        tagger = build_tagger(meta(full["ram_swin_large_14m.pth"]["state_dict"]),
                              meta(full["DAPE.pth"]["state_dict"]), tag_data, RELEASES["seesr"].template)
    head, names = tagger.head, tagger.names
    assert len(names) == 4585 and sum(p.numel() for p in head.parameters()) == 2347520 + 13389312 + 393984 + 769


def test_the_image_tokens_come_from_the_whole_image_once(pipeline: SRPipeline) -> None:
    """As the releases embed the whole LR image once, a tiled run makes the LQ image's tokens once, from the whole
    (upsampled) image, and gives them to every tile at every step (SeeSR has no self-refinement)."""
    control = pipeline.denoiser.released_control
    original, seen = control.tokens, []

    def counting(image: torch.Tensor, first: bool) -> torch.Tensor:
        seen.append((tuple(image.shape), first))
        return original(image, first)

    control.tokens = counting
    try:
        lq = torch.rand(1, 3, 45, 37, generator=torch.Generator().manual_seed(4))
        out = pipeline.replace(min_side=0)(lq, num_steps=2, tile=32, tile_overlap=16, color_fix="none",
                                           generator=torch.Generator().manual_seed(0))
    finally:
        control.tokens = original
    assert out.shape == (1, 3, 90, 74)
    assert len(seen) == 1 and seen[0][1] is True and seen[0][0][-2:] == (96, 80)  # the padded whole, not a tile


def test_guidance_on_the_command_line(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--guidance replaces the folder's weight for a run (1 = no guidance, a different output); a model without a
    negative prompt (AddSR) refuses it in one line."""
    source = tmp_path / "in.png"
    Image.effect_noise((24, 20), 40).convert("RGB").save(source)
    for name, extra in (("default", []), ("none", ["--guidance", "1"])):
        assert main(["upscale", str(source), "-o", str(tmp_path / f"{name}.png"), "--model", str(folder), "--steps",
                     "2", *extra]) == 0
    default, none = (torch.tensor(list(Image.open(tmp_path / f"{n}.png").getdata())) for n in ("default", "none"))
    assert not torch.equal(default, none)
    assert main(["upscale", str(source), "-o", str(tmp_path / "x.png"), "--model", str(folder), "--guidance",
                 "99"]) == 2
    assert "guidance must be a number in [1, 50]" in capsys.readouterr().err
    plain = tmp_path / "addsr"
    assert main(["import", "addsr", "--sd", str(SD), "--model", str(PARITY), "--ram", str(RAM / "tiny_ram.pth"),
                 "-o", str(plain)]) == 0
    assert main(["upscale", str(source), "-o", str(tmp_path / "y.png"), "--model", str(plain), "--guidance",
                 "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "negative prompt" in err and len(err.splitlines()) == 1 and not (tmp_path / "y.png").exists()


def test_a_tagged_model_saved_again_keeps_its_text_encoder(pipeline: SRPipeline, tmp_path: Path) -> None:
    pipeline.save_pretrained(tmp_path / "copy")
    again = SRPipeline.from_pretrained(tmp_path / "copy")
    images = parity_cases("ram")["inputs.image_u8"].float() / 255
    assert again.tag(images) == pipeline.tag(images)
    close(again.tag_context(images), pipeline.tag_context(images))


def test_tags_without_transformers_is_one_line(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "transformers", None)  # as if it were not installed
    source = tmp_path / "in.png"
    Image.effect_noise((24, 20), 40).convert("RGB").save(source)
    assert main(["upscale", str(source), "-o", str(tmp_path / "x.png"), "--model", str(folder), "--steps", "2",
                 "--tags"]) != 0
    err = capsys.readouterr().err.strip()
    assert "pip install 'turbosr[import]'" in err and len(err.splitlines()) == 1 and not (tmp_path / "x.png").exists()
