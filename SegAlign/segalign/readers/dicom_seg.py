"""DICOM Segmentations (BINARY, FRACTIONAL, LABELMAP) as label volumes, read with highdicom.

highdicom (extra ``segalign[dicom]``) reads the SEG and builds its volume from the frames' own plane positions
(``Segmentation.get_volume``): a label map on the SEG's grid with its affine in the frame of reference (LPS), which
is converted to RAS here. Segment numbers become label values; SegmentLabel and RecommendedDisplayCIELabValue give
names and colours. FRACTIONAL segments are thresholded at 0.5 (with a warning). A SEG whose frames do not form one
regular volume is refused with highdicom's reason; it is never resampled onto a guess.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import SegAlignError, describe, quiet_warnings, short, short_path
from ..labels import Label, default_color
from ..segmentation import Overlap

#: Segmentation Storage and Label Map Segmentation Storage.
SEG_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")
FRACTIONAL_THRESHOLD = 0.5


def load_dicom_seg(
    path: Path, overlap: Overlap
) -> tuple[np.ndarray, np.ndarray, dict[int, Label], list[str], str]:
    """A DICOM SEG: labels, RAS affine, label table, warnings, FrameOfReferenceUID."""
    try:
        import highdicom as hd
    except ImportError:
        raise SegAlignError("reading a DICOM SEG needs highdicom: pip install 'segalign[dicom]'") from None
    import pydicom

    try:
        with quiet_warnings():
            dataset = pydicom.dcmread(str(path))
    except Exception as error:
        raise SegAlignError(f"segmentation {short_path(path)} is not a readable DICOM file: {describe(error)}") from None
    sop_class = str(dataset.get("SOPClassUID", ""))
    if sop_class not in SEG_SOP_CLASSES:
        modality = dataset.get("Modality", "?")
        raise SegAlignError(
            f"{short_path(path)} is a DICOM {short(modality, 16)} object (SOPClassUID {short(sop_class, 64)}), not a "
            "segmentation; a DICOM series goes in DICOM_DIR"
        )
    frame_of_reference = str(dataset.get("FrameOfReferenceUID", "") or "")
    if not frame_of_reference:
        raise SegAlignError(f"{short_path(path)}: the DICOM SEG has no FrameOfReferenceUID, so it cannot be placed")
    try:
        with quiet_warnings():
            segmentation = hd.seg.Segmentation.from_dataset(dataset, copy=False)
    except Exception as error:
        raise SegAlignError(f"{short_path(path)}: highdicom cannot read this DICOM SEG: {describe(error)}") from None
    kind = str(segmentation.segmentation_type.value)
    numbers = [int(n) for n in segmentation.segment_numbers]
    if not numbers:
        raise SegAlignError(f"{short_path(path)}: the DICOM SEG has no segments")
    if max(numbers) > 65535:
        raise SegAlignError(f"{short_path(path)}: segment number {max(numbers)} exceeds 65535")
    warnings: list[str] = []
    try:
        with quiet_warnings():
            if kind == "FRACTIONAL":
                volume = segmentation.get_volume(combine_segments=False, rescale_fractional=True)
                labels = _threshold(volume.array, numbers, overlap, path)
                warnings.append(
                    f"{path.name} is a FRACTIONAL SEG: each segment is taken where its value is at least "
                    f"{FRACTIONAL_THRESHOLD}"
                )
            else:
                volume = segmentation.get_volume(
                    combine_segments=True, relabel=False, skip_overlap_checks=overlap == "later-wins",
                    dtype=np.uint16,
                )
                labels = np.asarray(volume.array)
    except SegAlignError:
        raise
    except Exception as error:
        text = describe(error)
        if "overlap" in text.lower():
            raise SegAlignError(
                f"{short_path(path)}: segments of the SEG overlap; pass overlap='later-wins' to give overlapping "
                "pixels to the higher segment number",
                cli_message=f"{short_path(path)}: segments of the SEG overlap; use --overlap later-wins to give "
                "overlapping pixels to the higher segment number",
            ) from None
        raise SegAlignError(f"{short_path(path)}: the SEG's frames do not form one volume that can be placed ({text})") from None
    labels = labels.astype(np.uint8 if max(numbers) <= 255 else np.uint16)
    if labels.ndim != 3:
        raise SegAlignError(f"{short_path(path)}: the SEG's volume has shape {labels.shape}, not 3D")
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(volume.affine, dtype=float)
    table = {}
    for number in numbers:
        description = segmentation.get_segment_description(number)
        name = str(description.segment_label or f"Segment_{number}")
        table[number] = Label(number, name, _color(description, number))
    return np.asfortranarray(labels), affine, table, warnings, frame_of_reference


def _threshold(array: np.ndarray, numbers: list[int], overlap: Overlap, path: Path) -> np.ndarray:
    """FRACTIONAL ``(slices, rows, columns, segments)`` values as one label map (segment number where >= 0.5)."""
    labels = np.zeros(array.shape[:3], dtype=np.uint16)
    for index, number in enumerate(numbers):
        mask = array[..., index] >= FRACTIONAL_THRESHOLD
        clash = mask & (labels != 0)
        if clash.any() and overlap == "error":
            raise SegAlignError(
                f"{short_path(path)}: segments {int(labels[clash].flat[0])} and {number} overlap after thresholding "
                "at 0.5; pass overlap='later-wins' to give the pixels to the higher segment number",
                cli_message=f"{short_path(path)}: segments {int(labels[clash].flat[0])} and {number} overlap after "
                "thresholding at 0.5; use --overlap later-wins to give the pixels to the higher segment number",
            )
        labels[mask] = number
    return labels


def _color(description: object, number: int) -> tuple[int, int, int]:
    lab = getattr(description, "RecommendedDisplayCIELabValue", None)
    if not lab:
        return default_color(number)
    try:
        import highdicom as hd

        return tuple(int(c) for c in hd.color.CIELabColor.from_dicom_value([int(v) for v in lab]).to_rgb(clip=True))  # type: ignore[return-value]
    except Exception:
        return default_color(number)
