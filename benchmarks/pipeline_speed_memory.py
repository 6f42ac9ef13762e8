"""Time and peak memory of SRPipeline vs output size at a fixed tile size (issue: memory flat in image size).

CPU: peak memory is the process's peak RSS growth measured in a fresh subprocess per size (ru_maxrss), so one
size's allocations do not hide another's. CUDA: torch.cuda.max_memory_allocated.

    python benchmarks/pipeline_speed_memory.py --model src/turbosr/weights/x4 --sizes 512 1024 2048 4096
    python benchmarks/pipeline_speed_memory.py --preset tiny            # random weights, shape only
    python benchmarks/pipeline_speed_memory.py --device cuda --dtype float16 --compile

Writes a Markdown table (and a PNG plot with --plot) with the machine, versions and command.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = "benchmarks/pipeline_speed_memory.py"


def measure_one(args: argparse.Namespace, size: int) -> dict:
    import torch

    from turbosr.models import build_model, model_config
    from turbosr.pipeline import SRPipeline

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    if args.model:
        pipeline = SRPipeline.from_pretrained(args.model, device=args.device, dtype=dtype)
    else:
        config = model_config(args.preset, scale=args.scale)
        pipeline = SRPipeline(*build_model(config), config).to(args.device, dtype)
    if args.compile:
        pipeline.denoiser = torch.compile(pipeline.denoiser)
    lq = torch.rand(1, 3, size // pipeline.scale, size // pipeline.scale)
    generator = torch.Generator().manual_seed(0)
    baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        pipeline(lq, num_steps=args.steps, tile=args.tile, tile_overlap=args.tile_overlap, generator=generator)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if args.device.startswith("cuda"):
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline_rss) / 1024
    output_mb = 3 * size * size * 4 / 2**20  # one float32 RGB image at output size
    return {"size": size, "tile": args.tile, "seconds": sorted(times)[len(times) // 2], "peak_mb": peak_mb,
            "output_mb": output_mb}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder (default: random weights of --preset)")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--tile-overlap", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--out", default="docs/benchmarks/pipeline_speed_memory.md")
    parser.add_argument("--plot", action="store_true", help="also write a PNG plot (needs matplotlib)")
    parser.add_argument("--tiles", type=int, nargs="*", default=[256, 512, 1024],
                        help="tile sizes for the tile sweep at --sweep-size")
    parser.add_argument("--sweep-size", type=int, default=2048)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one size, print JSON
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(args, args.one)))
        return

    def run(size: int, tile: int) -> dict:
        command = [sys.executable, __file__, *argv, "--tile", str(tile), "--one", str(size)]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        row = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"{size:>5} px, tile {tile}: {row['seconds']:.2f} s, peak +{row['peak_mb']:.0f} MB", file=sys.stderr)
        return row

    rows = [run(size, args.tile) for size in args.sizes]
    sweep = [run(args.sweep_size, tile) for tile in args.tiles]
    from turbosr.reports import command_line, model_identity, software_versions, write_json, write_text

    command = command_line(SCRIPT, argv)
    versions = software_versions()
    model = model_identity(args.model) if args.model else {"path": f"random {args.preset}", "digest": None}
    lines = [
        "# SRPipeline time and peak memory vs output size",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {args.threads} threads, device {args.device}, "
        f"dtype {args.dtype}; {', '.join(f'{k} {v}' for k, v in versions.items())}",
        f"Model: `{model['path']}` (digest {model['digest']}); tile {args.tile}, overlap {args.tile_overlap}, "
        f"{args.steps} step(s)",
        "",
        "Peak memory growth is the process's peak RSS during the calls minus before (CPU), in MB. It includes the",
        "full-size image buffers (bicubic-upsampled input, blended output and its weight map), which grow with the",
        "image (last column: growth in units of one float32 output image); the networks' working memory depends",
        "on the tile.",
        "",
        "| output size | tile | time (s) | peak memory growth (MB) | one output image (MB) | growth / output image |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows + sweep:
        lines.append(f"| {row['size']}² | {row['tile']} | {row['seconds']:.2f} | {row['peak_mb']:.0f} | "
                     f"{row['output_mb']:.0f} | {row['peak_mb'] / row['output_mb']:.2f} |")
    out = Path(args.out)
    write_text(out, lines)
    write_json(out.with_suffix(".json"), {"commands": [command], "versions": versions, "model": model,
                                          "rows": rows, "tile_sweep": sweep})
    print("\n".join(lines))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        sizes = [r["size"] for r in rows]
        axes[0].plot(sizes, [r["seconds"] for r in rows], "o-")
        axes[0].set(xlabel="output side (px)", ylabel="seconds", title="time")
        axes[1].plot(sizes, [r["peak_mb"] for r in rows], "o-", label="peak growth")
        axes[1].plot(sizes, [r["output_mb"] for r in rows], "s--", label="one output image")
        axes[1].set(xlabel="output side (px)", ylabel="MB", title="memory")
        axes[1].legend()
        fig.tight_layout()
        fig.savefig(out.with_suffix(".png"), dpi=100)


if __name__ == "__main__":
    main()
