"""Progress reporting of training runs: a tqdm bar with losses and images/s, a JSON-lines log, TensorBoard."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from turbosr.config import TrainConfig


def progress_bar(total: int, initial: int, enabled: bool) -> Any:
    """A tqdm bar on a terminal (main process only)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, dynamic_ncols=True, unit="step")


class RunLog:
    """Appends JSON lines to ``output_dir/log.jsonl`` on the main process (plus TensorBoard if installed and asked)."""

    def __init__(self, config: TrainConfig, enabled: bool) -> None:
        self.enabled = enabled
        self.path = Path(config.output_dir) / "log.jsonl"
        self.writer = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if config.tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError:
                    raise ImportError("tensorboard=true needs the tensorboard package: pip install 'turbosr[tensorboard]'"
                                      ) from None
                self.writer = SummaryWriter(str(Path(config.output_dir) / "tensorboard"))

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
    """Progress bar with loss and images/s, plus the JSON-lines log, on a cadence (main process only)."""

    def __init__(self, config: TrainConfig, accelerator: Any, start: int) -> None:
        self.config = config
        self.log = RunLog(config, accelerator.is_main_process)
        self.bar = progress_bar(config.max_steps, start, accelerator.is_main_process)
        self.images_per_step = config.batch_size * config.gradient_accumulation_steps * accelerator.num_processes
        self.window_start, self.window_images = time.monotonic(), 0

    def after_step(self, done: int, losses: dict[str, float], learning_rate: float) -> None:
        self.window_images += self.images_per_step
        if done % self.config.log_every_steps == 0 or done == self.config.max_steps:
            rate = self.window_images / max(1e-9, time.monotonic() - self.window_start)
            self.bar.set_postfix({**{k: f"{v:.4f}" for k, v in losses.items()}, "img_s": f"{rate:.1f}"})
            self.log.write({"step": done, **losses, "images_per_s": rate, "learning_rate": learning_rate,
                            "time": time.time()})
            self.window_start, self.window_images = time.monotonic(), 0
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
