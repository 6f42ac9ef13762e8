"""Reconstruction quality and decode time of latent spaces (patch-PCA vs learned KL autoencoder).

    python benchmarks/latent_spaces.py --latent patch=src/turbosr/weights/x4 \
        --latent kl=runs/autoencoder-kl/checkpoint-latest/model \
        --images data/heldout-x4/hq data/external-x4/hq --out docs/benchmarks/latent_spaces

Each folder may be a model folder or an autoencoder folder. Y-PSNR (border 4) of encode -> decode on the images,
and the median time to decode a 512x512 image's latent.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latent", action="append", required=True, metavar="NAME=DIR")
    parser.add_argument("--images", type=Path, nargs="+", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from turbosr.image import from_model_range, list_images, read_rgb_uint8, to_model_range
    from turbosr.metrics import psnr
    from turbosr.train.common import load_autoencoder

    lines = ["# Latent spaces: reconstruction and decode time", "",
             f"Command: `python benchmarks/latent_spaces.py {' '.join(sys.argv[1:])}`",
             f"Machine: {platform.machine()} CPU, {args.threads} threads, torch {torch.__version__}.", "",
             "| latent | factor | channels | params | " + " | ".join(f"PSNR-Y {p}" for p in args.images)
             + " | decode 512² (s) |", "|---|---|---|---|" + "---|" * len(args.images) + "---|"]
    for item in args.latent:
        name, folder = item.split("=", 1)
        autoencoder = load_autoencoder(folder).eval()
        scores = []
        with torch.inference_mode():
            for images in args.images:
                values = []
                for path in list_images(images):
                    hq = read_rgb_uint8(path).float().div(255)[None]
                    hq = hq[..., : hq.shape[-2] // autoencoder.factor * autoencoder.factor,
                            : hq.shape[-1] // autoencoder.factor * autoencoder.factor]
                    out = from_model_range(autoencoder.decode(autoencoder.encode(to_model_range(hq))))
                    values.append(float(psnr(out, hq, 4, y_channel=True)))
                scores.append(sum(values) / len(values))
            latent = torch.randn(1, autoencoder.latent_channels, 512 // autoencoder.factor, 512 // autoencoder.factor)
            autoencoder.decode(latent)
            times = []
            for _ in range(3):
                start = time.perf_counter()
                autoencoder.decode(latent)
                times.append(time.perf_counter() - start)
        params = sum(p.numel() for p in autoencoder.parameters()) + sum(b.numel() for b in autoencoder.buffers())
        lines.append(f"| {name} | {autoencoder.factor} | {autoencoder.latent_channels} | {params / 1e6:.2f} M | "
                     + " | ".join(f"{s:.2f}" for s in scores) + f" | {sorted(times)[1]:.3f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
