"""Rerunning an experiment of the lab notebook (``experiments/<date>-<question>/``) from what it holds: one runner
with parameters, for every experiment.

An experiment folder holds its arms as recipe overlays (``*.yaml``) and the val-split tables that decided
(``tables/*.json``, each recording the commands that made it, and per row the content digest of the model
folder it measured). :func:`plan` turns that into commands:

- ``arms``: ``turbosr train --config ARM`` for each overlay, in name order (a run resumes where it stopped);
- ``tables``: each table's recorded commands, writing into the folder's ``tables/`` again (``--out``). A model
  the table measured from a built-in's folder is read from the release it measured
  (``runs/releases/NAME-DIGEST``, written first by ``turbosr release``), since the built-in has moved on since.

``python scripts/experiment.py experiments/FOLDER [--steps arms tables] [--dry-run]`` prints or runs the plan.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

STEPS = ("arms", "tables")
BUILTIN_FOLDER = "src/turbosr/weights/"


@dataclass(frozen=True)
class Step:
    """One command of a rerun: which part of the experiment it belongs to, and its argv."""

    part: str
    argv: tuple[str, ...]

    def __str__(self) -> str:
        return shlex.join(self.argv)


def plan(folder: str | Path, steps: tuple[str, ...] = STEPS) -> list[Step]:
    """The commands that rerun ``folder``'s ``steps`` (see the module docstring), in order; ValueError (one line)
    for a folder that is not an experiment or a table whose record cannot be rerun."""
    folder = Path(folder)
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        raise ValueError(f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}")
    if not (folder / "README.md").is_file():
        raise ValueError(f"{folder} is not an experiment folder (it has no README.md)")
    commands: list[Step] = []
    if "arms" in steps:
        commands += [Step("arms", ("turbosr", "train", "--config", str(arm))) for arm in sorted(folder.glob("*.yaml"))]
    if "tables" in steps:
        releases: dict[str, Step] = {}
        tables: list[Step] = []
        for table in sorted((folder / "tables").glob("*.json")):
            for command in json.loads(table.read_text()).get("commands", []):
                argv = shlex.split(command)
                if "--out" not in argv:
                    raise ValueError(f"{table}: a recorded command without --out cannot be rerun: {command[:80]}")
                # the rows this command wrote: its own table's (a table resumed from another records both commands)
                written = table.with_name(Path(argv[argv.index("--out") + 1]).name + ".json")
                digests = measured_digests(written if written.is_file() else table)
                argv[argv.index("--out") + 1] = str(table.with_suffix(""))
                for index, arg in enumerate(argv):
                    name, _, path = arg.rpartition("=")
                    if argv[index - 1] == "--model" and path.startswith(BUILTIN_FOLDER):
                        if path not in digests:
                            raise ValueError(f"{table}: {path} is a built-in's folder and the table does not record "
                                             "which release it measured: this command cannot be rerun as it ran")
                        builtin, digest = Path(path).name, digests[path]
                        release = f"runs/releases/{builtin}-{digest}"
                        releases.setdefault(release, Step("tables", (
                            "turbosr", "release", builtin, digest, "-o", release)))
                        argv[index] = f"{name}={release}" if name else release
                tables.append(Step("tables", tuple(argv)))
        commands += [*releases.values(), *tables]
    return commands


def measured_digests(table: Path) -> dict[str, str]:
    """{model folder: content digest} of the models a table's rows (or its single model) measured."""
    record = json.loads(table.read_text())
    identities = [row.get("model_folder") for row in record.get("rows", [])] + [record.get("model")]
    return {i["path"]: i["digest"] for i in identities if isinstance(i, dict) and "digest" in i}


def run(commands: list[Step]) -> int:
    """Run ``commands`` in order, each in this interpreter's environment; stop at the first failure (its exit
    status). A release folder that exists already is kept (its digest is checked where it is used)."""
    for step in commands:
        if step.argv[:2] == ("turbosr", "release") and Path(step.argv[-1]).exists():
            continue
        argv = list(step.argv)
        if argv[0] == "turbosr":  # this interpreter's turbosr and Python
            argv = [sys.executable, "-m", "turbosr", *argv[1:]]
        elif argv[0] == "python":
            argv[0] = sys.executable
        print(f"[{step.part}] {step}", flush=True)
        done = subprocess.run(argv, check=False)
        if done.returncode:
            return done.returncode
    return 0
