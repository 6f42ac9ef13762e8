"""Side-by-side crops: bicubic | built-in 1 step | built-in 4 steps | HR, for a few evaluation pairs.

    python scripts/side_by_side.py data/external-x4 --names scikit-image__coffee scikit-learn__china \
        --out docs/img/builtin_x4_side_by_side.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from turbosr import SRPipeline, builtin_model_dir
from turbosr.degradations import upsample_lq
from turbosr.image import load_image, tensor_to_pil


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs", type=Path)
    parser.add_argument("--names", nargs="+", required=True)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    pipeline = SRPipeline.from_pretrained(builtin_model_dir(4))
    rows = []
    for name in args.names:
        lq = load_image(args.pairs / "lq" / f"{name}.png").rgb
        hq = load_image(args.pairs / "hq" / f"{name}.png").rgb
        one = pipeline(lq, generator=torch.Generator().manual_seed(0))
        four = pipeline(lq, num_steps=4, generator=torch.Generator().manual_seed(0))
        top, left = (hq.shape[-2] - args.crop) // 2, (hq.shape[-1] - args.crop) // 2
        crops = [x[..., top : top + args.crop, left : left + args.crop]
                 for x in (upsample_lq(lq, 4), one, four, hq)]
        rows.append(crops)
    labels = ["bicubic", "turbosr 1 step", "turbosr 4 steps", "HR"]
    cell = args.crop * 2
    sheet = Image.new("RGB", (cell * 4, (cell + 14) * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, crops in enumerate(rows):
        for c, crop in enumerate(crops):
            sheet.paste(tensor_to_pil(crop).resize((cell, cell), Image.Resampling.NEAREST), (c * cell, r * (cell + 14) + 14))
            draw.text((c * cell + 2, r * (cell + 14)), f"{labels[c]} ({args.names[r]})", fill="black")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
