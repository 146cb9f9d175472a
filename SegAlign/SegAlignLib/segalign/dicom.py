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

import math
import os
import stat
import struct
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

import numpy as np
import pydicom
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from .errors import SegAlignError, describe, quiet_warnings, short, short_path
from .geometry import plane_orientation, slice_normal
from .mosaic import MOSAIC_HEADER_TAGS, Tile, image_types, is_multi_slice, mosaic_tiles
from .signals import reraise_interrupt

Order = Literal["instance", "position"]

#: The only attributes SegAlign reads from each file (pixel data is never read for label export).
HEADER_TAGS = [
    "SOPClassUID",
    "SOPInstanceUID",
    "Modality",
    "SeriesInstanceUID",
    "SeriesNumber",
    "SeriesDescription",
    "PatientPosition",
    "FrameOfReferenceUID",
    "InstanceNumber",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "Rows",
    "Columns",
    "NumberOfFrames",
    # What the size of the pixel data is checked against (check_image_header): the pixels are never read.
    "SamplesPerPixel",
    "BitsAllocated",
    "PhotometricInterpretation",
    "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence",
    # Siemens mosaics (see segalign.mosaic): what marks them and what places their slices.
    "ImageType",
    "Manufacturer",
    "SpacingBetweenSlices",
    "SliceThickness",
]
#: Read again, with the Siemens private tags, only for the files whose ImageType says they are mosaics.
MOSAIC_TAGS = [*HEADER_TAGS, *MOSAIC_HEADER_TAGS]

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
    sop_class_uid: str = ""  #: SOPClassUID of ``source_file`` (what a DICOM SEG or RTSTRUCT references)
    frame_of_reference_uid: str = ""  #: FrameOfReferenceUID of ``source_file``, "" when it has none

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
    patient_position: str = ""  #: PatientPosition (HFS, FFS, HFDR...) of its first file, if given
    image_type: tuple[str, ...] = ()  #: ImageType of its first file (upper case), e.g. ("ORIGINAL", "PRIMARY", "LOCALIZER")
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
            f"{plural(len(self.frames), 'frame')})"
        )

    def folder(self, root: Path) -> str:
        """The deepest folder holding all the series' files, relative to ``root`` (``.`` for root itself)."""
        files = self.files
        if not files:
            return "-"
        common = Path(os.path.commonpath([str(path.parent) for path in files]))
        try:
            return common.relative_to(root).as_posix() or "."
        except ValueError:
            return str(common)

    def distinguishing(self, root: Path) -> str:
        """What tells this series apart from others in one folder: folder, SeriesNumber, modality, description,
        PatientPosition, orientation, frames and UID."""
        number = self.series_number if self.series_number is not None else "-"
        orientation = plane_orientation(self.reference_orientation).describe() if self.frames else "no frames"
        return (
            f"#{number} {self.modality or '?'} '{self.description or 'no description'}', "
            f"{plural(len(self.frames), 'frame')}, {orientation}, {self.patient_position or 'no PatientPosition'}, "
            f"folder {self.folder(root)}, UID {self.uid or '(none)'}"
        )

    def __repr__(self) -> str:
        return f"<Series {self.label()}>"


@dataclass
class DicomScan:
    """What a folder holds: image series with patient geometry, and what was skipped."""

    root: Path
    series: list[Series]
    not_dicom: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    non_image: list[tuple[Path, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def select(self, series: str | int | None = None) -> Series:
        """The series to export, or a :class:`SegAlignError` whose details list every series found.

        ``series`` is a SeriesInstanceUID, a SeriesNumber, or the 1-based index in :meth:`listing` (as ``info``
        shows it); ``None`` takes the only series. A number that names different series as SeriesNumber and as
        index, or a SeriesNumber that several series share, is refused as ambiguous.
        """
        if not self.series:
            raise SegAlignError(f"no DICOM image series with patient geometry found in {self.root}{self._skipped()}")
        if series is None:
            if len(self.series) > 1:
                raise SegAlignError(
                    f"{len(self.series)} series in {self.root}: pass series= (a UID, SeriesNumber or index below)",
                    cli_message=f"{len(self.series)} series in {self.root}: choose one with --series "
                    "(a UID, SeriesNumber or index below)",
                    details=self.listing(),
                )
            return self.series[0]
        wanted = str(series).strip()
        by_uid = [s for s in self.series if s.uid == wanted]
        if by_uid:
            return by_uid[0]
        candidates: dict[str, list[Series]] = {}
        if wanted.isascii() and wanted.isdigit():  # '²'.isdigit() is true, int('²') fails
            number = int(wanted)
            candidates["SeriesNumber"] = [s for s in self.series if s.series_number == number]
            if 1 <= number <= len(self.series):
                candidates["index"] = [self.series[number - 1]]
        found = {id(s): s for matches in candidates.values() for s in matches}
        if not found:
            raise SegAlignError(
                f"no series with UID, SeriesNumber or index {short(wanted)} in {self.root}",
                details=self.listing(),
            )
        if len(found) > 1:
            meanings = "; ".join(
                f"{kind} of {', '.join(s.uid or '(no UID)' for s in matches)}" for kind, matches in candidates.items()
                if matches
            )
            raise SegAlignError(
                f"series {wanted} is ambiguous in {self.root} ({meanings}); pass the SeriesInstanceUID",
                details=self.listing(),
            )
        return next(iter(found.values()))

    def listing(self) -> list[str]:
        """One line per series, numbered from 1 as :meth:`select` takes them, saying what tells them apart."""
        return [f"[{index}] {series.distinguishing(self.root)}" for index, series in enumerate(self.series, start=1)]

    def __repr__(self) -> str:
        skipped = len(self.not_dicom) + len(self.unreadable) + len(self.non_image)
        return f"<DicomScan {self.root}: {plural(len(self.series), 'series', 'series')}, {plural(skipped, 'file')} skipped>"

    def _skipped(self) -> str:
        parts = []
        if self.not_dicom:
            parts.append(f"{len(self.not_dicom)} non-DICOM files")
        if self.unreadable:
            parts.append(f"{len(self.unreadable)} unreadable files")
        if self.non_image:
            parts.append(f"{len(self.non_image)} DICOM files without image geometry")
        examples = [*self.unreadable, *self.non_image, *((path, "not DICOM") for path in self.not_dicom[:1])]
        if examples:  # a refusal names at least one skipped file and why, not only how many there were
            path, reason = examples[0]
            parts.append(f"e.g. {short_path(os.path.relpath(path, self.root), 80)}: {short(reason, 100)}")
        return " (skipped " + ", ".join(parts) + ")" if parts else ""


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``1 frame``, ``2 frames``: a count with its noun."""
    return f"{count} {singular if count == 1 else (plural_form or singular + 's')}"


def iter_files(
    root: Path,
    hidden: list[Path] | None = None,
    skipped: list[tuple[Path, str]] | None = None,
    revisited: list[tuple[Path, Path]] | None = None,
) -> Iterable[Path]:
    """Every regular file under ``root``, recursively, in a deterministic order.

    Nothing under ``root`` vanishes unreported:

    * hidden folders (``.name``) are not entered; they are appended to ``hidden``;
    * symbolic links to folders are followed (a series is often assembled from links), but every real folder is
      entered once: a link to a folder already entered (a loop back to an ancestor, or a second way to the same
      folder) is not entered again, and ``(link, real folder)`` is appended to ``revisited``;
    * what cannot be scanned is appended to ``skipped`` with the reason: a folder that cannot be listed, a broken
      or looping link, and anything that is not a regular file (a FIFO, which would block a read, a device...).
    """
    visited: set[str] = set()

    def unlistable(error: OSError) -> None:
        if skipped is not None:
            skipped.append((Path(error.filename or root), f"folder cannot be listed: {describe(error)}"))

    for directory, subdirectories, names in os.walk(root, onerror=unlistable, followlinks=True):
        real = os.path.realpath(directory)
        if real in visited:
            subdirectories[:] = []
            if revisited is not None:
                revisited.append((Path(directory), Path(real)))
            continue
        visited.add(real)
        if hidden is not None:
            hidden.extend(Path(directory) / name for name in subdirectories if name.startswith("."))
        subdirectories[:] = sorted(name for name in subdirectories if not name.startswith("."))
        for name in sorted(names):
            path = Path(directory) / name
            reason = _not_a_file(path)
            if not reason:
                yield path
            elif skipped is not None:
                skipped.append((path, reason))


def _not_a_file(path: Path) -> str:
    """Why ``path`` cannot be read as a file (empty when it is a regular file, or a link to one)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        if os.path.islink(path) and not os.path.lexists(os.path.realpath(path)):
            return "broken symbolic link (its target does not exist)"
        return f"cannot be read: {describe(error)}"
    return "" if stat.S_ISREG(mode) else f"not a regular file ({_file_kind(mode)})"


def _file_kind(mode: int) -> str:
    """What a file system entry of ``mode`` is, in words."""
    kinds = {
        stat.S_ISREG: "a file", stat.S_ISDIR: "a folder", stat.S_ISFIFO: "a FIFO", stat.S_ISSOCK: "a socket",
        stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device",
    }
    return next((name for test, name in kinds.items() if test(mode)), "of an unknown kind")


#: The elements a file's pixels may be stored in; dcmread(stop_before_pixels=True) stops at the first of them.
PIXEL_DATA_TAGS = {0x7FE00010: "PixelData", 0x7FE00008: "FloatPixelData", 0x7FE00009: "DoubleFloatPixelData"}
#: Explicit VRs whose length field has 4 bytes (after 2 reserved bytes).
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
#: The attributes the scan reads from every file, parsed by :func:`read_header` (the others of HEADER_TAGS are read
#: for Siemens mosaics only, and parsed when they are: parsing every element of every header would cost 15 %).
_SCAN_TAGS = tuple(
    tag_for_keyword(keyword)
    for keyword in (
        "SOPInstanceUID", "Modality", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "PatientPosition",
        "InstanceNumber", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns",
        "NumberOfFrames", "SamplesPerPixel", "BitsAllocated", "PhotometricInterpretation", "ImageType",
        "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence",
    )
)
#: Where :func:`read_header` leaves what it found out about the pixel data element (:class:`PixelDataElement`).
_PIXEL_DATA_ATTRIBUTE = "_segalign_pixel_data"


@dataclass(frozen=True)
class PixelDataElement:
    """The pixel data element of a file as its header describes it, read without reading the pixels."""

    keyword: str  #: PixelData, FloatPixelData or DoubleFloatPixelData; empty when the file has none
    length: int | None  #: bytes its header announces; None: undefined length (encapsulated, compressed)
    available: int | None = None  #: bytes the file really holds after the element's header (None: not known)


#: The file has no pixel data element at all.
NO_PIXEL_DATA = PixelDataElement("", 0, 0)


def read_header(path: Path) -> pydicom.Dataset:
    """Read only the attributes SegAlign needs from one file (no pixel data).

    The pixel data element's header (its tag and length) is read too, without its value, so that
    :func:`check_image_header` can compare its size with Rows and Columns: :func:`pixel_data_element` returns it.
    The values the scan reads are parsed here (not later, on first use), so a corrupt value raises here, where the
    file is named, and pydicom's warnings about non-conforming values are silenced: the checks that use the values
    say what matters.
    """
    with quiet_warnings():
        with open(path, "rb") as stream:
            dataset = pydicom.dcmread(stream, stop_before_pixels=True, specific_tags=HEADER_TAGS)
            element = _read_pixel_data_element(stream, dataset)
        _parse_values(dataset, _SCAN_TAGS)
    object.__setattr__(dataset, _PIXEL_DATA_ATTRIBUTE, element)
    return dataset


def _with_mosaic_tags(dataset: pydicom.Dataset, path: Path) -> pydicom.Dataset:
    """The header of a mosaic with the Siemens private tags that place its slices (the scan reads them only for
    mosaics, which keeps every other file's header read small)."""
    if (0x0029, 0x0010) in dataset or (0x0019, 0x0010) in dataset:
        return dataset  # read whole, or already with them
    try:
        with quiet_warnings():
            return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=MOSAIC_TAGS)
    except Exception as error:  # the file was readable a moment ago; say why it no longer is
        raise SegAlignError(f"{short_path(path)}: cannot read its Siemens mosaic header: {describe(error)}") from None


def pixel_data_element(dataset: pydicom.Dataset) -> PixelDataElement | None:
    """What :func:`read_header` found out about the file's pixel data element; for a dataset read otherwise, its
    pixel data element if it holds one; None when nothing is known."""
    found = getattr(dataset, _PIXEL_DATA_ATTRIBUTE, None)
    if found is not None:
        return found
    for tag, keyword in PIXEL_DATA_TAGS.items():
        if tag in dataset:
            element = dataset[tag]
            if element.is_undefined_length or not isinstance(element.value, (bytes, bytearray)):
                return PixelDataElement(keyword, None)
            return PixelDataElement(keyword, len(element.value), len(element.value))
    return None


def _read_pixel_data_element(stream: Any, dataset: pydicom.Dataset) -> PixelDataElement | None:
    """The header of the pixel data element ``stream`` is positioned at (dcmread stops right before it), or
    :data:`NO_PIXEL_DATA`; None when it cannot be known without decompressing (deflated transfer syntax)."""
    syntax = getattr(dataset, "file_meta", {}).get("TransferSyntaxUID")
    try:
        deflated = syntax is not None and syntax.is_deflated
    except (AttributeError, ValueError):  # not one UID, or not a transfer syntax: pydicom read it as it could
        deflated = False
    if deflated:
        return None
    implicit, little = dataset.original_encoding
    if implicit is None or little is None:
        return None
    start = stream.tell()
    header = stream.read(8 if implicit else 12)
    if len(header) < 8:
        return NO_PIXEL_DATA
    order = "<" if little else ">"
    group, number = struct.unpack(order + "HH", header[:4])
    keyword = PIXEL_DATA_TAGS.get(group << 16 | number)
    if keyword is None:
        return NO_PIXEL_DATA
    if implicit:
        (length,) = struct.unpack(order + "L", header[4:8])
        size = 8
    elif header[4:6] in _LONG_VRS and len(header) == 12:
        (length,) = struct.unpack(order + "L", header[8:12])
        size = 12
    else:
        (length,) = struct.unpack(order + "H", header[6:8])
        size = 8
    if length == 0xFFFFFFFF:
        return PixelDataElement(keyword, None)
    available = max(os.fstat(stream.fileno()).st_size - start - size, 0)
    return PixelDataElement(keyword, length, available)


def _parse_values(dataset: pydicom.Dataset, tags: Iterable[int] | None = None) -> None:
    """Parse the elements ``tags`` of ``dataset`` (all when None) now: pydicom parses values, and the items of
    sequences, on first use. In functional groups only the macros SegAlign reads are parsed (a Canon MR header
    has dozens of others, and parsing them all would make the scan twice as slow).

    A value pydicom cannot convert (an IS of ``inf``, or of 10,000 digits) is kept as its bytes, so the check that
    uses it says what is wrong with it; a sequence that cannot be parsed makes the file unreadable.
    """
    for tag in list(dataset.keys()) if tags is None else [tag for tag in tags if tag in dataset]:
        try:
            element = dataset[tag]
        except Exception as error:
            raw = dataset.get_item(tag)
            if raw is None or raw.VR == "SQ" or (raw.VR is None and _is_sequence_tag(tag)):
                raise ValueError(f"{_keyword(tag)} cannot be parsed: {describe(error)}") from None
            dataset[tag] = DataElement(tag, "OB", raw.value or b"")
            continue
        if element.VR == "SQ" and isinstance(element.value, pydicom.Sequence):
            inner = _MACRO_TAGS if tag in _FUNCTIONAL_GROUP_TAGS else None
            for item in element.value:
                _parse_values(item, inner)


def _keyword(tag: int) -> str:
    """The keyword of a tag, or its number as (gggg,eeee)."""
    return keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _is_sequence_tag(tag: int) -> bool:
    try:
        return dictionary_VR(tag) == "SQ"
    except KeyError:
        return False


def scan_folder(
    root: str | os.PathLike[str], progress: Callable[[int, int], None] | None = None
) -> DicomScan:
    """Scan ``root`` recursively and group the frames of every image series by SeriesInstanceUID.

    Files that are not DICOM, cannot be parsed, or are DICOM objects without patient geometry (DICOMDIR, SR, SEG,
    projection radiographs...) are skipped and counted in :attr:`DicomScan.warnings`. File names are never used
    for anything but reporting. ``progress(done, total)`` is called after each file's header is read (the folder
    is listed first); an exception raised from it stops the scan.
    """
    root = Path(root)
    _check_folder(root)
    scan = DicomScan(root=root, series=[])
    by_uid: dict[str, Series] = {}
    hidden: list[Path] = []
    skipped: list[tuple[Path, str]] = []  # folders that cannot be listed, broken links, FIFOs...
    revisited: list[tuple[Path, Path]] = []  # links to folders already scanned
    odd_instance_numbers: list[tuple[Path, object]] = []
    paths = list(iter_files(root, hidden, skipped, revisited)) if progress is not None else iter_files(
        root, hidden, skipped, revisited)
    for done, path in enumerate(paths, start=1):
        if progress is not None and done > 1:
            progress(done - 1, len(paths))  # type: ignore[arg-type]
        try:
            dataset = read_header(path)
        except InvalidDicomError:
            scan.not_dicom.append(path)
            continue
        except Exception as error:  # pydicom raises many kinds of error on truncated or corrupt files
            reraise_interrupt(error)
            scan.unreadable.append((path, describe(error)))
            continue
        if _odd_int(dataset.get("InstanceNumber")):
            odd_instance_numbers.append((path, dataset.get("InstanceNumber")))
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
                patient_position=str(dataset.get("PatientPosition", "") or "").strip(),
                image_type=tuple(image_types(dataset)),
            )
        try:
            series.frames.extend(frames_of(dataset, path))
        except SegAlignError as error:
            series.problems.append(str(error))
        except Exception as error:  # a value pydicom parsed but that is unusable in a way not foreseen here
            series.problems.append(f"{short_path(path)}: the header cannot be used ({describe(error)})")
    if progress is not None:
        progress(len(paths), len(paths))  # type: ignore[arg-type]
    scan.unreadable.extend(skipped)
    scan.series = sorted(by_uid.values(), key=lambda s: (s.series_number is None, s.series_number or 0, s.uid))
    for series in scan.series:
        check_uids(series, root)
    _summarise_skipped(scan)
    if hidden:
        scan.warnings.append(f"did not look into {len(hidden)} hidden folders (e.g. {hidden[0]})")
    if revisited:
        link, real = revisited[0]
        scan.warnings.append(
            f"did not enter {len(revisited)} linked folders a second time: they lead to folders already scanned "
            f"(e.g. {short_path(link)} is {short_path(real)})"
        )
    if odd_instance_numbers:
        path, value = odd_instance_numbers[0]
        scan.warnings.append(
            f"{len(odd_instance_numbers)} files have an InstanceNumber that is not an integer "
            f"(e.g. {short_path(path)}: '{short(_text(value))}'); they are ordered as files without InstanceNumber are"
        )
    return scan


def _check_folder(root: Path) -> None:
    """Refuse a DICOM folder that is missing, is not a folder, or cannot be listed, saying which."""
    try:
        mode = os.stat(root).st_mode
    except FileNotFoundError:
        raise SegAlignError(f"DICOM folder not found: {short_path(root)}") from None
    except OSError as error:
        raise SegAlignError(f"DICOM folder {short_path(root)} cannot be read: {describe(error)}") from None
    if not stat.S_ISDIR(mode):
        raise SegAlignError(f"DICOM folder {short_path(root)} is {_file_kind(mode)}, not a folder")
    try:
        with os.scandir(root):
            pass
    except OSError as error:
        raise SegAlignError(f"DICOM folder {short_path(root)} cannot be read: {describe(error)}") from None


def frames_of(dataset: pydicom.Dataset, path: Path) -> list[Frame]:
    """The frames of one file, each with its own geometry (functional groups for enhanced multi-frame files)."""
    check_image_header(dataset, path)
    rows = _required_int(dataset, "Rows", path)
    columns = _required_int(dataset, "Columns", path)
    sop_uid = str(dataset.get("SOPInstanceUID", "") or "").strip()
    if not sop_uid:
        meta = getattr(dataset, "file_meta", None)
        sop_uid = str(meta.get("MediaStorageSOPInstanceUID", "") or "").strip() if meta is not None else ""
    instance_number = _optional_int(dataset.get("InstanceNumber"))
    with quiet_warnings():  # pydicom's warning about an invalid UI value: the SEG writer refuses such UIDs itself
        sop_class_uid = str(dataset.get("SOPClassUID", "") or "").strip()
        if not sop_class_uid:  # as for the instance UID: the file meta names it when the dataset does not
            meta = getattr(dataset, "file_meta", None)
            sop_class_uid = str(meta.get("MediaStorageSOPClassUID", "") or "").strip() if meta is not None else ""
        frame_of_reference_uid = str(dataset.get("FrameOfReferenceUID", "") or "").strip()
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
    tiles = mosaic_tiles(_with_mosaic_tags(dataset, path), path) if is_multi_slice(dataset) else ()
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
    # An image with any plane attribute is meant to sit in the patient: if it cannot be placed (not even sized,
    # when Rows or Columns are missing), that is a problem of its series (reported by frames_of, naming the file
    # and the attribute), not a reason to skip it quietly.
    plane_attributes = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
    if any(keyword in dataset for keyword in plane_attributes) or "PerFrameFunctionalGroupsSequence" in dataset:
        return ""
    if "Rows" not in dataset or "Columns" not in dataset:
        return "no image (Rows/Columns missing)"
    shared = dataset.get("SharedFunctionalGroupsSequence")
    if (
        isinstance(shared, pydicom.Sequence) and shared
        and any(s in shared[0] for s in ("PlanePositionSequence", "PlaneOrientationSequence"))
    ):
        return ""
    return "no patient geometry (no ImagePositionPatient, ImageOrientationPatient or PixelSpacing)"


#: Functional group macros whose attributes place frames: each must be a sequence of items where present. (The
#: rescale and window macros are read with the pixels, from a header read of its own: see segalign.pixels.)
FUNCTIONAL_MACROS = ("PlanePositionSequence", "PlaneOrientationSequence", "PixelMeasuresSequence")
_MACRO_TAGS = tuple(tag_for_keyword(keyword) for keyword in FUNCTIONAL_MACROS)
_FUNCTIONAL_GROUP_TAGS = frozenset(
    tag_for_keyword(keyword) for keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence")
)


def check_image_header(dataset: pydicom.Dataset, path: Path) -> None:
    """Refuse, naming the file and the attribute, an image header that cannot be trusted to place and size frames.

    Refused: functional group sequences that are not sequences of items; Rows, Columns or NumberOfFrames that are
    not positive integers; pixel data that the file cuts short, or whose size disagrees with Rows x Columns x
    NumberOfFrames x SamplesPerPixel x BitsAllocated, since a label image laid out by Rows and Columns would not
    line up with the frame's ``pixel_array``; and an image without pixel data. Only the pixel data element's
    header is looked at (:func:`read_header`), never the pixels; compressed (encapsulated) pixel data need only be
    there. Checking sizes first also means that a header claiming 65535 x 65535 pixels in a 64 x 64 file is
    refused before anything is allocated for it.
    """
    for keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for number, item in enumerate(_sequence(dataset, keyword, short_path(path)) or (), start=1):
            for macro in FUNCTIONAL_MACROS:
                _sequence(item, macro, f"{short_path(path)} {keyword} item {number}")
    rows = _required_int(dataset, "Rows", path)
    columns = _required_int(dataset, "Columns", path)
    frames = _number_of_frames(dataset, path)
    _check_pixel_data(dataset, path, rows, columns, frames)


def _sequence(dataset: pydicom.Dataset, keyword: str, where: str) -> pydicom.Sequence | None:
    """The sequence ``keyword`` of ``dataset`` (None when absent), refusing a value that is not a sequence."""
    if keyword not in dataset:
        return None
    value = dataset[keyword].value
    if isinstance(value, pydicom.Sequence):
        return value
    raise SegAlignError(f"{where}: {keyword} is not a sequence of items (it holds '{short(_text(value))}')")


def _number_of_frames(dataset: pydicom.Dataset, path: Path) -> int:
    """NumberOfFrames (1 when absent), refusing zero, negative and non-integer values: frames never vanish."""
    raw = dataset.get("NumberOfFrames")
    if raw is None or raw == "":
        return 1
    value = _optional_int(raw)
    if value is None or value < 1:
        raise SegAlignError(f"{short_path(path)}: NumberOfFrames must be a positive integer, got '{short(_text(raw))}'")
    return value


def _check_pixel_data(dataset: pydicom.Dataset, path: Path, rows: int, columns: int, frames: int) -> None:
    element = pixel_data_element(dataset)
    if element is None:  # not known (deflated file, or a dataset read without its pixel data by other means)
        return
    where = short_path(path)
    if not element.keyword:
        raise SegAlignError(f"{where}: has no pixel data (does the file end early?)")
    if element.length is None:  # encapsulated: its size says nothing about Rows and Columns
        return
    expected, described = _expected_pixel_bytes(dataset, rows, columns, frames, element.keyword, where)
    if element.available is not None and element.available < min(element.length, expected):
        raise SegAlignError(
            f"{where}: the file ends {element.available} bytes into its {element.keyword}, which should hold "
            f"{_big(expected)} bytes ({described}): the file is truncated"
        )
    if element.length not in (expected, expected + 1):  # + 1: the padding of an odd length to an even one
        raise SegAlignError(
            f"{where}: {element.keyword} holds {element.length} bytes, but {described} make {_big(expected)}: the "
            "header disagrees with its pixel data, so label images would not line up with the frames' pixels"
        )


def _big(number: int) -> str:
    """A count for a message: as is up to 12 digits, else like ``1.00e308`` (a header may claim anything)."""
    text = str(number)
    return text if len(text) <= 12 else f"{text[0]}.{text[1:3]}e{len(text) - 1}"


def _expected_pixel_bytes(
    dataset: pydicom.Dataset, rows: int, columns: int, frames: int, keyword: str, where: str
) -> tuple[int, str]:
    """Bytes of native pixel data the header describes, and how that number is made (for the message)."""
    raw_bits = dataset.get("BitsAllocated")
    bits = _optional_int(raw_bits)
    if bits is None or not 1 <= bits <= 64:
        got = "it is missing" if raw_bits is None or raw_bits == "" else f"got '{short(_text(raw_bits))}'"
        raise SegAlignError(f"{where}: BitsAllocated must be an integer from 1 to 64 ({got})")
    raw_samples = dataset.get("SamplesPerPixel")
    samples = 1 if raw_samples is None or raw_samples == "" else _optional_int(raw_samples)
    if samples is None or not 1 <= samples <= 4:
        raise SegAlignError(f"{where}: SamplesPerPixel must be 1, 3 or 4, got '{short(_text(raw_samples))}'")
    photometric = str(dataset.get("PhotometricInterpretation", "") or "").strip().upper()
    pixels = rows * columns * frames
    described = f"Rows {rows} x Columns {columns}" + (f" x NumberOfFrames {_big(frames)}" if frames != 1 else "")
    if samples != 1:
        described += f" x SamplesPerPixel {samples}"
    if bits == 1:
        return (pixels * samples + 7) // 8, described + " at BitsAllocated 1"
    per_sample = (bits + 7) // 8
    if samples == 3 and photometric in ("YBR_FULL_422", "YBR_PARTIAL_422"):  # two samples' worth per pixel
        return pixels * 2 * per_sample, described + f" (4:2:2) x {per_sample} bytes (BitsAllocated {bits})"
    return pixels * samples * per_sample, described + f" x {per_sample} bytes (BitsAllocated {bits})"


def _text(value: Any) -> str:
    """A header value as DICOM writes it (several values joined by backslashes), for quoting in a message."""
    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(str(item) for item in value)
    if isinstance(value, (bytes, bytearray)):
        return value.decode("latin-1")
    return str(value)


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
        raise SegAlignError(f"{where}: {keyword} is not numeric: '{short(_text(value))}'") from None
    if len(numbers) != length:
        raise SegAlignError(
            f"{where}: {keyword} must have {length} numbers, got {len(numbers)}: '{short(_text(value))}'"
        )
    if not all(math.isfinite(number) and abs(number) <= MAX_COORDINATE_MM for number in numbers):
        raise SegAlignError(
            f"{where}: {keyword} must be finite numbers of at most {MAX_COORDINATE_MM:g} in magnitude, "
            f"got '{short(_text(value))}'"
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
            f"{where}: ImageOrientationPatient {short(_text(orientation))} is not two orthogonal unit vectors"
        )
    return tuple(np.concatenate([row / row_length, column / column_length]).tolist())  # type: ignore[return-value]


def _positive_spacing(spacing: list[float], where: str) -> tuple[float, float]:
    low, high = SPACING_RANGE_MM
    if spacing[0] <= 0 or spacing[1] <= 0:
        raise SegAlignError(f"{where}: PixelSpacing {short(_text(spacing))} must be positive")
    if not all(low <= value <= high for value in spacing):
        raise SegAlignError(f"{where}: PixelSpacing {short(_text(spacing))} is outside {low:g} to {high:g} mm")
    return (spacing[0], spacing[1])


def _required_int(dataset: pydicom.Dataset, keyword: str, path: Path) -> int:
    """A positive integer attribute (Rows, Columns), or a :class:`SegAlignError` saying what it holds instead."""
    raw = dataset.get(keyword)
    if raw is None or raw == "":
        raise SegAlignError(f"{short_path(path)}: {keyword} is missing")
    value = _optional_int(raw)
    if value is None or value <= 0:
        raise SegAlignError(f"{short_path(path)}: {keyword} must be a positive integer, got '{short(_text(raw))}'")
    return value


def _optional_int(value: Any) -> int | None:
    """``value`` as an int; None when absent or not one integer (garbled, fractional, infinite, several values)."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (str, bytes)):
        try:
            return int(value)
        except ValueError:  # "12.0", or more digits than int() converts: as a number, below
            pass
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return int(number) if math.isfinite(number) and number.is_integer() else None


def _odd_int(value: Any) -> bool:
    """True for a value that is there but is not one integer (an InstanceNumber that cannot be used)."""
    return value is not None and value != "" and _optional_int(value) is None


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
        scan.warnings.append(
            f"skipped {len(scan.unreadable)} files or folders that cannot be read "
            f"(e.g. {short_path(path)}: {short(reason, 160)})"
        )
    if scan.non_image:
        reasons = Counter(reason for _, reason in scan.non_image)
        described = ", ".join(f"{count} {reason}" for reason, count in reasons.most_common())
        scan.warnings.append(
            f"skipped {len(scan.non_image)} DICOM files that are not images on a patient grid ({described})"
        )
