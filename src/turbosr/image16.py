"""16-bit PNG and TIFF files, which PIL reads as 8-bit (RGB) or cannot write: through pypng and tifffile.

Only :mod:`turbosr.image` uses this module. Arrays here are (H, W, C) uint16; tensors (1, C, H, W) float32 in
[0, 1] with 65535 as 1.0.
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


def deep_format(path: Path) -> str | None:
    """"png" or "tiff" when the file stores 16 bits per sample (where PIL would lose precision), else None."""
    with open(path, "rb") as file:
        head = file.read(33)
    if head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR":
        return "png" if head[24] == 16 else None
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        import tifffile

        with tifffile.TiffFile(path) as tiff:
            page = tiff.pages[0]
            return "tiff" if page.bitspersample == 16 and page.samplesperpixel >= 3 else None
    return None


def read_deep(path: Path, kind: str) -> tuple[np.ndarray, bool]:
    """(H, W, C) uint16 samples of a 16-bit PNG (grey, grey+alpha, RGB, RGBA) or TIFF, and whether the last
    channel is alpha."""
    if kind == "png":
        import png

        width, height, rows, info = png.Reader(filename=str(path)).asDirect()
        planes = info["planes"]
        array = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows]).reshape(height, width, planes)
        return array, bool(info["alpha"])
    import tifffile

    array = np.asarray(tifffile.imread(path))
    if array.ndim == 2:
        array = array[:, :, None]
    return array.astype(np.uint16), array.shape[-1] in (2, 4)


def to_tensors(array: np.ndarray, has_alpha: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint16 (H, W, C) -> (rgb (1, 3, H, W), alpha (1, 1, H, W) or None), float32 in [0, 1]."""
    values = torch.from_numpy(array.astype(np.float32) / 65535.0).permute(2, 0, 1).unsqueeze(0)
    colour = values[:, :-1] if has_alpha else values
    rgb = colour.expand(-1, 3, -1, -1).contiguous() if colour.shape[1] == 1 else colour[:, :3].contiguous()
    return rgb, (values[:, -1:].contiguous() if has_alpha else None)


def _samples(rgb: torch.Tensor, alpha: torch.Tensor | None) -> np.ndarray:
    planes = rgb if alpha is None else torch.cat([rgb, alpha.to(rgb)], dim=1)
    values = planes.detach().float().clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()
    return np.round(values * 65535.0).astype(np.uint16)


def _chunk(kind: bytes, data: bytes) -> bytes:
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
        extra += _chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc_profile))
    if exif:
        extra += _chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif)
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
