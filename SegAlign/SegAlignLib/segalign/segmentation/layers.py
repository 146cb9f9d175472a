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
    label map would be closest to). Voxel for voxel; nothing is resampled."""

    def __init__(self, shape: Sequence[int], largest: int) -> None:
        self.shape = tuple(shape)
        self.dtype = label_dtype(largest)
        self.layers: list[np.ndarray] = []

    def add(self, value: int, mask: np.ndarray) -> int:
        """Put the segment ``value`` (its voxels: ``mask``) in a layer; returns the layer's index."""
        for index, layer in enumerate(self.layers):
            if not layer[mask].any():
                layer[mask] = value
                return index
        layer = np.zeros(self.shape, dtype=self.dtype, order="F")
        layer[mask] = value
        self.layers.append(layer)
        return len(self.layers) - 1


def crop(layer: Layer) -> Layer:
    """The layer cut to the box around its labelled voxels (its affine moved with it); an empty layer is one voxel.
    The first layer of a segmentation is never cropped (it is the segmentation's grid)."""
    labelled = [np.flatnonzero(layer.labels.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    if any(indices.size == 0 for indices in labelled):
        low, high = np.zeros(3, dtype=int), np.zeros(3, dtype=int)
    else:
        low = np.array([indices[0] for indices in labelled])
        high = np.array([indices[-1] for indices in labelled])
    if np.all(low == 0) and np.all(high == np.array(layer.labels.shape) - 1):
        return layer
    box = tuple(slice(int(a), int(b) + 1) for a, b in zip(low, high))
    affine = np.array(layer.affine, dtype=float)
    affine[:3, 3] = affine[:3, :3] @ low + affine[:3, 3]
    return Layer(np.asfortranarray(layer.labels[box]), affine)


def merge_layers(layers: Iterable[Layer]) -> list[Layer]:
    """Layers on the same grid (shape and affine) whose labelled voxels never meet, combined into one: fewer layers
    to sample, the segments unchanged. The order is kept (a layer goes into the first earlier one it fits)."""
    merged: list[Layer] = []
    for layer in layers:
        for index, earlier in enumerate(merged):
            if (earlier.labels.shape == layer.labels.shape and np.array_equal(earlier.affine, layer.affine)
                    and not np.any((earlier.labels != 0) & (layer.labels != 0))):
                combined = earlier.labels.copy(order="K") if earlier.labels.dtype.itemsize >= layer.labels.dtype.itemsize \
                    else earlier.labels.astype(layer.labels.dtype)
                labelled = layer.labels != 0
                combined[labelled] = layer.labels[labelled]
                merged[index] = Layer(combined, earlier.affine)
                break
        else:
            merged.append(layer)
    return merged


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
