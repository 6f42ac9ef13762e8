"""StableSR's fidelity knob: quality as the CFW weight w goes 0 -> 1, and a picture strip of one crop.

    python benchmarks/fidelity_curve.py --model src/turbosr/weights/x4 \
        --pairs data/test-x4 --pairs data/test-x4-blind --strip-pairs data/test-x4 \
        --baselines bicubic realesrgan_x4plus --out docs/benchmarks/fidelity_curve_x4

For each pair set and each w: PSNR-Y / SSIM-Y (fidelity), NIQE (naturalness, lower is better), the periodic-
artifact figure ``grid`` (the HR images' own beside it), patch KID x1000 (distance to the HR patches' Inception
statistics) and "detail" (mean |Laplacian| of Y, the HR images' value beside it), plus the same for the baselines
(the perception-distortion plane). ``--metrics`` picks fewer (PSNR-Y and SSIM-Y always). Works for a learned
decoder with CFW inside it and for an older folder's image-level CFW module. Writes OUT.md, OUT.json, OUT.png
(curves) and OUT_strip.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

SCRIPT = "benchmarks/fidelity_curve.py"
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
METRICS = ("psnr_y", "ssim_y", "niqe", "grid", "lattice", "patch_kid")
HEADERS = {"psnr_y": "PSNR-Y ↑", "ssim_y": "SSIM-Y ↑", "niqe": "NIQE ↓", "grid": "grid →HR", "lattice": "lattice dB ≤HR+3",
           "patch_kid": "patch KID x1000 ↓"}
FORMATS = {"psnr_y": "{:.3f}", "ssim_y": "{:.4f}", "niqe": "{:.3f}", "grid": "{:.3f}", "lattice": "{:.2f}",
           "patch_kid": "{:.1f}"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a model folder with CFW modules")
    parser.add_argument("--pairs", type=Path, action="append", required=True, help="pair set (lq/, hq/), repeatable")
    parser.add_argument("--weights", type=float, nargs="+", default=list(WEIGHTS))
    parser.add_argument("--baselines", nargs="*", default=["bicubic"])
    parser.add_argument("--metrics", nargs="+", choices=METRICS, default=list(METRICS),
                        help="what to measure besides PSNR-Y and SSIM-Y (default: all)")
    parser.add_argument("--strip-pairs", type=Path, default=None, help="pair set of the picture strip")
    parser.add_argument("--strip-image", default=None, help="image name in it (default: the first)")
    parser.add_argument("--crop", type=int, default=128, help="strip crop side (output pixels)")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True, help="output path without suffix")
    return parser


def detail(images: torch.Tensor) -> float:
    """Mean |Laplacian| of the Y channel (x255): how much high-frequency content an image has."""
    from turbosr.metrics import rgb_to_y

    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=images.dtype).view(1, 1, 3, 3)
    return float(torch.nn.functional.conv2d(rgb_to_y(images) * 255, kernel).abs().mean())


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    from turbosr.baselines import baseline_upscaler
    from turbosr.image_files import load_image, save_image
    from turbosr.metrics import evaluate_upscaler, match_files
    from turbosr.pipeline import SRPipeline
    from turbosr.reports import (
        command_line,
        describe_pairs,
        markdown_table,
        model_identity,
        pairs_identity,
        software_versions,
        write_json,
        write_text,
    )

    pipeline = SRPipeline.from_pretrained(args.model)
    if not pipeline.has_cfw:
        raise SystemExit(f"{args.model} has no CFW modules (train them: turbosr train decoder, or turbosr train "
                         "stablesr --set stage=cfw)")
    metrics = [m for m in METRICS if m in {"psnr_y", "ssim_y", *args.metrics}]
    rows, sets = [], {}
    for pairs in args.pairs:
        identity = pairs_identity(pairs / "lq", pairs / "hq")
        sets[str(pairs)] = identity
        references = [load_image(ref).rgb for _, ref in match_files(pairs / "lq", pairs / "hq")]
        hr_detail = sum(detail(r) for r in references) / len(references)
        runs = [(f"turbosr w={w:g}", w) for w in args.weights] + [(name, None) for name in args.baselines]
        for name, weight in runs:
            outputs: list[torch.Tensor] = []

            def upscale(lq: torch.Tensor, weight: float | None = weight, name: str = name,
                        outputs: list[torch.Tensor] = outputs) -> torch.Tensor:
                if weight is None:
                    out = baseline_upscaler(name, pipeline.scale)(lq)
                else:
                    out = pipeline(lq, num_steps=args.steps, fidelity=weight,
                                   generator=torch.Generator().manual_seed(0))
                outputs.append(out.float().cpu())
                return out

            result = evaluate_upscaler(upscale, pairs / "lq", pairs / "hq", metrics, crop_border=pipeline.scale)
            rows.append({"pairs": str(pairs), "method": name, "w": weight, **result["mean"],
                         **{f"hr_{k}": v for k, v in result.get("reference_mean", {}).items()},
                         "detail": sum(detail(o) for o in outputs) / len(outputs), "hr_detail": hr_detail,
                         "seconds": result["seconds_per_image"]})
            print(rows[-1], file=sys.stderr)

    command = command_line(SCRIPT, argv)
    versions = software_versions()
    lines = [f"# Fidelity curve: {args.out.name}", "", f"Command: `{command}`", "",
             f"Model: `{args.model}` (digest {model_identity(args.model)['digest']}), {args.steps} step(s), seed 0; "
             f"{', '.join(f'{k} {v}' for k, v in versions.items())}.", ""]
    for pairs in args.pairs:
        subset = [r for r in rows if r["pairs"] == str(pairs)]
        hr_own = "".join(f", HR {m} {FORMATS[m].format(subset[0][f'hr_{m}'])}" for m in ("grid", "lattice")
                         if m in metrics)
        lines += [f"**{describe_pairs(sets[str(pairs)])}** (HR detail {subset[0]['hr_detail']:.2f}{hr_own})", "",
                  *markdown_table(["method", *(HEADERS[m] for m in metrics), "detail", "s/image"],
                                  [[r["method"], *(FORMATS[m].format(r[m]) for m in metrics), f"{r['detail']:.2f}",
                                    f"{r['seconds']:.3f}"] for r in subset]), ""]
    write_text(args.out.with_suffix(".md"), lines)
    write_json(args.out.with_suffix(".json"), {"commands": [command], "versions": versions, "pairs": sets,
                                               "model": model_identity(args.model), "rows": rows})
    if args.strip_pairs is not None:
        pairs = match_files(args.strip_pairs / "lq", args.strip_pairs / "hq")
        lq_path, hq_path = next((p for p in pairs if p[1].stem == args.strip_image), pairs[0])
        lq, hq = load_image(lq_path).rgb, load_image(hq_path).rgb
        size = args.crop
        top, left = (hq.shape[-2] - size) // 2, (hq.shape[-1] - size) // 2
        tiles = [torch.nn.functional.interpolate(lq, scale_factor=pipeline.scale, mode="nearest")]
        tiles += [pipeline(lq, num_steps=args.steps, fidelity=w, generator=torch.Generator().manual_seed(0))
                  for w in args.weights]
        tiles.append(hq)
        strip = torch.cat([t[..., top : top + size, left : left + size] for t in tiles], dim=-1)
        save_image(strip, args.out.with_name(args.out.name + "_strip.png"), overwrite=True)
    try:
        import matplotlib
    except ImportError:
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    planes = [m for m in ("niqe", "patch_kid") if m in metrics]  # perception-distortion planes
    fig, axes = plt.subplots(1, 1 + len(planes), figsize=(5.5 * (1 + len(planes)), 4), squeeze=False)
    axes = axes[0]
    for pairs in args.pairs:
        curve = [r for r in rows if r["pairs"] == str(pairs) and r["w"] is not None]
        label = Path(pairs).name
        axes[0].plot([r["w"] for r in curve], [r["psnr_y"] for r in curve], "o-", label=f"{label} PSNR-Y")
        for ax, metric in zip(axes[1:], planes, strict=True):
            ax.plot([r[metric] for r in curve], [r["psnr_y"] for r in curve], "o-", label=f"turbosr, {label}")
            for r in rows:
                if r["pairs"] == str(pairs) and r["w"] is None:
                    ax.plot(r[metric], r["psnr_y"], "s", label=f"{r['method']}, {label}")
    axes[0].set(xlabel="CFW weight w", ylabel="PSNR-Y (dB)", title="fidelity vs w")
    for ax, metric in zip(axes[1:], planes, strict=True):
        ax.set(xlabel=f"{HEADERS[metric][:-2]} (lower = closer to photos)", ylabel="PSNR-Y (dB)",
               title="perception-distortion")
        ax.invert_xaxis()
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=100)


if __name__ == "__main__":
    main()
