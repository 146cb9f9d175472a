"""Independent readers of RT Structure Sets, for checking the RTSTRUCT that ``segalign export --rtstruct`` writes.

None of them uses SegAlign.

* :func:`even_odd`: a rasteriser written here. Polygons in a frame's (row, column) pixel coordinates; every pixel
  centre is marked by the even-odd rule (a vectorised crossing-number test along each pixel row: an edge counts
  when it spans the row half-open, ``min(r0, r1) <= R < max(r0, r1)``, so rays through vertices are counted once
  and horizontal edges never). The parity over the edges of several polygons is the XOR of their masks: holes and
  islands combine by the even-odd rule. ``boundary="inside"`` also marks pixel centres lying on an edge (within a
  tolerance), for contours drawn *through* pixel centres, as rt-utils (OpenCV's findContours) draws them.
* :func:`to_pixels`: contour points (LPS mm) to a frame's (row, column) pixel coordinates by inverting the plane
  (DICOM PS3.3 C.7.6.2.1.1: pixel (r, c) is centred at IPP + c * PixelSpacing[1] * IOP[0:3] + r * PixelSpacing[0] *
  IOP[3:6]), with each point's distance from the plane along its normal.
* :func:`read_rtstruct` / :func:`rtstruct_masks`: pydicom reads the RTSTRUCT; each contour is rasterised on the
  frame its ContourImageSequence references (after checking every point lies in that frame's plane).
* :func:`edge_following_problems`: checks a contour runs along pixel edges (half-integer vertices, axis-aligned
  edges alternating horizontal / vertical, no repeated or collinear points).
* :func:`raw_decimal_strings`: every DS value of a file as the bytes stored (ContourData never converted to
  floats first), to check the 16-character limit.
* :func:`dicompyler_read` (dicompyler-core) and :func:`rtutils_names` / :func:`rtutils_masks` (rt-utils) as second
  readers; :func:`rtutils_like_users` builds an RTSTRUCT the way rt-utils' users do (SimpleITK series reading and
  resampling, then ``RTStructBuilder.create_new`` and ``add_roi``).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import RawDataElement

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"

FrameKey = tuple[str, int]  #: (ReferencedSOPInstanceUID, frame number, 1-based; 1 for single-frame sources)


class ContourError(AssertionError):
    """A contour cannot be placed on the frame it references (off the plane, unknown frame, bad type...)."""


# ----------------------------------------------------------------------------------------------------------------
# Plane geometry
# ----------------------------------------------------------------------------------------------------------------


def plane_matrix(frame) -> tuple[np.ndarray, np.ndarray]:
    """``(M, IPP)`` with LPS = IPP + M @ (column, row, normal distance): M's columns are PixelSpacing[1] * IOP[0:3],
    PixelSpacing[0] * IOP[3:6] and the unit normal IOP[0:3] x IOP[3:6]. ``frame`` has position, orientation,
    spacing (as SourceFrame in test_dicom_seg)."""
    iop = np.asarray(frame.orientation, dtype=float)
    spacing = np.asarray(frame.spacing, dtype=float)
    normal = np.cross(iop[:3], iop[3:6])
    normal = normal / np.linalg.norm(normal)
    return np.column_stack([spacing[1] * iop[:3], spacing[0] * iop[3:6], normal]), np.asarray(frame.position, float)


def to_pixels(points: np.ndarray, frame, *, inverse: tuple[np.ndarray, np.ndarray] | None = None):
    """LPS points ``(N, 3)`` as ``(N, 2)`` (row, column) pixel coordinates of ``frame``, and their distance (mm) from
    the frame's plane along its normal (signed). ``inverse``: :func:`plane_inverse` of the frame, if known."""
    to_local, ipp = inverse if inverse is not None else plane_inverse(frame)
    local = (np.asarray(points, dtype=float) - ipp) @ to_local.T  # (column, row, normal)
    return np.column_stack([local[:, 1], local[:, 0]]), local[:, 2]


def plane_inverse(frame) -> tuple[np.ndarray, np.ndarray]:
    """``(inverse of M, IPP)`` of :func:`plane_matrix`: LPS to (column, row, normal distance)."""
    matrix, ipp = plane_matrix(frame)
    return np.linalg.inv(matrix), ipp


def from_pixels(rc: np.ndarray, frame) -> np.ndarray:
    """(row, column) pixel coordinates ``(N, 2)`` of ``frame`` as LPS points ``(N, 3)``."""
    matrix, ipp = plane_matrix(frame)
    rc = np.asarray(rc, dtype=float)
    return ipp + np.column_stack([rc[:, 1], rc[:, 0], np.zeros(len(rc))]) @ matrix.T


# ----------------------------------------------------------------------------------------------------------------
# The rasteriser
# ----------------------------------------------------------------------------------------------------------------


def even_odd(
    polygons: Iterable[np.ndarray],
    shape: tuple[int, int],
    *,
    boundary: str | None = None,
    tolerance: float = 1e-3,
) -> np.ndarray:
    """Pixel centres ``(r, c)`` (integers) inside the polygons by the even-odd rule, as a bool ``shape`` mask.

    Each polygon is an ``(N, 2)`` array of (row, column) vertices, closed implicitly (last to first). Crossings are
    counted along each pixel row over the edges of all polygons together, so overlapping polygons XOR.
    ``boundary="inside"`` also marks centres within ``tolerance`` pixels of any edge; with None, centres on an edge
    fall on whichever side the floating-point arithmetic puts them (callers make sure there are none).
    """
    rows, columns = int(shape[0]), int(shape[1])
    starts, ends = [], []
    for polygon in polygons:
        polygon = np.asarray(polygon, dtype=float).reshape(-1, 2)
        if len(polygon) == 0:
            continue
        starts.append(polygon)
        ends.append(np.roll(polygon, -1, axis=0))
    mask = np.zeros((rows, columns), dtype=bool)
    if not starts:
        return mask
    a, b = np.concatenate(starts), np.concatenate(ends)
    r0, c0, r1, c1 = a[:, 0], a[:, 1], b[:, 0], b[:, 1]
    low, high = np.minimum(r0, r1), np.maximum(r0, r1)
    # integer rows R with low <= R < high, clipped to the image
    first = np.clip(np.ceil(low), 0, rows).astype(np.int64)
    stop = np.clip(np.ceil(high), 0, rows).astype(np.int64)
    counts = np.maximum(stop - first, 0)
    if counts.sum():
        edge = np.repeat(np.arange(len(a)), counts)
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        row = first[edge] + offsets
        x = c0[edge] + (row - r0[edge]) * (c1[edge] - c0[edge]) / (r1[edge] - r0[edge])
        # the crossing is to the right of columns C < x: C = 0 .. ceil(x) - 1
        k = np.clip(np.ceil(x), 0, columns).astype(np.int64)
        histogram = np.zeros((rows, columns + 1), dtype=np.int64)
        np.add.at(histogram, (row, k), 1)
        right = np.cumsum(histogram[:, ::-1], axis=1)[:, ::-1]  # right[R, j] = crossings with k >= j
        mask = (right[:, 1:] % 2).astype(bool)  # crossings with k > C, i.e. x > C
    if boundary == "inside":
        mask |= on_edges(a, b, (rows, columns), tolerance)
    elif boundary is not None:
        raise ValueError(f"boundary must be None or 'inside', not {boundary!r}")
    return mask


def on_edges(a: np.ndarray, b: np.ndarray, shape: tuple[int, int], tolerance: float) -> np.ndarray:
    """Pixel centres within ``tolerance`` pixels of a segment a[i] -> b[i] ((row, column) coordinates)."""
    rows, columns = shape
    result = np.zeros(shape, dtype=bool)
    for (ra, ca), (rb, cb) in zip(a, b):
        r_lo, r_hi = int(np.floor(min(ra, rb) - tolerance)), int(np.ceil(max(ra, rb) + tolerance))
        c_lo, c_hi = int(np.floor(min(ca, cb) - tolerance)), int(np.ceil(max(ca, cb) + tolerance))
        r_lo, c_lo = max(r_lo, 0), max(c_lo, 0)
        r_hi, c_hi = min(r_hi, rows - 1), min(c_hi, columns - 1)
        if r_hi < r_lo or c_hi < c_lo:
            continue
        rr, cc = np.meshgrid(np.arange(r_lo, r_hi + 1), np.arange(c_lo, c_hi + 1), indexing="ij")
        d = np.array([rb - ra, cb - ca])
        length2 = float(d @ d)
        if length2 == 0.0:
            t = np.zeros(rr.shape)
        else:
            t = np.clip(((rr - ra) * d[0] + (cc - ca) * d[1]) / length2, 0.0, 1.0)
        distance = np.hypot(rr - (ra + t * d[0]), cc - (ca + t * d[1]))
        result[rr[distance <= tolerance], cc[distance <= tolerance]] = True
    return result


def edge_following_problems(rc: np.ndarray, tolerance: float = 1e-3) -> list[str]:
    """Why a contour in (row, column) pixel coordinates does not run along pixel edges with its collinear points
    dropped (empty list: it does): vertices at half-integers, edges axis-aligned and alternately horizontal and
    vertical (so no point is repeated and none lies between two collinear neighbours), at least 4 points."""
    rc = np.asarray(rc, dtype=float)
    problems = []
    if len(rc) < 4:
        problems.append(f"{len(rc)} points")
    off_grid = np.abs(rc - 0.5 - np.round(rc - 0.5))
    if off_grid.max(initial=0.0) > tolerance:
        i = int(np.argmax(off_grid.max(axis=1)))
        problems.append(f"point {i} at (row, column) {tuple(np.round(rc[i], 5))} is not a pixel corner")
    step = np.roll(rc, -1, axis=0) - rc
    moves_r, moves_c = np.abs(step[:, 0]) > tolerance, np.abs(step[:, 1]) > tolerance
    if np.any(moves_r & moves_c):
        problems.append(f"{int(np.sum(moves_r & moves_c))} edges are not along a pixel row or column")
    if np.any(~moves_r & ~moves_c):
        problems.append(f"{int(np.sum(~moves_r & ~moves_c))} repeated points")
    horizontal = moves_c & ~moves_r
    if len(rc) >= 2 and np.any(horizontal == np.roll(horizontal, -1)):
        problems.append(f"{int(np.sum(horizontal == np.roll(horizontal, -1)))} collinear points kept")
    return problems


# ----------------------------------------------------------------------------------------------------------------
# Reading the RTSTRUCT with pydicom
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Contour:
    roi: int  #: ReferencedROINumber of its ROIContourSequence item
    index: int  #: 0-based position in that item's ContourSequence
    geometric_type: str
    number_of_points: int | None  #: NumberOfContourPoints as stored
    points: np.ndarray  #: (N, 3) LPS mm, from ContourData
    references: list[tuple[str, int | None]]  #: ContourImageSequence (SOPInstanceUID, ReferencedFrameNumber or None)
    sop_classes: list[str]

    def frame_key(self) -> FrameKey:
        if len(self.references) != 1:
            raise ContourError(f"ROI {self.roi} contour {self.index}: {len(self.references)} contour images")
        uid, number = self.references[0]
        return (uid, 1 if number is None else int(number))


@dataclass
class Roi:
    number: int
    name: str
    frame_of_reference: str
    generation_algorithm: str | None
    color: tuple[int, ...] | None = None
    interpreted_type: str | None = None
    interpreter: str | None = None
    contours: list[Contour] = field(default_factory=list)


def read_rtstruct(path: str | Path) -> tuple[pydicom.Dataset, dict[int, Roi]]:
    """The dataset and ``{ROINumber: Roi}`` tying StructureSetROISequence, ROIContourSequence and
    RTROIObservationsSequence together by ROI number."""
    dataset = pydicom.dcmread(path)
    rois: dict[int, Roi] = {}
    for item in dataset.get("StructureSetROISequence") or []:
        number = int(item.ROINumber)
        if number in rois:
            raise ContourError(f"ROINumber {number} appears twice in StructureSetROISequence")
        rois[number] = Roi(
            number,
            str(item.get("ROIName", "")),
            str(item.get("ReferencedFrameOfReferenceUID", "")),
            str(item.ROIGenerationAlgorithm) if "ROIGenerationAlgorithm" in item else None,
        )
    seen = set()
    for item in dataset.get("ROIContourSequence") or []:
        number = int(item.ReferencedROINumber)
        if number not in rois:
            raise ContourError(f"ROIContourSequence references ROI {number}, which StructureSetROISequence lacks")
        if number in seen:
            raise ContourError(f"two ROIContourSequence items for ROI {number}")
        seen.add(number)
        roi = rois[number]
        if "ROIDisplayColor" in item:
            roi.color = tuple(int(v) for v in item.ROIDisplayColor)
        for index, contour in enumerate(item.get("ContourSequence") or []):
            data = contour_data(contour)
            if data.size % 3:
                raise ContourError(f"ROI {number} contour {index}: {data.size} ContourData values")
            references = [
                (
                    str(image.ReferencedSOPInstanceUID),
                    int(image.ReferencedFrameNumber) if "ReferencedFrameNumber" in image else None,
                )
                for image in contour.get("ContourImageSequence") or []
            ]
            classes = [
                str(image.get("ReferencedSOPClassUID", "")) for image in contour.get("ContourImageSequence") or []
            ]
            roi.contours.append(
                Contour(
                    number,
                    index,
                    str(contour.get("ContourGeometricType", "")),
                    int(contour.NumberOfContourPoints) if "NumberOfContourPoints" in contour else None,
                    data.reshape(-1, 3),
                    references,
                    classes,
                )
            )
    for item in dataset.get("RTROIObservationsSequence") or []:
        number = int(item.ReferencedROINumber)
        if number in rois:
            roi = rois[number]
            roi.interpreted_type = str(item.RTROIInterpretedType) if "RTROIInterpretedType" in item else None
            roi.interpreter = str(item.ROIInterpreter) if "ROIInterpreter" in item else None
    return dataset, rois


def contour_data(contour: pydicom.Dataset) -> np.ndarray:
    """ContourData as floats, parsed from the stored text when pydicom still holds it raw (much faster than its
    DSfloat conversion on structure sets with 100 000 contours; the values are the same: float() of each string)."""
    tag = 0x30060050
    raw = contour.get_item(tag) if tag in contour else None
    if isinstance(raw, RawDataElement) and raw.value is not None:
        text = bytes(raw.value).rstrip(b" \0")
        return np.array([float(v) for v in text.split(b"\\")] if text else [], dtype=float)
    return np.array([float(v) for v in contour.ContourData], dtype=float)


@dataclass
class Placed:
    """A contour in its frame's pixel coordinates."""

    contour: Contour
    key: FrameKey
    rc: np.ndarray  #: (N, 2) row, column
    off_plane: float  #: largest |distance| of a point from the frame's plane, mm


def place_contours(
    rois: Mapping[int, Roi], frames: Mapping[FrameKey, object], *, plane_tolerance: float | None = 1e-3
) -> list[Placed]:
    """Every contour mapped into the pixel coordinates of the frame it references. With ``plane_tolerance`` (mm), a
    point farther than that from the frame's plane, an unknown frame or a type other than CLOSED_PLANAR is an
    error; with None they are not checked (for measuring another writer's contours)."""
    placed = []
    inverses: dict = {}
    for roi in rois.values():
        for contour in roi.contours:
            key = contour.frame_key()
            where = f"ROI {roi.number} ({roi.name}) contour {contour.index}"
            if key not in frames:
                raise ContourError(f"{where} references {key}, which is not a frame of the series")
            if plane_tolerance is not None:
                if contour.geometric_type != "CLOSED_PLANAR":
                    raise ContourError(f"{where} is {contour.geometric_type!r}, not CLOSED_PLANAR")
                if contour.number_of_points != len(contour.points):
                    raise ContourError(
                        f"{where}: NumberOfContourPoints {contour.number_of_points}, {len(contour.points)} points"
                    )
            if key not in inverses:
                inverses[key] = plane_inverse(frames[key])
            rc, distance = to_pixels(contour.points, frames[key], inverse=inverses[key])
            off = float(np.abs(distance).max(initial=0.0))
            if plane_tolerance is not None and off > plane_tolerance:
                i = int(np.argmax(np.abs(distance)))
                raise ContourError(
                    f"{where}: point {i} {contour.points[i].tolist()} is {distance[i]:.6f} mm off the plane of the "
                    f"frame it references {key}"
                )
            placed.append(Placed(contour, key, rc, off))
    return placed


def rtstruct_masks(
    rois: Mapping[int, Roi],
    frames: Mapping[FrameKey, object],
    *,
    boundary: str | None = None,
    plane_tolerance: float | None = 1e-3,
    placed: Sequence[Placed] | None = None,
) -> dict[int, dict[FrameKey, np.ndarray]]:
    """``{ROINumber: {frame: mask}}``: the contours of each ROI on each frame, rasterised by :func:`even_odd` and
    XORed (frames without contours are absent). ``placed``: :func:`place_contours`' result, if already made."""
    grouped: dict[tuple[int, FrameKey], list[np.ndarray]] = {}
    if placed is None:
        placed = place_contours(rois, frames, plane_tolerance=plane_tolerance)
    for item in placed:
        grouped.setdefault((item.contour.roi, item.key), []).append(item.rc)
    result: dict[int, dict[FrameKey, np.ndarray]] = {number: {} for number in rois}
    for (number, key), polygons in grouped.items():
        frame = frames[key]
        result[number][key] = even_odd(polygons, (frame.rows, frame.columns), boundary=boundary)
    return result


def label_images(
    masks: Mapping[int, Mapping[FrameKey, np.ndarray]],
    values: Mapping[int, int],
    frames: Mapping[FrameKey, object],
) -> dict[FrameKey, np.ndarray]:
    """One label image per frame (every frame of ``frames``; zeros where no ROI has contours) from ROI masks and
    ``{ROINumber: label value}``; two ROIs on one pixel is an error (they come from one label map)."""
    dtype = np.uint8 if max(values.values(), default=0) <= 255 else np.uint16
    images = {key: np.zeros((frame.rows, frame.columns), dtype=dtype) for key, frame in frames.items()}
    for number, per_frame in masks.items():
        for key, mask in per_frame.items():
            image = images[key]
            clash = mask & (image != 0)
            if clash.any():
                raise ContourError(f"ROI {number} overlaps another ROI on {int(clash.sum())} pixels of {key}")
            image[mask] = values[number]
    return images


# ----------------------------------------------------------------------------------------------------------------
# Raw DS text
# ----------------------------------------------------------------------------------------------------------------


def raw_decimal_strings(path: str | Path) -> Iterable[tuple[str, bytes]]:
    """``(keyword, stored bytes)`` of every DS element of the file, nested ones included, read without converting
    the values (pydicom keeps elements raw until they are accessed)."""
    dataset = pydicom.dcmread(path)

    def walk(item: pydicom.Dataset):
        for tag in list(item.keys()):
            raw = item.get_item(tag)
            vr = raw.VR if raw.VR is not None else _dictionary_vr(tag)
            if vr == "SQ":
                for child in item[tag].value:
                    yield from walk(child)
            elif vr == "DS":
                value = raw.value if isinstance(raw, RawDataElement) else None
                if value is None:  # already converted (should not happen on a freshly read file)
                    element = item[tag]
                    values = element.value if element.VM > 1 else [element.value]
                    value = "\\".join(
                        str(v.original_string) if hasattr(v, "original_string") else str(v) for v in values
                    ).encode()
                yield str(keyword_for_tag(tag) or tag), bytes(value)

    yield from walk(dataset)


def _dictionary_vr(tag) -> str | None:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


def raw_element_lengths(path: str | Path, keyword: str) -> list[int]:
    """The stored value length (bytes) of every ``keyword`` element of the file, nested ones included."""
    dataset = pydicom.dcmread(path)
    tag = pydicom.datadict.tag_for_keyword(keyword)
    lengths = []

    def walk(item: pydicom.Dataset):
        for element_tag in list(item.keys()):
            raw = item.get_item(element_tag)
            if element_tag == tag:
                lengths.append(int(raw.length) if isinstance(raw, RawDataElement) else -1)
            elif (raw.VR or _dictionary_vr(element_tag)) == "SQ":
                for child in item[element_tag].value:
                    walk(child)

    walk(dataset)
    return lengths


# ----------------------------------------------------------------------------------------------------------------
# dicompyler-core and rt-utils
# ----------------------------------------------------------------------------------------------------------------


def import_dicompyler():
    """dicompyler-core's dicomparser module. dicompyler-core 0.5.6 (its latest release) predates pydicom 3: it imports
    ``pydicom.dicomio.read_file``, which pydicom 3.0 removed (``dcmread`` is the same function), and falls back to the
    long-gone ``dicom`` package. The name is lent to it for the import only."""
    import pydicom.dicomio

    lent = not hasattr(pydicom.dicomio, "read_file")
    if lent:
        pydicom.dicomio.read_file = pydicom.dcmread
    try:
        from dicompylercore import dicomparser
    finally:
        if lent:
            del pydicom.dicomio.read_file
    return dicomparser


def dicompyler_read(path: str | Path) -> tuple[dict[int, dict], dict[int, dict[str, list[dict]]]]:
    """dicompyler-core's view: ``GetStructures()`` and ``GetStructureCoordinates(n)`` for every ROI number."""
    dicomparser = import_dicompyler()
    parser = dicomparser.DicomParser(str(path))
    structures = parser.GetStructures()
    return structures, {number: parser.GetStructureCoordinates(number) for number in structures}


def dicompyler_plane_key(points: np.ndarray) -> str:
    """The plane key dicompyler-core files a contour under: its first point's z rounded to 2 decimals, plus '0'."""
    return str(round(float(points[0][2]), 2)) + "0"


def rtutils_names(dicom_folder: str | Path, rtstruct: str | Path) -> list[str]:
    from rt_utils import RTStructBuilder

    with contextlib.redirect_stdout(io.StringIO()):
        return list(RTStructBuilder.create_from(str(dicom_folder), str(rtstruct)).get_roi_names())


def rtutils_masks(dicom_folder: str | Path, rtstruct: str | Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """rt-utils' reading: the SOPInstanceUIDs of its series in its own order (ascending along the normal) and
    ``{ROIName: mask}`` with the mask as rt-utils returns it, (Columns, Rows, slices), each slice indexed
    [row, column] by its cv.fillPoly (the same thing for square frames)."""
    from rt_utils import RTStructBuilder

    with contextlib.redirect_stdout(io.StringIO()):
        rt = RTStructBuilder.create_from(str(dicom_folder), str(rtstruct))
        uids = [str(ds.SOPInstanceUID) for ds in rt.series_data]
        return uids, {name: rt.get_roi_mask_by_name(name) for name in rt.get_roi_names()}


def sitk_series(dicom_folder: str | Path):
    """The series as SimpleITK reads it, the way users do: ImageSeriesReader with GDCM's file order."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    files = reader.GetGDCMSeriesFileNames(str(dicom_folder))
    reader.SetFileNames(files)
    return reader.Execute(), list(files)


def rtutils_like_users(
    dicom_folder: str | Path, segmentation: str | Path, names: Mapping[int, str], out: str | Path
) -> tuple[Path, list[str], list[str]]:
    """An RTSTRUCT as rt-utils' users make one from a NIfTI label map: SimpleITK reads the series
    (ImageSeriesReader) and resamples the NIfTI onto it (nearest neighbour); each label value becomes
    ``add_roi(mask=labels == value, name=...)`` with the mask in rt-utils' (rows, columns, slices) layout, slice k
    of the SimpleITK volume given as slice k of rt-utils' series. Returns the file, SimpleITK's file order and
    rt-utils' SOPInstanceUID order."""
    import SimpleITK as sitk
    from rt_utils import RTStructBuilder

    with contextlib.redirect_stdout(io.StringIO()):  # rt-utils prints as it goes
        image, files = sitk_series(dicom_folder)
        labels = sitk.ReadImage(str(segmentation))
        resampled = sitk.Resample(labels, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, labels.GetPixelID())
        array = sitk.GetArrayFromImage(resampled)  # (slices, rows, columns)
        rt = RTStructBuilder.create_new(str(dicom_folder))
        for value in sorted(names):
            mask = np.transpose(array == value, (1, 2, 0))
            if mask.any():
                rt.add_roi(mask=mask, name=names[value])
        path = Path(out)
        rt.save(str(path))
    order = [str(ds.SOPInstanceUID) for ds in rt.series_data]
    return path, [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files], order


def mask_boundary_band(mask: np.ndarray) -> np.ndarray:
    """Pixels within one pixel (8-neighbourhood) of a change of ``mask``: where boundary conventions can differ."""
    padded = np.pad(mask, 1, mode="edge")
    band = np.zeros(mask.shape, dtype=bool)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            shifted = padded[1 + dr : 1 + dr + mask.shape[0], 1 + dc : 1 + dc + mask.shape[1]]
            band |= shifted != mask
    return band


def squares(cells: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """One 4-corner polygon per pixel (r, c): a hand-made contour for each pixel square."""
    return [
        np.array([(r - 0.5, c - 0.5), (r - 0.5, c + 0.5), (r + 0.5, c + 0.5), (r + 0.5, c - 0.5)]) for r, c in cells
    ]
