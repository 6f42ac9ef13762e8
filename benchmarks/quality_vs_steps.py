"""Quality vs number of denoising steps for several models, beside baselines; perception-distortion plot.

Used for the YONOS-SR ablation (direct x4 vs scale-distilled x2->x4 vs distilled + decoder fine-tuning) and for
the quality/time table of turbosr against classical and learned baselines:

    python benchmarks/quality_vs_steps.py --lq data/test-x4/lq --ref data/test-x4/hq --crop-border 4 \
        --model direct=runs/teacher-x4-small/checkpoint-latest/model \
        --model distilled=runs/distill-x2-x4-small/checkpoint-latest/model \
        --steps 1 2 4 8 25 50 --baselines bicubic lanczos span_x4 realesrgan_x4plus \
        --metrics psnr_y ssim_y niqe --out docs/benchmarks/yonos_ablation_x4

Writes OUT.md (table with machine, versions, pair set and command), OUT.json and OUT.png (needs matplotlib).
Every row records what produced it (model folder digest, pair-set digests, seed, software versions); with
--resume a row of an earlier OUT.json is reused only when all of that matches.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import tempfile
from pathlib import Path

import torch

from turbosr.checkpoint import COMPACT_STORAGES

SCRIPT = "benchmarks/quality_vs_steps.py"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lq", required=True, type=Path)
    parser.add_argument("--ref", required=True, type=Path)
    parser.add_argument("--model", action="append", default=[], metavar="NAME=DIR",
                        help="a model folder; NAME=DIR@fidelity=W also sets StableSR's CFW weight W, NAME=DIR@steps=1,200 "
                             "scores this model at those step counts instead of --steps, NAME=DIR@storage=int8 (or "
                             "float16) scores it as a built-in packaged with that weight storage would run (any "
                             "combination: DIR@fidelity=W@steps=N@storage=S)")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8, 25, 50])
    parser.add_argument("--baselines", nargs="*", default=["bicubic"])
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--metrics", nargs="+", default=["psnr_y", "ssim_y", "niqe"])
    parser.add_argument("--folder-metric-steps", type=int, nargs="*", default=None, metavar="N",
                        help="compute folder metrics (fid, patch_fid) only at these step counts (default: all)")
    parser.add_argument("--crop-border", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True, help="output path without suffix")
    parser.add_argument("--resume", action="store_true",
                        help="keep the rows of an existing OUT.json that this command asks for (same model name, "
                             "steps, metrics, model folder, pair set, seed and software versions) instead of "
                             "recomputing them; models can then be added one by one")
    return parser


def model_option(item: str) -> tuple[str, str, dict[str, str]]:
    """NAME=DIR[@fidelity=W][@steps=N,M][@storage=S] -> (NAME, DIR, {"fidelity": W, "steps": "N,M", "storage": S})."""
    name, _, rest = item.partition("=")
    folder, *suffixes = rest.split("@")
    options = dict(suffix.partition("=")[::2] for suffix in suffixes)
    steps_ok = re.fullmatch(r"\d+(,\d+)*", options.get("steps", "1")) is not None
    storage_ok = options.get("storage") in (None, *COMPACT_STORAGES)
    if (not name or not folder or set(options) - {"fidelity", "steps", "storage"} or not all(options.values())
            or not steps_ok or not storage_ok):
        raise SystemExit(f"--model {item!r}: expected NAME=DIR[@fidelity=W][@steps=N,M][@storage=float16|int8]")
    return name, folder, options


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)

    from turbosr.baselines import baseline_upscaler
    from turbosr.metrics import FOLDER_METRICS, evaluate_upscaler
    from turbosr.pipeline import SRPipeline
    from turbosr.reports import (
        command_line,
        describe_pairs,
        markdown_table,
        model_identity,
        pairs_identity,
        same_provenance,
        software_versions,
        write_json,
        write_text,
    )

    pairs = pairs_identity(args.lq, args.ref)
    common = {"pairs": pairs, "seed": args.seed, "crop_border": args.crop_border, "versions": software_versions()}
    commands, previous = [], {}
    if args.resume and args.out.with_suffix(".json").is_file():
        saved = json.loads(args.out.with_suffix(".json").read_text())
        commands = saved.get("commands", [])
        previous = {(row["model"], row["steps"]): row for row in saved["rows"]}
    commands.append(command_line(SCRIPT, argv))

    def wanted(steps: int | None) -> list[str]:
        if steps is None or args.folder_metric_steps is None or steps in args.folder_metric_steps:
            return list(args.metrics)
        return [m for m in args.metrics if m not in FOLDER_METRICS]

    def reuse(name: str, steps: int | None, provenance: dict) -> bool:
        row = previous.get((name, steps))
        if row is None or any(m not in row for m in wanted(steps)) or not same_provenance(row, provenance):
            return False
        rows.append(row)
        return True

    rows: list[dict] = []

    def save_rows() -> None:  # after every row, so a killed run loses at most one row (resume with --resume)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        merged = rows + [row for key, row in previous.items() if key not in {(r["model"], r["steps"]) for r in rows}]
        write_json(args.out.with_suffix(".json"), {"commands": commands, "rows": merged})

    def add_row(name: str, steps: int | None, provenance: dict, result: dict) -> None:
        rows.append({"model": name, "steps": steps, **result["mean"], "seconds": result["seconds_per_image"],
                     **provenance})
        print(json.dumps({k: v for k, v in rows[-1].items() if k not in common}), file=sys.stderr)
        save_rows()

    for name in args.baselines:
        provenance = {**common, "model_folder": None}
        if reuse(name, None, provenance):
            continue
        result = evaluate_upscaler(baseline_upscaler(name, args.scale), args.lq, args.ref, args.metrics,
                                   args.crop_border)
        add_row(name, None, provenance, result)
    for item in args.model:
        name, folder, options = model_option(item)
        fidelity = float(options["fidelity"]) if "fidelity" in options else None  # StableSR's CFW weight
        model_steps = [int(n) for n in options["steps"].split(",")] if "steps" in options else args.steps
        pipeline = SRPipeline.from_pretrained(folder)
        if "storage" in options:  # what the packaged built-in runs: stored that way and loaded again
            with tempfile.TemporaryDirectory() as stored:
                pipeline.save_pretrained(stored, storage=options["storage"])
                pipeline = SRPipeline.from_pretrained(stored)
        provenance = {**common, "model_folder": model_identity(folder),
                      **({"fidelity": fidelity} if fidelity is not None else {}),
                      "storage": options.get("storage")}  # None: as the folder holds it (older rows lack it)
        for steps in model_steps:
            if reuse(name, steps, provenance):
                continue
            def upscale(lq: torch.Tensor, steps: int = steps, pipeline: SRPipeline = pipeline,
                        fidelity: float | None = fidelity) -> torch.Tensor:
                return pipeline(lq, num_steps=steps, fidelity=fidelity,
                                generator=torch.Generator().manual_seed(args.seed))

            result = evaluate_upscaler(upscale, args.lq, args.ref, wanted(steps), args.crop_border)
            add_row(name, steps, provenance, result)

    from turbosr.metrics import get_metrics

    own = [m.name for m in get_metrics(args.metrics) if m.score_reference]  # the artifact figures' yardstick
    if own and not any(row["model"] == "HR" and all(name in row for name in own) for row in rows):
        from turbosr.metrics.folders import match_files, reference_scores

        rows[:] = [row for row in rows if row["model"] != "HR"]
        references = [reference for _, reference in match_files(args.lq, args.ref)]
        scores = reference_scores(references, get_metrics(own), args.crop_border)["reference_mean"]
        rows.append({"model": "HR", "steps": None, **scores, "seconds": 0.0, **common, "model_folder": None})
        save_rows()
    count = len(list(args.ref.iterdir()))
    versions = ", ".join(f"{k} {v}" for k, v in common["versions"].items())
    folders = [f"- {row['model']}: `{row['model_folder']['path']}` (digest {row['model_folder']['digest']})"
               for row in rows if row["model_folder"] and row["steps"] == min(
                   r["steps"] for r in rows if r["model"] == row["model"])]
    header = [
        f"# Quality vs steps: {args.out.name}",
        "",
        "Command(s); with --resume, rows a later command asks for again are reused from the earlier one when the",
        "model folder, pair set, seed and software versions are the same:",
        "",
        *[f"- `{command}`" for command in commands],
        "",
        f"Pairs: {count} from {describe_pairs(pairs)}; crop border {args.crop_border}; seed {args.seed}.",
        f"Machine: {platform.machine()} CPU, {args.threads} threads; {versions}. Times are seconds per image.",
        "",
        "Model folders:" if folders else "",
        *folders,
        "",
    ]
    columns = ["model", "steps", *args.metrics, "seconds"]
    table = markdown_table(columns, [
        [row["model"], "-" if row["steps"] is None else str(row["steps"]),
         *(f"{row[m]:.4f}" if m in row else "-" for m in args.metrics),
         f"{row['seconds']:.3f}" if row["model"] != "HR" else "-"] for row in rows])
    write_text(args.out.with_suffix(".md"), header + table)
    write_json(args.out.with_suffix(".json"), {"commands": commands, "rows": rows})
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
    folder = next((m for m in args.metrics if m in FOLDER_METRICS), None)
    panels = 1 + bool(perception) + bool(folder)
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), squeeze=False)
    steps_ax = axes[0][0]
    pd_ax = axes[0][1] if perception else None
    folder_ax = axes[0][-1] if folder else None
    models = sorted({r["model"] for r in rows if r["steps"] is not None}, key=[r["model"] for r in rows].index)
    for name in models:
        series = [r for r in rows if r["model"] == name]
        steps_ax.plot([r["steps"] for r in series], [r[distortion] for r in series], "o-", label=name)
        if pd_ax is not None:
            pd_ax.plot([r[perception] for r in series], [r[distortion] for r in series], "o-", label=name)
        if folder_ax is not None:
            scored = [r for r in series if folder in r]
            folder_ax.plot([r["steps"] for r in scored], [r[folder] for r in scored], "o-", label=name)
    for row in rows:
        if row["steps"] is None:
            for ax, metric in ((steps_ax, distortion), (folder_ax, folder)):
                if ax is not None and metric in row:
                    ax.axhline(row[metric], linestyle="--", linewidth=0.8, color="grey")
                    ax.annotate(row["model"], (min(args.steps), row[metric]), fontsize=7)
            if pd_ax is not None and perception in row and distortion in row:
                pd_ax.plot(row[perception], row[distortion], "s", label=row["model"])
    steps_ax.set(xscale="log", xlabel="denoising steps", ylabel=distortion, title=f"{distortion} vs steps")
    if models:  # a baselines-only table has no curves to label
        steps_ax.legend(fontsize=7)
    if pd_ax is not None:
        pd_ax.set(xlabel=f"{perception} (lower = more natural)", ylabel=f"{distortion} (higher = more faithful)",
                  title="perception-distortion")
        pd_ax.invert_xaxis()
        pd_ax.legend(fontsize=7)
    if folder_ax is not None:
        folder_ax.set(xscale="log", xlabel="denoising steps", ylabel=f"{folder} (lower is better)",
                      title=f"{folder} vs steps")
        if models:
            folder_ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=100)


if __name__ == "__main__":
    main()
