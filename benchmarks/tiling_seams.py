"""Aggregation sampling vs naive tiling: where tiles meet, does the output show it?

    python benchmarks/tiling_seams.py --image data/corpus/images/X.png --lq-size 512 --tile 512 \
        --out docs/benchmarks/tiling_seams

The LQ input is the centre ``--lq-size`` crop of the image (a 2048² output at x4 for 512). Three outputs: the
whole image in one tile (the reference), naive tiling (tiles of ``--tile`` output pixels, no overlap: each
tile encoded, denoised and decoded on its own) and turbosr's aggregation sampling (overlapping latent tiles
fused with Gaussian weights at every denoising step, StableSR sec. 3.4; ``--overlap``), once with turbosr's
weights (sigma 0.3 x tile and ramps at interior tile edges) and once with StableSR's released ones (sigma 0.1 x
tile, no ramps). (The decoder is tiled exactly in both: halo tiling.) For each tiled output:
the mean absolute difference to the reference in 8-px bands along the tile borders and in the rest, their
ratio (1 = the borders are no worse than anywhere else), and the mean jump across border lines vs across other
lines. Writes OUT.md, OUT.json and OUT.png (a crop around a tile corner: naive | aggregation | StableSR's
weights | reference).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

SCRIPT = "benchmarks/tiling_seams.py"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", type=Path, required=True, help="a photo at least --lq-size on each side")
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the built-in x4)")
    parser.add_argument("--lq-size", type=int, default=512)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True, help="output path without suffix")
    return parser


def border_mask(height: int, width: int, tile: int, overlap: int, band: int = 4) -> torch.Tensor:
    """True within ``band`` pixels of any interior tile edge of the plan (output pixels)."""
    from turbosr.tiling import plan_tiles

    mask = torch.zeros(height, width, dtype=torch.bool)
    for window in plan_tiles(height, width, tile, overlap):
        for edge in (window.y0, window.y1):
            if 0 < edge < height:
                mask[max(0, edge - band) : edge + band, :] = True
        for edge in (window.x0, window.x1):
            if 0 < edge < width:
                mask[:, max(0, edge - band) : edge + band] = True
    return mask


def jump_ratio(image: torch.Tensor, tile: int, grid: int) -> float:
    """Mean |difference| between neighbouring columns/rows across tile borders (multiples of ``tile``) over the
    same across the other lines of the latent's pixel grid (multiples of ``grid``, where a patch latent's blocks
    meet anyway): 1 when tile borders look like any other block border."""
    dx = (image[..., :, 1:] - image[..., :, :-1]).abs().mean(dim=(0, 1, 2))  # (W - 1,): step after column i
    dy = (image[..., 1:, :] - image[..., :-1, :]).abs().mean(dim=(0, 1, 3))
    lines = torch.arange(len(dx)) + 1
    at_tile, at_grid = lines % tile == 0, (lines % grid == 0) & (lines % tile != 0)
    border = torch.cat([dx[at_tile], dy[at_tile]]).mean()
    other = torch.cat([dx[at_grid], dy[at_grid]]).mean()
    return float(border / other)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    from turbosr.image_files import load_image, save_image
    from turbosr.pipeline import SRPipeline
    from turbosr.reports import (
        command_line,
        folder_digest,
        markdown_table,
        model_identity,
        software_versions,
        write_json,
        write_text,
    )
    from turbosr.weights import builtin_model_dir

    model_dir = args.model or builtin_model_dir(4)
    pipeline = SRPipeline.from_pretrained(model_dir)
    image = load_image(args.image).rgb
    size = args.lq_size
    if min(image.shape[-2:]) < size:
        raise SystemExit(f"{args.image} is smaller than --lq-size {size}")
    top, left = (image.shape[-2] - size) // 2, (image.shape[-1] - size) // 2
    lq = image[..., top : top + size, left : left + size]
    out_size = size * pipeline.scale

    def upscale(tile: int, overlap: int, aggregation: str = "gaussian") -> tuple[torch.Tensor, float]:
        pipeline.aggregation = aggregation
        start = time.perf_counter()
        output = pipeline(lq, num_steps=args.steps, tile=tile, tile_overlap=overlap,
                          generator=torch.Generator().manual_seed(0))
        return output, time.perf_counter() - start

    reference, reference_seconds = upscale(out_size, 0)
    rows = []
    outputs = {}
    for name, overlap, aggregation in (("naive tiling", 0, "gaussian"),
                                       ("aggregation sampling", args.overlap, "gaussian"),
                                       ("aggregation, StableSR's weights", args.overlap, "stablesr")):
        output, seconds = upscale(args.tile, overlap, aggregation)
        outputs[name] = output
        mask = border_mask(out_size, out_size, args.tile, overlap)
        error = (output - reference).abs().mean(dim=(0, 1))
        rows.append({"method": name, "tile": args.tile, "overlap": overlap, "seconds": seconds,
                     "error_border": float(error[mask].mean()) * 255, "error_interior": float(error[~mask].mean()) * 255,
                     "jump_ratio": jump_ratio(output, args.tile, pipeline.autoencoder.factor)})
        rows[-1]["border_over_interior"] = rows[-1]["error_border"] / max(1e-9, rows[-1]["error_interior"])
        print(rows[-1], file=sys.stderr)
    rows.append({"method": "one tile (reference)", "tile": out_size, "overlap": 0, "seconds": reference_seconds,
                 "error_border": 0.0, "error_interior": 0.0, "jump_ratio": jump_ratio(reference, args.tile, pipeline.autoencoder.factor),
                 "border_over_interior": None})
    command = command_line(SCRIPT, argv)
    versions = software_versions()
    lines = [f"# Tile seams: {args.out.name}", "", f"Command: `{command}`", "",
             f"Input: the centre {size}² crop of `{args.image}` (digest {folder_digest(args.image)}); "
             f"output {out_size}²; model `{model_dir}` (digest {model_identity(model_dir)['digest']}), {args.steps} "
             f"step(s), seed 0; {', '.join(f'{k} {v}' for k, v in versions.items())}.", "",
             "Error = mean |output - one-tile output| (0-255) in 8-px bands along tile borders and elsewhere; jump "
             "ratio = mean step across tile-border lines / across the other lines of the latent's block grid "
             f"(every {pipeline.autoencoder.factor} px; 1 = tile borders look like any other block border).", "",
             *markdown_table(["method", "tile / overlap", "error at borders", "error elsewhere", "ratio",
                              "jump ratio", "seconds"],
                             [[r["method"], f"{r['tile']} / {r['overlap']}", f"{r['error_border']:.3f}",
                               f"{r['error_interior']:.3f}",
                               "-" if r["border_over_interior"] is None else f"{r['border_over_interior']:.2f}",
                               f"{r['jump_ratio']:.3f}", f"{r['seconds']:.1f}"] for r in rows])]
    write_text(args.out.with_suffix(".md"), lines)
    write_json(args.out.with_suffix(".json"), {"commands": [command], "versions": versions, "rows": rows,
                                               "model": model_identity(model_dir)})
    half = 64  # the picture: the tile corner (where four naive tiles meet) with the most detail around it
    corners = [(y, x) for y in range(args.tile, out_size, args.tile) for x in range(args.tile, out_size, args.tile)]
    y, x = max(corners, key=lambda c: float(reference[..., c[0] - half : c[0] + half, c[1] - half : c[1] + half].std()))
    crops = [o[..., y - half : y + half, x - half : x + half]
             for o in (outputs["naive tiling"], outputs["aggregation sampling"],
                       outputs["aggregation, StableSR's weights"], reference)]
    strip = torch.cat(crops, dim=-1)
    save_image(torch.nn.functional.interpolate(strip, scale_factor=2, mode="nearest"), args.out.with_suffix(".png"),
               overwrite=True)


if __name__ == "__main__":
    main()
