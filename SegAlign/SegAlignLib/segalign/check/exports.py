"""Reading the export a user already made, as label images tied to the frames they are meant for.

An export is one of:

* a folder of 2D images, one per frame (``.png``, ``.tif``/``.tiff``, ``.npy``): label images, or 0/255 (0/65535)
  masks of a one-label segmentation, 8 or 16 bit;
* a folder of such folders, one per label (each folder named by a label's name or value): every image a mask;
* a SegAlign export folder (its ``manifest.csv`` ties each ``label_png`` to its frame);
* one 3D array file (``.npy``, NIfTI, NRRD) meant as "the slices in DICOM order", taken as stored: frames on its
  first axis (numpy's ``(frames, rows, columns)``) or on its last (nibabel's and pynrrd's ``(x, y, z)``);
* a DICOM SEG, one image per source frame it references; an RTSTRUCT, one image per frame its contours lie on
  (filled by the even-odd rule at the pixel centres), with the faults of its writer found while reading it.

Images are tied to the frames they are meant for (:class:`UserImages` ``tied``) by, in turn: SegAlign's manifest;
a SOPInstanceUID in their names; a number in their names read as the InstanceNumber, the index from 0 or the index
from 1 (whichever reading names existing frames for every image); their sorted name order, natural
(``2.png`` before ``10.png``) and plain. When several readings are possible, :func:`read_export` gives each as a
candidate and the check keeps the one the images agree with best.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from ..dicom import Frame
from ..dicom.model import plural
from ..errors import SegAlignError, short, short_path
from ..files import safe_name
from ..segmentation import Label
from .sets import SegmentSets

#: File name endings of one 2D image of an image folder.
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".npy")
#: File name endings of one 3D array file.
ARRAY_SUFFIXES = (".npy", ".nii", ".nii.gz", ".nrrd", ".nhdr")
#: SegAlign's manifest columns that tie a label image to its frame.
MANIFEST_KEYS = ("sop_instance_uid", "frame", "label_png")


@dataclass
class UserImages:
    """The user's export as 2D label images, in the order the check reports them, each tied to the frame it is
    meant for."""

    kind: str  #: "image folder", "label folders", "SegAlign export", "array"
    source: Path
    names: list[str]  #: one per image: its file name, or ``frame N`` for the slices of an array
    images: list[np.ndarray]  #: 2D non-negative integer label images
    tied: list[int | None]  #: the frame (index in acquisition order) each image is meant for; None: none
    rule: str  #: how the images were tied to frames, in words
    layout: str | None = None  #: for an array: "frames first" or "frames last"
    notes: list[str] = field(default_factory=list)  #: how the export was read (not faults)
    faults: list[str] = field(default_factory=list)  #: faults found while reading (a DICOM object's): never exact
    #: For an RTSTRUCT drawn through pixel centres: per image, the pixels whose centres lie on a contour line.
    under_contours: list[np.ndarray | None] | None = None

    @property
    def empty_frames_optional(self) -> bool:
        """Whether frames without labels may have no image (a DICOM object leaves them out)."""
        return self.kind in ("DICOM SEG", "RTSTRUCT")

    @property
    def dicom_object(self) -> str | None:
        """What a finding calls the parts of a DICOM object ("the SEG's frames"), None for images and arrays."""
        return {"DICOM SEG": "the SEG's frames", "RTSTRUCT": "the RTSTRUCT's contours"}.get(self.kind)

    def with_ties(self, names: list[str], images: list[np.ndarray], tied: list[int | None], rule: str) -> "UserImages":
        return UserImages(self.kind, self.source, names, images, tied, rule, self.layout, list(self.notes),
                          list(self.faults))


def read_export(export: Path, frames: Sequence[Frame], segments: Sequence[Label],
                sets: SegmentSets | None = None) -> list[UserImages]:
    """Every reading of ``export`` worth trying, the preferred first (each a :class:`UserImages`); raises
    :class:`SegAlignError` (one line) when it cannot be read as an export at all.

    With ``sets`` (the segments overlap), every image holds set codes (see :mod:`.sets`): where the export holds
    several segments on a pixel (SegAlign's layers, one folder of masks per segment, a BINARY SEG, an RTSTRUCT) the
    pixel's code is their set; an export of one label per pixel (image folders, arrays, a LABELMAP SEG) says so in
    its notes."""
    export = Path(export)
    if not export.exists():
        raise SegAlignError(f"the export {short_path(export)} does not exist")
    if export.is_file():
        if _suffix(export) in ARRAY_SUFFIXES:
            return [_one_per_pixel(reading, sets) for reading in _array_readings(export, len(frames))]
        if _is_dicom(export):
            return [_seg_reading(export, frames, segments, sets)]
        raise SegAlignError(f"the export {short_path(export)} is not a folder of images, an array file "
                            f"({', '.join(ARRAY_SUFFIXES)}) or a DICOM SEG")
    manifest = _manifest_of(export)
    if manifest is not None:
        return [_segalign_export(manifest, frames, sets)]
    images = _image_files(export)
    if images:
        return [_one_per_pixel(reading, sets)
                for reading in _folder_readings(export, images, frames, segments, kind="image folder")]
    folders = sorted(path for path in export.iterdir() if path.is_dir() and not path.name.startswith("."))
    with_images = [folder for folder in folders if _image_files(folder)]
    if with_images:
        return _label_folder_readings(export, with_images, frames, segments, sets)
    raise SegAlignError(f"the export {short_path(export)} holds no images ({', '.join(IMAGE_SUFFIXES)}), no folders "
                        "of them and no manifest.csv")


def _one_per_pixel(reading: UserImages, sets: SegmentSets | None) -> UserImages:
    """A reading of label images (one value per pixel) as set codes when the segments overlap."""
    if sets is None:
        return reading
    reading.images = [sets.of_labels(image) for image in reading.images]
    reading.notes.append("the export holds one label per pixel, so where the segments overlap it holds one of "
                         "them at most")
    return reading


# ------------------------------------------------------------------------------------------------ files

def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _image_files(folder: Path) -> list[Path]:
    return [path for path in folder.iterdir()
            if path.is_file() and not path.name.startswith(".") and _suffix(path) in IMAGE_SUFFIXES]


def read_image(path: Path) -> np.ndarray:
    """One 2D label image as a non-negative integer array, exactly as stored (a grey RGB image as its grey)."""
    if _suffix(path) == ".npy":
        array = _load_npy(path)
    else:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                array = np.array(image)
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise SegAlignError(f"{short_path(path)} cannot be read as an image: {short(error, 120)}") from None
    if array.ndim == 3 and array.shape[2] in (2, 3, 4):  # LA, RGB, RGBA: a label image saved in colour
        channels = array[:, :, :3] if array.shape[2] >= 3 else array[:, :, :1]
        if not np.all(channels == channels[:, :, :1]):
            raise SegAlignError(f"{short_path(path)} is a colour image: a label image has one value per pixel "
                                "(grayscale, 8 or 16 bit)")
        array = channels[:, :, 0]
    if array.ndim != 2:
        raise SegAlignError(f"{short_path(path)} is not a 2D image (shape {array.shape})")
    return as_labels(array, path)


def read_images(paths: Sequence[Path]) -> list[np.ndarray]:
    """:func:`read_image` of every path, two at a time (PNG and TIFF decoding releases the GIL)."""
    if len(paths) < 8:
        return [read_image(path) for path in paths]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(read_image, paths))


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise SegAlignError(f"{short_path(path)} cannot be read as a .npy array: {short(error, 120)}") from None


def as_labels(array: np.ndarray, path: Path) -> np.ndarray:
    """``array`` as non-negative integers (bool as 0/1; floats only when every value is a whole number)."""
    array = np.asarray(array)
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise SegAlignError(f"{short_path(path)} holds values that are not whole numbers: not label images")
        array = array.astype(np.int64)
    if array.dtype.kind not in "iu":
        raise SegAlignError(f"{short_path(path)} holds {array.dtype} values, not labels")
    if array.size and array.min() < 0:
        raise SegAlignError(f"{short_path(path)} holds negative values ({int(array.min())}): not label values")
    if array.size and int(array.max()) > 65535:
        raise SegAlignError(f"{short_path(path)} holds values over 65535: not label values")
    if array.dtype.kind == "i" or array.dtype.itemsize > 2:
        array = array.astype(np.uint16 if array.size and array.max() > 255 else np.uint8)
    return array


# ------------------------------------------------------------------------------------------------ arrays

def _array_readings(path: Path, frame_count: int) -> list[UserImages]:
    array = _read_array(path)
    array = np.squeeze(array) if array.ndim > 3 else array
    if array.ndim != 3:
        raise SegAlignError(f"the export {short_path(path)} is a {array.ndim}D array of shape {array.shape}; a 3D "
                            "array of the slices in DICOM order is expected")
    array = as_labels(array, path)
    volume_like = _suffix(path) != ".npy"  # nibabel and pynrrd give (x, y, z): the frames on the last axis
    layouts = ["frames last", "frames first"] if volume_like else ["frames first", "frames last"]
    readings = []
    for layout in layouts:
        count = array.shape[0] if layout == "frames first" else array.shape[2]
        images = [array[k] if layout == "frames first" else array[:, :, k] for k in range(count)]
        notes = [] if layout == "frames first" else [
            f"the array's frames are on its last axis (image k is array[:, :, k], as nibabel and pynrrd give a "
            f"volume), {count} of them"]
        readings.append(UserImages(
            "array", path, [f"frame {k}" for k in range(count)], images,
            [k if k < frame_count else None for k in range(count)], "array order", layout, notes))
    return readings


def _read_array(path: Path) -> np.ndarray:
    suffix = _suffix(path)
    if suffix == ".npy":
        return _load_npy(path)
    try:
        if suffix in (".nii", ".nii.gz"):
            import nibabel as nib

            return np.asarray(nib.load(str(path)).dataobj)
        import nrrd

        data, _ = nrrd.read(str(path), index_order="F")
        return np.asarray(data)
    except SegAlignError:
        raise
    except Exception as error:  # the readers raise their own types for damaged files
        raise SegAlignError(f"{short_path(path)} cannot be read: {short(error, 160)}") from None


# ------------------------------------------------------------------------------------------------ DICOM SEG

#: Segmentation Storage and Label Map Segmentation Storage.
SEG_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")


def _is_dicom(path: Path) -> bool:
    try:
        with path.open("rb") as stream:
            return stream.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def _seg_reading(path: Path, frames: Sequence[Frame], segments: Sequence[Label],
                 sets: SegmentSets | None = None) -> UserImages:
    """A DICOM SEG, frame by frame through its references: one label image per source frame it references (a
    BINARY SEG's segments on that frame together), tied to that frame (by ReferencedSOPInstanceUID and
    ReferencedFrameNumber; by its ImagePositionPatient when it references none), in the order of the SEG's frames,
    each named by the number of its first SEG frame (``frame N``, from 1 as DICOM counts)."""
    import pydicom

    from ..errors import describe, quiet_warnings

    try:
        with quiet_warnings():
            dataset = pydicom.dcmread(str(path))
    except Exception as error:
        raise SegAlignError(f"{short_path(path)} is not a readable DICOM file: {describe(error)}") from None
    sop_class = str(dataset.get("SOPClassUID", ""))
    if sop_class == RT_STRUCTURE_SET_STORAGE:
        return _rtstruct_reading(dataset, path, frames, segments, sets)
    if sop_class not in SEG_SOP_CLASSES:
        raise SegAlignError(f"{short_path(path)} is a DICOM {short(dataset.get('Modality', '?'), 16)} object, not a "
                            "DICOM SEG or RTSTRUCT")
    try:
        with quiet_warnings():
            pixels = np.asarray(dataset.pixel_array)
    except Exception as error:
        raise SegAlignError(f"the pixel data of {short_path(path)} cannot be decoded: {describe(error)}") from None
    count = int(dataset.get("NumberOfFrames", 1) or 1)
    pixels = pixels.reshape(count, int(dataset.Rows), int(dataset.Columns))
    kind = str(dataset.get("SegmentationType", "BINARY")).upper()
    if kind == "FRACTIONAL":
        pixels = pixels.astype(np.int64) * 2 >= int(dataset.get("MaximumFractionalValue", 255) or 255)
    values = _segment_values(dataset, segments)
    shared = _first(dataset.get("SharedFunctionalGroupsSequence"))
    per_frame = list(dataset.get("PerFrameFunctionalGroupsSequence") or [])
    by_reference = {(frame.sop_instance_uid, frame.frame_number): index for index, frame in enumerate(frames)}
    order: list[object] = []
    members: dict[object, list[int]] = {}
    tied: dict[object, int | None] = {}
    for number in range(count):
        item = per_frame[number] if number < len(per_frame) else None
        reference = _reference(item) or _reference(shared)
        if reference is not None:
            key: object = reference
            tied.setdefault(key, by_reference.get(reference))
        else:
            position = _position(item) or _position(shared)
            key = ("position", position)
            tied.setdefault(key, _frame_at(position, frames) if position is not None else None)
        if key not in members:
            members[key] = []
            order.append(key)
        members[key].append(number)
    largest = max(values.values(), default=1)
    dtype = np.uint16 if largest > 255 else np.uint8
    lookup = np.zeros(max(list(values) + [int(pixels.max()) if kind == "LABELMAP" and pixels.size else 0]) + 1,
                      dtype=np.int64)
    for number, value in values.items():
        lookup[number] = value
    names, images = [], []
    for key in order:
        image = sets.blank(pixels.shape[1:]) if sets is not None else np.zeros(pixels.shape[1:], dtype=dtype)
        for number in members[key]:
            if kind == "LABELMAP":
                labelled = pixels[number] != 0
                if sets is not None:
                    image = sets.union(image, np.where(labelled, lookup[pixels[number]], 0))
                else:
                    image[labelled] = lookup[pixels[number][labelled]]
            else:
                segment = _segment_number(per_frame[number] if number < len(per_frame) else None) \
                    or _segment_number(shared)
                if segment is None:
                    raise SegAlignError(f"frame {number + 1} of {short_path(path)} names no segment "
                                        "(SegmentIdentificationSequence)")
                if sets is not None:
                    sets.paint(image, pixels[number] != 0, values.get(segment, segment))
                else:
                    image[pixels[number] != 0] = values.get(segment, segment)
        names.append(f"frame {members[key][0] + 1}")
        images.append(image)
    note = (f"a {kind} DICOM SEG of {count} frames, read frame by frame: each source frame it references is one image "
            "(tied by ReferencedSOPInstanceUID, else by ImagePositionPatient), named by its first SEG frame")
    return UserImages("DICOM SEG", path, names, images, [tied[key] for key in order],
                      "the images the SEG's frames reference", notes=[note])


def _first(sequence: object) -> object:
    return sequence[0] if sequence else None  # type: ignore[index]


def _reference(item: object) -> tuple[str, int] | None:
    derivation = _first(getattr(item, "DerivationImageSequence", None)) if item is not None else None
    source = _first(getattr(derivation, "SourceImageSequence", None)) if derivation is not None else None
    uid = getattr(source, "ReferencedSOPInstanceUID", None) if source is not None else None
    if not uid:
        return None
    number = getattr(source, "ReferencedFrameNumber", None)
    if isinstance(number, (list, tuple)) or (number is not None and hasattr(number, "__len__") and
                                             not isinstance(number, str)):
        number = number[0] if len(number) else None  # type: ignore[index]
    return str(uid), int(number) if number not in (None, "") else 1


def _position(item: object) -> tuple[float, float, float] | None:
    plane = _first(getattr(item, "PlanePositionSequence", None)) if item is not None else None
    position = getattr(plane, "ImagePositionPatient", None) if plane is not None else None
    return tuple(float(v) for v in position) if position else None  # type: ignore[return-value]


def _segment_number(item: object) -> int | None:
    identification = _first(getattr(item, "SegmentIdentificationSequence", None)) if item is not None else None
    number = getattr(identification, "ReferencedSegmentNumber", None) if identification is not None else None
    return int(number) if number is not None else None


def _frame_at(position: Sequence[float], frames: Sequence[Frame], tolerance: float = 0.01) -> int | None:
    """The frame whose ImagePositionPatient is ``position`` (within ``tolerance`` mm), if exactly one is."""
    found = [index for index, frame in enumerate(frames)
             if np.max(np.abs(np.subtract(frame.position, position))) <= tolerance]
    return found[0] if len(found) == 1 else None


def _segment_values(dataset: object, segments: Sequence[Label]) -> dict[int, int]:
    """SegmentNumber -> label value of the segmentation: the value SegAlign wrote in SegmentDescription ("label
    value N"), else the segment whose name is the SegmentLabel (ignoring case), else the segment number."""
    by_name: dict[str, list[int]] = {}
    for label in segments:
        by_name.setdefault(label.name.casefold(), []).append(label.value)
    values = {}
    for item in getattr(dataset, "SegmentSequence", None) or []:
        number = int(item.SegmentNumber)
        described = re.fullmatch(r"label value ([0-9]+)", str(item.get("SegmentDescription", "")).strip())
        named = by_name.get(str(item.get("SegmentLabel", "")).strip().casefold(), [])
        values[number] = int(described.group(1)) if described else named[0] if len(named) == 1 else number
    return values


# ------------------------------------------------------------------------------------------------ RTSTRUCT

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
#: A contour point farther than this from the plane of the frame it lies on (mm) is off its plane.
OFF_PLANE_MM = 0.01
#: A vertex coordinate within this many pixels of a whole or half pixel is on the pixel grid.
ON_GRID_PIXELS = 0.001


@dataclass
class _Placement:
    """Where a writer may have put the contours of each frame: for frame ``index``, LPS = origin + matrix @
    (column, row, distance from the plane). ``own``: each frame's own plane and pixel grid (DICOM's meaning)."""

    key: str  #: "own", "stack up", "stack down"
    swapped: bool  #: PixelSpacing's two values swapped
    planes: dict[int, tuple[np.ndarray, np.ndarray]]  #: frame index -> (inverse matrix, origin)
    words: str = ""  #: the stack, in a finding
    spacing: float = 0.0  #: the stack's slice spacing along the normal (mm)


def _rtstruct_reading(dataset: object, path: Path, frames: Sequence[Frame], segments: Sequence[Label],
                      sets: SegmentSets | None = None) -> UserImages:
    """An RT Structure Set, contour by contour: each CLOSED_PLANAR contour is put on the frame its
    ContourImageSequence references (else the frame whose plane holds it), in that frame's pixel coordinates, and
    the contours of one ROI on one frame are filled together by the even-odd rule at the pixel centres. One image
    per frame with contours, in frame order, named ``frame N`` (N: the frame's index in acquisition order).

    Contours a writer placed on another geometry than the frames' own are found and placed where that writer meant
    them, the fault named: PixelSpacing's two values swapped, and a stack of parallel planes built from the lowest
    (or highest) frame at the mean slice spacing, on that frame's pixel grid (what rt-utils does: on a tilted
    series it moves each frame's contours within its plane, on unevenly spaced slices off it). Either is taken only
    when the contours' vertices lie on that geometry's pixel grid (whole or half pixels) and not on the frames' own."""
    values = _roi_values(dataset, segments)
    by_reference = {(frame.sop_instance_uid, frame.frame_number): index for index, frame in enumerate(frames)}
    planes = [_plane(frame) for frame in frames]
    contours: list[tuple[int, int, np.ndarray, bool]] = []  # frame index, label value, LPS points, referenced
    unplaced = skipped = 0
    for roi in getattr(dataset, "ROIContourSequence", None) or []:
        value = values.get(int(roi.get("ReferencedROINumber", 0) or 0))
        for contour in roi.get("ContourSequence", None) or []:
            if value is None or str(contour.get("ContourGeometricType", "")).upper() != "CLOSED_PLANAR":
                skipped += 1
                continue
            points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
            image = _first(contour.get("ContourImageSequence", None))
            index = None
            if image is not None and image.get("ReferencedSOPInstanceUID"):
                number = image.get("ReferencedFrameNumber", None)
                index = by_reference.get((str(image.ReferencedSOPInstanceUID), int(number) if number else 1))
            referenced = index is not None
            if index is None:
                index = _plane_holding(points, planes)
            if index is None:
                unplaced += 1
                continue
            contours.append((index, value, points, referenced))
    own = _Placement("own", False, {index: (planes[index][1], planes[index][2]) for index in {c[0] for c in contours}})
    local_own = [_local(points, own, index) for index, _, points, _ in contours]
    chosen, local = own, local_own
    if contours and not _fits(own, contours, local_own):
        for placement in _placements(frames, {c[0] for c in contours}):
            placed = [_local(points, placement, index) for index, _, points, _ in contours]
            if _fits(placement, contours, placed):
                chosen, local = placement, placed
                break
    snap = _on_grid([rc for rc, _ in local]) >= 0.9  # vertices on the grid: put them exactly on it
    polygons: dict[int, dict[int, list[np.ndarray]]] = {}
    for (index, value, _, _), (rc, _) in zip(contours, local):
        if snap:
            rc = _snapped(rc)
        polygons.setdefault(index, {}).setdefault(value, []).append(rc)
    faults = _placement_faults(chosen, frames, contours, local_own)
    names, images, tied, under = [], [], [], []
    dtype = np.uint16 if max(values.values(), default=1) > 255 else np.uint8
    for index in sorted(polygons):
        frame = frames[index]
        image = sets.blank((frame.rows, frame.columns)) if sets is not None else \
            np.zeros((frame.rows, frame.columns), dtype=dtype)
        for value, shapes in polygons[index].items():
            filled = even_odd(shapes, frame.rows, frame.columns)
            if sets is not None:
                sets.paint(image, filled, value)
            else:
                image[filled] = value
        names.append(f"frame {index}")
        images.append(image)
        tied.append(index)
        under.append(_centres_on(polygons[index].values(), frame.rows, frame.columns) if snap else None)
    notes = [f"an RTSTRUCT of {plural(len(contours), 'contour')} on {plural(len(images), 'frame')}, each filled on "
             "the frame it references (ContourImageSequence), by the even-odd rule at the pixel centres"]
    if unplaced:
        faults.append(f"{plural(unplaced, 'contour')} reference no frame of the series and lie on none of its planes")
    if skipped:
        notes.append(f"{plural(skipped, 'contour')} of no known ROI or not CLOSED_PLANAR left out")
    reading = UserImages("RTSTRUCT", path, names, images, tied, "the frames the contours reference", notes=notes,
                         faults=faults)
    reading.under_contours = under if any(mask is not None and mask.any() for mask in under) else None
    return reading


def _fits(placement: _Placement, contours: Sequence[tuple[int, int, np.ndarray, bool]],
          local: Sequence[tuple[np.ndarray, np.ndarray]]) -> bool:
    """Whether the contours lie on the placement's planes and their vertices on its pixel grid (nine in ten of
    them; a stack counts only the contours that reference their frame)."""
    usable = [i for i, c in enumerate(contours) if c[3] or placement.key == "own"]
    on_plane = sum(1 for i in usable if np.max(np.abs(local[i][1])) <= OFF_PLANE_MM)
    return on_plane >= 0.9 * len(contours) and _on_grid([local[i][0] for i in usable]) >= 0.9


def _local(points: np.ndarray, placement: _Placement, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of the points in the placement's pixel grid of frame ``index``, and their distance (mm) from
    its plane."""
    inverse, origin = placement.planes[index]
    local = (points - origin) @ inverse.T
    return local[:, [1, 0]], local[:, 2]


def _placements(frames: Sequence[Frame], used: set[int]) -> list[_Placement]:
    """The geometries a writer may have used instead of the frames' own, most likely first: PixelSpacing swapped;
    a stack of parallel planes from the lowest frame up (rt-utils), swapped or not; from the highest frame down."""
    placements = [_Placement("own", True, {i: _plane(frames[i], swapped=True)[1:] for i in used})]
    count = len(frames)
    first = frames[0]
    if count < 2 or any(frame.tiles for frame in frames) or any(
            not np.allclose(frame.orientation, first.orientation, atol=1e-4)
            or not np.allclose(frame.pixel_spacing, first.pixel_spacing, rtol=1e-6) for frame in frames):
        return placements
    normal = np.asarray(first.normal, dtype=float)
    normal = normal / np.linalg.norm(normal)
    heights = np.array([float(np.dot(frame.position, normal)) for frame in frames])
    order = np.argsort(heights, kind="stable")
    if np.min(np.diff(heights[order])) <= 1e-3:  # frames at one position (4D): no stack
        return placements
    for key, ranked in (("stack up", order), ("stack down", order[::-1])):
        base = frames[int(ranked[0])]
        spacing = (heights[int(ranked[-1])] - heights[int(ranked[0])]) / (count - 1)
        rank = {int(frame): k for k, frame in enumerate(ranked)}
        for swapped in (False, True):
            _, inverse, origin = _plane(base, swapped=swapped)
            placements.append(_Placement(
                key, swapped, {i: (inverse, origin + rank[i] * spacing * normal) for i in used},
                f"the {'lowest' if key == 'stack up' else 'highest'} frame", abs(spacing)))
    order_of = {"own": 0, "stack up": 1, "stack down": 2}
    return sorted(placements, key=lambda p: (order_of[p.key], p.swapped))


def _placement_faults(chosen: _Placement, frames: Sequence[Frame],
                      contours: Sequence[tuple[int, int, np.ndarray, bool]],
                      local_own: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[str]:
    """The findings on where the writer put the contours (none when on each frame's own plane and grid)."""
    faults = []
    distances = [float(np.max(np.abs(distance))) for _, distance in local_own]
    off = [d for d in distances if d > OFF_PLANE_MM]
    if chosen.key != "own":
        used = sorted({c[0] for c in contours})
        normal = np.asarray(frames[used[0]].normal, dtype=float)
        normal = normal / np.linalg.norm(normal)
        moves_mm, moves_px = [], []
        for index in used:
            _, origin = chosen.planes[index]
            step = origin - np.asarray(frames[index].position, dtype=float)
            within = step - np.dot(step, normal) * normal
            moves_mm.append(float(np.linalg.norm(within)))
            column, row, _ = _plane(frames[index])[1] @ within
            moves_px.append(float(np.hypot(row, column)))
        heights = sorted(float(np.dot(frame.position, normal)) for frame in frames)
        gaps = np.diff(heights)
        ends = [np.asarray(frames[i].position, dtype=float) for i in
                sorted(range(len(frames)), key=lambda i: float(np.dot(frames[i].position, normal)))[::len(frames) - 1]]
        stacking = ends[1] - ends[0]
        tilt = float(np.degrees(np.arccos(min(1.0, abs(float(np.dot(stacking, normal))) / np.linalg.norm(stacking)))))
        parts = []
        if off:
            parts.append(f"{plural(len(off), 'contour')} of {len(distances)} lie off the plane of the frame they "
                         f"reference, by up to {max(off):.3g} mm (the slices are {gaps.min():.3g} to {gaps.max():.3g} "
                         "mm apart, not evenly spaced)")
        moved = [m for m in moves_mm if m > OFF_PLANE_MM]
        if moved:
            parts.append(f"the contours of {plural(len(moved), 'frame')} are moved within their planes, by up to "
                         f"{max(moves_mm):.3g} mm ({max(moves_px):.3g} pixels; the slices are stacked {tilt:.3g} "
                         "degrees off their normal: a tilted gantry)")
        faults.append(
            f"the contours were placed on a stack of parallel planes built from {chosen.words} (frame k in position "
            f"order at that frame's ImagePositionPatient plus k x {chosen.spacing:.4g} mm, the mean slice spacing, "
            "along the normal, on that frame's pixel grid), not on each frame's own plane and grid, as rt-utils "
            "places them" + (": " + "; ".join(parts) if parts else "") + "; what follows is judged with the contours "
            "where that stack puts them on the frames they reference")
    elif off:
        faults.append(f"{plural(len(off), 'contour')} of {len(distances)} lie off the plane of the frame they are "
                      f"on, by up to {max(off):.3g} mm (a writer that placed them on another geometry, e.g. a volume "
                      "resampled across a tilted or unevenly spaced series)")
    if chosen.swapped:
        row_spacing, column_spacing = frames[contours[0][0]].pixel_spacing
        faults.append(f"the contours were placed with PixelSpacing's two values swapped ({row_spacing:g} mm between "
                      f"rows taken as the spacing of the columns, {column_spacing:g} mm as that of the rows): every "
                      f"structure is stretched by {row_spacing / column_spacing:.3g} along the rows and "
                      f"{column_spacing / row_spacing:.3g} along the columns; what follows is judged with that undone")
    return faults


def _on_grid(polygons: Sequence[np.ndarray]) -> float:
    """The share of vertices on the pixel grid (both coordinates a whole or half pixel, within
    :data:`ON_GRID_PIXELS`): a writer's contours follow pixel edges or centres in the geometry it used."""
    if not polygons:
        return 0.0
    values = np.concatenate([np.asarray(p, dtype=float).reshape(-1, 2) for p in polygons]) * 2
    return float(np.mean(np.all(np.abs(values - np.round(values)) <= 2 * ON_GRID_PIXELS, axis=1)))


def _snapped(rc: np.ndarray) -> np.ndarray:
    """Vertex coordinates on the grid (within :data:`ON_GRID_PIXELS` of a whole or half pixel) put exactly on it:
    a pixel centre on a contour is then on it, not a rounding error to one side."""
    doubled = np.asarray(rc, dtype=float) * 2
    rounded = np.round(doubled)
    return np.where(np.abs(doubled - rounded) <= 2 * ON_GRID_PIXELS, rounded, doubled) / 2


def _centres_on(shapes: Iterable[Sequence[np.ndarray]], rows: int, columns: int) -> np.ndarray:
    """Pixel centres lying on a contour line: on the edges between vertices at whole pixel coordinates (contours
    drawn through pixel centres, as OpenCV's findContours traces the boundary pixels of a mask)."""
    mask = np.zeros((rows, columns), dtype=bool)
    for polygons in shapes:
        for polygon in polygons:
            start = np.asarray(polygon, dtype=float)
            whole = np.all(start == np.round(start), axis=1)
            if not whole.any():
                continue
            end = np.roll(start, -1, axis=0)
            ends_whole = np.roll(whole, -1)
            for (r0, c0), (r1, c1) in zip(start[whole & ends_whole], end[whole & ends_whole]):
                dr, dc = int(r1 - r0), int(c1 - c0)
                steps = max(math.gcd(abs(dr), abs(dc)), 1)
                k = np.arange(steps + 1)
                r = (int(r0) + k * (dr // steps)).astype(np.int64)
                c = (int(c0) + k * (dc // steps)).astype(np.int64)
                keep = (r >= 0) & (r < rows) & (c >= 0) & (c < columns)
                mask[r[keep], c[keep]] = True
    return mask


def _plane(frame: Frame, swapped: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(matrix, its inverse, origin): LPS = origin + matrix @ (column, row, distance along the normal); with
    ``swapped``, PixelSpacing's two values the other way round (the column step is PixelSpacing[0])."""
    iop = np.asarray(frame.orientation, dtype=float)
    row_spacing, column_spacing = frame.pixel_spacing
    if swapped:
        row_spacing, column_spacing = column_spacing, row_spacing
    normal = np.cross(iop[:3], iop[3:6])
    matrix = np.column_stack([column_spacing * iop[:3], row_spacing * iop[3:6], normal / np.linalg.norm(normal)])
    return matrix, np.linalg.inv(matrix), np.asarray(frame.position, dtype=float)


def _plane_holding(points: np.ndarray, planes: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> int | None:
    """The frame whose plane holds the points best, when they lie within a tenth of a millimetre of it."""
    distances = [float(np.max(np.abs((points - origin) @ inverse[2]))) for _, inverse, origin in planes]
    best = int(np.argmin(distances)) if distances else None
    return best if best is not None and distances[best] <= 0.1 else None


def even_odd(polygons: Sequence[np.ndarray], rows: int, columns: int) -> np.ndarray:
    """Pixel centres inside polygons given as (row, column) vertices, by the even-odd rule (the polygons of one
    structure together: holes and islands XOR). An edge counts on the pixel rows it spans half-open (lower end
    included), and a centre is inside when an odd number of crossings lies at or left of it: a centre exactly on a
    left edge is inside, on a right edge outside."""
    toggles = np.zeros((rows, columns + 1), dtype=np.int32)
    for polygon in polygons:
        start = np.asarray(polygon, dtype=float)
        end = np.roll(start, -1, axis=0)
        low, high = np.minimum(start[:, 0], end[:, 0]), np.maximum(start[:, 0], end[:, 0])
        spans = high > low
        for (r0, c0), (r1, c1), a, b in zip(start[spans], end[spans], low[spans], high[spans]):
            crossed = np.arange(max(int(np.ceil(a - 1e-9)), 0), min(int(np.ceil(b - 1e-9)), rows))
            if not crossed.size:
                continue
            at = c0 + (crossed - r0) * (c1 - c0) / (r1 - r0)
            first = np.clip(np.ceil(at - 1e-9).astype(np.int64), 0, columns)
            np.add.at(toggles, (crossed, first), 1)
    return (np.cumsum(toggles, axis=1)[:, :columns] % 2).astype(bool)


def _roi_values(dataset: object, segments: Sequence[Label]) -> dict[int, int]:
    """ROINumber -> label value: SegAlign's ROIDescription ("label value N"), else the segment whose name is the
    ROIName (ignoring case), else the ROI number."""
    by_name: dict[str, list[int]] = {}
    for label in segments:
        by_name.setdefault(label.name.casefold(), []).append(label.value)
    values = {}
    for item in getattr(dataset, "StructureSetROISequence", None) or []:
        number = int(item.ROINumber)
        described = re.fullmatch(r"label value ([0-9]+)", str(item.get("ROIDescription", "")).strip())
        named = by_name.get(str(item.get("ROIName", "")).strip().casefold(), [])
        values[number] = int(described.group(1)) if described else named[0] if len(named) == 1 else number
    return values


# ------------------------------------------------------------------------------------------------ SegAlign's manifest

def _manifest_of(export: Path) -> Path | None:
    """SegAlign's manifest of ``export``: its own, or its parent's when ``export`` is an export's labels/ folder."""
    for candidate in (export / "manifest.csv", export.parent / "manifest.csv"):
        if candidate.is_file():
            try:
                with candidate.open(newline="", encoding="utf-8") as stream:
                    header = next(csv.reader(stream), [])
            except (OSError, UnicodeDecodeError, csv.Error):
                continue
            if all(key in header for key in MANIFEST_KEYS):
                if candidate.parent == export or export.name == "labels":
                    return candidate
    return None


def _segalign_export(manifest: Path, frames: Sequence[Frame], sets: SegmentSets | None = None) -> UserImages:
    """SegAlign's export, each label image tied to its frame by the manifest; with ``sets`` (overlapping segments),
    every layer of the frame (``label_png``, ``label_png_2``...) together."""
    root = manifest.parent
    by_key = {(frame.sop_instance_uid, frame.frame_number): index for index, frame in enumerate(frames)}
    with manifest.open(newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        rows = list(reader)
        header = list(reader.fieldnames or [])
    layers = ["label_png"] + sorted((key for key in header if re.fullmatch(r"label_png_[0-9]+", key)),
                                    key=lambda key: int(key.rsplit("_", 1)[1]))
    names, paths, tied = [], [], []
    for row in rows:
        found = []
        for column in layers if sets is not None else layers[:1]:
            if not row.get(column):
                continue
            path = root / row[column]
            if not path.is_file():
                raise SegAlignError(f"{short_path(manifest)} names {short(row[column])}, which is missing")
            found.append(path)
        try:
            key = (row["sop_instance_uid"], int(row["frame"]))
        except ValueError:
            raise SegAlignError(f"{short_path(manifest)}: frame {short(row['frame'])} is not a number") from None
        names.append(row["label_png"])
        paths.append(found)
        tied.append(by_key.get(key))
    read = iter(read_images([path for found in paths for path in found]))
    if sets is None:
        images = [next(read) for _ in paths]
    else:
        images = [sets.of_layers([next(read) for _ in found]) for found in paths]
    notes = ([f"the manifest's {len(layers)} label layers of every frame together ({', '.join(layers)})"]
             if sets is not None and len(layers) > 1 else [])
    if sets is not None and len(layers) == 1:
        notes.append("the export has one label layer, so where the segments overlap it holds one of them at most")
    return UserImages("SegAlign export", root, names, images, tied, "manifest.csv (SOPInstanceUID and frame)",
                      notes=notes)


# ------------------------------------------------------------------------------------------------ image folders

def _folder_readings(
    folder: Path, paths: list[Path], frames: Sequence[Frame], segments: Sequence[Label], kind: str,
) -> list[UserImages]:
    images = dict(zip([path.name for path in paths], read_images(paths)))
    _masks_as_label(images, segments)
    base = UserImages(kind, folder, [], [], [], "")
    return [_tied(base, images, reading) for reading in tie_readings(list(images), frames)]


def _tied(base: UserImages, images: Mapping[str, np.ndarray], reading: "Reading") -> UserImages:
    order = reading.order
    return base.with_ties([name for name in order], [images[name] for name in order],
                          [reading.tied[name] for name in order], reading.rule)


def _masks_as_label(images: dict[str, np.ndarray], segments: Sequence[Label]) -> None:
    """0/255 (or 0/65535) masks of a one-label segmentation: their foreground is that label."""
    if len(segments) != 1:
        return
    values: set[int] = set()
    for image in images.values():
        values.update(int(v) for v in np.unique(image))
        if len(values) > 2:
            return
    full = {255, 65535} & values
    if full and values <= {0} | full and segments[0].value not in full:
        for name, image in images.items():
            images[name] = (image != 0).astype(np.uint8 if segments[0].value < 256 else np.uint16) * segments[0].value


def _label_folder_readings(
    export: Path, folders: list[Path], frames: Sequence[Frame], segments: Sequence[Label],
    sets: SegmentSets | None = None,
) -> list[UserImages]:
    """One folder of masks per label, combined into label images (a later folder wins where masks overlap); with
    ``sets`` (overlapping segments), into set codes, every mask whole."""
    values = [_label_of_folder(folder, segments) for folder in folders]
    combined: dict[str, np.ndarray] = {}
    for folder, value in zip(folders, values):
        found = _image_files(folder)
        for path, read in zip(found, read_images(found)):
            mask = read != 0
            image = combined.get(path.name)
            if image is None:
                image = combined[path.name] = sets.blank(mask.shape) if sets is not None else \
                    np.zeros(mask.shape, dtype=np.uint16 if value > 255 else np.uint8)
            elif image.shape != mask.shape:
                raise SegAlignError(f"{short_path(path)} is {mask.shape[0]}x{mask.shape[1]}, the masks of the same "
                                    f"name in other folders are {image.shape[0]}x{image.shape[1]}")
            if sets is not None:
                sets.paint(image, mask, value)
                continue
            if value > 255 and image.dtype == np.uint8:
                image = combined[path.name] = image.astype(np.uint16)
            image[mask] = value
    base = UserImages("label folders", export, [], [], [], "",
                      notes=[f"one folder of masks per label: {', '.join(f'{f.name} = {v}' for f, v in zip(folders, values))}"])
    return [_tied(base, combined, reading) for reading in tie_readings(list(combined), frames)]


def _label_of_folder(folder: Path, segments: Sequence[Label]) -> int:
    name = folder.name
    for match in (lambda label: label.name == name, lambda label: label.name.casefold() == name.casefold(),
                  lambda label: safe_name(label.name).casefold() == name.casefold()):
        found = [label.value for label in segments if match(label)]
        if len(found) == 1:
            return found[0]
    if name.isdigit():
        return int(name)
    raise SegAlignError(f"the folder {short(name)} of the export names no label of the segmentation (by name or "
                        f"value; its labels: {', '.join(short(label.name, 30) for label in segments[:8])}"
                        f"{' ...' if len(segments) > 8 else ''})")


# ------------------------------------------------------------------------------------------------ ties

@dataclass
class Reading:
    """One way of tying image names to frames: the names in report order, each one's frame (or None)."""

    order: list[str]
    tied: dict[str, int | None]
    rule: str


UID = re.compile(r"[0-9]+(?:\.[0-9]+){3,}")
NUMBER = re.compile(r"[0-9]+")


def stem(name: str) -> str:
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def natural_key(name: str) -> list[object]:
    """``img2`` before ``img10``: digits compared as numbers."""
    return [(0, int(part), part) if part.isdigit() else (1, 0, part) for part in re.split(r"([0-9]+)", name)]


def tie_readings(names: list[str], frames: Sequence[Frame]) -> list[Reading]:
    """The readings of ``names`` worth trying, preferred first, without two that tie every name alike: by the
    SOPInstanceUIDs in the names, else by a number in them, else (names without meaning) by their sorted order."""
    readings = _uid_reading(names, frames) or _number_readings(names, frames) or _sorted_readings(names, len(frames))
    unique: list[Reading] = []
    for reading in readings:
        if not any(reading.tied == other.tied and reading.order == other.order for other in unique):
            unique.append(reading)
    return unique


def _by_frame(names: list[str], tied: dict[str, int | None]) -> list[str]:
    """Names in the order of their frames; names tied to none after them, in natural order."""
    return sorted(names, key=lambda name: (tied[name] is None, tied[name] if tied[name] is not None else 0,
                                           natural_key(name)))


def _uid_reading(names: list[str], frames: Sequence[Frame]) -> list[Reading]:
    by_uid: dict[str, list[int]] = {}
    for index, frame in enumerate(frames):
        by_uid.setdefault(frame.sop_instance_uid, []).append(index)
    tied: dict[str, int | None] = {}
    for name in names:
        found = [uid for uid in UID.findall(name) if uid in by_uid]
        if not found:
            return []
        indices = by_uid[found[0]]
        if len(indices) > 1:  # a multi-frame file: the frame number after the UID
            rest = NUMBER.findall(stem(name).split(found[0], 1)[1])
            number = int(rest[0]) if rest else 1
            indices = [i for i in indices if frames[i].frame_number == number] or [None]  # type: ignore[list-item]
        tied[name] = indices[0]
    return [Reading(_by_frame(names, tied), tied, "the SOPInstanceUID in their names")]


def _number_readings(names: list[str], frames: Sequence[Frame]) -> list[Reading]:
    """Readings of one number field of the names (the same in none of them): as InstanceNumber, index from 0,
    index from 1; those that name an existing frame for every image (else the ones that name most)."""
    fields = [[int(n) for n in NUMBER.findall(stem(name))] for name in names]
    if not fields or any(not f for f in fields):
        return []
    counts = {len(f) for f in fields}
    positions: list[tuple[str, list[int]]] = []
    if len(counts) == 1:
        for position in range(counts.pop()):
            positions.append((f"number {position + 1}", [f[position] for f in fields]))
    else:
        positions.append(("last number", [f[-1] for f in fields]))
    instance: dict[int, int] = {}
    duplicated = set()
    for index, frame in enumerate(frames):
        if frame.instance_number is not None:
            if frame.instance_number in instance:
                duplicated.add(frame.instance_number)
            instance[frame.instance_number] = index
    for number in duplicated:
        del instance[number]
    count = len(frames)
    readings: list[tuple[int, Reading]] = []
    for _, values in positions:
        if len(set(values)) != len(values):
            continue
        for rule, lookup in (
            ("the InstanceNumber in their names", lambda v: instance.get(v)),
            ("the index in their names (from 0)", lambda v: v if 0 <= v < count else None),
            ("the index in their names (from 1)", lambda v: v - 1 if 1 <= v <= count else None),
        ):
            tied = {name: lookup(value) for name, value in zip(names, values)}
            named = sum(value is not None for value in tied.values())
            if named:
                readings.append((named, Reading(_by_frame(names, tied), tied, rule)))
    if not readings:
        return []
    best = max(named for named, _ in readings)
    return [reading for named, reading in readings if named == best]


def _sorted_readings(names: list[str], count: int) -> list[Reading]:
    readings = []
    for rule, order in (("their sorted name order (natural: 2 before 10)", sorted(names, key=natural_key)),
                        ("their sorted name order (plain text)", sorted(names))):
        tied = {name: (index if index < count else None) for index, name in enumerate(order)}
        readings.append(Reading(order, tied, rule))
    return readings
