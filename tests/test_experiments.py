"""The lab notebook's one runner (turbosr.experiments): an experiment folder's arms and recorded tables become
commands; a table's built-in model is read from the release it measured; what cannot be rerun as it ran is
refused in one line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from turbosr.experiments import Step, plan, run

ROOT = Path(__file__).resolve().parents[1]


def experiment(tmp_path: Path, rows: list[dict]) -> Path:
    folder = tmp_path / "2026-01-01-question"
    (folder / "tables").mkdir(parents=True)
    (folder / "README.md").write_text("# a question\n")
    (folder / "b-arm.yaml").write_text("base: ../configs/x.yaml\n")
    (folder / "a-arm.yaml").write_text("base: ../configs/x.yaml\n")
    command = ("python benchmarks/quality_vs_steps.py --lq data/val-x4/lq --ref data/val-x4/hq --model "
               "'x4 (shipped)=src/turbosr/weights/x4' --model 'candidate=runs/c/model' --steps 1 "
               "--out docs/benchmarks/t_val")
    (folder / "tables" / "t_val.json").write_text(json.dumps({"commands": [command], "rows": rows}))
    return folder


def test_an_experiment_plans_its_arms_then_its_tables_from_the_releases_they_measured(tmp_path: Path) -> None:
    folder = experiment(tmp_path, [{"model": "x4 (shipped)", "model_folder": {"path": "src/turbosr/weights/x4",
                                                                             "digest": "0123456789abcdef"}}])
    steps = plan(folder)
    assert [s.part for s in steps] == ["arms", "arms", "tables", "tables"]
    assert steps[0].argv == ("turbosr", "train", "--config", str(folder / "a-arm.yaml"))  # name order
    assert steps[2].argv == ("turbosr", "release", "x4", "0123456789abcdef", "-o", "runs/releases/x4-0123456789abcdef")
    table = list(steps[3].argv)
    assert table[table.index("--out") + 1] == str(folder / "tables" / "t_val")  # written back beside its experiment
    assert "x4 (shipped)=runs/releases/x4-0123456789abcdef" in table and "candidate=runs/c/model" in table
    assert [s.part for s in plan(folder, ("tables",))] == ["tables", "tables"]


def test_what_cannot_be_rerun_as_it_ran_is_refused(tmp_path: Path) -> None:
    folder = experiment(tmp_path, [])  # the built-in's digest was not recorded
    with pytest.raises(ValueError, match="does not record which release it measured"):
        plan(folder)
    with pytest.raises(ValueError, match="not an experiment folder"):
        plan(tmp_path)
    with pytest.raises(ValueError, match="unknown step"):
        plan(folder, ("pictures",))


def test_run_goes_in_order_keeps_written_releases_and_stops_at_a_failure(tmp_path: Path, monkeypatch) -> None:
    ran: list[list[str]] = []

    def fake(argv, check=False):
        ran.append(argv)
        return subprocess.CompletedProcess(argv, 3 if "fail" in argv else 0)

    monkeypatch.setattr(subprocess, "run", fake)
    kept = tmp_path / "release"
    kept.mkdir()
    steps = [Step("tables", ("turbosr", "release", "x4", "0123456789abcdef", "-o", str(kept))),
             Step("arms", ("turbosr", "train", "--config", "a.yaml")), Step("tables", ("python", "x.py", "fail")),
             Step("tables", ("python", "never.py"))]
    assert run(steps) == 3
    assert [a[-1] for a in ran] == ["a.yaml", "fail"] and ran[0][1:3] == ["-m", "turbosr"]


def test_every_experiment_of_the_notebook_can_be_planned() -> None:
    folders = sorted(p.parent for p in (ROOT / "experiments").glob("*/README.md"))
    assert folders
    for folder in folders:
        steps = plan(folder)
        assert all(step.argv for step in steps), folder
