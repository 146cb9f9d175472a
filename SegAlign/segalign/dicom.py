"""DICOM series and their frames: scanning a folder, per-frame geometry, acquisition and spatial order.

A *frame* is one 2D image: a single-frame file, or one frame of an enhanced multi-frame file. Everything SegAlign
exports is per frame, so every frame carries its own ImagePositionPatient (IPP), ImageOrientationPatient (IOP)
and PixelSpacing, read from the frame's functional groups where the file has them.

Two orders are kept apart (see :func:`native_order` and :func:`position_order`):

* **native** (acquisition) order: InstanceNumber ascending, then frame number; frames without InstanceNumber,
  and ties, by position along the slice normal.
* **position** (spatial) order: position along the slice normal, ascending (towards ``cross(row, col)``).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Literal

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from .errors import SegAlignError
from .geometry import slice_normal
from .mosaic import MOSAIC_HEADER_TAGS, Tile, is_multi_slice, mosaic_tiles

Order = Literal["instance", "position"]

#: The only attributes SegAlign reads from each file (pixel data is never read for label export).
HEADER_TAGS = [
    "SOPClassUID",
    "SOPInstanceUID",
    "Modality",
    "SeriesInstanceUID",
    "SeriesNumber",
    "SeriesDescription",
    "FrameOfReferenceUID",
    "InstanceNumber",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence",
    # Siemens mosaics (see segalign.mosaic): what marks them and what places their slices.
    "ImageType",
    "Manufacturer",
    "SpacingBetweenSlices",
    "SliceThickness",
    *MOSAIC_HEADER_TAGS,
]

#: Modalities that are never images on a patient grid of their own, even when they carry geometry.
NON_IMAGE_MODALITIES = frozenset({"SEG", "RTSTRUCT", "RTPLAN", "RTRECORD", "RTDOSE", "SR", "PR", "KO", "REG", "DOC"})


@dataclass(frozen=True)
class Frame:
    """One 2D image of a DICOM series, with the geometry that places its pixels in the patient."""

    source_file: Path
    frame_number: int  #: 1-based frame number inside ``source_file``
    sop_instance_uid: str
    instance_number: int | None
    position: tuple[float, float, float]  #: ImagePositionPatient (LPS, mm): centre of the first pixel
    orientation: tuple[float, float, float, float, float, float]  #: ImageOrientationPatient
    pixel_spacing: tuple[float, float]  #: (between rows, between columns), mm
    rows: int
    columns: int
    number_of_frames: int = 1  #: frames in ``source_file``
    #: For a Siemens mosaic: the slices the frame holds, each on its own plane, in the CSA header's order. The
    #: frame's own ``position`` is then the header's ImagePositionPatient, which describes none of them.
    tiles: tuple[Tile, ...] = field(default=(), repr=False)
    #: For one tile of a mosaic exported as an image of its own (``Frame.split_tiles``): which tile it is. Its
    #: ``position``, ``rows`` and ``columns`` are the tile's; ``tile.region()`` finds its pixels in the frame.
    tile: Tile | None = None

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal ``cross(IOP[0:3], IOP[3:6])``."""
        return slice_normal(self.orientation)

    @property
    def is_mosaic(self) -> bool:
        """True for a frame that holds several slices (a Siemens mosaic)."""
        return bool(self.tiles)

    def planes(self) -> list[Tile]:
        """The planes the frame's pixels lie on: every tile of a mosaic, else the whole frame as one plane.

        Everything that places pixels in the patient (sampling, extents) goes through this, so a mosaic is never
        treated as one plane.
        """
        if self.tiles:
            return list(self.tiles)
        return [
            Tile(0, 0, 0, self.rows, self.columns, self.position, self.orientation, self.pixel_spacing,
                 (self.rows, self.columns))
        ]

    def split_tiles(self) -> list["Frame"]:
        """One frame per tile of a mosaic (each with the tile's geometry and shape); an ordinary frame as is."""
        if not self.tiles:
            return [self]
        return [
            replace(
                self, position=tile.position, orientation=tile.orientation, pixel_spacing=tile.pixel_spacing,
                rows=tile.rows, columns=tile.columns, tiles=(), tile=tile,
            )
            for tile in self.tiles
        ]


@dataclass
class Series:
    """The frames of one SeriesInstanceUID (or of all files without one) found in a folder."""

    uid: str
    description: str = ""
    modality: str = ""
    series_number: int | None = None
    frames: list[Frame] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  #: frames that could not be placed; export refuses
    notes: list[str] = field(default_factory=list)  #: things about the headers the user should know

    @property
    def files(self) -> list[Path]:
        """The distinct files holding the series' frames, sorted."""
        return sorted({frame.source_file for frame in self.frames})

    @property
    def is_multiframe(self) -> bool:
        """True when any file holds more than one frame."""
        return any(frame.number_of_frames > 1 for frame in self.frames)

    @property
    def reference_orientation(self) -> tuple[float, ...]:
        """The IOP shared by most frames (the first such in native order when counts tie)."""
        counts: dict[tuple[float, ...], list] = {}
        for frame in sorted(self.frames, key=_instance_key_without_position):
            key = tuple(np.round(frame.orientation, 4))
            if key in counts:
                counts[key][1] += 1
            else:
                counts[key] = [frame.orientation, 1]
        if not counts:  # no frame could be placed (see problems): nothing is ordered by this
            return (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
        return max(counts.values(), key=lambda item: item[1])[0]

    @property
    def reference_normal(self) -> np.ndarray:
        """The slice normal of :attr:`reference_orientation`: the direction positions are measured along."""
        return slice_normal(self.reference_orientation)

    def ordered(self, order: Order = "instance") -> list[Frame]:
        """The frames in native acquisition order (``"instance"``) or spatial order (``"position"``)."""
        if order == "instance":
            return native_order(self.frames, self.reference_normal)
        if order == "position":
            return position_order(self.frames, self.reference_normal)
        raise ValueError(f"unknown order {order!r}: use 'instance' or 'position'")

    def label(self) -> str:
        """One line naming the series for the user: UID (number, modality, description, frames)."""
        uid = self.uid or "(no SeriesInstanceUID)"
        number = self.series_number if self.series_number is not None else "-"
        return (
            f"{uid} (#{number}, {self.modality or '?'}, '{self.description or 'no description'}', "
            f"{len(self.frames)} frames)"
        )


@dataclass
class DicomScan:
    """What a folder holds: image series with patient geometry, and what was skipped."""

    root: Path
    series: list[Series]
    not_dicom: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    non_image: list[tuple[Path, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def select(self, uid: str | None = None) -> Series:
        """The series to export: the one with ``uid``, or the only one; otherwise a :class:`SegAlignError`."""
        if uid is not None:
            matches = [series for series in self.series if series.uid == uid]
            if not matches:
                raise SegAlignError(f"no series with SeriesInstanceUID {uid} in {self.root}; {self._listing()}")
            return matches[0]
        if not self.series:
            raise SegAlignError(f"no DICOM image series with patient geometry found in {self.root}{self._skipped()}")
        if len(self.series) > 1:
            raise SegAlignError(
                f"{len(self.series)} series in {self.root}: choose one with --series UID; {self._listing()}"
            )
        return self.series[0]

    def _listing(self) -> str:
        return "series found: " + "; ".join(series.label() for series in self.series)

    def _skipped(self) -> str:
        parts = []
        if self.not_dicom:
            parts.append(f"{len(self.not_dicom)} non-DICOM files")
        if self.unreadable:
            parts.append(f"{len(self.unreadable)} unreadable files")
        if self.non_image:
            parts.append(f"{len(self.non_image)} DICOM files without image geometry")
        return " (skipped " + ", ".join(parts) + ")" if parts else ""


def iter_files(root: Path, hidden: list[Path] | None = None) -> Iterable[Path]:
    """Every regular file under ``root``, recursively, in a deterministic order. Hidden folders (``.name``) are
    not entered; they are appended to ``hidden`` when given."""
    for directory, subdirectories, names in os.walk(root):
        if hidden is not None:
            hidden.extend(Path(directory) / name for name in subdirectories if name.startswith("."))
        subdirectories[:] = sorted(name for name in subdirectories if not name.startswith("."))
        for name in sorted(names):
            path = Path(directory) / name
            if path.is_file():
                yield path


def read_header(path: Path) -> pydicom.Dataset:
    """Read only the attributes SegAlign needs from one file (no pixel data)."""
    return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=HEADER_TAGS)


def scan_folder(root: str | os.PathLike[str]) -> DicomScan:
    """Scan ``root`` recursively and group the frames of every image series by SeriesInstanceUID.

    Files that are not DICOM, cannot be parsed, or are DICOM objects without patient geometry (DICOMDIR, SR, SEG,
    projection radiographs...) are skipped and counted in :attr:`DicomScan.warnings`. File names are never used
    for anything but reporting.
    """
    root = Path(root)
    if not root.is_dir():
        raise SegAlignError(f"DICOM folder not found: {root}")
    scan = DicomScan(root=root, series=[])
    by_uid: dict[str, Series] = {}
    hidden: list[Path] = []
    for path in iter_files(root, hidden):
        try:
            dataset = read_header(path)
        except InvalidDicomError:
            scan.not_dicom.append(path)
            continue
        except Exception as error:  # pydicom raises many kinds of error on truncated or corrupt files
            scan.unreadable.append((path, f"{type(error).__name__}: {error}"))
            continue
        reason = _non_image_reason(dataset)
        if reason:
            scan.non_image.append((path, reason))
            continue
        uid = str(dataset.get("SeriesInstanceUID", "") or "").strip()
        series = by_uid.get(uid)
        if series is None:
            series = by_uid[uid] = Series(
                uid=uid,
                description=str(dataset.get("SeriesDescription", "") or ""),
                modality=str(dataset.get("Modality", "") or ""),
                series_number=_optional_int(dataset.get("SeriesNumber")),
            )
        try:
            series.frames.extend(frames_of(dataset, path))
        except SegAlignError as error:
            series.problems.append(str(error))
    scan.series = sorted(by_uid.values(), key=lambda s: (s.series_number is None, s.series_number or 0, s.uid))
    for series in scan.series:
        check_uids(series, root)
    _summarise_skipped(scan)
    if hidden:
        scan.warnings.append(f"did not look into {len(hidden)} hidden folders (e.g. {hidden[0]})")
    return scan


def frames_of(dataset: pydicom.Dataset, path: Path) -> list[Frame]:
    """The frames of one file, each with its own geometry (functional groups for enhanced multi-frame files)."""
    rows = _required_int(dataset, "Rows", path)
    columns = _required_int(dataset, "Columns", path)
    sop_uid = str(dataset.get("SOPInstanceUID", "") or "").strip()
    if not sop_uid:
        meta = getattr(dataset, "file_meta", None)
        sop_uid = str(meta.get("MediaStorageSOPInstanceUID", "") or "").strip() if meta is not None else ""
    instance_number = _optional_int(dataset.get("InstanceNumber"))
    number_of_frames = _optional_int(dataset.get("NumberOfFrames")) or 1
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
    tiles = mosaic_tiles(dataset, path) if is_multi_slice(dataset) else ()
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
            )
        )
    return frames


def native_order(frames: Iterable[Frame], normal: np.ndarray) -> list[Frame]:
    """Acquisition order: InstanceNumber, then frame number; missing InstanceNumber and ties by position.

    The frames of one multi-frame file stay together (files that share an InstanceNumber are taken in the order
    of their first frames' positions), so frame number orders frames within their file.
    """
    frames = list(frames)
    first_position = {
        frame.source_file: position_along(frame, normal) for frame in frames if frame.frame_number == 1
    }
    return sorted(frames, key=lambda frame: _native_key(frame, normal, first_position))


def position_order(frames: Iterable[Frame], normal: np.ndarray) -> list[Frame]:
    """Spatial order: position along ``normal`` ascending; frames at one position stay in native order."""
    frames = list(frames)
    native = {id(frame): rank for rank, frame in enumerate(native_order(frames, normal))}
    return sorted(frames, key=lambda frame: (position_along(frame, normal), native[id(frame)]))


def position_along(frame: Frame, normal: np.ndarray) -> float:
    """Signed distance (mm) of the frame's IPP along ``normal`` (for a mosaic: its first tile's)."""
    x, y, z = frame.tiles[0].position if frame.tiles else frame.position
    return float(x * normal[0] + y * normal[1] + z * normal[2])  # plain floats: np.dot on a tuple costs 30 us


def _native_key(frame: Frame, normal: np.ndarray, first_position: dict[Path, float]) -> tuple[Any, ...]:
    own = round(position_along(frame, normal), 6)
    group = round(first_position.get(frame.source_file, own), 6) if frame.number_of_frames > 1 else own
    return (
        frame.instance_number is None,
        frame.instance_number or 0,
        group,
        str(frame.source_file) if frame.number_of_frames > 1 else "",
        frame.frame_number,
        own,
        str(frame.source_file),
    )


def _instance_key_without_position(frame: Frame) -> tuple[Any, ...]:
    return (frame.instance_number is None, frame.instance_number or 0, str(frame.source_file), frame.frame_number)


def _non_image_reason(dataset: pydicom.Dataset) -> str:
    modality = str(dataset.get("Modality", "") or "").upper()
    if modality in NON_IMAGE_MODALITIES:
        return f"{modality} object"
    if "Rows" not in dataset or "Columns" not in dataset:
        return "no image (Rows/Columns missing)"
    # An image with any plane attribute is meant to sit in the patient: if it cannot be placed, that is a
    # problem of its series (reported by frames_of), not a reason to skip it quietly.
    plane_attributes = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
    if any(keyword in dataset for keyword in plane_attributes) or "PerFrameFunctionalGroupsSequence" in dataset:
        return ""
    shared = dataset.get("SharedFunctionalGroupsSequence")
    if shared and any(s in shared[0] for s in ("PlanePositionSequence", "PlaneOrientationSequence")):
        return ""
    return "no patient geometry (no ImagePositionPatient, ImageOrientationPatient or PixelSpacing)"


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
    except (TypeError, ValueError):
        raise SegAlignError(f"{where}: {keyword} is not numeric: {value!r}") from None
    if len(numbers) != length or not all(np.isfinite(numbers)):
        raise SegAlignError(f"{where}: {keyword} must have {length} finite numbers, got {value!r}")
    return numbers


def _unit_cosines(orientation: list[float], where: str) -> tuple[float, float, float, float, float, float]:
    row = np.asarray(orientation[:3])
    column = np.asarray(orientation[3:])
    row_length, column_length = np.linalg.norm(row), np.linalg.norm(column)
    if abs(row_length - 1) > 1e-2 or abs(column_length - 1) > 1e-2 or abs(np.dot(row, column)) > 1e-2:
        raise SegAlignError(f"{where}: ImageOrientationPatient {orientation} is not two orthogonal unit vectors")
    return tuple(np.concatenate([row / row_length, column / column_length]).tolist())  # type: ignore[return-value]


def _positive_spacing(spacing: list[float], where: str) -> tuple[float, float]:
    if spacing[0] <= 0 or spacing[1] <= 0:
        raise SegAlignError(f"{where}: PixelSpacing {spacing} must be positive")
    return (spacing[0], spacing[1])


def _required_int(dataset: pydicom.Dataset, keyword: str, path: Path) -> int:
    value = _optional_int(dataset.get(keyword))
    if value is None or value <= 0:
        raise SegAlignError(f"{path}: {keyword} is missing or not positive")
    return value


def _optional_int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError):
            return None


def check_uids(series: Series, root: Path) -> None:
    """Never trust a UID as a key without checking: report blank and repeated SOPInstanceUIDs."""
    if not series.uid:
        series.notes.append(
            f"{len(series.files)} files have no SeriesInstanceUID; they are treated as one series"
        )
    blank = [frame for frame in series.frames if not frame.sop_instance_uid]
    if blank:
        series.notes.append(f"{len(blank)} frames have no SOPInstanceUID (nor MediaStorageSOPInstanceUID)")
    counts = Counter((frame.sop_instance_uid, frame.frame_number) for frame in series.frames if frame.sop_instance_uid)
    repeated = [key for key, count in counts.items() if count > 1]
    if repeated:
        files = sorted(
            str(frame.source_file.relative_to(root))
            for frame in series.frames
            if (frame.sop_instance_uid, frame.frame_number) == repeated[0]
        )
        series.notes.append(
            f"{len(repeated)} SOPInstanceUIDs occur in more than one file (e.g. {', '.join(files)}); "
            "every file is exported, identify frames by source_file"
        )
    if any(frame.instance_number is None for frame in series.frames):
        missing = sum(frame.instance_number is None for frame in series.frames)
        series.notes.append(f"{missing} frames have no InstanceNumber; they are ordered by position")


def _summarise_skipped(scan: DicomScan) -> None:
    if scan.not_dicom:
        scan.warnings.append(f"skipped {len(scan.not_dicom)} files that are not DICOM")
    if scan.unreadable:
        path, reason = scan.unreadable[0]
        scan.warnings.append(f"skipped {len(scan.unreadable)} unreadable DICOM files (e.g. {path}: {reason})")
    if scan.non_image:
        reasons = Counter(reason for _, reason in scan.non_image)
        described = ", ".join(f"{count} {reason}" for reason, count in reasons.most_common())
        scan.warnings.append(f"skipped {len(scan.non_image)} DICOM files that are not images on a patient grid ({described})")
