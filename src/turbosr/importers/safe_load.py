"""Reading the files of a release without running any of their code, and writing the converted folder atomically.

Checkpoints of Lightning-era research code are pickles. They are read with ``torch.load(weights_only=True)``,
which rebuilds tensors and plain containers only. Old PyTorch-Lightning also stores callbacks keyed by their class
(a pickled *global*); those names get an inert stand-in class (nothing is imported or called), and any other
global is refused in one line naming it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch


class ImportFailed(ValueError):
    """A release's file that cannot be imported (wrong kind, damaged, mismatched): one line."""


class InertStandIn:
    """What an allow-listed global of a checkpoint (a Lightning callback class) is read as: nothing."""


# globals old PyTorch-Lightning checkpoints carry beside the weights (callback classes used as dict keys)
LIGHTNING_GLOBALS = tuple(f"pytorch_lightning.callbacks.{name}" for name in (
    "model_checkpoint.ModelCheckpoint", "early_stopping.EarlyStopping", "lr_monitor.LearningRateMonitor",
    "progress.TQDMProgressBar", "progress.tqdm_progress.TQDMProgressBar"))


def _stand_in(name: str) -> type:
    module, _, qualname = name.rpartition(".")
    return type(qualname, (InertStandIn,), {"__module__": module})


def load_checkpoint(path: str | Path, what: str) -> dict[str, Any]:
    """A pickled checkpoint as a dict, read with ``weights_only=True`` and Lightning's callback globals inert.
    ``what`` names the file in errors ("the StableSR checkpoint")."""
    path = Path(path)
    if not path.is_file():
        raise ImportFailed(f"{what} not found: {path}")
    stand_ins = [(_stand_in(name), name) for name in LIGHTNING_GLOBALS]
    try:
        with torch.serialization.safe_globals(stand_ins):
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=_zip(path))
    except Exception as error:  # noqa: BLE001  (every failure of an untrusted file becomes one line)
        text = str(error)
        match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if match:
            raise ImportFailed(f"{what} {path} holds the Python global {match.group(1)}, which turbosr does not "
                               "load (only tensors and plain data are read from pickles)") from None
        first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
        raise ImportFailed(f"{what} {path} cannot be read (truncated or not a PyTorch checkpoint: {first})") from None
    if not isinstance(data, dict):
        raise ImportFailed(f"{what} {path} is not a checkpoint dict (got {type(data).__name__})")
    return data


def _zip(path: Path) -> bool:
    with open(path, "rb") as file:
        return file.read(4) == b"PK\x03\x04"  # the zip container can be memory-mapped (large checkpoints)


def file_digest(path: str | Path) -> str:
    """sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def staging_folder(output: str | Path) -> Iterator[Path]:
    """A fresh hidden folder beside ``output`` to write into; renamed to ``output`` when the block ends without
    an error, removed otherwise (no partial folder is ever left at ``output``). ``output`` must not exist."""
    output = Path(output)
    if output.exists():
        raise ImportFailed(f"{output} already exists: choose a new output folder (nothing was written)")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".staging", dir=output.parent))
    try:
        yield staging
        if output.exists():
            raise ImportFailed(f"{output} appeared while importing: nothing was written there")
        os.replace(staging, output)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def take(state: dict[str, torch.Tensor], prefix: str, keep: Callable[[str], bool] = lambda key: True
         ) -> dict[str, torch.Tensor]:
    """The entries of ``state`` under ``prefix`` (prefix removed, float32), those for which ``keep`` holds."""
    return {key[len(prefix):]: value.float() for key, value in state.items()
            if key.startswith(prefix) and keep(key)}
