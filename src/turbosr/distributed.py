"""Process/device set-up shared by inference and training under ``accelerate launch`` (or torchrun).

Accelerate only forms a multi-process CPU group (gloo) when asked for the CPU explicitly; its ``--cpu`` launch
flag, though, starts a single process. So on a machine without CUDA that was started as several processes
(``accelerate launch --multi_gpu --num_processes N`` or ``torchrun --nproc_per_node N``), we request the CPU
ourselves; on one process, or with CUDA, Accelerate picks the device as usual.
"""

from __future__ import annotations

import os

import torch


def use_cpu_group() -> bool:
    """True when several processes were launched and there is no CUDA (or ACCELERATE_USE_CPU is set)."""
    if os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes"):
        return True
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    return world_size > 1 and not torch.cuda.is_available()


def process_state() -> object:
    """``accelerate.PartialState`` for this process (index, count, device)."""
    from accelerate import PartialState

    return PartialState(cpu=use_cpu_group())
