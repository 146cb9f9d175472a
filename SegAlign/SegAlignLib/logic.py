"""SegAlignLogic: the module's GUI-free logic, for the panel and the Python console.

Slicer idiom (camelCase methods on a ``ScriptedLoadableModuleLogic``) over the library's MRML bridge,
:class:`~SegAlignLib.segalign.slicer_logic.SegAlignMRMLLogic`. Each entry point first makes sure Slicer's Python
has what it needs (:mod:`SegAlignLib.dependencies`) and raises an error of one sentence when it cannot.
"""

from __future__ import annotations

import enum
import json
import os
import pathlib
from typing import Callable

import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from . import dependencies
from .parameters import SegAlignParameterNode
from .segalign.dicom import DicomScan, Series, scan_folder
from .segalign.errors import SegAlignError
from .segalign.export import ExportResult
from .segalign.options import ExportOptions
from .segalign.mrml import FILES_ATTRIBUTE, SegAlignMRMLLogic, import_warnings, labelmap_layer_count

#: ``progress(done, total)``; raising from it stops the work (the export raises ExportCancelled).
Progress = Callable[[int, int], None]


class DicomDatabaseUse(enum.Enum):
    """Where a DICOM series is imported before Slicer's DICOM plugins load it (as the DICOM module asks)."""

    TEMPORARY = "temporary"  #: a temporary database for this load only: the user's database is not touched
    LINK = "link"  #: added to the user's DICOM database, its files linked where they are
    COPY = "copy"  #: added to the user's DICOM database, its files copied into the database folder

    def label(self) -> str:
        return {
            "temporary": _("Load only (a temporary DICOM database; yours is not changed)"),
            "link": _("Add to the DICOM database, linking the files where they are"),
            "copy": _("Add to the DICOM database, copying the files into it"),
        }[self.value]


class SegAlignLogic(ScriptedLoadableModuleLogic):
    """Import a DICOM series and a segmentation into the scene, and export the segmentation onto every original
    DICOM frame. Usable from the Python console (see the README)."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.mrml = SegAlignMRMLLogic(slicer.mrmlScene, file_for_instance=_fileForInstance)
        #: The series SegAlign read for each volume it loaded (by node ID): an export does not read them again.
        self._series: dict[str, Series] = {}

    def getParameterNode(self) -> SegAlignParameterNode:
        return SegAlignParameterNode(super().getParameterNode())

    # ------------------------------------------------------------------------------------------------ DICOM

    @staticmethod
    def scanFolder(folder: str | os.PathLike[str], progress: Progress | None = None) -> DicomScan:
        """SegAlign's scan of a folder (the one the command line makes): ``.series`` lists its image series.
        ``progress(done, total)`` follows the headers read; raising from it stops the scan."""
        return scan_folder(folder, progress=progress)

    def loadDicomFolder(
        self,
        folder: str | os.PathLike[str],
        seriesInstanceUID: str | None = None,
        *,
        scan: DicomScan | None = None,
        database: DicomDatabaseUse | str = DicomDatabaseUse.TEMPORARY,
        progress: Progress | None = None,
    ) -> vtkMRMLScalarVolumeNode:
        """Load one series of ``folder`` (the only one, or ``seriesInstanceUID``) through Slicer's DICOM plugins.

        Only that series' files are imported, into a temporary DICOM database by default (``database``:
        :class:`DicomDatabaseUse`, or its value); ``"link"`` and ``"copy"`` add them to the user's DICOM database as
        the DICOM module's import does. ``scan`` is an earlier :meth:`scanFolder` of the folder, so it is not read
        again. The volume remembers its files, so an export needs no database.
        """
        from DICOMLib import DICOMUtils

        database = DicomDatabaseUse(database)
        series = (scan or self.scanFolder(folder, progress)).select(seriesInstanceUID)
        files = [str(path) for path in series.files]
        if not series.uid:  # anonymised without a SeriesInstanceUID: no database can load it by UID
            volume = self._loadFiles(series)
        elif database is DicomDatabaseUse.TEMPORARY:
            with DICOMUtils.TemporaryDICOMDatabase() as temporary:
                volume = self._importAndLoad(DICOMUtils, temporary, files, series.uid, copy=False)
        else:
            if not slicer.dicomDatabase or not slicer.dicomDatabase.isOpen:
                raise SegAlignError(_("Slicer's DICOM database is not open: open the DICOM module once to set it up, "
                                      "or load into a temporary database."))
            volume = self._importAndLoad(DICOMUtils, slicer.dicomDatabase, files, series.uid,
                                         copy=database is DicomDatabaseUse.COPY)
        volume.SetAttribute(FILES_ATTRIBUTE, "\n".join(files))
        self._series[volume.GetID()] = series
        return volume

    @staticmethod
    def _importAndLoad(DICOMUtils, database, files: list[str], seriesUID: str, copy: bool) -> vtkMRMLScalarVolumeNode:
        """Import ``files`` (one series) into ``database`` and load the series with the DICOM plugins."""
        import ctk

        indexer = ctk.ctkDICOMIndexer()
        indexer.addListOfFiles(database, files, copy)
        indexer.waitForImportFinished()
        nodeIDs = DICOMUtils.loadSeriesByUID([seriesUID])
        volumes = [slicer.mrmlScene.GetNodeByID(nodeID) for nodeID in nodeIDs]
        volumes = [volume for volume in volumes if volume is not None and volume.IsA("vtkMRMLScalarVolumeNode")]
        if not volumes:
            raise SegAlignError(_("Slicer's DICOM plugins could not load series {uid}.").format(uid=seriesUID))
        return volumes[0]

    @staticmethod
    def _loadFiles(series: Series) -> vtkMRMLScalarVolumeNode:
        """Load a series' files with the ITK/GDCM reader Slicer's scalar volume plugin uses, without a database."""
        files = list(dict.fromkeys(str(frame.source_file) for frame in series.ordered("position")))
        fileList = vtk.vtkStringArray()
        for path in files:
            fileList.InsertNextValue(path)
        name = series.description or "DICOM series"
        volume = slicer.modules.volumes.logic().AddArchetypeScalarVolume(files[0], name, 0, fileList)
        if volume is None:  # the reader failed: it returns None rather than raising
            raise SegAlignError(_("Slicer could not load the {count} files of the series, starting with {file}").format(
                count=len(files), file=files[0]))
        return volume

    # ----------------------------------------------------------------------------------------- segmentation

    def importSegmentation(
        self, path: str | os.PathLike[str], referenceVolume: vtkMRMLScalarVolumeNode | None = None,
        labelTable: str | os.PathLike[str] | None = None,
    ) -> vtkMRMLSegmentationNode:
        """Import a segmentation file (NIfTI, .seg.nrrd, NRRD, MHA/MHD, DICOM SEG) or a folder of NIfTI masks as a
        segmentation node over ``referenceVolume``. A file SegAlign cannot read is refused first; then what reading
        its format needs is installed, after asking (NIfTI: nibabel). The reader's warnings are kept on the node
        (:meth:`importWarnings`) and recorded by every export of it."""
        dependencies.ensure(dependencies.operation_for(path))
        return self.mrml.import_segmentation(path, referenceVolume, label_table=labelTable)

    @staticmethod
    def importWarnings(segmentationNode: vtkMRMLSegmentationNode) -> list[str]:
        """What the reader warned about when ``segmentationNode`` was imported (empty for other nodes)."""
        return import_warnings(segmentationNode)

    @staticmethod
    def layerCount(segmentationNode: vtkMRMLSegmentationNode) -> int:
        """How many labelmap layers the segments of ``segmentationNode`` are kept in: more than one where segments
        overlap (each kept whole, as every export writes them)."""
        return labelmap_layer_count(segmentationNode)

    @staticmethod
    def overlapNote(layers: int) -> str:
        """The panel's line about segments that overlap, kept in ``layers`` layers ("" for one layer or none)."""
        if layers <= 1:
            return ""
        return _("Segments overlap: each is kept whole, in {layers} layers").format(layers=layers)

    def loadDicomSeg(
        self, path: str | os.PathLike[str], referenceVolume: vtkMRMLScalarVolumeNode | None = None,
    ) -> vtkMRMLSegmentationNode:
        """Load a DICOM SEG (one SegAlign wrote, or any other) as a segmentation node over ``referenceVolume``.

        Slicer's own DICOM SEG plugin reads it where Slicer has one (5.12 ships ``DICOMSegmentationPlugin``, which
        reads with dcmqi): an independent reader, so what lines up is not SegAlign checking itself. Elsewhere the
        library's reader (highdicom) places it by its own frames."""
        pluginClass = getattr(slicer.modules, "dicomPlugins", {}).get("DICOMSegmentationPlugin")
        if pluginClass is None:
            dependencies.ensure("dicom")
            return self.mrml.import_segmentation(path, referenceVolume,
                                                 name=pathlib.Path(path).parent.name + " SEG")
        from DICOMLib import DICOMUtils

        with DICOMUtils.TemporaryDICOMDatabase() as temporary:
            import ctk

            indexer = ctk.ctkDICOMIndexer()
            indexer.addListOfFiles(temporary, [str(path)], False)
            indexer.waitForImportFinished()
            plugin = pluginClass()
            loadables = plugin.examineFiles([str(path)])
            if not loadables:
                raise SegAlignError(_("Slicer's DICOM SEG plugin does not take {path} as a DICOM SEG.").format(path=path))
            nodeIDs = DICOMUtils.loadLoadables({plugin: loadables[:1]})
        nodes = [slicer.mrmlScene.GetNodeByID(nodeID) for nodeID in nodeIDs]
        nodes = [node for node in nodes if node is not None and node.IsA("vtkMRMLSegmentationNode")]
        if not nodes:
            raise SegAlignError(_("Slicer's DICOM SEG plugin could not load {path} (see the Python console log).")
                                .format(path=path))
        if referenceVolume is not None:
            nodes[0].SetReferenceImageGeometryParameterFromVolumeNode(referenceVolume)
        return nodes[0]

    # ------------------------------------------------------------------------------------------------ export

    def exportSegmentation(
        self,
        segmentationNode: vtkMRMLSegmentationNode,
        referenceVolume: vtkMRMLScalarVolumeNode,
        outputFolder: str | os.PathLike[str],
        options: ExportOptions | None = None,
        overwrite: bool = False,
        progress: Progress | None = None,
        files: list[str] | None = None,
    ) -> ExportResult:
        """Export ``segmentationNode`` onto every original DICOM frame of ``referenceVolume``.

        ``options`` is a ``SegAlignLib.segalign.options.ExportOptions`` (default: label images, manifest and label
        table), for example ``ExportOptions(masks=True, dicom_seg=DicomSegOptions("labelmap"))``. Overlays,
        labels.json and the DICOM SEG use the segments' current names and colours. ``progress(done, total)``
        follows the frames (and the headers, when the volume was not loaded by SegAlign); raising
        ``ExportCancelled`` from it stops the export, leaving nothing behind. Needs nothing Slicer does not bundle.
        """
        dependencies.ensure("export")
        series = self._series.get(referenceVolume.GetID()) if files is None else None
        if series is not None and referenceVolume.GetAttribute(FILES_ATTRIBUTE) != "\n".join(map(str, series.files)):
            series = None  # the volume's files changed since SegAlign loaded it
        if series is None:
            series = self.mrml.series_for_volume(referenceVolume, files, progress=progress)
        return self.mrml.export(segmentationNode, referenceVolume, outputFolder, options, overwrite=overwrite,
                                progress=progress, series=series)

    @staticmethod
    def summary(result: ExportResult) -> str:
        """What the panel shows after an export: where it went, what is on the frames, and every warning."""
        lines = [
            _("Wrote {frames} frames to {folder}").format(frames=result.frames, folder=result.output_dir),
            _("Labels on the frames: {labels}").format(labels=", ".join(str(v) for v in result.labels_found) or "none"),
        ]
        overlaps = SegAlignLogic.overlapNote(_exportedLayers(result))
        if overlaps:
            lines.append(overlaps)
        if (result.output_dir / "index.html").exists():
            lines.append(_("Preview: {page}").format(page=result.output_dir / "index.html"))
        if "dicom_seg" in result.outputs:
            lines.append(_("DICOM SEG: {path}").format(path=result.output_dir / result.outputs["dicom_seg"]))
        if "rtstruct" in result.outputs:
            lines.append(_("RTSTRUCT: {path}").format(path=result.output_dir / result.outputs["rtstruct"]))
        lines += [_("Warning: {message}").format(message=warning) for warning in result.warnings]
        return "\n".join(lines)


def _exportedLayers(result: ExportResult) -> int:
    """How many layers the export kept overlapping segments in: the highest ``layer`` of labels.json (which gives
    one only where segments overlap)."""
    try:
        entries = json.loads((result.output_dir / "labels.json").read_text(encoding="utf-8"))
        return max((int(entry.get("layer", 1)) for entry in entries), default=1)
    except (OSError, ValueError, TypeError, AttributeError):
        return 1


def _fileForInstance(uid: str) -> str:
    database = slicer.dicomDatabase
    return database.fileForInstance(uid) if database and database.isOpen else ""
