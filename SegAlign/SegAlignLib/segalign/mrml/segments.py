"""What SegAlign keeps on segmentation nodes and their segments, and the segments an import makes.

Each segment an import makes carries the label value it had in the file (the tag :data:`LABEL_VALUE_TAG`), so an
export writes the file's values whatever the segments are renamed or reordered to (:func:`segment_label_values`);
the node keeps the reader's warnings (:data:`IMPORT_WARNINGS_ATTRIBUTE`, :func:`import_warnings`); a
TotalSegmentator class gets Slicer's terminology entry (:func:`terminology_entry`). :func:`add_label_layers`
builds the segments of a segmentation as Slicer's own import does, each of its layers one shared labelmap layer.
"""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np

from ..errors import SegAlignError
from ..files import safe_name
from ..segmentation import Segmentation
from .matrices import array_to_matrix, grid_offset

#: The segment tag holding the label value a segment had in the imported file (saved with the scene, copied with
#: the segment).
LABEL_VALUE_TAG = "SegAlign.LabelValue"
#: The segmentation node attribute holding the warnings of the file it was imported from (a JSON list of strings;
#: saved with the scene, so an export made after reloading the scene still records them).
IMPORT_WARNINGS_ATTRIBUTE = "SegAlign.ImportWarnings"


def import_warnings(segmentation_node) -> list[str]:
    """The warnings SegAlign's reader gave when ``segmentation_node`` was imported (sform and qform disagree, a
    label table that does not match...), as recorded on the node; empty for a node SegAlign did not import."""
    text = segmentation_node.GetAttribute(IMPORT_WARNINGS_ATTRIBUTE)
    if not text:
        return []
    try:
        warnings = json.loads(text)
    except ValueError:
        return [f"segmentation {segmentation_node.GetName()}: its {IMPORT_WARNINGS_ATTRIBUTE} attribute is not JSON"]
    return [str(w) for w in warnings] if isinstance(warnings, list) else []


def labelmap_layer_count(segmentation_node) -> int:
    """How many binary labelmap layers the segments of ``segmentation_node`` are kept in (more than one where
    segments overlap: each is kept whole, in a layer of its own); 0 when its segments are not binary labelmaps."""
    segmentation = segmentation_node.GetSegmentation()
    if segmentation.GetSourceRepresentationName() != "Binary labelmap":
        return 0
    return segmentation.GetNumberOfLayers("Binary labelmap")


def segment_label_values(
    segmentation, segment_ids, by_name: list[int] | None = None
) -> tuple[list[int], list[str]]:
    """The label value of each segment of ``segment_ids`` (a vtkStringArray), and warnings.

    A segment imported by SegAlign carries its file's label value in the tag :data:`LABEL_VALUE_TAG`, so two
    segments of the same name (or one named "Background") keep their own values. A segment without the tag takes
    its value in ``by_name`` (the node's conversion colour table, matched by name, as another tool may have set
    it) when that is free; a segment drawn in Segment Editor, or with a value another segment already has (a copy),
    gets the next value after all of them.
    """
    import vtk

    tagged: list[int | None] = []
    for index in range(segment_ids.GetNumberOfValues()):
        segment = segmentation.GetSegment(segment_ids.GetValue(index))
        text = vtk.reference("")
        value = None
        if segment.GetTag(LABEL_VALUE_TAG, text):
            try:
                value = int(str(text))
            except ValueError:
                value = None
        if value is None and by_name is not None and 0 < by_name[index] <= 65535:
            value = by_name[index]
        tagged.append(value if value is not None and 0 < value <= 65535 else None)
    used: set[int] = set()
    values: list[int] = []
    renumbered: list[str] = []
    next_value = max((v for v in tagged if v is not None), default=0) + 1
    for index, value in enumerate(tagged):
        if value is None or value in used:
            if value is not None:
                renumbered.append(segmentation.GetSegment(segment_ids.GetValue(index)).GetName())
            value, next_value = next_value, next_value + 1
        used.add(value)
        values.append(value)
    warnings = []
    if renumbered:
        warnings.append(f"{len(renumbered)} segments had the label value of another segment (copies?) and got new "
                        f"values: {', '.join(renumbered[:5])}")
    if max(values, default=0) > 65535:
        raise SegAlignError("the segmentation has more segments than label values (65535)")
    return values, warnings


#: The terminology contexts of Slicer's default terminology files (Modules/Loadable/Terminologies/Resources).
TERMINOLOGY_CONTEXT = "Segmentation category and type - DICOM master list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"


def terminology_entry(name: str) -> str | None:
    """Slicer's terminology entry string (``context~SCHEME^value^meaning`` for category, type and type modifier,
    then the anatomic context, region and region modifier) for a TotalSegmentator class name, from the mapping the
    DICOM SEG writer uses; None for other names."""
    from ..writers.segment_codes import totalsegmentator_codes

    codes = totalsegmentator_codes().get(name)
    if codes is None:
        return None

    def coded(code) -> str:
        return "^".join((code.scheme, code.value, code.meaning)) if code is not None else "^^"

    return "~".join((TERMINOLOGY_CONTEXT, coded(codes.category), coded(codes.type), coded(codes.modifier),
                     ANATOMIC_CONTEXT, "^^", "^^"))


def add_label_layers(
    segmentation_node, segmentation: Segmentation, ijk_to_ras: np.ndarray, residual: np.ndarray | None = None,
) -> None:
    """One segment per label present; the segments of each of the segmentation's layers share one binary labelmap
    layer, which is that layer's label volume itself (a segmentation whose segments do not overlap is one layer).

    This is the layout Slicer's ImportLabelmapToSegmentationNode produces, built directly (it takes 0.1 s where
    the import takes seconds for a hundred labels). Every segment is whole, and keeps its value in its tag
    :data:`LABEL_VALUE_TAG` (values are unique across layers). ``ijk_to_ras`` is the first layer's geometry in
    the node's coordinates and ``residual`` the linear transform above the node (see :func:`split_affine`); a
    layer cropped from the first layer's grid is stored on that grid, as an extent, the way Slicer keeps its own
    layers, so an export reads it voxel for voxel.
    """
    from slicer import vtkSegment

    to_node = np.linalg.inv(residual) if residual is not None else np.eye(4)
    images = []
    for index, layer in enumerate(segmentation.layers):
        affine = ijk_to_ras if index == 0 else to_node @ layer.affine
        offset = grid_offset(ijk_to_ras, affine)
        images.append(label_image(layer.labels, ijk_to_ras, offset) if offset is not None
                      else label_image(layer.labels, affine))
    target = segmentation_node.GetSegmentation()
    target.SetSourceRepresentationName("Binary labelmap")
    was_modified = segmentation_node.StartModify()
    try:
        for value in segmentation.values:
            label = segmentation.label_table[value]
            segment = vtkSegment()
            segment.SetName(label.name)
            segment.SetColor(*(channel / 255.0 for channel in label.color))
            segment.SetLabelValue(value)
            segment.SetTag(LABEL_VALUE_TAG, str(value))
            entry = terminology_entry(label.name)
            if entry is not None:  # a TotalSegmentator class: its standard codes, as SlicerTotalSegmentator sets them
                segment.SetTag(vtkSegment.GetTerminologyEntryTagName(), entry)
            segment.AddRepresentation("Binary labelmap", images[segmentation.layer_of(value)])
            target.AddSegment(segment, target.GenerateUniqueSegmentID(safe_name(label.name, "segment")))
    finally:
        segmentation_node.EndModify(was_modified)


def label_image(labels: np.ndarray, ijk_to_ras: np.ndarray, low: Sequence[int] = (0, 0, 0)):
    """A label volume ``labels[i, j, k]`` as a vtkOrientedImageData on the grid ``ijk_to_ras``, its extent starting
    at index ``low`` of that grid."""
    from slicer import vtkOrientedImageData
    from vtk.util import numpy_support

    image = vtkOrientedImageData()
    high = [start + size - 1 for start, size in zip(low, labels.shape)]
    image.SetExtent(low[0], high[0], low[1], high[1], low[2], high[2])
    voxels = np.ascontiguousarray(labels.transpose(2, 1, 0)).ravel()  # VTK runs i fastest
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(voxels, deep=True))
    image.SetImageToWorldMatrix(array_to_matrix(ijk_to_ras))
    return image
