"""Nearest-neighbour sampling of a label volume on DICOM frames, in patient space.

For pixel ``(r, c)`` of a frame, the LPS centre ``IPP + c * dc * IOP[0:3] + r * dr * IOP[3:6]`` is taken to RAS
and through the inverse NIfTI affine to a continuous voxel index ``x``; the label is that of voxel
``floor(x + 0.5)`` (ties rounded up, as ITK's nearest-neighbour interpolator does; a tie is anything within
:data:`TIE_TOLERANCE_VOXELS` of halfway, so rounding error cannot decide it), or 0 outside the volume.

The mapping is affine in ``(r, c)``, so each voxel axis is ``origin + r * per_row + c * per_column``. An axis that
does not change across the frame is a constant, one that changes only along rows or columns is a vector, and only a
truly oblique axis needs a full ``rows x columns`` array: frames parallel to the volume's axes (the common case)
cost one gather.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import numpy as np

from ..dicom import Frame, Tile
from ..geometry import IndexMapping, frame_index_mapping

if TYPE_CHECKING:
    from .model import Segmentation

#: An axis index that drifts less than this (in voxels) across a whole frame is treated as constant there.
CONSTANT_DRIFT_VOXELS = 1e-7
#: A pixel centre within this many voxels of halfway between two voxel centres is a tie, and rounds up. Without
#: it, rounding error decides exact ties (which are common: 1.5 mm grids on 0.78125 mm pixels), so the same
#: segmentation cropped or stored with another origin could round them apart.
TIE_TOLERANCE_VOXELS = 1e-9


class FrameSampler:
    """Samples one label volume on any number of frames; memory does not grow with the number of frames.

    ``labels`` is indexed ``[i, j, k]`` and ``affine`` takes ``(i, j, k, 1)`` to RAS millimetres.
    """

    def __init__(self, labels: np.ndarray, affine: np.ndarray) -> None:
        if labels.ndim != 3:
            raise ValueError(f"labels must be 3D, got shape {labels.shape}")
        if not (labels.flags.c_contiguous or labels.flags.f_contiguous):
            labels = np.ascontiguousarray(labels)
        self.labels = labels
        self.shape = labels.shape
        self._flat = labels.reshape(-1, order="F" if labels.flags.f_contiguous and not labels.flags.c_contiguous else "C")
        self._strides = tuple(stride // labels.itemsize for stride in labels.strides)
        self.ras_to_index = np.linalg.inv(np.asarray(affine, dtype=float))
        self.pixels_inside = 0  #: pixels sampled inside the volume so far, over all frames
        self._lock = threading.Lock()  # sample() may run on several threads

    def mapping(self, plane: Frame | Tile) -> IndexMapping:
        """Continuous voxel index of a plane's pixel ``(0, 0)`` and its increments per row and per column.

        ``plane`` is a frame or one tile of a mosaic (see :meth:`Frame.planes`); for a mosaic frame this is
        refused, since its header's geometry describes none of its slices.
        """
        if isinstance(plane, Frame) and plane.tiles:
            raise ValueError(f"{plane.source_file}: a mosaic frame has one mapping per tile; use frame.planes()")
        return frame_index_mapping(self.ras_to_index, plane.position, plane.orientation, plane.pixel_spacing)

    def may_overlap(self, frame: Frame) -> bool:
        """False when, for every plane of the frame, its corners all lie beyond one face of the volume (a cheap,
        exact rejection)."""
        return any(self._plane_may_overlap(plane) for plane in frame.planes())

    def _plane_may_overlap(self, plane: Tile) -> bool:
        origin, per_row, per_column = self.mapping(plane)
        corners = np.array(
            [origin + r * per_row + c * per_column for r in (0, plane.rows - 1) for c in (0, plane.columns - 1)]
        )
        low = np.floor(corners.min(axis=0) + 0.5)
        high = np.floor(corners.max(axis=0) + 0.5)
        return bool(np.all(high >= 0) and np.all(low <= np.array(self.shape) - 1))

    def sample(self, frame: Frame) -> np.ndarray:
        """Labels on the frame's pixel grid: an array of ``(Rows, Columns)`` laid out like its ``pixel_array``.

        A mosaic frame gives a label mosaic: each tile sampled on its own slice plane (pixels outside every tile
        are 0).
        """
        return self.sample_counted(frame)[0]

    def sample_counted(self, frame: Frame) -> tuple[np.ndarray, int]:
        """:meth:`sample`, and how many of the frame's pixels lie inside the volume (0: outside its extent)."""
        if not frame.tiles:
            return self._sample_plane_counted(frame.planes()[0])
        result = np.zeros((frame.rows, frame.columns), dtype=self.labels.dtype)
        inside = 0
        for tile in frame.tiles:
            result[tile.region()], count = self._sample_plane_counted(tile)
            inside += count
        return result, inside

    def sample_plane(self, plane: Tile) -> np.ndarray:
        """Labels on one plane's pixel grid, ``(plane.rows, plane.columns)``."""
        return self._sample_plane_counted(plane)[0]

    def _sample_plane_counted(self, plane: Tile) -> tuple[np.ndarray, int]:
        rows, columns = plane.rows, plane.columns
        origin, per_row, per_column = self.mapping(plane)
        raw = [_axis_indices(origin[axis], per_row[axis], per_column[axis], rows, columns) for axis in range(3)]
        shapes = [index.shape for index in raw]
        if sorted(shapes) == sorted([(1, 1), (rows, 1), (1, columns)]) and rows > 1 and columns > 1:
            result, count = self._sample_parallel(raw, shapes, rows, columns)
        else:
            result, count = self._sample_any(raw, rows, columns)
        if count:
            with self._lock:
                self.pixels_inside += count
        return result, count

    def _sample_any(self, raw: list[np.ndarray], rows: int, columns: int) -> tuple[np.ndarray, int]:
        """Any geometry: the indices clipped into the volume, one flat gather through the sum of the axes' offsets,
        and the pixels whose voxel lies outside set to 0."""
        indices = []
        for axis, index in enumerate(raw):
            inside = (index >= 0) & (index < self.shape[axis])
            if not np.any(inside):
                return np.zeros((rows, columns), dtype=self.labels.dtype), 0
            if np.all(inside):
                inside = None
            else:
                index = np.clip(index, 0, self.shape[axis] - 1)
            indices.append((index, inside))
        offset: np.ndarray | int = 0
        for axis, (index, _) in enumerate(indices):
            offset = offset + index * self._strides[axis]
        result = np.take(self._flat, np.broadcast_to(offset, (rows, columns)))
        valid: np.ndarray | bool = True
        for _, inside in indices:
            if inside is not None:
                valid = valid & inside
        if valid is True:
            return result, rows * columns
        valid = np.broadcast_to(valid, (rows, columns))
        result[~valid] = 0
        return result, int(np.count_nonzero(valid))

    def _sample_parallel(self, raw: list[np.ndarray], shapes: list, rows: int, columns: int) -> tuple[np.ndarray, int]:
        """Frames parallel to a plane of the volume (one axis constant, one following rows, one columns): a slice
        of the volume, then one gather along each of its two axes, for the rows and columns that lie inside it only
        (they are one run each: the indices grow or shrink steadily). A layer cropped to a few small segments
        (see :mod:`.layers`) costs what its own part of the frame costs."""
        fixed = shapes.index((1, 1))
        row_axis, column_axis = shapes.index((rows, 1)), shapes.index((1, columns))
        k = int(raw[fixed][0, 0])
        row_index, column_index = raw[row_axis][:, 0], raw[column_axis][0, :]
        row_in = np.flatnonzero((row_index >= 0) & (row_index < self.shape[row_axis]))
        column_in = np.flatnonzero((column_index >= 0) & (column_index < self.shape[column_axis]))
        if not 0 <= k < self.shape[fixed] or row_in.size == 0 or column_in.size == 0:
            return np.zeros((rows, columns), dtype=self.labels.dtype), 0
        r0, r1, c0, c1 = int(row_in[0]), int(row_in[-1]) + 1, int(column_in[0]), int(column_in[-1]) + 1
        plane = self.labels[(slice(None),) * fixed + (k,)]  # a view: the other two axes
        row_position = 0 if row_axis < column_axis else 1
        picked = np.take(plane, row_index[r0:r1], axis=row_position)
        picked = np.take(picked, column_index[c0:c1], axis=1 - row_position)
        block = picked if row_position == 0 else picked.T
        if (r0, r1, c0, c1) == (0, rows, 0, columns):
            return np.ascontiguousarray(block), rows * columns
        result = np.zeros((rows, columns), dtype=self.labels.dtype)
        result[r0:r1, c0:c1] = block
        return result, (r1 - r0) * (c1 - c0)

def _axis_indices(origin: float, per_row: float, per_column: float, rows: int, columns: int) -> np.ndarray:
    """Nearest voxel index along one axis, shaped to broadcast against ``(rows, columns)``."""
    varies_by_row = abs(per_row) * (rows - 1) > CONSTANT_DRIFT_VOXELS
    varies_by_column = abs(per_column) * (columns - 1) > CONSTANT_DRIFT_VOXELS
    continuous: np.ndarray
    origin = origin + TIE_TOLERANCE_VOXELS
    if varies_by_row and varies_by_column:
        continuous = (origin + 0.5) + per_row * np.arange(rows)[:, None] + per_column * np.arange(columns)[None, :]
    elif varies_by_row:
        continuous = (origin + 0.5) + per_row * np.arange(rows)[:, None]
    elif varies_by_column:
        continuous = (origin + 0.5) + per_column * np.arange(columns)[None, :]
    else:
        continuous = np.array([[origin + 0.5]])
    return np.floor(continuous).astype(np.intp)


class SegmentationSampler:
    """Samples every layer of a segmentation (see :mod:`.layers`) on a frame, each through its own affine: a
    segmentation whose segments do not overlap is one layer, sampled exactly as :class:`FrameSampler` samples it.
    """

    def __init__(self, segmentation: "Segmentation") -> None:
        self.samplers = [FrameSampler(layer.labels, layer.affine) for layer in segmentation.layers]
        #: The label values each layer holds (``layer_values[n]``: those of layer ``n``).
        self.layer_values: list[list[int]] = [[] for _ in self.samplers]
        for value in segmentation.values:
            self.layer_values[segmentation.layer_of(value)].append(value)

    @property
    def pixels_inside(self) -> int:
        """Pixels sampled inside a layer's volume so far (summed over layers)."""
        return sum(sampler.pixels_inside for sampler in self.samplers)

    def may_overlap(self, frame: Frame) -> bool:
        """False when the frame lies wholly outside every layer's volume (see :meth:`FrameSampler.may_overlap`)."""
        return any(sampler.may_overlap(frame) for sampler in self.samplers)

    def sample(self, frame: Frame) -> list[np.ndarray]:
        """The frame's labels in each layer, each ``(Rows, Columns)`` laid out like its ``pixel_array``."""
        return self.sample_counted(frame)[0]

    def sample_counted(self, frame: Frame) -> tuple[list[np.ndarray], int]:
        """:meth:`sample`, and how many of the frame's pixels lie inside some layer's volume (the most of any)."""
        sampled = [sampler.sample_counted(frame) for sampler in self.samplers]
        return [labels for labels, _ in sampled], max(inside for _, inside in sampled)
