"""Every training method runs 2 steps on the tiny preset, writes a checkpoint SRPipeline loads, and resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from turbosr.config import load_config
from turbosr.pipeline import SRPipeline


@pytest.fixture(scope="module")
def hr_folder(tmp_path_factory) -> Path:
    """A few smooth, photo-like random images (sums of blurred noise at several scales)."""
    folder = tmp_path_factory.mktemp("hr")
    rng = np.random.default_rng(0)
    for index in range(4):
        image = np.zeros((96, 128, 3))
        for size in (4, 16, 64):
            noise = rng.random((size, size * 4 // 3, 3))
            image += np.asarray(Image.fromarray((noise * 255).astype(np.uint8)).resize((128, 96), Image.BICUBIC)) / 3
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(folder / f"photo{index}.png")
    return folder


def overrides(tmp_path: Path, hr_folder: Path, method: str, *extra: str) -> list[str]:
    """--set items of a 2-step tiny run of ``method`` (later items win)."""
    items = ["model.preset=tiny", f"data.folder={hr_folder}", "data.crop_size=64",
             f"run.output_dir={tmp_path / method.replace('-', '_')}", "run.max_steps=2", "run.batch_size=2",
             "run.checkpoint_every_steps=1", "run.log_every_steps=1", "run.validate_every_steps=2",
             "run.validation_images=2"]
    if method in ("teacher", "scale-distill", "autoencoder"):
        items.append("pca_images=8")
    if method in ("teacher", "scale-distill"):
        items.append("residual_scale_batches=1")
    return [*items, *extra]


def tiny(tmp_path: Path, hr_folder: Path, method: str, *extra: str) -> Any:
    from turbosr.train import methods

    return load_config(methods()[method][0], None, overrides(tmp_path, hr_folder, method, *extra))


def test_teacher_two_steps_checkpoint_loads_and_resumes(tmp_path, hr_folder):
    from turbosr.train import teacher

    config = tiny(tmp_path, hr_folder, "teacher")
    folder = teacher.train(config)
    progress = json.loads((folder / "progress.json").read_text())
    assert progress["step"] == 2
    pipeline = SRPipeline.from_pretrained(folder / "model")
    assert pipeline(torch.rand(1, 3, 16, 16)).shape == (1, 3, 64, 64)
    assert float(pipeline.denoiser.residual_scale.min()) > 0
    assert torch.any(pipeline.denoiser.unet.conv_out.weight != 0)  # it trained
    log = [json.loads(line) for line in (tmp_path / "teacher" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2]
    validation = [r for r in log if "val_psnr_y" in r]
    assert [r["step"] for r in validation] == [2] and validation[0]["val_psnr_y_bicubic"] > 10
    assert (tmp_path / "teacher" / "validation-latest.png").is_file()
    # resume: 2 more steps continue from step 2, not from scratch
    teacher.train(tiny(tmp_path, hr_folder, "teacher", "run.max_steps=4"))
    assert json.loads((folder / "progress.json").read_text())["step"] == 4
    log = [json.loads(line) for line in (tmp_path / "teacher" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4]


def test_resumed_run_equals_uninterrupted_run(tmp_path, hr_folder):
    from turbosr.train import teacher

    straight = teacher.train(tiny(tmp_path / "a", hr_folder, "teacher", "run.max_steps=3"))
    teacher.train(tiny(tmp_path / "b", hr_folder, "teacher", "run.max_steps=1"))
    resumed = teacher.train(tiny(tmp_path / "b", hr_folder, "teacher", "run.max_steps=3"))
    a = SRPipeline.from_pretrained(straight / "model").denoiser.state_dict()
    b = SRPipeline.from_pretrained(resumed / "model").denoiser.state_dict()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_scale_distill_decoder_autoencoder_chain(tmp_path, hr_folder):
    from turbosr.train import autoencoder, decoder, scale_distill, teacher

    ae_folder = autoencoder.train(tiny(tmp_path, hr_folder, "autoencoder", "run.max_steps=0")) / "model"
    teacher_folder = teacher.train(tiny(tmp_path, hr_folder, "teacher", "model.scale=2",
                                        f"autoencoder_from={ae_folder}")) / "model"
    student = scale_distill.train(tiny(tmp_path, hr_folder, "scale-distill", f"teacher={teacher_folder}",
                                       "teacher_scale=2", f"init_from={teacher_folder}"))
    student_pipeline = SRPipeline.from_pretrained(student / "model")
    assert student_pipeline.scale == 4
    tuned = decoder.train(tiny(tmp_path, hr_folder, "decoder", f"init_from={student / 'model'}",
                               "decoder_kind=refiner", "model.refine_channels=4", "adversarial.weight=0.1"))
    tuned_pipeline = SRPipeline.from_pretrained(tuned / "model")
    assert tuned_pipeline.config.refine_channels == 4
    assert tuned_pipeline.autoencoder.refiner is not None
    # the UNet was frozen during decoder fine-tuning
    for key, value in student_pipeline.denoiser.state_dict().items():
        assert torch.equal(value, tuned_pipeline.denoiser.state_dict()[key]), key
    assert tuned_pipeline(torch.rand(1, 3, 16, 16)).shape == (1, 3, 64, 64)


def test_kl_autoencoder_training_writes_the_asked_network(tmp_path, hr_folder):
    from turbosr.models.autoencoders import load_autoencoder
    from turbosr.train import autoencoder

    folder = autoencoder.train(tiny(tmp_path, hr_folder, "autoencoder", "model.latent=kl", "model.latent_factor=4",
                                    "model.latent_channels=4", "model.kl_channels=[8,16,16]", "adversarial.weight=0.1"))
    loaded = load_autoencoder(folder / "model")
    assert loaded.factor == 4 and loaded.latent_channels == 4
    # the folder holds the asked-for network (its widths) behind the encode/decode interface
    assert [b.resnets[0].conv1.out_channels for b in loaded.vae.encoder.down_blocks] == [8, 16, 16]
    image = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        latent = loaded.encode(image)
        assert latent.shape == (1, 4, 4, 4) and loaded.decode(latent).shape == (1, 3, 16, 16)
        assert torch.equal(latent, loaded.encode(image))  # the posterior mode: deterministic


@pytest.mark.slow  # a second interpreter or a burst of requests: CI runs it (scripts/test.sh)
def test_two_process_cpu_run_with_accelerate(tmp_path, hr_folder):
    """accelerate launch --cpu --num_processes 2 (gloo): distributed training is proven, not assumed. The
    learning-rate schedule counts optimizer steps, not steps times processes (Accelerate's default)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "turbosr", "train", "teacher",
               *[f"--set={item}" for item in overrides(tmp_path, hr_folder, "teacher", "optim.learning_rate=0.0004",
                                                       "optim.warmup_steps=4")]]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = tmp_path / "teacher" / "checkpoint-latest"
    assert json.loads((folder / "progress.json").read_text())["step"] == 2
    states = sorted(p.name for p in (folder / "training_state").iterdir())
    assert "random_states_0.pkl" in states and "random_states_1.pkl" in states
    SRPipeline.from_pretrained(folder / "model")
    log = [json.loads(line) for line in (tmp_path / "teacher" / "log.jsonl").read_text().splitlines()]
    # logged after update s: the rate of the next update, 4e-4 * (s + 1) / 4 while warming up
    assert [r["learning_rate"] for r in log if "loss" in r] == pytest.approx([2e-4, 3e-4])


def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path, hr_folder):
    """SIGKILL a training process after its first checkpoints; the next run continues from the last one."""
    import signal
    import time

    items = overrides(tmp_path, hr_folder, "teacher", "run.checkpoint_every_steps=3", "run.max_steps=100000")
    command = [sys.executable, "-m", "turbosr", "train", "teacher", *[f"--set={item}" for item in items]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = tmp_path / "teacher" / "checkpoint-latest"
    progress = latest / "progress.json"

    def saved_step() -> int:
        # The run swaps checkpoint-latest by two renames, so the folder can be missing for an instant: poll again.
        try:
            return int(json.loads(progress.read_text())["step"])
        except (FileNotFoundError, json.JSONDecodeError):
            return -1

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and saved_step() < 6:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    # A kill between the two renames leaves only the previous checkpoint: put it back the way resume() does.
    from turbosr import checkpoint

    assert checkpoint.recover_folder(latest) is not None
    killed_at = json.loads(progress.read_text())["step"]
    assert killed_at >= 6 and killed_at % 3 == 0
    from turbosr.train import teacher

    teacher.train(tiny(tmp_path, hr_folder, "teacher", f"run.max_steps={killed_at + 2}"))
    log = [json.loads(line) for line in (tmp_path / "teacher" / "log.jsonl").read_text().splitlines()]
    resumed_steps = [r["step"] for r in log if "loss" in r and r["step"] > killed_at]
    assert resumed_steps[-2:] == [killed_at + 1, killed_at + 2]
    assert json.loads(progress.read_text())["step"] == killed_at + 2


def test_tensorboard_option_needs_its_extra(tmp_path):
    import importlib.util

    from turbosr.train.reporting import RunLog

    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(ImportError, match=r"turbosr\[tensorboard\]"):
            RunLog(tmp_path, enabled=True, tensorboard=True)
    else:
        log = RunLog(tmp_path, enabled=True, tensorboard=True)
        log.write({"step": 1, "loss": 0.5})
        assert any((tmp_path / "tensorboard").iterdir())


def test_refit_residual_scale_measures_the_new_degradation(tmp_path, hr_folder):
    """init_from keeps the loaded residual std unless refit_residual_scale is set; then it is the std a fresh run
    on the new degradation measures (same latent space, same seeded batches)."""
    from turbosr.config import ConfigError
    from turbosr.train import teacher

    bicubic = teacher.train(tiny(tmp_path / "bicubic", hr_folder, "teacher", "run.max_steps=1")) / "model"
    blind = ["data.degradation=realesrgan", "run.max_steps=1"]
    fresh = teacher.train(tiny(tmp_path / "fresh", hr_folder, "teacher", *blind)) / "model"
    kept = teacher.train(tiny(tmp_path / "kept", hr_folder, "teacher", *blind, f"init_from={bicubic}")) / "model"
    refit = teacher.train(tiny(tmp_path / "refit", hr_folder, "teacher", *blind, f"init_from={bicubic}",
                               "refit_residual_scale=true")) / "model"
    scale = {name: SRPipeline.from_pretrained(folder).denoiser.residual_scale
             for name, folder in (("bicubic", bicubic), ("fresh", fresh), ("kept", kept), ("refit", refit))}
    assert torch.equal(scale["kept"], scale["bicubic"])
    assert torch.allclose(scale["refit"], scale["fresh"])
    assert float((scale["fresh"] / scale["bicubic"]).max()) > 1.5  # noise and JPEG add high-frequency residual
    with pytest.raises(ConfigError, match="refit_residual_scale"):
        tiny(tmp_path, hr_folder, "teacher", "refit_residual_scale=true")


def test_validation_and_step_checkpoints_can_be_switched_off(tmp_path, hr_folder):
    from turbosr.train import teacher

    folder = teacher.train(tiny(tmp_path, hr_folder, "teacher", "run.validate_every_steps=0",
                                "run.checkpoint_every_steps=0", "run.checkpoint_every_minutes=0"))
    log = [json.loads(line) for line in (tmp_path / "teacher" / "log.jsonl").read_text().splitlines()]
    assert not [r for r in log if "val_psnr_y" in r]
    assert json.loads((folder / "progress.json").read_text())["step"] == 2  # the last step still checkpoints


def test_bf16_autocast_on_a_cpu_that_emulates_it_gets_a_warning_with_the_fix(monkeypatch):
    """Emulated bf16 autocast made a CPU run 15x slower than float32 (docs/runs.md); the run must say so, and
    nothing else may trigger the warning."""
    from turbosr.train import common

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(common, "cpu_has_native_bf16", lambda: False)
    assert 'run.mixed_precision: "no"' in common.emulated_bf16_warning("bf16", cpu)
    assert common.emulated_bf16_warning("no", cpu) is None
    assert common.emulated_bf16_warning("bf16", cuda) is None
    monkeypatch.setattr(common, "cpu_has_native_bf16", lambda: True)
    assert common.emulated_bf16_warning("bf16", cpu) is None


def test_learning_rate_schedule_warms_up_holds_and_decays_to_zero_per_group_and_across_a_resume():
    from turbosr.run_config import OptimConfig
    from turbosr.train.common import learning_rate_factor, make_optimizer

    # 2 warm-up steps, 6 updates, the last 3 decay: factors of the updates 0..5
    assert [learning_rate_factor(s, 2, 6, 3) for s in range(6)] == [0.5, 1.0, 1.0, 1.0, 2 / 3, 1 / 3]
    assert [learning_rate_factor(s, 0, 4, 0) for s in range(4)] == [1.0] * 4  # no warm-up, no decay
    assert [learning_rate_factor(s, 0, 2, 10) for s in range(2)] == [1.0, 0.5]  # decay longer than the run: all of it

    def lrs(optimizer: torch.optim.Optimizer, scheduler: Any, steps: int) -> list[float]:
        """The two groups' learning rates of each of ``steps`` updates, flat."""
        seen = []
        for _ in range(steps):
            seen.extend(group["lr"] for group in optimizer.param_groups)
            optimizer.step()
            scheduler.step()
        return seen

    def fresh() -> tuple[torch.optim.Optimizer, Any]:
        a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
        return make_optimizer([{"params": [a]}, {"params": [b], "lr": 0.5}],
                              OptimConfig(learning_rate=1.0, warmup_steps=2, decay_steps=3), max_steps=6)

    straight = lrs(*fresh(), 6)
    assert straight == pytest.approx([x for f in (0.5, 1.0, 1.0, 1.0, 2 / 3, 1 / 3) for x in (f, f / 2)])
    first, first_scheduler = fresh()
    head = lrs(first, first_scheduler, 4)
    second, second_scheduler = fresh()
    second.load_state_dict(first.state_dict())
    second_scheduler.load_state_dict(first_scheduler.state_dict())
    assert head + lrs(second, second_scheduler, 2) == pytest.approx(straight)


def test_a_damaged_training_state_is_a_one_line_error(tmp_path, hr_folder, capsys):
    """A checkpoint whose pickled training state the safe loader refuses (or cannot read) stops the resume in one
    line naming the folder, rc 2, the checkpoint left as it was."""
    import pickle

    from turbosr.cli import main

    items = overrides(tmp_path, hr_folder, "teacher")
    assert main(["train", "teacher", *[f"--set={item}" for item in items]]) == 0
    state = tmp_path / "teacher" / "checkpoint-latest" / "training_state"
    pickles = sorted(p for p in state.rglob("*") if p.is_file() and p.suffix in (".pkl", ".pth", ".bin"))
    assert pickles, sorted(p.name for p in state.rglob("*"))

    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    pickles[0].write_bytes(pickle.dumps({"state": Payload()}))
    before = pickles[0].read_bytes()
    capsys.readouterr()
    assert main(["train", "teacher", *[f"--set={item}" for item in items], "--set=run.max_steps=4"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot be restored" in err and "internal error" not in err, err
    assert not (tmp_path / "pwned").exists() and pickles[0].read_bytes() == before


def test_a_start_pinned_to_its_recipe_must_be_that_recipe_s_finished_run(tmp_path, hr_folder, capsys):
    """run.start_recipes: a chain's next recipe names the recipe whose run it starts from; the start must be that
    run's checkpoint model, made by exactly that config and run to its last step (turbosr train checks it, at
    --dry-run and before a run starts)."""
    import yaml

    from turbosr.cli import main
    from turbosr.train import teacher

    first = tmp_path / "first.yaml"

    def write_first(steps: int) -> None:
        items = dict(item.split("=", 1) for item in overrides(tmp_path, hr_folder, "teacher", f"run.max_steps={steps}",
                                                              "run.validation_images=0"))
        recipe: dict = {"method": "teacher"}
        for key, value in items.items():
            node = recipe
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = yaml.safe_load(value)
        first.write_text(yaml.safe_dump(recipe))

    write_first(1)
    made = teacher.train(load_config(teacher.TeacherConfig, first, method="teacher"))
    second = tmp_path / "second.yaml"
    second.write_text(yaml.safe_dump({"method": "teacher", "init_from": str(made / "model"),
                                      "model": {"preset": "tiny"}, "data": {"folder": str(hr_folder), "crop_size": 64},
                                      "run": {"output_dir": str(tmp_path / "second"),
                                              "start_recipes": {"init_from": str(first)}}}))
    assert main(["train", "--config", str(second), "--dry-run"]) == 0
    capsys.readouterr()
    write_first(2)  # the recipe moved on: its old run is not its output any more
    assert main(["train", "--config", str(second), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "made by another config than" in err and "run.max_steps" in err and len(err.strip().splitlines()) == 1
    write_first(1)
    (made / "progress.json").write_text(json.dumps({"step": 0}))  # as if it had stopped early
    assert main(["train", "--config", str(second), "--dry-run"]) == 2
    assert "stopped at step 0 of 1" in capsys.readouterr().err
    assert main(["train", "--config", str(second)]) == 2  # the run refuses to start, not only --dry-run
    assert "stopped at step 0 of 1" in capsys.readouterr().err and not (tmp_path / "second").exists()
