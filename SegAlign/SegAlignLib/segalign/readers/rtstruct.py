"""The RT Structure Set reader: each ROI's contours as masks on the frames of the series they were drawn on.

An RT Structure Set has no pixel grid of its own: its contours are polygons in patient millimetres, each drawn on
one image of a series. So this reader needs that series (:data:`NEEDS_SERIES`; the registry passes the series it
knows: the export's, or every series of its DICOM folder, and :func:`chosen_series` takes the one the structure
set references). It gives a label volume whose voxels are those frames' pixel centres, which the sampler then
samples exactly back onto the same frames (voxel ``(k, r, c)`` is pixel ``(r, c)`` of the frames on plane ``k``),
and onto any other series of the same frame of reference as every other input is sampled.

* **The grid.** The frames of the series that share its orientation, pixel spacing and size are stacked as the
  DICOM SEG reader stacks a SEG's planes (:func:`~.dicom_seg.stack_planes`): parallel planes on one line at whole
  multiples of one step, fitted to all of them, so a gantry-tilted series gets a sheared affine and a series with a
  missing slice an empty plane where it is missing. Any other series (uneven spacing, a mosaic) is refused with the
  numbers, before any contour is read. Every frame of the stack is checked to sample back onto its own plane
  within :data:`IDENTITY_TOLERANCE_VOXELS`.
* **Placement.** Each CLOSED_PLANAR (or CLOSEDPLANAR_XOR) contour goes to the frame its ContourImageSequence
  references (ReferencedSOPInstanceUID and ReferencedFrameNumber), checked against that frame's plane: every point
  within :data:`PLANE_TOLERANCE_MM` of it. Where the reference is missing (many planning systems omit it) or names
  an image that is not in the series, it goes to the one plane of the stack that all its points lie on. A contour
  on no frame (off the plane of the frame it references, between planes, tilted, in another FrameOfReferenceUID,
  on a frame outside the stack) is *unplaced*: the read refuses, listing each with its ROI, contour number and
  distance, unless ``skip_unplaced_contours`` (``--skip-unplaced-contours``) leaves them out with a warning saying
  the same. POINT, OPEN_PLANAR and OPEN_NONPLANAR contours are markers, not areas: listed in a warning and left out;
  so are contours of fewer than three points (rt-utils writes them for one-pixel islands), which have no area.
* **Rasterisation** at each frame's own pixel centres, by the even-odd rule over all contours of one ROI on that
  frame, with the half-open rule for centres on an edge (:mod:`.fill`). Contours of one ROI on several frames of one
  plane (a 4D series) are filled frame by frame and joined.
* **Segments.** Each ROI is a segment: its label value is its ROINumber (when every ROI number is 1..65535 and none
  repeats; else the ROIs are numbered 1..N in file order, with a warning), its name the ROIName, its colour the
  ROIDisplayColor; labels.json keeps ``roi_number`` and ``rt_roi_interpreted_type``. Structures overlap (a BODY
  around every organ, a PTV around its CTV): with ``overlap="keep"`` each is kept whole in as few label layers as the
  overlaps need (:class:`~segalign.segmentation.LayerPacker`), ``"later-wins"`` gives a shared pixel to the higher
  value, ``"error"`` refuses naming two ROIs.

Hostile files (a ContourData that is not triples of finite numbers, a contour of more than :data:`MAX_POINTS`
points, sequences that are not sequences) are refused in one line.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..dicom import Frame, Series
from ..errors import SegAlignError, WarningText, describe, quiet_warnings, short, short_path
from ..geometry import LPS_TO_RAS, frame_index_mapping, same_orientation
from ..segmentation import MAX_LABEL, Label, Layer, LayerPacker, Overlap, crop, default_color, label_dtype
from .base import RT_STRUCTURE_SET_STORAGE, Reading, media_storage_sop_class
from .dicom_seg import stack_planes
from .fill import centre_box, even_odd

NAME = "rtstruct"
#: This reader places its file on a DICOM series the registry gives it (:func:`read_on_series`).
NEEDS_SERIES = True
#: A contour point farther than this (mm) from a frame's plane is not on it: coordinates written with two decimals
#: err by up to 0.005 mm on each axis, about 0.009 mm across all three.
PLANE_TOLERANCE_MM = 0.01
#: Each frame of the stack must sample back onto its own plane, pixel for pixel, within this (voxels) everywhere.
IDENTITY_TOLERANCE_VOXELS = 0.1
#: The most points one contour may have: planning systems write thousands; the outline of a whole 512 x 512 frame
#: along pixel edges has at most 263,169 corners.
MAX_POINTS = 500_000
#: The types of contour that enclose an area (CLOSEDPLANAR_XOR says outright what the even-odd rule does).
AREAS = ("CLOSED_PLANAR", "CLOSEDPLANAR_XOR")
#: Contours an error or warning lists on its detail lines, at most.
LISTED = 20
#: ReferencedFrameNumber of a single-frame image (or none given).
FIRST_FRAME = 1


def matches(path: Path, head: bytes) -> bool:
    """Whether the file is a DICOM RT Structure Set: ``DICM`` after the preamble and an RT Structure Set Storage
    MediaStorageSOPClassUID in its file meta information (within the first bytes)."""
    return head[128:132] == b"DICM" and media_storage_sop_class(head) == RT_STRUCTURE_SET_STORAGE


def read(path: Path, overlap: Overlap) -> Reading:
    """Refused: a structure set is placed on the series it references (:func:`read_on_series`)."""
    raise SegAlignError(
        f"{short_path(path)} is an RT Structure Set: its contours have no pixel grid of their own and are placed on "
        "the frames of the series they were drawn on; give that series too (segalign.align(dicom, structure_set), "
        "or load_segmentation(..., reference=series))",
        cli_message=f"{short_path(path)} is an RT Structure Set: its contours have no pixel grid of their own and are "
        "placed on the frames of the series they were drawn on; give that series as DICOM_DIR",
    )


# ------------------------------------------------------------------------------------------------ reading the file


@dataclass
class Roi:
    """One ROI of the structure set, as read."""

    number: int  #: ROINumber
    name: str  #: ROIName, safe to print
    frame_of_reference: str  #: ReferencedFrameOfReferenceUID ("" when not given)
    color: tuple[int, int, int] | None = None  #: ROIDisplayColor, when valid
    interpreted_type: str = ""  #: RTROIInterpretedType
    contours: list[Contour] = field(default_factory=list)
    has_contour_item: bool = False  #: an ROIContourSequence item refers to it

    def called(self) -> str:
        return f"ROI {self.number} {short(self.name, 60)!r}"


@dataclass
class Contour:
    """One contour of an ROI, as read."""

    number: int  #: ContourNumber, else its place in the ContourSequence (from 1)
    kind: str  #: ContourGeometricType
    points: np.ndarray  #: (n, 3) LPS mm
    references: list[tuple[str, int]]  #: ContourImageSequence: (ReferencedSOPInstanceUID, ReferencedFrameNumber)


@dataclass
class StructureSet:
    """What the reader takes from the file."""

    rois: list[Roi]
    frames_of_reference: list[str]  #: ReferencedFrameOfReferenceSequence's UIDs
    series_uids: set[str]  #: the series its RT Referenced Series Sequence names
    images: set[str]  #: every SOP instance its contours reference
    notes: list[str] = field(default_factory=list)


def read_structure_set(path: Path) -> StructureSet:
    """The ROIs and contours of the RT Structure Set at ``path`` (:class:`SegAlignError`, one line, for anything
    that is not one or is malformed)."""
    import pydicom

    where = short_path(path)
    try:
        with quiet_warnings():
            dataset = pydicom.dcmread(str(path))
    except Exception as error:
        raise SegAlignError(f"segmentation {where} is not a readable DICOM file: {describe(error)}") from None
    try:
        with quiet_warnings():
            return _structure_set(dataset, where)
    except SegAlignError:
        raise
    except (MemoryError, RecursionError) as error:
        raise SegAlignError(f"{where}: the structure set cannot be read ({describe(error)})") from None
    except Exception as error:  # a value of the wrong type or form anywhere in the file
        raise SegAlignError(f"{where}: the structure set is malformed ({describe(error)})") from None


def _structure_set(dataset: object, where: str) -> StructureSet:
    sop_class = str(getattr(dataset, "SOPClassUID", "") or "")
    if sop_class != RT_STRUCTURE_SET_STORAGE:
        raise SegAlignError(f"{where} is not an RT Structure Set (SOPClassUID {short(sop_class, 64)})")
    frames_of_reference, series_uids = [], set()
    for item in _items(dataset, "ReferencedFrameOfReferenceSequence"):
        uid = str(item.get("FrameOfReferenceUID", "") or "")
        if uid:
            frames_of_reference.append(uid)
        for study in _items(item, "RTReferencedStudySequence"):
            for series in _items(study, "RTReferencedSeriesSequence"):
                if series.get("SeriesInstanceUID"):
                    series_uids.add(str(series.SeriesInstanceUID))
    rois: dict[int, Roi] = {}
    for index, item in enumerate(_items(dataset, "StructureSetROISequence"), start=1):
        number = _integer(item.get("ROINumber", None))
        if number is None:
            raise SegAlignError(f"{where}: item {index} of StructureSetROISequence has no valid ROINumber "
                                f"({short(item.get('ROINumber', None), 24)})")
        if number in rois:
            raise SegAlignError(f"{where}: ROINumber {number} is given to two ROIs of StructureSetROISequence")
        rois[number] = Roi(number, _name(item.get("ROIName", None), number),
                           str(item.get("ReferencedFrameOfReferenceUID", "") or ""))
    if not rois:
        raise SegAlignError(f"{where}: the structure set has no ROIs (StructureSetROISequence is empty or missing)")
    for item in _items(dataset, "RTROIObservationsSequence"):
        roi = rois.get(_integer(item.get("ReferencedROINumber", None)))  # type: ignore[arg-type]
        if roi is not None:
            roi.interpreted_type = short(item.get("RTROIInterpretedType", "") or "", 16)
    notes: list[str] = []
    images: set[str] = set()
    orphans = 0
    for item in _items(dataset, "ROIContourSequence"):
        roi = rois.get(_integer(item.get("ReferencedROINumber", None)))  # type: ignore[arg-type]
        if roi is None:
            orphans += 1
            continue
        roi.has_contour_item = True
        roi.color = _color(item.get("ROIDisplayColor", None))
        for position, contour in enumerate(_items(item, "ContourSequence"), start=1):
            number = _integer(contour.get("ContourNumber", None))
            references = []
            for image in _items(contour, "ContourImageSequence"):
                uid = str(image.get("ReferencedSOPInstanceUID", "") or "")
                if uid:
                    frame = _integer(image.get("ReferencedFrameNumber", None))
                    references.append((uid, frame if frame is not None and frame >= 1 else FIRST_FRAME))
                    images.add(uid)
            kind = str(contour.get("ContourGeometricType", "") or "").strip().upper()
            points = _points(contour, where, f"{roi.called()} contour {number or position}")
            roi.contours.append(Contour(number if number is not None else position, kind, points, references))
    if orphans:
        notes.append(f"{orphans} items of ROIContourSequence name an ROI that StructureSetROISequence does not "
                     "have; their contours are left out")
    return StructureSet(list(rois.values()), frames_of_reference, series_uids, images, notes)


def _items(dataset: object, keyword: str) -> list:
    """The items of a sequence (none where it is missing or empty); refused where the element is not a sequence."""
    value = dataset.get(keyword, None)  # type: ignore[attr-defined]
    if value is None or value == "":
        return []
    try:
        return list(value)
    except TypeError:
        raise SegAlignError(f"{keyword} is not a sequence") from None


def _integer(value: object) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)) or (hasattr(value, "__len__") and not isinstance(value, (str, bytes))):
        value = value[0] if len(value) else None  # type: ignore[index, arg-type]
        if value is None:
            return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return int(number) if np.isfinite(number) and number == int(number) and abs(number) < 2 ** 31 else None


def _name(value: object, number: int) -> str:
    """An ROIName safe to print: whitespace collapsed, control characters replaced, at most 64 characters (LO)."""
    text = " ".join(str(value or "").split())
    text = "".join("\ufffd" if unicodedata.category(character) == "Cc" else character for character in text)
    return text[:64] or f"ROI_{number}"


def _color(value: object) -> tuple[int, int, int] | None:
    try:
        channels = [int(float(v)) for v in value]  # type: ignore[union-attr]
    except (TypeError, ValueError, OverflowError):
        return None
    if len(channels) != 3 or not all(0 <= channel <= 255 for channel in channels):
        return None
    return channels[0], channels[1], channels[2]


def _points(contour: object, where: str, what: str) -> np.ndarray:
    """ContourData as ``(n, 3)`` float LPS points, parsed from the stored text where pydicom still holds it raw
    (much faster than converting each value); refused unless they are triples of finite numbers, at most
    :data:`MAX_POINTS` of them."""
    from pydicom.dataelem import RawDataElement

    tag = 0x30060050
    if tag not in contour:  # type: ignore[operator]
        return np.zeros((0, 3))
    raw = contour.get_item(tag)  # type: ignore[attr-defined]
    try:
        if isinstance(raw, RawDataElement):
            text = bytes(raw.value or b"").strip(b" \0")
            values = np.array(text.split(b"\\"), dtype=np.float64) if text else np.zeros(0)
        else:
            value = contour.ContourData  # type: ignore[attr-defined]
            many = hasattr(value, "__iter__") and not isinstance(value, (str, bytes))
            values = np.array([float(v) for v in (value if many else [value])], dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise SegAlignError(f"{where}: {what} holds ContourData that are not numbers ({describe(error, 80)})") \
            from None
    if values.size % 3:
        raise SegAlignError(f"{where}: {what} holds {values.size} ContourData values, not (x, y, z) triples")
    if values.size // 3 > MAX_POINTS:
        raise SegAlignError(f"{where}: {what} has {values.size // 3} points, more than the {MAX_POINTS} a contour "
                            "may have")
    if not np.all(np.isfinite(values)):
        raise SegAlignError(f"{where}: {what} holds coordinates that are not finite numbers (NaN or infinity)")
    if values.size and np.abs(values).max() > 1e6:
        raise SegAlignError(f"{where}: {what} holds coordinates beyond a kilometre ({np.abs(values).max():.3g} mm)")
    return values.reshape(-1, 3)


# ------------------------------------------------------------------------------------------------ the series


def chosen_series(structure_set: StructureSet, candidates: Sequence[Series], where: str) -> Series:
    """The series of ``candidates`` the structure set was drawn on: the one holding most of the images its contours
    reference, else the one its RT Referenced Series Sequence names, else the only one given (or the only one of
    its frame of reference)."""
    if not candidates:
        raise SegAlignError(f"{where}: an RT Structure Set needs the series it was drawn on, and none was given")
    referenced = _referenced(structure_set, candidates)
    if referenced is not None:
        return referenced
    if len(candidates) == 1:
        return candidates[0]
    ours = [series for series in candidates
            if {frame.frame_of_reference_uid for frame in series.frames} & set(structure_set.frames_of_reference)]
    if len(ours) == 1:
        return ours[0]
    raise SegAlignError(f"{where}: the structure set references none of the {len(candidates)} series given (by "
                        "SeriesInstanceUID or the images its contours name); choose the one it was drawn on")


@dataclass
class Stack:
    """The frames of a series that share its orientation, spacing and size, as planes of one grid."""

    frames: list[Frame]  #: the frames of the stack
    plane: dict[int, int]  #: index in ``frames`` -> plane of the grid
    affine: np.ndarray  #: LPS, voxel (plane, row, column) -> mm
    shape: tuple[int, int, int]
    normal: np.ndarray  #: unit normal of the planes
    heights: np.ndarray  #: per frame, its IPP along the normal (mm)
    outside: list[Frame]  #: the series' frames that are not in the stack (another orientation, spacing or size)


def stack_of(series: Series, where: str) -> Stack:
    """The series' frames as one grid (see the module), or a refusal saying why they are not one."""
    if any(frame.tiles for frame in series.frames):
        raise SegAlignError(f"{where}: series {series.uid or '(no SeriesInstanceUID)'} is a mosaic; an RT Structure "
                            "Set is placed on a series of single slices")
    if not series.frames:
        raise SegAlignError(f"{where}: series {series.uid or '(no SeriesInstanceUID)'} has no frames")
    orientation = series.reference_orientation
    parallel = [frame for frame in series.frames if same_orientation(frame.orientation, orientation)]
    sizes: dict[tuple, int] = {}
    for frame in parallel:
        key = (frame.rows, frame.columns, tuple(round(v, 6) for v in frame.pixel_spacing))
        sizes[key] = sizes.get(key, 0) + 1
    common = max(sizes, key=lambda key: sizes[key])
    frames = [frame for frame in parallel
              if (frame.rows, frame.columns, tuple(round(v, 6) for v in frame.pixel_spacing)) == common]
    kept = {id(frame) for frame in frames}
    outside = [frame for frame in series.frames if id(frame) not in kept]
    iop = np.asarray(orientation, dtype=float)
    row_direction, column_direction = iop[:3], iop[3:6]
    normal = np.cross(row_direction, column_direction)
    normal = normal / np.linalg.norm(normal)
    points = np.array([frame.position for frame in frames], dtype=float)
    index, origin, step = stack_planes(points, normal, where, "the series'")
    rows, columns, (dr, dc) = common[0], common[1], frames[0].pixel_spacing
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2], affine[:3, 3] = step, column_direction * dr, row_direction * dc, origin
    shape = (int(index.max()) + 1, rows, columns)
    ras_to_index = np.linalg.inv(np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine)
    for number, frame in enumerate(frames):  # every frame samples back onto its own plane, pixel for pixel
        mapping = frame_index_mapping(ras_to_index, frame.position, frame.orientation, frame.pixel_spacing)
        expected = np.array([index[number], 0.0, 0.0])
        worst = max(float(np.abs(mapping.origin + r * mapping.per_row + c * mapping.per_column
                                 - expected - [0, r, c]).max()) for r in (0, rows - 1) for c in (0, columns - 1))
        if worst > IDENTITY_TOLERANCE_VOXELS:
            raise SegAlignError(f"{where}: frame {_frame_name(frame)} of the series lies {worst:.3g} voxels off the "
                                "grid its frames form, so its pixels cannot be the grid's voxels")
    heights = points @ normal
    return Stack(frames, {number: int(k) for number, k in enumerate(index)}, affine, shape, normal, heights, outside)


def _frame_name(frame: Frame) -> str:
    number = f", frame {frame.frame_number}" if frame.number_of_frames > 1 else ""
    instance = f"InstanceNumber {frame.instance_number}" if frame.instance_number is not None else "(no InstanceNumber)"
    return f"{instance}{number} ({short(frame.sop_instance_uid, 64)})"


# ------------------------------------------------------------------------------------------------ placement


@dataclass
class Unplaced:
    """A contour that lies on no frame of the stack, and why."""

    roi: Roi
    contour: Contour
    why: str  #: in full, for the detail lines
    brief: str  #: in a few words, for the one line

    def line(self) -> str:
        return f"{self.roi.called()} contour {self.contour.number}: {self.why}"

    def short_line(self) -> str:
        return f"{self.roi.called()} contour {self.contour.number} {self.brief}"


@dataclass
class Placement:
    """Where the contours go: per ROI number, per frame of the stack, the contours in that frame's (row, column)
    pixel coordinates; and what is left out."""

    polygons: dict[int, dict[int, list[np.ndarray]]] = field(default_factory=dict)
    unplaced: list[Unplaced] = field(default_factory=list)
    markers: list[str] = field(default_factory=list)  #: POINT, OPEN_PLANAR... contours, each a line
    pointless: list[str] = field(default_factory=list)  #: contours of fewer than three points, each a line


def place(structure_set: StructureSet, series: Series, stack: Stack) -> Placement:
    """Every contour of the structure set on the frame of the stack it belongs to (see the module)."""
    placement = Placement()
    index_of = {(frame.sop_instance_uid, frame.frame_number): number for number, frame in enumerate(stack.frames)}
    outside = {(frame.sop_instance_uid, frame.frame_number): frame for frame in stack.outside}
    series_references = {frame.frame_of_reference_uid for frame in series.frames if frame.frame_of_reference_uid}
    default_reference = structure_set.frames_of_reference[0] if len(set(structure_set.frames_of_reference)) == 1 else ""
    order = np.argsort(stack.heights, kind="stable")
    heights = stack.heights[order]
    iop = np.asarray(stack.frames[0].orientation, dtype=float)
    dr, dc = stack.frames[0].pixel_spacing
    to_local = np.linalg.inv(np.column_stack([dc * iop[:3], dr * iop[3:6], stack.normal]))
    for roi in structure_set.rois:
        reference = roi.frame_of_reference or default_reference
        other_reference = bool(reference and series_references and reference not in series_references)
        for contour in roi.contours:
            where = f"{roi.called()} contour {contour.number}"
            if contour.kind not in AREAS:
                placement.markers.append(f"{where}: {short(contour.kind or 'no ContourGeometricType', 24)}, "
                                         f"{len(contour.points)} points")
                continue
            if len(contour.points) < 3:
                placement.pointless.append(f"{where}: {len(contour.points)} point{'s' if len(contour.points) != 1 else ''}")
                continue
            if other_reference:
                placement.unplaced.append(Unplaced(roi, contour, f"in frame of reference {short(reference, 64)}, "
                                                   f"not the series' {short(min(series_references), 64)}",
                                                   "is in another frame of reference"))
                continue
            along = contour.points @ stack.normal
            number, why, brief = None, "", ""
            known = [index_of[key] for key in contour.references if key in index_of]
            if known:
                number = known[0]
                distance = float(np.abs(along - stack.heights[number]).max())
                if distance > PLANE_TOLERANCE_MM:
                    number, why = None, (f"lies {distance:.3g} mm off the plane of the frame it references, "
                                         f"{_frame_name(stack.frames[known[0]])}")
                    brief = f"lies {distance:.3g} mm off the plane of the frame it references"
            elif any(key in outside for key in contour.references):
                frame = next(outside[key] for key in contour.references if key in outside)
                why = (f"references frame {_frame_name(frame)}, which lies in another orientation, spacing or size "
                       "than the series' stack of frames")
                brief = "is on a frame outside the series' stack of frames"
            else:
                centre = (float(along.max()) + float(along.min())) / 2
                nearest = int(np.clip(np.searchsorted(heights, centre), 1, len(heights) - 1)) if len(heights) > 1 else 0
                candidates = [nearest - 1, nearest] if len(heights) > 1 else [0]
                best = min(candidates, key=lambda i: abs(heights[i] - centre))
                distance = float(np.abs(along - heights[best]).max())
                if distance <= PLANE_TOLERANCE_MM:
                    number = int(order[best])
                else:
                    said = (f"references image {short(contour.references[0][0], 64)}, which is not in the series, and"
                            if contour.references else "references no image and")
                    why = f"{said} lies {distance:.3g} mm from the nearest frame's plane"
                    brief = f"lies {distance:.3g} mm from the nearest frame's plane"
            if number is None:
                placement.unplaced.append(Unplaced(roi, contour, why, brief))
                continue
            local = (contour.points - np.asarray(stack.frames[number].position, dtype=float)) @ to_local.T
            rows_columns = np.column_stack([local[:, 1], local[:, 0]])  # (row, column)
            placement.polygons.setdefault(roi.number, {}).setdefault(number, []).append(rows_columns)
    return placement


# ------------------------------------------------------------------------------------------------ the reading


def read_on_series(
    path: Path, overlap: Overlap, series: Series | Sequence[Series], skip_unplaced_contours: bool = False,
) -> Reading:
    """The structure set at ``path`` as label layers on the grid of the series it was drawn on, chosen among
    ``series`` (:func:`chosen_series`); see the module."""
    where = short_path(path)
    structure_set = read_structure_set(path)
    candidates = [series] if isinstance(series, Series) else list(series)
    drawn_on = chosen_series(structure_set, candidates, where)
    stack = stack_of(drawn_on, where)
    placement = place(structure_set, drawn_on, stack)
    warnings: list[str] = list(structure_set.notes)
    if placement.unplaced:
        lines = [item.line() for item in placement.unplaced]
        count = f"{len(lines)} contour{'s' if len(lines) != 1 else ''}"
        what = f"lie on no frame of series {short(drawn_on.uid or '(no SeriesInstanceUID)', 64)}"
        if not skip_unplaced_contours:
            example = short(placement.unplaced[0].short_line(), 120)
            raise SegAlignError(
                f"{where}: {count} {what} (e.g. {example}); pass skip_unplaced_contours=True to read the others",
                cli_message=f"{where}: {count} {what} (e.g. {example}); use --skip-unplaced-contours to export the "
                "others",
                details=lines,  # every one (the command line prints the first few and counts the rest)
            )
        warnings.append(_listing(f"{count} of {path.name} {what}: left out, as asked", lines))
    if not placement.polygons:
        contours = sum(len(roi.contours) for roi in structure_set.rois)
        raise SegAlignError(
            f"{where}: no contour of the structure set encloses an area on a frame of series "
            f"{short(drawn_on.uid or '(no SeriesInstanceUID)', 64)} ({contours} contours: {len(placement.unplaced)} on "
            f"no frame, {len(placement.markers)} markers, {len(placement.pointless)} of fewer than three points)")
    if placement.markers:
        warnings.append(_listing(f"{len(placement.markers)} contours of {path.name} are markers (POINT, OPEN_PLANAR), "
                                 "not areas: left out", placement.markers))
    if placement.pointless:
        warnings.append(_listing(f"{len(placement.pointless)} contours of {path.name} have fewer than three points "
                                 "and so no area: left out", placement.pointless))
    values, renumbered = _values(structure_set.rois)
    if renumbered:
        warnings.append(f"the ROI numbers of {path.name} are not all distinct numbers 1..{MAX_LABEL}; the ROIs are "
                        "numbered 1..N in the file's order (labels.json keeps each ROI's own number)")
    table = {values[roi.number]: Label(values[roi.number], roi.name, roi.color or default_color(values[roi.number]),
                                       roi.number, roi.interpreted_type) for roi in structure_set.rois}
    empty = [roi.called() for roi in structure_set.rois if roi.number not in placement.polygons]
    if empty:
        warnings.append(_listing(f"{len(empty)} ROIs of {path.name} have no contour on the frames (no ContourSequence, "
                                 "or none placed): they are in labels.json with no voxels", empty))
    layers = _layers(structure_set.rois, placement, stack, values, overlap, where)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ stack.affine
    assert np.allclose(affine[:3, :3], LPS_TO_RAS @ stack.affine[:3, :3])
    more = [crop(Layer(layer, affine)) for layer in layers[1:]]
    frame_of_reference = next((frame.frame_of_reference_uid for frame in drawn_on.frames
                               if frame.frame_of_reference_uid), None)
    return Reading(layers[0], affine, "rtstruct", table, warnings, frame_of_reference, more)


def _listing(first: str, lines: list[str]) -> WarningText:
    """A warning whose first line says what happened and whose next lines list what it happened to."""
    shown = lines[:LISTED] + ([f"... and {len(lines) - LISTED} more"] if len(lines) > LISTED else [])
    return WarningText("\n".join([first, *shown]))


def _values(rois: list[Roi]) -> tuple[dict[int, int], bool]:
    """ROI number -> label value: the ROI number itself, when every one is a distinct 1..65535; else 1..N."""
    numbers = [roi.number for roi in rois]
    if all(1 <= number <= MAX_LABEL for number in numbers) and len(set(numbers)) == len(numbers):
        return {number: number for number in numbers}, False
    return {roi.number: index for index, roi in enumerate(rois, start=1)}, True


def _layers(rois: list[Roi], placement: Placement, stack: Stack, values: dict[int, int], overlap: Overlap,
            where: str) -> list[np.ndarray]:
    """Each ROI's mask, built in the box around its contours, put into label layers as ``overlap`` says."""
    largest = max(values.values())
    packer = LayerPacker(stack.shape, largest)
    flat = np.zeros(stack.shape, dtype=label_dtype(largest), order="F") if overlap != "keep" else None
    names = {values[roi.number]: roi.called() for roi in rois}
    for roi in sorted(rois, key=lambda item: values[item.number]):
        per_frame = placement.polygons.get(roi.number)
        if not per_frame:
            continue
        mask, box = _mask(per_frame, stack, f"{where}: {roi.called()}")
        if mask is None:
            continue
        value = values[roi.number]
        if flat is None:
            packer.add(value, mask, within=box)
            continue
        target = flat[box]
        clash = mask & (target != 0)
        if clash.any() and overlap == "error":
            other = int(target[clash].flat[0])
            shared = int(np.count_nonzero(clash & (target == other)))
            raise SegAlignError(
                f"{where}: {names[other]} and {roi.called()} overlap ({shared} pixels); pass overlap='later-wins' to "
                "give overlapping pixels to the higher value, or keep them both (overlap='keep')",
                cli_message=f"{where}: {names[other]} and {roi.called()} overlap ({shared} pixels); use --overlap "
                "later-wins to give overlapping pixels to the higher value, or keep (the default) to keep them both")
        target[mask] = value
    if flat is not None:
        return [flat]
    return packer.layers or [np.zeros(stack.shape, dtype=label_dtype(largest), order="F")]


def _mask(per_frame: dict[int, list[np.ndarray]], stack: Stack, where: str) -> tuple[np.ndarray | None, tuple]:
    """One ROI's pixels in the box of the grid around them: its contours filled frame by frame (those of one frame
    together, by the even-odd rule), frames of one plane joined."""
    _, rows, columns = stack.shape
    boxes = {}
    for number, polygons in per_frame.items():
        found = [centre_box(polygon, rows, columns) for polygon in polygons]
        found = [box for box in found if box is not None]
        if found:
            boxes[number] = (min(b[0] for b in found), max(b[1] for b in found), min(b[2] for b in found),
                             max(b[3] for b in found))
    if not boxes:
        return None, ()
    planes = [stack.plane[number] for number in boxes]
    k0, k1 = min(planes), max(planes) + 1
    r0, r1 = min(b[0] for b in boxes.values()), max(b[1] for b in boxes.values())
    c0, c1 = min(b[2] for b in boxes.values()), max(b[3] for b in boxes.values())
    mask = np.zeros((k1 - k0, r1 - r0, c1 - c0), dtype=bool)
    for number, (fr0, fr1, fc0, fc1) in boxes.items():
        filled = even_odd(per_frame[number], fr1 - fr0, fc1 - fc0, fr0, fc0, where)
        mask[stack.plane[number] - k0, fr0 - r0:fr1 - r0, fc0 - c0:fc1 - c0] |= filled
    return mask, (slice(k0, k1), slice(r0, r1), slice(c0, c1))


def referenced_series(path: Path, candidates: Sequence[Series]) -> Series | None:
    """The series of ``candidates`` the structure set at ``path`` references (by the images its contours name,
    else by its RT Referenced Series Sequence), or None where it references none of them."""
    return _referenced(read_structure_set(path), candidates)


def _referenced(structure_set: StructureSet, candidates: Sequence[Series]) -> Series | None:
    scores = [(sum(1 for frame in series.frames if frame.sop_instance_uid in structure_set.images),
               series.uid in structure_set.series_uids) for series in candidates]
    if not scores or max(scores) <= (0, False):
        return None
    return candidates[max(range(len(candidates)), key=lambda index: scores[index])]
