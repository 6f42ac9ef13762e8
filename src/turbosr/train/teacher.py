"""Train an SD-SR model with the standard diffusion loss (the multi-step teacher; also "direct" training).

YONOS-SR conditioning: the LQ image is bicubic-upsampled to HR size, encoded, and concatenated to the noisy
latent. The loss is the MSE between the network output and the ``prediction_type`` target for a uniformly
sampled timestep (Ho et al. 2020 "simple" loss; v-target as in Salimans & Ho 2022).
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import torch

from turbosr.config import TrainConfig
from turbosr.diffusion import add_noise, training_target
from turbosr.losses import diffusion_loss
from turbosr.train.common import (
    EMA,
    Checkpointer,
    RunLog,
    batch_generator,
    encode_pair,
    finite_or_raise,
    initial_pipeline,
    learning_rate_factor,
    load_dataset,
    make_accelerator,
    progress_bar,
    sample_hq_batch,
)

logger = logging.getLogger(__name__)


def train(config: TrainConfig) -> Path:
    """Run (or resume) teacher training; returns the checkpoint folder (its ``model/`` loads in SRPipeline)."""
    accelerator = make_accelerator(config)
    torch.manual_seed(config.seed)
    dataset = load_dataset(config)
    pipeline = initial_pipeline(config, dataset)
    autoencoder = pipeline.autoencoder.to(accelerator.device).requires_grad_(False)
    denoiser = pipeline.denoiser.train()
    optimizer = torch.optim.AdamW(denoiser.parameters(), lr=config.optim.learning_rate,
                                  betas=(config.optim.beta1, config.optim.beta2),
                                  weight_decay=config.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(step, config.optim.warmup_steps))
    model, optimizer, scheduler = accelerator.prepare(denoiser, optimizer, scheduler)
    ema = EMA(denoiser, config.ema_decay)
    checkpointer = Checkpointer(config)
    resumed = checkpointer.resume(accelerator, ema)
    start = resumed["step"] if resumed else 0
    alpha_bar = pipeline.alpha_bar.to(accelerator.device)
    steps_total = config.model.schedule.num_train_timesteps
    log = RunLog(config, accelerator.is_main_process)
    bar = progress_bar(config.max_steps, start, accelerator.is_main_process)
    window_start, window_images = time.monotonic(), 0

    for step in range(start, config.max_steps):
        for micro in range(config.gradient_accumulation_steps):
            # data: seeded by (step, micro-batch, process) so a resumed run sees the same batches
            generator = batch_generator(config.seed, step * config.gradient_accumulation_steps + micro,
                                        accelerator.process_index)
            hq = sample_hq_batch(dataset, config.batch_size, generator).to(accelerator.device)
            _, lq_latent, hq_latent = encode_pair(autoencoder, hq, config.model.scale, config.data.degradation,
                                                  generator)
            x0 = denoiser.to_x0(hq_latent, lq_latent)
            # diffusion: uniform timestep, Gaussian noise, forward process
            t = torch.randint(steps_total, (x0.shape[0],), generator=generator).to(accelerator.device)
            noise = torch.randn(x0.shape, generator=generator).to(accelerator.device)
            x_t = add_noise(x0, noise, t, alpha_bar)
            target = training_target(x0, noise, t, alpha_bar, config.model.prediction_type)
            # forward/backward (gradients synchronised only on the last micro-batch)
            last = micro + 1 == config.gradient_accumulation_steps
            sync = contextlib.nullcontext() if last else accelerator.no_sync(model)
            with sync, accelerator.autocast():
                loss = diffusion_loss(model(x_t, lq_latent, t).float(), target)
                accelerator.backward(loss / config.gradient_accumulation_steps)
        # optimizer step
        if config.optim.grad_clip > 0:
            accelerator.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(denoiser, step)
        finite_or_raise(loss, step)
        window_images += config.batch_size * config.gradient_accumulation_steps * accelerator.num_processes
        # logging and checkpoints
        done = step + 1
        if done % config.log_every_steps == 0 or done == config.max_steps:
            rate = window_images / max(1e-9, time.monotonic() - window_start)
            bar.set_postfix(loss=f"{float(loss):.4f}", img_s=f"{rate:.1f}")
            log.write({"step": done, "loss": float(loss), "images_per_s": rate,
                       "learning_rate": scheduler.get_last_lr()[0], "time": time.time()})
            window_start, window_images = time.monotonic(), 0
        bar.update(1)
        if checkpointer.due(done) or done == config.max_steps:
            checkpointer.save(accelerator, done, pipeline, ema)
    bar.close()
    if start >= config.max_steps:
        logger.info("nothing to do: checkpoint is already at step %d >= max_steps %d", start, config.max_steps)
    return checkpointer.latest
