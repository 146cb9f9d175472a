"""The DICOM reader: DICOM Segmentations (BINARY, FRACTIONAL, LABELMAP) as label volumes, read with highdicom.

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
from typing import Mapping

import numpy as np

from ..errors import SegAlignError, describe, quiet_warnings, short, short_path
from ..segmentation import Label, Layer, LayerPacker, Overlap, crop, default_color, label_dtype
from .base import RT_STRUCTURE_SET_STORAGE, Reading, media_storage_sop_class

NAME = "dicom"
NEEDS_SERIES = False  #: the file places itself
#: Segmentation Storage and Label Map Segmentation Storage.
SEG_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")
FRACTIONAL_THRESHOLD = 0.5


def matches(path: Path, head: bytes) -> bool:
    """Whether a file is DICOM (``DICM`` after the 128-byte preamble) but not an RT Structure Set (that is
    :mod:`.rtstruct`'s); :func:`read` refuses one that is not a SEG."""
    return head[128:132] == b"DICM" and media_storage_sop_class(head) != RT_STRUCTURE_SET_STORAGE


def read(path: Path, overlap: Overlap) -> Reading:
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
    names = {number: str(segmentation.get_segment_description(number).segment_label or f"Segment_{number}")
             for number in numbers}
    warnings: list[str] = []
    more: list[np.ndarray] = []  # with overlap "keep", the layers after the first
    try:
        with quiet_warnings():
            if kind == "FRACTIONAL":
                volume = segmentation.get_volume(combine_segments=False, rescale_fractional=True)
                labels, *more = _threshold(volume.array, numbers, overlap, path, names)
                lps = np.asarray(volume.affine, dtype=float)
                warnings.append(
                    f"{path.name} is a FRACTIONAL SEG: each segment is taken where its value is at least "
                    f"{FRACTIONAL_THRESHOLD}"
                )
            else:
                overlapping = False
                try:
                    volume = segmentation.get_volume(
                        combine_segments=True, relabel=False, skip_overlap_checks=overlap == "later-wins",
                        dtype=np.uint16,
                    )
                    labels = np.asarray(volume.array)
                except Exception as error:
                    if overlap == "later-wins" or "overlap" not in describe(error).lower():
                        raise
                    overlapping = True  # (the second read after this block: the error holds highdicom's cursor)
                if overlapping:  # one volume per segment: kept whole, packed in layers, or the overlap named
                    volume = segmentation.get_volume(combine_segments=False, dtype=np.uint8)
                    if overlap == "error":
                        raise _overlap_error(path, names, *first_overlap_of(np.asarray(volume.array), numbers))
                    labels, *more = _packed(np.asarray(volume.array), numbers)
                lps = np.asarray(volume.affine, dtype=float)
        omitted = omitted_sources(dataset)
        if omitted and labels.shape[0] > 1 and not spacing_between_slices(dataset):
            raise SegAlignError(_omitted_message(path, omitted))
    except SegAlignError:
        raise
    except Exception as error:
        text = describe(error)
        stacked = None
        if "regularly" in text.lower() and kind in ("BINARY", "LABELMAP"):  # not one regular volume for highdicom
            stacked = stacked_frames(dataset, kind, overlap, path, names)
        if stacked is not None:
            labels, lps, more = stacked
        elif "overlap" in text.lower():
            raise _overlap_error(path, names) from None
        else:
            raise SegAlignError(
                f"{short_path(path)}: the SEG's frames do not form one volume that can be placed ({text})"
            ) from None
    dtype = label_dtype(max(numbers))
    labels = labels.astype(dtype)
    if labels.ndim != 3:
        raise SegAlignError(f"{short_path(path)}: the SEG's volume has shape {labels.shape}, not 3D")
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    table = {number: Label(number, names[number], _color(segmentation.get_segment_description(number), number))
             for number in numbers}
    layers = [crop(Layer(np.asfortranarray(layer.astype(dtype)), affine)) for layer in more]
    return Reading(np.asfortranarray(labels), affine, "dicom-seg", table, warnings, frame_of_reference, layers)


#: Frames whose positions are closer than this (mm) lie in one plane.
PLANE_TOLERANCE = 1e-3
#: A plane farther than this (mm), or than 2 % of the step, from its place on the fitted line refuses the SEG
#: (positions written with two decimals err by up to 0.009 mm).
POSITION_TOLERANCE = 0.01


def stacked_frames(
    dataset: object, kind: str, overlap: Overlap, path: Path, names: Mapping[int, str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]] | None:
    """A BINARY or LABELMAP SEG's frames as one label volume, read from each frame's own plane: ``(labels (slices,
    rows, columns) of segment numbers, LPS affine mapping (slice, row, column) indices)`` as highdicom's volumes are,
    when every frame has the same orientation, spacing and size and the distinct plane positions lie on one line
    at whole multiples of one step, fitted to all of them. The step's component along the normal is the SEG's
    SpacingBetweenSlices when it gives one, so planes it leaves out (they were empty) are empty; a SEG that leaves
    out frames of its source images and gives no SpacingBetweenSlices is refused, since its empty planes cannot be
    placed. Any SEG whose frames are not so is refused, with the frame or plane and the numbers. ``names`` (segment
    number -> SegmentLabel) name the segments an ``overlap`` ``"error"`` refuses."""
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
    spacing_between = spacing_between_slices(dataset)
    omitted = omitted_sources(dataset)
    plane_index, origin, step = stack_planes(
        points, normal, where, "the SEG's", spacing_between,
        _omitted_message(path, omitted) if omitted and not spacing_between else None,
    )
    slices = int(plane_index.max()) + 1
    with quiet_warnings():
        pixels = np.asarray(dataset.pixel_array)  # type: ignore[attr-defined]
    pixels = pixels.reshape(frames, int(dataset.Rows), int(dataset.Columns))  # type: ignore[attr-defined]
    shape = (slices, pixels.shape[1], pixels.shape[2])
    labels = np.zeros(shape, dtype=np.uint16)
    overlapping = False
    for index in range(frames):
        target = labels[plane_index[index]]
        if kind == "BINARY":
            mask = pixels[index] != 0
            clash = mask & (target != 0) & (target != segments[index])
            if clash.any() and overlap == "error":
                other = int(target[clash].flat[0])
                raise _overlap_error(path, names or {}, other, segments[index],
                                     int(np.count_nonzero(clash & (target == other))))
            overlapping = overlapping or bool(clash.any())
            target[mask] = np.maximum(target[mask], segments[index])
        else:
            target[...] = np.where(pixels[index] != 0, pixels[index], target)
    more: list[np.ndarray] = []
    if overlapping and overlap == "keep":  # again, each segment whole in the first layer it fits
        numbers = sorted(set(int(s) for s in segments))
        masks = np.zeros((*shape, len(numbers)), dtype=bool)
        for index in range(frames):
            masks[plane_index[index], :, :, numbers.index(int(segments[index]))] |= pixels[index] != 0
        labels, *more = _packed(masks, numbers)
    dr, dc = spacing
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = step, column_direction * dr, row_direction * dc
    affine[:3, 3] = origin
    return labels, affine, more


def stack_planes(
    points: np.ndarray, normal: np.ndarray, where: str, whose: str, spacing_between: float | None = None,
    gaps_unknown: str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Plane positions (``(n, 3)`` LPS points, one per frame, in any order; frames closer than
    :data:`PLANE_TOLERANCE` lie in one plane) as planes of one stack: ``(index of each point's plane, origin,
    step)``, the position of plane ``k`` being ``origin + k * step`` (``step`` need not be along ``normal``: gantry
    tilt). The distinct planes must lie on one line at whole multiples of one step, fitted to all of them; the step's
    component along the normal is ``spacing_between`` when given (then planes between the given ones are empty
    planes of the stack), and the smallest step between the planes otherwise, unless ``gaps_unknown`` says why the
    planes in between cannot be placed (it is the refusal). Anything else is refused, ``where`` and ``whose``
    ("the SEG's") naming the planes in the messages; so is a stack that would span far more planes than it has."""
    distinct: list[np.ndarray] = []
    plane_of_point = []
    for point in points:  # the distinct planes
        for number, known in enumerate(distinct):
            if np.linalg.norm(point - known) <= PLANE_TOLERANCE:
                plane_of_point.append(number)
                break
        else:
            plane_of_point.append(len(distinct))
            distinct.append(point)
    order = np.argsort([float(np.dot(p, normal)) for p in distinct], kind="stable")
    planes = np.array(distinct)[order]  # along the normal
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    if len(planes) == 1:
        step, origin = normal * (spacing_between or 1.0), planes[0]
        index_of_plane = np.zeros(1, dtype=np.int64)
    else:
        steps = np.diff(planes, axis=0)
        step = steps[int(np.argmin(np.linalg.norm(steps, axis=1)))]
        along_normal = float(step @ normal)
        if along_normal < max(PLANE_TOLERANCE, 0.1 * float(np.linalg.norm(step))):  # more than 84 degrees off
            raise SegAlignError(f"{where}: {whose} planes are not stacked along their normal (one step is "
                                f"{_text(step)} mm), so its frames do not form one volume that can be placed")
        if spacing_between:  # the source series' own spacing: planes between the given ones are empty
            multiple = along_normal / spacing_between
            if round(multiple) < 1 or abs(multiple - round(multiple)) > 0.02 * round(multiple):
                raise SegAlignError(
                    f"{where}: {whose} planes are {along_normal:.4g} mm apart along their normal, not a whole "
                    f"multiple of its SpacingBetweenSlices {spacing_between:.4g} mm"
                )
            step = step / round(multiple)
        elif gaps_unknown:
            raise SegAlignError(gaps_unknown)
        index_of_plane = np.round((planes - planes[0]) @ step / float(step @ step)).astype(np.int64)
        # Origin and step fitted to every plane (positions written with few decimals err a little on each).
        design = np.column_stack([np.ones(len(planes)), index_of_plane])
        (origin, step), *_ = np.linalg.lstsq(design, planes, rcond=None)
        off = np.linalg.norm(planes - (origin + np.outer(index_of_plane, step)), axis=1)
        worst = int(np.argmax(off))
        if off[worst] > max(POSITION_TOLERANCE, 0.02 * float(np.linalg.norm(step))):
            raise SegAlignError(
                f"{where}: {whose} planes are not evenly spaced on one line (the plane at "
                f"{_text(planes[worst])} mm is {off[worst]:.3g} mm from the nearest place a step of "
                f"{_text(step)} mm puts one), so its frames do not form one volume that can be placed"
            )
    slices = int(index_of_plane.max()) + 1
    if index_of_plane.min() != 0 or slices > 4 * len(planes) + 16:
        raise SegAlignError(f"{where}: {whose} {len(planes)} planes would span {slices} planes; they are too far "
                            "apart to be one volume")
    return index_of_plane[rank[np.array(plane_of_point, dtype=np.int64)]], np.asarray(origin), np.asarray(step)


def _overlap_error(path: Path, names: Mapping[int, str], first: int | None = None, second: int | None = None,
                   shared: int = 0) -> SegAlignError:
    """Segments of the SEG overlap: the two named (number and SegmentLabel) with the pixels they share, when known."""
    what = "segments of the SEG overlap"
    if first is not None and second is not None:
        what = (f"segments {_segment(first, names)} and {_segment(second, names)} of the SEG overlap ({shared} "
                f"pixel{'s' if shared != 1 else ''})")
    return SegAlignError(
        f"{short_path(path)}: {what}; pass overlap='later-wins' to give overlapping pixels to the higher segment "
        "number",
        cli_message=f"{short_path(path)}: {what}; use --overlap later-wins to give overlapping pixels to the higher "
        "segment number",
    )


def _segment(number: int, names: Mapping[int, str]) -> str:
    return f"{number} {short(names[number], 60)!r}" if number in names else str(number)


def first_overlap_of(masks: np.ndarray, numbers: list[int]) -> tuple[int, int, int]:
    """Two segments of ``(slices, rows, columns, segments)`` masks that share a pixel, in segment order: the earlier
    one's number, the later one's, and how many pixels they share; ``(0, 0, 0)`` where none do."""
    owner = np.zeros(masks.shape[:3], dtype=np.uint16)
    for index, number in enumerate(numbers):
        mask = masks[..., index] != 0
        taken = owner[mask]
        clash = taken != 0
        if clash.any():
            other = int(taken[clash][0])
            return other, number, int(np.count_nonzero(taken == other))
        owner[mask] = number
    return 0, 0, 0


def _omitted_message(path: Path, omitted: int) -> str:
    """A SEG that leaves out frames and does not say how far apart its planes are: frames between its planes could
    be empty planes it left out or lie between two labelled ones, and nearest-neighbour sampling would give them
    their neighbours' labels."""
    return (f"{short_path(path)}: the SEG leaves out the frames of {omitted} of its source images and gives no "
            "SpacingBetweenSlices, so where its empty planes lie between its frames cannot be known; export the "
            "segmentation itself, or a SEG that keeps its empty frames")


def spacing_between_slices(dataset: object) -> float | None:
    """The SEG's SpacingBetweenSlices (shared, else the first frame's pixel measures), or None."""
    for groups in (getattr(dataset, "SharedFunctionalGroupsSequence", None),
                   getattr(dataset, "PerFrameFunctionalGroupsSequence", None)):
        measures = _first(getattr(_first(groups), "PixelMeasuresSequence", None))
        if measures is not None and measures.get("SpacingBetweenSlices") not in (None, ""):
            value = float(measures.SpacingBetweenSlices)
            return value if value > 0 else None
    return None


def omitted_sources(dataset: object) -> int:
    """How many of the single-frame source images the SEG references have no frame in it (a writer leaves out the
    frames of empty source images): those the Referenced Series Sequence lists but no frame derives from."""
    listed = {str(instance.ReferencedSOPInstanceUID)
              for series in getattr(dataset, "ReferencedSeriesSequence", []) or []
              for instance in getattr(series, "ReferencedInstanceSequence", []) or []
              if "ReferencedSOPInstanceUID" in instance}
    used = set()
    for groups in getattr(dataset, "PerFrameFunctionalGroupsSequence", []) or []:
        for derivation in getattr(groups, "DerivationImageSequence", []) or []:
            for source in getattr(derivation, "SourceImageSequence", []) or []:
                used.add(str(source.get("ReferencedSOPInstanceUID", "")))
    return len(listed - used)


def _first(sequence: object) -> object:
    try:
        return sequence[0] if sequence else None  # type: ignore[index]
    except (IndexError, TypeError):
        return None


def _text(vector: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in vector) + ")"


def _packed(masks: np.ndarray, numbers: list[int]) -> list[np.ndarray]:
    """``(slices, rows, columns, segments)`` masks as layers of segment numbers (see
    :class:`~segalign.segmentation.LayerPacker`): segments that overlap are kept whole."""
    packer = LayerPacker(masks.shape[:3], max(numbers))
    for index, number in enumerate(numbers):
        packer.add(number, masks[..., index] != 0)
    return packer.layers or [np.zeros(masks.shape[:3], dtype=label_dtype(max(numbers)))]


def _threshold(array: np.ndarray, numbers: list[int], overlap: Overlap, path: Path,
               names: Mapping[int, str]) -> list[np.ndarray]:
    """FRACTIONAL ``(slices, rows, columns, segments)`` values as label layers (segment number where >= 0.5): one
    layer unless ``overlap`` keeps overlapping segments."""
    if overlap == "keep":
        return _packed(array >= FRACTIONAL_THRESHOLD, numbers)
    labels = np.zeros(array.shape[:3], dtype=np.uint16)
    for index, number in enumerate(numbers):
        mask = array[..., index] >= FRACTIONAL_THRESHOLD
        clash = mask & (labels != 0)
        if clash.any() and overlap == "error":
            other = int(labels[clash].flat[0])
            pair = f"segments {_segment(other, names)} and {_segment(number, names)}"
            raise SegAlignError(
                f"{short_path(path)}: {pair} overlap after thresholding at 0.5; pass overlap='later-wins' to give the "
                "pixels to the higher segment number",
                cli_message=f"{short_path(path)}: {pair} overlap after thresholding at 0.5; use --overlap later-wins "
                "to give the pixels to the higher segment number",
            )
        labels[mask] = number
    return [labels]


def _color(description: object, number: int) -> tuple[int, int, int]:
    lab = getattr(description, "RecommendedDisplayCIELabValue", None)
    if not lab:
        return default_color(number)
    try:
        import highdicom as hd

        return tuple(int(c) for c in hd.color.CIELabColor.from_dicom_value([int(v) for v in lab]).to_rgb(clip=True))  # type: ignore[return-value]
    except Exception:
        return default_color(number)
