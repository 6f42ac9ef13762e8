"""YONOS-SR decoder fine-tuning (arXiv 2401.17258, sec. 3.3) with StableSR's CFW (arXiv 2305.07015, sec. 3.3):
freeze the one-step UNet, run it for one step, and train the decoder on its latents against the HR image. The
encoder stays frozen, so the condition latents the UNet was trained on do not move.

- Patch latent, ``decoder_kind: learned`` (the default): a :class:`~turbosr.models.decoders.LatentDecoder` that reads
  the latent over several latent pixels and adds a residual to the linear decode (zero at the start). Its CFW
  branch (``decoder_shape.cfw_channels``) is trained in the same steps, StableSR's way: at w = 1, on the same
  latents, with the decoder's own trunk held fixed, so w = 0 stays exactly the decoder the first loss trained.
  ``decoder_kind: refiner`` is the older RGB refiner; a KL latent trains ``vae.decoder`` and ``post_quant_conv``.
Losses: L1 + SSIM + Sobel-edge (+ FFT amplitude, + the phase-profile grid term) terms that need no downloaded
network, and at w = 0 an optional adversarial hinge term from a critic (train/critic.py: PatchGAN, a frozen
InceptionV3 with LQ-conditioned heads, or the frozen starting UNet) with optional feature matching (the realism
end of the x4's fidelity knob). Validation reports the periodic-artifact figure beside PSNR. Training the UNet
too, as a one-step generator, is its own method: train/one_step.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from turbosr.checkpoint import COMPACT_STORAGES
from turbosr.config import ConfigError, ModelConfig, model_folders, to_dict
from turbosr.data import make_lq
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
from turbosr.train.initial import lq_condition, stored_as, without_fidelity_warp
from turbosr.train.reporting import StepReport
from turbosr.train.validation import validate, validation_crops

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class DecoderConfig:
    """``turbosr train decoder``: the trained model's UNet frozen, its decoder trained on the UNet's latents."""

    init_from: str  # the trained model folder (its UNet is frozen)
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
    sample_steps: int = 1  # denoising steps that make the latents the decoder learns to decode
    # train on the start as it will ship: its weights stored this way and read back first (int8: the built-ins'
    # UNet storage, with a learned decoder's weights in float16, as save_pretrained stores them)
    start_storage: str = "float32"

    def __post_init__(self) -> None:
        self.data.check_crop(self.model)
        if self.sample_steps < 1:
            raise ConfigError(f"sample_steps must be >= 1, got {self.sample_steps}")
        if self.decoder_kind not in DECODER_KINDS:
            raise ConfigError(f"decoder_kind must be one of {DECODER_KINDS}, got {self.decoder_kind!r}")
        if self.start_storage not in ("float32", *COMPACT_STORAGES):
            raise ConfigError(f"start_storage must be float32, {' or '.join(COMPACT_STORAGES)}, got {self.start_storage!r}")


def train(config: DecoderConfig) -> Path:
    """Run (or resume) decoder fine-tuning; returns the checkpoint folder (its ``model/`` is the full model)."""
    run, data = config.run, config.data
    accelerator = make_accelerator(run)
    check_starts(run.output_dir, model_folders(config), accelerator.is_main_process, run)
    dataset = load_dataset(data, config.model.scale)
    # an image-level CFW module is left out; a learned decoder's CFW stays: this run trains it
    loaded = without_fidelity_warp(stored_as(SRPipeline.from_pretrained(config.init_from), config.start_storage),
                                   config.init_from, decoder_cfw=False)
    pipeline = with_trainable_decoder(loaded, config)
    if pipeline.scale != config.model.scale:
        raise ValueError(f"{config.init_from} is x{pipeline.scale}; set model.scale={pipeline.scale}")
    pipeline.to(accelerator.device)
    pipeline.denoiser.requires_grad_(False)
    pipeline.autoencoder.requires_grad_(False)
    trained_decoder = decoder_module(pipeline).requires_grad_(True).train()
    trains_cfw = any(getattr(config.cfw_loss, name) > 0 for name in IMAGE_LOSSES)  # any image term switched on
    cfw = list(trained_decoder.cfw_parameters()) if pipeline.autoencoder.has_cfw and trains_cfw else []
    if pipeline.autoencoder.has_cfw and not cfw:
        for parameter in trained_decoder.cfw_parameters():  # left as it is (zero at the start: w has no effect)
            parameter.requires_grad_(False)

    def trained_part(owner: SRPipeline) -> nn.Module:  # the module this run trains, by the same name
        return nn.ModuleDict({"decoder": decoder_module(owner)})

    trained = trained_part(pipeline)
    critic = Critic(config.adversarial, accelerator, pipeline)
    # (the decoder runs inside autoencoder.decode: of the speed options only the memory format applies)
    model, _, optimizer, scheduler, ema, start = prepare(accelerator, trained, config.optim, run)
    report = StepReport(run, accelerator, start)
    validation = validation_crops(data, pipeline.scale, run.validation_images)
    cadence = Cadence(run)

    for step in range(start, run.max_steps):
        for generator, sync in micro_batches(run.seed, step, run.gradient_accumulation_steps, accelerator, model):
            # data and the latents of the frozen UNet
            hq = hq_batch(dataset, run.batch_size, generator, accelerator.device)
            lq = make_lq(hq, pipeline.scale, data.degradation, generator, data.realesrgan)
            with torch.no_grad():
                lq_latent = lq_condition(pipeline.autoencoder, lq, pipeline.scale)
            with torch.no_grad(), accelerator.autocast():
                latent = pipeline.denoise_latents(lq_latent, num_steps=config.sample_steps, generator=generator)
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
