"""Seconds and peak memory of StableSR's released shape run through turbosr, on full-size RANDOM weights.

The networks are built in the released shapes (SD-2.1 UNet + 22 SPADE layers: 918.9 M parameters; time-aware
encoder 52.5 M; VAE 83.7 M + CFW fusion 44.4 M) with random weights: no released weights exist here, so this
measures cost, never quality. Each row is a fresh process (peak resident set size of the whole process, weights
included, from the kernel's ru_maxrss), the whole ``SRPipeline.__call__`` on a random LQ image (bicubic upsample,
tiled encode, k DDPM steps on the respaced grid, CFW decode at 0.5):

    python benchmarks/released_stablesr.py --rows 512:4:float32 512:4:bfloat16 512:2:float32 \\
        --threads 2 --out docs/benchmarks/released_stablesr

A row is OUTPUT_SIDE:STEPS:DTYPE. One step is not a row: StableSR's grid for one step is t = 0 alone, which the
pipeline refuses (it needs at least 2). The reference code's numbers quoted in the table are the issue's
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

SCRIPT = "benchmarks/released_stablesr.py"
REFERENCE = {("512", "4", "float32"): "46.9 s, 6.2 GB", ("512", "4", "bfloat16"): "22.7 s (autocast), 6.2 GB"}

RUN = r"""
import json, resource, sys, time, torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from turbosr.config import ModelConfig, ScheduleConfig
from turbosr.diffusion import Sampler
from turbosr.models.autoencoders import KLAutoencoder
from turbosr.models.denoiser import Denoiser
from turbosr.pipeline import SRPipeline
side, steps, dtype, threads, configs = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
torch.set_num_threads(threads)
torch.manual_seed(0)
cfg = json.load(open(configs))
unet = UNet2DConditionModel.from_config({k: v for k, v in cfg["unet"].items() if not k.startswith("_")})
encoder = {"in_channels": 4, "model_channels": 256, "out_channels": 256, "num_res_blocks": 2,
           "attention_resolutions": [1, 2, 4], "channel_mult": [1, 1, 2, 2], "num_heads": 4, "num_head_channels": -1}
denoiser = Denoiser(unet, 4, "latent", torch.randn(1, 77, 1024), conditioning="sft",
                    structure={"encoder": encoder, "hidden": 128})
vae = AutoencoderKL.from_config({k: v for k, v in cfg["vae"].items() if not k.startswith("_")})
autoencoder = KLAutoencoder(vae, 0.18215, "sample", [1, 2])
config = ModelConfig(preset="tiny", latent="kl", latent_factor=8, latent_channels=4, unet="unet2d_condition",
                     unet_channels=(320, 640, 1280, 1280), attention_levels=(True,) * 4, prediction_type="epsilon",
                     target="latent", schedule=ScheduleConfig(zero_terminal_snr=False), conditioning="sft")
pipeline = SRPipeline(denoiser, autoencoder, config, sampler=Sampler(kind="ddpm"), default_fidelity=0.5,
                      default_steps=steps).to(dtype=getattr(torch, dtype))
pipeline.aggregation = "stablesr"
lq = torch.rand(1, 3, side // 4, side // 4, generator=torch.Generator().manual_seed(0))
parameters = sum(p.numel() for p in denoiser.parameters()) + sum(p.numel() for p in autoencoder.parameters())
start = time.perf_counter()
out = pipeline(lq, num_steps=steps, tile=512, tile_overlap=64, generator=torch.Generator().manual_seed(0))
seconds = time.perf_counter() - start
assert out.shape[-1] == side and bool(torch.isfinite(out).all())
print("RESULT", json.dumps({"seconds": seconds, "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                            "parameters_m": parameters / 1e6}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", default=["512:4:float32", "512:4:bfloat16"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/released_stablesr"))
    args = parser.parse_args()
    configs = Path(__file__).resolve().parents[1] / "tests" / "data" / "sd21_configs.json"
    results = []
    for row in args.rows:
        side, steps, dtype = row.split(":")
        done = subprocess.run([sys.executable, "-c", RUN, side, steps, dtype, str(args.threads), str(configs)],
                              capture_output=True, text=True)
        line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
        if done.returncode or not line:
            raise SystemExit(f"row {row} failed: {done.stderr.strip().splitlines()[-1:]}")
        result = json.loads(line[0][7:])
        results.append({"side": side, "steps": steps, "dtype": dtype, **result})
        print(row, result, flush=True)
    import torch

    lines = ["# StableSR's released shape through turbosr: seconds and peak memory (random weights)", "",
             f"`python {SCRIPT} --rows {' '.join(args.rows)} --threads {args.threads}` on {platform.processor() or platform.machine()}, "
             f"{args.threads} threads, torch {torch.__version__}, Python {platform.python_version()}.", "",
             "| output | steps | dtype | seconds | peak RSS (GiB) | reference code (same CPU, same shapes) |",
             "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['side']}² | {r['steps']} | {r['dtype']} | {r['seconds']:.1f} | {r['peak_gib']:.2f} | "
                     f"{REFERENCE.get((r['side'], r['steps'], r['dtype']), '-')} |")
    lines += ["", f"Parameters (denoiser + autoencoder): {results[0]['parameters_m']:.1f} M.", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(6, 3))
        labels = [f"{r['side']}² {r['steps']} st {r['dtype']}" for r in results]
        axis.barh(labels, [r["seconds"] for r in results])
        axis.set_xlabel("seconds per image")
        figure.tight_layout()
        figure.savefig(args.out.with_suffix(".png"), dpi=100)
    except ImportError:
        pass


if __name__ == "__main__":
    main()
