"""Train an SD-SR model with the standard diffusion loss (the multi-step teacher; also "direct" training).

YONOS-SR conditioning: the LQ image is bicubic-upsampled to HR size, encoded, and concatenated to the noisy
latent. The loss is the MSE between the network output and the ``prediction_type`` target for a uniformly
sampled timestep (Ho et al. 2020 "simple" loss; v-target as in Salimans & Ho 2022).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from turbosr.config import TrainConfig
from turbosr.diffusion import add_noise, sample_training_timesteps, training_target
from turbosr.losses import diffusion_loss
from turbosr.train.common import (
    Validator,
    encode_pair,
    initial_pipeline,
    load_dataset,
    make_accelerator,
    micro_batches,
    sample_hq_batch,
    start_run,
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
    run = start_run(config, accelerator, denoiser)
    validator = Validator(config, accelerator)
    alpha_bar = pipeline.alpha_bar.to(accelerator.device)
    steps_total = config.model.schedule.num_train_timesteps

    for step in range(run.start, config.max_steps):
        for generator, sync in micro_batches(config, step, accelerator, run.model):
            # data: seeded by (step, micro-batch, process) so a resumed run sees the same batches
            hq = sample_hq_batch(dataset, config.batch_size, generator).to(accelerator.device)
            _, lq_latent, hq_latent = encode_pair(autoencoder, hq, config.model.scale, config.data.degradation,
                                                  generator)
            x0 = denoiser.to_x0(hq_latent, lq_latent)
            # diffusion: uniform timestep, Gaussian noise, forward process
            t = sample_training_timesteps(x0.shape[0], steps_total, config.terminal_fraction,
                                          generator).to(accelerator.device)
            noise = torch.randn(x0.shape, generator=generator).to(accelerator.device)
            x_t = add_noise(x0, noise, t, alpha_bar)
            target = training_target(x0, noise, t, alpha_bar, config.model.prediction_type)
            # forward/backward (gradients synchronised only on the last micro-batch)
            with sync, accelerator.autocast():
                loss = diffusion_loss(run.model(x_t, lq_latent, t).float(), target)
                accelerator.backward(loss / config.gradient_accumulation_steps)
        # optimizer step
        run.end_step(step, loss, {"loss": loss}, pipeline, validator)
    run.report.close()
    if run.start >= config.max_steps:
        logger.info("nothing to do: checkpoint is already at step %d >= max_steps %d", run.start, config.max_steps)
    return run.checkpointer.latest
