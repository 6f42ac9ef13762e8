"""Report writers: results files (JSON / CSV / Markdown) and the provenance every published number carries.

A published table or model card must say exactly how to make it again: the command as a shell would parse it
(:func:`command_line`, ``shlex.join``), the software versions, and the identity of its inputs: the content
digest of each model folder and of each evaluation pair set (:func:`folder_digest`), with the pair set's own
manifest (split, degradation, seed, crop). Benchmarks that resume reuse an earlier row only when all of that
matches (:func:`same_provenance`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import platform
import shlex
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from turbosr.checkpoint import atomic_write_bytes


# ---------------------------------------------------------------------------------------------- provenance
def command_line(script: str, argv: Sequence[str]) -> str:
    """``python SCRIPT ARGS...`` quoted so that pasting it into a POSIX shell runs the same command."""
    return shlex.join(["python", script, *argv])


def software_versions() -> dict[str, str]:
    """Versions of Python and of the packages that change numbers (torch, diffusers, numpy, Pillow, turbosr)."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for package in ("torch", "diffusers", "numpy", "pillow", "turbosr"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def folder_digest(folder: str | Path, keep: Callable[[Path], bool] | None = None) -> str:
    """sha256 (first 16 hex digits) over the relative paths and bytes of the files below ``folder`` (or of one
    file), optionally only those ``keep`` accepts; hidden files (temporary writes) are skipped."""
    folder = Path(folder)
    if folder.is_file():
        files = [folder]
        root = folder.parent
    else:
        if not folder.is_dir():
            raise FileNotFoundError(f"cannot hash {folder}: no such file or folder")
        files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
                       and (keep is None or keep(p)))
        root = folder
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(root)).encode() + b"\0")
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()[:16]


def MODEL_FILES(path: Path) -> bool:  # noqa: N802  (used like a constant: the files that define a model)
    """The files that define a model folder's outputs: its config and weights (not its card or measurements)."""
    return path.name == "config.json" or path.name.endswith((".safetensors", ".safetensors.index.json"))


def model_identity(folder: str | Path) -> dict[str, str]:
    """Path and content digest of a model folder's config and weights."""
    return {"path": str(folder), "digest": folder_digest(folder, MODEL_FILES)}


def output_fingerprint(image: Any, size: int = 32) -> str:
    """A model output reduced to size x size block means per channel, as hex 16-bit values: unlike a hash of the
    pixels it survives the last-bit float differences between CPUs, and any real change of behaviour moves it."""
    import torch
    import torch.nn.functional as F

    pooled = F.adaptive_avg_pool2d(image.detach().float().clamp(0, 1), size).flatten()
    return "".join(f"{int(v):04x}" for v in torch.round(pooled * 65535).tolist())


def fingerprint_distance(a: str, b: str) -> float:
    """Largest block-mean difference (0..1 pixel range) between two output fingerprints of the same shape."""
    if len(a) != len(b):
        raise ValueError("fingerprints of different sizes")
    return max(abs(int(a[i:i + 4], 16) - int(b[i:i + 4], 16)) for i in range(0, len(a), 4)) / 65535


def pairs_identity(lq_dir: str | Path, ref_dir: str | Path) -> dict[str, Any]:
    """Paths and content digests of an evaluation pair set, with the manifest ``turbosr data make-pairs`` wrote
    (split, degradation, seed, crop) when the two folders sit in one set folder."""
    lq_dir, ref_dir = Path(lq_dir), Path(ref_dir)
    identity: dict[str, Any] = {"lq": str(lq_dir), "ref": str(ref_dir),
                                "lq_digest": folder_digest(lq_dir), "ref_digest": folder_digest(ref_dir)}
    manifest = ref_dir.parent / "manifest.json"
    if manifest.is_file() and lq_dir.parent == ref_dir.parent:
        info = json.loads(manifest.read_text())
        identity["set"] = {key: info.get(key) for key in ("scale", "degradation", "seed", "crop_size", "split",
                                                          "source")}
    return identity


def describe_pairs(identity: dict[str, Any]) -> str:
    """One line for a table header: where the pairs came from and how the LQ images were made."""
    info = identity.get("set")
    if not info:
        return f"{identity['lq']} / {identity['ref']} (digests {identity['lq_digest']} / {identity['ref_digest']})"
    crop = f"centre {info['crop_size']}² crops" if info.get("crop_size") else "whole images"
    split = f" (split {info['split']})" if str(info.get("source", "")).endswith(".json") else ""
    return (f"{identity['ref']}: {crop} of {info['source']}{split}, x{info['scale']} "
            f"{info['degradation']} degradation, seed {info['seed']}; digests lq {identity['lq_digest']}, "
            f"hq {identity['ref_digest']}")


def same_provenance(row: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Does a saved row come from the same inputs and software as the row about to be computed?"""
    return all(row.get(key) == value for key, value in wanted.items())


# ------------------------------------------------------------------------------------------------- writers
def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """Lines of a Markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def write_text(path: str | Path, lines: Sequence[str]) -> Path:
    """Write lines (newline-terminated) atomically."""
    return atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


def write_json(path: str | Path, data: Any) -> Path:
    """Write JSON atomically (one space indent: tables are diffed in review)."""
    return atomic_write_bytes(path, (json.dumps(data, indent=1) + "\n").encode())


def write_results(results: dict[str, Any], out_json: Path) -> list[Path]:
    """Write ``turbosr eval`` results as JSON, plus a per-image CSV and a Markdown table beside it."""
    out_json = Path(out_json)
    names = list(results["mean"])
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["image", *names])
    for image, values in results["per_image"].items():
        writer.writerow([image, *(f"{values[n]:.6f}" if n in values else "" for n in names)])
    arrows = {n: ("↑" if results["metrics"][n]["higher_is_better"] else "↓") for n in names}
    rows = [["outputs", results["count"], *(f"{results['mean'][n]:.4f}" for n in names)]]
    if results.get("reference_mean"):  # the references' own value of metrics such as the artifact figure
        rows.append(["references", results["count"],
                     *(f"{results['reference_mean'][n]:.4f}" if n in results["reference_mean"] else "-"
                       for n in names)])
    table = markdown_table(["", "images", *(f"{n} {arrows[n]}" for n in names)], rows)
    return [atomic_write_bytes(out_json, (json.dumps(results, indent=2) + "\n").encode()),
            atomic_write_bytes(out_json.with_suffix(".csv"), buffer.getvalue().encode()),
            write_text(out_json.with_suffix(".md"), table)]
