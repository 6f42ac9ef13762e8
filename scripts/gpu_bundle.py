"""Pack what a GPU training burst needs into one small folder (see docs/gpu.md).

    python scripts/gpu_bundle.py bundle --method teacher --config configs/gpu/teacher-x4.yaml \
        [--set KEY=VALUE ...] [--warm-start MODEL] [--image-format webp --quality 90] [--max-mb 22]

The bundle holds: the train and val photos of the corpus manifest re-encoded compactly (WebP or JPEG) with a
manifest of their own; the resolved run config (``run.yaml``) and the method; the warm-start model folder when
it is not inside the repository; and wheels of the pure-Python dependencies a stock CUDA + PyTorch image
lacks (``diffusers`` by default; ``pip download``, never installed here). ``bundle.json`` lists every file
with its size, what the photo compression cost (PSNR of the re-encoded photos against the PNGs) and the total,
which must stay under ``--max-mb``. ``python scripts/gpu_burst.py BUNDLE OUT`` runs it.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SCRIPT = "scripts/gpu_bundle.py"
ROOT = Path(__file__).resolve().parents[1]
FORMATS = {"webp": ("WEBP", ".webp"), "jpeg": ("JPEG", ".jpg"), "png": ("PNG", ".png")}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="bundle folder to write (must not exist, or use --overwrite)")
    parser.add_argument("--method", required=True, help="training method, e.g. teacher")
    parser.add_argument("--config", required=True, type=Path, help="run config (YAML)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--splits", nargs="+", default=["train", "val"], help="manifest splits to pack")
    parser.add_argument("--image-format", choices=sorted(FORMATS), default="webp")
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--wheels", nargs="*", default=["diffusers==0.42.1"],
                        help="pip requirements to download as wheels (none: rely on the target's packages)")
    parser.add_argument("--python-version", default="3.12", help="the target machine's Python (for pip download)")
    parser.add_argument("--max-mb", type=float, default=22.0)
    parser.add_argument("--overwrite", action="store_true")
    return parser


def encode(image: Image.Image, image_format: str, quality: int) -> bytes:
    fmt, _ = FORMATS[image_format]
    buffer = io.BytesIO()
    options = {} if fmt == "PNG" else {"quality": quality}
    if fmt == "WEBP":
        options["method"] = 6
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def psnr_8bit(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def pack_photos(manifest: Path, splits: list[str], out: Path, image_format: str, quality: int) -> dict:
    """Re-encode the photos of ``splits`` into out/photos and write out/manifest.json; returns statistics."""
    records = json.loads(manifest.read_text())
    chosen = [r for r in records if r.get("split") in splits]
    if not chosen:
        raise SystemExit(f"{manifest} has no photos in splits {splits}")
    (out / "photos").mkdir(parents=True)
    packed, scores, png_bytes = [], [], 0
    suffix = FORMATS[image_format][1]
    for record in chosen:
        source = manifest.parent / record["file"]
        png_bytes += source.stat().st_size
        with Image.open(source) as opened:
            image = opened.convert("RGB")
        data = encode(image, image_format, quality)
        name = f"photos/{Path(record['file']).stem}{suffix}"
        (out / name).write_bytes(data)
        with Image.open(io.BytesIO(data)) as decoded:
            scores.append(psnr_8bit(np.asarray(image), np.asarray(decoded.convert("RGB"))))
        packed.append({**record, "file": name, "sha256": None, "source_sha256": record.get("sha256")})
    (out / "manifest.json").write_text(json.dumps(packed, indent=1) + "\n")
    counts = {split: sum(r["split"] == split for r in packed) for split in splits}
    return {"photos": counts, "format": image_format, "quality": quality, "png_mb": png_bytes / 2**20,
            "reencode_psnr_rgb_mean": float(np.mean(scores)), "reencode_psnr_rgb_min": float(np.min(scores))}


def download_wheels(requirements: list[str], out: Path, python_version: str) -> list[str]:
    if not requirements:
        return []
    (out / "wheels").mkdir()
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", python_version, "-d", str(out / "wheels"), *requirements], check=True)
    return sorted(p.name for p in (out / "wheels").iterdir())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    import yaml

    from turbosr.config import load_config, to_dict
    from turbosr.reports import command_line
    from turbosr.train import methods

    if args.method not in methods():
        raise SystemExit(f"unknown method {args.method!r}; choose one of {', '.join(methods())}")
    config = load_config(methods()[args.method][0], args.config, args.overrides, args.method)  # validated once
    resolved = to_dict(config)
    if not config.data.manifest:
        raise SystemExit("the bundle packs a corpus manifest: set data.manifest")
    if args.out.exists():
        if not args.overwrite:
            raise SystemExit(f"{args.out} exists (use --overwrite to replace it)")
        shutil.rmtree(args.out)
    staging = args.out.with_name(f".{args.out.name}.partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    photos = pack_photos(Path(config.data.manifest), args.splits, staging, args.image_format, args.quality)
    resolved["data"]["manifest"] = "BUNDLE/manifest.json"  # gpu_burst.py points it at the unpacked bundle
    warm = resolved.get("init_from")
    if warm and not Path(warm).resolve().is_relative_to(ROOT):
        shutil.copytree(warm, staging / "init")
        resolved["init_from"] = "BUNDLE/init"
    (staging / "run.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    wheels = download_wheels(args.wheels, staging, args.python_version)
    files = {str(p.relative_to(staging)): p.stat().st_size for p in sorted(staging.rglob("*")) if p.is_file()}
    total_mb = (sum(files.values()) + 4096) / 2**20  # + bundle.json itself
    info = {"method": args.method, "command": command_line(SCRIPT, argv), "photos": photos, "wheels": wheels,
            "warm_start": warm, "total_mb": total_mb, "files": files}
    (staging / "bundle.json").write_text(json.dumps(info, indent=1) + "\n")
    if total_mb > args.max_mb:
        shutil.rmtree(staging)
        raise SystemExit(f"the bundle would be {total_mb:.1f} MB, over --max-mb {args.max_mb}: lower --quality, "
                         "pack fewer splits or drop a wheel")
    staging.rename(args.out)
    print(f"{args.out}: {total_mb:.1f} MB; photos {photos['photos']} as {args.image_format} q{args.quality} "
          f"({photos['png_mb']:.1f} MB as PNG; re-encode PSNR {photos['reencode_psnr_rgb_mean']:.2f} dB mean, "
          f"{photos['reencode_psnr_rgb_min']:.2f} min); wheels: {', '.join(wheels) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
