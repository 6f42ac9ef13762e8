"""Run one training burst from a bundle on a machine with PyTorch but no network, and export the result.

    python scripts/gpu_burst.py BUNDLE OUT [--minutes 8] [--device cpu] [--set KEY=VALUE ...]

1. Says which dependencies the machine lacks, and installs the bundle's wheels for them into a temporary
   folder (``pip install --no-index --no-deps --target``: nothing is fetched, nothing is installed for good).
2. Trains ``BUNDLE/run.yaml`` (``turbosr train METHOD`` in a subprocess) for at most ``--minutes`` minutes of
   training, checkpointing in a temporary work folder; ``--device cpu`` hides the GPUs (the CPU rehearsal).
3. Writes at most 8 files into OUT: the model folder (``config.json``, ``autoencoder.safetensors`` and the
   denoiser in safetensors shards of at most 16 MiB, float32 when that fits in 3 shards, else float16, else
   int8), the training log (``log.jsonl``) and ``summary.json`` (device, steps, steps/s, samples/s, the last
   validation, versions). ``SRPipeline.from_pretrained(OUT/model)`` loads it as it is.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_SHARD = 16 * 2**20
MAX_SHARDS = 3  # config + autoencoder + index + 3 shards + log + summary = 8 files
REQUIRED = ("torch", "diffusers", "accelerate", "safetensors", "yaml", "PIL", "numpy", "tqdm")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--minutes", type=float, default=8.0, help="training time budget (default 8)")
    parser.add_argument("--device", choices=("auto", "cpu"), default="auto",
                        help="cpu hides the GPUs (rehearsal); auto uses CUDA when there is one")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config overrides, e.g. run.max_steps=2")
    return parser


def missing_modules() -> list[str]:
    return [name for name in REQUIRED if importlib.util.find_spec(name) is None]


def install_wheels(bundle: Path, missing: list[str], site: Path) -> list[str]:
    """Install the bundle's wheels (no network, no dependencies) into ``site``; returns their names."""
    wheels = sorted((bundle / "wheels").glob("*.whl")) if (bundle / "wheels").is_dir() else []
    if missing and not wheels:
        raise SystemExit(f"this machine lacks {', '.join(missing)} and the bundle carries no wheels")
    if wheels and missing:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target",
                        str(site), *map(str, wheels)], check=True)
    return [w.name for w in wheels] if missing else []


def choose_storage(parameters: int) -> str:
    for storage, width in (("float32", 4), ("float16", 2), ("int8", 1)):
        if parameters * width <= MAX_SHARDS * MAX_SHARD * 0.97:  # whole tensors per shard: keep a margin
            return storage
    raise SystemExit(f"a denoiser of {parameters / 1e6:.0f} M parameters does not fit {MAX_SHARDS} shards")


def rate_summary(log: list[dict]) -> dict:
    """Steps/s and samples/s over the logged training (the first logged window, with start-up, left out)."""
    steps = [r for r in log if "loss" in r and "time" in r]
    if len(steps) < 3:
        return {}
    first, last = steps[1], steps[-1]
    seconds = last["time"] - first["time"]
    rate = (last["step"] - first["step"]) / seconds if seconds > 0 else float("nan")
    samples = sum(r["images_per_s"] for r in steps[1:]) / len(steps[1:])
    return {"steps_per_s": rate, "samples_per_s": samples, "measured_steps": last["step"] - first["step"]}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    bundle, out = args.bundle.resolve(), args.out.resolve()
    info = json.loads((bundle / "bundle.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise SystemExit(f"{out} is not empty: refusing to mix bursts")
    missing = missing_modules()
    print(f"dependencies missing here: {', '.join(missing) or 'none'}", flush=True)
    site = Path(tempfile.mkdtemp(prefix="turbosr-site-"))
    work = Path(tempfile.mkdtemp(prefix="turbosr-burst-"))
    installed = install_wheels(bundle, [m for m in missing if m != "torch"], site)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1"}
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    sets = [f"data.manifest={bundle / 'manifest.json'}", f"run.output_dir={work}", f"run.max_minutes={args.minutes}"]
    if (bundle / "init").is_dir():
        sets.append(f"init_from={bundle / 'init'}")
    command = [sys.executable, "-m", "turbosr", "train", info["method"], "--config", str(bundle / "run.yaml"),
               *[f"--set={item}" for item in [*sets, *args.overrides]]]
    started = time.time()
    subprocess.run(command, env=env, cwd=ROOT, check=True)
    wall = time.time() - started

    sys.path[:0] = [str(site), str(ROOT / "src")]
    import torch

    from turbosr.pipeline import SRPipeline
    from turbosr.reports import software_versions

    pipeline = SRPipeline.from_pretrained(work / "checkpoint-latest" / "model")
    parameters = sum(p.numel() for p in pipeline.denoiser.parameters())
    storage = choose_storage(parameters)
    pipeline.save_pretrained(out / "model", storage=storage, max_shard_bytes=MAX_SHARD)
    shutil.copy(work / "log.jsonl", out / "log.jsonl")
    log = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    validations = [r for r in log if "val_psnr_y" in r]
    progress = json.loads((work / "checkpoint-latest" / "progress.json").read_text())
    summary = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "method": info["method"], "steps": progress["step"], "wall_seconds": wall, "minutes_budget": args.minutes,
        **rate_summary(log), "last_validation": validations[-1] if validations else None,
        "storage": storage, "parameters": parameters, "wheels_installed": installed, "missing_before": missing,
        "bundle_command": info.get("command"), "overrides": args.overrides, "versions": software_versions(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and all(p.stat().st_size <= MAX_SHARD for p in files), files
    print(json.dumps(summary, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(site, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
