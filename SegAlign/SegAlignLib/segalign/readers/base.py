"""What a reader is: the :class:`Reader` protocol, the :class:`Reading` it returns, and the label check all share.

A reader is a module of this package (:mod:`.nifti`, :mod:`.nrrd`, :mod:`.dicom_seg`, :mod:`.metaimage`) that
provides what :class:`Reader` lists: its :data:`NAME`, :func:`matches` (is this file my kind?) and :func:`read`
(the file's labels, placed). The registry (:mod:`.registry`) asks each in turn and completes the one
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
    """A segmentation file format: each reader module of this package provides these three names."""

    #: What the format is called where the readers are told apart: "nifti", "nrrd" (label maps and Slicer's
    #: ``.seg.nrrd``), "metaimage", "dicom". The Slicer module installs each format's dependencies by this name.
    NAME: str

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
