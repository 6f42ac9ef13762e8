"""Progress reporting of training runs: a tqdm bar with losses and images/s, a JSON-lines log, TensorBoard."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from turbosr.run_config import RunConfig


def progress_bar(total: int, initial: int, enabled: bool) -> Any:
    """A tqdm bar on a terminal (main process only)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, dynamic_ncols=True, unit="step")


class RunLog:
    """Appends JSON lines to ``output_dir/log.jsonl`` on the main process (plus TensorBoard if installed and asked)."""

    def __init__(self, output_dir: str | Path, enabled: bool, tensorboard: bool = False) -> None:
        self.enabled = enabled
        self.path = Path(output_dir) / "log.jsonl"
        self.writer = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError:
                    raise ImportError("tensorboard=true needs the tensorboard package: pip install 'turbosr[tensorboard]'"
                                      ) from None
                self.writer = SummaryWriter(str(Path(output_dir) / "tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            import json

            with self.path.open("a") as file:
                file.write(json.dumps(record) + "\n")
            if self.writer is not None:
                for key, value in record.items():
                    if key != "step" and isinstance(value, (int, float)):
                        self.writer.add_scalar(key, value, record["step"])
                self.writer.flush()


class StepReport:
    """Progress bar with losses, steps/s and images/s, plus the JSON-lines log, on a cadence (main process only)."""

    def __init__(self, run: RunConfig, accelerator: Any, start: int) -> None:
        self.run = run
        self.log = RunLog(run.output_dir, accelerator.is_main_process, run.tensorboard)
        self.bar = progress_bar(run.max_steps, start, accelerator.is_main_process)
        self.images_per_step = run.batch_size * run.gradient_accumulation_steps * accelerator.num_processes
        self.window_start, self.window_images = time.monotonic(), 0

    def after_step(self, done: int, losses: dict[str, Any], learning_rate: float) -> None:
        """Record optimizer step ``done`` (losses may be tensors: they are read only when logged)."""
        self.window_images += self.images_per_step
        if done % self.run.log_every_steps == 0 or done == self.run.max_steps:
            losses = {k: float(v) for k, v in losses.items()}
            if not all(math.isfinite(v) for v in losses.values()):  # checked when read: no sync every step
                raise FloatingPointError(f"a loss is not finite at step {done} ({losses}): lower "
                                         "optim.learning_rate or check the data")
            rate = self.window_images / max(1e-9, time.monotonic() - self.window_start)
            self.bar.set_postfix({**{k: f"{v:.4f}" for k, v in losses.items()}, "img_s": f"{rate:.1f}"})
            self.log.write({"step": done, **losses, "images_per_s": rate,
                            "steps_per_s": rate / self.images_per_step, "learning_rate": learning_rate,
                            "time": time.time()})
            self.window_start, self.window_images = time.monotonic(), 0
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
