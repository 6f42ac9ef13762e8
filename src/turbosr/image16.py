"""16-bit PNG and deep TIFF files, which PIL reads as 8-bit (RGB), misreads or cannot write: through pypng and
tifffile.

Only :mod:`turbosr.image` uses this module. Read arrays are (H, W, C) float32 in [0, 1]; written samples are
uint16; tensors (1, C, H, W) float32 in [0, 1] with 65535 as 1.0. TIFFs read here: every TIFF that is not plain
8-bit (16-bit, float, planar = one plane per channel); photometric grey (black or white is zero), RGB and CMYK
(converted without a profile: R = (1 - C)(1 - K)), with or without an alpha channel; anything else, and float
pixels that are NaN or infinite, is refused with a one-line reason.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TIFF_SUFFIXES = (".tif", ".tiff")


class DeepImageError(ValueError):
    """A deep file this module will not read (its reason is the message)."""


def deep_format(path: Path) -> str | None:
    """"png" for a 16-bit PNG, "tiff" for a TIFF that is not plain 8-bit or that stores its channels as separate
    planes (PIL would lose precision or misread it), else None (PIL reads it)."""
    with open(path, "rb") as file:
        head = file.read(33)
    if head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR":
        return "png" if head[24] == 16 else None
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        import tifffile

        with tifffile.TiffFile(path) as tiff:
            page = tiff.pages[0]
            # 8-bit chunky unsigned, or 1-bit bilevel (PIL's mode "1"): PIL reads them
            plain = page.bitspersample in (1, 8) and page.planarconfig != 2 and page.sampleformat == 1
            deep_grey = page.bitspersample == 16 and page.samplesperpixel == 1 and page.photometric == 1
            return None if plain or deep_grey else "tiff"  # (PIL reads 16-bit grey exactly, as I;16)
    return None


def tiff_header(path: Path) -> tuple[int, int, bytes | None, int]:
    """(width, height, ICC profile or None, EXIF orientation) of a TIFF's first page, without decoding pixels."""
    import tifffile

    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages[0]
        icc = page.tags.get("InterColorProfile")
        orientation = page.tags.get("Orientation")
        return (int(page.imagewidth), int(page.imagelength), bytes(icc.value) if icc is not None else None,
                int(orientation.value) if orientation is not None else 1)


def read_deep(path: Path, kind: str) -> tuple[np.ndarray, bool, int]:
    """(H, W, C) float32 samples in [0, 1] of a 16-bit PNG (grey, grey+alpha, RGB, RGBA) or a deep TIFF, whether
    the last channel is alpha, and the bits per sample to write back (16 for deep sources)."""
    if kind == "png":
        import png

        width, height, rows, info = png.Reader(filename=str(path)).asDirect()
        planes = info["planes"]
        array = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows]).reshape(height, width, planes)
        return array.astype(np.float32) / 65535.0, bool(info["alpha"]), 16
    return _read_tiff(path)


def _read_tiff(path: Path) -> tuple[np.ndarray, bool, int]:
    import tifffile

    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages[0]
        samples = np.asarray(page.asarray())
        axes, photometric, bits = page.axes, int(page.photometric), int(page.bitspersample)
        sample_format, extra = int(page.sampleformat), len(page.extrasamples or ())
    if set(axes) - set("YXS"):
        raise DeepImageError(f"TIFF axes {axes!r} (several images or planes) are not supported")
    array = np.moveaxis(samples, axes.index("S"), -1) if "S" in axes else samples[:, :, None]
    if sample_format == 3:  # IEEE float: [0, 1] is the range
        if not np.isfinite(array).all():
            raise DeepImageError("float pixels that are NaN or infinite")
        values = np.clip(array.astype(np.float32), 0.0, 1.0)
    elif sample_format == 1 and bits in (8, 16):
        values = array.astype(np.float32) / float(2**bits - 1)
    else:
        raise DeepImageError(f"{bits}-bit {'signed ' if sample_format == 2 else ''}samples are not supported")
    colours = {0: 1, 1: 1, 2: 3, 5: 4}  # photometric: white-is-zero, black-is-zero, RGB, separated (CMYK)
    if photometric not in colours:
        raise DeepImageError(f"TIFF photometric interpretation {photometric} (e.g. YCbCr, Lab, palette) is "
                             "not supported; save it as RGB")
    channels = colours[photometric]
    if values.shape[-1] < channels:
        raise DeepImageError(f"{values.shape[-1]} channels for a photometric interpretation that needs {channels}")
    has_alpha = values.shape[-1] > channels and extra > 0
    alpha = values[..., channels:channels + 1] if has_alpha else None
    colour = values[..., :channels]
    if photometric == 0:
        colour = 1.0 - colour
    elif photometric == 5:  # CMYK without a profile: R = (1 - C)(1 - K), ...
        colour = (1.0 - colour[..., :3]) * (1.0 - colour[..., 3:4])
    return (np.concatenate([colour, alpha], axis=-1) if alpha is not None else colour), has_alpha, 16


def to_tensors(array: np.ndarray, has_alpha: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """float (H, W, C) in [0, 1] -> (rgb (1, 3, H, W), alpha (1, 1, H, W) or None), float32."""
    values = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)
    colour = values[:, :-1] if has_alpha else values
    rgb = colour.expand(-1, 3, -1, -1).contiguous() if colour.shape[1] == 1 else colour[:, :3].contiguous()
    return rgb, (values[:, -1:].contiguous() if has_alpha else None)


def _samples(rgb: torch.Tensor, alpha: torch.Tensor | None) -> np.ndarray:
    planes = rgb if alpha is None else torch.cat([rgb, alpha.to(rgb)], dim=1)
    values = planes.detach().float().clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()
    return np.round(values * 65535.0).astype(np.uint16)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png16(rgb: torch.Tensor, alpha: torch.Tensor | None, icc_profile: bytes | None = None,
                 exif: bytes | None = None) -> bytes:
    """A 16-bit RGB(A) PNG (pypng), with the ICC profile (iCCP) and EXIF (eXIf) chunks when given."""
    import png

    samples = _samples(rgb, alpha)
    height, width, planes = samples.shape
    buffer = io.BytesIO()
    png.Writer(width, height, bitdepth=16, greyscale=False, alpha=planes == 4).write(
        buffer, samples.reshape(height, width * planes))
    data = buffer.getvalue()
    extra = b""
    if icc_profile:  # iCCP: name, NUL, compression method 0, zlib stream; it must precede IDAT
        extra += png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc_profile))
    if exif:
        extra += png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif)
    end_of_header = 8 + 8 + 13 + 4  # signature + IHDR chunk (length, type, 13 bytes, CRC)
    return data[:end_of_header] + extra + data[end_of_header:]


def encode_tiff16(rgb: torch.Tensor, alpha: torch.Tensor | None, icc_profile: bytes | None = None) -> bytes:
    """A 16-bit RGB(A) TIFF (tifffile, deflate-compressed), with the ICC profile when given."""
    import tifffile

    samples = _samples(rgb, alpha)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, samples, photometric="rgb", compression="zlib", iccprofile=icc_profile,
                     extrasamples=[2] if alpha is not None else None)
    return buffer.getvalue()
