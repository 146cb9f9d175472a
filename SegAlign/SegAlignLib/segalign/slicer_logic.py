"""SegAlign on MRML: import NIfTI segmentations as segmentation nodes, export segmentation nodes onto DICOM frames.

This needs only Slicer's MRML layer, so it runs inside 3D Slicer and, headless, on the ``slicer-core`` wheel.
(The headless application the tests use, ``Testing/headless_slicer.py``, is not part of the module.)
The Slicer module (``SegAlign.py``) is a thin GUI over :class:`SegAlignMRMLLogic`.

Export never goes through the reference volume's voxels. The segmentation is merged once into a labelmap in its
own geometry, and every original DICOM frame of the reference volume is sampled in patient space by the same
engine as the command line. So an acquisition transform (gantry tilt, uneven spacing), a hardened transform, or a
left-handed slice order reversed by the DICOM plugin cannot break the frame-to-file correspondence.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .dicom import Series, check_uids, frames_of, read_header
from .errors import SegAlignError
from .export import ExportResult, ProgressCallback, export_segmentation, safe_name
from .segmentation import Label
from .options import ExportOptions
from .readers import load_segmentation
from .readers.nifti import nifti_stem
from .segmentation import Overlap, Segmentation

#: Volume attribute listing the DICOM files of a volume loaded without a DICOM database (newline-separated).
FILES_ATTRIBUTE = "SegAlign.dicomFiles"

#: Columns of a voxel-to-RAS matrix closer to orthogonal than this are stored as a plain Slicer volume geometry.
ORTHOGONALITY_TOLERANCE = 1e-6

FileLookup = Callable[[str], str]


def matrix_to_array(matrix) -> np.ndarray:
    """A vtkMatrix4x4 as a 4x4 numpy array."""
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def array_to_matrix(array: np.ndarray):
    """A 4x4 numpy array as a vtkMatrix4x4."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


class SegAlignMRMLLogic:
    """Import and export segmentations in a MRML scene.

    ``file_for_instance`` finds the file of a SOPInstanceUID (in Slicer: ``slicer.dicomDatabase.fileForInstance``);
    without it, the DICOM files of a reference volume must be given explicitly to :meth:`export`.
    """

    def __init__(self, scene, file_for_instance: FileLookup | None = None) -> None:
        self.scene = scene
        self.file_for_instance = file_for_instance

    # ------------------------------------------------------------------------------------------------ import

    def import_segmentation(
        self,
        path: str | os.PathLike[str],
        reference_volume=None,
        *,
        label_table: str | os.PathLike[str] | None = None,
        overlap: Overlap = "error",
        name: str | None = None,
    ):
        """Load a segmentation file (NIfTI, ``.seg.nrrd``, NRRD, MHA/MHD, DICOM SEG) or a folder of masks as a new
        ``vtkMRMLSegmentationNode``; a ``.seg.nrrd`` is read by Slicer's own segmentation storage node.

        Segment names and colours come from ``label_table``, else the table embedded by TotalSegmentator, else
        ``Segment_<value>``. A colour table holding every label value is attached as the node's labelmap
        conversion table, so an export writes the original label values. With ``reference_volume`` (the DICOM
        volume), the segmentation's reference geometry is set to it.
        """
        segmentation = load_segmentation(path, label_table=label_table, overlap=overlap)
        base = name or nifti_stem(Path(path)).removesuffix(".seg").removesuffix(".nrrd")
        if segmentation.affine_source == "seg.nrrd":  # Slicer's own file: Slicer's own reader makes the node
            return self._load_slicer_file(Path(path), segmentation, base, reference_volume)
        color_table = self._color_table(segmentation.label_table, f"{base} labels")
        geometry, residual = split_affine(segmentation.affine)
        segmentation_node = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", base)
        try:
            segmentation_node.CreateDefaultDisplayNodes()
            _add_shared_labelmap(segmentation_node, segmentation, geometry)
        except BaseException:  # leave no half-made nodes in the scene
            self.scene.RemoveNode(segmentation_node)
            self.scene.RemoveNode(color_table)
            raise
        if residual is not None:  # a sheared affine: the shear lives in a linear transform above the segmentation
            transform = self.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", f"{base} shear")
            transform.SetMatrixTransformToParent(array_to_matrix(residual))
            segmentation_node.SetAndObserveTransformNodeID(transform.GetID())
        return self._finish_import(segmentation_node, segmentation, color_table, reference_volume)

    def _load_slicer_file(self, path: Path, segmentation: Segmentation, base: str, reference_volume):
        """A ``.seg.nrrd`` read by Slicer's ``vtkMRMLSegmentationStorageNode`` (segments, layers, terminology and
        display as Slicer keeps them), checked first by the library's reader (label values, overlaps), whose label
        values the node's conversion colour table records, so the export writes the file's values."""
        segmentation_node = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", base)
        storage = self.scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
        color_table = None
        try:
            storage.SetFileName(str(path))
            if not storage.ReadData(segmentation_node):
                raise SegAlignError(f"Slicer could not read the segmentation file {path}")
            segmentation_node.SetAndObserveStorageNodeID(storage.GetID())
            segmentation_node.CreateDefaultDisplayNodes()
            loaded = segmentation_node.GetSegmentation()
            layered = loaded.GetNumberOfLayers() > 1  # the library numbers such segments 1..N in file order
            for index in range(loaded.GetNumberOfSegments()):
                segment = loaded.GetNthSegment(index)
                segment.SetTag(LABEL_VALUE_TAG, str(index + 1 if layered else segment.GetLabelValue()))
            color_table = self._color_table(segmentation.label_table, f"{base} labels")
        except BaseException:
            for node in (segmentation_node, storage, color_table):
                if node is not None:
                    self.scene.RemoveNode(node)
            raise
        return self._finish_import(segmentation_node, segmentation, color_table, reference_volume)

    @staticmethod
    def _finish_import(segmentation_node, segmentation: Segmentation, color_table, reference_volume):
        """What every import ends with: the conversion colour table, the reference geometry, and the reader's
        warnings kept on the node (see :func:`import_warnings`), so the panel shows them and the export records them."""
        segmentation_node.SetLabelmapConversionColorTableNodeID(color_table.GetID())
        if reference_volume is not None:
            segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
        if segmentation.warnings:
            segmentation_node.SetAttribute(IMPORT_WARNINGS_ATTRIBUTE, json.dumps(list(segmentation.warnings)))
        for warning in segmentation.warnings:
            logging.getLogger("SegAlign").warning(warning)
        return segmentation_node

    def _color_table(self, labels: dict[int, Label], name: str):
        table = self.scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
        table.SetTypeToUser()
        table.HideFromEditorsOff()
        table.SetNumberOfColors(max(labels, default=0) + 1)
        table.SetColor(0, "Background", 0.0, 0.0, 0.0, 0.0)
        for value, label in labels.items():
            red, green, blue = (channel / 255.0 for channel in label.color)
            table.SetColor(value, label.name, red, green, blue, 1.0)
        return table

    # ------------------------------------------------------------------------------------------------ export

    def series_for_volume(
        self, volume, files: Sequence[str | os.PathLike[str]] | None = None,
        progress: ProgressCallback | None = None,
    ) -> Series:
        """The original DICOM frames behind ``volume``: ``files``, else the files SegAlign listed when it loaded the
        volume, else the files of its ``DICOM.instanceUIDs`` (set by Slicer's DICOM plugins). ``progress(done,
        total)`` is called after each file's header is read; an exception raised from it stops the reading."""
        if files is None:
            files = self._files_of_volume(volume)
        paths = sorted({Path(f) for f in files})
        if not paths:
            raise SegAlignError(f"volume {volume.GetName()}: no DICOM files given")
        series = Series(uid="")
        uids = set()
        for done, path in enumerate(paths, start=1):
            if progress is not None and done > 1:
                progress(done - 1, len(paths))
            try:
                header = read_header(path)
            except Exception as error:
                raise SegAlignError(f"{path}: cannot be read as DICOM ({type(error).__name__}: {error})") from None
            uids.add(str(header.get("SeriesInstanceUID", "") or ""))
            series.description = series.description or str(header.get("SeriesDescription", "") or "")
            series.modality = series.modality or str(header.get("Modality", "") or "")
            try:
                series.frames.extend(frames_of(header, path))
            except SegAlignError as error:
                series.problems.append(str(error))
        if progress is not None:
            progress(len(paths), len(paths))
        if len(uids) > 1:
            raise SegAlignError(f"volume {volume.GetName()}: its files belong to {len(uids)} different series")
        series.uid = uids.pop()
        check_uids(series, Path(os.path.commonpath([str(p) for p in paths])).parent)
        return series

    def _files_of_volume(self, volume) -> list[str]:
        listed = volume.GetAttribute(FILES_ATTRIBUTE)
        if listed:
            return listed.split("\n")
        attribute = volume.GetAttribute("DICOM.instanceUIDs") or ""
        uids = attribute.split()
        if not uids:
            raise SegAlignError(
                f"volume {volume.GetName()} was not loaded from DICOM (no DICOM.instanceUIDs attribute); "
                "load the series through the DICOM module, or give its files"
            )
        if self.file_for_instance is None:
            raise SegAlignError("no DICOM database to find the volume's files in; give the files explicitly")
        files = []
        for uid in dict.fromkeys(uids):  # multi-frame instances repeat their UID
            file = self.file_for_instance(uid) if uid != "Unknown" else ""
            if not file:
                raise SegAlignError(
                    f"volume {volume.GetName()}: the DICOM database has no file for instance {uid}; give the files explicitly"
                )
            files.append(file)
        return files

    def labels_from_segmentation(self, segmentation_node, *, merge: str = "auto") -> Segmentation:
        """Merge every segment into one label volume in the segmentation's own geometry.

        Label values are those recorded on each segment at import (see :func:`segment_label_values`), whatever the
        segments are named or in whatever order they are; segments added in Slicer get values after them. Names and
        colours are the segments' own, so edits and renames made in Slicer are included, and the warnings recorded
        at import (:func:`import_warnings`) are carried into the export.

        Binary labelmap layers on one grid are read directly, voxel for voxel. Anything else (closed surfaces as the
        source representation, layers on different grids) is merged by Slicer's own
        ``GenerateMergedLabelmapInReferenceGeometry`` with those same label values, on a copy of the segmentation
        that never enters the scene (resampled onto the segmentation's reference geometry: a warning says so).
        ``merge="slicer"`` takes Slicer's merge always (the tests compare the two).
        """
        import vtk
        from slicer import vtkSlicerSegmentationsModuleLogic

        if merge not in ("auto", "slicer"):
            raise SegAlignError(f"merge must be 'auto' or 'slicer', got {merge!r}")
        segmentation = segmentation_node.GetSegmentation()
        segment_ids = vtk.vtkStringArray()
        segmentation.GetSegmentIDs(segment_ids)
        if segment_ids.GetNumberOfValues() == 0:
            raise SegAlignError(f"segmentation {segmentation_node.GetName()} has no segments")
        color_table = segmentation_node.GetLabelmapConversionColorTableNode()
        by_name = None
        if color_table is not None:  # a table set by another tool (SlicerTotalSegmentator): its values by name
            values = vtk.vtkIntArray()
            vtkSlicerSegmentationsModuleLogic.GetLabelValuesFromColorNode(segmentation_node, color_table, segment_ids, values)
            by_name = [values.GetValue(i) for i in range(values.GetNumberOfValues())]
        label_values, warnings = segment_label_values(segmentation, segment_ids, by_name)
        warnings = import_warnings(segmentation_node) + warnings
        table: dict[int, Label] = {}
        for index, value in enumerate(label_values):
            segment = segmentation.GetSegment(segment_ids.GetValue(index))
            color = tuple(int(round(channel * 255)) for channel in segment.GetColor())
            table[int(value)] = Label(int(value), segment.GetName(), color)  # type: ignore[arg-type]

        ids = [segment_ids.GetValue(i) for i in range(segment_ids.GetNumberOfValues())]
        merged = merge_labelmap_layers(segmentation, ids, label_values) if merge == "auto" else None
        if merged is None:  # not binary labelmaps on one grid: Slicer merges them on the reference geometry
            merged = merge_with_slicer(segmentation_node, ids, label_values)
            warnings.append(
                f"segments of {segmentation_node.GetName()} are not binary labelmaps on one grid; Slicer merged them "
                "on the segmentation's reference geometry (resampling them) before the frames were sampled"
            )
        labels, ijk_to_ras = merged
        if not labels.any():
            raise SegAlignError(f"segmentation {segmentation_node.GetName()}: every segment is empty")
        affine = self._to_world(segmentation_node) @ ijk_to_ras
        return Segmentation(
            labels, affine, table, None, affine_source="slicer", warnings=warnings,
            description=f"Slicer segmentation node {segmentation_node.GetName()} ({segmentation_node.GetID()})",
        )

    def _to_world(self, node) -> np.ndarray:
        transform = node.GetParentTransformNode()
        if transform is None:
            return np.eye(4)
        if not transform.IsTransformToWorldLinear():
            raise SegAlignError(
                f"segmentation {node.GetName()} is under the non-linear transform {transform.GetName()}; "
                "harden it (Data module) or remove it before exporting"
            )
        import vtk

        matrix = vtk.vtkMatrix4x4()
        transform.GetMatrixTransformToWorld(matrix)
        return matrix_to_array(matrix)

    def export(
        self,
        segmentation_node,
        reference_volume,
        output_dir: str | os.PathLike[str],
        options: ExportOptions | None = None,
        *,
        files: Sequence[str | os.PathLike[str]] | None = None,
        overwrite: bool = False,
        progress: ProgressCallback | None = None,
        series: Series | None = None,
    ) -> ExportResult:
        """Export ``segmentation_node`` onto every original DICOM frame of ``reference_volume``.

        The frames are the volume's DICOM files (``files``, else looked up from its ``DICOM.instanceUIDs``); each is
        sampled in patient space, so the volume's own geometry and transforms play no part. Overlays,
        ``labels.json`` and the DICOM SEG use the segments' current names and colours. ``options``, ``overwrite``
        and ``progress`` are those of :func:`segalign.export.export_segmentation`. ``series`` is the volume's series
        when the caller has it already (read when the volume was loaded), so the headers are not read again.
        """
        series = series if series is not None else self.series_for_volume(reference_volume, files)
        segmentation = self.labels_from_segmentation(segmentation_node)
        warnings = []
        if reference_volume.GetParentTransformNode() is not None:
            warnings.append(
                f"volume {reference_volume.GetName()} has a parent transform ({reference_volume.GetParentTransformNode().GetName()}); "
                "it is not used: frames are sampled where their DICOM headers place them"
            )
        return export_segmentation(
            series, segmentation, output_dir, options, overwrite=overwrite, warnings=warnings, progress=progress,
        )


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
    from .writers.segment_codes import totalsegmentator_codes

    codes = totalsegmentator_codes().get(name)
    if codes is None:
        return None

    def coded(code) -> str:
        return "^".join((code.scheme, code.value, code.meaning)) if code is not None else "^^"

    return "~".join((TERMINOLOGY_CONTEXT, coded(codes.category), coded(codes.type), coded(codes.modifier),
                     ANATOMIC_CONTEXT, "^^", "^^"))


def _add_shared_labelmap(segmentation_node, segmentation: Segmentation, ijk_to_ras: np.ndarray) -> None:
    """One segment per label present, all sharing one binary labelmap layer: the label volume itself.

    This is the layout Slicer's ImportLabelmapToSegmentationNode produces, built directly (it takes 0.1 s where
    the import takes seconds for a hundred labels).
    """
    from vtk.util import numpy_support
    from slicer import vtkOrientedImageData, vtkSegment

    image = vtkOrientedImageData()
    image.SetDimensions(*segmentation.labels.shape)
    voxels = np.ascontiguousarray(segmentation.labels.transpose(2, 1, 0)).ravel()  # VTK runs i fastest
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(voxels, deep=True))
    image.SetImageToWorldMatrix(array_to_matrix(ijk_to_ras))
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
            segment.AddRepresentation("Binary labelmap", image)
            target.AddSegment(segment, target.GenerateUniqueSegmentID(safe_name(label.name, "segment")))
    finally:
        segmentation_node.EndModify(was_modified)


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
    matrices = {layer: matrix_to_array(_image_to_world(image)) for layer, image in images.items()}
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


def oriented_image_array(image) -> tuple[np.ndarray, np.ndarray]:
    """A vtkOrientedImageData's voxels as ``array[i, j, k]`` (a view where possible) and the voxel-to-RAS matrix of
    array index 0 (the image's extent need not start at 0)."""
    from vtk.util import numpy_support

    extent = image.GetExtent()
    scalars = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    shape = (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    voxels = scalars.reshape(shape).transpose(2, 1, 0)  # VTK runs i fastest: [k, j, i] -> [i, j, k]
    matrix = matrix_to_array(_image_to_world(image))
    low = np.array(extent[0::2], dtype=float)
    matrix[:3, 3] = matrix[:3, :3] @ low + matrix[:3, 3]
    return voxels, matrix


def split_affine(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Split a voxel-to-RAS affine into a Slicer volume geometry (orthogonal axes) and a residual linear transform.

    Slicer volumes have orthogonal axes; a sheared affine (raw tilted CT from dcm2niix) is stored as the nearest
    orthogonal geometry plus ``residual``, with ``residual @ geometry == affine``. ``residual`` is None when the
    affine is already orthogonal.
    """
    affine = np.asarray(affine, dtype=float)
    columns = affine[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    directions = columns / spacing
    gram = directions.T @ directions
    if np.max(np.abs(gram - np.eye(3))) <= ORTHOGONALITY_TOLERANCE:
        return affine, None
    q, r = np.linalg.qr(columns)
    signs = np.sign(np.diag(r))
    q = q * signs
    geometry = np.eye(4)
    geometry[:3, :3] = q * np.abs(np.diag(r))
    geometry[:3, 3] = affine[:3, 3]
    residual = affine @ np.linalg.inv(geometry)
    return geometry, residual


def _image_to_world(image):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    return matrix


