"""Where the frames of ``seg.dcm`` lie and what they derive from: slice positions along the normal and their ranks
(the dimension index), whether the series is one evenly spaced stack (then SpacingBetweenSlices is written), the
SliceThickness readers need, the shared functional groups, and each frame's own (its source frame, its plane, and
its orientation and pixel measures where frames differ), encoded as explicit VR little endian bytes.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from ..dicom import Frame
from .dicom_base import Encoder, dataset_item, ds
from .segment_codes import Code

#: Positions along the normal closer than this (mm) are one slice position; spacings that differ by less than
#: this are one spacing (SpacingBetweenSlices is written only for evenly spaced series).
POSITION_TOLERANCE_MM = 1e-3
SPACING_TOLERANCE_MM = 1e-2
PURPOSE_SOURCE_IMAGE = Code("121322", "DCM", "Source image for image processing operation")
DERIVATION_SEGMENTATION = Code("113076", "DCM", "Segmentation")

ENCODER = Encoder(implicit=False)  #: the SEG's transfer syntaxes are explicit VR little endian (or RLE of it)
_text, _sq = ENCODER.text, ENCODER.sq
_PURPOSE = _sq(0x0040, 0xA170, [ENCODER.code(PURPOSE_SOURCE_IMAGE)])
#: SpatialLocationsPreserved YES: every SEG frame lies on its source frame's pixel grid (readers index by it).
_SPATIAL_LOCATIONS_PRESERVED = _text(0x0028, 0x135A, b"CS", "YES")
_DERIVATION_CODE = _sq(0x0008, 0x9215, [ENCODER.code(DERIVATION_SEGMENTATION)])


def position_indices(positions: Iterable[float]) -> dict[int, int]:
    """Slice position (rounded to :data:`POSITION_TOLERANCE_MM` steps) -> its 1-based rank along the normal."""
    keys = sorted({round(p / POSITION_TOLERANCE_MM) for p in positions})
    return {key: rank for rank, key in enumerate(keys, start=1)}


def even_spacing(positions: list[float], frames: Sequence[Frame]) -> float | None:
    """The spacing between slice positions when the series is one evenly spaced stack of parallel frames (no
    repeated positions, one orientation); else None (SpacingBetweenSlices is then left out)."""
    if len({f.orientation for f in frames}) != 1 or len(positions) < 2:
        return None
    ordered = np.sort(np.array(positions))
    gaps = np.diff(ordered)
    if gaps.min() < POSITION_TOLERANCE_MM or gaps.max() - gaps.min() > SPACING_TOLERANCE_MM:
        return None
    return float(np.median(gaps))


def source_thickness(source: Dataset | None) -> float | None:
    """The source's SliceThickness (top level, or in its shared pixel measures), if it is a positive number."""
    if source is None:
        return None
    candidates = [source.get("SliceThickness")]
    with_groups = source.get("SharedFunctionalGroupsSequence")
    if with_groups:
        measures = with_groups[0].get("PixelMeasuresSequence")
        if measures:
            candidates.append(measures[0].get("SliceThickness"))
    for value in candidates:
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if np.isfinite(number) and number > 0:
            return number
    return None


def slice_thickness(
    source: Dataset | None, positions: list[float], frames: Sequence[Frame]
) -> tuple[float, str | None]:
    """SliceThickness for the pixel measures (Type 1C, which highdicom and dcmqi need): the source's, else the even
    spacing between slices, else the smallest gap between slice positions, else (one slice) the larger pixel
    spacing; with, for the last two, why (the user is warned), else None."""
    thickness = source_thickness(source)
    if thickness is not None:
        return thickness, None
    spacing = even_spacing(positions, frames)
    if spacing is not None:
        return spacing, None
    distinct = np.unique(np.round(np.array(positions) / POSITION_TOLERANCE_MM)) * POSITION_TOLERANCE_MM
    if distinct.size > 1:
        return float(np.diff(distinct).min()), "the smallest gap between slice positions"
    return float(max(frames[0].pixel_spacing)), "one slice: the larger pixel spacing"


def shared_groups(
    first: Frame, shared_orientation: bool, shared_spacing: bool, thickness: float, spacing: float | None
) -> Dataset:
    """The shared functional groups: pixel measures (with the even ``spacing`` between slices, if any) and
    orientation, those of the ``first`` frame, where every frame agrees."""
    shared = Dataset()
    if shared_spacing:
        measures = dataset_item(PixelSpacing=[ds(v) for v in first.pixel_spacing], SliceThickness=ds(thickness))
        if spacing is not None:
            measures.SpacingBetweenSlices = ds(spacing)
        shared.PixelMeasuresSequence = DicomSequence([measures])
    if shared_orientation:
        shared.PlaneOrientationSequence = DicomSequence([
            dataset_item(ImageOrientationPatient=[ds(v) for v in first.orientation])
        ])
    return shared


def derivation(frame: Frame) -> bytes:
    """DerivationImageSequence: the frame's source instance (and frame number for a multi-frame source)."""
    source = ENCODER.frame_reference(frame) + _SPATIAL_LOCATIONS_PRESERVED + _PURPOSE
    return _sq(0x0008, 0x9124, [_sq(0x0008, 0x2112, [source]) + _DERIVATION_CODE])


def plane(frame: Frame, orientation: bool, spacing: bool, thickness: float) -> bytes:
    """PlanePositionSequence, and PlaneOrientation / PixelMeasures when they are not shared."""
    data = _sq(0x0020, 0x9113, [_text(0x0020, 0x0032, b"DS", "\\".join(ds(v) for v in frame.position))])
    if orientation:
        data += _sq(0x0020, 0x9116, [_text(0x0020, 0x0037, b"DS", "\\".join(ds(v) for v in frame.orientation))])
    if spacing:
        data += _sq(0x0028, 0x9110, [  # PixelMeasuresSequence: SliceThickness, PixelSpacing
            _text(0x0018, 0x0050, b"DS", ds(thickness))
            + _text(0x0028, 0x0030, b"DS", "\\".join(ds(v) for v in frame.pixel_spacing))
        ])
    return data
