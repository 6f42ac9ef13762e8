"""The ``turbosr`` command line: thin subcommands that parse, call the API and print.

Every user-facing failure becomes one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

EXIT_OK, EXIT_FAILURES, EXIT_USAGE = 0, 1, 2
DTYPES = ("float32", "float16", "bfloat16")


class CLIError(Exception):
    """A user error the CLI reports in one line."""


# ------------------------------------------------------------------------------------------------------ upscale
def _add_upscale(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("upscale", help="upscale images, folders (recursive) or glob patterns")
    p.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("-o", "--output", required=True,
                   help="output folder (keeps the input tree), or a file name when there is one input image")
    p.add_argument("--model", help="model folder (default: the built-in model for --scale)")
    p.add_argument("--scale", type=int, default=None, help="SR factor (must match the model; picks the built-in one)")
    p.add_argument("--steps", type=int, default=1, help="denoising steps (default 1: one-step SR)")
    p.add_argument("--strength", type=float, default=1.0,
                   help="starting noise level in (0,1]: 1 = most realism, lower = closer to the input (fidelity)")
    p.add_argument("--tile", type=int, default=512, help="tile size in output pixels (default 512)")
    p.add_argument("--tile-overlap", type=int, default=64, help="tile overlap in output pixels (default 64)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (same seed, same output)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps ... (default: the process's device)")
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument("--color-fix", choices=("none", "adain", "wavelet"), default="none")
    p.add_argument("--format", default="png", help="output format: png (default), jpg, webp, tif, or 'same' as input")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(run=_run_upscale)


def _output_path(source: Path, relative: Path, output: Path, single_file: bool, fmt: str) -> Path:
    if single_file:
        return output
    suffix = source.suffix.lower() if fmt == "same" else "." + fmt.lower().lstrip(".")
    return output / relative.with_suffix(suffix)


def _run_upscale(args: argparse.Namespace) -> int:
    import torch
    from accelerate import PartialState

    from turbosr.image import IMAGE_SUFFIXES, find_images, load_image, save_image, upscale_alpha
    from turbosr.pipeline import SRPipeline
    from turbosr.weights import builtin_model_dir

    state = PartialState()  # one process, or one of many under `accelerate launch`
    items = find_images(args.inputs)
    output = Path(args.output)
    single_file = output.suffix.lower() in IMAGE_SUFFIXES
    if single_file and len(items) != 1:
        raise CLIError(f"-o {output} is a file name but {len(items)} input images were given; pass a folder")
    model_dir = Path(args.model) if args.model else builtin_model_dir(args.scale or 4)
    device = torch.device(args.device) if args.device else state.device
    pipeline = SRPipeline.from_pretrained(model_dir, device=device, dtype=getattr(torch, args.dtype))
    if args.scale is not None and args.scale != pipeline.scale:
        raise CLIError(f"the model in {model_dir} is x{pipeline.scale}; --scale {args.scale} needs a model trained for it")
    mine = items[state.process_index :: state.num_processes]  # each image exactly once across processes
    failures = 0
    from tqdm.auto import tqdm

    for source, relative in tqdm(mine, disable=not sys.stderr.isatty() or not mine, unit="img"):
        target = _output_path(source, relative, output, single_file, args.format)
        try:
            if target.exists() and not args.overwrite:
                raise FileExistsError(f"{target} exists (use --overwrite to replace it)")
            loaded = load_image(source)
            generator = torch.Generator(device="cpu").manual_seed(args.seed)
            result = pipeline(loaded.rgb, num_steps=args.steps, strength=args.strength, tile=args.tile,
                              tile_overlap=args.tile_overlap, color_fix=args.color_fix, generator=generator)
            alpha = upscale_alpha(loaded.alpha, pipeline.scale) if loaded.alpha is not None else None
            save_image(result, target, alpha=alpha, icc_profile=loaded.icc_profile, overwrite=args.overwrite)
            logging.getLogger("turbosr").info("wrote %s", target)
        except (OSError, ValueError, RuntimeError) as error:
            failures += 1
            print(f"turbosr: skipped {source}: {_one_line(error)}", file=sys.stderr)
    return EXIT_FAILURES if failures else EXIT_OK


# -------------------------------------------------------------------------------------------------------- train
def _train_methods() -> dict[str, Callable]:
    from turbosr.train import autoencoder, decoder, scale_distill, teacher

    return {"autoencoder": autoencoder.train, "teacher": teacher.train,
            "scale-distill": scale_distill.train, "decoder": decoder.train}


TRAIN_METHOD_NAMES = ("autoencoder", "teacher", "scale-distill", "decoder")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (resumes from OUTPUT_DIR/checkpoint-latest if present)")
    p.add_argument("method", choices=TRAIN_METHOD_NAMES)
    p.add_argument("--config", help="YAML run config (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config field, e.g. --set optim.learning_rate=1e-4 (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    import yaml

    from turbosr.config import TrainConfig, load_config, to_dict

    method_key = args.method.replace("-", "_")
    config = load_config(TrainConfig, args.config, [f"method={method_key}", *args.overrides])
    if args.dry_run:
        print(yaml.safe_dump(to_dict(config), sort_keys=False), end="")
        return EXIT_OK
    folder = _train_methods()[args.method](config)
    print(f"checkpoint: {folder}")
    return EXIT_OK


# --------------------------------------------------------------------------------------------------------- demo
def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="local web demo on http://127.0.0.1:PORT")
    p.add_argument("--model", help="model folder (default: the built-in x4 model)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from turbosr.demo import launch
    from turbosr.pipeline import SRPipeline
    from turbosr.weights import builtin_model_dir

    pipeline = SRPipeline.from_pretrained(args.model or builtin_model_dir(4), device=args.device)
    launch(pipeline, args.port)
    return EXIT_OK


# ---------------------------------------------------------------------------------------------------------- main
def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="turbosr", description="fast diffusion-based image super-resolution")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS.values():
        add(sub)
    return parser


COMMANDS: dict[str, Callable[[argparse._SubParsersAction], None]] = {
    "upscale": _add_upscale,
    "train": _add_train,
    "demo": _add_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("turbosr: interrupted", file=sys.stderr)
        return 130
    except (CLIError, OSError, ValueError, ImportError, RuntimeError) as error:
        print(f"turbosr: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
