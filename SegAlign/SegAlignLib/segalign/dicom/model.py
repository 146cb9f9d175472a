"""The DICOM data model: :class:`Frame`, :class:`Series`, :class:`DicomScan`, and the two orders of frames.

A *frame* is one 2D image: a single-frame file, or one frame of an enhanced multi-frame file. Everything SegAlign
exports is per frame, so every frame carries its own ImagePositionPatient (IPP), ImageOrientationPatient (IOP)
and PixelSpacing, read from the frame's functional groups where the file has them (``segalign.dicom.frames``).

Two orders are kept apart (see :func:`native_order` and :func:`position_order`), and :data:`Order` names them:

* **native** (acquisition) order, ``"instance"``: InstanceNumber ascending, then frame number; frames without
  InstanceNumber, and ties, by position along the slice normal.
* **position** (spatial) order, ``"position"``: position along the slice normal, ascending (towards
  ``cross(row, col)``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Literal

import numpy as np

from ..errors import SegAlignError, short, short_path
from ..geometry import plane_orientation, slice_normal
from .mosaic import Tile

#: The orders frames can be taken in: native acquisition order, or spatial order along the slice normal.
Order = Literal["instance", "position"]


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
