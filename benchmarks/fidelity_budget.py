"""Where a patch-latent model's fidelity is lost: the latent space, the UNet's latent, or the decoder.

    python benchmarks/fidelity_budget.py --model x4=src/turbosr/weights/x4 \
        --pairs data/test-x4 data/external-x4 --out docs/benchmarks/fidelity_budget_x4

For each pair folder (FOLDER/lq, FOLDER/hq) and model, PSNR-Y (border 4, outputs quantised to 8 bits like every
table here) of:

- the HR image's own latent through the linear patch decode: the most any model in this latent space can reach
  with the linear decode (the latent space's ceiling);
- the HR latent through the model's learned decoder at w = 0 and w = 1 (what the decoder does to an exact latent);
- the model's one-step latent through the linear decode, and through its decoder at w = 0 and w = 1 (the last two
  are the pipeline's own outputs with ``--fidelity 0`` / ``1``, untiled);
- bicubic.

The gap from the model's latent (linear decode) to the ceiling is the UNet's; the gap from the linear decode to the
decoder's output is what the decoder adds. One step, seed 0.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch

SCRIPT = "benchmarks/fidelity_budget.py"
ROWS = ("HR latent, linear decode (ceiling)", "HR latent, decoder w = 0", "HR latent, decoder w = 1",
        "model latent, linear decode", "model latent, decoder w = 0 (the output)",
        "model latent, decoder w = 1 (--fidelity 1)", "bicubic")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, metavar="NAME=DIR",
                        help="a model folder with a patch latent (repeatable)")
    parser.add_argument("--pairs", type=Path, nargs="+", required=True, help="folders with lq/ and hq/")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True, help="output path without suffix")
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    from turbosr.degradations import upsample_lq
    from turbosr.image import from_model_range, to_model_range
    from turbosr.image_files import read_rgb_uint8
    from turbosr.metrics import match_files, psnr, quantize
    from turbosr.models.autoencoders import PatchAutoencoder
    from turbosr.pipeline import SRPipeline
    from turbosr.reports import (
        command_line,
        describe_pairs,
        model_identity,
        pairs_identity,
        software_versions,
        write_json,
        write_text,
    )

    command = command_line(SCRIPT, argv)
    versions = software_versions()
    pairs = {str(folder): pairs_identity(folder / "lq", folder / "hq") for folder in args.pairs}
    models = {item.split("=", 1)[0]: model_identity(item.split("=", 1)[1]) for item in args.model}
    lines = ["# Where the fidelity is lost: latent space, UNet, decoder (one step, PSNR-Y)", "", f"Command: `{command}`",
             "", f"Machine: {platform.machine()} CPU, {args.threads} threads; "
             f"{', '.join(f'{k} {v}' for k, v in versions.items())}.",
             "Pairs: " + ", ".join(describe_pairs(v) for v in pairs.values()) + ".",
             "Models: " + ", ".join(f"{k} = `{m['path']}` ({m['digest']})" for k, m in models.items()) + ".", ""]
    results = []
    for item in args.model:
        name, folder = item.split("=", 1)
        pipe = SRPipeline.from_pretrained(folder)
        autoencoder = pipe.autoencoder
        if not isinstance(autoencoder, PatchAutoencoder):
            raise SystemExit(f"{folder}: fidelity_budget reads a patch latent, this model's is {autoencoder.kind}")
        scores: dict[str, dict[str, float]] = {}
        with torch.inference_mode():
            for pair_folder in args.pairs:
                values: dict[str, list[float]] = {row: [] for row in ROWS}
                for lq_path, hq_path in match_files(pair_folder / "lq", pair_folder / "hq"):
                    hq = read_rgb_uint8(hq_path).float().div(255)[None]
                    upsampled = upsample_lq(read_rgb_uint8(lq_path).float().div(255)[None], pipe.scale)
                    hq_latent = autoencoder.encode(to_model_range(hq))
                    lq_latent = autoencoder.encode(to_model_range(upsampled))
                    latent = pipe.denoise_latents(lq_latent, num_steps=1, generator=torch.Generator().manual_seed(0))
                    outputs = {
                        ROWS[0]: autoencoder.decode_linear(hq_latent), ROWS[1]: autoencoder.decode(hq_latent),
                        ROWS[2]: autoencoder.decode(hq_latent, lq_latent, 1.0) if autoencoder.has_cfw else None,
                        ROWS[3]: autoencoder.decode_linear(latent), ROWS[4]: autoencoder.decode(latent),
                        ROWS[5]: autoencoder.decode(latent, lq_latent, 1.0) if autoencoder.has_cfw else None,
                    }
                    for row, output in outputs.items():
                        if output is not None:
                            image = quantize(from_model_range(output).clamp(0, 1))
                            values[row].append(float(psnr(image, hq, 4, y_channel=True)))
                    values[ROWS[6]].append(float(psnr(quantize(upsampled), hq, 4, y_channel=True)))
                scores[str(pair_folder)] = {row: sum(v) / len(v) for row, v in values.items() if v}
        results.append({"model": name, "psnr_y": scores})
        lines += [f"## {name}", "", "| decode of | " + " | ".join(str(p) for p in args.pairs) + " |",
                  "|---|" + "---|" * len(args.pairs)]
        for row in ROWS:
            cells = [f"{scores[str(p)][row]:.3f}" if row in scores[str(p)] else "-" for p in args.pairs]
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
        lines.append("")
    write_text(args.out.with_suffix(".md"), lines)
    write_json(args.out.with_suffix(".json"), {"commands": [command], "versions": versions, "pairs": pairs,
                                               "models": models, "rows": results})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
