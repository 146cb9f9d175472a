"""What a series' geometry looks like: the facts ``segalign info`` prints and export warnings are made of.

None of this changes how frames are sampled (each frame is always sampled on its own plane); it tells the user
what kind of acquisition they have, and flags what commonly breaks other tools.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..geometry import direction_letters, plane_orientation, same_orientation, tilt_degrees
from .model import Frame, Series, plural, position_along

#: Positions closer than this (mm) along the normal and in plane are "the same position".
POSITION_TOLERANCE_MM = 0.01
#: Slice gaps that differ by more than this (mm) make the spacing "uneven".
GAP_TOLERANCE_MM = 0.01
#: A stack whose slices are stacked off the normal by more than this (degrees) is "tilted".
TILT_TOLERANCE_DEGREES = 0.01


@dataclass
class SeriesReport:
    """A readable diagnosis of one series (``segalign info``); :meth:`as_dict` is its JSON form."""

    uid: str
    description: str
    modality: str
    series_number: int | None
    frames: int
    files: int
    multiframe: bool
    matrix: list[str]  #: distinct "ROWSxCOLUMNS" values
    pixel_spacing: list[str]  #: distinct "ROW_SPACING x COLUMN_SPACING" values
    orientation: str  #: AXIAL, SAGITTAL, CORONAL or OBLIQUE (nearest ...)
    orientations: int  #: number of distinct orientations (more than 1: localizer or mixed planes)
    normal: str  #: patient direction of cross(row, col), e.g. "S"
    instance_direction: str  #: where increasing InstanceNumber moves, e.g. "towards I (against the normal)"
    left_handed_in_instance_order: bool
    positions: int  #: distinct positions
    duplicate_positions: int  #: positions holding more than one frame
    min_gap_mm: float | None
    max_gap_mm: float | None
    uniform_spacing: bool
    tilt_degrees: float
    #: Siemens mosaics: e.g. "35 slices of 64x64 in a 6x6 grid, slices towards SA (3.6 mm apart, CSA order)"
    mosaic: str = ""
    patient_position: str = ""
    folder: str = ""  #: the deepest folder holding the series' files, relative to the scanned folder
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The report as a dict (``segalign info --json``)."""
        return asdict(self)

    def warnings(self) -> list[str]:
        """The irregularities an export should mention (all of them are handled exactly, frame by frame)."""
        messages = list(self.notes)
        if self.orientations > 1:
            messages.append(
                f"series has {self.orientations} different orientations (localizer or mixed planes); "
                "every frame is sampled on its own plane"
            )
        if self.duplicate_positions:
            messages.append(
                f"{plural(self.duplicate_positions, 'position')} "
                f"{'holds' if self.duplicate_positions == 1 else 'hold'} more than one frame (4D, repeats or duplicates); "
                "every frame is exported"
            )
        if not self.uniform_spacing and self.min_gap_mm is not None:
            messages.append(
                f"uneven slice spacing: gaps from {self.min_gap_mm:.3f} to {self.max_gap_mm:.3f} mm "
                "(missing slices?); frames are sampled where they are"
            )
        if self.tilt_degrees > TILT_TOLERANCE_DEGREES:
            messages.append(
                f"slices are stacked {self.tilt_degrees:.2f} deg off their normal (gantry tilt); "
                "frames are sampled where they are"
            )
        return messages

    def to_text(self) -> str:
        """The report as readable lines (``segalign info``)."""
        gaps = (
            f"{self.min_gap_mm:.3f} to {self.max_gap_mm:.3f} mm ({'uniform' if self.uniform_spacing else 'UNEVEN'})"
            if self.min_gap_mm is not None
            else "n/a (one position)"
        )
        number = self.series_number if self.series_number is not None else "none"
        lines = [
            f"Series {self.uid or '(no SeriesInstanceUID)'}",
            f"  description      {self.description or '-'}   (SeriesNumber {number}, {self.modality or '?'})",
            f"  folder           {self.folder or '-'}   (PatientPosition {self.patient_position or 'not given'})",
            f"  frames           {plural(self.frames, 'frame')} in {plural(self.files, 'file')}"
            + ("  (multi-frame)" if self.multiframe else ""),
            f"  matrix           {', '.join(self.matrix)} (rows x columns)",
            f"  pixel spacing    {', '.join(self.pixel_spacing)} mm (row x column)",
            f"  orientation      {self.orientation}, normal towards {self.normal}"
            + (f"; {self.orientations} orientations" if self.orientations > 1 else ""),
            f"  InstanceNumber   {self.instance_direction}"
            + (
                "; a left-handed stack in that order (stacking InstanceNumber against cross(row, column) mirrors "
                "it, as tools that stack files by InstanceNumber do; SegAlign places each frame on its own)"
                if self.left_handed_in_instance_order else ""
            ),
            f"  positions        {plural(self.positions, 'distinct position')}"
            + (f", {self.duplicate_positions} with several frames" if self.duplicate_positions else ", no duplicates"),
            f"  slice gaps       {gaps}",
            f"  gantry tilt      {self.tilt_degrees:.2f} deg (from IPP and IOP)",
        ]
        if self.mosaic:
            lines.insert(3, f"  mosaic           {self.mosaic}")
        lines += [f"  problem: {problem}" for problem in self.problems]
        lines += [f"  note: {note}" for note in self.warnings()]
        return "\n".join(lines)


def diagnose(series: Series, root: Path | None = None) -> SeriesReport:
    """Describe the geometry of ``series``: orientation, stacking, spacing, tilt, duplicates.

    ``root`` (the scanned folder) lets the report say which folder the series is in. Positions, gaps, tilt and
    duplicates are those of the planes the pixels lie on: for Siemens mosaics, their tiles.
    """
    frames = series.frames
    reference = series.reference_orientation
    normal = series.reference_normal
    main = [frame for frame in frames if same_orientation(frame.orientation, reference)]
    main_planes = [plane for frame in main for plane in frame.split_tiles()]
    orientations = _count_orientations(frames)

    positions = _distinct_positions(main_planes, normal)
    along = np.array([position_along_point(point, normal) for point in positions])
    order = np.argsort(along)
    gaps = np.diff(along[order])
    tilt = 0.0
    if len(positions) > 1:
        stacking = positions[order[-1]] - positions[order[0]]
        tilt = tilt_degrees(stacking, normal)

    instance_direction, left_handed = _instance_direction(series.ordered("instance"), main, normal)
    orientation, normal_letters = plane_orientation(reference).describe(), direction_letters(normal)
    if not frames:
        orientation = normal_letters = instance_direction = "n/a (no frame could be placed)"
    return SeriesReport(
        uid=series.uid,
        description=series.description,
        modality=series.modality,
        series_number=series.series_number,
        frames=len(frames),
        files=len(series.files),
        multiframe=series.is_multiframe,
        matrix=sorted({f"{frame.rows}x{frame.columns}" for frame in frames}),
        pixel_spacing=sorted({f"{frame.pixel_spacing[0]:g} x {frame.pixel_spacing[1]:g}" for frame in frames}),
        orientation=orientation,
        orientations=orientations,
        normal=normal_letters,
        instance_direction=instance_direction,
        left_handed_in_instance_order=left_handed,
        positions=len(positions),
        duplicate_positions=_count_duplicates([plane for frame in frames for plane in frame.split_tiles()]),
        min_gap_mm=float(gaps.min()) if len(gaps) else None,
        max_gap_mm=float(gaps.max()) if len(gaps) else None,
        uniform_spacing=bool(len(gaps) == 0 or gaps.max() - gaps.min() <= GAP_TOLERANCE_MM),
        tilt_degrees=tilt,
        mosaic=_describe_mosaic(frames),
        patient_position=series.patient_position,
        folder=series.folder(root) if root is not None else "",
        problems=list(series.problems),
        notes=list(series.notes),
    )


def _describe_mosaic(frames: list[Frame]) -> str:
    """The mosaic layout of a series' frames: slices, tile matrix, grid, and where the slices run."""
    mosaics = [frame for frame in frames if frame.tiles]
    if not mosaics:
        return ""
    layouts = Counter(
        (len(f.tiles), f.tiles[0].rows, f.tiles[0].columns, f.rows // f.tiles[0].rows) for f in mosaics
    )
    (count, rows, columns, grid), _ = layouts.most_common(1)[0]
    first = mosaics[0]
    text = f"{count} slices of {rows}x{columns} in a {grid}x{grid} grid"
    if len(first.tiles) > 1:
        step = np.asarray(first.tiles[1].position) - np.asarray(first.tiles[0].position)
        text += f", slices towards {direction_letters(step)} ({np.linalg.norm(step):.3g} mm apart, CSA order)"
    if len(mosaics) < len(frames):
        text += f"; {len(mosaics)} of {len(frames)} frames are mosaics"
    if len(layouts) > 1:
        text += f"; {len(layouts)} different layouts"
    return text


def position_along_point(point: np.ndarray, normal: np.ndarray) -> float:
    """Signed distance (mm) of an LPS point along ``normal``."""
    return float(np.dot(point, normal))


def _count_orientations(frames: list[Frame]) -> int:
    distinct: list[tuple[float, ...]] = []
    for frame in frames:
        if not any(same_orientation(frame.orientation, seen) for seen in distinct):
            distinct.append(frame.orientation)
    return len(distinct)


def _distinct_positions(frames: list[Frame], normal: np.ndarray) -> list[np.ndarray]:
    """Distinct IPPs (to POSITION_TOLERANCE_MM) of frames that share one orientation."""
    points = sorted((np.asarray(frame.position) for frame in frames), key=lambda p: position_along_point(p, normal))
    distinct: list[np.ndarray] = []
    for point in points:
        if not distinct or np.max(np.abs(point - distinct[-1])) > POSITION_TOLERANCE_MM:
            distinct.append(point)
    return distinct


def _count_duplicates(frames: list[Frame]) -> int:
    """Number of (orientation, position) places that hold more than one frame."""
    places = Counter(
        (tuple(np.round(frame.orientation, 4)), tuple(np.round(np.asarray(frame.position) / POSITION_TOLERANCE_MM)))
        for frame in frames
    )
    return sum(1 for count in places.values() if count > 1)


def _instance_direction(native: list[Frame], main: list[Frame], normal: np.ndarray) -> tuple[str, bool]:
    """Where increasing InstanceNumber moves along the normal, and whether that stack is left-handed."""
    main_ids = {id(frame) for frame in main}
    along = [position_along(frame, normal) for frame in native if id(frame) in main_ids]
    steps = np.diff(along)
    steps = steps[np.abs(steps) > POSITION_TOLERANCE_MM]
    if len(steps) == 0:
        return "all frames at one position", False
    if np.all(steps > 0):
        return f"increases towards {direction_letters(normal)} (along the normal)", False
    if np.all(steps < 0):
        return f"increases towards {direction_letters(-normal)} (against the normal)", True
    return "not monotonic along the normal (interleaved, 4D or shuffled)", False
