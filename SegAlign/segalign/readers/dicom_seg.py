"""DICOM Segmentations (BINARY, FRACTIONAL, LABELMAP) as label volumes, read with highdicom.

highdicom (extra ``segalign[dicom]``) reads the SEG and builds its volume from the frames' own plane positions
(``Segmentation.get_volume``): a label map on the SEG's grid with its affine in the frame of reference (LPS), which
is converted to RAS here. Segment numbers become label values; SegmentLabel and RecommendedDisplayCIELabValue give
names and colours. FRACTIONAL segments are thresholded at 0.5 (with a warning). A SEG whose frames do not form one
regular volume for highdicom is read frame by frame instead when its frames are parallel planes of one grid, one
after the other at a constant step (:func:`stacked_frames`): a SEG of a gantry-tilted series (the step is not along
the normal; the affine is sheared) or one whose empty frames were left out (the missing planes are empty). Any
other SEG is refused with the numbers; it is never resampled onto a guess.
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
        stacked = None
        if "regularly" in text.lower() and kind in ("BINARY", "LABELMAP"):  # not one regular volume for highdicom
            stacked = stacked_frames(dataset, kind, overlap, path)
        if stacked is not None:
            labels, lps = stacked
            volume = _Volume(labels, lps)
        elif "overlap" in text.lower():
            raise SegAlignError(
                f"{short_path(path)}: segments of the SEG overlap; pass overlap='later-wins' to give overlapping "
                "pixels to the higher segment number",
                cli_message=f"{short_path(path)}: segments of the SEG overlap; use --overlap later-wins to give "
                "overlapping pixels to the higher segment number",
            ) from None
        else:
            raise SegAlignError(
                f"{short_path(path)}: the SEG's frames do not form one volume that can be placed ({text})"
            ) from None
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


class _Volume:
    """What :func:`load_dicom_seg` takes from highdicom's volume: the array and its LPS affine."""

    def __init__(self, array: np.ndarray, affine: np.ndarray) -> None:
        self.array, self.affine = array, affine


#: Planes closer than this (mm) are one plane; positions off their line by more than this refuse the SEG.
PLANE_TOLERANCE = 1e-3


def stacked_frames(dataset: object, kind: str, overlap: Overlap, path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """A BINARY or LABELMAP SEG's frames as one label volume, read from each frame's own plane: ``(labels (slices,
    rows, columns) of segment numbers, LPS affine mapping (slice, row, column) indices)`` as highdicom's volumes are,
    when every frame has the same orientation, spacing and size and the distinct plane positions lie on one line
    at whole multiples of one step (planes the SEG leaves out, because they were empty, are empty). A SEG whose
    frames are not so is refused, naming the first frame that is not."""
    frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
    shared = _first(getattr(dataset, "SharedFunctionalGroupsSequence", None))
    per_frame = list(getattr(dataset, "PerFrameFunctionalGroupsSequence", []) or [])
    if len(per_frame) != frames:
        return None

    def attribute(groups: object, sequence: str, keyword: str) -> tuple[float, ...] | None:
        for source in (groups, shared):
            item = _first(getattr(source, sequence, None)) if source is not None else None
            if item is not None and keyword in item:
                return tuple(float(v) for v in item[keyword].value)
        return None

    where = short_path(path)
    positions, segments = [], []
    orientation = attribute(per_frame[0], "PlaneOrientationSequence", "ImageOrientationPatient")
    spacing = attribute(per_frame[0], "PixelMeasuresSequence", "PixelSpacing")
    if orientation is None or spacing is None or len(orientation) != 6 or len(spacing) != 2:
        return None
    for index, groups in enumerate(per_frame):
        position = attribute(groups, "PlanePositionSequence", "ImagePositionPatient")
        if position is None or len(position) != 3:
            raise SegAlignError(f"{where}: frame {index + 1} of the SEG has no plane position, so it cannot be placed")
        if not np.allclose(attribute(groups, "PlaneOrientationSequence", "ImageOrientationPatient") or (), orientation,
                           atol=1e-6) or attribute(groups, "PixelMeasuresSequence", "PixelSpacing") != spacing:
            raise SegAlignError(f"{where}: frame {index + 1} of the SEG lies in another orientation or spacing than "
                                "frame 1, so its frames do not form one volume")
        positions.append(position)
        if kind == "BINARY":
            identification = _first(getattr(groups, "SegmentIdentificationSequence", None))
            if identification is None or "ReferencedSegmentNumber" not in identification:
                raise SegAlignError(f"{where}: frame {index + 1} of the BINARY SEG names no segment")
            segments.append(int(identification.ReferencedSegmentNumber))
    points = np.array(positions, dtype=float)
    row_direction, column_direction = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(row_direction, column_direction)
    distinct: list[np.ndarray] = []
    plane_of_frame = []
    for point in points:  # the distinct planes, in the order of their distance along the normal
        for number, known in enumerate(distinct):
            if np.linalg.norm(point - known) <= PLANE_TOLERANCE:
                plane_of_frame.append(number)
                break
        else:
            plane_of_frame.append(len(distinct))
            distinct.append(point)
    order = np.argsort([float(np.dot(p, normal)) for p in distinct], kind="stable")
    planes = np.array(distinct)[order]
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    if len(planes) == 1:
        step = normal * 1.0  # one plane: any step; a unit one along the normal
        index_of_plane = np.zeros(1, dtype=np.int64)
    else:
        steps = np.diff(planes, axis=0)
        step = steps[int(np.argmin(np.linalg.norm(steps, axis=1)))]
        along = (planes - planes[0]) @ step / float(step @ step)
        index_of_plane = np.round(along).astype(np.int64)
        off = np.linalg.norm(planes - (planes[0] + np.outer(index_of_plane, step)), axis=1)
        worst = int(np.argmax(off))
        if off[worst] > PLANE_TOLERANCE:
            raise SegAlignError(
                f"{where}: the SEG's planes are not evenly spaced on one line (the plane at "
                f"{_text(planes[worst])} mm is {off[worst]:.3g} mm from the nearest place a step of "
                f"{_text(step)} mm puts one), so its frames do not form one volume that can be placed"
            )
    slices = int(index_of_plane.max()) + 1
    if slices > 4 * frames + 16:
        raise SegAlignError(f"{where}: the SEG's {frames} frames would span {slices} planes; they are too far apart "
                            "to be one volume")
    with quiet_warnings():
        pixels = np.asarray(dataset.pixel_array)  # type: ignore[attr-defined]
    pixels = pixels.reshape(frames, int(dataset.Rows), int(dataset.Columns))  # type: ignore[attr-defined]
    labels = np.zeros((slices, pixels.shape[1], pixels.shape[2]), dtype=np.uint16)
    for index in range(frames):
        target = labels[index_of_plane[rank[plane_of_frame[index]]]]
        if kind == "BINARY":
            mask = pixels[index] != 0
            clash = mask & (target != 0) & (target != segments[index])
            if clash.any() and overlap == "error":
                raise SegAlignError(
                    f"{where}: segments of the SEG overlap; pass overlap='later-wins' to give overlapping pixels to "
                    "the higher segment number",
                    cli_message=f"{where}: segments of the SEG overlap; use --overlap later-wins to give overlapping "
                    "pixels to the higher segment number",
                )
            target[mask] = np.maximum(target[mask], segments[index])
        else:
            target[...] = np.where(pixels[index] != 0, pixels[index], target)
    dr, dc = spacing
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = step, column_direction * dr, row_direction * dc
    affine[:3, 3] = planes[0]
    return labels, affine


def _first(sequence: object) -> object:
    try:
        return sequence[0] if sequence else None  # type: ignore[index]
    except (IndexError, TypeError):
        return None


def _text(vector: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in vector) + ")"


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
