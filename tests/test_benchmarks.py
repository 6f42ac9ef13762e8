"""benchmarks/quality_vs_steps.py: rows are saved as they are computed and --resume reuses them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import load_script
from turbosr.diffusion import sampling_timesteps

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "quality_vs_steps.py"


def _pairs(root: Path) -> None:
    rng = np.random.default_rng(0)
    for folder in ("lq", "hq"):
        (root / folder).mkdir(parents=True)
    for name in ("a", "b"):
        hq = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        hq.save(root / "hq" / f"{name}.png")
        hq.resize((8, 8), Image.BICUBIC).save(root / "lq" / f"{name}.png")


def _run(root: Path, *extra: str) -> None:
    """The script's main() in this process (a subprocess per call spent most of its time importing torch)."""
    argv = ["--lq", str(root / "lq"), "--ref", str(root / "hq"), "--threads", "1", "--metrics", "psnr_y", "ssim_y",
            "--out", str(root / "out" / "table"), *extra]
    threads = torch.get_num_threads()
    try:
        load_script(SCRIPT).main(argv)
    finally:
        torch.set_num_threads(threads)


def test_rows_are_saved_and_resume_reuses_them(tmp_path):
    _pairs(tmp_path)
    _run(tmp_path, "--baselines", "bicubic")
    saved = json.loads((tmp_path / "out" / "table.json").read_text())
    assert [row["model"] for row in saved["rows"]] == ["bicubic"]
    bicubic = saved["rows"][0]["psnr_y"]
    assert 5 < bicubic < 40

    # mark the saved row: a resumed run must keep it rather than recompute it, and add the new baseline
    saved["rows"][0]["psnr_y"] = 123.0
    (tmp_path / "out" / "table.json").write_text(json.dumps(saved))
    _run(tmp_path, "--baselines", "bicubic", "lanczos", "--resume")
    resumed = json.loads((tmp_path / "out" / "table.json").read_text())
    assert [row["model"] for row in resumed["rows"]] == ["bicubic", "lanczos"]
    assert resumed["rows"][0]["psnr_y"] == 123.0
    assert resumed["rows"][1]["psnr_y"] != 123.0
    assert len(resumed["commands"]) == 2
    assert "123.0000" in (tmp_path / "out" / "table.md").read_text()

    # without --resume everything is recomputed
    _run(tmp_path, "--baselines", "bicubic")
    fresh = json.loads((tmp_path / "out" / "table.json").read_text())
    assert fresh["rows"][0]["psnr_y"] == bicubic
    assert len(fresh["commands"]) == 1


def test_run_summary_leaves_out_the_pause_of_a_resumed_run(tmp_path):
    """scripts/run_summary.py: wall time counts training, not the hours a killed run waited to be resumed."""
    run = tmp_path / "my-run"
    run.mkdir()
    records = [{"step": 20 * (i + 1), "loss": float(i), "images_per_s": 10.0, "time": 1000.0 + 60.0 * i}
               for i in range(12)]
    for record in records[6:]:
        record["time"] += 7200.0  # two hours between the kill and the resume
    records.insert(8, {"step": 160, "validation": "heldout", "val_psnr_y": 30.5, "val_psnr_y_bicubic": 29.25})
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    script = SCRIPT.parent.parent / "scripts" / "run_summary.py"
    out = subprocess.run([sys.executable, str(script), str(run)], capture_output=True, text=True, check=True).stdout
    row = out.strip().splitlines()[-1]
    # 11 gaps of 60 s, one of them 2 h long: 10 minutes of training; losses 2..11 -> mean 6.5
    assert row == "| my-run | 240 | 10.0 min | loss 6.5000 | 10.0 | 30.50 at step 160 (bicubic 29.25) |"
    missing = subprocess.run([sys.executable, str(script), str(tmp_path / "nope")], capture_output=True, text=True)
    assert missing.returncode != 0 and "does not exist" in missing.stderr
    # a run killed at step 100 without a checkpoint newer than step 60 redoes 40 steps
    steps = [20, 40, 60, 80, 100, 80, 100, 120]
    (run / "log.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0, "images_per_s": 8.0, "time": 60.0 * i})
                                           + "\n" for i, s in enumerate(steps)))
    out = subprocess.run([sys.executable, str(script), str(run)], capture_output=True, text=True, check=True).stdout
    assert "| 120 | 7.0 min (incl. about 40 steps redone after a resume) | loss 1.0000 | 8.0 | - |" in out


def test_denoiser_error_by_timestep_reports_errors_per_noise_level(tmp_path, tiny_pipeline):
    """At zero terminal SNR, x_T is the noise itself, so a v-model's implied eps at t=999 is exact whatever the
    weights; at t=500 an untrained model's eps is not. The trajectory table has one row per DDIM step."""
    assert tiny_pipeline.config.prediction_type == "v" and tiny_pipeline.config.schedule.zero_terminal_snr
    tiny_pipeline.save_pretrained(tmp_path / "model")
    _pairs(tmp_path)
    script = SCRIPT.parent / "denoiser_error_by_timestep.py"
    subprocess.run([sys.executable, str(script), "--lq", str(tmp_path / "lq"), "--ref", str(tmp_path / "hq"),
                    "--model", f"tiny={tmp_path / 'model'}", "--timesteps", "500", "999", "--trajectory-steps", "3",
                    "--threads", "1", "--out", str(tmp_path / "out" / "errors")], capture_output=True, text=True,
                   check=True)
    saved = json.loads((tmp_path / "out" / "errors.json").read_text())
    by_t = {row["t"]: row for row in saved["errors"]}
    assert by_t[999]["eps_mse"] < 1e-10 < by_t[500]["eps_mse"]
    assert by_t[999]["x0_power"] > 0
    assert [row["t"] for row in saved["trajectory"]] == sampling_timesteps(3, 1000) == [999, 666, 332]
    assert abs(saved["trajectory"][0]["x_t_power"] - 1.0) < 0.5  # x_T is unit Gaussian noise
    assert "| tiny | v | 999 |" in (tmp_path / "out" / "errors.md").read_text()


ROOT = SCRIPT.parents[1]


def _reparse(command: str) -> None:
    """A recorded command, pasted into a shell: python SCRIPT ARGS... must parse with that script's own parser."""
    import shlex

    words = shlex.split(command)
    assert words[0] == "python" and (ROOT / words[1]).is_file(), command
    if words[1] == "scripts/package_builtin.py":  # a thin command over the package's module
        from turbosr.weights import packaging

        packaging.build_parser().parse_args(words[2:])
        return
    load_script(ROOT / words[1]).build_parser().parse_args(words[2:])


def test_package_builtin_writes_a_card_generated_from_its_measurements(tmp_path, tiny_pipeline):
    """The card names each pair set's split and degradation, every number in it comes from measurements.json,
    and the recorded command re-parses."""
    from turbosr.data import make_pairs
    from turbosr.weights.card import render_card

    tiny_pipeline.save_pretrained(tmp_path / "model")
    for index in range(2):
        Image.fromarray(np.random.default_rng(index).integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(
            tmp_path / f"photo{index}.png")
    (tmp_path / "hr").mkdir()
    for index in range(2):
        (tmp_path / f"photo{index}.png").rename(tmp_path / "hr" / f"photo{index}.png")
    make_pairs(tmp_path / "hr", tmp_path / "blind", 4, degradation="realesrgan", seed=3, crop_size=64)
    from turbosr.weights import packaging as module
    argv = ["package", str(tmp_path / "model"), "--name", "x4-test", "--pairs", f"blind set={tmp_path / 'blind'}",
            "--metrics", "psnr_y", "--threads", "1", "--storage", "int8", "--fact", "trained for a test",
            "--training-command", "turbosr train teacher --config x.yaml", "--weights-dir", str(tmp_path / "w")]
    module.main(argv)
    folder = tmp_path / "w" / "x4-test"
    measurements = json.loads((folder / "measurements.json").read_text())
    card = (folder / "README.md").read_text()
    assert card == render_card(measurements)
    evaluation = measurements["evaluations"][0]
    assert "realesrgan degradation, seed 3" in evaluation["description"] and evaluation["count"] == 2
    assert f"{evaluation['scores']['turbosr (1 step)']['psnr_y']:.2f}" in card
    assert measurements["model"]["storage"] == "int8"
    _reparse(measurements["command"])


def test_package_builtin_sets_the_default_fidelity_and_measures_the_other_end(tmp_path, tiny_pipeline):
    from turbosr.data import make_pairs
    from turbosr.pipeline import SRPipeline

    autoencoder = tiny_pipeline.autoencoder.with_decoder({"kind": "conv", "channels": [8], "blocks": [1],
                                                          "head_channels": [], "cfw_channels": [8]})
    tiny_pipeline.replace(autoencoder=autoencoder).save_pretrained(tmp_path / "model")
    (tmp_path / "hr").mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(
        tmp_path / "hr" / "photo.png")
    make_pairs(tmp_path / "hr", tmp_path / "pairs", 4, crop_size=64)
    from turbosr.weights import packaging as module
    module.main(["package", str(tmp_path / "model"), "--name", "x4-test", "--pairs", f"set={tmp_path / 'pairs'}",
                 "--metrics", "psnr_y", "--threads", "1", "--default-fidelity", "1", "--weights-dir",
                 str(tmp_path / "w")])
    folder = tmp_path / "w" / "x4-test"
    measurements = json.loads((folder / "measurements.json").read_text())
    assert SRPipeline.from_pretrained(folder).default_fidelity == 1.0
    assert measurements["model"]["default_fidelity"] == 1.0
    assert set(measurements["evaluations"][0]["scores"]) >= {"turbosr (1 step)", "turbosr (1 step, --fidelity 0)"}
    assert "turbosr (1 step, --fidelity 1)" not in measurements["evaluations"][0]["scores"]  # that is the default
    assert "when left out: 1;" in (folder / "README.md").read_text()


def test_every_published_table_records_commands_that_reparse():
    """docs/benchmarks/*.json (the published tables), the experiments' selection tables and the built-in model
    cards: each recorded command parses
    with its script's own argument parser (the archive/ of earlier tables excepted, see its README)."""
    from turbosr.weights import WEIGHTS_DIR

    commands = []
    tables = [*(ROOT / "docs" / "benchmarks").glob("*.json"), *(ROOT / "experiments").glob("*/tables/*.json")]
    for table in sorted(tables):
        recorded = json.loads(table.read_text()).get("commands")
        assert recorded, f"{table.name} records no command"
        commands += recorded
    for folder in WEIGHTS_DIR.iterdir():
        if (folder / "measurements.json").is_file():
            commands.append(json.loads((folder / "measurements.json").read_text())["command"])
    assert commands
    for command in commands:
        _reparse(command)


def test_recorded_command_survives_names_with_spaces_and_parentheses(tmp_path):
    """shlex quoting: a model named 'v, zero terminal SNR (x0)' pastes back to the same argument."""
    import shlex

    from turbosr.reports import command_line

    argv = ["--lq", "a b/lq", "--ref", "a b/hq", "--model", "v, zero terminal SNR (x0)=runs/m", "--out", "o"]
    command = command_line("benchmarks/quality_vs_steps.py", argv)
    assert shlex.split(command)[2:] == argv
    args = load_script(SCRIPT).build_parser().parse_args(shlex.split(command)[2:])
    assert args.model == ["v, zero terminal SNR (x0)=runs/m"]


def test_resume_recomputes_rows_whose_model_or_pairs_changed(tmp_path, tiny_pipeline):
    _pairs(tmp_path)
    tiny_pipeline.save_pretrained(tmp_path / "model")
    _run(tmp_path, "--baselines", "--model", f"m={tmp_path / 'model'}", "--steps", "1")
    first = json.loads((tmp_path / "out" / "table.json").read_text())["rows"][0]
    _run(tmp_path, "--baselines", "--model", f"m={tmp_path / 'model'}", "--steps", "1", "--resume")
    again = json.loads((tmp_path / "out" / "table.json").read_text())["rows"][0]
    assert again == first  # reused: same model folder, pairs, seed, versions
    with torch.no_grad():
        tiny_pipeline.denoiser.unet.conv_out.bias.add_(0.5)
    tiny_pipeline.save_pretrained(tmp_path / "model")  # same name and path, other weights
    _run(tmp_path, "--baselines", "--model", f"m={tmp_path / 'model'}", "--steps", "1", "--resume")
    changed = json.loads((tmp_path / "out" / "table.json").read_text())["rows"][0]
    assert changed["model_folder"]["digest"] != first["model_folder"]["digest"]
    assert changed["psnr_y"] != first["psnr_y"]


def test_a_model_can_be_scored_at_its_own_step_counts():
    module = load_script(SCRIPT)
    assert module.model_option("a=runs/x") == ("a", "runs/x", {})
    assert module.model_option("one step, seed 0=runs/x@steps=1,200") == ("one step, seed 0", "runs/x",
                                                                         {"steps": "1,200"})
    assert module.model_option("w=f@fidelity=0.5@steps=4") == ("w", "f", {"fidelity": "0.5", "steps": "4"})
    for bad in ("runs/x", "a=runs/x@stepz=1", "a=runs/x@steps=", "a=runs/x@steps=1,x", "=runs/x"):
        with pytest.raises(SystemExit, match="expected NAME=DIR"):
            module.model_option(bad)


def test_a_model_scored_in_its_packaged_storage_is_scored_as_the_packaged_folder(tmp_path, tiny_pipeline):
    """@storage=int8 measures what a built-in packaged with int8 weights runs: the same rows as the folder saved
    int8 and loaded again, and a row of the folder as it is (float32) is not reused for it."""
    _pairs(tmp_path)
    tiny_pipeline.save_pretrained(tmp_path / "model")
    tiny_pipeline.save_pretrained(tmp_path / "packaged", storage="int8")
    _run(tmp_path, "--baselines", "--model", f"m={tmp_path / 'packaged'}", "--steps", "1")
    packaged = json.loads((tmp_path / "out" / "table.json").read_text())["rows"][0]
    _run(tmp_path, "--baselines", "--model", f"m={tmp_path / 'model'}", "--steps", "1")
    as_is = json.loads((tmp_path / "out" / "table.json").read_text())["rows"][0]
    assert as_is["psnr_y"] != pytest.approx(packaged["psnr_y"], abs=1e-9)  # int8 moves the score (else no test)
    _run(tmp_path, "--baselines", "--model", f"m={tmp_path / 'model'}@storage=int8", "--steps", "1", "--resume")
    stored = json.loads((tmp_path / "out" / "table.json").read_text())["rows"][0]
    assert stored["storage"] == "int8"
    assert stored["psnr_y"] == pytest.approx(packaged["psnr_y"], abs=1e-9)
    module = load_script(SCRIPT)
    assert module.model_option("a=f@storage=float16") == ("a", "f", {"storage": "float16"})
    with pytest.raises(SystemExit, match="expected NAME=DIR"):
        module.model_option("a=f@storage=int4")


def _save_cfw_model(tiny_pipeline, folder: Path):
    """The tiny pipeline with a learned decoder and CFW inside it, its zero-initialised layers made non-zero."""
    shape = {"kind": "conv", "channels": [16, 8], "blocks": [1, 1], "head_channels": [], "cfw_channels": [8, 4]}
    pipe = tiny_pipeline.replace(autoencoder=tiny_pipeline.autoencoder.with_decoder(shape))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in pipe.autoencoder.decoder.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.1)
    pipe.save_pretrained(folder)
    return pipe


def _mean_psnr_y(root: Path, upscale) -> float:
    """Mean PSNR-Y (border 4, 8-bit output) of ``upscale`` (LQ -> output, [0, 1]) over the pairs of :func:`_pairs`."""
    from turbosr.image_files import read_rgb_uint8
    from turbosr.metrics import psnr, quantize

    scores = []
    for name in ("a", "b"):
        lq = read_rgb_uint8(root / "lq" / f"{name}.png").float().div(255)[None]
        hq = read_rgb_uint8(root / "hq" / f"{name}.png").double().div(255)[None]
        scores.append(float(psnr(quantize(upscale(lq).double()), hq, 4, y_channel=True)))
    return sum(scores) / len(scores)


def test_fidelity_budget_rows_are_the_pipelines_own_outputs(tmp_path, tiny_pipeline):
    """benchmarks/fidelity_budget.py: its 'decoder w = 0 / w = 1' rows score exactly what the pipeline writes with
    --fidelity 0 / 1 (seed 0, one step), its bicubic row the bicubic image, and the HR latent's rows differ from
    them (a random model's latent is not the HR latent)."""
    from turbosr.degradations import upsample_lq

    pipe = _save_cfw_model(tiny_pipeline, tmp_path / "model")
    _pairs(tmp_path)
    load_script(SCRIPT.parent / "fidelity_budget.py").main(
        ["--model", f"tiny={tmp_path / 'model'}", "--pairs", str(tmp_path), "--out", str(tmp_path / "out" / "b")])
    scores = json.loads((tmp_path / "out" / "b.json").read_text())["rows"][0]["psnr_y"][str(tmp_path)]
    saved = type(pipe).from_pretrained(tmp_path / "model")
    mean = {key: _mean_psnr_y(tmp_path, lambda lq, w=fidelity: saved(lq, fidelity=w,
                                                                      generator=torch.Generator().manual_seed(0)))
            for key, fidelity in (("w0", None), ("w1", 1.0))}
    mean["bicubic"] = _mean_psnr_y(tmp_path, lambda lq: upsample_lq(lq, 4))
    assert scores["model latent, decoder w = 0 (the output)"] == pytest.approx(mean["w0"], abs=1e-6)
    assert scores["model latent, decoder w = 1 (--fidelity 1)"] == pytest.approx(mean["w1"], abs=1e-6)
    assert scores["bicubic"] == pytest.approx(mean["bicubic"], abs=1e-6)
    assert mean["w0"] != pytest.approx(mean["w1"], abs=1e-3)
    assert abs(scores["HR latent, linear decode (ceiling)"] - mean["w0"]) > 0.1


def test_fidelity_curve_reads_a_learned_decoders_cfw_and_reports_the_grid_beside_hr(tmp_path, tiny_pipeline):
    """benchmarks/fidelity_curve.py on a model whose CFW is inside its learned decoder: each w row scores what the
    pipeline writes at that w, the HR images' own grid figure is reported, and a model without CFW is refused."""
    from turbosr.image_files import read_rgb_uint8
    from turbosr.metrics.artifacts import grid_figure

    pipe = _save_cfw_model(tiny_pipeline, tmp_path / "model")
    _pairs(tmp_path)
    script = load_script(SCRIPT.parent / "fidelity_curve.py")
    script.main(["--model", str(tmp_path / "model"), "--pairs", str(tmp_path), "--weights", "0", "1",
                 "--metrics", "grid", "--threads", "1", "--out", str(tmp_path / "out" / "curve")])
    rows = {r["method"]: r for r in json.loads((tmp_path / "out" / "curve.json").read_text())["rows"]}
    assert set(rows) == {"turbosr w=0", "turbosr w=1", "bicubic"}
    hr_grid = sum(float(grid_figure(read_rgb_uint8(tmp_path / "hq" / f"{name}.png").double().div(255)[None],
                                    crop_border=4)[0]) for name in ("a", "b")) / 2
    for weight in (0.0, 1.0):
        row = rows[f"turbosr w={weight:g}"]
        expected = _mean_psnr_y(tmp_path, lambda lq, w=weight: pipe(lq, fidelity=w,
                                                                     generator=torch.Generator().manual_seed(0)))
        assert row["psnr_y"] == pytest.approx(expected, abs=1e-6)
        assert row["hr_grid"] == pytest.approx(hr_grid, abs=1e-6)
    assert rows["turbosr w=0"]["psnr_y"] != pytest.approx(rows["turbosr w=1"]["psnr_y"], abs=1e-4)
    assert "grid →HR" in (tmp_path / "out" / "curve.md").read_text()
    tiny_pipeline.save_pretrained(tmp_path / "plain")
    with pytest.raises(SystemExit, match="has no CFW modules"):
        script.main(["--model", str(tmp_path / "plain"), "--pairs", str(tmp_path), "--metrics", "grid",
                     "--out", str(tmp_path / "out" / "plain")])
