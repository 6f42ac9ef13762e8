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

from turbosr.colorfix import COLOR_FIXES
from turbosr.config import ModelConfig
from turbosr.degradations import imresize, upsample_lq
from turbosr.diffusion import Sampler, Window, keyed_noise, make_alpha_bar, noise_seed
from turbosr.image import from_model_range, pil_to_tensor, tensor_to_pil, to_model_range, upscale_alpha
from turbosr.model_folder import FolderParts, ModelFolderError, read_folder, write_folder
from turbosr.models.autoencoders import (
    Autoencoder,
    PatchAutoencoder,
)
from turbosr.models.denoiser import Denoiser
from turbosr.models.ram_tagger import Tagger
from turbosr.models.stablesr import FidelityWarp
from turbosr.tiling import AGGREGATIONS, Tile, tiled_map

logger = logging.getLogger(__name__)

DEFAULT_TILE = 512
DEFAULT_TILE_OVERLAP = 64


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
                 default_fidelity: float = 0.0, default_steps: int = 1, default_color_fix: str = "none",
                 aggregation: str = "gaussian", tagger: Tagger | None = None, min_side: int = 0) -> None:
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
        if self.sampler.guidance != 1.0 and getattr(denoiser, "negative_embedding", None) is None:
            raise ValueError("the sampler's classifier-free guidance needs the denoiser's negative prompt embedding")
        self.alpha_bar = make_alpha_bar(config.schedule)
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        # how the denoiser's overlapping latent tiles are blended (tiling.AGGREGATIONS): "gaussian" (turbosr's,
        # the default: docs/benchmarks/tiling_seams.md), "stablesr" (StableSR's released weights) or "uniform"
        if aggregation not in AGGREGATIONS or aggregation == "crop":
            raise ValueError(f"aggregation must be one of gaussian, stablesr, uniform, got {aggregation!r}")
        self.aggregation = aggregation
        # RAM's tagger with the release's prompt template and text encoder (``tags=True``), or None
        if tagger is not None and getattr(denoiser.released_control, "tower", None) is None:
            raise ValueError("a tagger reads the image tower's tokens: this model has no image tower")
        self.tagger = tagger
        # outputs whose shorter side would be below min_side (output pixels) are made at that size from a
        # bicubic-enlarged input and resized back (the AddSR and SeeSR scripts' process_size: 512); 0 = never
        if isinstance(min_side, bool) or not isinstance(min_side, int) or not 0 <= min_side <= 16384:
            raise ValueError(f"min_side must be an integer number of output pixels in [0, 16384], got {min_side!r}")
        self.min_side = min_side

    def replace(self, **changes: Any) -> SRPipeline:
        """A pipeline sharing this one's networks, with some of ``denoiser``, ``autoencoder``, ``config``,
        ``fidelity_warp``, ``sampler``, the defaults and ``aggregation`` replaced (what training set-up does to a loaded
        model)."""
        parts = {"denoiser": self.denoiser, "autoencoder": self.autoencoder, "config": self.config,
                 "fidelity_warp": self.fidelity_warp, "sampler": self.sampler,
                 "default_fidelity": self.default_fidelity, "default_steps": self.default_steps,
                 "default_color_fix": self.default_color_fix, "aggregation": self.aggregation,
                 "tagger": self.tagger, "min_side": self.min_side}
        unknown = sorted(set(changes) - set(parts))
        if unknown:
            raise TypeError(f"SRPipeline.replace: unknown part(s) {', '.join(unknown)}")
        return SRPipeline(**{**parts, **changes})

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
        """Write this model as a folder (:func:`turbosr.model_folder.write_folder`): config.json + safetensors;
        ``storage`` "float32", "float16" or "int8" for the denoiser, ``max_shard_bytes`` to shard it."""
        parts = FolderParts(self.denoiser, self.autoencoder, self.config, self.fidelity_warp, self.sampler,
                            self.default_fidelity, self.default_steps, self.default_color_fix, self.aggregation,
                            self.tagger, self.min_side)
        return write_folder(parts, folder, storage, max_shard_bytes)

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None) -> SRPipeline:
        """Load a model folder (:func:`turbosr.model_folder.read_folder`: safetensors only, nothing downloaded;
        a folder that is not a turbosr model, is damaged, or describes networks it does not hold raises
        ValueError or FileNotFoundError in one line naming the folder)."""
        parts = read_folder(folder)
        try:
            pipeline = cls(parts.denoiser, parts.autoencoder, parts.config, parts.fidelity_warp, parts.sampler,
                           parts.default_fidelity, parts.default_steps, parts.default_color_fix, parts.aggregation,
                           parts.tagger, parts.min_side)
        except ValueError as error:
            raise ModelFolderError(f"{folder}: inconsistent model folder ({str(error).splitlines()[0]})") from None
        return pipeline.to(device, dtype)

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
        if self.tagger is not None:
            self.tagger.to(self.device, self.dtype)
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
        tags: bool = False,
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
            tags: prompt the networks with each image's RAM tags (models imported with a tagger: SeeSR, AddSR);
                False uses the model's fixed prompt.
        Returns: the same kind as ``images``, (h * scale, w * scale); a tensor keeps the input's device and dtype.
        """
        if isinstance(images, Image.Image):
            return self._call_pil(images, num_steps=num_steps, strength=strength, tile=tile,
                                  tile_overlap=tile_overlap, color_fix=color_fix, fidelity=fidelity,
                                  generator=generator, progress=progress, tags=tags)
        if not torch.is_tensor(images) or images.dim() != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
            raise ValueError(f"expected a PIL image or a (B, 3, H, W) tensor in [0, 1], got {shape}")
        check_image_tensor(images)
        with torch.inference_mode():
            output = self._upscale(images.to(self.device, self.dtype), self.steps(num_steps), strength, tile, tile_overlap,
                                   self.color_fix_for(color_fix), fidelity, generator, progress, tags)
        return output.to(images.device, images.dtype)

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
                         aggregation="crop" if exact else "gaussian")

    def denoise_latents(self, lq_latent: torch.Tensor, *, num_steps: int | None = None, strength: float = 1.0,
                        generator: torch.Generator | None = None, latent_tile: int | None = None,
                        latent_overlap: int = 0, progress: Callable[[int, int], None] | None = None,
                        seed: int | None = None, noise: list[torch.Tensor] | None = None,
                        lq_image: torch.Tensor | None = None, context: torch.Tensor | None = None) -> torch.Tensor:
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
        image of a ControlNet model (conditioning "controlnet"), read window by window; its image tokens are made
        once from the whole image (AddSR's self-refinement steps embed each window's blend). ``context`` (B, tokens, dim) replaces the
        model's stored prompt embedding (a per-image prompt: :meth:`tag_context`); the folder's
        ``sampler.guidance`` > 1 adds classifier-free guidance on its negative prompt.
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
        prompting: dict[str, Any] = {}  # the prompt and guidance arguments, passed only when used
        if sampler.guidance != 1.0:
            prompting["guidance"] = sampler.guidance
        if context is not None:
            prompting["context"] = context
        # the image tokens of the whole LQ image, made once (the releases embed the whole LR image once); only
        # AddSR's self-refinement steps embed each window's blend anew
        lq_tokens: list[torch.Tensor] = []

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
                    return denoiser(x_t, condition, t, control, first_step=False, **prompting)
                if not lq_tokens:
                    assert denoiser.released_control is not None
                    lq_tokens.append(denoiser.released_control.tokens(lq_image.to(x_t.dtype), first=True))
                return denoiser(x_t, condition, t, control, first_step=True, tokens=lq_tokens[0], **prompting)
            if sampler.kind == "renoise":  # AddSR PSR: the LQ latent first, then the blended last prediction
                control = condition if previous is None else (
                    sampler.psr_weight * denoiser.from_x0(previous, condition)
                    + (1 - sampler.psr_weight) * condition)
            return denoiser(x_t, condition, t, control, **prompting)

        def join(fn: Callable[[Window], torch.Tensor]) -> torch.Tensor:  # aggregation over latent tiles
            return tiled_map(lambda _, tile: fn((..., slice(tile.y0, tile.y1), slice(tile.x0, tile.x1))), lq_latent,
                             latent_tile or max(shape[-2:]), latent_overlap, aggregation=self.aggregation)

        timesteps = sampler.timesteps(self.steps(num_steps), self.config.schedule.num_train_timesteps, strength)
        on_step = (lambda i: progress(i, len(timesteps))) if progress else None
        return sampler.sample(denoise, draw, lambda w: denoiser.to_x0(lq_latent[w], lq_latent[w]), timesteps,
                              self.alpha_bar, self.config.prediction_type, on_step, join=join,
                              finish=lambda x0, w: denoiser.from_x0(x0, lq_latent[w]))

    def tag(self, images: torch.Tensor) -> list[str]:
        """RAM tags of each image (B, 3, H, W) in [0, 1], the whole image at once (as the releases tag the LR
        image): one ", "-joined string per image."""
        tagger, control = self.tagger, self.denoiser.released_control
        if tagger is None or control is None:
            raise ValueError("this model has no RAM tagger")
        with torch.inference_mode():
            return tagger.tags(control.tokens(images.to(self.device, self.dtype), first=True))

    def tag_context(self, images: torch.Tensor) -> torch.Tensor:
        """The text-encoder states of the release's prompt filled with each image's tags, (B, tokens, dim)."""
        assert self.tagger is not None
        prompts = [self.tagger.prompt(tags) for tags in self.tag(images)]
        for prompt in prompts:
            logger.info("prompt: %s", prompt)
        return self.tagger.embed(prompts, self.device, self.dtype)

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
                             out_scale=autoencoder.factor, aggregation="crop", rows=rows)
        return tiled_map(decode_tile, hq_latent, latent_tile, latent_overlap, out_scale=autoencoder.factor, rows=rows)

    def check_options(self, num_steps: int | None, strength: float, tile: int, tile_overlap: int,
                      color_fix: str | None, fidelity: float | None = None, tags: bool = False) -> None:
        """Raise ValueError with a clear message for options this model cannot use."""
        if tags and self.tagger is None:
            raise ValueError("this model has no RAM tagger: leave --tags out, or import it with --tag-data")
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
                 progress: Callable[[int, int], None] | None, tags: bool = False) -> torch.Tensor:
        self.check_options(num_steps, strength, tile, tile_overlap, color_fix, fidelity, tags)
        height, width = lq.shape[-2] * self.scale, lq.shape[-1] * self.scale
        if self.min_side and min(height, width) < self.min_side:
            # the releases' scripts: enlarge the LR so that its shorter side is process_size // scale (int()
            # truncating the other side), run, and resize the result to the asked-for size
            factor = (self.min_side // self.scale) / min(lq.shape[-2:])
            enlarged = imresize(lq, size=(int(factor * lq.shape[-2]), int(factor * lq.shape[-1]))).clamp(0, 1)
            output = self._upscale_checked(enlarged, num_steps, strength, tile, tile_overlap, color_fix, fidelity,
                                           generator, progress, tags)
            return imresize(output, size=(height, width)).clamp(0, 1)
        return self._upscale_checked(lq, num_steps, strength, tile, tile_overlap, color_fix, fidelity, generator,
                                     progress, tags)

    def _upscale_checked(self, lq: torch.Tensor, num_steps: int, strength: float, tile: int, tile_overlap: int,
                         color_fix: str, fidelity: float | None, generator: torch.Generator | None,
                         progress: Callable[[int, int], None] | None, tags: bool) -> torch.Tensor:
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
                                         lq_image=padded if needs_image else None,
                                         context=self.tag_context(padded[..., :height, :width]) if tags else None)
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


def _pad_to_multiple(images: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad bottom/right to a multiple of ``multiple`` (reflect where possible, else replicate)."""
    height, width = images.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h == 0 and pad_w == 0:
        return images
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(images, (0, pad_w, 0, pad_h), mode=mode)
