"""Summarise training runs from their log.jsonl as Markdown table rows (the tables of docs/runs.md).

    python scripts/run_summary.py runs/teacher-x2-small runs/distill-x2-x4-small

Per run: last step, training wall time (steps redone after resuming from an older checkpoint are counted and said;
gaps of more than 5 minutes between log lines, i.e. the time a killed run
waited to be resumed, are left out), the mean of the last 10 logged losses (or the decoder's total), the mean
images/s, and the last validation (one-step PSNR-Y on the held-out validation crops, and bicubic's).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

GAP_S = 300.0


def training_records(folder: Path) -> tuple[list[dict], list[dict]]:
    """(every record of the run's log.jsonl, its training records); a one-line error if there are none."""
    log = folder / "log.jsonl"
    if not log.is_file():
        raise SystemExit(f"error: {log} does not exist (not a training run folder?)")
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    train = [r for r in records if "images_per_s" in r]
    if not train:
        raise SystemExit(f"error: {log} has no training records yet")
    return records, train


def wall_seconds(train: list[dict]) -> float:
    """Training wall time of these training records, gaps of more than GAP_S (waits to be resumed) left out."""
    times = [r["time"] for r in train]
    return sum(b - a for a, b in zip(times, times[1:], strict=False) if b - a <= GAP_S)


def summarise(folder: Path) -> str:
    records, train = training_records(folder)
    wall = wall_seconds(train)
    steps = [r["step"] for r in train]
    # a resume from an older checkpoint: the step goes back; it restarted one log interval before the first new log
    forward = sorted(b - a for a, b in zip(steps, steps[1:], strict=False) if b > a) or [0]
    interval = forward[len(forward) // 2]
    redone = sum(a - (b - interval) for a, b in zip(steps, steps[1:], strict=False) if b <= a)
    redo = f" (incl. about {redone} steps redone after a resume)" if redone else ""
    key = "loss" if "loss" in train[-1] else "total"
    last = [r[key] for r in train[-10:] if key in r]
    rate = sum(r["images_per_s"] for r in train) / len(train)
    validations = [r for r in records if "val_psnr_y" in r]
    if validations:
        v = validations[-1]
        validation = f"{v['val_psnr_y']:.2f} at step {v['step']:,} (bicubic {v['val_psnr_y_bicubic']:.2f})"
    else:
        validation = "-"
    return (f"| {folder.name} | {train[-1]['step']} | {wall / 60:.1f} min{redo} | {key} {sum(last) / len(last):.4f} "
            f"| {rate:.1f} | {validation} |")


def curve(folder: Path) -> list[str]:
    """Markdown rows: every validation of the run with the training minutes spent up to it (gaps left out as
    above), so that runs can be compared per CPU-minute as well as per step."""
    records = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines() if line.strip()]
    rows, minutes, last_time = [], 0.0, None
    for record in records:
        if "time" in record:
            if last_time is not None and 0 < record["time"] - last_time <= GAP_S:
                minutes += (record["time"] - last_time) / 60
            last_time = record["time"]
        if "val_psnr_y" in record:
            grid = f"{record['val_grid']:.3f} (HR {record['val_grid_hr']:.3f})" if "val_grid" in record else "-"
            rows.append(f"| {folder.name} | {record['step']:,} | {minutes:.1f} | {record['val_psnr_y']:.3f} | {grid} |")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="training output folders (with log.jsonl)")
    parser.add_argument("--curve", action="store_true", help="every validation with the minutes spent up to it")
    args = parser.parse_args(argv)
    if args.curve:
        print("| run | step | training minutes | validation PSNR-Y, 1 step | validation grid figure |")
        print("|---|---|---|---|---|")
        for folder in args.runs:
            print("\n".join(curve(folder)))
        return
    print("| run | steps | wall time | last logged loss (mean of last 10 logs) | images/s | validation PSNR-Y, 1 step |")
    print("|---|---|---|---|---|---|")
    for folder in args.runs:
        print(summarise(folder))


if __name__ == "__main__":
    sys.exit(main())
