"""Package a trained model folder as a built-in model, measure it, and write its model card.

    python scripts/package_builtin.py package runs/x4/checkpoint-latest/model --name x4 \
        --pairs "test split=data/test-x4" --pairs "external photos=data/external-x4" \
        --fact "..." --training-command "turbosr train teacher --config ..."
    python scripts/package_builtin.py render src/turbosr/weights/x4      # README.md again from measurements.json
    python scripts/package_builtin.py fingerprint src/turbosr/weights/x4 # outputs on the samples, for the tests
    python scripts/package_builtin.py time src/turbosr/weights/x4        # the timing again, on an idle machine
    python scripts/package_builtin.py update src/turbosr/weights/x4-real --text "..."  # dated prose (no numbers)

``package`` copies the model into src/turbosr/weights/NAME/ (denoiser parameters as float16 or int8 with
per-channel scales; buffers and the latent space float32), measures the packaged copy (one step) and the
baselines on each pair set, times a 128² upscale, and writes measurements.json plus README.md (the card,
rendered by turbosr.weights.card.render_card). Every number in the card comes from measurements.json, which also
holds the model's output fingerprints on the bundled samples (tests/test_builtin.py checks they still hold).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

from turbosr.checkpoint import COMPACT_STORAGES

SCRIPT = "scripts/package_builtin.py"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    package = sub.add_parser("package", help="copy, measure and describe a model as a built-in")
    package.add_argument("model", type=Path, help="trained model folder")
    package.add_argument("--name", required=True, help="built-in name, e.g. x4 or x4-real")
    package.add_argument("--pairs", action="append", required=True, metavar="TITLE=FOLDER",
                         help="evaluation pair set (FOLDER/lq, FOLDER/hq, FOLDER/manifest.json), repeatable")
    package.add_argument("--metrics", nargs="+", default=["psnr_y", "ssim_y", "niqe", "grid", "patch_kid"])
    package.add_argument("--baselines", nargs="*", default=["bicubic", "lanczos"])
    package.add_argument("--reuse-baselines", type=Path, default=None, metavar="BUILTIN_FOLDER",
                         help="take a baseline's scores from this built-in's measurements.json where it measured the "
                              "same pair set (same digests) with the same metrics and software versions")
    package.add_argument("--storage", choices=COMPACT_STORAGES, default="float16")
    package.add_argument("--default-fidelity", type=float, default=None, metavar="W",
                         help="the CFW weight the built-in runs at when --fidelity is left out (default: the model's)")
    package.add_argument("--steps", type=int, nargs="+", default=[1],
                         help="denoising step counts to measure (the first is the card's headline; default 1)")
    package.add_argument("--summary", default="", help="one paragraph for the top of the card (no numbers)")
    package.add_argument("--fact", action="append", default=[], help="a training fact for the card, repeatable")
    package.add_argument("--training-command", action="append", default=[], help="a training command, repeatable")
    package.add_argument("--section", action="append", default=[], metavar="TITLE::TEXT",
                         help="an extra card section of prose (numbers belong in measurements)")
    package.add_argument("--threads", type=int, default=2)
    package.add_argument("--seed", type=int, default=0)
    package.add_argument("--weights-dir", type=Path, default=None, help=argparse.SUPPRESS)  # tests
    render = sub.add_parser("render", help="write README.md again from a built-in folder's measurements.json")
    render.add_argument("folder", type=Path)
    fingerprint = sub.add_parser("fingerprint", help="record a built-in's outputs on the samples in measurements.json")
    fingerprint.add_argument("folder", type=Path)
    timing = sub.add_parser("time", help="time the upscale again (when packaging ran beside other jobs)")
    timing.add_argument("folder", type=Path)
    timing.add_argument("--threads", type=int, default=2)
    update = sub.add_parser("update", help="add a dated note to a card (prose that overrules its summary; no numbers)")
    update.add_argument("folder", type=Path)
    update.add_argument("--text", required=True)
    store = sub.add_parser("store", help="write a trained model folder again with another weight storage (int8: "
                           "what a built-in ships), to train on it as it will ship")
    store.add_argument("model", type=Path)
    store.add_argument("output", type=Path, help="the new folder (must not exist)")
    store.add_argument("--storage", choices=COMPACT_STORAGES, required=True)
    commands = sub.add_parser("commands", help="replace a card's training commands (with a dated note saying why): "
                              "when the recipes move or gain pinned starts")
    commands.add_argument("folder", type=Path)
    commands.add_argument("--training-command", action="append", required=True, help="repeatable, in order")
    commands.add_argument("--text", required=True, help="why the commands changed")
    commands.add_argument("--moved", action="append", default=[], metavar="OLD=NEW",
                          help="a file the card's facts cite has moved: replace OLD by NEW in them (repeatable)")
    return parser


def sample_fingerprints(pipeline, seed: int = 0) -> dict[str, str]:
    """The one-step output on each bundled sample (seed ``seed``), as turbosr.reports.output_fingerprint."""
    from turbosr.corpus import list_samples, sample_path
    from turbosr.image_files import load_image
    from turbosr.reports import output_fingerprint

    return {name: output_fingerprint(pipeline(load_image(sample_path(name)).rgb, num_steps=1,
                                              generator=torch.Generator().manual_seed(seed)))
            for name in list_samples()}


def describe_model(pipeline, folder: Path, storage: str, scale: int) -> dict:
    from turbosr.reports import MODEL_FILES, folder_digest

    autoencoder = pipeline.autoencoder
    kind = autoencoder.config()["kind"]
    refiner = " + learned refiner" if getattr(pipeline.config, "refine_channels", 0) else ""
    return {
        "scale": scale,
        "default_steps": 1,
        "latent": f"{kind} (factor {autoencoder.factor}, {autoencoder.latent_channels} channels){refiner}",
        "denoiser": f"diffusers {type(pipeline.denoiser.unet).__name__} (input: noisy latent concatenated with the "
                    "latent of the bicubic-upsampled LQ image, YONOS-SR conditioning)",
        "parameters_m": sum(p.numel() for p in pipeline.denoiser.parameters()) / 1e6,
        "storage": storage,
        **({"default_fidelity": pipeline.default_fidelity} if pipeline.has_cfw else {}),
        "prediction_type": pipeline.config.prediction_type,
        "target": pipeline.config.target,
        "zero_terminal_snr": pipeline.config.schedule.zero_terminal_snr,
        "size_mb": sum(f.stat().st_size for f in folder.iterdir() if f.suffix == ".safetensors") / 2**20,
        "digest": folder_digest(folder, MODEL_FILES),
    }


def reusable_baselines(card: dict | None, identity: dict, metrics: list[str]) -> dict[str, dict]:
    """Baseline scores of ``card`` (a measurements.json) on the pair set ``identity``, for every metric asked.
    Baselines are deterministic, so the same pairs, metrics and software give the same numbers."""
    from turbosr.reports import software_versions

    if card is None or card.get("versions") != software_versions():
        return {}
    for evaluation in card["evaluations"]:
        same = all(evaluation["pairs"].get(k) == identity.get(k) for k in ("lq_digest", "ref_digest"))
        if same:
            return {name: scores for name, scores in evaluation["scores"].items()
                    if not name.startswith("turbosr") and name != "HR" and all(m in scores for m in metrics)}
    return {}


def evaluate(pipeline, title: str, pairs: Path, metrics: list[str], baselines: list[str], scale: int,
             seed: int, steps: list[int] = (1,), reuse: dict | None = None) -> dict:
    from turbosr.baselines import baseline_upscaler
    from turbosr.metrics import evaluate_upscaler
    from turbosr.reports import describe_pairs, pairs_identity

    def upscaler(num_steps: int, fidelity: float | None):
        def upscale(lq: torch.Tensor) -> torch.Tensor:
            return pipeline(lq, num_steps=num_steps, fidelity=fidelity, generator=torch.Generator().manual_seed(seed))
        return upscale

    ours = [(f"turbosr ({n} step{'s' if n > 1 else ''})", upscaler(n, None)) for n in steps]  # at its default w
    if pipeline.has_cfw:  # StableSR CFW: also the knob's ends that are not the default
        ours += [(f"turbosr (1 step, --fidelity {w})", upscaler(1, float(w))) for w in (1, 0)
                 if pipeline.default_fidelity != w]
    identity = pairs_identity(pairs / "lq", pairs / "hq")
    known = reusable_baselines(reuse, identity, metrics)
    scores, count, reused = {}, 0, []
    for name in baselines:
        if name in known:
            scores[name] = {m: known[name][m] for m in metrics}
            reused.append(name)
    for method, upscale in (*ours, *((b, baseline_upscaler(b, scale)) for b in baselines if b not in reused)):
        result = evaluate_upscaler(upscale, pairs / "lq", pairs / "hq", metrics, crop_border=scale,
                                   grid_period=pipeline.autoencoder.factor)
        scores[method], count = result["mean"], result["count"]
        if result.get("reference_mean"):  # the HR photos' own value of the artifact figure
            scores["HR"] = result["reference_mean"]
    return {"title": title, "pairs": identity, "description": describe_pairs(identity), "count": count,
            "metrics": metrics, "scores": scores, **({"baselines_reused": reused} if reused else {})}


def time_upscale(pipeline, threads: int, repeats: int = 5) -> dict:
    lq = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    pipeline(lq)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        pipeline(lq, generator=torch.Generator().manual_seed(0))
        times.append(time.perf_counter() - start)
    return {"seconds": sorted(times)[repeats // 2], "repeats": repeats,
            "where": f"{threads} threads of a {platform.machine()} CPU, float32, batch 1"}


def package(args: argparse.Namespace, argv: list[str]) -> None:
    from turbosr.checkpoint import write_json
    from turbosr.pipeline import SRPipeline
    from turbosr.reports import command_line, software_versions
    from turbosr.weights import WEIGHTS_DIR
    from turbosr.weights.card import render_card

    torch.set_num_threads(args.threads)
    weights_dir = args.weights_dir or WEIGHTS_DIR
    target = weights_dir / args.name
    staging = weights_dir / f".{args.name}.staging"
    if staging.exists():
        shutil.rmtree(staging)
    reuse = json.loads((args.reuse_baselines / "measurements.json").read_text()) if args.reuse_baselines else None
    source = SRPipeline.from_pretrained(args.model)
    if args.default_fidelity is not None:
        source = source.replace(default_fidelity=args.default_fidelity)
    source.save_pretrained(staging, storage=args.storage)
    packaged = SRPipeline.from_pretrained(staging)
    evaluations = []
    for item in args.pairs:
        title, _, folder = item.partition("=")
        evaluations.append(evaluate(packaged, title, Path(folder), args.metrics, args.baselines, packaged.scale,
                                    args.seed, args.steps, reuse))
    measurements = {
        "name": args.name,
        "summary": args.summary,
        "model": describe_model(packaged, staging, args.storage, packaged.scale),
        "training": {"facts": args.fact, "commands": args.training_command},
        "seed": args.seed,
        "evaluations": evaluations,
        "timing": time_upscale(packaged, args.threads),
        "date": time.strftime("%Y-%m-%d"),
        "versions": software_versions(),
        "command": command_line(SCRIPT, argv),
        "sections": [{"title": s.partition("::")[0], "text": s.partition("::")[2]} for s in args.section],
        "fingerprints": sample_fingerprints(packaged, args.seed),
    }
    write_json(staging / "measurements.json", measurements)
    (staging / "README.md").write_text(render_card(measurements))
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    print(render_card(measurements))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.command == "package":
        package(args, argv)
        return
    if args.command == "store":
        from turbosr.pipeline import SRPipeline

        if args.output.exists():
            raise SystemExit(f"{args.output} already exists: choose a new folder")
        staging = args.output.with_name(f".{args.output.name}.partial")
        shutil.rmtree(staging, ignore_errors=True)  # a killed store's leftovers
        SRPipeline.from_pretrained(args.model).save_pretrained(staging, storage=args.storage)
        staging.rename(args.output)
        print(f"wrote {args.output} ({args.storage})")
        return
    from turbosr.checkpoint import write_json
    from turbosr.pipeline import SRPipeline
    from turbosr.reports import command_line
    from turbosr.weights.card import render_card

    measurements = json.loads((args.folder / "measurements.json").read_text())
    if args.command == "fingerprint":
        measurements["fingerprints"] = sample_fingerprints(SRPipeline.from_pretrained(args.folder),
                                                           measurements.get("seed", 0))
    elif args.command == "time":
        torch.set_num_threads(args.threads)
        measurements["timing"] = {**time_upscale(SRPipeline.from_pretrained(args.folder), args.threads),
                                  "command": command_line(SCRIPT, argv)}
    elif args.command in ("update", "commands"):
        measurements.setdefault("updates", []).append({"date": time.strftime("%Y-%m-%d"), "text": args.text,
                                                      "command": command_line(SCRIPT, argv)})
        if args.command == "commands":
            measurements["training"]["commands"] = list(args.training_command)
            for move in args.moved:
                old, _, new = move.partition("=")
                facts = measurements["training"]["facts"]
                measurements["training"]["facts"] = [fact.replace(old, new) for fact in facts]
    if args.command != "render":
        write_json(args.folder / "measurements.json", measurements)
    card = render_card(measurements)
    (args.folder / "README.md").write_text(card)
    if args.command == "render":
        print(card)


if __name__ == "__main__":
    main()
