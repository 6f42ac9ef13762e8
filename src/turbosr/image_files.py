"""Image files: reading every format turbosr accepts (EXIF orientation, ICC, CMYK, 16-bit, alpha, pixel
limits) into the tensor contract of :mod:`turbosr.image`, and writing results atomically (whole, or strip by
strip for PNG and TIFF)."""


from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from turbosr.checkpoint import temp_file_beside
from turbosr.image import array_to_tensor

logger = logging.getLogger(__name__)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
# image files turbosr does not read (animated or camera formats): listed so that a folder run says it skipped them
UNSUPPORTED_SUFFIXES = (".gif", ".heic", ".heif", ".avif", ".jxl", ".svg", ".ico", ".psd", ".dng", ".cr2", ".nef",
                        ".arw")
SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF",
                ".tiff": "TIFF"}
DEFAULT_MAX_PIXELS = 100_000_000


class ImageReadError(ValueError):
    """A file that cannot be read as an image (corrupt, truncated, unsupported, too large)."""


@dataclass
class LoadedImage:
    """An image file split into what the SR model sees and what is carried around it.

    ``rgb``: (1, 3, H, W) float32 in [0, 1] (16-bit sources keep their precision); ``alpha``: (1, 1, H, W) or
    None; ``icc_profile``: bytes or None; ``bit_depth``: 8 or 16; ``mode``/``format``: as PIL reported them
    ("RGB;16" / "PNG" or "TIFF" for 16-bit colour files, which are read by :mod:`turbosr.image16`).
    """

    rgb: torch.Tensor
    alpha: torch.Tensor | None
    icc_profile: bytes | None
    bit_depth: int
    mode: str
    format: str
    exif: bytes | None = None  # the EXIF block without its orientation (already applied to the pixels)




@contextlib.contextmanager
def _pixel_limit() -> Iterator[None]:
    """PIL's own bomb guard (89.5 M pixels by default: a warning, an error at twice that) off while a file is
    opened, so that ``max_pixels``, checked from the header right after opening and before any decoding, is the
    limit users meet, with our message."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _open_image(path: Path, max_pixels: int) -> tuple[Image.Image, str, bytes | None]:
    """Open and decode ``path`` with every guard (missing, directory, pixel limit read from the header before
    decoding, decompression bombs, corrupt data); EXIF orientation applied. Returns (image, format, ICC)."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise ImageReadError(f"{path} is a directory, not an image")
    try:
        with warnings.catch_warnings(), _pixel_limit():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
            if image.width * image.height > max_pixels:
                raise ImageReadError(f"{path}: {image.width}x{image.height} is more than {max_pixels} pixels "
                                     f"(raise the limit with max_pixels if you trust this file)")
            fmt = image.format or "unknown"
            icc = image.info.get("icc_profile")
            image = ImageOps.exif_transpose(image)
            image.load()
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageReadError(f"{path}: image too large ({error})") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not a supported image format") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(f"{path}: cannot decode image ({error})") from None
    return image, fmt, icc


def read_image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding the pixels (EXIF rotation not applied)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    from turbosr import image16

    try:
        if image16.deep_format(path) == "tiff":  # PIL cannot open some of these (float RGB): tifffile's header
            width, height, _, _ = image16.tiff_header(path)
            return width, height
    except Exception as error:  # noqa: BLE001  (a broken TIFF header is a bad file, said in one line)
        raise ImageReadError(f"{path}: cannot read image header ({_first_line(error)})") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return image.size
    except Image.DecompressionBombError:
        raise ImageReadError(f"{path}: image too large (its header announces more pixels than PIL accepts)") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not a supported image format") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(f"{path}: cannot read image header ({error})") from None


def read_rgb_uint8(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """An image file as a (3, H, W) uint8 RGB tensor (datasets and metrics: exact 8-bit values), with the
    same guards as :func:`load_image`."""
    image, _, _ = _open_image(Path(path), max_pixels)
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def load_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Read an image file: EXIF orientation applied; grey, palette, CMYK, 16-bit and alpha handled.

    16-bit PNG and TIFF files keep their 16 bits (PIL alone would read colour ones as 8-bit). Raises
    FileNotFoundError for a missing path and :class:`ImageReadError` (one line naming the file) for a
    directory, an unsupported or corrupt file, or more than ``max_pixels`` pixels (checked before decoding).
    """
    path = Path(path)
    if path.is_file():
        deep = _deep_image(path, max_pixels)
        if deep is not None:
            return deep
    image, fmt, icc = _open_image(path, max_pixels)
    exif = _exif_without_orientation(image)
    mode = image.mode
    alpha = None
    bit_depth = 8
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        bit_depth = 16
        rgb = array_to_tensor(np.clip(array, 0, 65535), 65535.0).expand(-1, 3, -1, -1).contiguous()
    elif mode == "F":
        array = np.asarray(image)
        if not np.isfinite(array).all():
            raise ImageReadError(f"{path}: float pixels that are NaN or infinite")
        rgb = array_to_tensor(np.clip(array, 0, 1), 1.0).expand(-1, 3, -1, -1).contiguous()
    else:
        if mode == "P":
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        elif mode == "CMYK":
            image = _cmyk_to_rgb(image, icc)
            icc = None  # the CMYK profile does not describe the converted pixels
        if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
            alpha = array_to_tensor(np.asarray(image.getchannel("A")), 255.0)
        rgb = array_to_tensor(np.asarray(image.convert("RGB")), 255.0)
    return LoadedImage(rgb=rgb, alpha=alpha, icc_profile=icc, bit_depth=bit_depth, mode=mode, format=fmt, exif=exif)


def _exif_without_orientation(image: Image.Image) -> bytes | None:
    exif = image.getexif()
    exif.pop(0x0112, None)  # orientation: already applied by exif_transpose
    return exif.tobytes() if len(exif) else None


# PIL's transpose for each EXIF orientation, as tensor operations on (..., H, W)
_ORIENT = {2: lambda x: x.flip(-1), 3: lambda x: x.rot90(2, (-2, -1)), 4: lambda x: x.flip(-2),
           5: lambda x: x.transpose(-2, -1), 6: lambda x: x.rot90(3, (-2, -1)),
           7: lambda x: x.transpose(-2, -1).rot90(2, (-2, -1)), 8: lambda x: x.rot90(1, (-2, -1))}


def _deep_image(path: Path, max_pixels: int) -> LoadedImage | None:
    """A 16-bit colour PNG or a deep TIFF (16-bit, float, planar, CMYK) read at full precision (None for every
    other file)."""
    from turbosr import image16

    kind: str | None = None
    try:
        kind = image16.deep_format(path)
        if kind is None:
            return None
        if kind == "tiff":  # PIL cannot open some of these (float RGB): the header through tifffile
            width, height, icc, orientation = image16.tiff_header(path)
            exif = Image.Exif()
            if orientation != 1:
                exif[0x0112] = orientation
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as header:  # header only: size, profile, EXIF
                    width, height = header.size
                    icc = header.info.get("icc_profile")
                    exif = header.getexif()
        if width * height > max_pixels:
            raise ImageReadError(f"{path}: {width}x{height} is more than {max_pixels} pixels "
                                 f"(raise the limit with max_pixels if you trust this file)")
        samples, has_alpha, bit_depth = image16.read_deep(path, kind)
        rgb, alpha = image16.to_tensors(samples, has_alpha)
    except ImageReadError:
        raise
    except image16.DeepImageError as error:
        raise ImageReadError(f"{path}: {error}") from None
    except Exception as error:  # noqa: BLE001  (any decoder failure is a bad file, said in one line)
        what = f"{kind.upper()} image" if kind else "image (damaged or truncated header)"
        raise ImageReadError(f"{path}: cannot decode {what} ({_first_line(error)})") from None
    orientation = exif.pop(0x0112, 1)
    if orientation in _ORIENT:
        rgb = _ORIENT[orientation](rgb).contiguous()
        alpha = _ORIENT[orientation](alpha).contiguous() if alpha is not None else None
    if kind == "tiff" and icc and icc[16:20] == b"CMYK":  # the ICC header's data colour space
        icc = None  # a CMYK profile does not describe the converted pixels
    return LoadedImage(rgb=rgb, alpha=alpha, icc_profile=icc, bit_depth=bit_depth, mode="RGB;16",
                       format=kind.upper(), exif=exif.tobytes() if len(exif) else None)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _cmyk_to_rgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    if icc:
        try:
            from PIL import ImageCms

            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except Exception:  # noqa: BLE001  (a broken embedded profile falls back to PIL's plain conversion)
            logger.warning("could not apply the embedded CMYK profile; using a plain conversion")
    return image.convert("RGB")


def save_image(image: torch.Tensor, path: str | Path, *, alpha: torch.Tensor | None = None,
               icc_profile: bytes | None = None, exif: bytes | None = None, overwrite: bool = False,
               quality: int = 95, bit_depth: int = 8) -> Path:
    """Write (1, 3, H, W) [0, 1] to ``path`` atomically (temp file + rename); format from the suffix.

    Refuses to replace an existing file unless ``overwrite``. ``alpha`` (1, 1, H, W) is attached where the
    format supports it (dropped with a warning for JPEG/BMP); the ICC profile and EXIF block are carried where
    the format has a place for them. ``bit_depth`` 16 writes 16-bit PNG or TIFF (:mod:`turbosr.image16`);
    other formats are 8-bit. ``quality`` applies to JPEG and WebP.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SAVE_FORMATS:
        raise ValueError(f"cannot save {path}: unknown image suffix; use one of {', '.join(SAVE_FORMATS)}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists (use --overwrite to replace it)")
    fmt = SAVE_FORMATS[suffix]
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    if bit_depth == 16 and fmt in ("PNG", "TIFF"):
        from turbosr import image16

        data = (image16.encode_png16(image, alpha, icc_profile, exif) if fmt == "PNG"
                else image16.encode_tiff16(image, alpha, icc_profile))
        return _write_atomically(path, data, overwrite)
    array = image.detach().float().clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()
    pil = Image.fromarray((array * 255).round().astype(np.uint8), mode="RGB")
    if alpha is not None:
        if fmt in ("JPEG", "BMP"):
            logger.warning("%s: %s has no alpha channel; transparency dropped", path, fmt)
        else:
            pil.putalpha(Image.fromarray((alpha.detach().float().clamp(0, 1)[0, 0].cpu().numpy() * 255)
                                         .round().astype(np.uint8), mode="L"))
    options: dict = {}
    if icc_profile:
        options["icc_profile"] = icc_profile
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = quality
    if exif and fmt in ("JPEG", "WEBP", "PNG", "TIFF"):
        options["exif"] = exif
    buffer = io.BytesIO()
    pil.save(buffer, format=fmt, **options)
    return _write_atomically(path, buffer.getvalue(), overwrite)


def _write_atomically(path: Path, data: bytes, overwrite: bool) -> Path:
    handle, temp = temp_file_beside(path)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        if path.exists() and not overwrite:  # created meanwhile by someone else: still never replace it
            raise FileExistsError(f"{path} exists (use --overwrite to replace it)")
        os.replace(temp, path)
    finally:
        Path(temp).unlink(missing_ok=True)
    return path


STRIP_FORMATS = ("PNG", "TIFF")  # formats save_image_strips writes without holding the whole image


class _InsertAfter:
    """A file wrapper that inserts ``extra`` bytes once ``offset`` bytes have been written (PNG: after IHDR)."""

    def __init__(self, file: Any, offset: int, extra: bytes) -> None:
        self.file, self.offset, self.extra, self.written = file, offset, extra, 0

    def write(self, data: bytes) -> None:
        if self.extra and self.written < self.offset <= self.written + len(data):
            cut = self.offset - self.written
            self.file.write(data[:cut] + self.extra + data[cut:])
            self.extra = b""
        else:
            self.file.write(data)
        self.written += len(data)


def save_image_strips(path: str | Path, width: int, height: int,
                      strips: Iterator[tuple[torch.Tensor, torch.Tensor | None]], *, has_alpha: bool = False,
                      icc_profile: bytes | None = None, exif: bytes | None = None, overwrite: bool = False,
                      bit_depth: int = 8) -> Path:
    """Write an image given as horizontal strips ((1, 3, h_i, W) [0, 1], alpha (1, 1, h_i, W) or None), top to
    bottom, as PNG (rows streamed through pypng) or TIFF (256-px tiles through tifffile): the whole image is never
    in memory. Written to a temporary name and renamed at the end, so a killed run leaves no partial file."""
    path = Path(path)
    fmt = SAVE_FORMATS.get(path.suffix.lower())
    if fmt not in STRIP_FORMATS:
        raise ValueError(f"{path}: strip-by-strip writing supports {', '.join(STRIP_FORMATS)}, not {path.suffix}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists (use --overwrite to replace it)")
    planes = 4 if has_alpha else 3
    maximum, dtype = (65535.0, np.uint16) if bit_depth == 16 else (255.0, np.uint8)

    def samples() -> Iterator[np.ndarray]:  # (h_i, W, planes) per strip, checked
        done = 0
        for rgb, alpha in strips:
            planes_tensor = rgb if not has_alpha else torch.cat([rgb, alpha.to(rgb)], dim=1)
            if planes_tensor.shape[-1] != width or planes_tensor.shape[1] != planes:
                raise ValueError(f"a strip of {tuple(planes_tensor.shape)} does not fit a {width}-wide image")
            array = planes_tensor.detach().float().clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()
            done += array.shape[0]
            yield np.round(array * maximum).astype(dtype)
        if done != height:
            raise ValueError(f"the strips gave {done} rows for a {height}-row image")

    handle, temp = temp_file_beside(path)
    try:
        if fmt == "PNG":
            import png

            from turbosr import image16

            extra = b""
            if icc_profile:
                extra += image16.png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc_profile))
            if exif:
                extra += image16.png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif)
            rows = (row.reshape(-1) for strip in samples() for row in strip)
            with os.fdopen(handle, "wb") as file:
                png.Writer(width, height, greyscale=False, alpha=has_alpha, bitdepth=bit_depth).write(
                    _InsertAfter(file, 8 + 8 + 13 + 4, extra), rows)
        else:
            import tifffile

            os.close(handle)
            side = 256
            tifffile.imwrite(temp, _tiles(samples(), width, side, planes, dtype), shape=(height, width, planes),
                             dtype=dtype, tile=(side, side), photometric="rgb", compression="zlib",
                             iccprofile=icc_profile, extrasamples=[2] if has_alpha else None)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists (use --overwrite to replace it)")
        os.replace(temp, path)
    finally:
        Path(temp).unlink(missing_ok=True)
    return path


def _tiles(strips: Iterator[np.ndarray], width: int, side: int, planes: int, dtype: Any) -> Iterator[np.ndarray]:
    """Row-major side x side tiles (edge tiles zero-padded) from strips of any height."""
    pending = np.zeros((0, width, planes), dtype)

    def row_of_tiles(rows: np.ndarray) -> Iterator[np.ndarray]:
        padded = np.zeros((side, -(-width // side) * side, planes), dtype)
        padded[: rows.shape[0], :width] = rows
        for left in range(0, width, side):
            yield padded[:, left:left + side]

    for strip in strips:
        pending = np.concatenate([pending, strip])
        while pending.shape[0] >= side:
            yield from row_of_tiles(pending[:side])
            pending = pending[side:]
    if pending.shape[0]:
        yield from row_of_tiles(pending)
