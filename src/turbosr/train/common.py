"""Small helpers the training methods share, each taking what it needs as explicit arguments.

Every method file (teacher.py, scale_distill.py, decoder.py, autoencoder.py) owns its loop, and the step tail
(optimizer step, EMA, log, validate, checkpoint) is written out in it. Randomness comes from generators made
here, never from global state: batch ``step`` of process ``rank`` is drawn from :func:`batch_generator` (so a
resumed run sees exactly the batches the killed one would have); set-up draws (initial weights, latent fit,
residual scale) come from :func:`turbosr.train.initial.setup_generator`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from turbosr import checkpoint
from turbosr.data import HRFolderDataset
from turbosr.run_config import DataConfig, OptimConfig, RunConfig

logger = logging.getLogger(__name__)

LATEST = "checkpoint-latest"


# ------------------------------------------------------------------------------------- devices and seeds
def make_accelerator(run: RunConfig) -> Any:
    """An ``accelerate.Accelerator`` (devices, mixed precision, distribution); sets threads and TF32."""
    from accelerate import Accelerator

    from turbosr.distributed import use_cpu_group

    if run.num_threads > 0:
        torch.set_num_threads(run.num_threads)
    torch.backends.cuda.matmul.allow_tf32 = run.tf32
    torch.backends.cudnn.allow_tf32 = run.tf32
    # step_scheduler_with_optimizer=False: the schedule (learning_rate_factor) counts optimizer steps; Accelerate's
    # default would advance it once per process per step, ending an N-process run's decay at 1/N of max_steps
    accelerator = Accelerator(mixed_precision=run.mixed_precision, cpu=use_cpu_group(),
                              step_scheduler_with_optimizer=False)
    warning = emulated_bf16_warning(run.mixed_precision, accelerator.device)
    if warning:
        logger.warning(warning)
    return accelerator


def emulated_bf16_warning(mixed_precision: str, device: torch.device) -> str | None:
    """What to tell a run that asked for bf16 autocast on a CPU that only emulates it (measured here: 15x slower
    than float32, docs/runs.md); None when nothing is wrong."""
    if mixed_precision != "bf16" or device.type != "cpu" or cpu_has_native_bf16():
        return None
    return ("this CPU has no native bf16 (avx512_bf16 or AMX): bf16 autocast is emulated and many times slower "
            "than float32; set run.mixed_precision: \"no\"")


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (avx512_bf16 or AMX); without it autocast emulates bf16."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN: nothing native to use either
        return False


def batch_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The generator of batch ``step`` of process ``rank``: data, degradation and noise of that batch."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 1_009 + rank)


def micro_batches(seed: int, step: int, accumulation: int, accelerator: Any, model: nn.Module
                  ) -> Iterator[tuple[torch.Generator, Any]]:
    """(generator, gradient-sync context) per micro-batch of optimizer step ``step``; gradients are synchronised
    across processes only on the last micro-batch."""
    for micro in range(accumulation):
        generator = batch_generator(seed, step * accumulation + micro, accelerator.process_index)
        last = micro + 1 == accumulation
        yield generator, (contextlib.nullcontext() if last else accelerator.no_sync(model))


def hq_batch(dataset: HRFolderDataset, batch_size: int, generator: torch.Generator, device: torch.device
             ) -> torch.Tensor:
    """A training batch of HR crops, (B, 3, crop, crop) float in [0, 1] on ``device``: cut as uint8 on the CPU,
    copied as bytes (through pinned memory on CUDA, without blocking), converted on the device."""
    crops = dataset.sample_uint8(batch_size, generator)
    if device.type == "cuda":
        crops = crops.pin_memory().to(device, non_blocking=True)
    return crops.to(device).float().div_(255.0)


def speed_up(module: nn.Module, run: RunConfig) -> nn.Module:
    """The run's speed options for the trained network: channels-last memory format (in place) and, with
    ``run.compile``, a compiled wrapper to call in the training forward pass. The wrapper shares the module's
    parameters; save, average and validate the module itself (its state-dict names stay unchanged)."""
    if run.channels_last:
        module.to(memory_format=torch.channels_last)
    return torch.compile(module) if run.compile else module


# ---------------------------------------------------------------------------------------------------- data
def load_dataset(data: DataConfig, scale: int, split: str | None = None) -> HRFolderDataset:
    """HR crops from ``data.manifest`` (records of ``split``, default ``data.split``) or ``data.folder``."""
    if data.manifest:
        return HRFolderDataset.from_manifest(Path(data.manifest), split=split or data.split,
                                             crop_size=data.crop_size, scale=scale)
    if data.folder:
        return HRFolderDataset(Path(data.folder), crop_size=data.crop_size, scale=scale)
    raise ValueError("no training data: set data.manifest (a corpus manifest.json) or data.folder (HR images)")


# ----------------------------------------------------------------------------------------- optimisation
class EMA:
    """Exponential moving average of a module's trainable parameters (kept in float32; frozen ones are skipped)."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().float().clone() for k, v in module.named_parameters() if v.requires_grad}

    @torch.no_grad()
    def update(self, module: nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))  # warm-up, so early averages forget the init
        for name, param in module.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(param.detach().float(), 1.0 - decay)

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        for name, param in module.named_parameters():
            if name in self.shadow:
                param.copy_(self.shadow[name].to(param.dtype))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"ema.{k}": v for k, v in self.shadow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name in self.shadow:
            self.shadow[name].copy_(state[f"ema.{name}"])


def averaged_copy(owner: Any, ema: EMA, part: Callable[[Any], nn.Module]) -> Any:
    """A CPU float32 copy of ``owner`` (a pipeline or an autoencoder) whose trained ``part`` holds the EMA weights."""
    copied = copy.deepcopy(owner).to("cpu", torch.float32)
    ema.copy_to(part(copied))
    return copied


def learning_rate_factor(step: int, warmup_steps: int, max_steps: int, decay_steps: int) -> float:
    """The multiplier of the base learning rate for the update after ``step`` updates: warm-up, stable, decay
    (Hagele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations"): linear
    from 1/warmup_steps to 1 over ``warmup_steps``, then 1, then falling linearly to 1/decay_steps at the last
    update over the final ``decay_steps`` of ``max_steps`` (at most all of them; 0 = no decay). A pure function of
    the step, so a resumed run follows the same schedule; lengthening ``max_steps`` on resume moves the decay."""
    factor = min(1.0, (step + 1) / max(1, warmup_steps))
    decay = min(decay_steps, max_steps)
    if decay > 0:
        factor = min(factor, max(0.0, (max_steps - step) / decay))
    return factor


def make_optimizer(parameters: Any, optim: OptimConfig, max_steps: int) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW with the configured betas and weight decay, and the learning-rate schedule of
    ``learning_rate_factor`` over a run of ``max_steps`` updates.
    ``parameters``: an iterable of parameters (trainable ones are kept), or torch parameter groups (dicts with
    "params" and their own "lr")."""
    items = list(parameters)
    if items and isinstance(items[0], dict):
        groups = [{**group, "params": [p for p in group["params"] if p.requires_grad]} for group in items]
    else:
        groups = [{"params": [p for p in items if p.requires_grad]}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=optim.learning_rate,
                                  betas=(optim.beta1, optim.beta2), weight_decay=optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(
        learning_rate_factor, warmup_steps=optim.warmup_steps, max_steps=max_steps, decay_steps=optim.decay_steps))
    return optimizer, scheduler


def optimizer_step(accelerator: Any, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                   grad_clip: float) -> None:
    """Clip, step, advance the learning-rate schedule, clear gradients."""
    if grad_clip > 0:
        accelerator.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def average_gradients(accelerator: Any, module: nn.Module) -> None:
    """Average ``module``'s gradients over the processes, for a network run outside its DDP wrapper (whose hooks
    then never fire: the decoder and autoencoder run inside the latent space's calls). One process: no-op."""
    if accelerator.num_processes == 1:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    flat = torch.cat([g.flatten().float() for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= accelerator.num_processes
    for grad, part in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
        grad.copy_(part.view_as(grad))


class Trainee(NamedTuple):
    """The trained module as a loop uses it: ``model`` (prepared by Accelerate: step and clip it),
    ``forward`` (call it: ``model`` or its compiled wrapper), optimizer, scheduler, EMA and the first step."""

    model: nn.Module
    forward: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ema: EMA
    start: int


def prepare(accelerator: Any, module: nn.Module, optim: OptimConfig, run: RunConfig,
            learning_rates: dict[str, float] | None = None) -> Trainee:
    """Optimizer and learning-rate schedule for ``module``, Accelerate preparation, the speed options, an EMA of its
    parameters, and the resume from ``run.output_dir/checkpoint-latest`` when there is one.
    ``learning_rates``: {child name: learning rate} for children of ``module`` that do not use ``optim``'s."""
    parameters: Any = module.parameters()
    if learning_rates:
        own = {name: child for name, child in module.named_children() if name in learning_rates}
        rest = [p for name, child in module.named_children() if name not in own for p in child.parameters()]
        parameters = [{"params": rest}, *({"params": list(child.parameters()), "lr": learning_rates[name]}
                                          for name, child in own.items())]
    optimizer, scheduler = make_optimizer(parameters, optim, run.max_steps)
    model, optimizer, scheduler = accelerator.prepare(module, optimizer, scheduler)
    forward = speed_up(model, run)
    ema = EMA(module, run.ema_decay)
    start = resume(accelerator, run.output_dir, ema)
    return Trainee(model, forward, optimizer, scheduler, ema, start)


# ---------------------------------------------------------------------------------------- checkpoints
class Cadence:
    """When to checkpoint (every N steps or M minutes, at the last step, and when the wall-clock budget is
    spent) and when to stop for the budget."""

    def __init__(self, run: RunConfig) -> None:
        self.run = run
        self.started = self.last = time.monotonic()

    def checkpoint_due(self, step: int) -> bool:
        """Is a checkpoint due after ``step``? When it says yes, the minutes count again from now."""
        every, minutes = self.run.checkpoint_every_steps, self.run.checkpoint_every_minutes
        due = (step == self.run.max_steps or (every > 0 and step % every == 0)
               or (minutes > 0 and time.monotonic() - self.last > 60 * minutes) or self.out_of_time())
        if due:
            self.last = time.monotonic()
        return due

    def validation_due(self, step: int) -> bool:
        """Is validation due after ``step``? (``run.validate_every_steps`` 0 = never.)"""
        every = self.run.validate_every_steps
        return every > 0 and step % every == 0

    def out_of_time(self) -> bool:
        """Is the run's ``max_minutes`` budget spent? (A checkpoint is then always due.)"""
        return self.run.max_minutes > 0 and time.monotonic() - self.started > 60 * self.run.max_minutes


def save_checkpoint(accelerator: Any, output_dir: str | Path, step: int, ema: EMA | None,
                    run_config: dict[str, Any], write_model: Callable[[Path], Any]) -> Path:
    """Write ``output_dir/checkpoint-latest`` atomically: ``training_state/`` (Accelerate: models, optimizers,
    RNG states), ``model/`` (``write_model(folder)``, main process), ``ema.safetensors``, ``progress.json`` and
    ``run_config.json``. Every process must call it."""
    latest = Path(output_dir) / LATEST
    accelerator.wait_for_everyone()
    staging_list = [str(checkpoint.staging_folder(latest)) if accelerator.is_main_process else ""]
    if accelerator.num_processes > 1:  # Accelerate writes per-process RNG states: one path for all
        from accelerate.utils import broadcast_object_list

        staging_list = broadcast_object_list(staging_list)
    staging = Path(staging_list[0])
    accelerator.save_state(str(staging / "training_state"), safe_serialization=True)
    if accelerator.is_main_process:
        write_model(staging / "model")
        if ema is not None:
            checkpoint.save_tensors(staging / "ema.safetensors", ema.state_dict())
        checkpoint.write_json(staging / "progress.json", {"step": step})
        checkpoint.write_json(staging / "run_config.json", run_config)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        checkpoint.replace_folder(staging, latest)
    accelerator.wait_for_everyone()
    return latest


STARTS = "starts.json"


def start_problems(folders: dict[str, str], run: RunConfig,
                   resolve: Callable[[str], dict[str, Any]] | None = None,
                   digest: Callable[[Path], str] | None = None) -> list[str]:
    """One line per start folder that is not what the recipe was written for: what ``turbosr train`` refuses at a
    run's start and reports at ``--dry-run``. A start is pinned by its content digest (``run.start_digests``: a
    built-in release, a folder given by hand) or by the recipe that makes it (``run.start_recipes``: the model/ of
    a run's checkpoint, whose run_config.json must be that recipe's resolved config, ``resolve(recipe)``, run to
    its last step; recipes of any method, so the caller that knows them all resolves them: the command line).
    ``digest(folder)`` hashes a folder (default: :func:`turbosr.reports.model_identity`'s digest)."""
    from turbosr.reports import MODEL_FILES, folder_digest

    digest = digest or (lambda folder: folder_digest(folder, MODEL_FILES))
    problems = []
    for name in sorted(set(run.start_digests) | set(run.start_recipes)):
        kind = "start_digests" if name in run.start_digests else "start_recipes"
        if name not in folders:
            problems.append(f"run.{kind} pins {name}, which this config does not set")
    for name, pinned in sorted(run.start_digests.items()):
        folder = Path(folders.get(name, ""))
        if name not in folders or not folder.exists():
            continue  # missing_inputs reports it
        found = digest(folder)
        if found != pinned:
            builtin = folder.resolve().parent == Path(__file__).resolve().parents[1] / "weights"
            hint = (f" (`turbosr release {folder.name} {pinned} -o DIR` writes that release of the built-in from the "
                    f"repository's history; point {name} at DIR)") if builtin else ""
            problems.append(f"{name} = {folder} has digest {found}, the recipe was written for {pinned}{hint}")
    for name, recipe in sorted(run.start_recipes.items()):
        folder = Path(folders.get(name, ""))
        if name not in folders or not folder.exists() or resolve is None:
            continue
        problems += _made_by(name, folder, recipe, resolve(recipe))
    return problems


def _made_by(name: str, folder: Path, recipe: str, expected: dict[str, Any]) -> list[str]:
    """Why the model/ folder ``folder`` is not the finished output of ``recipe`` (resolved: ``expected``)."""
    record, progress = folder.parent / "run_config.json", folder.parent / "progress.json"
    if folder.name != "model" or not record.is_file() or not progress.is_file():
        return [f"{name} = {folder} is not the model/ of a run's checkpoint, which run.start_recipes names"]
    made = checkpoint.read_json(record)
    if made != expected:
        key = _first_difference(made, expected)
        return [f"{name} = {folder} was made by another config than {recipe} (first difference: {key}): run "
                f"`turbosr train --config {recipe}` or point {name} at its output"]
    step, last = checkpoint.read_json(progress).get("step"), expected["run"]["max_steps"]
    if step != last:
        return [f"{name} = {folder} is {recipe} stopped at step {step} of {last}: run it again to finish it"]
    return []


def _first_difference(a: Any, b: Any, where: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{where}.{key}" if where else key)
    return where or "(the whole config)"


def check_starts(output_dir: str | Path, folders: dict[str, str], write: bool = True,
                 run: RunConfig | None = None) -> None:
    """Keep a resumed run on the model folders it started from. ``folders``: {config field: model folder the run
    reads at start (a frozen teacher or prior, the starting weights)}: ``config.model_folders``. A new run records
    their content digests (config and weights) in ``output_dir/starts.json`` (``write``: the main process); a run
    that will resume from ``output_dir/checkpoint-latest`` compares them with the record and stops if one changed,
    since the checkpoint restores only the trained weights: a frozen UNet, a teacher or the folder's settings
    (its default CFW weight) would silently come from the new folder. Checkpoints older than the record are not
    compared (a warning says so). ``run``'s pinned starts (:func:`start_problems`) are checked first, for new and
    resumed runs."""
    from turbosr.reports import MODEL_FILES, folder_digest

    hashed: dict[str, str] = {}  # each start folder hashed once (an SD-size folder takes seconds)

    def digest_of(folder: str | Path) -> str:
        if str(folder) not in hashed:
            hashed[str(folder)] = folder_digest(folder, MODEL_FILES)
        return hashed[str(folder)]

    # recipe pins (run.start_recipes) need every method's config: `turbosr train` checks them
    problems = start_problems(folders, run, digest=digest_of) if run is not None else []
    if problems:
        raise ValueError(f"{problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))

    output = Path(output_dir)
    record = output / STARTS
    resuming = resumable(output) is not None
    if resuming and not record.is_file():
        logger.warning("%s has no %s (a run from before start folders were recorded): its start folders are "
                       "not compared", output, STARTS)
        return
    if not resuming and not write:
        return  # a new run's record is the main process's to write: the folders are not hashed here
    digests = {name: digest_of(folder) for name, folder in folders.items()}
    if resuming:
        recorded = checkpoint.read_json(record)
        if not isinstance(recorded, dict) or not all(isinstance(v, dict) for v in recorded.values()):
            raise ValueError(f"{record} is damaged (expected a mapping of start fields to folders and digests); "
                             "restore it or use a new run.output_dir")
        missing = sorted(set(recorded) - set(digests))
        if missing:
            raise ValueError(f"{output}: this run started from {missing[0]} = {recorded[missing[0]].get('folder')}, "
                             f"which the config no longer gives; resuming without it would swap what the checkpoint "
                             f"was trained with: set {missing[0]} again or use a new run.output_dir")
        for name, digest in digests.items():
            if recorded.get(name, {}).get("digest") not in (None, digest):
                raise ValueError(
                    f"{output}: {name} {folders[name]} has changed since this run started (weights digest "
                    f"{recorded[name]['digest']} then, {digest} now); resuming would pair the checkpoint with other "
                    f"weights: point {name} at the original folder or use a new run.output_dir")
        return
    output.mkdir(parents=True, exist_ok=True)
    checkpoint.write_json(record, {name: {"folder": str(folders[name]), "digest": digest}
                                   for name, digest in digests.items()})


def resumable(output_dir: str | Path) -> Path | None:
    """``output_dir/checkpoint-latest`` if a run can resume from it (recovered after a killed replace), else None."""
    latest = Path(output_dir) / LATEST
    if checkpoint.recover_folder(latest) is None or not (latest / "progress.json").is_file():
        return None
    return latest


def resume(accelerator: Any, output_dir: str | Path, ema: EMA | None) -> int:
    """Restore ``output_dir/checkpoint-latest`` if there is one (after ``accelerator.prepare``); returns the step
    to continue from (0 for a new run)."""
    latest = resumable(output_dir)
    if latest is None:
        return 0
    try:
        accelerator.load_state(str(latest / "training_state"))
    except Exception as error:  # noqa: BLE001  (a damaged or foreign training state is one line, not a traceback)
        text = str(error).strip().splitlines()
        reason = text[0] if text else type(error).__name__
        safe = "weights_only" in str(error) or "Unsupported global" in str(error)
        raise ValueError(f"{latest / 'training_state'} cannot be restored"
                         + (" (the safe loader refused a pickle in it: it holds more than tensors and plain data)"
                            if safe else "") + f": {reason[:160]}; delete checkpoint-latest to start over, or use a "
                         "new run.output_dir") from None
    if ema is not None and (latest / "ema.safetensors").is_file():
        ema.load_state_dict(checkpoint.load_tensors(latest / "ema.safetensors"))
    step = int(checkpoint.read_json(latest / "progress.json")["step"])
    logger.info("resumed from %s at step %d", latest, step)
    return step
