"""PNG files: a small, fast writer for label and mask images (grayscale 1, 8 or 16 bit), and :func:`write_png`,
which writes any image of the PNG folder (colour ones with Pillow).

Label images are long runs of a few values. Pillow's encoder tries every PNG row filter on every row, which costs
twice the compression itself and does not help such images; here every row uses filter 0 (None) and zlib's
run-length strategy, which is about twice as fast as Pillow at compress_level=1 and gives smaller files. The output
is standard PNG (read back by Pillow, pydicom users' tools, browsers); colour images are left to Pillow.

A documented seam: tests inject disk faults by patching :func:`write_gray` or :func:`write_png` here, so the PNG
folder writer calls ``png.write_png(...)`` module-qualified, and :func:`write_png` looks :func:`write_gray` up in
this module when it runs.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: zlib level for the RGB overlays (written by Pillow): a low level is much faster and nearly as small.
PNG_COMPRESS_LEVEL = 1


def encode_gray(pixels: np.ndarray) -> bytes:
    """PNG bytes of a 2D bool (1-bit), uint8 or uint16 array, row 0 at the top."""
    if pixels.ndim != 2:
        raise ValueError(f"expected a 2D image, got shape {pixels.shape}")
    height, width = pixels.shape
    if pixels.dtype == np.bool_:
        depth, rows = 1, np.packbits(pixels, axis=1)
    elif pixels.dtype == np.uint8:
        depth, rows = 8, pixels
    elif pixels.dtype == np.uint16:
        depth, rows = 16, pixels.astype(">u2").view(np.uint8).reshape(height, 2 * width)
    else:
        raise TypeError(f"cannot write {pixels.dtype} as a grayscale PNG")
    scanlines = np.zeros((height, rows.shape[1] + 1), dtype=np.uint8)  # column 0: filter type 0 for every row
    scanlines[:, 1:] = rows
    compressor = zlib.compressobj(1, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
    data = compressor.compress(scanlines) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, 0)  # grayscale, deflate, no interlace
    return _SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def write_gray(path: Path, pixels: np.ndarray) -> None:
    """Write :func:`encode_gray` of ``pixels`` to ``path``."""
    Path(path).write_bytes(encode_gray(pixels))


def write_png(path: Path, pixels: np.ndarray) -> None:
    """Write an array as a PNG exactly as laid out (row 0 at the top): bool as 1-bit, uint8, uint16 as 16-bit
    grayscale (with :func:`write_gray`, fast for label images), ``(rows, columns, 3)`` uint8 as RGB (Pillow)."""
    if pixels.ndim == 2 and pixels.dtype in (np.bool_, np.uint8, np.uint16):
        write_gray(path, pixels)
        return
    if pixels.dtype != np.uint8 or pixels.shape[2:] != (3,):
        raise TypeError(f"cannot write a {pixels.dtype} array of shape {pixels.shape} as a PNG")
    from PIL import Image  # imported here so the package imports without Pillow (Slicer installs it on first use)

    Image.fromarray(pixels).save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
