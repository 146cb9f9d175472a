"""What a reader is: the :class:`Reader` protocol, the :class:`Reading` it returns, and the label check all share.

A reader is a module of this package (:mod:`.nifti`, :mod:`.nrrd`, :mod:`.dicom_seg`, :mod:`.metaimage`,
:mod:`.rtstruct`) that provides what :class:`Reader` lists: its :data:`NAME`, :func:`matches` (is this file my
kind?) and :func:`read` (the file's labels, placed). The registry (:mod:`.registry`) asks each in turn and completes the one
:class:`Reading` into a :class:`~segalign.segmentation.Segmentation` (label table, counts, plausibility), as
nibabel's ``loadsave`` asks each image class whether a file is its kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import SegAlignError
from ..segmentation import Label, Layer, Overlap


@dataclass
class Reading:
    """What a reader read from one file: the labels in patient space, and what the file itself says about them.

    ``labels[i, j, k]`` (uint8 or uint16) is the label of the voxel whose centre is ``affine @ (i, j, k, 1)`` in RAS
    millimetres. The registry adds the user's label table, counts the voxels and checks the volume is a label map.
    """

    labels: np.ndarray
    affine: np.ndarray
    #: Where the affine came from, as :attr:`Segmentation.affine_source <segalign.segmentation.Segmentation>`
    #: says it: "sform" or "qform" (NIfTI), "nrrd", "seg.nrrd", "metaimage", "dicom-seg".
    source: str
    label_table: dict[int, Label] = field(default_factory=dict)  #: the names and colours the file holds, if any
    warnings: list[str] = field(default_factory=list)
    frame_of_reference_uid: str | None = None  #: a DICOM SEG's FrameOfReferenceUID (other formats have none)
    #: Where the file's segments overlap (and overlaps are kept): the layers after ``labels`` (see
    #: :mod:`segalign.segmentation.layers`); a label value is in one layer only.
    more_layers: list[Layer] = field(default_factory=list)


class Reader(Protocol):
    """A segmentation file format: each reader module of this package provides these names.

    A format that has no pixel grid of its own (an RT Structure Set: contours in millimetres, each drawn on one
    image of a series) is placed on the DICOM series it was drawn on: its reader says :attr:`NEEDS_SERIES` and
    provides ``read_on_series(path, overlap, series, skip_unplaced_contours)`` (see :mod:`.rtstruct`), which the
    registry calls with the series it knows; its :func:`read`, without a series, refuses saying so."""

    #: What the format is called where the readers are told apart: "nifti", "nrrd" (label maps and Slicer's
    #: ``.seg.nrrd``), "metaimage", "dicom", "rtstruct". The Slicer module installs each format's dependencies by
    #: this name.
    NAME: str
    #: Whether the file is placed on a DICOM series the registry gives the reader (an RT Structure Set).
    NEEDS_SERIES: bool

    def matches(self, path: Path, head: bytes) -> bool:
        """Whether the file ``path`` is of this format. ``head`` is its first 352 bytes (decompressed if the file is
        gzip-compressed), or empty when they cannot be read. A reader may raise :class:`SegAlignError` for a file
        that is its kind but that it cannot take as it is (a NIfTI whose name does not say so)."""
        ...

    def read(self, path: Path, overlap: Overlap) -> Reading:
        """The file's labels. ``overlap`` decides what happens where segments overlap (formats with segments)."""
        ...


def integer_labels(data: np.ndarray, path: Path) -> np.ndarray:
    """The data as uint8 (largest value <= 255) or uint16, refusing anything that is not a label map."""
    if data.dtype.kind == "b":
        data = data.view(np.uint8)
    elif data.dtype.kind == "f":
        if not np.all(np.isfinite(data)):
            raise SegAlignError(f"{path}: contains NaN or infinite values; a label map holds integers")
        fractional = data != np.floor(data)
        if fractional.any():
            example = data[fractional].flat[0]
            raise SegAlignError(
                f"{path}: contains non-integer value {example:g}; a label map holds integers (is this an intensity "
                "image or a probability map rather than a segmentation?)"
            )
    elif data.dtype.kind not in "iu":
        raise SegAlignError(f"{path}: data type {data.dtype} is not a label map")
    if data.size == 0:
        raise SegAlignError(f"{path}: the volume is empty (shape {data.shape})")
    low, high = data.min(), data.max()
    if low < 0:
        raise SegAlignError(
            f"{path}: contains negative values (down to {low:g}), so it is not a label map (labels are 0..65535); "
            "it looks like an intensity image (CT in HU?) rather than its segmentation"
        )
    if high > 65535:
        raise SegAlignError(f"{path}: label {high:g} exceeds 65535")
    target = np.uint8 if high <= 255 else np.uint16
    order = "F" if data.flags.f_contiguous else "C"
    return data if data.dtype == target else data.astype(target, order=order)


#: The SOP class of an RT Structure Set (:mod:`.rtstruct` reads it; the DICOM SEG reader leaves it alone).
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"


def media_storage_sop_class(head: bytes) -> str | None:
    """The MediaStorageSOPClassUID (0002,0002) of a DICOM file's first bytes (file meta information, explicit VR
    little endian after ``DICM``), or None where they do not hold it."""
    offset = 132
    while offset + 8 <= len(head):
        group, element = int.from_bytes(head[offset:offset + 2], "little"), int.from_bytes(head[offset + 2:offset + 4],
                                                                                           "little")
        if group != 0x0002:
            return None
        vr = head[offset + 4:offset + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
            if offset + 12 > len(head):
                return None
            length, start = int.from_bytes(head[offset + 8:offset + 12], "little"), offset + 12
        else:
            length, start = int.from_bytes(head[offset + 6:offset + 8], "little"), offset + 8
        if element == 0x0002:
            if start + length > len(head):
                return None
            return head[start:start + length].rstrip(b"\x00 ").decode("ascii", errors="replace")
        offset = start + length
    return None
