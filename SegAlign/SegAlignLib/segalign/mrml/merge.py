"""A segmentation node's segments as label layers, with the label values SegAlign means.

Segments overlap where a node has several labelmap layers (Slicer keeps segments that overlap in layers of their
own, as SegAlign's model does: :mod:`segalign.segmentation.layers`). Two ways to read them:

- :func:`labelmap_layers` reads binary labelmap layers on one grid directly (one numpy pass per layer);
- :func:`slicer_layers` has Slicer's own ``GenerateMergedLabelmapInReferenceGeometry`` merge the segments of
  each layer, on a copy of the segmentation outside the scene (closed surfaces converted on the copy, layers on
  different grids resampled onto the reference geometry).

Either way each layer is placed by :class:`LayerStack`: into the first of SegAlign's layers whose labelled voxels
it never meets, so segments that do not overlap end in one label volume, exactly as before overlaps were kept,
and every segment stays whole. :meth:`LabelmapLayers.flattened` and :func:`merge_with_slicer` flatten instead
(the later segment wins where segments overlap), for ``overlap="later-wins"``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import SegAlignError
from ..segmentation import Layer, crop, label_dtype
from .matrices import image_to_world, matrix_to_array, oriented_image_array, shifted

REPRESENTATION = "Binary labelmap"


class LayerStack:
    """SegAlign's layers built from label volumes placed one at a time on one grid (index ``low`` of the grid
    ``matrix`` is index 0 of the first layer, which spans ``low`` to ``high``): each goes into the first layer
    where it meets no labelled voxel, else into a new one. Voxel for voxel; nothing is resampled."""

    def __init__(self, matrix: np.ndarray, low: np.ndarray, high: np.ndarray, dtype: type) -> None:
        self.matrix, self.low = matrix, np.asarray(low)
        self.shape = tuple(int(n) for n in np.asarray(high) - self.low + 1)
        self.dtype = dtype
        self.volumes = [np.zeros(self.shape, dtype=dtype, order="F")]
        self.empty = True  #: nothing placed yet (the first volume is then filled without looking)
        self.clash: tuple[int, int] | None = None  #: the first two values found overlapping

    def add(self, labels: np.ndarray, low) -> None:
        """Place ``labels[i, j, k]``, whose index 0 is index ``low`` of the grid."""
        start = np.asarray(low) - self.low
        region = tuple(slice(int(s), int(s) + n) for s, n in zip(start, labels.shape))
        if self.empty:
            self.volumes[0][region] = labels
            self.empty = False
            return
        labelled = labels != 0
        for volume in self.volumes:
            target = volume[region]  # a view: assigning through it fills the volume
            meets = labelled & (target != 0)
            if not meets.any():
                target[labelled] = labels[labelled]
                return
            if self.clash is None:
                self.clash = (int(target[meets][0]), int(labels[meets][0]))
        volume = np.zeros(self.shape, dtype=self.dtype, order="F")
        volume[region][labelled] = labels[labelled]
        self.volumes.append(volume)

    def layers(self) -> list[Layer]:
        """The layers in the node's coordinates: the first over the whole box, the others cropped to their voxels."""
        ijk_to_ras = shifted(self.matrix, self.low)  # array index 0 is grid index ``low``
        first, *more = (Layer(volume, ijk_to_ras) for volume in self.volumes)
        return [first, *(crop(layer) for layer in more)]


def box(extents: list[tuple[int, ...]]) -> tuple[np.ndarray, np.ndarray] | None:
    """The lowest and highest index of VTK extents together (empty ones left out), or None when all are empty."""
    extents = [e for e in extents if e[1] >= e[0] and e[3] >= e[2] and e[5] >= e[4]]
    if not extents:
        return None
    return np.min([e[0::2] for e in extents], axis=0), np.max([e[1::2] for e in extents], axis=0)


@dataclass
class LabelmapLayers:
    """A segmentation's binary labelmap layers on one grid, as read by :func:`labelmap_layers`: for each layer
    holding some of the segments, its image and ``(rank, internal label value, export value)`` of each of them
    (rank: 1 + the segment's place in the list exported)."""

    matrix: np.ndarray  #: the grid's image-to-world matrix (whatever the extents)
    images: dict[int, object]  #: layer index -> vtkOrientedImageData
    segments: dict[int, list[tuple[int, int, int]]]
    dtype: type  #: the label type of the export values

    def voxels(self, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """A layer's voxels as export values, and the grid index of their array index 0."""
        voxels, _ = oriented_image_array(self.images[layer])
        return self.lookup(layer, voxels, 0)[voxels], np.array(self.images[layer].GetExtent()[0::2])

    def ranks(self, layer: int) -> np.ndarray:
        """A layer's voxels as the rank of the segment they are in (0 outside every segment exported)."""
        voxels, _ = oriented_image_array(self.images[layer])
        return self.lookup(layer, voxels, 1)[voxels]

    def lookup(self, layer: int, voxels: np.ndarray, field: int) -> np.ndarray:
        """Internal label value -> export value (``field`` 0) or rank (1), for the voxels of ``layer``."""
        size = max(int(voxels.max(initial=0)) + 1, 1)
        table = np.zeros(size, dtype=self.dtype if field == 0 else np.uint16)
        for rank, internal, value in self.segments[layer]:
            if internal < size:
                table[internal] = (value, rank)[field]
        return table

    def extents(self) -> dict[int, tuple[int, ...]]:
        """The extent of each layer that is not empty."""
        extents = {layer: tuple(image.GetExtent()) for layer, image in self.images.items()}
        return {layer: extent for layer, extent in extents.items() if box([extent]) is not None}

    def stacked(self) -> tuple[list[Layer], tuple[int, int] | None]:
        """Every segment whole: each labelmap layer into the first of SegAlign's layers it does not meet (layers
        whose segments never meet share one). Returns the layers and two values that overlap (None if none)."""
        extents = self.extents()
        bounds = box(list(extents.values()))
        if bounds is None:
            return [Layer(np.zeros((1, 1, 1), dtype=np.uint8), self.matrix)], None
        stack = LayerStack(self.matrix, *bounds, self.dtype)
        for layer in extents:
            stack.add(*self.voxels(layer))
        return stack.layers(), stack.clash

    def flattened(self) -> Layer:
        """One label volume: where segments overlap, the later one in the list exported wins (as in Slicer's
        export)."""
        extents = self.extents()
        bounds = box(list(extents.values()))
        if bounds is None:
            return Layer(np.zeros((1, 1, 1), dtype=np.uint8), self.matrix)
        low, high = bounds
        labels = np.zeros(tuple(high - low + 1), dtype=self.dtype, order="F")
        rank_of = np.zeros(labels.shape, dtype=np.uint16, order="F") if len(extents) > 1 else None
        for layer in extents:
            values, start = self.voxels(layer)
            region = tuple(slice(int(start[a] - low[a]), int(start[a] - low[a]) + values.shape[a]) for a in range(3))
            if rank_of is None:
                labels[region] = values
            else:
                ranks = self.ranks(layer)
                wins = ranks > rank_of[region]
                labels[region][wins] = values[wins]
                rank_of[region][wins] = ranks[wins]
        return Layer(labels, shifted(self.matrix, low))


def labelmap_layers(segmentation, segment_ids: list[str], values: list[int]) -> LabelmapLayers | None:
    """The binary labelmap layers of the segments ``segment_ids``, ``values[n]`` the export value of
    ``segment_ids[n]``, read directly instead of by Slicer's per-segment export (which takes seconds for a hundred
    segments); None when the segments are not stored as binary labelmaps on one grid."""
    if segmentation.GetSourceRepresentationName() != REPRESENTATION:
        return None
    segments: dict[int, list[tuple[int, int, int]]] = {}
    images = {}
    for rank, (segment_id, value) in enumerate(zip(segment_ids, values), start=1):
        segment = segmentation.GetSegment(segment_id)
        image = segment.GetRepresentation(REPRESENTATION) if segment is not None else None
        if image is None:
            return None
        layer = segmentation.GetLayerIndex(segment_id)
        segments.setdefault(layer, []).append((rank, segment.GetLabelValue(), value))
        images[layer] = image
    matrices = {layer: matrix_to_array(image_to_world(image)) for layer, image in images.items()}
    first = next(iter(matrices.values()))
    if any(not np.allclose(m, first, atol=1e-9) for m in matrices.values()):
        return None  # layers on different grids
    return LabelmapLayers(first, images, segments, label_dtype(max(values)))


def merge_labelmap_layers(segmentation, segment_ids: list[str], values: list[int]) -> tuple[np.ndarray, np.ndarray] | None:
    """A segmentation's binary labelmap layers flattened into one label volume, ``values[n]`` for
    ``segment_ids[n]``; where segments overlap, the later one in ``segment_ids`` wins (as in Slicer's export).
    Returns ``(labels[i, j, k], ijk_to_ras)``, or None when the segments are not binary labelmaps on one grid."""
    layers = labelmap_layers(segmentation, segment_ids, values)
    if layers is None:
        return None
    flat = layers.flattened()
    return flat.labels, flat.affine


#: The largest label value Slicer's merge can write: its merged labelmap is of signed short type
#: (vtkMRMLSegmentationNode.h, GenerateMergedLabelmapForAllSegments).
SLICER_MERGE_LIMIT = 32767


def labelmap_copy(segmentation_node, values: list[int]):
    """A copy of the node's segmentation in a node outside the scene, its segments converted to binary labelmaps
    (on the segmentation's reference geometry, as Slicer's export does), so nothing is added to the scene and the
    user's node gains no representation."""
    from slicer import vtkMRMLSegmentationNode

    name = segmentation_node.GetName()
    if max(values, default=0) > SLICER_MERGE_LIMIT:
        raise SegAlignError(
            f"segmentation {name}: label value {max(values)} is above {SLICER_MERGE_LIMIT}, the largest Slicer's merge "
            "can write; convert its segments to binary labelmaps on one grid (Segmentations module) and export again"
        )
    copy = vtkMRMLSegmentationNode()  # never added to the scene
    copy.GetSegmentation().DeepCopy(segmentation_node.GetSegmentation())
    if not copy.GetSegmentation().CreateRepresentation(REPRESENTATION):
        raise SegAlignError(f"segmentation {name}: Slicer could not convert its segments to binary labelmaps")
    return copy


def merged_by_slicer(copy, segment_ids: list[str], values: list[int]):
    """Slicer's ``GenerateMergedLabelmapInReferenceGeometry`` of the segments ``segment_ids`` of ``copy`` (its
    ``labelValues`` argument ``values``: Slicer's label-map export would choose values itself, by terminology,
    then by name, else past the end of its colour table): a vtkOrientedImageData, None where it merged nothing."""
    import vtk
    from slicer import vtkOrientedImageData, vtkSegmentation, vtkSlicerSegmentationsModuleLogic

    ids = vtk.vtkStringArray()
    label_values = vtk.vtkIntArray()
    for segment_id, value in zip(segment_ids, values):
        ids.InsertNextValue(segment_id)
        label_values.InsertNextValue(int(value))
    merged = vtkOrientedImageData()
    vtkSlicerSegmentationsModuleLogic.GenerateMergedLabelmapInReferenceGeometry(
        copy, None, ids, vtkSegmentation.EXTENT_UNION_OF_EFFECTIVE_SEGMENTS, merged, label_values
    )
    if merged.GetPointData().GetScalars() is None or box([merged.GetExtent()]) is None:
        return None
    return merged


def merge_with_slicer(segmentation_node, segment_ids: list[str], values: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The segments ``segment_ids`` of ``segmentation_node`` merged by Slicer (see :func:`merged_by_slicer`), on a
    copy outside the scene (:func:`labelmap_copy`), into one label volume: where segments overlap, the later one
    wins. Returns ``(labels[i, j, k], ijk_to_ras)`` in the segmentation node's own coordinates."""
    copy = labelmap_copy(segmentation_node, values)
    merged = merged_by_slicer(copy, segment_ids, values)
    if merged is None:
        raise SegAlignError(f"segmentation {segmentation_node.GetName()}: Slicer could not merge its segments")
    voxels, ijk_to_ras = oriented_image_array(merged)
    largest = int(voxels.max(initial=0))
    labels = voxels.astype(np.uint8 if largest <= 255 else np.uint16, order="F")
    return labels, ijk_to_ras


def slicer_layers(segmentation_node, segment_ids: list[str], values: list[int]) -> tuple[list[Layer], tuple[int, int] | None]:
    """The segments ``segment_ids`` of ``segmentation_node``, each whole, in SegAlign's layers: on a copy outside
    the scene (:func:`labelmap_copy`), Slicer merges the segments of each binary labelmap layer (segments that
    share a layer do not overlap; closed surfaces converted on the copy are a layer each) onto the reference
    geometry, and each merged layer goes into the first of SegAlign's layers it does not meet (:class:`LayerStack`).
    Segments that do not overlap so end in one label volume, the same as :func:`merge_with_slicer` gives.
    Returns the layers in the node's coordinates and two values that overlap (None if none)."""
    copy = labelmap_copy(segmentation_node, values)
    segmentation = copy.GetSegmentation()
    groups: dict[int, tuple[list[str], list[int]]] = {}
    for segment_id, value in zip(segment_ids, values):
        ids, group_values = groups.setdefault(segmentation.GetLayerIndex(segment_id, REPRESENTATION), ([], []))
        ids.append(segment_id)
        group_values.append(value)
    merged = [image for image in (merged_by_slicer(copy, *group) for group in groups.values()) if image is not None]
    if not merged:
        raise SegAlignError(f"segmentation {segmentation_node.GetName()}: Slicer could not merge its segments")
    arrays = [oriented_image_array(image)[0] for image in merged]
    matrix = matrix_to_array(image_to_world(merged[0]))
    if any(not np.allclose(matrix_to_array(image_to_world(image)), matrix, atol=1e-9) for image in merged):
        raise SegAlignError(f"segmentation {segmentation_node.GetName()}: Slicer merged its layers onto different grids")
    largest = max(int(voxels.max(initial=0)) for voxels in arrays)
    bounds = box([image.GetExtent() for image in merged])
    assert bounds is not None
    stack = LayerStack(matrix, *bounds, np.uint8 if largest <= 255 else np.uint16)
    for image, voxels in zip(merged, arrays):
        stack.add(voxels, np.array(image.GetExtent()[0::2]))
    return stack.layers(), stack.clash
