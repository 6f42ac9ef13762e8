"""Checkpoint folders: config JSON + safetensors, written atomically.

A model folder (what :class:`turbosr.pipeline.SRPipeline` loads) holds ``config.json``,
``denoiser.safetensors`` and ``autoencoder.safetensors``. A training checkpoint is a model folder plus
``training_state/`` (optimizer, EMA, RNG and data position, via Accelerate) and ``run_config.json``.
Every file is written to a temporary name in the same folder and renamed into place, and a checkpoint folder
is assembled under a temporary name and renamed when complete, so a killed process never leaves a
half-written file where a good one was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def temp_file_beside(path: Path) -> tuple[int, str]:
    """A temporary file next to ``path`` (same file system, so ``os.replace`` is atomic), created with the
    permissions a plain ``open(path, "w")`` would give (0666 minus the umask), not ``mkstemp``'s 0600:
    outputs and checkpoints must stay readable by whoever could read a normally written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(handle, plain_file_mode())
    return handle, temp


def plain_file_mode() -> int:
    """0666 minus the process umask (read by setting and restoring it)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    handle, temp = temp_file_beside(path)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, data: Any) -> Path:
    """Atomically write ``data`` as indented JSON."""
    return atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: str | Path) -> Any:
    """Read a JSON file, with a clear error if it is missing or invalid."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing file: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Atomically save a flat dict of tensors as safetensors (contiguous CPU copies)."""
    path = Path(path)
    handle, temp = temp_file_beside(path)
    os.close(handle)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, temp, metadata=metadata)
        os.chmod(temp, plain_file_mode())  # safetensors writes a new file of its own
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file (never a pickle), with a clear error if missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing weights file: {path}")
    return load_file(str(path))


def replace_folder(staging: Path, final: Path) -> None:
    """Move a fully written ``staging`` folder to ``final``, replacing an older ``final`` only at the end."""
    final = Path(final)
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old)
    else:
        os.replace(staging, final)


def recover_folder(final: str | Path) -> Path | None:
    """``final`` if complete; else the previous version left by a :func:`replace_folder` killed between its two
    renames (moved back into place); else None."""
    final = Path(final)
    if final.is_dir():
        return final
    old = final.with_name(f".{final.name}.old")
    if old.is_dir():
        os.replace(old, final)
        return final
    return None


def staging_folder(final: str | Path) -> Path:
    """A fresh temporary folder beside ``final`` to assemble a checkpoint in."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".partial"))
