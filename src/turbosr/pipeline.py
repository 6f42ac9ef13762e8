"""SRPipeline: LQ image in, ``scale`` x larger image out, in one (or a few) denoising steps.

Tensor contract: ``__call__`` takes a PIL image or a float tensor (B, 3, h, w), RGB, in [0, 1], and returns the
same kind, exactly (h * scale, w * scale). Inside: the LQ image is bicubic-upsampled to the output size, encoded
to the condition latent (YONOS-SR conditioning), the diffusion variable is sampled with k DDIM steps from the
last timestep (k = 1 by default), and the result is decoded. Large images are processed as overlapping latent
tiles fused with Gaussian weights at every step (StableSR aggregation sampling), with tiled encode/decode, so
the networks' working memory depends on the tile size, not on the image size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from turbosr import checkpoint
from turbosr.colorfix import COLOR_FIXES
from turbosr.config import ModelConfig, from_dict, to_dict
from turbosr.degradations import upsample_lq
from turbosr.diffusion import Sampler, Window, keyed_noise, make_alpha_bar, noise_seed
from turbosr.image import from_model_range, pil_to_tensor, tensor_to_pil, to_model_range, upscale_alpha
from turbosr.models.autoencoders import (
    Autoencoder,
    PatchAutoencoder,
    autoencoder_from_config,
    diffusers_config,
)
from turbosr.models.denoiser import Denoiser
from turbosr.models.stablesr import FidelityWarp
from turbosr.tiling import TILE_WEIGHTS, Tile, tiled_map

logger = logging.getLogger(__name__)

FORMAT = "turbosr-model"
FORMAT_VERSION = 1
DEFAULT_TILE = 512
DEFAULT_TILE_OVERLAP = 64


class ModelFolderError(ValueError):
    """A model folder that cannot be loaded: not a turbosr folder, damaged, or inconsistent (one line)."""


def _unet_classes() -> dict[str, type]:
    from diffusers import UNet2DConditionModel, UNet2DModel

    return {"UNet2DModel": UNet2DModel, "UNet2DConditionModel": UNet2DConditionModel}


class SRPipeline:
    """A latent diffusion SR model ready for inference.

    Attributes: ``denoiser`` (:class:`~turbosr.models.Denoiser`), ``autoencoder`` (latent space),
    ``fidelity_warp`` (StableSR's CFW module, or None), ``config`` (:class:`~turbosr.config.ModelConfig`, the
    networks' shape), ``sampler`` (:class:`~turbosr.diffusion.Sampler`, how it samples), ``default_fidelity``
    (the CFW weight used when a call gives none: 0 = the model's own output, what a folder without the field
    means), ``device``, ``dtype``.
    """

    def __init__(self, denoiser: Denoiser, autoencoder: Autoencoder, config: ModelConfig,
                 fidelity_warp: FidelityWarp | None = None, sampler: Sampler | None = None,
                 default_fidelity: float = 0.0, default_steps: int = 1, default_color_fix: str = "none") -> None:
        self.denoiser = denoiser.eval()
        self.autoencoder = autoencoder.eval()
        self.fidelity_warp = fidelity_warp.eval() if fidelity_warp is not None else None
        if default_fidelity:
            self._check_fidelity(default_fidelity)
        self.default_fidelity = float(default_fidelity)
        self.config = config
        self.default_steps = default_steps
        if default_color_fix not in COLOR_FIXES:
            raise ValueError(f"default_color_fix must be one of {', '.join(COLOR_FIXES)}, got {default_color_fix!r}")
        self.default_color_fix = default_color_fix
        self.sampler = sampler if sampler is not None else Sampler()
        self.alpha_bar = make_alpha_bar(config.schedule)
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        # how the denoiser's overlapping latent tiles are blended (tiling.TILE_WEIGHTS): "gaussian" (turbosr's,
        # the default: docs/benchmarks/tiling_seams.md) or "stablesr" (StableSR's released weights)
        self.aggregation = "gaussian"

    def replace(self, **changes: Any) -> SRPipeline:
        """A pipeline sharing this one's networks, with some of ``denoiser``, ``autoencoder``, ``config``,
        ``fidelity_warp``, ``sampler`` and ``default_fidelity`` replaced (what training set-up does to a loaded
        model)."""
        parts = {"denoiser": self.denoiser, "autoencoder": self.autoencoder, "config": self.config,
                 "fidelity_warp": self.fidelity_warp, "sampler": self.sampler,
                 "default_fidelity": self.default_fidelity, "default_steps": self.default_steps,
                 "default_color_fix": self.default_color_fix}
        unknown = sorted(set(changes) - set(parts))
        if unknown:
            raise TypeError(f"SRPipeline.replace: unknown part(s) {', '.join(unknown)}")
        pipeline = SRPipeline(**{**parts, **changes})
        pipeline.aggregation = self.aggregation
        return pipeline

    @property
    def scale(self) -> int:
        return self.config.scale

    @property
    def has_cfw(self) -> bool:
        """Whether ``fidelity`` (StableSR's CFW weight) applies: a learned decoder with CFW, or an older model
        folder's image-level CFW module."""
        return self.autoencoder.has_cfw or self.fidelity_warp is not None

    def fidelity_weight(self, fidelity: float | None) -> float:
        """The CFW weight a call with ``fidelity`` runs at: the given one, or the model's ``default_fidelity``."""
        return self.default_fidelity if fidelity is None else fidelity

    def _check_fidelity(self, fidelity: float) -> None:
        if not self.has_cfw:
            raise ValueError("this model has no CFW (fidelity) modules: leave --fidelity out, or train them "
                             "with `turbosr train stablesr --set stage=cfw`")
        if isinstance(fidelity, bool) or not isinstance(fidelity, (int, float)) or not 0.0 <= fidelity <= 1.0:
            raise ValueError(f"fidelity must be in [0, 1], got {fidelity!r}")

    @property
    def pixel_multiple(self) -> int:
        """Output-resolution sizes the networks accept: latent factor x the UNet's total downsampling."""
        levels = len(self.denoiser.unet.config.block_out_channels)
        return self.autoencoder.factor * 2 ** (levels - 1)

    # ----------------------------------------------------------------------------------------------- persistence
    def save_pretrained(self, folder: str | Path, storage: str = "float32",
                        max_shard_bytes: int | None = None) -> Path:
        """Write ``config.json`` + ``denoiser.safetensors`` + ``autoencoder.safetensors`` into ``folder``.

        ``storage`` "float16" or "int8" (per output channel, with scales) stores the denoiser's parameters
        compactly (:func:`turbosr.checkpoint.compact_state`), and a learned latent decoder's parameters in float16;
        buffers and the rest of the latent space stay float32.
        ``max_shard_bytes`` splits a large denoiser file into shards with an index. Files are written atomically.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        parameter_names = {name for name, _ in self.denoiser.named_parameters()}
        denoiser_state = checkpoint.compact_state(self.denoiser.state_dict(), parameter_names, storage)
        checkpoint.save_tensors(folder / "denoiser.safetensors", denoiser_state, max_shard_bytes=max_shard_bytes)
        # the latent space's analytic part (patch basis, statistics) and every buffer stay float32; a learned
        # decoder's parameters are stored in half precision when the denoiser is stored compactly (never int8)
        decoder_parameters = {name for name, _ in self.autoencoder.named_parameters() if name.startswith("decoder.")}
        checkpoint.save_tensors(folder / "autoencoder.safetensors", checkpoint.compact_state(
            self.autoencoder.state_dict(), decoder_parameters, "float32" if storage == "float32" else "float16"))
        extra = {}
        if self.denoiser.conditioning == "sft":
            extra["structure_encoder"] = self.denoiser.sft.config()
        if self.denoiser.released_control is not None:
            extra["controlnet"] = self.denoiser.released_control.controlnet_config
            if self.denoiser.released_control.tower is not None:
                extra["image_tower"] = self.denoiser.released_control.tower.config()
        if self.default_steps != 1:
            extra["default_steps"] = self.default_steps
        if self.aggregation != "gaussian":
            extra["aggregation"] = self.aggregation
        if self.default_color_fix != "none":
            extra["default_color_fix"] = self.default_color_fix
        if self.fidelity_warp is not None:
            checkpoint.save_tensors(folder / "fidelity_warp.safetensors",
                                    {k: v.float() for k, v in self.fidelity_warp.state_dict().items()})
            extra["fidelity_warp"] = self.fidelity_warp.config()
        checkpoint.write_json(folder / "config.json", {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": to_dict(self.config),
            "sampler": self.sampler.to_dict(),
            "unet_class": type(self.denoiser.unet).__name__,
            "unet": diffusers_config(self.denoiser.unet),
            "autoencoder": self.autoencoder.config(),
            "weights_storage": storage,
            **({"default_fidelity": self.default_fidelity} if self.has_cfw else {}),
            **extra,
        })
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None) -> SRPipeline:
        """Load a model folder written by :meth:`save_pretrained` (safetensors only, nothing downloaded).

        A folder that is not a turbosr model, is damaged, or describes networks of absurd size (checked before
        anything is allocated) raises ValueError (or FileNotFoundError) in one line naming the folder."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"model folder not found: {folder}")
        meta = checkpoint.read_json(folder / "config.json")
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ModelFolderError(f"{folder} is not a turbosr model folder (config.json has no format '{FORMAT}')")
        version = meta.get("format_version", 0)
        if not isinstance(version, int) or isinstance(version, bool):
            raise ModelFolderError(f"{folder}/config.json: format_version must be an integer, got {version!r}")
        if version > FORMAT_VERSION:
            raise ModelFolderError(f"{folder} was written by a newer turbosr (format {version}); upgrade turbosr")
        try:
            return cls._from_meta(folder, meta).to(device, dtype)
        except (ModelFolderError, checkpoint.DamagedFile):
            raise
        except (TypeError, KeyError, AttributeError, IndexError, RuntimeError, ValueError, ZeroDivisionError,
                NotImplementedError) as error:
            text = str(error).strip().splitlines()
            reason = f"{type(error).__name__}: {text[0] if text else ''}"
            raise ModelFolderError(f"{folder}: damaged or inconsistent model folder ({reason})") from None

    @classmethod
    def _from_meta(cls, folder: Path, meta: dict[str, Any]) -> SRPipeline:
        for key, kind in (("model", dict), ("unet_class", str), ("unet", dict), ("autoencoder", dict)):
            if not isinstance(meta.get(key), kind):
                raise ModelFolderError(f"{folder}/config.json: '{key}' must be a {kind.__name__}, got "
                                       f"{meta.get(key)!r}")
        # folders written before SFT could sit in the down blocks modulate the mid and up blocks only; folders
        # written before the sampler had its own section kept its settings among the model's fields
        model = {"sft_down": False, **meta["model"]}
        legacy = {new: model.pop(old) for old, new in (("sampler", "kind"), ("psr_weight", "psr_weight"),
                                                        ("sampler_steps", "trained_steps")) if old in model}
        config = from_dict(ModelConfig, model)
        sampler = Sampler.from_dict(meta.get("sampler", legacy))
        classes = _unet_classes()
        if meta["unet_class"] not in classes:
            raise ModelFolderError(f"{folder}: unknown UNet class {meta['unet_class']!r}")
        check_network_size(meta["unet"], meta["autoencoder"], folder)
        state = checkpoint.expand_state(checkpoint.load_tensors(folder / "denoiser.safetensors"))
        prompt = state.get("prompt_embedding")
        structure = meta.get("structure_encoder")
        if structure is not None:
            check_structure_size(structure, folder)
        controlnet = meta.get("controlnet")

        def build() -> tuple[Denoiser, Autoencoder]:
            tower = image_tower_from_config(meta.get("image_tower"), folder) if controlnet is not None else None
            unet = classes[meta["unet_class"]].from_config(meta["unet"])
            denoiser = Denoiser(unet, config.latent_channels, config.target, prompt, config.control, config.sft,
                                config.sft_time_aware, config.sft_down, config.conditioning, structure, controlnet,
                                tower)
            return denoiser, autoencoder_from_config(meta["autoencoder"])

        # the networks config.json describes, first without memory (meta tensors): they must be exactly what the
        # weight files hold, so no description allocates more than its files (or absurd sizes) before failing
        with torch.device("meta"):
            shadow_denoiser, shadow_autoencoder = build()
        autoencoder_state = checkpoint.expand_state(checkpoint.load_tensors(folder / "autoencoder.safetensors"))
        _check_layout(shadow_denoiser.state_dict(), state, folder / "denoiser.safetensors")
        _check_layout(shadow_autoencoder.state_dict(), autoencoder_state, folder / "autoencoder.safetensors")
        del shadow_denoiser, shadow_autoencoder
        denoiser, autoencoder = build()
        denoiser.load_state_dict(state, strict=True)
        autoencoder.load_state_dict(autoencoder_state, strict=True)
        warp = None
        if "fidelity_warp" in meta:
            if not isinstance(meta["fidelity_warp"], dict):
                raise ModelFolderError(f"{folder}/config.json: 'fidelity_warp' must be a mapping")
            warp = FidelityWarp(**meta["fidelity_warp"])
            warp.load_state_dict(checkpoint.load_tensors(folder / "fidelity_warp.safetensors"), strict=True)
        default_fidelity = meta.get("default_fidelity", 0.0)
        if isinstance(default_fidelity, bool) or not isinstance(default_fidelity, (int, float)):
            raise ModelFolderError(f"{folder}/config.json: 'default_fidelity' must be a number, got {default_fidelity!r}")
        default_steps = meta.get("default_steps", 1)
        if isinstance(default_steps, bool) or not isinstance(default_steps, int) or not 1 <= default_steps <= 1000:
            raise ModelFolderError(f"{folder}/config.json: 'default_steps' must be an integer in [1, 1000], got "
                                   f"{default_steps!r}")
        default_color_fix = meta.get("default_color_fix", "none")
        if default_color_fix not in COLOR_FIXES:
            raise ModelFolderError(f"{folder}/config.json: 'default_color_fix' must be one of "
                                   f"{', '.join(COLOR_FIXES)}, got {default_color_fix!r}")
        pipeline = cls(denoiser, autoencoder, config, warp, sampler, default_fidelity, default_steps, default_color_fix)
        aggregation = meta.get("aggregation", "gaussian")
        if aggregation not in TILE_WEIGHTS or aggregation == "crop":
            raise ModelFolderError(f"{folder}/config.json: 'aggregation' must be one of gaussian, stablesr, uniform, "
                                   f"got {aggregation!r}")
        pipeline.aggregation = aggregation
        return pipeline

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> SRPipeline:
        """Move both networks (like ``nn.Module.to``); returns self."""
        if device is not None:
            self.device = torch.device(device)
        if dtype is not None:
            self.dtype = dtype
        self.denoiser.to(self.device, self.dtype)
        self.autoencoder.to(self.device, self.dtype)
        if self.fidelity_warp is not None:
            self.fidelity_warp.to(self.device, self.dtype)
        return self

    # ------------------------------------------------------------------------------------------------ inference
    def __call__(
        self,
        images: Image.Image | torch.Tensor,
        *,
        num_steps: int | None = None,
        strength: float = 1.0,
        tile: int = DEFAULT_TILE,
        tile_overlap: int = DEFAULT_TILE_OVERLAP,
        color_fix: str | None = None,
        fidelity: float | None = None,
        generator: torch.Generator | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Image.Image | torch.Tensor:
        """Upscale ``images`` by ``self.scale``.

        Args:
            images: PIL image (alpha is upscaled separately with bicubic and re-attached) or (B, 3, h, w) in [0, 1].
            num_steps: denoising steps; None = the model's ``default_steps`` (1 = one-step SR for the built-ins).
            strength: starting noise level in (0, 1]; 1 starts from pure noise (realism), lower values start from
                the noised bicubic estimate and keep closer to the input (fidelity).
            tile, tile_overlap: tile size and overlap in OUTPUT pixels; images larger than ``tile`` are processed
                tile by tile (latent aggregation sampling, tiled encode/decode).
            color_fix: "none", "adain" or "wavelet" (match the colours of the bicubic-upsampled input); None = the
                model's ``default_color_fix`` ("none" unless its folder says otherwise).
            fidelity: StableSR's CFW weight w in [0, 1] for models that carry CFW modules (0 = the prior's
                realism, exactly the output without CFW; 1 = fidelity to the input); None = the model's
                ``default_fidelity`` (0 unless its folder says otherwise).
            generator: seeds the starting noise; the same seed gives the same output.
            progress: called as ``progress(step_index, num_steps)`` after every step.
        Returns: the same kind as ``images``, (h * scale, w * scale); a tensor keeps the input's device and dtype.
        """
        if isinstance(images, Image.Image):
            return self._call_pil(images, num_steps=num_steps, strength=strength, tile=tile,
                                  tile_overlap=tile_overlap, color_fix=color_fix, fidelity=fidelity,
                                  generator=generator, progress=progress)
        if not torch.is_tensor(images) or images.dim() != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
            raise ValueError(f"expected a PIL image or a (B, 3, H, W) tensor in [0, 1], got {shape}")
        check_image_tensor(images)
        with torch.inference_mode():
            output = self._upscale(images.to(self.device, self.dtype), self.steps(num_steps), strength, tile, tile_overlap,
                                   self.color_fix_for(color_fix), fidelity, generator, progress)
        return output.to(images.device, images.dtype)

    def upscale_file(self, source: str | Path, target: str | Path, **options: Any) -> Path:
        """Upscale an image file into ``target`` (format from its suffix) with memory flat in the image size:
        outputs above ``streaming.STREAM_PIXELS`` go from file to file in strips (PNG, TIFF), others in memory.
        Alpha, ICC profile, EXIF and 16 bits are carried over; the file appears only when complete.
        ``options``: as :meth:`__call__`, plus ``overwrite`` and ``quality`` (see turbosr.streaming.upscale_file)."""
        from turbosr.image import load_image
        from turbosr.streaming import upscale_file

        return upscale_file(self, load_image(source), target, **options)

    def _call_pil(self, image: Image.Image, **kwargs: Any) -> Image.Image:
        alpha = None
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            image = image.convert("RGBA")
            alpha = image.getchannel("A")
        output = tensor_to_pil(self(pil_to_tensor(image), **kwargs))
        if alpha is not None:
            alpha_tensor = torch.from_numpy(np.asarray(alpha, dtype=np.float32) / 255.0)[None, None]
            big = upscale_alpha(alpha_tensor, self.scale)
            output.putalpha(tensor_to_pil(big.expand(-1, 3, -1, -1)).getchannel("R"))
        return output

    def color_fix_for(self, color_fix: str | None) -> str:
        """The colour fix a call with ``color_fix`` runs: the given one, or the folder's ``default_color_fix``."""
        return self.default_color_fix if color_fix is None else color_fix

    def steps(self, num_steps: int | None) -> int:
        """The step count a call with ``num_steps`` runs: the given one, or the folder's ``default_steps``."""
        return self.default_steps if num_steps is None else num_steps

    def encode(self, images: torch.Tensor, *, tile: int = DEFAULT_TILE, tile_overlap: int = DEFAULT_TILE_OVERLAP,
               seed: int | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Images at the output size (B, 3, H, W) in [0, 1], H and W multiples of the latent factor -> the LQ
        latent, tile by tile. A KL autoencoder with posterior "sample" (StableSR) draws ``mean + std * noise``:
        ``noise`` (B, C, H/f, W/f) if given (to reproduce a run), else position-keyed noise from ``seed``."""
        autoencoder, factor = self.autoencoder, self.autoencoder.factor
        sample = getattr(autoencoder, "posterior", "mode") == "sample"
        shape = (images.shape[0], autoencoder.latent_channels, images.shape[-2] // factor, images.shape[-1] // factor)

        def encode_tile(x: torch.Tensor, window: Tile) -> torch.Tensor:
            if not sample:
                return autoencoder.encode(to_model_range(x))
            rows, cols = (window.y0 // factor, window.y1 // factor), (window.x0 // factor, window.x1 // factor)
            drawn = noise[..., rows[0]:rows[1], cols[0]:cols[1]] if noise is not None else keyed_noise(
                seed if seed is not None else 0, ENCODE_NOISE_STEP, shape, rows, cols)
            return autoencoder.encode(to_model_range(x), drawn.to(x.device, x.dtype))

        # a patch encoder is per patch, so its tiles need no overlap (and stream: streaming.upscale_strips)
        exact = isinstance(autoencoder, PatchAutoencoder)
        return tiled_map(encode_tile, images, tile, 0 if exact else tile_overlap, out_scale=1 / factor,
                         weight="crop" if exact else "gaussian")

    def denoise_latents(self, lq_latent: torch.Tensor, *, num_steps: int | None = None, strength: float = 1.0,
                        generator: torch.Generator | None = None, latent_tile: int | None = None,
                        latent_overlap: int = 0, progress: Callable[[int, int], None] | None = None,
                        seed: int | None = None, noise: list[torch.Tensor] | None = None,
                        lq_image: torch.Tensor | None = None) -> torch.Tensor:
        """k-step sampling in latent space: LQ latent (B, C, h, w) -> HQ latent estimate, same shape.

        The noise is keyed by position (:func:`~turbosr.diffusion.keyed_noise`, seeded by ``seed`` or one draw
        from ``generator``), so any tiling or streaming of the latent starts from the same noise; ``noise``, a
        list of whole-latent tensors (the start's first, then one per step that draws: k for the re-noising and
        DDPM rules), replaces it, which reproduces another implementation's run bit for bit. With ``strength <
        1`` sampling starts from the bicubic estimate (the LQ latent itself, i.e. x0 = ``to_x0(lq_latent,
        lq_latent)``: zero for the residual target, the LQ latent for the latent target) noised to the starting
        timestep. ``latent_tile``/``latent_overlap`` are in latent pixels (None: one tile); each tile draws its
        own noise, reads its own window of the condition and runs its whole step, down to the HQ latent at the
        last step, and only those results are blended: one step holds the condition and one output-sized
        accumulator, whatever the image size (:meth:`Sampler.sample`). Gradients flow if called outside
        inference mode (joint fine-tuning). ``lq_image`` (B, 3, H, W) in [0, 1] at the output size is the control
        image of a ControlNet model (conditioning "controlnet"), read window by window.
        """
        sampler, denoiser = self.sampler, self.denoiser
        seed = noise_seed(generator) if seed is None else seed
        shape = tuple(lq_latent.shape)

        def draw(step: int, window: Window) -> torch.Tensor:
            rows, cols = window[-2], window[-1]
            assert isinstance(rows, slice) and isinstance(cols, slice)
            if noise is not None:
                if step >= len(noise):
                    raise ValueError(f"the injected noise has {len(noise)} draws; this run needs draw {step}")
                return noise[step][..., rows, cols].to(lq_latent.device, lq_latent.dtype)
            return keyed_noise(seed, step, shape, (rows.start, rows.stop), (cols.start, cols.stop)).to(
                lq_latent.device, lq_latent.dtype)

        pixels = denoiser.conditioning == "controlnet"
        if pixels and lq_image is None:
            raise ValueError("this model's ControlNet reads the LQ image: pass lq_image")
        factor = self.autoencoder.factor

        def denoise(x_t: torch.Tensor, t: int, previous: torch.Tensor | None, window: Window) -> torch.Tensor:
            condition, control = lq_latent[window], None
            if pixels:  # the control condition is the LQ image (and AddSR's PSR blends the decoded prediction in)
                rows, cols = window[-2], window[-1]
                assert isinstance(rows, slice) and isinstance(cols, slice) and lq_image is not None
                image = lq_image[..., rows.start * factor:rows.stop * factor, cols.start * factor:cols.stop * factor]
                control = image.to(x_t.dtype)
                if previous is not None and sampler.kind == "renoise":
                    decoded = from_model_range(self.autoencoder.decode(denoiser.from_x0(previous, condition)))
                    control = sampler.psr_weight * decoded + (1 - sampler.psr_weight) * control
            elif sampler.kind == "renoise":  # AddSR PSR: the LQ latent first, then the blended last prediction
                control = condition if previous is None else (
                    sampler.psr_weight * denoiser.from_x0(previous, condition)
                    + (1 - sampler.psr_weight) * condition)
            if pixels:
                return denoiser(x_t, condition, t, control, first_step=previous is None)
            return denoiser(x_t, condition, t, control)

        def join(fn: Callable[[Window], torch.Tensor]) -> torch.Tensor:  # aggregation over latent tiles
            return tiled_map(lambda _, tile: fn((..., slice(tile.y0, tile.y1), slice(tile.x0, tile.x1))), lq_latent,
                             latent_tile or max(shape[-2:]), latent_overlap, weight=self.aggregation)

        timesteps = sampler.timesteps(self.steps(num_steps), self.config.schedule.num_train_timesteps, strength)
        on_step = (lambda i: progress(i, len(timesteps))) if progress else None
        return sampler.sample(denoise, draw, lambda w: denoiser.to_x0(lq_latent[w], lq_latent[w]), timesteps,
                              self.alpha_bar, self.config.prediction_type, on_step, join=join,
                              finish=lambda x0, w: denoiser.from_x0(x0, lq_latent[w]))

    def decode(self, hq_latent: torch.Tensor, lq_latent: torch.Tensor, fidelity: float = 0.0,
               latent_tile: int | None = None, latent_overlap: int = 0, rows: tuple[int, int] | None = None,
               lq_image: torch.Tensor | None = None) -> torch.Tensor:
        """HQ latent (B, C, h, w) -> image (B, 3, h * f, w * f) in [0, 1], tile by tile. CFW at weight
        ``fidelity`` reads the same window of what its decoder fuses: the LQ latent (a patch latent's learned
        decoder) or the LQ image at the output size in [0, 1], ``lq_image`` (a KL decoder with CFW, StableSR). A
        patch latent's decoder (learned, or linear with an RGB refiner) is decoded exactly: non-overlapping tiles
        with a halo of its receptive radius, and ``rows`` (a, b) in latent pixels, whole tile rows, decodes just
        that strip (streaming). A KL decoder's tiles are blended."""
        autoencoder = self.autoencoder
        factor = autoencoder.factor
        latent_tile = latent_tile or max(hq_latent.shape[-2:])
        use_cfw = bool(fidelity) and autoencoder.has_cfw
        if use_cfw and autoencoder.cfw_input == "image" and lq_image is None:
            raise ValueError("this model's CFW reads the LQ image: pass lq_image")

        def decode_tile(z: torch.Tensor, window: Tile) -> torch.Tensor:
            if not use_cfw:
                return from_model_range(autoencoder.decode(z))
            if autoencoder.cfw_input == "image":
                assert lq_image is not None
                lq = to_model_range(lq_image[..., window.y0 * factor:window.y1 * factor,
                                             window.x0 * factor:window.x1 * factor].to(z.dtype))
            else:
                lq = lq_latent[..., window.y0:window.y1, window.x0:window.x1]
            return from_model_range(autoencoder.decode(z, lq, fidelity))

        if isinstance(autoencoder, PatchAutoencoder):
            return tiled_map(decode_tile, hq_latent, latent_tile, autoencoder.decode_radius,
                             out_scale=autoencoder.factor, weight="crop", rows=rows)
        return tiled_map(decode_tile, hq_latent, latent_tile, latent_overlap, out_scale=autoencoder.factor, rows=rows)

    def check_options(self, num_steps: int | None, strength: float, tile: int, tile_overlap: int,
                      color_fix: str | None, fidelity: float | None = None) -> None:
        """Raise ValueError with a clear message for options this model cannot use."""
        if fidelity is not None:
            self._check_fidelity(fidelity)
        color_fix = self.color_fix_for(color_fix)
        if color_fix not in COLOR_FIXES:
            raise ValueError(f"color_fix must be one of {', '.join(COLOR_FIXES)}, got {color_fix!r}")
        self.sampler.check(self.steps(num_steps), strength)
        multiple, factor = self.pixel_multiple, self.autoencoder.factor
        if tile < multiple or tile % multiple:
            raise ValueError(f"tile must be a positive multiple of {multiple} output pixels for this model, got {tile}")
        for name, value in (("tile", tile), ("tile_overlap", tile_overlap)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer number of output pixels, got {value!r}")
        if not 0 <= tile_overlap < tile or tile_overlap % factor:
            raise ValueError(f"tile_overlap must be a multiple of {factor} in [0, tile), got {tile_overlap}")

    def _upscale(self, lq: torch.Tensor, num_steps: int, strength: float, tile: int, tile_overlap: int,
                 color_fix: str, fidelity: float | None, generator: torch.Generator | None,
                 progress: Callable[[int, int], None] | None) -> torch.Tensor:
        self.check_options(num_steps, strength, tile, tile_overlap, color_fix, fidelity)
        fidelity = self.fidelity_weight(fidelity)
        factor = self.autoencoder.factor
        multiple = self.pixel_multiple
        height, width = lq.shape[-2] * self.scale, lq.shape[-1] * self.scale
        upsampled = upsample_lq(lq, self.scale)
        padded = _pad_to_multiple(upsampled, multiple)
        latent_tile, latent_overlap = tile // factor, tile_overlap // factor
        seed = noise_seed(generator)

        # range conversions happen per tile, so no extra full-size copies of the image are made
        lq_latent = self.encode(padded, tile=tile, tile_overlap=tile_overlap, seed=seed)
        image_cfw = self.autoencoder.has_cfw and self.autoencoder.cfw_input == "image"
        needs_image = image_cfw or self.denoiser.conditioning == "controlnet"
        if not needs_image:
            del padded
        hq_latent = self.denoise_latents(lq_latent, num_steps=num_steps, strength=strength, seed=seed,
                                         latent_tile=latent_tile, latent_overlap=latent_overlap, progress=progress,
                                         lq_image=padded if needs_image else None)
        decoded = self.decode(hq_latent, lq_latent, fidelity, latent_tile, latent_overlap,
                              lq_image=padded if image_cfw else None)
        if fidelity and self.fidelity_warp is not None:  # an older folder's CFW on the decoded image
            warp = self.fidelity_warp
            stacked = torch.cat([decoded, _pad_to_multiple(upsampled, multiple)[..., : decoded.shape[-2],
                                                                                 : decoded.shape[-1]]], dim=1)
            decoded = tiled_map(lambda x, _: from_model_range(warp(to_model_range(x[:, :3]), to_model_range(x[:, 3:]),
                                                                   fidelity)), stacked, tile, tile_overlap)
        output = decoded[..., :height, :width]
        if not bool(torch.isfinite(output).all()):  # a broken model must not become a black image on disk
            raise ValueError("the model produced NaN or infinite values (its weights or its input are broken); "
                             "nothing was written")
        return COLOR_FIXES[color_fix](output, upsampled).clamp(0, 1) if color_fix != "none" else output


ENCODE_NOISE_STEP = 1_000_003  # keyed-noise step index of a posterior-sampling encoder's draw (no sampler step)


# Bounds on a model folder's network description, checked before anything is built: far above every real model
# (SD-class UNets have 4 levels of at most 1280 channels), far below what would exhaust memory or time.
MAX_LEVELS, MAX_WIDTH, MAX_LAYERS, MAX_LATENT_CHANNELS, MAX_FACTOR = 8, 4096, 16, 1024, 64


def check_network_size(unet: dict[str, Any], autoencoder: dict[str, Any], folder: Path) -> None:
    """Refuse a config.json whose networks would be absurdly large (or mistyped sizes) before allocating them."""
    def bad(what: str, value: Any) -> ModelFolderError:
        return ModelFolderError(f"{folder}/config.json: {what} {value!r} is not a plausible network size")

    def integer(value: Any, low: int, high: int) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high

    widths = unet.get("block_out_channels", ())
    if not isinstance(widths, (list, tuple)) or not 1 <= len(widths) <= MAX_LEVELS or \
            not all(integer(w, 1, MAX_WIDTH) for w in widths):
        raise bad("unet.block_out_channels", widths)
    for key in ("in_channels", "out_channels"):
        if key in unet and not integer(unet[key], 1, 2 * MAX_LATENT_CHANNELS + 3):
            raise bad(f"unet.{key}", unet[key])
    layers = unet.get("layers_per_block", 1)
    if not integer(layers, 1, MAX_LAYERS):
        raise bad("unet.layers_per_block", layers)
    for key in ("attention_head_dim", "norm_num_groups", "num_attention_heads"):  # divisors: never 0
        value = unet.get(key)
        values = value if isinstance(value, list) else [value]
        if value is not None and not all(integer(v, 1, MAX_WIDTH) for v in values):
            raise bad(f"unet.{key}", value)
    if autoencoder.get("kind") == "patch":
        for key, high in (("factor", MAX_FACTOR), ("latent_channels", MAX_LATENT_CHANNELS)):
            if not integer(autoencoder.get(key), 1, high):
                raise bad(f"autoencoder.{key}", autoencoder.get(key))
        if not integer(autoencoder.get("refine_channels", 0), 0, MAX_WIDTH):
            raise bad("autoencoder.refine_channels", autoencoder.get("refine_channels"))
        decoder = autoencoder.get("decoder")
        if decoder is not None:
            if not isinstance(decoder, dict):
                raise bad("autoencoder.decoder", decoder)
            for key in ("channels", "blocks", "head_channels", "cfw_channels"):
                values = decoder.get(key)
                if not isinstance(values, list) or len(values) > MAX_LEVELS or \
                        not all(integer(v, 0, MAX_WIDTH) for v in values):
                    raise bad(f"autoencoder.decoder.{key}", values)


def _check_layout(expected: dict[str, torch.Tensor], stored: dict[str, torch.Tensor], path: Path) -> None:
    """ModelFolderError (one line) unless ``stored`` has exactly the keys and shapes of ``expected``."""
    missing = sorted(set(expected) - set(stored))
    extra = sorted(set(stored) - set(expected))
    wrong = sorted(k for k in set(expected) & set(stored) if tuple(expected[k].shape) != tuple(stored[k].shape))
    if missing or extra or wrong:
        described = sum(v.numel() for v in expected.values())
        held = sum(v.numel() for v in stored.values())
        detail = (f"{len(missing)} tensor(s) missing, first {missing[0]}" if missing else
                  f"{len(extra)} unexpected tensor(s), first {extra[0]}" if extra else
                  f"{wrong[0]} is {tuple(stored[wrong[0]].shape)}, config.json says {tuple(expected[wrong[0]].shape)}")
        raise ModelFolderError(f"{path.parent}/config.json describes {described:,} values but {path.name} holds "
                               f"{held:,} ({detail}): damaged or inconsistent model folder")


def check_image_tensor(images: torch.Tensor) -> None:
    """The tensor contract, checked once: a non-empty floating-point (B, 3, H, W) batch with values in [0, 1]."""
    if not images.is_floating_point():
        raise ValueError(f"expected a floating-point tensor in [0, 1], got dtype {images.dtype} (for uint8 images "
                         "in 0..255 use images.float() / 255)")
    if images.numel() == 0:
        raise ValueError(f"the image batch is empty: {tuple(images.shape)}")
    low, high = float(images.min()), float(images.max())
    if not (0.0 <= low and high <= 1.0):
        raise ValueError(f"tensor values must be in [0, 1], got [{low:.4g}, {high:.4g}] (values in 0..255: divide "
                         "by 255; NaN is never valid)")


def image_tower_from_config(config: Any, folder: Path) -> torch.nn.Module | None:
    """The image tower a ControlNet model folder describes (config.json "image_tower"), or None without one."""
    if config is None:
        return None
    from turbosr.models.ram_tower import TOWER_KEYS, RamTower

    if not isinstance(config, dict) or config.get("kind") != "ram":
        raise ModelFolderError(f"{folder}/config.json: 'image_tower' must be a mapping with kind 'ram'")
    settings = {k: v for k, v in config.items() if k != "kind"}
    unknown = sorted(set(settings) - set(TOWER_KEYS))
    if unknown:
        raise ModelFolderError(f"{folder}/config.json: unknown image_tower key(s) {', '.join(unknown)}")
    for key in ("image_size", "embed_dim", "window_size", "embed_width", "patch_size"):
        value = settings.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_WIDTH:
            raise ModelFolderError(f"{folder}/config.json: image_tower.{key} {value!r} is not a plausible size")
    return RamTower(**settings)


def check_structure_size(structure: Any, folder: Path) -> None:
    """Refuse an absurd structure-encoder description (config.json "structure_encoder") before building it."""
    encoder = structure.get("encoder") if isinstance(structure, dict) else None
    if not isinstance(encoder, dict):
        raise ModelFolderError(f"{folder}/config.json: 'structure_encoder' must hold an 'encoder' mapping")
    for key in ("in_channels", "model_channels", "out_channels", "num_res_blocks"):
        value = encoder.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_WIDTH:
            raise ModelFolderError(f"{folder}/config.json: structure_encoder.encoder.{key} {value!r} is not a "
                                   "plausible network size")
    mult = encoder.get("channel_mult")
    if not isinstance(mult, list) or not 1 <= len(mult) <= MAX_LEVELS or not all(
            isinstance(m, int) and 1 <= m * encoder["model_channels"] <= MAX_WIDTH for m in mult):
        raise ModelFolderError(f"{folder}/config.json: structure_encoder.encoder.channel_mult {mult!r} is not "
                               "a plausible network size")


def _pad_to_multiple(images: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad bottom/right to a multiple of ``multiple`` (reflect where possible, else replicate)."""
    height, width = images.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h == 0 and pad_w == 0:
        return images
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(images, (0, pad_w, 0, pad_h), mode=mode)
