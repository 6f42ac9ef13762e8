"""Large images in memory flat in their size: from the input file to the output file in strips.

Memory of the in-memory path grows with the output (the bicubic-upsampled input, its padded copy, the decoded
image and the encoder's copies are each output-sized). Here only the LQ image (1/scale^2 of the output) and the
latents (1/factor^2 of it, a few of them) are held whole:

1. the condition latent is encoded tile by tile from bicubic upsamplings of just that tile's window
   (:class:`RegionUpsampler`, the same numbers as upsampling the whole image; the patch encoder is per patch);
2. the denoiser runs on the latent as always (aggregation sampling over latent tiles, position-keyed noise): each
   tile draws its noise, runs the network and the update rule and blends its result into one accumulator, so the
   whole-latent tensors are the condition, that accumulator (and, from the second step, the current x_t);
3. the latent is decoded one row of tiles at a time (exact halo tiling) and each row of output pixels is written
   to the file at once (PNG rows, TIFF tiles: :func:`turbosr.image_files.save_image_strips`), then dropped.

The result equals the in-memory path's (a test checks it bit for bit). Colour correction needs the whole image
and JPEG/WebP encoders take it whole, so those keep the in-memory path, up to :data:`MAX_WHOLE_PIXELS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from turbosr.degradations import resize_weights
from turbosr.image import to_model_range
from turbosr.image_files import SAVE_FORMATS, STRIP_FORMATS, LoadedImage, save_image, save_image_strips
from turbosr.models.autoencoders import PatchAutoencoder
from turbosr.tiling import plan_cores

if TYPE_CHECKING:
    from turbosr.pipeline import SRPipeline

STREAM_PIXELS = 4096 * 4096  # outputs larger than this are streamed (where the format and options allow)
MAX_WHOLE_PIXELS = 8192 * 8192  # the largest output made in memory (JPEG/WebP, colour fix, older CFW modules)


class RegionUpsampler:
    """MATLAB-bicubic x``scale`` of any window of an LQ image (1, C, h, w), padded at the bottom/right to
    (height, width) as the pipeline pads (reflect, or replicate when the pad exceeds the image): each output
    pixel is computed from the same LQ pixels with the same weights, in the same order, as
    :func:`turbosr.degradations.upsample_lq` of the whole image, so windows agree with it exactly."""

    def __init__(self, lq: torch.Tensor, scale: int, height: int, width: int) -> None:
        self.lq, self.scale = lq, scale
        in_h, in_w = lq.shape[-2:]
        out_h, out_w = in_h * scale, in_w * scale
        mode = "reflect" if height - out_h < out_h and width - out_w < out_w else "replicate"
        self.rows = self._axis(in_h, out_h, height, mode)
        self.cols = self._axis(in_w, out_w, width, mode)

    def _axis(self, in_length: int, out_length: int, padded: int, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
        indices, weights = resize_weights(in_length, out_length, float(self.scale))
        position = torch.arange(padded)
        if mode == "reflect":  # F.pad reflect: out_length + k -> out_length - 2 - k
            source = torch.where(position < out_length, position, 2 * (out_length - 1) - position)
        else:
            source = position.clamp(max=out_length - 1)
        return indices[source], weights[source]

    def region(self, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
        """The padded upsampled image's window [y0, y1) x [x0, x1), (1, C, y1 - y0, x1 - x0), in [0, 1]."""
        row_index, row_weight = self.rows[0][y0:y1], self.rows[1][y0:y1]
        col_index, col_weight = self.cols[0][x0:x1], self.cols[1][x0:x1]
        needed = torch.unique(col_index)  # the LQ columns this window reads, and where each sits among them
        local = torch.searchsorted(needed, col_index)
        lq = self.lq[..., needed.to(self.lq.device)].movedim(-2, -1)  # (1, C, w', h): height axis last
        weights = row_weight.to(lq)
        column = lq[..., row_index[:, 0]] * weights[:, 0]
        for tap in range(1, row_index.shape[1]):
            column.addcmul_(lq[..., row_index[:, tap]], weights[:, tap])
        column = column.movedim(-1, -2)  # (1, C, rows, w')
        weights = col_weight.to(column)
        result = column[..., local[:, 0]] * weights[:, 0]
        for tap in range(1, local.shape[1]):
            result.addcmul_(column[..., local[:, tap]], weights[:, tap])
        return result.clamp_(0, 1)


def upscale_strips(pipeline: SRPipeline, lq: torch.Tensor, *, num_steps: int | None = None, strength: float = 1.0,
                   tile: int = 512, tile_overlap: int = 64, fidelity: float | None = None,
                   generator: torch.Generator | None = None, progress: Callable[[int, int], None] | None = None
                   ) -> Iterator[torch.Tensor]:
    """The upscaled image of ``lq`` (1, 3, h, w) in [0, 1] as horizontal strips (1, 3, rows, w * scale), top to
    bottom, each computed when asked for; memory holds the LQ image, the latents and one strip."""
    pipeline.check_options(num_steps, strength, tile, tile_overlap, "none", fidelity)
    fidelity = pipeline.fidelity_weight(fidelity)
    if fidelity and pipeline.fidelity_warp is not None:
        raise ValueError("this model's CFW module works on whole images: leave --fidelity out for an image this "
                         "large, or use a model with a learned decoder")
    autoencoder, scale = pipeline.autoencoder, pipeline.scale
    if not isinstance(autoencoder, PatchAutoencoder):
        raise ValueError("streaming needs a patch latent (a KL autoencoder decodes with blended tiles)")
    factor, multiple = autoencoder.factor, pipeline.pixel_multiple
    lq = lq.to(pipeline.device, pipeline.dtype)
    height, width = lq.shape[-2] * scale, lq.shape[-1] * scale
    padded_h, padded_w = -(-height // multiple) * multiple, -(-width // multiple) * multiple
    upsampler = RegionUpsampler(lq, scale, padded_h, padded_w)
    latent_h, latent_w, latent_tile = padded_h // factor, padded_w // factor, tile // factor
    with torch.inference_mode():
        # 1. the condition latent, tile by tile from upsampled windows (the encoder is per patch: exact)
        lq_latent = torch.empty(1, autoencoder.latent_channels, latent_h, latent_w, device=lq.device, dtype=lq.dtype)
        for core, _ in plan_cores(latent_h, latent_w, latent_tile, 0):
            window = upsampler.region(core.y0 * factor, core.y1 * factor, core.x0 * factor, core.x1 * factor)
            lq_latent[..., core.y0:core.y1, core.x0:core.x1] = autoencoder.encode(to_model_range(window))
        # 2. the diffusion model on the latent (aggregation sampling over latent tiles)
        hq_latent = pipeline.denoise_latents(lq_latent, num_steps=num_steps, strength=strength, generator=generator,
                                             latent_tile=latent_tile, latent_overlap=tile_overlap // factor,
                                             progress=progress)
    # 3. one row of latent tiles at a time: decoded exactly (halo tiling), cropped, handed on
    for top in range(0, latent_h, latent_tile):
        bottom = min(top + latent_tile, latent_h)
        rows = min(bottom * factor, height) - top * factor
        if rows <= 0:
            break
        with torch.inference_mode():
            band = pipeline.decode(hq_latent, lq_latent, fidelity, latent_tile, rows=(top, bottom))
        strip = band[..., :rows, :width]
        if not bool(torch.isfinite(strip).all()):
            raise ValueError("the model produced NaN or infinite values (its weights or its input are broken); "
                             "nothing was written")
        yield strip


def upscale_file(pipeline: SRPipeline, source: str | Path | LoadedImage, target: str | Path, *,
                 num_steps: int | None = None,
                 strength: float = 1.0, tile: int = 512, tile_overlap: int = 64, color_fix: str | None = None,
                 fidelity: float | None = None, generator: torch.Generator | None = None, overwrite: bool = False,
                 quality: int = 95, progress: Callable[[int, int], None] | None = None, tags: bool = False) -> Path:
    """Upscale an image file (``source``: its path, or what :func:`turbosr.image_files.load_image` read from it) into
    ``target`` (format from its suffix), atomically (``tags``: prompt with the image's RAM tags); alpha, ICC profile, EXIF and 16-bit depth carried over. The
    one file-to-file entry: the command line and the Python API use it. Outputs above :data:`STREAM_PIXELS` are streamed strip by strip (PNG, TIFF,
    no colour fix); others are made in memory, up to :data:`MAX_WHOLE_PIXELS` (a one-line error beyond)."""
    from turbosr.image import upscale_alpha
    from turbosr.image_files import load_image

    loaded = source if isinstance(source, LoadedImage) else load_image(source)
    target = Path(target)
    scale = pipeline.scale
    color_fix = pipeline.color_fix_for(color_fix)
    height, width = loaded.rgb.shape[-2] * scale, loaded.rgb.shape[-1] * scale
    fmt = SAVE_FORMATS.get(target.suffix.lower())
    image_cfw = bool(pipeline.fidelity_weight(fidelity)) and pipeline.fidelity_warp is not None
    streamable = fmt in STRIP_FORMATS and color_fix == "none" and not image_cfw and not tags
    if height * width > STREAM_PIXELS and streamable and isinstance(pipeline.autoencoder, PatchAutoencoder):
        strips = upscale_strips(pipeline, loaded.rgb, num_steps=num_steps, strength=strength, tile=tile,
                                tile_overlap=tile_overlap, fidelity=fidelity, generator=generator, progress=progress)
        alpha = RegionUpsampler(loaded.alpha, scale, height, width) if loaded.alpha is not None else None

        def with_alpha() -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
            done = 0
            for strip in strips:
                rows = strip.shape[-2]
                yield strip, alpha.region(done, done + rows, 0, width) if alpha is not None else None
                done += rows

        return save_image_strips(target, width, height, with_alpha(), has_alpha=alpha is not None,
                                 icc_profile=loaded.icc_profile, exif=loaded.exif, overwrite=overwrite,
                                 bit_depth=loaded.bit_depth)
    if height * width > MAX_WHOLE_PIXELS:
        why = f"{target.suffix} files are encoded whole" if fmt not in STRIP_FORMATS else \
            "colour correction and image-level CFW need the whole image"
        raise ValueError(f"a {width}x{height} output is too large to make in memory ({why}): write .png or .tif "
                         "without --color-fix")
    result = pipeline(loaded.rgb, num_steps=num_steps, strength=strength, tile=tile, tile_overlap=tile_overlap,
                      color_fix=color_fix, fidelity=fidelity, generator=generator, progress=progress, tags=tags)
    alpha_image = upscale_alpha(loaded.alpha, scale) if loaded.alpha is not None else None
    return save_image(result, target, alpha=alpha_image, icc_profile=loaded.icc_profile, exif=loaded.exif,
                      overwrite=overwrite, quality=quality, bit_depth=loaded.bit_depth)
