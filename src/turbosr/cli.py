"""The ``turbosr`` command line: thin subcommands that parse, call the API and print.

Every user-facing failure becomes one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
DTYPES = ("float32", "float16", "bfloat16")


class CLIError(Exception):
    """A user error the CLI reports in one line."""


# ------------------------------------------------------------------------------------------------------ upscale
def _add_upscale(sub: argparse._SubParsersAction) -> None:
    from turbosr.pipeline import DEFAULT_TILE, DEFAULT_TILE_OVERLAP

    p = sub.add_parser("upscale", help="upscale images, folders (recursive) or glob patterns")
    p.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("-o", "--output", required=True,
                   help="output folder (keeps the input tree), or a file name when there is one input image")
    p.add_argument("--model", help="a built-in model's name (x4: the x4 default, clean or bicubic-style "
                   "inputs; x4-real: photos with blur, noise or JPEG, removes them but draws no texture) or a model folder (default: the default built-in model for --scale)")
    p.add_argument("--scale", type=int, default=None, help="SR factor (must match the model; picks the built-in one)")
    p.add_argument("--steps", type=int, default=None,
                   help="denoising steps (default: the model's own, 1 = one-step SR for the built-ins)")
    p.add_argument("--strength", type=float, default=1.0,
                   help="starting noise level in (0,1]: 1 = most realism, lower = closer to the input (fidelity)")
    p.add_argument("--tile", type=int, default=DEFAULT_TILE, help=f"tile size in output pixels ({DEFAULT_TILE})")
    p.add_argument("--tile-overlap", type=int, default=DEFAULT_TILE_OVERLAP,
                   help=f"tile overlap in output pixels ({DEFAULT_TILE_OVERLAP})")
    p.add_argument("--fidelity", type=float, default=None, metavar="W",
                   help="StableSR CFW weight in [0, 1] for models with CFW modules: 0 = realism, 1 = fidelity "
                        "(left out: the model's own default, its folder's default_fidelity, else 0)")
    p.add_argument("--tags", action="store_true",
                   help="prompt with each image's RAM tags (SeeSR/AddSR folders imported with --tag-data; costs a "
                        "tagger and a text-encoder call per image)")
    p.add_argument("--guidance", type=float, default=None, metavar="G",
                   help="classifier-free guidance weight for models with a negative prompt (SeeSR: 5.5 when left "
                        "out; 1 = none)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (same seed, same output)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps ... (default: the process's device)")
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    from turbosr.colorfix import COLOR_FIXES

    p.add_argument("--color-fix", choices=tuple(COLOR_FIXES), default=None,
                   help="colour correction against the input (default: the model's own, none for the built-ins)")
    p.add_argument("--format", default="png", choices=("png", "jpg", "webp", "tif", "same"),
                   help="output format (default png; 'same' keeps each input's). 16-bit inputs give 16-bit PNG/TIFF")
    p.add_argument("--quality", type=int, default=95, help="JPEG/WebP quality 1-100 (default 95)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(run=_run_upscale)


def _output_path(source: Path, relative: Path, output: Path, single_file: bool, fmt: str) -> Path:
    if single_file:
        return output
    suffix = source.suffix.lower() if fmt == "same" else "." + fmt.lower().lstrip(".")
    return output / relative.with_suffix(suffix)


def _run_upscale(args: argparse.Namespace) -> int:
    import torch

    from turbosr.distributed import process_state
    from turbosr.image_files import IMAGE_SUFFIXES, UNSUPPORTED_SUFFIXES, load_image
    from turbosr.inputs import find_images
    from turbosr.pipeline import SRPipeline
    from turbosr.streaming import upscale_file
    from turbosr.weights import builtin_model_dir, resolve_model

    state = process_state()  # one process, or one of many under `accelerate launch`
    output = Path(args.output)
    single_file = output.suffix.lower() in IMAGE_SUFFIXES
    if not single_file and output.suffix.lower() in UNSUPPORTED_SUFFIXES:
        raise CLIError(f"-o {output}: turbosr cannot write {output.suffix} files; name a .png, .jpg, .webp or .tif "
                       "file, or a folder")
    if not 1 <= args.quality <= 100:
        raise CLIError(f"--quality must be in 1-100, got {args.quality}")
    if not 0 <= args.seed < 2**63:
        raise CLIError(f"--seed must be in [0, 2^63), got {args.seed}")
    found = find_images(args.inputs, skip=None if single_file else output)
    items = found.items
    if found.skipped and state.is_main_process:
        print(f"turbosr: {found.skipped} image(s) inside the output folder {output} are not inputs "
              "(earlier outputs are never upscaled again)", file=sys.stderr)
    unsupported = found.unsupported
    if unsupported and state.is_main_process:
        kinds = ", ".join(sorted({p.suffix.lower() for p in unsupported}))
        print(f"turbosr: skipped {len(unsupported)} file(s) turbosr cannot read ({kinds}), e.g. {unsupported[0]}",
              file=sys.stderr)
    if single_file and len(items) != 1:
        raise CLIError(f"-o {output} is a file name but {len(items)} input images were given; pass a folder")
    targets = [_output_path(source, relative, output, single_file, args.format) for source, relative in items]
    inputs = {source.resolve(): source for source, _ in items}
    seen: dict[Path, Path] = {}
    for (source, _), target in zip(items, targets, strict=True):  # before anything is written (or loaded)
        if target.resolve() in inputs:
            raise CLIError(f"{target} would be written but is an input ({inputs[target.resolve()]}): inputs are "
                           "never replaced; choose another output")
        if target in seen:
            raise CLIError(f"{seen[target]} and {source} would both be written to {target}: upscale them separately "
                           "or give folders instead of a pattern")
        seen[target] = source
    model_dir = resolve_model(args.model) if args.model else builtin_model_dir(args.scale or 4)
    device = _device(args.device, state.device)
    pipeline = SRPipeline.from_pretrained(model_dir, device=device, dtype=getattr(torch, args.dtype))
    if args.scale is not None and args.scale != pipeline.scale:
        raise CLIError(f"the model in {model_dir} is x{pipeline.scale}; --scale {args.scale} needs a model trained for it")
    if args.guidance is not None:  # the folder's sampler, with another classifier-free guidance weight
        import dataclasses

        from turbosr.config import ConfigError

        try:
            pipeline = pipeline.replace(sampler=dataclasses.replace(pipeline.sampler, guidance=args.guidance))
        except (ConfigError, ValueError) as error:
            raise CLIError(f"--guidance: {_one_line(error)}") from None
    pipeline.check_options(args.steps, args.strength, args.tile, args.tile_overlap, args.color_fix, args.fidelity,
                           args.tags)
    mine = list(zip(items, targets, strict=True))[state.process_index :: state.num_processes]  # each image once
    logging.getLogger("turbosr").info("process %d/%d: %d of %d images on %s", state.process_index,
                                      state.num_processes, len(mine), len(items), device)
    failures = kept = 0
    from tqdm.auto import tqdm

    for (source, _), target in tqdm(mine, disable=not sys.stderr.isatty() or not mine, unit="img"):
        if target.exists() and not args.overwrite:  # kept, not a failure: a rerun after a kill carries on
            kept += 1
            continue
        try:
            loaded = load_image(source)
            upscale_file(pipeline, loaded, target, num_steps=args.steps, strength=args.strength, tile=args.tile,
                         tile_overlap=args.tile_overlap, color_fix=args.color_fix, fidelity=args.fidelity,
                         generator=torch.Generator(device="cpu").manual_seed(args.seed), overwrite=args.overwrite,
                         quality=args.quality, tags=args.tags)
            logging.getLogger("turbosr").info("wrote %s", target)
        except (OSError, ValueError, RuntimeError) as error:
            failures += 1
            print(f"turbosr: skipped {source}: {_one_line(error)}", file=sys.stderr)
    if kept:
        print(f"turbosr: kept {kept} existing output(s) (--overwrite replaces them)", file=sys.stderr)
    return EXIT_FAILURES if failures else EXIT_OK


def _device(name: str | None, default: Any) -> Any:
    """The torch device --device names, checked here: a clear error for a device this torch cannot use."""
    import torch

    if name is None:
        return default
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise CLIError(f"--device {name}: not a device name (cpu, cuda, cuda:1, mps ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {name}: this torch has no CUDA device (torch {torch.__version__}); use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise CLIError(f"--device {name}: there are only {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise CLIError(f"--device {name}: MPS is not available here; use --device cpu")
    return device


# -------------------------------------------------------------------------------------------------------- train
def _add_train(sub: argparse._SubParsersAction) -> None:
    from turbosr.train import METHOD_NAMES

    p = sub.add_parser("train", help="train a model (resumes from RUN.OUTPUT_DIR/checkpoint-latest if present)")
    p.add_argument("method", nargs="?", choices=METHOD_NAMES,
                   help="the training method (left out: the one the --config recipe names with `method:`)")
    p.add_argument("--config", help="YAML run config (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config field, e.g. --set optim.learning_rate=1e-4 (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    import yaml

    from turbosr.config import load_config, missing_inputs, recipe_method, to_dict
    from turbosr.train import methods

    method = args.method or (recipe_method(args.config) if args.config else None)
    if method is None:
        raise CLIError("name the training method (turbosr train METHOD) or give a --config recipe with `method:`")
    if method not in methods():
        raise CLIError(f"{args.config} names method {method!r}; known: {', '.join(methods())}")
    config_class, train = methods()[method]
    config = load_config(config_class, args.config, args.overrides, method)
    from turbosr.config import model_folders
    from turbosr.train.common import start_problems

    missing = missing_inputs(config)
    for field, folder in model_folders(config).items():  # a pinned built-in release: say how to write it
        release = Path(folder)
        pin = config.run.start_digests.get(field)
        if not release.exists() and pin and release.parent.name == "releases" and release.name.endswith("-" + pin):
            missing = [f"{m} (write it: turbosr release {release.name[:-len(pin) - 1]} {pin} -o {folder})"
                       if m == f"{field} = {folder}" else m for m in missing]
    if missing:
        raise CLIError(f"{len(missing)} input path(s) do not exist: {'; '.join(missing)}")

    from turbosr.train import resolved_recipe

    changed = start_problems(model_folders(config), config.run, resolved_recipe)
    if changed:
        raise CLIError(f"{len(changed)} start folder(s) are not what the recipe was written for: {'; '.join(changed)}")
    if args.dry_run:
        print(yaml.safe_dump(to_dict(config), sort_keys=False), end="")
        return EXIT_OK
    print(f"checkpoint: {train(config)}")
    return EXIT_OK


# --------------------------------------------------------------------------------------------------------- eval
def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score outputs against references, or run a model and score it")
    p.add_argument("--pred", help="folder of outputs to score (matched to --ref by file name)")
    p.add_argument("--model", help="a built-in model's name (x4, x4-real), a model folder, or a baseline: bicubic, "
                   "lanczos, realesrgan_x4plus, realsr_df2k_x4, span_x4, dat_light; run on --lq")
    p.add_argument("--lq", help="folder of LQ inputs (with --model)")
    p.add_argument("--ref", required=True, help="folder of reference HQ images")
    from turbosr.metrics.table import METRIC_NAMES

    p.add_argument("--metrics", default="psnr_y,ssim_y", help=f"comma-separated, of: {', '.join(METRIC_NAMES)} "
                   "(grid: the periodic-artifact figure, reported with the references' own value)")
    p.add_argument("--grid-period", type=int, default=None,
                   help="period of the grid metric in pixels (default: the model's latent factor, else 8)")
    p.add_argument("--crop-border", type=int, default=0, help="pixels removed on each side (SR papers: the scale)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=int, default=None, help="scale for bicubic/lanczos (default: inferred)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--save-outputs", help="also write the model's outputs into this folder (never an input folder)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files in --save-outputs")
    p.add_argument("--out", help="write results JSON here (+ .csv and .md beside it)")
    p.set_defaults(run=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    import json

    from turbosr.metrics import evaluate_folders, evaluate_upscaler
    from turbosr.metrics.table import DEFAULT_GRID_PERIOD
    from turbosr.reports import write_results

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if args.pred and args.model:
        raise CLIError("give either --pred (score existing outputs) or --model with --lq, not both")
    if args.pred:
        period = args.grid_period or DEFAULT_GRID_PERIOD
        results = evaluate_folders(Path(args.pred), Path(args.ref), metrics, args.crop_border, period)
    elif args.model and args.lq:
        upscale, factor = _upscaler(args)
        period = args.grid_period or factor or DEFAULT_GRID_PERIOD
        save = Path(args.save_outputs) if args.save_outputs else None
        results = evaluate_upscaler(upscale, Path(args.lq), Path(args.ref), metrics, args.crop_border, save, period,
                                    overwrite=args.overwrite)
        results["model"] = args.model
        results["steps"] = args.steps
    else:
        raise CLIError("nothing to evaluate: give --pred DIR, or --model DIR with --lq DIR")
    if args.out:
        write_results(results, Path(args.out))
    print(json.dumps({"count": results["count"], "mean": results["mean"],
                      **{k: results[k] for k in ("seconds_per_image", "peak_memory_mb") if k in results}}, indent=2))
    return EXIT_OK


def _upscaler(args: argparse.Namespace) -> tuple[Callable, int | None]:
    """The upscaler --model names and its latent factor (None for baselines)."""
    import torch

    from turbosr.baselines import CLASSICAL, NCNN_MODELS, baseline_upscaler
    from turbosr.weights import resolve_model

    if args.model in CLASSICAL or args.model in NCNN_MODELS or args.model == "dat_light":
        if args.scale is None:
            raise CLIError(f"--model {args.model} needs --scale")
        return baseline_upscaler(args.model, args.scale), None
    from turbosr.pipeline import SRPipeline

    pipeline = SRPipeline.from_pretrained(resolve_model(args.model), device=args.device)
    if args.scale is not None and args.scale != pipeline.scale:
        raise CLIError(f"the model in {args.model} is x{pipeline.scale}, not x{args.scale}")

    def upscale(lq: torch.Tensor) -> torch.Tensor:
        return pipeline(lq, num_steps=args.steps, generator=torch.Generator().manual_seed(args.seed))

    return upscale, pipeline.autoencoder.factor


# --------------------------------------------------------------------------------------------------------- data
def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="evaluation pairs (the corpus itself: scripts/build_corpus.py)")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    pairs = data_sub.add_parser("make-pairs", help="HR folder (or corpus manifest.json) -> lq/ and hq/ pairs")
    pairs.add_argument("source", help="HR image folder, or a corpus manifest.json (uses --split)")
    pairs.add_argument("out")
    pairs.add_argument("--scale", type=int, required=True)
    pairs.add_argument("--degradation", default="bicubic")
    pairs.add_argument("--seed", type=int, default=0)
    pairs.add_argument("--crop", type=int, default=None, help="centre crop side in HR pixels (default: whole image)")
    pairs.add_argument("--split", default="test", choices=("train", "val", "test"),
                       help="which split of a corpus manifest (default: test, the split published numbers use)")
    pairs.add_argument("--overwrite", action="store_true")
    p.set_defaults(run=_run_data)


def _run_data(args: argparse.Namespace) -> int:
    from turbosr.data import make_pairs

    manifest = make_pairs(Path(args.source), Path(args.out), args.scale, args.degradation, args.seed, args.crop,
                          args.split, args.overwrite)
    print(f"wrote {manifest}")
    return EXIT_OK


# --------------------------------------------------------------------------------------------------------- demo
# ------------------------------------------------------------------------------------------------------- import
def _add_release(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("release", help="write an earlier release of a built-in model (by its digest) from the "
                       "repository's history")
    p.add_argument("name", help="the built-in (x4, x4-real)")
    p.add_argument("digest", help="its weights digest (a recipe's run.start_digests, a card's Start line)")
    p.add_argument("-o", "--output", required=True, type=Path, help="the new folder (must not exist)")
    p.set_defaults(run=_run_release)


def _run_release(args: argparse.Namespace) -> int:
    from turbosr.weights.releases import ReleaseNotFound, retrieve_release

    try:
        folder = retrieve_release(args.name, args.digest, args.output)
    except ReleaseNotFound as error:
        raise CLIError(str(error)) from None
    print(f"wrote {folder} ({args.name} with weights digest {args.digest})")
    return EXIT_OK


def _add_import(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="convert a released model (your local files) into a turbosr model folder")
    families = p.add_subparsers(dest="family", required=True)
    stablesr = families.add_parser("stablesr", help="StableSR (stablesr_000117.ckpt, 768v, turbo) [+ CFW]")
    stablesr.add_argument("--sd", required=True, type=Path, help="the diffusers Stable Diffusion 2 folder it builds on")
    stablesr.add_argument("--ckpt", required=True, type=Path, help="the StableSR checkpoint (.ckpt)")
    stablesr.add_argument("--cfw", type=Path, default=None, help="the CFW autoencoder (vqgan_cfw_00011.ckpt)")
    stablesr.add_argument("--scale", type=int, default=4, help="upscaling factor the folder runs at (default 4)")
    stablesr.add_argument("--storage", choices=("float32", "float16"), default="float32",
                          help="how the denoiser's weights are stored")
    stablesr.add_argument("-o", "--output", required=True, type=Path, help="the new model folder (must not exist)")
    stablesr.set_defaults(run=_run_import)
    osediff = families.add_parser("osediff", help="OSEDiff (osediff.pkl: LoRA on SD-2.1-base, merged at import)")
    osediff.add_argument("--sd", required=True, type=Path, help="the diffusers SD-2.1-base folder it builds on")
    osediff.add_argument("--weights", required=True, type=Path, help="OSEDiff's osediff.pkl")
    osediff.add_argument("--prompt", default="", help="the fixed prompt (default empty; OSEDiff used RAM tags)")
    addsr = families.add_parser("addsr", help="AddSR's 4-step student (unet/ + controlnet/, RAM + DAPE tower)")
    seesr = families.add_parser("seesr", help="SeeSR (unet/ + controlnet/, RAM + DAPE tower; 50 DDPM steps, CFG)")
    for parser, title in ((addsr, "AddSR"), (seesr, "SeeSR")):
        parser.add_argument("--sd", required=True, type=Path, help="the diffusers SD-2-base folder (VAE, text encoder)")
        parser.add_argument("--model", required=True, type=Path, help=f"{title}'s folder with unet/ and controlnet/")
        parser.add_argument("--ram", required=True, type=Path, help="RAM's ram_swin_large_14m.pth")
        parser.add_argument("--dape", type=Path, default=None, help="SeeSR's DAPE.pth (LoRA on RAM, merged)")
        parser.add_argument("--tag-data", type=Path, default=None,
                            help="RAM's ram/ folder (data/ram_tag_list*.txt, configs/q2l_config.json): adds the "
                                 "tagger and the SD text encoder, for `turbosr upscale --tags`")
    for parser in (osediff, addsr, seesr):
        parser.add_argument("--scale", type=int, default=4, help="upscaling factor the folder runs at (default 4)")
        parser.add_argument("--storage", choices=("float32", "float16"), default="float32",
                            help="how the denoiser's weights are stored")
        parser.add_argument("-o", "--output", required=True, type=Path, help="the new model folder (must not exist)")
    for parser in (osediff, addsr, seesr):
        parser.set_defaults(run=_run_import)


def _run_import(args: argparse.Namespace) -> int:
    from turbosr.importers import import_controlnet_release, import_osediff, import_stablesr

    if args.family == "stablesr":
        folder = import_stablesr(args.sd, args.ckpt, args.output, args.cfw, args.scale, args.storage)
    elif args.family in ("addsr", "seesr"):
        folder = import_controlnet_release(args.family, args.sd, args.model, args.ram, args.dape, args.output,
                                           args.scale, args.storage, args.tag_data)
    else:
        folder = import_osediff(args.sd, args.weights, args.output, args.prompt, args.scale, args.storage)
    print(f"wrote {folder} (run it with: turbosr upscale IMAGE -o OUT --model {folder})")
    return EXIT_OK


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="local web demo (Gradio) on http://127.0.0.1:PORT")
    p.add_argument("--model", action="append", default=[], metavar="NAME_OR_FOLDER",
                   help="a built-in model name or a model folder (repeatable; default: every built-in model)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="ask Gradio for a public link (needs the internet)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from turbosr.demo import builtin_models, launch

    builtin = builtin_models()
    models = {}
    for item in args.model:
        if item in builtin:
            models[item] = builtin[item]
        elif Path(item, "config.json").is_file():
            models[Path(item).name] = Path(item)
        else:
            raise CLIError(f"--model {item}: not a built-in model ({', '.join(builtin)}) or a model folder")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"turbosr: warning: --host {args.host} makes the demo reachable from other machines on the network "
              "(it has no authentication); use the default 127.0.0.1 to keep it on this machine", file=sys.stderr)
    print(f"turbosr demo on http://{args.host}:{args.port} (Ctrl-C to stop)", file=sys.stderr)
    launch(models or builtin, args.host, args.port, args.share, args.device)
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
    "eval": _add_eval,
    "data": _add_data,
    "import": _add_import,
    "release": _add_release,
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
    except (CLIError, OSError, ValueError, ImportError, RuntimeError, FloatingPointError) as error:
        if args.verbose:
            raise
        print(f"turbosr: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as error:  # noqa: BLE001  (a bug of ours: still one line, and -v shows where)
        if args.verbose:
            raise
        print(f"turbosr: internal error ({type(error).__name__}: {_one_line(error)}); run again with -v for the "
              "traceback and please report it", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
