"""Merging a segmentation node's segments into one label volume, with the label values SegAlign means.

:func:`merge_labelmap_layers` reads binary labelmap layers on one grid directly (one numpy pass per layer);
:func:`merge_with_slicer` is Slicer's own ``GenerateMergedLabelmapInReferenceGeometry`` on a copy of the
segmentation outside the scene, for everything else (closed surfaces, layers on different grids). Both give
``(labels[i, j, k], ijk_to_ras)``; where segments overlap, the later one wins.
"""

from __future__ import annotations

import numpy as np

from ..errors import SegAlignError
from .matrices import image_to_world, matrix_to_array, oriented_image_array


def merge_labelmap_layers(segmentation, segment_ids: list[str], values: list[int]) -> tuple[np.ndarray, np.ndarray] | None:
    """Merge a segmentation's binary labelmap layers into one label volume, with ``values[n]`` for
    ``segment_ids[n]``; where segments overlap, the later one in ``segment_ids`` wins (as in Slicer's export).

    Reads the layers' voxels directly (one numpy pass per layer) instead of Slicer's per-segment export, which
    takes seconds for a hundred segments. Returns ``(labels[i, j, k], ijk_to_ras)``, or None when the segments are
    not stored as binary labelmaps on one grid.
    """
    representation = "Binary labelmap"
    if segmentation.GetSourceRepresentationName() != representation:
        return None
    layers: dict[int, list[tuple[int, int, int]]] = {}  # layer -> (rank, internal label value, export value)
    images = {}
    for rank, (segment_id, value) in enumerate(zip(segment_ids, values), start=1):
        segment = segmentation.GetSegment(segment_id)
        image = segment.GetRepresentation(representation) if segment is not None else None
        if image is None:
            return None
        layer = segmentation.GetLayerIndex(segment_id)
        layers.setdefault(layer, []).append((rank, segment.GetLabelValue(), value))
        images[layer] = image
    matrices = {layer: matrix_to_array(image_to_world(image)) for layer, image in images.items()}
    first = next(iter(matrices.values()))
    if any(not np.allclose(m, first, atol=1e-9) for m in matrices.values()):
        return None  # layers on different grids
    extents = {layer: image.GetExtent() for layer, image in images.items()}
    extents = {layer: e for layer, e in extents.items() if e[1] >= e[0] and e[3] >= e[2] and e[5] >= e[4]}
    if not extents:
        return np.zeros((1, 1, 1), dtype=np.uint8), first
    low = np.min([e[0::2] for e in extents.values()], axis=0)
    high = np.max([e[1::2] for e in extents.values()], axis=0)
    largest = max(values)
    dtype = np.uint8 if largest <= 255 else np.uint16
    labels = np.zeros(tuple(high - low + 1), dtype=dtype, order="F")
    rank_of = np.zeros(labels.shape, dtype=np.uint16, order="F") if len(extents) > 1 else None
    for layer, extent in extents.items():
        voxels, _ = oriented_image_array(images[layer])
        size = int(voxels.max()) + 1
        value_of = np.zeros(max(size, 1), dtype=dtype)
        rank_lookup = np.zeros(max(size, 1), dtype=np.uint16)
        for rank, internal, value in layers[layer]:
            if internal < size:
                value_of[internal], rank_lookup[internal] = value, rank
        region = tuple(slice(extent[2 * a] - low[a], extent[2 * a + 1] - low[a] + 1) for a in range(3))
        if rank_of is None:
            labels[region] = value_of[voxels]
        else:
            ranks = rank_lookup[voxels]
            wins = ranks > rank_of[region]
            labels[region][wins] = value_of[voxels][wins]
            rank_of[region][wins] = ranks[wins]
    ijk_to_ras = first.copy()
    ijk_to_ras[:3, 3] = first[:3, :3] @ low + first[:3, 3]  # array index 0 is extent index ``low``
    return labels, ijk_to_ras


#: The largest label value Slicer's merge can write: its merged labelmap is of signed short type
#: (vtkMRMLSegmentationNode.h, GenerateMergedLabelmapForAllSegments).
SLICER_MERGE_LIMIT = 32767


def merge_with_slicer(segmentation_node, segment_ids: list[str], values: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Merge the segments ``segment_ids`` of ``segmentation_node`` with Slicer's own
    ``vtkSlicerSegmentationsModuleLogic.GenerateMergedLabelmapInReferenceGeometry``, ``values[n]`` for
    ``segment_ids[n]`` (its ``labelValues`` argument: Slicer's label-map export would choose values itself, by
    terminology, then by name, else past the end of its colour table).

    Works on a copy of the segmentation in a node outside the scene, so nothing is added to the scene and the
    user's node gains no representation: closed surfaces are converted to binary labelmaps on the copy (on the
    segmentation's reference geometry, as Slicer's export does). Where segments overlap, the later one wins.
    Returns ``(labels[i, j, k], ijk_to_ras)`` in the segmentation node's own coordinates.
    """
    import vtk
    from slicer import vtkMRMLSegmentationNode, vtkOrientedImageData, vtkSegmentation, vtkSlicerSegmentationsModuleLogic

    name = segmentation_node.GetName()
    if max(values, default=0) > SLICER_MERGE_LIMIT:
        raise SegAlignError(
            f"segmentation {name}: label value {max(values)} is above {SLICER_MERGE_LIMIT}, the largest Slicer's merge "
            "can write; convert its segments to binary labelmaps on one grid (Segmentations module) and export again"
        )
    copy = vtkMRMLSegmentationNode()  # never added to the scene
    copy.GetSegmentation().DeepCopy(segmentation_node.GetSegmentation())
    representation = "Binary labelmap"
    if not copy.GetSegmentation().CreateRepresentation(representation):
        raise SegAlignError(f"segmentation {name}: Slicer could not convert its segments to binary labelmaps")
    ids = vtk.vtkStringArray()
    label_values = vtk.vtkIntArray()
    for segment_id, value in zip(segment_ids, values):
        ids.InsertNextValue(segment_id)
        label_values.InsertNextValue(int(value))
    merged = vtkOrientedImageData()
    vtkSlicerSegmentationsModuleLogic.GenerateMergedLabelmapInReferenceGeometry(
        copy, None, ids, vtkSegmentation.EXTENT_UNION_OF_EFFECTIVE_SEGMENTS, merged, label_values
    )
    extent = merged.GetExtent()
    if merged.GetPointData().GetScalars() is None or extent[1] < extent[0] or extent[3] < extent[2] or extent[5] < extent[4]:
        raise SegAlignError(f"segmentation {name}: Slicer could not merge its segments")
    voxels, ijk_to_ras = oriented_image_array(merged)
    largest = int(voxels.max(initial=0))
    labels = voxels.astype(np.uint8 if largest <= 255 else np.uint16, order="F")
    return labels, ijk_to_ras
