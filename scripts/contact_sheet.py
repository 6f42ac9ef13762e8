"""Contact sheet of degraded samples: docs/img/degradations.png (see docs/degradations.md).

    python scripts/contact_sheet.py data/external/images/scikit-image__coffee.png --out docs/img/degradations.png
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from turbosr.degradations import RealESRGANConfig, bicubic_degrade, degrade_realesrgan, jpeg_compress
from turbosr.image import tensor_to_pil
from turbosr.image_files import load_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/img/degradations.png"))
    parser.add_argument("--crop", type=int, default=192)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    rgb = load_image(args.image).rgb
    top, left = (rgb.shape[-2] - args.crop) // 2, (rgb.shape[-1] - args.crop) // 2
    hq = rgb[..., top : top + args.crop, left : left + args.crop]
    columns = [("HR", hq), ("bicubic", bicubic_degrade(hq, args.scale)), ("JPEG q=20 (HR)", jpeg_compress(hq, 20))]
    rows = [columns]
    for seed in args.seeds:
        row = []
        for strength in (0.0, 0.5, 1.0, 1.5):
            config = dataclasses.replace(RealESRGANConfig(), strength=strength)
            lq = degrade_realesrgan(hq, args.scale, config, generator=torch.Generator().manual_seed(seed))
            row.append((f"seed {seed}, strength {strength}", lq))
        rows.append(row)
    cell = args.crop
    sheet = Image.new("RGB", (cell * 4, (cell + 16) * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(rows):
        for c, (label, image) in enumerate(row):
            pil = tensor_to_pil(image).resize((cell, cell), Image.Resampling.NEAREST)
            sheet.paste(pil, (c * cell, r * (cell + 16) + 16))
            draw.text((c * cell + 2, r * (cell + 16) + 2), label, fill="black")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
