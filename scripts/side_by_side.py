"""Side-by-side centre crops of a few evaluation pairs, one column per method.

    python scripts/side_by_side.py data/external-x4 --names scikit-image__coffee scikit-learn__china \
        --out docs/img/builtin_x4_side_by_side.png
    python scripts/side_by_side.py data/test-x4-blind --names NAME ... --out docs/img/x4_real_side_by_side.png \
        --column LQ=lq --column Real-ESRGAN=baseline:realesrgan_x4plus --column "turbosr x4=model:x4" \
        --column "turbosr x4-real=model:x4-real" --column HR=hr

A column is LABEL=SPEC with SPEC one of: ``lq`` (the input, pixels enlarged), ``hr``, ``bicubic``,
``baseline:NAME`` (turbosr.baselines), ``model:MODEL[@STEPS][@fidelity=W]`` (a built-in name or a model folder;
seed 0, 1 step unless @STEPS, the model's default CFW weight unless @fidelity=W). The default columns are bicubic |
built-in x4 at 1 and 4 steps | HR.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from turbosr.image import tensor_to_pil
from turbosr.image_files import load_image

DEFAULT_COLUMNS = ["bicubic=bicubic", "turbosr 1 step=model:x4", "turbosr 4 steps=model:x4@4", "HR=hr"]


def column_maker(spec: str, scale: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """(lq, hq) -> the column's full-size image, for one SPEC (see the module docstring)."""
    import torch.nn.functional as F

    from turbosr import SRPipeline, builtin_model_dir
    from turbosr.baselines import baseline_upscaler

    if spec == "lq":
        return lambda lq, hq: F.interpolate(lq, scale_factor=scale, mode="nearest")
    if spec == "hr":
        return lambda lq, hq: hq
    if spec == "bicubic" or spec.startswith("baseline:"):
        upscale = baseline_upscaler(spec.removeprefix("baseline:"), scale)
        return lambda lq, hq: upscale(lq)
    if spec.startswith("model:"):
        model, *options = spec.removeprefix("model:").split("@")
        fidelity = [float(o.removeprefix("fidelity=")) for o in options if o.startswith("fidelity=")]
        steps = [int(o) for o in options if not o.startswith("fidelity=")]
        folder = Path(model) if Path(model).is_dir() else builtin_model_dir(model)
        pipeline = SRPipeline.from_pretrained(folder)
        return lambda lq, hq: pipeline(lq, num_steps=steps[0] if steps else 1, fidelity=fidelity[0] if fidelity else None,
                                       generator=torch.Generator().manual_seed(0))
    raise SystemExit(f"unknown column {spec!r}: use lq, hr, bicubic, baseline:NAME or model:MODEL[@STEPS][@fidelity=W]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs", type=Path)
    parser.add_argument("--names", nargs="+", required=True,
                        help="pair names; NAME@LEFT,TOP picks the crop's top-left corner in HR pixels (default: centre)")
    parser.add_argument("--column", action="append", default=None, metavar="LABEL=SPEC")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    columns = [item.partition("=") for item in (args.column or DEFAULT_COLUMNS)]
    labels = [label for label, _, _ in columns]
    makers = [column_maker(spec, args.scale) for _, _, spec in columns]
    rows = []
    for item in args.names:
        name, _, corner = item.partition("@")
        lq = load_image(args.pairs / "lq" / f"{name}.png").rgb
        hq = load_image(args.pairs / "hq" / f"{name}.png").rgb
        top, left = (hq.shape[-2] - args.crop) // 2, (hq.shape[-1] - args.crop) // 2
        if corner:
            left, top = (int(v) for v in corner.split(","))
            if not (0 <= top <= hq.shape[-2] - args.crop and 0 <= left <= hq.shape[-1] - args.crop):
                parser.error(f"{item}: the {args.crop}-px crop does not fit in the {hq.shape[-1]}x{hq.shape[-2]} image")
        rows.append([make(lq, hq)[..., top : top + args.crop, left : left + args.crop] for make in makers])
    cell = args.crop * 2
    sheet = Image.new("RGB", (cell * len(makers), (cell + 14) * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, crops in enumerate(rows):
        for c, crop in enumerate(crops):
            image = tensor_to_pil(crop.clamp(0, 1)).resize((cell, cell), Image.Resampling.NEAREST)
            sheet.paste(image, (c * cell, r * (cell + 14) + 14))
            label = f"{labels[c]} ({args.names[r].partition('@')[0][-24:]})" if c == 0 else labels[c]
            draw.text((c * cell + 2, r * (cell + 14)), label, fill="black")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
