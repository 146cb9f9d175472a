"""The frames of one file, each with its own geometry: :func:`frames_of`, and the functional groups it reads.

An enhanced multi-frame file places each frame in its per-frame functional group, and what all frames share in
the shared one; a single-frame file at the top level. :func:`functional_value` looks an attribute up in that
order. Every position, orientation and spacing is checked before a :class:`~segalign.dicom.model.Frame` is made of
it: finite, of plausible size, two orthogonal unit vectors, positive spacing, or a :class:`SegAlignError` naming
the file, the frame and the attribute.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.multival import MultiValue

from ..errors import SegAlignError, quiet_warnings, short
from .headers import Header, check_image_header, with_mosaic_tags
from .model import Frame
from .mosaic import is_multi_slice, mosaic_tiles
from .values import optional_int, required_int, value_text


def frames_of(header: Header, path: Path) -> list[Frame]:
    """The frames of the file ``path`` whose header is ``header`` (:func:`segalign.dicom.headers.read_header`),
    each with its own geometry (functional groups for enhanced multi-frame files); a :class:`SegAlignError` naming
    the file and the attribute when the header cannot be trusted (:func:`check_image_header`) or a frame cannot
    be placed."""
    check_image_header(header, path)
    dataset = header.dataset
    rows = required_int(dataset, "Rows", path)
    columns = required_int(dataset, "Columns", path)
    sop_uid = str(dataset.get("SOPInstanceUID", "") or "").strip()
    if not sop_uid:
        meta = getattr(dataset, "file_meta", None)
        sop_uid = str(meta.get("MediaStorageSOPInstanceUID", "") or "").strip() if meta is not None else ""
    instance_number = optional_int(dataset.get("InstanceNumber"))
    with quiet_warnings():  # pydicom's warning about an invalid UI value: the SEG writer refuses such UIDs itself
        sop_class_uid = str(dataset.get("SOPClassUID", "") or "").strip()
        if not sop_class_uid:  # as for the instance UID: the file meta names it when the dataset does not
            meta = getattr(dataset, "file_meta", None)
            sop_class_uid = str(meta.get("MediaStorageSOPClassUID", "") or "").strip() if meta is not None else ""
        frame_of_reference_uid = str(dataset.get("FrameOfReferenceUID", "") or "").strip()
    number_of_frames = optional_int(dataset.get("NumberOfFrames")) or 1
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and len(per_frame) != number_of_frames:
        raise SegAlignError(
            f"{path}: PerFrameFunctionalGroupsSequence has {len(per_frame)} items for NumberOfFrames {number_of_frames}"
        )
    if number_of_frames > 1 and per_frame is None:
        raise SegAlignError(
            f"{path}: {number_of_frames} frames but no PerFrameFunctionalGroupsSequence, so the frames' positions are "
            "unknown (legacy multi-frame); convert it to enhanced or single-frame DICOM"
        )
    tiles = mosaic_tiles(with_mosaic_tags(dataset, path), path) if is_multi_slice(dataset) else ()
    if tiles and number_of_frames > 1:
        raise SegAlignError(f"{path}: a mosaic with {number_of_frames} frames; SegAlign reads single-frame mosaics")
    frames = []
    for index in range(number_of_frames):
        groups = functional_groups(dataset, index)
        where = f"{path} frame {index + 1}" if number_of_frames > 1 else str(path)
        position = _functional(groups, dataset, "PlanePositionSequence", "ImagePositionPatient", 3, where)
        orientation = _functional(groups, dataset, "PlaneOrientationSequence", "ImageOrientationPatient", 6, where)
        spacing = _functional(groups, dataset, "PixelMeasuresSequence", "PixelSpacing", 2, where)
        frames.append(
            Frame(
                source_file=path,
                frame_number=index + 1,
                sop_instance_uid=sop_uid,
                instance_number=instance_number,
                position=tuple(position),  # type: ignore[arg-type]
                orientation=_unit_cosines(orientation, where),
                pixel_spacing=_positive_spacing(spacing, where),
                rows=rows,
                columns=columns,
                number_of_frames=number_of_frames,
                tiles=tiles,
                sop_class_uid=sop_class_uid,
                frame_of_reference_uid=frame_of_reference_uid,
            )
        )
    return frames


def functional_groups(dataset: pydicom.Dataset, index: int) -> list[pydicom.Dataset]:
    """The functional groups that describe frame ``index`` (0-based) of a file: its per-frame item, then the
    shared one (either may be absent)."""
    groups = []
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and index < len(per_frame):
        groups.append(per_frame[index])
    shared = dataset.get("SharedFunctionalGroupsSequence")
    if shared:
        groups.append(shared[0])
    return groups


def functional_value(groups: list[pydicom.Dataset], dataset: pydicom.Dataset, sequence: str, keyword: str) -> Any:
    """An attribute from the first functional group macro ``sequence`` that has it, else from the top level."""
    for group in groups:
        items = group.get(sequence)
        if items and keyword in items[0]:
            return items[0].get(keyword)
    return dataset.get(keyword)


def _functional(
    groups: list[pydicom.Dataset], dataset: pydicom.Dataset, sequence: str, keyword: str, length: int, where: str
) -> list[float]:
    """:func:`functional_value` as ``length`` finite numbers, or a :class:`SegAlignError` naming frame and tag."""
    value = functional_value(groups, dataset, sequence, keyword)
    if value is None or value == "":
        raise SegAlignError(f"{where}: {keyword} is missing")
    try:
        numbers = [float(v) for v in (value if isinstance(value, (list, tuple, MultiValue)) else [value])]
    except (TypeError, ValueError, OverflowError):
        raise SegAlignError(f"{where}: {keyword} is not numeric: '{short(value_text(value))}'") from None
    if len(numbers) != length:
        raise SegAlignError(
            f"{where}: {keyword} must have {length} numbers, got {len(numbers)}: '{short(value_text(value))}'"
        )
    if not all(math.isfinite(number) and abs(number) <= MAX_COORDINATE_MM for number in numbers):
        raise SegAlignError(
            f"{where}: {keyword} must be finite numbers of at most {MAX_COORDINATE_MM:g} in magnitude, "
            f"got '{short(value_text(value))}'"
        )
    return numbers


#: No coordinate or spacing in a header may exceed this (mm, a kilometre): beyond it, arithmetic on positions
#: loses the precision of a pixel, or overflows.
MAX_COORDINATE_MM = 1e6
#: PixelSpacing must lie in this range (mm): a nanometre to ten metres.
SPACING_RANGE_MM = (1e-6, 1e4)


def _unit_cosines(orientation: list[float], where: str) -> tuple[float, float, float, float, float, float]:
    row = np.asarray(orientation[:3])
    column = np.asarray(orientation[3:])
    row_length, column_length = np.linalg.norm(row), np.linalg.norm(column)
    if abs(row_length - 1) > 1e-2 or abs(column_length - 1) > 1e-2 or abs(np.dot(row, column)) > 1e-2:
        raise SegAlignError(
            f"{where}: ImageOrientationPatient {short(value_text(orientation))} is not two orthogonal unit vectors"
        )
    return tuple(np.concatenate([row / row_length, column / column_length]).tolist())  # type: ignore[return-value]


def _positive_spacing(spacing: list[float], where: str) -> tuple[float, float]:
    low, high = SPACING_RANGE_MM
    if spacing[0] <= 0 or spacing[1] <= 0:
        raise SegAlignError(f"{where}: PixelSpacing {short(value_text(spacing))} must be positive")
    if not all(low <= value <= high for value in spacing):
        raise SegAlignError(f"{where}: PixelSpacing {short(value_text(spacing))} is outside {low:g} to {high:g} mm")
    return (spacing[0], spacing[1])
