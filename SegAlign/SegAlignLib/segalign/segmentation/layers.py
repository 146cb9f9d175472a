"""Segments that overlap, stored as a few label volumes (*layers*) in which they do not.

A segmentation whose segments never overlap is one label volume, as a label map file is. Where segments overlap
(a BODY outline around every organ, a PTV around its CTV, masks of several models), each layer holds segments
that do not overlap each other, and a segment lives in exactly one layer, with its own label value (values are
unique across layers). This is how Slicer's segmentations share labelmap layers: as few layers as the data
allows, never one volume per segment unless every segment overlaps every other.

A layer has its own affine, so layers may lie on different grids (several files given at once) and a layer that
holds a few small segments is kept cropped to them (:func:`crop`), which keeps memory close to one label volume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np


@dataclass(frozen=True)
class Layer:
    """One label volume of a segmentation: ``labels[i, j, k]`` (uint8 or uint16) is the label of the voxel whose
    centre is ``affine @ (i, j, k, 1)`` in RAS millimetres."""

    labels: np.ndarray
    affine: np.ndarray


def label_dtype(largest: int) -> type:
    """The smallest label type that holds ``largest``."""
    return np.uint8 if largest <= 255 else np.uint16


class LayerPacker:
    """Builds layers from segments given one at a time as a value and a mask on one grid, putting each in the
    first layer where it overlaps nothing (first fit, in the order given: the first layer is the one a flattened
    label map would be closest to). Voxel for voxel; nothing is resampled.

    Each segment is looked at only in the box around its voxels (:func:`bounding_box`), and through transposed
    views: the layers are Fortran-ordered, and numpy's boolean indexing walks an array in C order, which on a
    Fortran-ordered volume jumps through memory and costs ten times as much."""

    def __init__(self, shape: Sequence[int], largest: int) -> None:
        self.shape = tuple(shape)
        self.dtype = label_dtype(largest)
        self.layers: list[np.ndarray] = []
        self.voxels: dict[int, int] = {}  #: each segment's voxels (segments with none left out)
        self.layer_of: dict[int, int] = {}  #: each segment's layer (segments with no voxels left out)

    def add(self, value: int, mask: np.ndarray, within: tuple[slice, ...] | None = None) -> int:
        """Put the segment ``value`` (its voxels: ``mask``) in a layer; returns the layer's index (0 for an empty
        segment). ``within`` (one slice with start and stop per axis) says where ``mask`` lies when it is only that
        part of the grid (a reader that builds each segment in the box around it)."""
        inner = bounding_box(mask)
        if inner is None:
            if not self.layers:
                self.layers.append(np.zeros(self.shape, dtype=self.dtype, order="F"))
            return 0
        inside = np.asfortranarray(mask[inner] != 0).T  # the box only, laid out as the layers are, then C-ordered
        box = inner if within is None else tuple(
            slice(outer.start + part.start, outer.start + part.stop) for outer, part in zip(within, inner))
        self.voxels[value] = int(np.count_nonzero(inside))
        for index, layer in enumerate(self.layers):
            target = layer[box].T
            if not target[inside].any():
                target[inside] = value
                self.layer_of[value] = index
                return index
        layer = np.zeros(self.shape, dtype=self.dtype, order="F")
        layer[box].T[inside] = value
        self.layers.append(layer)
        self.layer_of[value] = len(self.layers) - 1
        return len(self.layers) - 1


def bounding_box(array: np.ndarray) -> tuple[slice, ...] | None:
    """The box (one slice per axis) around the non-zero voxels of a 3D array, or None where there are none. The
    axis slowest in memory is looked at first, so a small structure in a large volume costs one pass over the
    volume and then passes over its slab only."""
    slowest = int(np.argmax([abs(stride) for stride in array.strides]))
    along = np.flatnonzero(array.any(axis=tuple(a for a in range(3) if a != slowest)))
    if along.size == 0:
        return None
    box = [slice(None)] * 3
    box[slowest] = slice(int(along[0]), int(along[-1]) + 1)
    slab = array[tuple(box)]
    for axis in range(3):
        if axis != slowest:
            indices = np.flatnonzero(slab.any(axis=tuple(a for a in range(3) if a != axis)))
            box[axis] = slice(int(indices[0]), int(indices[-1]) + 1)
    return tuple(box)


def crop(layer: Layer) -> Layer:
    """The layer cut to the box around its labelled voxels (its affine moved with it); an empty layer is one voxel.
    The first layer of a segmentation is never cropped (it is the segmentation's grid)."""
    box = bounding_box(layer.labels)
    if box is None:
        box = (slice(0, 1),) * 3
    low = np.array([part.start for part in box])
    if all(part.start == 0 and part.stop == size for part, size in zip(box, layer.labels.shape)):
        return layer
    affine = np.array(layer.affine, dtype=float)
    affine[:3, 3] = affine[:3, :3] @ low + affine[:3, 3]
    return Layer(np.asfortranarray(layer.labels[box]), affine)


#: Two layers lie on one lattice when one's voxel axes, taken into the other's index space, are the identity within
#: this, and its origin a whole number of voxels within it.
LATTICE_TOLERANCE_VOXELS = 1e-4


def lattice_offset(base: Layer, layer: Layer) -> np.ndarray | None:
    """Where ``layer``'s voxel (0, 0, 0) lies on ``base``'s grid, in whole voxels, when both lie on one lattice (the
    same axes and spacing, origins whole voxels apart: a layer cropped from the other's grid); else None."""
    index = np.linalg.solve(np.asarray(base.affine, dtype=float), np.asarray(layer.affine, dtype=float))
    offset = np.round(index[:3, 3])
    if (np.abs(index[:3, :3] - np.eye(3)).max() > LATTICE_TOLERANCE_VOXELS / max(max(layer.labels.shape), 1)
            or np.abs(index[:3, 3] - offset).max() > LATTICE_TOLERANCE_VOXELS):
        return None
    return offset.astype(np.int64)


def merge_layers(layers: Iterable[Layer], keep_first: bool = False) -> list[Layer]:
    """Layers whose labelled voxels never meet, combined (see :class:`LayerMerger`): fewer layers to sample, the
    segments unchanged. The layers given are never changed."""
    merger = LayerMerger(keep_first)
    for layer in layers:
        merger.add(layer)
    return merger.layers


class LayerMerger:
    """Layers given one at a time, each put into the first earlier one it fits, else kept as a layer of its own.

    A layer fits an earlier one when both lie on one lattice (the same grid, or boxes cropped from one grid) and
    their labelled voxels never meet; the two become one layer over the box around both. With ``keep_first`` the
    first layer keeps its grid (it is the segmentation's): a layer goes into it only if it lies inside it. The
    layers given are never changed: a merged layer is a new array, made once and then filled in place.
    """

    def __init__(self, keep_first: bool = False) -> None:
        self.keep_first = keep_first
        self.layers: list[Layer] = []
        self._made: set[int] = set()  # indices of layers whose arrays were made here (and may be filled in place)

    def add(self, layer: Layer) -> int:
        """Put ``layer`` in; returns the index of the layer it is now part of."""
        for index, earlier in enumerate(self.layers):
            joined = _joined(earlier, layer, index in self._made, self.keep_first and index == 0)
            if joined is not None:
                self.layers[index] = joined
                self._made.add(index)
                return index
        self.layers.append(layer)
        return len(self.layers) - 1


def _joined(earlier: Layer, layer: Layer, owned: bool, fixed: bool) -> Layer | None:
    """``layer`` put into ``earlier`` (into the box around both unless ``fixed``), or None where they lie on different
    lattices or their labelled voxels meet. ``owned``: ``earlier``'s array may be filled in place."""
    offset = lattice_offset(earlier, layer)
    if offset is None:
        return None
    shape, size = np.array(earlier.labels.shape), np.array(layer.labels.shape)
    low, high = np.minimum(offset, 0), np.maximum(shape, offset + size)
    grows = bool(np.any(low < 0) or np.any(high > shape))
    if fixed and grows:
        return None
    meet_low, meet_high = np.maximum(offset, 0), np.minimum(shape, offset + size)
    if np.all(meet_high > meet_low):  # the boxes meet: the labelled voxels must not
        here = earlier.labels[tuple(slice(a, b) for a, b in zip(meet_low, meet_high))]
        there = layer.labels[tuple(slice(a - o, b - o) for a, b, o in zip(meet_low, meet_high, offset))]
        if np.any((here != 0) & (there != 0)):
            return None
    dtype = np.promote_types(earlier.labels.dtype, layer.labels.dtype)
    if grows or not owned or dtype != earlier.labels.dtype:
        combined = np.zeros(tuple(high - low), dtype=dtype, order="F")
        combined[tuple(slice(-a, -a + n) for a, n in zip(low, shape))] = earlier.labels
    else:
        combined = earlier.labels
    target = combined[tuple(slice(o - a, o - a + n) for o, a, n in zip(offset, low, size))]
    labelled = layer.labels != 0
    target[labelled] = layer.labels[labelled]
    affine = np.array(earlier.affine, dtype=float)
    affine[:3, 3] = affine[:3, :3] @ low + affine[:3, 3]
    return Layer(combined, affine)


def first_overlap(frame_layers: Sequence[np.ndarray]) -> tuple[int, int, int] | None:
    """On one frame's sampled layers: two segment values that share a pixel and how many pixels they share (the
    first such pair, layers in order), or None where no pixel is in two segments."""
    for first in range(len(frame_layers)):
        for second in range(first + 1, len(frame_layers)):
            shared = (frame_layers[first] != 0) & (frame_layers[second] != 0)
            if shared.any():
                a, b = frame_layers[first][shared], frame_layers[second][shared]
                pair = (int(a.flat[0]), int(b.flat[0]))
                return pair[0], pair[1], int(np.count_nonzero((a == pair[0]) & (b == pair[1])))
    return None
