"""Quality vs number of denoising steps for several models, beside baselines; perception-distortion plot.

Used for the YONOS-SR ablation (direct x4 vs scale-distilled x2->x4 vs distilled + decoder fine-tuning) and for
the quality/time table of turbosr against classical and learned baselines:

    python benchmarks/quality_vs_steps.py --lq data/heldout-x4/lq --ref data/heldout-x4/hq --crop-border 4 \
        --model direct=runs/teacher-x4-small/checkpoint-latest/model \
        --model distilled=runs/distill-x2-x4-small/checkpoint-latest/model \
        --steps 1 2 4 8 25 50 --baselines bicubic lanczos span_x4 realesrgan_x4plus \
        --metrics psnr_y ssim_y niqe --out docs/benchmarks/yonos_ablation_x4

Writes OUT.md (table with machine, versions and command), OUT.json and OUT.png (needs matplotlib).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lq", required=True, type=Path)
    parser.add_argument("--ref", required=True, type=Path)
    parser.add_argument("--model", action="append", default=[], metavar="NAME=DIR")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8, 25, 50])
    parser.add_argument("--baselines", nargs="*", default=["bicubic"])
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--metrics", nargs="+", default=["psnr_y", "ssim_y", "niqe"])
    parser.add_argument("--crop-border", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True, help="output path without suffix")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from turbosr.baselines import baseline_upscaler
    from turbosr.metrics import evaluate_upscaler
    from turbosr.pipeline import SRPipeline

    rows = []
    for name in args.baselines:
        result = evaluate_upscaler(baseline_upscaler(name, args.scale), args.lq, args.ref, args.metrics,
                                   args.crop_border)
        rows.append({"model": name, "steps": None, **result["mean"], "seconds": result["seconds_per_image"]})
        print(json.dumps(rows[-1]), file=sys.stderr)
    for item in args.model:
        name, folder = item.split("=", 1)
        pipeline = SRPipeline.from_pretrained(folder)
        for steps in args.steps:
            def upscale(lq: torch.Tensor, steps: int = steps, pipeline: SRPipeline = pipeline) -> torch.Tensor:
                return pipeline(lq, num_steps=steps, generator=torch.Generator().manual_seed(args.seed))

            result = evaluate_upscaler(upscale, args.lq, args.ref, args.metrics, args.crop_border)
            rows.append({"model": name, "steps": steps, **result["mean"], "seconds": result["seconds_per_image"]})
            print(json.dumps(rows[-1]), file=sys.stderr)

    count = len(list(args.ref.iterdir()))
    header = [
        f"# Quality vs steps: {args.out.name}",
        "",
        f"Command: `python benchmarks/quality_vs_steps.py {' '.join(sys.argv[1:])}`",
        f"Machine: {platform.machine()} CPU, {args.threads} threads; torch {torch.__version__}; "
        f"Python {platform.python_version()}. Images: {count} pairs from {args.lq} / {args.ref}; "
        f"crop border {args.crop_border}; seed {args.seed}. Times are seconds per image on a shared machine.",
        "",
    ]
    columns = ["model", "steps", *args.metrics, "seconds"]
    table = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [row["model"], "-" if row["steps"] is None else str(row["steps"])]
        cells += [f"{row[m]:.4f}" for m in args.metrics] + [f"{row['seconds']:.3f}"]
        table.append("| " + " | ".join(cells) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(header + table) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"command": sys.argv, "rows": rows}, indent=1) + "\n")
    print("\n".join(header + table))
    try:
        import matplotlib
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    distortion = args.metrics[0]
    perception = "niqe" if "niqe" in args.metrics else None
    fig, axes = plt.subplots(1, 2 if perception else 1, figsize=(11 if perception else 6, 4), squeeze=False)
    models = sorted({r["model"] for r in rows if r["steps"] is not None}, key=[r["model"] for r in rows].index)
    for name in models:
        series = [r for r in rows if r["model"] == name]
        axes[0][0].plot([r["steps"] for r in series], [r[distortion] for r in series], "o-", label=name)
        if perception:
            axes[0][1].plot([r[perception] for r in series], [r[distortion] for r in series], "o-", label=name)
    for row in rows:
        if row["steps"] is None:
            axes[0][0].axhline(row[distortion], linestyle="--", linewidth=0.8, color="grey")
            axes[0][0].annotate(row["model"], (min(args.steps), row[distortion]), fontsize=7)
            if perception:
                axes[0][1].plot(row[perception], row[distortion], "s", label=row["model"])
    axes[0][0].set(xscale="log", xlabel="denoising steps", ylabel=distortion, title=f"{distortion} vs steps")
    axes[0][0].legend(fontsize=7)
    if perception:
        axes[0][1].set(xlabel=f"{perception} (lower = more natural)", ylabel=f"{distortion} (higher = more faithful)",
                       title="perception-distortion")
        axes[0][1].invert_xaxis()
        axes[0][1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=100)


if __name__ == "__main__":
    main()
