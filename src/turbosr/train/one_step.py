"""One-step generator training: the UNet and the latent decoder (with StableSR's CFW inside it) of a trained model
fine-tuned together as a one-step model (t = T - 1; gradients from the image losses through the decoder into the
UNet, at its own learning rate), optionally against a critic (train/critic.py). On the blind degradation this is
the realism recipe of docs/realism.md, and the x4-real built-in's (configs/one-step-x4-real-long.yaml). The
decoder-only variant, UNet frozen, is YONOS-SR's decoder fine-tuning: train/decoder.py.

- ``decoder_kind``, ``decoder_shape``: the decoder trained with the UNet (a learned decoder by default; an existing
  one is kept), and its CFW branch, trained StableSR's way at w = 1 on the same latents with the trunk held fixed.
- ``refit_residual_scale``: on a new degradation (bicubic -> blind), measure the residual std on this run's data
  and rescale the UNet's output layer so that the one-step model starts as exactly the same function.
Losses as decoder fine-tuning's: L1 + SSIM + Sobel-edge (+ FFT amplitude, + the phase-profile grid term), the
adversarial hinge term and feature matching at w = 0. Validation reports the periodic-artifact figure beside PSNR.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from turbosr.config import ConfigError, ModelConfig, model_folders, to_dict
from turbosr.data import HRFolderDataset, make_lq
from turbosr.losses import IMAGE_LOSSES, image_loss
from turbosr.pipeline import SRPipeline
from turbosr.run_config import AdversarialConfig, DataConfig, ImageLossConfig, OptimConfig, RunConfig
from turbosr.train.common import (
    LATEST,
    Cadence,
    average_gradients,
    averaged_copy,
    check_starts,
    hq_batch,
    load_dataset,
    make_accelerator,
    micro_batches,
    optimizer_step,
    prepare,
    save_checkpoint,
)
from turbosr.train.critic import Critic
from turbosr.train.decoder_parts import (
    DECODER_KINDS,
    DecoderShape,
    cfw_backward,
    decoder_module,
    with_trainable_decoder,
)
from turbosr.train.initial import (
    lq_condition,
    measure_residual_scale,
    setup_generator,
    without_fidelity_warp,
)
from turbosr.train.reporting import StepReport
from turbosr.train.validation import validate, validation_crops

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class OneStepConfig:
    """``turbosr train one-step``: a trained model's UNet and decoder fine-tuned together as a one-step model."""

    init_from: str  # the trained model folder
    # the network comes from the starting folder; of a model section only these are read (others: ConfigError)
    MODEL_FIELDS_READ: ClassVar[tuple[str, ...]] = ("scale", "refine_channels")
    model: ModelConfig = field(default_factory=ModelConfig)  # scale and refine_channels are read from it
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    loss: ImageLossConfig = field(default_factory=ImageLossConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    decoder_kind: str = "learned"  # patch latent: "learned" (LatentDecoder + CFW) | "refiner" (RGB refiner, older)
    decoder_shape: DecoderShape = field(default_factory=DecoderShape)
    cfw_loss: ImageLossConfig = field(default_factory=ImageLossConfig)  # CFW's w = 1 fidelity loss (all 0: untrained)
    denoiser_learning_rate: float = 2e-5  # the UNet's learning rate (the decoder's is optim.learning_rate)
    # on a new degradation (bicubic -> blind): measure the residual std on this run's data and rescale the UNet's
    # output layer so that the one-step model starts as exactly the same function
    refit_residual_scale: bool = False
    residual_scale_batches: int = 8

    def __post_init__(self) -> None:
        self.data.check_crop(self.model)
        if self.decoder_kind not in DECODER_KINDS:
            raise ConfigError(f"decoder_kind must be one of {DECODER_KINDS}, got {self.decoder_kind!r}")
        if not self.denoiser_learning_rate > 0:
            raise ConfigError(f"denoiser_learning_rate must be positive, got {self.denoiser_learning_rate}")


def refit_one_step_residual_scale(pipeline: SRPipeline, dataset: HRFolderDataset, data: DataConfig, batches: int,
                                  batch_size: int, seed: int) -> None:
    """Measure the residual std on this run's degradation (as a new teacher would) and divide the UNet's output
    layer by new / old per channel. For v-prediction at t = T - 1 under zero terminal SNR the model's x0 is
    -output, and the latent is lq + x0 * scale, so the one-step latent is unchanged: only the units the UNet
    works in now fit the new residuals."""
    denoiser = pipeline.denoiser
    if pipeline.config.target != "residual" or pipeline.config.prediction_type != "v":
        raise ValueError("refit_residual_scale keeps the one-step function only for v-prediction of the residual")
    old = denoiser.residual_scale.clone()
    measure_residual_scale(denoiser, pipeline.autoencoder, dataset, pipeline.scale, data.degradation,
                           data.realesrgan, batches, batch_size, setup_generator(seed, "residual"))
    ratio = (old / denoiser.residual_scale).to(denoiser.unet.conv_out.weight)
    with torch.no_grad():
        denoiser.unet.conv_out.weight.mul_(ratio.view(-1, 1, 1, 1))
        denoiser.unet.conv_out.bias.mul_(ratio)
    logger.info("residual std refitted: x%.2f to x%.2f of the old per channel", float(1 / ratio.max()),
                float(1 / ratio.min()))


def train(config: OneStepConfig) -> Path:
    """Run (or resume) one-step generator training; returns the checkpoint folder (its ``model/`` is the full
    model)."""
    run, data = config.run, config.data
    accelerator = make_accelerator(run)
    check_starts(run.output_dir, model_folders(config), accelerator.is_main_process, run)
    dataset = load_dataset(data, config.model.scale)
    # an image-level CFW module is left out; a learned decoder's CFW stays: this run trains it
    loaded = without_fidelity_warp(SRPipeline.from_pretrained(config.init_from), config.init_from, decoder_cfw=False)
    pipeline = with_trainable_decoder(loaded, config)
    if pipeline.scale != config.model.scale:
        raise ValueError(f"{config.init_from} is x{pipeline.scale}; set model.scale={pipeline.scale}")
    if config.refit_residual_scale:
        refit_one_step_residual_scale(pipeline, dataset, data, config.residual_scale_batches, run.batch_size, run.seed)
    pipeline.to(accelerator.device)
    pipeline.denoiser.requires_grad_(True)
    pipeline.autoencoder.requires_grad_(False)
    trained_decoder = decoder_module(pipeline).requires_grad_(True).train()
    trains_cfw = any(getattr(config.cfw_loss, name) > 0 for name in IMAGE_LOSSES)  # any image term switched on
    cfw = list(trained_decoder.cfw_parameters()) if pipeline.autoencoder.has_cfw and trains_cfw else []
    if pipeline.autoencoder.has_cfw and not cfw:
        for parameter in trained_decoder.cfw_parameters():  # left as it is (zero at the start: w has no effect)
            parameter.requires_grad_(False)

    def trained_part(owner: SRPipeline) -> nn.Module:  # the modules this run trains, by the same names
        return nn.ModuleDict({"decoder": decoder_module(owner), "denoiser": owner.denoiser})

    trained = trained_part(pipeline)
    learning_rates = {"denoiser": config.denoiser_learning_rate}
    critic = Critic(config.adversarial, accelerator, pipeline)
    # (the decoder runs inside autoencoder.decode: of the speed options only the memory format applies)
    model, _, optimizer, scheduler, ema, start = prepare(accelerator, trained, config.optim, run, learning_rates)
    report = StepReport(run, accelerator, start)
    validation = validation_crops(data, pipeline.scale, run.validation_images)
    cadence = Cadence(run)

    for step in range(start, run.max_steps):
        for generator, sync in micro_batches(run.seed, step, run.gradient_accumulation_steps, accelerator, model):
            # data and the one-step latents (the UNet in the graph)
            hq = hq_batch(dataset, run.batch_size, generator, accelerator.device)
            lq = make_lq(hq, pipeline.scale, data.degradation, generator, data.realesrgan)
            with torch.no_grad():
                lq_latent = lq_condition(pipeline.autoencoder, lq, pipeline.scale)
            with accelerator.autocast():
                latent = pipeline.denoise_latents(lq_latent, num_steps=1, generator=generator)
            # w = 0: decode with the trainable decoder (CFW off) and compare with the HR crop
            with sync, accelerator.autocast():
                prediction = (pipeline.autoencoder.decode(latent.float()).float() + 1.0) / 2.0
                terms = image_loss(prediction, hq, config.loss)
                loss = critic.add_generator_loss(terms["total"], terms, prediction, step, hq, lq, generator)
                if loss.requires_grad:  # (every w = 0 term may be switched off, to train CFW alone)
                    accelerator.backward(loss / run.gradient_accumulation_steps)
            critic.discriminator_step(hq, prediction, terms, lq, generator)
            # w = 1: CFW on the same latents, only the CFW branch learning (the trunk is what w = 0 means)
            if cfw:
                terms["cfw"] = cfw_backward(pipeline, trained_decoder, latent, lq_latent, hq, config.cfw_loss,
                                            accelerator, run.gradient_accumulation_steps)
        # update, average, log
        average_gradients(accelerator, trained)  # it ran outside its DDP wrapper
        optimizer_step(accelerator, model, optimizer, scheduler, config.optim.grad_clip)
        ema.update(trained, step)
        report.after_step(step + 1, {k: v.detach() for k, v in terms.items()}, scheduler.get_last_lr()[0])
        # validate and checkpoint the model with the averaged weights; stop when the time budget is spent
        done, checkpointing = step + 1, cadence.checkpoint_due(step + 1)
        validating = validation is not None and cadence.validation_due(done)
        averaged = averaged_copy(pipeline, ema, trained_part) if validating or checkpointing else None
        if validating and accelerator.is_main_process:
            validate(averaged, validation, data, done, report.log)
        if checkpointing:
            save_checkpoint(accelerator, run.output_dir, done, ema, to_dict(config), averaged.save_pretrained)
        if cadence.out_of_time():
            break
    report.close()
    return Path(run.output_dir) / LATEST
