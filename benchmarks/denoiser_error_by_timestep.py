"""How well each model denoises at each noise level, and where DDIM sampling drifts: a diagnosis for prediction types.

For every held-out pair the true diffusion variable x0 (the HR latent, or the residual for the residual target) is
noised to timestep t with a fixed seed; the model's output is converted to (x0, eps) estimates and compared with
the truth. Errors are mean squared errors per latent element; "x0 power" is the mean square of the true x0, so an
x0 error above it is worse than predicting zero. A second table follows k-step DDIM sampling from the last
timestep and prints, per step, the x0 error and the mean square of x_t (about 1 on the training distribution: a
value far above 1 means the sampler has left it).

    python benchmarks/denoiser_error_by_timestep.py --lq data/val-x4/lq --ref data/val-x4/hq --scale 4 \
        --model "v=runs/pred-v-ztsnr/checkpoint-latest/model" \
        --model "epsilon=runs/pred-epsilon-scaled-linear/checkpoint-latest/model" \
        --out docs/benchmarks/prediction_types_error_by_t

Writes OUT.md and OUT.json.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch

SCRIPT = "benchmarks/denoiser_error_by_timestep.py"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lq", required=True, type=Path)
    parser.add_argument("--ref", required=True, type=Path)
    parser.add_argument("--model", action="append", required=True, metavar="NAME=DIR")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--timesteps", type=int, nargs="+", default=[50, 250, 500, 750, 900, 999])
    parser.add_argument("--trajectory-steps", type=int, default=25, help="DDIM steps of the trajectory table")
    parser.add_argument("--images", type=int, default=8, help="how many pairs (sorted by name) to use")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True, help="output path without suffix")
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)

    from turbosr.degradations import upsample_lq
    from turbosr.diffusion import Sampler, add_noise, predict_x0_eps, sampling_timesteps
    from turbosr.image import to_model_range
    from turbosr.image_files import load_image
    from turbosr.metrics import match_files
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

    try:
        matched = match_files(args.lq, args.ref)[: args.images]
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    pairs = [(load_image(lq_path).rgb, load_image(ref_path).rgb) for lq_path, ref_path in matched]

    error_rows, trajectory_rows = [], []
    for spec in args.model:
        name, _, folder = spec.partition("=")
        if not folder:
            raise SystemExit(f"error: --model wants NAME=DIR, got {spec!r}")
        pipeline = SRPipeline.from_pretrained(folder)
        kind, alpha_bar = pipeline.config.prediction_type, pipeline.alpha_bar
        sums: dict[int, list[float]] = {t: [0.0, 0.0] for t in args.timesteps}
        trajectory: list[list[float]] = []
        power = 0.0
        with torch.inference_mode():
            for index, (lq, ref) in enumerate(pairs):
                lq_latent = pipeline.autoencoder.encode(to_model_range(upsample_lq(lq, args.scale)))
                x0 = pipeline.denoiser.to_x0(pipeline.autoencoder.encode(to_model_range(ref)), lq_latent)
                power += x0.pow(2).mean().item()
                generator = torch.Generator().manual_seed(args.seed + index)
                for t in args.timesteps:
                    noise = torch.randn(x0.shape, generator=generator)
                    t_batch = torch.full((x0.shape[0],), t, dtype=torch.long)
                    x_t = add_noise(x0, noise, t_batch, alpha_bar)
                    x0_hat, eps_hat = predict_x0_eps(pipeline.denoiser(x_t, lq_latent, t), x_t, t_batch, alpha_bar,
                                                     kind)
                    sums[t][0] += (x0_hat - x0).pow(2).mean().item()
                    sums[t][1] += (eps_hat - noise).pow(2).mean().item()
                steps: list[list[float]] = []

                def denoise(x_t: torch.Tensor, t: int, previous: torch.Tensor | None, window: object, steps=steps,
                            x0=x0, lq_latent=lq_latent, denoiser=pipeline.denoiser, alpha_bar=alpha_bar,
                            kind=kind) -> torch.Tensor:
                    output = denoiser(x_t, lq_latent, t)
                    t_batch = torch.full((x_t.shape[0],), t, dtype=torch.long)
                    x0_hat, _ = predict_x0_eps(output, x_t, t_batch, alpha_bar, kind)
                    steps.append([t, (x0_hat - x0).pow(2).mean().item(), x_t.pow(2).mean().item()])
                    return output

                start = torch.randn(x0.shape, generator=generator)
                Sampler().sample(denoise, lambda _, w, start=start: start[w],
                                 lambda w, start=start: torch.zeros_like(start)[w], sampling_timesteps(args.trajectory_steps, len(alpha_bar)), alpha_bar, kind)
                trajectory = steps if not trajectory else [[a[0], a[1] + b[1], a[2] + b[2]]
                                                           for a, b in zip(trajectory, steps, strict=True)]
        count = len(pairs)
        for t in args.timesteps:
            error_rows.append({"model": name, "prediction_type": kind, "t": t, "x0_mse": sums[t][0] / count,
                               "eps_mse": sums[t][1] / count, "x0_power": power / count})
        for t, x0_error, x_t_power in trajectory:
            trajectory_rows.append({"model": name, "t": t, "x0_mse": x0_error / count, "x_t_power": x_t_power / count})

    command = command_line(SCRIPT, argv)
    pair_set = pairs_identity(args.lq, args.ref)
    versions = software_versions()
    models = {spec.partition("=")[0]: model_identity(spec.partition("=")[2]) for spec in args.model}
    lines = [f"# Denoising error by timestep: {args.out.name}", "", "Command:", "", f"`{command}`", "",
             f"Machine: {platform.machine()} CPU; {', '.join(f'{k} {v}' for k, v in versions.items())}. "
             f"The first {len(pairs)} pairs of {describe_pairs(pair_set)}; noise seed {args.seed}. "
             "Mean squared errors per latent element.", "",
             *[f"- {name}: `{m['path']}` (digest {m['digest']})" for name, m in models.items()], "",
             "| model | prediction | t | x0 MSE | eps MSE | x0 power |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['prediction_type']} | {r['t']} | {r['x0_mse']:.4f} | {r['eps_mse']:.4f} "
              f"| {r['x0_power']:.4f} |" for r in error_rows]
    lines += ["", f"{args.trajectory_steps}-step DDIM from the last timestep: x0 error and mean square of x_t "
              "at each step (every 4th step and the last shown).", "",
              "| model | t | x0 MSE | x_t power |", "|---|---|---|---|"]
    for spec in args.model:
        name = spec.partition("=")[0]
        rows = [r for r in trajectory_rows if r["model"] == name]
        lines += [f"| {r['model']} | {r['t']} | {r['x0_mse']:.3f} | {r['x_t_power']:.3f} |"
                  for i, r in enumerate(rows) if i % 4 == 0 or i == len(rows) - 1]
    write_text(args.out.with_suffix(".md"), lines)
    write_json(args.out.with_suffix(".json"), {"commands": [command], "pairs": pair_set, "models": models,
                                               "versions": versions, "errors": error_rows,
                                               "trajectory": trajectory_rows})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
