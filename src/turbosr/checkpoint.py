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
    remove_stale(path.parent, f".{path.name}.*.tmp")
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(handle, plain_file_mode())
    return handle, temp


STALE_SECONDS = 1800  # a temporary file or staging folder untouched this long was left by a killed run


def remove_stale(folder: Path, pattern: str, age: float = STALE_SECONDS) -> int:
    """Remove what a killed run left (``pattern`` matches in ``folder``, unmodified for ``age`` seconds: a live
    writer keeps touching its file); returns how many. Only our own hidden temporary names are ever matched."""
    import shutil
    import time

    removed = 0
    now = time.time()
    for leftover in folder.glob(pattern):
        try:
            if now - leftover.stat().st_mtime < age:
                continue
            if leftover.is_dir():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
            removed += 1
        except OSError:
            continue  # another process got there first, or it is not ours to remove
    return removed


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


class DamagedFile(ValueError):
    """A file that exists but cannot be read as what it should be (invalid JSON, not safetensors, NaN weights)."""


def read_json(path: str | Path) -> Any:
    """Read a JSON file, with a clear error if it is missing or invalid."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing file: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DamagedFile(f"{path} is not valid JSON: {error}") from None


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None,
                 max_shard_bytes: int | None = None) -> Path:
    """Atomically save a flat dict of tensors as safetensors (contiguous CPU copies).

    With ``max_shard_bytes`` and more data than that, the tensors go into shards ``NAME-00001-of-0000N.safetensors``
    (whole tensors, in name order) plus ``NAME.safetensors.index.json`` mapping each tensor to its shard (the
    Hugging Face convention); :func:`load_tensors` reads either form. Returns ``path`` (or the index path).
    """
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    broken = next((k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if broken is not None:  # a diverged run must not leave weights that every later load refuses
        raise FloatingPointError(f"refusing to save {path.name}: {broken} holds NaN or infinite values (the run "
                                 "diverged; lower the learning rate or resume from the last good checkpoint)")
    total = sum(v.numel() * v.element_size() for v in tensors.values())
    if max_shard_bytes is None or total <= max_shard_bytes:
        _save_one(path, tensors, metadata)
        return path
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name in sorted(tensors):
        nbytes = tensors[name].numel() * tensors[name].element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensors[name]
        size += nbytes
    stem = path.name.removesuffix(".safetensors")
    names = [f"{stem}-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for name, shard in zip(names, shards, strict=True):
        _save_one(path.with_name(name), shard, metadata)
    index = {"metadata": {"total_size": total, **(metadata or {})},
             "weight_map": {key: name for name, shard in zip(names, shards, strict=True) for key in shard}}
    return write_json(path.with_name(path.name + ".index.json"), index)


def _save_one(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None) -> None:
    handle, temp = temp_file_beside(path)
    os.close(handle)
    try:
        save_file(tensors, temp, metadata=metadata)
        os.chmod(temp, plain_file_mode())  # safetensors writes a new file of its own
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _load_one(path: Path) -> dict[str, torch.Tensor]:
    """One safetensors file, with a one-line error for anything else (a truncated file, a pickle renamed)."""
    try:
        return load_file(str(path))
    except Exception as error:  # noqa: BLE001  (safetensors raises its own error types for bad files)
        raise DamagedFile(f"{path} is not a readable safetensors file (truncated, or another format): "
                         f"{str(error).splitlines()[0] if str(error) else type(error).__name__}") from None


def load_tensors(path: str | Path, finite: bool = True) -> dict[str, torch.Tensor]:
    """Load a safetensors file, or the shards listed by ``PATH.index.json`` (never a pickle); clear one-line
    errors if neither exists, for a malformed index, for a shard name that leaves the folder, and (``finite``)
    for NaN or infinite floating-point values."""
    path = Path(path)
    if path.is_file():
        tensors = _load_one(path)
    else:
        index = path.with_name(path.name + ".index.json")
        if not index.is_file():
            raise FileNotFoundError(f"missing weights file: {path}")
        listing = read_json(index)
        weight_map = listing.get("weight_map") if isinstance(listing, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise DamagedFile(f"{index} is not a shard index (it needs a 'weight_map' of tensor name -> file name)")
        tensors = {}
        for shard in sorted(set(weight_map.values())):
            if Path(shard).name != shard or shard in ("", ".", ".."):
                raise DamagedFile(f"{index} names the shard {shard!r}: shard names are file names inside the folder")
            if not (path.parent / shard).is_file():
                raise FileNotFoundError(f"missing weights shard: {path.parent / shard} (listed in {index.name})")
            tensors.update(_load_one(path.parent / shard))
    if finite:
        broken = next((k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
        if broken is not None:
            raise DamagedFile(f"{path}: the weights hold NaN or infinite values (first: {broken}); the file is broken")
    return tensors


# ----------------------------------------------------------------------------------------- compact storage
INT8_SCALE = ".int8_scale"  # suffix of the per-output-channel scale stored beside an int8 weight
COMPACT_STORAGES = ("float16", "int8")  # compact weight storages of a model folder (besides plain float32)


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 quantisation per output channel (dim 0): (q, scale) with weight ~= q * scale."""
    flat = weight.detach().float().reshape(weight.shape[0], -1)
    scale = (flat.abs().amax(dim=1) / 127.0).clamp_min(1e-12)
    q = torch.round(flat / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q.reshape(weight.shape), scale


def compact_state(state: dict[str, torch.Tensor], parameters: set[str], storage: str) -> dict[str, torch.Tensor]:
    """A state dict for storage: "float32"; "float16" (parameters in half precision); "int8" (parameters of two
    or more dimensions as int8 per output channel with float32 scales, other parameters float16). Buffers stay
    float32. :func:`expand_state` reverses it."""
    if storage not in ("float32", *COMPACT_STORAGES):
        raise ValueError(f"unknown weight storage {storage!r}; use float32, float16 or int8")
    out: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        if name not in parameters or storage == "float32" or not value.is_floating_point():
            out[name] = value.float() if value.is_floating_point() else value
        elif storage == "int8" and value.dim() >= 2:
            out[name], out[name + INT8_SCALE] = quantize_int8(value)
        else:
            out[name] = value.half()
    return out


def expand_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Stored tensors -> float32 state dict (int8 weights dequantised with their scales)."""
    out: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        if name.endswith(INT8_SCALE):
            continue
        if name + INT8_SCALE in state:
            scale = state[name + INT8_SCALE].float()
            out[name] = value.float() * scale.view(-1, *([1] * (value.dim() - 1)))
        else:
            out[name] = value.float() if value.is_floating_point() else value
    return out


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
    remove_stale(final.parent, f".{final.name}.*.partial")
    return Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".partial"))
