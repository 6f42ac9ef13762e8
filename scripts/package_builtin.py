"""Package a trained model folder as the built-in model and write its model card with measured numbers.

    python scripts/package_builtin.py runs/teacher-x4-small/checkpoint-latest/model --scale 4 \
        --run-config configs/teacher-x4-small.yaml --command "turbosr train teacher --config ..."

Stores the denoiser's parameters as float16 (buffers and the latent space stay float32) in
src/turbosr/weights/x{scale}/, then measures the packaged model (one step) against bicubic on the corpus's
held-out pairs and on the wheel photos no training data contains, and the time of a 128 -> 512 upscale.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import torch

from turbosr.baselines import baseline_upscaler
from turbosr.metrics import evaluate_upscaler
from turbosr.pipeline import SRPipeline
from turbosr.weights import WEIGHTS_DIR

BASELINES = ("bicubic", "lanczos")


def measure(pipeline: SRPipeline, pairs: Path, scale: int, steps: int) -> dict:
    def upscale(lq: torch.Tensor) -> torch.Tensor:
        return pipeline(lq, num_steps=steps, generator=torch.Generator().manual_seed(0))

    metrics = ["psnr_y", "ssim_y"]
    result = {}
    for name, upscaler in (("model", upscale), *((b, baseline_upscaler(b, scale)) for b in BASELINES)):
        scores = evaluate_upscaler(upscaler, pairs / "lq", pairs / "hq", metrics, crop_border=scale)
        result |= {"count": scores["count"], name: scores["mean"]}
    return result


def degradation_of(pairs: Path) -> str:
    """How a pair folder's LQ images were made, from the manifest ``turbosr data make-pairs`` wrote."""
    manifest = pairs / "manifest.json"
    if not manifest.is_file():
        return "degradation unknown"
    info = json.loads(manifest.read_text())
    return info.get("degradation", "?") + (f" degradation, seed {info['seed']}" if "seed" in info else " degradation")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--run-config", type=Path, required=True)
    parser.add_argument("--command", required=True, help="the exact training command(s), for the card")
    parser.add_argument("--notes", default="", help="training facts for the card (steps, wall time, hardware)")
    parser.add_argument("--pairs", type=Path, nargs="+", default=None,
                        help="pair folders (lq/, hq/) to measure on (default: data/heldout-xS data/external-xS)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--training-degradation", default="bicubic (MATLAB-compatible)",
                        help="the degradation the model was trained on, for the card")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pairs = args.pairs or [Path(f"data/heldout-x{args.scale}"), Path(f"data/external-x{args.scale}")]

    target = WEIGHTS_DIR / f"x{args.scale}"
    staging = WEIGHTS_DIR / f".x{args.scale}.staging"
    if staging.exists():
        shutil.rmtree(staging)
    source = SRPipeline.from_pretrained(args.model)
    if source.scale != args.scale:
        raise SystemExit(f"{args.model} is x{source.scale}, not x{args.scale}")
    source.save_pretrained(staging, weights_dtype=torch.float16)
    packaged = SRPipeline.from_pretrained(staging)

    results = {str(p): measure(packaged, p, args.scale, 1) for p in pairs}
    lq = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    packaged(lq)  # warm-up
    times = []
    for _ in range(3):
        start = time.perf_counter()
        packaged(lq, generator=torch.Generator().manual_seed(0))
        times.append(time.perf_counter() - start)
    seconds = sorted(times)[1]
    size_mb = sum(f.stat().st_size for f in staging.iterdir()) / 2**20
    params = sum(p.numel() for p in packaged.denoiser.parameters()) / 1e6

    lines = [
        f"# turbosr built-in model x{args.scale}",
        "",
        "A small latent diffusion SR model trained by this project on 2 CPU cores. One denoising step by default.",
        "",
        "## What it is",
        f"- Latent space: {packaged.autoencoder.config()['kind']} "
        f"(factor {packaged.autoencoder.factor}, {packaged.autoencoder.latent_channels} channels).",
        f"- Denoiser: diffusers UNet2DModel, {params:.1f} M parameters (stored as float16), input = noisy latent "
        "concatenated with the latent of the bicubic-upsampled LQ image (YONOS-SR conditioning).",
        f"- Prediction: {packaged.config.prediction_type}; target: {packaged.config.target}; "
        f"zero-terminal-SNR schedule: {packaged.config.schedule.zero_terminal_snr}.",
        f"- Files: {size_mb:.1f} MB.",
        "",
        "## How it was trained",
        f"- Config: `{args.run_config}`. Command: `{args.command}`.",
        f"- {args.notes}" if args.notes else "",
        f"- Data: the photo corpus of docs/data.md (train split; {args.training_degradation} degradation).",
        "",
        "## Measured (one step, seed 0; PSNR/SSIM on Y, border = scale)",
        "",
        "| pairs | images | " + " | ".join(f"{metric} {name}" for metric in ("PSNR-Y", "SSIM-Y")
                                            for name in ("model", *BASELINES)) + " |",
        "|---|---|" + "---|" * 2 * (1 + len(BASELINES)),
    ]
    for folder, r in results.items():
        cells = [f"{r[name][metric]:{fmt}}" for metric, fmt in (("psnr_y", ".3f"), ("ssim_y", ".4f"))
                 for name in ("model", *BASELINES)]
        lines.append(f"| {folder} ({degradation_of(Path(folder))}) | {r['count']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Time for one 128x128 -> {128 * args.scale}x{128 * args.scale} upscale: {seconds:.3f} s "
        f"({args.threads} threads, {platform.machine()} CPU, torch {torch.__version__}; median of 3; "
        "measured while other jobs shared the 2 cores).",
        "",
        f"data/heldout-x{args.scale} = centre 256x256 crops of the corpus's held-out photos; "
        f"data/external-x{args.scale} = centre crops of photos from PyPI wheels that no training data contains "
        "(see docs/data.md).",
        "",
        f"Measured by `python scripts/package_builtin.py {args.model} --scale {args.scale} ...` on "
        f"{time.strftime('%Y-%m-%d')}.",
    ]
    (staging / "README.md").write_text("\n".join(line for line in lines if line is not None) + "\n")
    (staging / "measurements.json").write_text(json.dumps({"results": results, "seconds_128": seconds}, indent=1))
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
