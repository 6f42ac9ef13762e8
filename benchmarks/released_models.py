"""Seconds and peak memory of the released models' shapes run through turbosr, on full-size RANDOM weights.

The networks are built in the released shapes with random weights (no released weights exist here, so this
measures cost, never quality):
- ``stablesr``: SD-2.1 UNet + 22 SPADE layers (918.9 M), time-aware encoder (52.5 M), VAE + CFW (128.0 M); DDPM
  on StableSR's grid, CFW at 0.5 (one step is not a row: that grid is t = 0 alone, refused);
- ``osediff``: SD-2.1-base UNet (865.9 M) and VAE, one step at t = 999 on the LQ latent;
- ``addsr``: SD-2-base UNet + image attentions (1126.8 M), ControlNet (489.0 M), RAM Swin-L tower (195.2 M +
  projection), 1 to 4 re-noising steps with pixel-space self-refinement (a VAE decode and a tower call per step
  after the first);
- ``seesr``: AddSR's networks sampled as SeeSR's script does: DDPM on the leading grid with classifier-free
  guidance (the networks run on a batch of two per step); a row runs k of its 50 steps;
- ``FAMILY+tags`` (addsr, seesr): with RAM's tagging head (4585 classes) and SD-2's text encoder (OpenCLIP-H,
  340 M) per image; "of which tags" times that part alone;
- ``builtin``: the built-in x4 model, for scale.
Each row is a fresh process (peak resident set size of the whole process, weights included, from the kernel's
ru_maxrss) timing the whole ``SRPipeline.__call__`` on a random LQ image (bicubic upsample, tiled encode, the
steps, decode; no colour fix):

    python benchmarks/released_models.py --rows stablesr:512:4:float32 osediff:512:1:float32 addsr:512:4:float32 \
        --threads 2 --out docs/benchmarks/released_models

A row is FAMILY:OUTPUT_SIDE:STEPS:DTYPE. The reference code's StableSR numbers quoted in the table are the issue's
measurement of IceClear/StableSR on this CPU kind with the same random weights and 2 threads.
Writes a Markdown table and a PNG plot with the machine, versions and command.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

SCRIPT = "benchmarks/released_models.py"
REFERENCE = {("stablesr", "512", "4", "float32"): "46.9 s, 6.2 GB",
             ("stablesr", "512", "4", "bfloat16"): "22.7 s (autocast), 6.2 GB"}

RUN = r"""
import json, resource, sys, time, torch
from pathlib import Path
family, side, steps, dtype, threads, configs, device = (sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4],
                                                        int(sys.argv[5]), sys.argv[6], sys.argv[7])
torch.set_num_threads(threads)
sys.path.insert(0, str(Path(configs).resolve().parents[2] / "benchmarks"))
if family == "builtin":
    from turbosr import builtin_model_dir
    from turbosr.pipeline import SRPipeline
    pipeline = SRPipeline.from_pretrained(builtin_model_dir(4))
else:
    from released_stages import build  # the same full-size random-weight pipelines
    pipeline = build(family, torch.float32)
pipeline.to(device, getattr(torch, dtype))
lq = torch.rand(1, 3, side // 4, side // 4, generator=torch.Generator().manual_seed(0))
parameters = sum(p.numel() for p in pipeline.denoiser.parameters()) + sum(p.numel() for p in pipeline.autoencoder.parameters())
tags = family.endswith("+tags")
tag_seconds = None
if tags:  # the tagger and the text encoder alone, once (the whole call below includes them again)
    from turbosr.degradations import upsample_lq
    start = time.perf_counter()
    pipeline.tag_context(upsample_lq(lq.to(device, getattr(torch, dtype)), 4))
    tag_seconds = time.perf_counter() - start
start = time.perf_counter()
with torch.inference_mode():
    out = pipeline(lq, num_steps=steps, tile=512, tile_overlap=64, color_fix="none",
                   generator=torch.Generator().manual_seed(0), tags=tags)
if device != "cpu":
    torch.cuda.synchronize()
seconds = time.perf_counter() - start
assert out.shape[-1] == side and bool(torch.isfinite(out).all())
peak = (torch.cuda.max_memory_allocated() / 2**30 if device != "cpu"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
print("RESULT", json.dumps({"seconds": seconds, "peak_gib": peak, "tag_seconds": tag_seconds,
                            "parameters_m": parameters / 1e6}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", default=["stablesr:512:4:float32", "osediff:512:1:float32"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda on a lent GPU (peak = CUDA memory then)")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/released_models"))
    args = parser.parse_args()
    configs = Path(__file__).resolve().parents[1] / "tests" / "data" / "sd21_configs.json"
    results = []
    for row in args.rows:
        family, side, steps, dtype = row.split(":")
        done = subprocess.run([sys.executable, "-c", RUN, family, side, steps, dtype, str(args.threads), str(configs),
                               args.device],
                              capture_output=True, text=True)
        line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
        if done.returncode or not line:
            print(f"row {row} failed: {done.stderr.strip().splitlines()[-1:]}", flush=True)
            continue
        result = json.loads(line[0][7:])
        results.append({"family": family, "side": side, "steps": steps, "dtype": dtype, **result})
        print(row, result, flush=True)
        write(results, args)  # after every row: a killed run keeps what it measured


def _machine(device: str) -> str:
    if device != "cpu":
        import torch

        return torch.cuda.get_device_name(0)
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def write(results: list[dict], args: argparse.Namespace) -> None:
    import torch

    lines = ["# Released models' shapes through turbosr: seconds and peak memory (random weights)", "",
             f"`python {SCRIPT} --rows {' '.join(args.rows)} --threads {args.threads} --device {args.device}` on "
             f"{_machine(args.device)}, {args.threads} threads, torch {torch.__version__}, Python "
             f"{platform.python_version()}.", "",
             "| model | output | steps | dtype | parameters (M) | seconds | peak (GiB; RSS on CPU, CUDA memory on a GPU) "
             "| of which tags (s) | reference code (same CPU) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['family']} | {r['side']}² | {r['steps']} | {r['dtype']} | {r['parameters_m']:.0f} | "
                     f"{r['seconds']:.1f} | {r['peak_gib']:.2f} | "
                     f"{'-' if r.get('tag_seconds') is None else format(r['tag_seconds'], '.1f')} | "
                     f"{REFERENCE.get((r['family'], r['side'], r['steps'], r['dtype']), '-')} |")
    lines += ["", "Random weights: cost only. Nothing here says anything about output quality.", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(6, 3))
        labels = [f"{r['family']} {r['side']}² {r['steps']} st {r['dtype']}" for r in results]
        axis.barh(labels, [r["seconds"] for r in results])
        axis.set_xlabel("seconds per image")
        figure.tight_layout()
        figure.savefig(args.out.with_suffix(".png"), dpi=100)
    except ImportError:
        pass


if __name__ == "__main__":
    main()
