"""How many fixed val crops does validation during training need to rank models as the full val evaluation does?

    python benchmarks/validation_size.py --manifest data/corpus/manifest.json --pairs data/val-x4 \
        --model builtin=src/turbosr/weights/x4 --model other=runs/x/checkpoint-latest/model ... \
        --counts 4 8 16 21 --crop 128 --out docs/benchmarks/validation_size

For each model: the full evaluation (one-step PSNR-Y on every pair of --pairs, the val split's centre crops)
and the training-time validation (:func:`turbosr.train.common.validate` on the first N fixed crops of the val
split, as a run with ``run.validation_images=N`` and ``data.crop_size=CROP`` sees them: one fixed crop of each of
N images spread evenly over the split). Reports, per N, the
Kendall rank correlation with the full ranking and the number of model pairs ordered differently.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch

SCRIPT = "benchmarks/validation_size.py"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, required=True, help="corpus manifest (its val split)")
    parser.add_argument("--pairs", type=Path, required=True, help="the val pair set (lq/, hq/)")
    parser.add_argument("--model", action="append", required=True, metavar="NAME=DIR")
    parser.add_argument("--counts", type=int, nargs="+", default=[4, 8, 16, 21])
    parser.add_argument("--crop", type=int, default=128, help="data.crop_size of the runs being validated")
    parser.add_argument("--degradation", default="bicubic")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True, help="output path without suffix")
    return parser


def kendall(first: list[float], second: list[float]) -> tuple[float, int]:
    """Kendall's tau-a of two score lists, and the number of pairs they order differently."""
    pairs = list(itertools.combinations(range(len(first)), 2))
    discordant = sum((first[i] - first[j]) * (second[i] - second[j]) < 0 for i, j in pairs)
    return (len(pairs) - 2 * discordant) / max(1, len(pairs)), discordant


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    from turbosr.metrics import evaluate_upscaler
    from turbosr.pipeline import SRPipeline
    from turbosr.reports import (
        command_line,
        describe_pairs,
        folder_digest,
        markdown_table,
        model_identity,
        pairs_identity,
        software_versions,
        write_json,
        write_text,
    )
    from turbosr.run_config import DataConfig
    from turbosr.train.reporting import RunLog
    from turbosr.train.validation import validate, validation_crops

    data = DataConfig(manifest=str(args.manifest), crop_size=args.crop, degradation=args.degradation)
    rows = []
    for item in args.model:
        name, folder = item.split("=", 1)
        pipeline = SRPipeline.from_pretrained(folder)

        def upscale(lq: torch.Tensor, pipeline: SRPipeline = pipeline) -> torch.Tensor:
            return pipeline(lq, generator=torch.Generator().manual_seed(0))

        full = evaluate_upscaler(upscale, args.pairs / "lq", args.pairs / "hq", ["psnr_y"], pipeline.scale)
        row = {"model": name, "model_folder": model_identity(folder), "full_psnr_y": full["mean"]["psnr_y"]}
        for count in args.counts:
            crops = validation_crops(data, pipeline.scale, count)
            record = validate(pipeline, crops, data, 0, RunLog(".", enabled=False))
            row[f"val{count}_psnr_y"] = record["val_psnr_y"]
        rows.append(row)
        print(row, file=sys.stderr)
    full_scores = [row["full_psnr_y"] for row in rows]
    agreement = []
    for count in args.counts:
        tau, discordant = kendall([row[f"val{count}_psnr_y"] for row in rows], full_scores)
        agreement.append({"crops": count, "kendall_tau": tau, "discordant_pairs": discordant,
                          "pairs": len(rows) * (len(rows) - 1) // 2})
    command = command_line(SCRIPT, argv)
    versions = software_versions()
    pair_set = pairs_identity(args.pairs / "lq", args.pairs / "hq")
    lines = [
        "# Validation size: rank agreement with the full val evaluation", "", f"Command: `{command}`", "",
        f"Full evaluation: one-step PSNR-Y on {describe_pairs(pair_set)}. Training-time validation: one fixed "
        f"{args.crop}² crop of each of N images spread evenly over the val split of `{args.manifest}` (manifest digest "
        f"{folder_digest(args.manifest)}), {args.degradation} degradation, seed 0. "
        f"{', '.join(f'{k} {v}' for k, v in versions.items())}.", "",
        *markdown_table(["model", "full val PSNR-Y", *(f"{c} crops" for c in args.counts)],
                        [[r["model"], f"{r['full_psnr_y']:.3f}", *(f"{r[f'val{c}_psnr_y']:.3f}" for c in args.counts)]
                         for r in sorted(rows, key=lambda r: -r["full_psnr_y"])]),
        "", *markdown_table(["crops", "Kendall tau vs full", "pairs ordered differently"],
                            [[a["crops"], f"{a['kendall_tau']:.3f}", f"{a['discordant_pairs']} of {a['pairs']}"]
                             for a in agreement]),
    ]
    write_text(args.out.with_suffix(".md"), lines)
    write_json(args.out.with_suffix(".json"), {"commands": [command], "versions": versions, "pairs": pair_set,
                                               "rows": rows, "agreement": agreement})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
