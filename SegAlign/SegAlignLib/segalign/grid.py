"""The series' own voxel grid: where the frames of a series sit as one volume, for ``--volume``
(:class:`~segalign.writers.volume.VolumeWriter`).

Convention (dcm2niix's, so that ``image.nii.gz`` equals its conversion voxel for voxel):

* Frames are stacked in **position order** (along the slice normal ``cross(IOP[0:3], IOP[3:6])``, ascending),
  whatever the export's order: slice ``k`` is the ``k``-th frame in position order.
* Voxel ``(i, j, k)`` is column ``i`` and row ``rows - 1 - j`` of slice ``k``: ``i`` runs along the rows
  (``IOP[0:3]``), ``j`` runs *up* the columns (``-IOP[3:6]``): the rows are flipped, as dcm2niix flips them, so
  voxel ``(0, 0, k)`` is the first pixel of the frame's last row.
* The affine (:attr:`VolumeGrid.lps_affine`, LPS millimetres; :attr:`VolumeGrid.ras_affine` for NIfTI) puts every
  voxel centre exactly on its pixel's centre: its columns are ``IOP[0:3] * column spacing``,
  ``-IOP[3:6] * row spacing`` and the step from one frame's IPP to the next (off the normal for a gantry tilt:
  the affine is then sheared), its origin the centre of the first frame's last-row first pixel.

Only a regular stack is a volume without resampling: one orientation, one matrix and pixel spacing, as many frames
at every position, and positions that follow one constant step to within :data:`GRID_TOLERANCE_MM`. Anything else is
refused with the numbers, unless resampling is asked for: frames whose IPPs lie on one line (unevenly spaced, slices
missing) are then put onto a regular grid along that line (:class:`Resampling`: nearest frame for labels, linear
between the two neighbouring frames for the image). A 4D series (every position holding as many frames: time
points, diffusion directions) is a 4D volume, at each position its frames in acquisition order (as dcm2niix orders
them); it is never resampled. Positions holding different numbers of frames, and mixed planes, are always refused.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .dicom import Frame
from .dicom.model import native_order, plural, position_along
from .errors import SegAlignError
from .geometry import same_orientation, slice_normal, tilt_degrees

#: How far (mm) a frame's IPP may lie from where a regular grid puts it; also the distance along the normal below
#: which two frames are at one position. A hundredth of a millimetre: DICOM writes positions with 16 characters,
#: scanners round them to a thousandth or finer.
GRID_TOLERANCE_MM = 0.01
#: Pixel spacings and orientation cosines that differ by less than this are the same.
SPACING_TOLERANCE_MM = 1e-4
#: Stacked more than this off the normal (degrees), a grid is called tilted (its affine is sheared).
TILT_TOLERANCE_DEGREES = 0.01
#: A resampled slice this close to halfway (as a fraction of the gap) between two frames takes its labels from the
#: lower one (earlier in position order): rounding in the positions must not decide.
HALFWAY_TOLERANCE = 1e-6
#: A resampled grid has at most this many times as many slices as the series has frames (as dcm2niix's
#: equidistant conversion: a pair of frames almost at one position must not make thousands of slices).
MAX_RESAMPLE_FACTOR = 2


@dataclass(frozen=True)
class Resampling:
    """How a regular grid is filled from unevenly spaced frames along one stacking line.

    ``nearest[k]`` is the frame (index into :attr:`VolumeGrid.frames`, position order) whose labels slice ``k``
    takes (halfway between two, the lower); ``below[k]``, ``above[k]`` and ``weight[k]`` give its image as
    ``(1 - weight) * frame below + weight * frame above``."""

    nearest: np.ndarray
    below: np.ndarray
    above: np.ndarray
    weight: np.ndarray
    label_displacement_mm: float  #: the farthest a label voxel is from the pixel centre its label was taken from
    image_displacement_mm: float  #: the farthest an interpolated image voxel is from the nearer frame it blends
    gaps_mm: tuple[float, float]  #: the frames' smallest and largest gap along the normal

    def describe(self, slices: int, frames: int, step_mm: float) -> str:
        """The export's warning: the first line says what was done and the largest displacement, the second how
        the image was made."""
        low, high = self.gaps_mm
        return (
            f"volume resampled onto {plural(slices, 'regular slice')} {step_mm:.4g} mm apart along the normal (the "
            f"{frames} frames are {low:.4g} to {high:.4g} mm apart): labels from the nearest frame, largest "
            f"displacement {self.label_displacement_mm:.4g} mm\nthe image is interpolated linearly between the two "
            f"neighbouring frames, up to {self.image_displacement_mm:.4g} mm from the nearer one"
        )


@dataclass(frozen=True)
class VolumeGrid:
    """The frames of a series as one volume: ``shape`` is ``(columns, rows, slices)``, NIfTI's ``(i, j, k)``."""

    frames: tuple[Frame, ...]  #: one per slice, in position order (of a 4D series, each position's first)
    shape: tuple[int, int, int]  #: of one volume
    lps_affine: np.ndarray  #: voxel ``(i, j, k, 1)`` -> LPS millimetres
    normal: np.ndarray  #: the frames' slice normal (LPS)
    tilt_degrees: float  #: how far the slices are stacked off their normal (0 unless tilted)
    resampling: Resampling | None = None  #: None when every slice is a frame
    volumes: int = 1  #: more than 1 for a 4D series: every position holds this many frames
    #: ``id(frame)`` -> ``(slice, volume)`` of every frame (for a grid that is not resampled)
    slots: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def ras_affine(self) -> np.ndarray:
        """Voxel -> RAS millimetres, as NIfTI stores it (the sform)."""
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.lps_affine

    @property
    def sheared(self) -> bool:
        """True when the slices are stacked off their normal (gantry tilt): the affine is not orthogonal."""
        return self.tilt_degrees > TILT_TOLERANCE_DEGREES

    def orthogonal_ras_affine(self) -> np.ndarray:
        """The affine with its slice column along the normal, as long as the slices are apart along it: what a
        NIfTI qform (which cannot shear) holds. The same as :attr:`ras_affine` unless the grid is sheared."""
        affine = self.lps_affine.copy()
        step = affine[:3, 2]
        affine[:3, 2] = self.normal * float(np.dot(step, self.normal))
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine

    def slot(self, frame: Frame) -> tuple[int, int]:
        """The slice and the volume (0 but in a 4D series) of a frame."""
        return self.slots[id(frame)]

    def as_dict(self) -> dict:
        """What export.json records of the grid."""
        record = {
            "shape": list(self.shape),
            "affine_ras": [[round(float(v), 6) for v in row] for row in self.ras_affine],
            "convention": "i: column, j: rows flipped (rows - 1 - row), k: frames in position order",
            "tilt_degrees": round(self.tilt_degrees, 4),
        }
        if self.volumes > 1:
            record["volumes"] = self.volumes
        if self.resampling is not None:
            record["resampled"] = {
                "label_displacement_mm": round(self.resampling.label_displacement_mm, 4),
                "image_displacement_mm": round(self.resampling.image_displacement_mm, 4),
            }
        return record


def volume_grid(frames: Sequence[Frame], resample: bool = False) -> VolumeGrid:
    """The grid ``frames`` form (in any order), or a :class:`SegAlignError` that says why they are no volume.

    ``resample`` accepts unevenly spaced frames along one line (and gives a grid with :attr:`VolumeGrid.resampling`);
    without it they are refused, with the gaps."""
    frames = list(frames)
    if not frames:
        raise SegAlignError("a volume needs at least one frame")
    mosaics = [frame for frame in frames if frame.tiles]
    if mosaics:
        kind = "is a Siemens mosaic" if len(mosaics) == 1 else "are Siemens mosaics"
        what = (f"{plural(len(mosaics), 'frame')} of the series {kind} (many slices in one image): a volume needs "
                "one slice per image")
        raise SegAlignError(f"{what}; pass split_mosaics=True", cli_message=f"{what}; add --split-mosaics")
    first = frames[0]
    orientations = {tuple(np.round(frame.orientation, 4)) for frame in frames}
    if any(not same_orientation(frame.orientation, first.orientation, SPACING_TOLERANCE_MM) for frame in frames):
        raise SegAlignError(
            f"the frames lie in {len(orientations)} different orientations (a localizer, or mixed planes): "
            "a volume needs parallel frames"
        )
    matrices = Counter((frame.rows, frame.columns) for frame in frames)
    if len(matrices) > 1:
        listed = ", ".join(f"{rows}x{columns} ({count})" for (rows, columns), count in matrices.most_common())
        raise SegAlignError(f"the frames have {len(matrices)} different matrices ({listed}): a volume needs one")
    spacings = np.array([frame.pixel_spacing for frame in frames], dtype=float)
    if np.ptp(spacings, axis=0).max() > SPACING_TOLERANCE_MM:
        raise SegAlignError(
            f"the frames' pixel spacings differ (rows {spacings[:, 0].min():.6g} to {spacings[:, 0].max():.6g} mm, "
            f"columns {spacings[:, 1].min():.6g} to {spacings[:, 1].max():.6g} mm): a volume needs one"
        )
    normal = slice_normal(first.orientation)
    along = np.array([position_along(frame, normal) for frame in frames])
    order = np.argsort(along, kind="stable")
    frames = [frames[index] for index in order]
    along = along[order]
    positions = np.array([frame.position for frame in frames], dtype=float)
    groups = _position_groups(frames, along, positions, normal, resample)
    slots = {id(frames[index]): (k, t) for k, group in enumerate(groups) for t, index in enumerate(group)}
    volumes = len(groups[0])
    frames = [frames[group[0]] for group in groups]
    along = along[[group[0] for group in groups]]
    positions = positions[[group[0] for group in groups]]

    row_spacing, column_spacing = first.pixel_spacing
    orientation = np.asarray(first.orientation, dtype=float)
    columns_axis = orientation[:3] * column_spacing
    rows_axis = -orientation[3:6] * row_spacing  # j runs up the columns: rows flipped, as dcm2niix does
    count = len(frames)
    resampling = None
    if count == 1:
        step = normal * 1.0  # one frame: a slab 1 mm thick along its normal
    else:
        step = (positions[-1] - positions[0]) / (count - 1)
        expected = positions[0] + np.arange(count)[:, None] * step
        off = np.linalg.norm(positions - expected, axis=1)
        if off.max() > GRID_TOLERANCE_MM:
            if not resample:
                raise _irregular_error(frames, along, off)
            step, resampling, count = _resampling(frames, along, positions)
    affine = np.eye(4)
    affine[:3, 0] = columns_axis
    affine[:3, 1] = rows_axis
    affine[:3, 2] = step
    # voxel (0, 0, 0): column 0 of the last row of the first frame
    affine[:3, 3] = positions[0] + (first.rows - 1) * row_spacing * orientation[3:6]
    tilt = tilt_degrees(step, normal) if len(frames) > 1 else 0.0
    return VolumeGrid(tuple(frames), (first.columns, first.rows, count), affine, normal, tilt, resampling, volumes,
                      slots)


def _position_groups(frames: list[Frame], along: np.ndarray, positions: np.ndarray, normal: np.ndarray,
                     resample: bool) -> list[list[int]]:
    """The frames (indices, in position order) at each position, each position's in acquisition order. Refused:
    positions holding different numbers of frames (repeats, duplicates), frames at one position that lie apart in
    their plane, and a 4D series to be resampled."""
    groups: list[list[int]] = [[0]]
    for index in range(1, len(along)):
        if along[index] - along[groups[-1][0]] <= GRID_TOLERANCE_MM:
            groups[-1].append(index)
        else:
            groups.append([index])
    sizes = Counter(len(group) for group in groups)
    if len(sizes) == 1 and len(groups[0]) == 1:
        return groups
    if len(sizes) > 1:
        repeated = sum(1 for group in groups if len(group) > 1)
        raise SegAlignError(
            f"{plural(repeated, 'position')} of {len(groups)} {'holds' if repeated == 1 else 'hold'} more than one "
            f"frame (from {min(sizes)} to {max(sizes)} at a position: repeats, duplicates or an incomplete 4D "
            "series): a volume needs as many frames at every position"
        )
    times = len(groups[0])
    what = f"the series is 4D: {len(along)} frames at {plural(len(groups), 'position')}, {times} at each"
    if resample:
        raise SegAlignError(f"{what}; a 4D series is not resampled: leave out resample=True",
                            cli_message=f"{what}; a 4D series is not resampled: leave out --volume-resample")
    rank = {id(frame): order for order, frame in enumerate(native_order(frames, normal))}
    groups = [sorted(group, key=lambda index: rank[id(frames[index])]) for group in groups]
    for group in groups:
        apart = np.linalg.norm(positions[group] - positions[group[0]], axis=1).max()
        if apart > GRID_TOLERANCE_MM:
            raise SegAlignError(f"{what}, but frames at one position lie up to {apart:.4g} mm apart in their plane: "
                                "they make no volume")
    return groups


def _irregular_error(frames: list[Frame], along: np.ndarray, off: np.ndarray) -> SegAlignError:
    """Why frames that are not evenly stacked make no volume, with the numbers."""
    gaps = np.diff(along)
    smallest, largest = float(gaps.min()), float(gaps.max())
    worst = int(np.argmax(off))
    missing = ""
    if smallest > 0 and all(abs(gap / smallest - round(gap / smallest)) < 0.05 for gap in gaps):
        lost = sum(round(gap / smallest) - 1 for gap in gaps)
        if lost:
            missing = f" ({plural(lost, 'slice')} missing?)"
    if largest - smallest > GRID_TOLERANCE_MM:
        what = f"uneven slice spacing: gaps from {smallest:.4g} to {largest:.4g} mm along the normal{missing}"
    else:
        what = "the frames do not lie on one straight stack (their positions shift in their plane)"
    number = frames[worst].instance_number
    which = f"InstanceNumber {number}" if number is not None else f"frame {worst + 1} in position order"
    where = f"{what}; {which} lies {off[worst]:.4g} mm off an evenly spaced stack, so a volume would misplace it"
    return SegAlignError(
        f"{where}: pass VolumeOptions(resample=True) to resample onto a regular grid",
        cli_message=f"{where}: add --volume-resample to resample onto a regular grid",
    )


def _resampling(frames: list[Frame], along: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, Resampling, int]:
    """The regular grid along the frames' stacking line: its step (LPS), how each slice is filled, its slices.

    The slices run from the first frame to the last, as many as the smallest gap asks for (at most
    :data:`MAX_RESAMPLE_FACTOR` times the frames), evenly spaced."""
    distance = along - along[0]
    span = float(distance[-1])
    direction = (positions[-1] - positions[0]) / span  # LPS mm per mm along the normal
    off = np.linalg.norm(positions - (positions[0] + distance[:, None] * direction), axis=1)
    if off.max() > GRID_TOLERANCE_MM:
        worst = int(np.argmax(off))
        raise SegAlignError(
            f"the frames do not lie on one stacking line: frame {worst + 1} in position order is "
            f"{off[worst]:.4g} mm off the line from the first frame to the last, so no regular grid holds them all "
            "(resampling only fills gaps along the stack)"
        )
    gaps = np.diff(distance)
    smallest = float(gaps.min())
    count = round(span / smallest) + 1
    count = max(2, min(count, MAX_RESAMPLE_FACTOR * len(frames)))
    targets = np.linspace(0.0, span, count)
    above = np.searchsorted(distance, targets, side="left").clip(1, len(frames) - 1)
    below = above - 1
    weight = ((targets - distance[below]) / (distance[above] - distance[below])).clip(0.0, 1.0)
    nearest = np.where(weight > 0.5 + HALFWAY_TOLERANCE, above, below)  # halfway: the lower frame
    length = float(np.linalg.norm(direction))  # mm along the stacking line per mm along the normal
    label_displacement = float(np.abs(targets - distance[nearest]).max()) * length
    image_displacement = float(np.minimum(targets - distance[below], distance[above] - targets).max()) * length
    step = direction * (span / (count - 1))
    resampling = Resampling(nearest, below, above, weight, label_displacement, image_displacement,
                            (smallest, float(gaps.max())))
    return step, resampling, count
