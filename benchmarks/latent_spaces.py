"""Reconstruction quality and decode time of latent spaces (patch-PCA vs learned KL autoencoder).

    python benchmarks/latent_spaces.py --latent patch=src/turbosr/weights/x4 \
        --latent kl=runs/autoencoder-kl/checkpoint-latest/model \
        --images data/test-x4/hq data/external-x4/hq --out docs/benchmarks/latent_spaces

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

SCRIPT = "benchmarks/latent_spaces.py"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latent", action="append", required=True, metavar="NAME=DIR")
    parser.add_argument("--images", type=Path, nargs="+", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True, help="output path without suffix")
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    from turbosr.image import from_model_range, to_model_range
    from turbosr.image_files import read_rgb_uint8
    from turbosr.inputs import list_images
    from turbosr.metrics import psnr
    from turbosr.models.autoencoders import load_autoencoder
    from turbosr.reports import (
        command_line,
        folder_digest,
        model_identity,
        software_versions,
        write_json,
        write_text,
    )

    command = command_line(SCRIPT, argv)
    versions = software_versions()
    images = {str(folder): folder_digest(folder) for folder in args.images}
    models = {item.split("=", 1)[0]: model_identity(item.split("=", 1)[1]) for item in args.latent}
    rows = []
    lines = ["# Latent spaces: reconstruction and decode time", "", f"Command: `{command}`", "",
             f"Machine: {platform.machine()} CPU, {args.threads} threads; "
             f"{', '.join(f'{k} {v}' for k, v in versions.items())}.",
             "Images (folder digest): " + ", ".join(f"{k} ({v})" for k, v in images.items()) + ".",
             "Latent folders: " + ", ".join(f"{k} = `{m['path']}` ({m['digest']})" for k, m in models.items()) + ".",
             "",
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
        rows.append({"latent": name, "factor": autoencoder.factor, "channels": autoencoder.latent_channels,
                     "params": params, "psnr_y": dict(zip(images, scores, strict=True)),
                     "decode_512_seconds": sorted(times)[1]})
    write_text(args.out.with_suffix(".md"), lines)
    write_json(args.out.with_suffix(".json"), {"commands": [command], "versions": versions, "images": images,
                                               "models": models, "rows": rows})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
