"""The pixel data element of a file, read from its header bytes without reading the pixels.

``pydicom.dcmread(stop_before_pixels=True)`` stops right before a file's pixel data element and says nothing about
it. :func:`read_pixel_data_element` parses that element's own header (its tag, VR and length) from the stream
where dcmread stopped, in the file's transfer syntax, and measures how many bytes the file really holds after it;
:func:`segalign.dicom.headers.check_image_header` compares both with what Rows, Columns and NumberOfFrames
describe. Nothing else in SegAlign parses DICOM bytes itself.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

import pydicom

#: The elements a file's pixels may be stored in; dcmread(stop_before_pixels=True) stops at the first of them.
PIXEL_DATA_TAGS = {0x7FE00010: "PixelData", 0x7FE00008: "FloatPixelData", 0x7FE00009: "DoubleFloatPixelData"}
#: Explicit VRs whose length field has 4 bytes (after 2 reserved bytes).
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


@dataclass(frozen=True)
class PixelDataElement:
    """The pixel data element of a file as its header describes it, read without reading the pixels."""

    keyword: str  #: PixelData, FloatPixelData or DoubleFloatPixelData; empty when the file has none
    length: int | None  #: bytes its header announces; None: undefined length (encapsulated, compressed)
    available: int | None = None  #: bytes the file really holds after the element's header (None: not known)


#: The file has no pixel data element at all.
NO_PIXEL_DATA = PixelDataElement("", 0, 0)


def read_pixel_data_element(stream: BinaryIO, dataset: pydicom.Dataset) -> PixelDataElement | None:
    """The header of the pixel data element ``stream`` is positioned at (dcmread stops right before it), or
    :data:`NO_PIXEL_DATA`; None when it cannot be known without decompressing (deflated transfer syntax)."""
    syntax = getattr(dataset, "file_meta", {}).get("TransferSyntaxUID")
    try:
        deflated = syntax is not None and syntax.is_deflated
    except (AttributeError, ValueError):  # not one UID, or not a transfer syntax: pydicom read it as it could
        deflated = False
    if deflated:
        return None
    implicit, little = dataset.original_encoding
    if implicit is None or little is None:
        return None
    start = stream.tell()
    header = stream.read(8 if implicit else 12)
    if len(header) < 8:
        return NO_PIXEL_DATA
    order = "<" if little else ">"
    group, number = struct.unpack(order + "HH", header[:4])
    keyword = PIXEL_DATA_TAGS.get(group << 16 | number)
    if keyword is None:
        return NO_PIXEL_DATA
    if implicit:
        (length,) = struct.unpack(order + "L", header[4:8])
        size = 8
    elif header[4:6] in LONG_VRS and len(header) == 12:
        (length,) = struct.unpack(order + "L", header[8:12])
        size = 12
    else:
        (length,) = struct.unpack(order + "H", header[6:8])
        size = 8
    if length == 0xFFFFFFFF:
        return PixelDataElement(keyword, None)
    available = max(os.fstat(stream.fileno()).st_size - start - size, 0)
    return PixelDataElement(keyword, length, available)
