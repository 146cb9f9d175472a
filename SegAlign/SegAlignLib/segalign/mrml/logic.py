"""SegAlign on MRML: import segmentation files as segmentation nodes, export segmentation nodes onto DICOM frames.

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

from ..dicom import Series, series_from_files
from ..errors import SegAlignError
from ..export import ExportResult, ProgressCallback, export_segmentation
from ..options import ExportOptions
from ..readers import load_segmentation
from ..readers.nifti import nifti_stem
from ..segmentation import OVERLAPS, Label, Layer, Overlap, Segmentation
from .matrices import array_to_matrix, matrix_to_array, split_affine
from .merge import labelmap_layers, merge_with_slicer, slicer_layers
from .segments import (
    IMPORT_WARNINGS_ATTRIBUTE,
    LABEL_VALUE_TAG,
    add_label_layers,
    import_warnings,
    segment_label_values,
)

#: Volume attribute listing the DICOM files of a volume loaded without a DICOM database (newline-separated).
FILES_ATTRIBUTE = "SegAlign.dicomFiles"

FileLookup = Callable[[str], str]


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
        overlap: Overlap = "keep",
        name: str | None = None,
    ):
        """Load a segmentation file (NIfTI, ``.seg.nrrd``, NRRD, MHA/MHD, DICOM SEG) or a folder of masks as a new
        ``vtkMRMLSegmentationNode``; a ``.seg.nrrd`` is read by Slicer's own segmentation storage node.

        Where segments overlap (masks of a folder, a BINARY DICOM SEG, a layered ``.seg.nrrd``), each is kept
        whole: each layer of the segmentation (see :mod:`segalign.segmentation.layers`) becomes one shared labelmap
        layer of the node, as Slicer keeps segments that overlap. ``overlap`` is the reader's (``"later-wins"``
        flattens them, ``"error"`` refuses them).

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
            add_label_layers(segmentation_node, segmentation, geometry, residual)
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
        if not files:
            raise SegAlignError(f"volume {volume.GetName()}: no DICOM files given")
        return series_from_files(files, progress)

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

    def labels_from_segmentation(
        self, segmentation_node, *, merge: str = "auto", overlap: Overlap = "keep",
    ) -> Segmentation:
        """Every segment of ``segmentation_node`` as a :class:`Segmentation` in the segmentation's own geometry.

        Label values are those recorded on each segment at import (see :func:`segment_label_values`), whatever the
        segments are named or in whatever order they are; segments added in Slicer get values after them. Names and
        colours are the segments' own, so edits and renames made in Slicer are included, and the warnings recorded
        at import (:func:`import_warnings`) are carried into the export.

        Segments that do not overlap give one label volume. Where they overlap (segments in labelmap layers of
        their own, as Slicer keeps them), every segment is kept whole in a few label layers (see
        :mod:`segalign.segmentation.layers`): each labelmap layer goes into the first layer it does not meet.
        ``overlap="later-wins"`` flattens them instead (the later segment wins, as in Slicer's export);
        ``overlap="error"`` refuses them, naming two.

        Binary labelmap layers on one grid are read directly, voxel for voxel. Anything else (closed surfaces as the
        source representation, layers on different grids) is merged layer by layer by Slicer's own
        ``GenerateMergedLabelmapInReferenceGeometry`` with those same label values, on a copy of the segmentation
        that never enters the scene (resampled onto the segmentation's reference geometry: a warning says so).
        ``merge="slicer"`` takes Slicer's merge always (the tests compare the two).
        """
        import vtk
        from slicer import vtkSlicerSegmentationsModuleLogic

        if merge not in ("auto", "slicer"):
            raise SegAlignError(f"merge must be 'auto' or 'slicer', got {merge!r}")
        if overlap not in OVERLAPS:
            raise SegAlignError(f"overlap must be one of {', '.join(map(repr, OVERLAPS))}, got {overlap!r}")
        name = segmentation_node.GetName()
        segmentation = segmentation_node.GetSegmentation()
        segment_ids = vtk.vtkStringArray()
        segmentation.GetSegmentIDs(segment_ids)
        if segment_ids.GetNumberOfValues() == 0:
            raise SegAlignError(f"segmentation {name} has no segments")
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
        layers, clash = self._layers(segmentation_node, ids, label_values, merge, overlap, warnings)
        if clash is not None and overlap == "error":
            first, second = (table[value].name for value in clash)
            raise SegAlignError(
                f"segments {first!r} and {second!r} of {name} overlap; pass overlap='keep' to keep both, or "
                "'later-wins' to flatten them")
        if not any(layer.labels.any() for layer in layers):
            raise SegAlignError(f"segmentation {name}: every segment is empty")
        to_world = self._to_world(segmentation_node)
        first_layer, *more = (Layer(layer.labels, to_world @ layer.affine) for layer in layers)
        return Segmentation(
            first_layer.labels, first_layer.affine, table, None, affine_source="slicer", warnings=warnings,
            description=f"Slicer segmentation node {name} ({segmentation_node.GetID()})", more_layers=more,
        )

    @staticmethod
    def _layers(segmentation_node, ids: list[str], values: list[int], merge: str, overlap: Overlap,
                warnings: list[str]) -> tuple[list[Layer], tuple[int, int] | None]:
        """The segments ``ids`` as label layers in the node's coordinates (one when ``overlap`` is
        ``"later-wins"``), read directly where they are binary labelmaps on one grid (unless ``merge`` is
        ``"slicer"``), else merged by Slicer (``warnings`` gets a line saying so); and two values that overlap."""
        direct = labelmap_layers(segmentation_node.GetSegmentation(), ids, values) if merge == "auto" else None
        if direct is not None:
            return ([direct.flattened()], None) if overlap == "later-wins" else direct.stacked()
        if merge == "auto":
            warnings.append(
                f"segments of {segmentation_node.GetName()} are not binary labelmaps on one grid; Slicer merged them "
                "on the segmentation's reference geometry (resampling them) before the frames were sampled"
            )
        if overlap == "later-wins":
            return [Layer(*merge_with_slicer(segmentation_node, ids, values))], None
        return slicer_layers(segmentation_node, ids, values)

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
        overlap: Overlap = "keep",
    ) -> ExportResult:
        """Export ``segmentation_node`` onto every original DICOM frame of ``reference_volume``.

        The frames are the volume's DICOM files (``files``, else looked up from its ``DICOM.instanceUIDs``); each is
        sampled in patient space, so the volume's own geometry and transforms play no part. Overlays,
        ``labels.json`` and the DICOM SEG use the segments' current names and colours. ``options``, ``overwrite``
        and ``progress`` are those of :func:`segalign.export.export_segmentation`. ``series`` is the volume's series
        when the caller has it already (read when the volume was loaded), so the headers are not read again.
        Segments that overlap are kept whole (``overlap``: see :meth:`labels_from_segmentation`).
        """
        series = series if series is not None else self.series_for_volume(reference_volume, files)
        segmentation = self.labels_from_segmentation(segmentation_node, overlap=overlap)
        warnings = []
        if reference_volume.GetParentTransformNode() is not None:
            warnings.append(
                f"volume {reference_volume.GetName()} has a parent transform ({reference_volume.GetParentTransformNode().GetName()}); "
                "it is not used: frames are sampled where their DICOM headers place them"
            )
        return export_segmentation(
            series, segmentation, output_dir, options, overwrite=overwrite, warnings=warnings, progress=progress,
        )
