"""Peak memory and time of upscaling an image FILE to an image file, streamed vs in memory (issue: memory flat in
image size). Each run is a fresh process under /usr/bin/time (peak resident set size of the whole process,
Python and the model included), so one size's allocations do not hide another's.

    python benchmarks/file_memory.py --model src/turbosr/weights/x4 --sizes 2048 4096 8192 16384 \\
        --out docs/benchmarks/file_memory

``streamed``: ``turbosr.upscale_file`` (strips from file to file above turbosr.streaming.STREAM_PIXELS);
``in memory``: the whole-image path (``pipeline(image)`` + ``save_image``), what every size used before.
Writes a Markdown table and a PNG plot with the machine, versions and command.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

SCRIPT = "benchmarks/file_memory.py"

RUN = r"""
import sys, time, torch
from turbosr.pipeline import SRPipeline
from turbosr.streaming import upscale_file
from turbosr.image_files import load_image, save_image
torch.set_num_threads(int(sys.argv[4]))
pipeline = SRPipeline.from_pretrained(sys.argv[1])
start = time.perf_counter()
if sys.argv[5] == "streamed":
    upscale_file(pipeline, sys.argv[2], sys.argv[3], generator=torch.Generator().manual_seed(0), overwrite=True)
else:
    loaded = load_image(sys.argv[2])
    save_image(pipeline(loaded.rgb, generator=torch.Generator().manual_seed(0)), sys.argv[3], overwrite=True)
print("SECONDS", time.perf_counter() - start)
"""


def photo_like(size: int, path: Path) -> None:
    """A size x size RGB PNG with a photo's falling spectrum (content does not change time or memory)."""
    import numpy as np
    import torch

    from turbosr.image_files import save_image

    generator = torch.Generator().manual_seed(size)
    frequency = torch.fft.fftfreq(size)
    radius = (frequency[:, None] ** 2 + frequency[None, :] ** 2).sqrt().clamp_min(1 / size)
    image = torch.fft.ifft2(torch.randn(3, size, size, generator=generator, dtype=torch.complex64) / radius**1.25).real
    image = ((image - image.mean()) / image.std() * 0.15 + 0.5).clamp(0, 1)[None]
    save_image(image, path)
    assert np.isfinite(image.numpy()).all()


def measure(model: str, source: Path, target: Path, threads: int, mode: str) -> dict:
    result = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-c", RUN, model, str(source), str(target),
                             str(threads), mode], capture_output=True, text=True)
    if result.returncode != 0:
        return {"error": (result.stderr.strip().splitlines() or ["?"])[-1]}
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    seconds = float(re.search(r"SECONDS ([0-9.]+)", result.stdout).group(1))
    return {"peak_mib": peak_kb / 1024, "seconds": seconds}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096, 8192, 16384], help="output sides")
    parser.add_argument("--modes", nargs="+", default=["streamed", "in memory"], choices=("streamed", "in memory"))
    parser.add_argument("--max-in-memory", type=int, default=8192, help="largest output side run in memory")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)

    from turbosr.pipeline import SRPipeline
    from turbosr.reports import (
        command_line,
        markdown_table,
        model_identity,
        software_versions,
        write_json,
        write_text,
    )

    scale = SRPipeline.from_pretrained(args.model).scale
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            source = Path(folder) / f"in-{size}.png"
            photo_like(size // scale, source)
            for mode in args.modes:
                if mode == "in memory" and size > args.max_in_memory:
                    continue
                measured = measure(args.model, source, Path(folder) / f"out-{size}.png", args.threads, mode)
                row = {"output": size, "mode": mode, **measured}
                if "seconds" in row:
                    row["us_per_pixel"] = row["seconds"] / size**2 * 1e6
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)
                (Path(folder) / f"out-{size}.png").unlink(missing_ok=True)
    command = command_line(SCRIPT, argv)
    versions = ", ".join(f"{k} {v}" for k, v in software_versions().items())
    identity = model_identity(args.model)
    header = [f"# Upscaling a file: peak memory and time vs output size ({args.out.name})", "",
              f"- `{command}`", f"- Model: `{identity['path']}` (digest {identity['digest']}), x{scale}, one step, "
              "default tile 512 / overlap 64.",
              f"- Machine: {platform.machine()} CPU, {args.threads} threads; {versions}. Peak = maximum resident "
              "set size of the whole process (/usr/bin/time); seconds = upscale + write, model load excluded.", ""]
    table = markdown_table(["output", "mode", "peak RSS (MiB)", "seconds", "µs per output pixel"], [
        [f"{r['output']}²", r["mode"], f"{r['peak_mib']:.0f}" if "peak_mib" in r else r.get("error", "-"),
         f"{r['seconds']:.1f}" if "seconds" in r else "-", f"{r['us_per_pixel']:.2f}" if "seconds" in r else "-"]
        for r in rows])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out.with_suffix(".json"), {"commands": [command], "versions": software_versions(),
                                               "model": identity, "rows": rows})
    write_text(args.out.with_suffix(".md"), header + table)
    print("\n".join(header + table))
    try:
        import matplotlib
    except ImportError:
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for mode in args.modes:
        series = [r for r in rows if r["mode"] == mode and "peak_mib" in r]
        axes[0].plot([r["output"] for r in series], [r["peak_mib"] for r in series], "o-", label=mode)
        axes[1].plot([r["output"] for r in series], [r["us_per_pixel"] for r in series], "o-", label=mode)
    axes[0].set(xscale="log", yscale="log", xlabel="output side (px)", ylabel="peak RSS (MiB)", title="memory")
    axes[1].set(xscale="log", xlabel="output side (px)", ylabel="µs per output pixel", title="time")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=100)


if __name__ == "__main__":
    main()
