"""SegAlign: put NIfTI segmentations on their original DICOM frames, in native acquisition order.

The module file holds the Slicer glue only: module metadata, the parameter node, the panel, and the self-test.
All the work is done by the ``segalign`` package beside this file (the same engine as the ``segalign`` command
line); :class:`segalign.slicer_logic.SegAlignMRMLLogic` is its MRML side.
"""

from __future__ import annotations

import enum
import importlib.util
import os
import pathlib
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

#: What each operation needs beyond what Slicer 5.12 bundles (numpy, pydicom, Pillow, SimpleITK, VTK), installed
#: into Slicer's Python on first use after the user agrees; ``slicer.packaging.pip_ensure`` also checks the versions
#: of what is already there. Pillow is bundled: export only has its version checked.
REQUIREMENTS = {
    "nifti": ["nibabel>=5.0,<6"],  # NIfTI files and folders of NIfTI masks
    "nrrd": ["pynrrd>=1.0,<2", "slicerio>=1.4,<2"],  # NRRD and .seg.nrrd (checked by the library's reader first)
    "dicom": ["highdicom>=0.26,<1"],  # a DICOM SEG as the segmentation
    "metaimage": [],  # read with the bundled SimpleITK
    "export": ["Pillow>=10.0,<14"],
}


class SegAlign(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SegAlign")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        # slicer.dicomDatabase and DICOMLib come with the DICOM module (as for DICOMPatcher).
        self.parent.dependencies = ["DICOM"]
        self.parent.contributors = ["SegAlign developers (SegAlign project)"]
        self.parent.helpText = _(
            "Export a segmentation (a TotalSegmentator, nnU-Net or MONAI NIfTI, or any segmentation node) onto the "
            "original DICOM frames of a series: one label image per frame, pixel for pixel on that frame's grid, in "
            "the scanner's acquisition order, with a manifest tying each image to its DICOM instance. "
            'See <a href="https://github.com/segalign/SegAlign#readme">the documentation</a>.'
        )
        self.parent.acknowledgementText = _(
            "SegAlign samples every DICOM frame in patient space with the engine of the segalign Python package."
        )


class OverlayWindow(enum.Enum):
    FRAME = "frame"
    ABDOMEN = "abdomen"
    BONE = "bone"
    BRAIN = "brain"
    LUNG = "lung"
    MEDIASTINUM = "mediastinum"

    def label(self) -> str:
        return _("Each frame's own") if self is OverlayWindow.FRAME else self.value.capitalize()


class ExportOrder(enum.Enum):
    INSTANCE = "instance"
    POSITION = "position"

    def label(self) -> str:
        return {"instance": _("Acquisition (InstanceNumber, frame)"), "position": _("Position along the normal")}[self.value]


class DicomSegType(enum.Enum):
    BINARY = "binary"
    LABELMAP = "labelmap"

    def label(self) -> str:
        return {
            "binary": _("Binary (one frame per segment and slice; readable everywhere)"),
            "labelmap": _("Label map (one compressed frame per slice; smaller, newer readers)"),
        }[self.value]


@parameterNodeWrapper
class SegAlignParameterNode:
    """What the panel shows; saved with the scene.

    referenceVolume - the DICOM series (a volume loaded through the DICOM module, or by SegAlign).
    segmentation - the segmentation to export.
    outputFolder - where labels/, masks/, manifest.csv, labels.json and export.json are written.
    writeMasks - also write one binary image per segment per frame.
    order - native acquisition order or spatial order.
    writeOverlays - also write the frames with the labels drawn on them, and the index.html preview page.
    overlayWindow - the overlays' display window: each frame's own, or a preset.
    overlayOpacity - opacity of the labels on the overlays.
    overlayOutline - draw outlines instead of filled labels.
    writeImages - also write the frames' pixels as 16-bit images.
    writeStats - per-label pixel counts and areas in the manifest.
    writeDicomSeg - also write seg.dcm, a DICOM Segmentation on the series' own frames (for PACS, OHIF, Slicer).
    dicomSegType - binary or label map DICOM SEG.
    writeRtStruct - also write rtstruct.dcm, an RT Structure Set with pixel-edge contours (planning systems, SlicerRT).
    overwrite - replace a non-empty output folder.

    The export options are read from it by ``segalign.options.ExportOptions.from_parameters``, the one place
    that turns these fields into the library's options.
    """

    referenceVolume: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    outputFolder: pathlib.Path
    writeMasks: bool = False
    order: ExportOrder = ExportOrder.INSTANCE
    writeOverlays: bool = True
    overlayWindow: OverlayWindow = OverlayWindow.FRAME
    overlayOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.4
    overlayOutline: bool = False
    writeImages: bool = False
    writeStats: bool = False
    writeDicomSeg: bool = False
    dicomSegType: DicomSegType = DicomSegType.BINARY
    writeRtStruct: bool = False
    overwrite: bool = False


class SegAlignWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._writtenSeg = None  # the seg.dcm of the last export, which the panel can load back
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SegAlign.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SegAlignLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.importDicomButton.connect("clicked(bool)", self.onImportDicom)
        self.ui.importSegmentationButton.connect("clicked(bool)", self.onImportSegmentation)
        self.ui.importMaskFolderButton.connect("clicked(bool)", self.onImportMaskFolder)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.loadDicomSegButton.connect("clicked(bool)", self.onLoadDicomSeg)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    def onReload(self) -> None:
        """Reload the module and the ``segalign`` package beside it: Slicer's reload re-reads the module file only,
        so the package's modules are forgotten first and imported afresh by the reloaded module."""
        import sys

        for name in [name for name in sys.modules if name == "segalign" or name.startswith("segalign.")]:
            del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if str(self._parameterNode.outputFolder) in ("", "."):  # not "." (the working folder, wherever Slicer runs)
            self._parameterNode.outputFolder = pathlib.Path(slicer.app.defaultScenePath) / "SegAlign"
        if not self._parameterNode.referenceVolume:
            volume = next(
                (node for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode") if node.GetAttribute("DICOM.instanceUIDs")),
                None,
            )
            if volume:
                self._parameterNode.referenceVolume = volume

    def setParameterNode(self, inputParameterNode: SegAlignParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def _updateDependentOptions(self, caller=None, event=None) -> None:
        """Options that only matter with another one on are enabled with it (overlay window, opacity, outline with
        overlays; the SEG type with the DICOM SEG)."""
        node = self._parameterNode
        overlays = bool(node and node.writeOverlays)
        for widget in (self.ui.overlayWindowComboBox, self.ui.overlayOpacitySliderWidget, self.ui.overlayOutlineCheckBox):
            widget.enabled = overlays
        self.ui.dicomSegTypeComboBox.enabled = bool(node and node.writeDicomSeg)

    def _checkCanApply(self, caller=None, event=None) -> None:
        self._updateDependentOptions()
        node = self._parameterNode
        ready = bool(node and node.referenceVolume and node.segmentation and str(node.outputFolder) not in ("", "."))
        self.ui.applyButton.enabled = ready
        self.ui.applyButton.toolTip = _("Export the segmentation onto every DICOM frame") if ready else _(
            "Select the DICOM volume, the segmentation and an output folder"
        )

    def onImportDicom(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("DICOM folder to import"))
        if not folder:
            return
        scan = None
        with slicer.util.tryWithErrorDisplay(_("Failed to read the DICOM folder."), waitCursor=True):
            scan = self.logic.scanFolder(folder)  # once: the same scan chooses the series and loads it
        if scan is None:
            return
        series = None
        if len(scan.series) > 1:  # asked without the wait cursor
            series = self._chooseSeries(scan.series)
            if series is None:  # cancelled: nothing is imported
                return
        with slicer.util.tryWithErrorDisplay(_("Failed to import the DICOM folder."), waitCursor=True):
            volume = self.logic.loadDicomFolder(folder, series.uid if series is not None else None, scan=scan)
            self._parameterNode.referenceVolume = volume
            slicer.util.setSliceViewerLayers(background=volume, fit=True)

    @staticmethod
    def _chooseSeries(series):
        """The series the user picks, or None if they cancel (a dialog whose result is checked:
        QInputDialog.getItem returns the current item on Cancel in PythonQt)."""
        labels = [item.label() for item in series]
        dialog = qt.QInputDialog(slicer.util.mainWindow())
        dialog.setWindowTitle(_("Choose a series"))
        dialog.setLabelText(_("The folder holds several series:"))
        dialog.setComboBoxItems(labels)
        dialog.setComboBoxEditable(False)
        if dialog.exec_() != qt.QDialog.Accepted:
            return None
        return series[labels.index(dialog.textValue())]

    def onImportSegmentation(self) -> None:
        path = self.ui.segmentationPathLineEdit.currentPath
        if not path:
            slicer.util.errorDisplay(_("Choose a segmentation file first (NIfTI, .seg.nrrd, NRRD, MHA or DICOM SEG)."))
            return
        self._importSegmentation(path)

    def onImportMaskFolder(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Folder of binary NIfTI masks"))
        if folder:
            self._importSegmentation(folder)

    def _importSegmentation(self, path: str) -> None:
        if not self.logic.ensureDependencies(self.logic.requirementsFor(path)):
            return
        labelTable = self.ui.labelTablePathLineEdit.currentPath or None
        with slicer.util.tryWithErrorDisplay(_("Failed to import the segmentation."), waitCursor=True):
            segmentationNode = self.logic.importSegmentation(path, self._parameterNode.referenceVolume, labelTable)
            self._parameterNode.segmentation = segmentationNode
            if self._parameterNode.referenceVolume:
                slicer.util.setSliceViewerLayers(background=self._parameterNode.referenceVolume)

    def onApplyButton(self) -> None:
        if not self.logic.ensureDependencies(REQUIREMENTS["export"]):
            return
        node = self._parameterNode
        progressDialog = slicer.util.createProgressDialog(
            parent=slicer.util.mainWindow(), windowTitle=_("SegAlign"), labelText=_("Exporting frames..."), maximum=100
        )
        # Modal, and Apply off until the export ends: a second click cannot start a nested export into the folder.
        progressDialog.setWindowModality(qt.Qt.ApplicationModal)
        self.ui.applyButton.enabled = False

        from segalign import ExportCancelled

        def progress(done: int, total: int) -> None:
            progressDialog.maximum = total
            progressDialog.value = done
            slicer.app.processEvents()
            if progressDialog.wasCanceled:
                raise ExportCancelled(_("export cancelled; nothing was written"))

        try:
            with slicer.util.tryWithErrorDisplay(_("Export failed."), waitCursor=True):
                try:
                    result = self._export(node, progress)
                except ExportCancelled:  # the user's choice, not an error: nothing was written
                    self.ui.summaryTextEdit.plainText = _("Export cancelled; nothing was written.")
                    return
                self.ui.summaryTextEdit.plainText = self.logic.summary(result, node.segmentation)
                seg = result.outputs.get("dicom_seg")
                self._writtenSeg = str(result.output_dir / seg) if seg else None
                self.ui.loadDicomSegButton.enabled = self._writtenSeg is not None
        finally:
            progressDialog.close()
            self._checkCanApply()

    def onLoadDicomSeg(self) -> None:
        if not self._writtenSeg or not self.logic.ensureDependencies(REQUIREMENTS["dicom"]):
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to load the DICOM SEG."), waitCursor=True):
            node = self.logic.loadDicomSeg(self._writtenSeg, self._parameterNode.referenceVolume)
            slicer.util.setSliceViewerLayers(background=self._parameterNode.referenceVolume)
            self.ui.summaryTextEdit.appendPlainText(_("Loaded {path} as {name}").format(
                path=self._writtenSeg, name=node.GetName()))

    def _export(self, node, progress):
        from segalign.options import ExportOptions

        return self.logic.exportSegmentation(
            node.segmentation, node.referenceVolume, node.outputFolder, ExportOptions.from_parameters(node),
            overwrite=node.overwrite, progress=progress,
        )


class SegAlignLogic(ScriptedLoadableModuleLogic):
    """Console-friendly logic; see the README for a snippet. Delegates to :class:`SegAlignMRMLLogic`."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        from segalign.slicer_logic import SegAlignMRMLLogic

        self.mrml = SegAlignMRMLLogic(slicer.mrmlScene, file_for_instance=_fileForInstance)

    def getParameterNode(self):
        return SegAlignParameterNode(super().getParameterNode())

    @staticmethod
    def requirementsFor(path) -> list[str]:
        """What reading the segmentation at ``path`` needs (see :data:`REQUIREMENTS`), by its content."""
        from segalign.readers import sniff

        if os.path.isdir(path):
            return REQUIREMENTS["nifti"]
        return REQUIREMENTS.get(sniff(pathlib.Path(path)), REQUIREMENTS["nifti"])

    @staticmethod
    def ensureDependencies(requirements) -> bool:
        """Have ``requirements`` installed in Slicer's Python, installing what is missing or too old after the user
        agrees (``slicer.packaging.pip_ensure`` checks the versions); False if the user declined."""
        if not requirements:
            return True
        import slicer.packaging  # not imported at startup

        try:
            slicer.packaging.pip_ensure(list(requirements), requester="SegAlign")  # asks the user first
        except RuntimeError:  # the user declined
            return False
        return True

    def _require(self, requirements) -> None:
        if not self.ensureDependencies(requirements):
            raise RuntimeError(_("SegAlign needs {packages}, which were not installed.").format(
                packages=", ".join(requirements)))

    @staticmethod
    def scanFolder(folder: str):
        """SegAlign's scan of a folder (the same one the command line uses): ``.series`` lists its image series."""
        from segalign import scan_folder

        return scan_folder(folder)

    @classmethod
    def seriesInFolder(cls, folder: str):
        """The image series in a folder."""
        return cls.scanFolder(folder).series

    def loadDicomFolder(self, folder: str, seriesInstanceUID: str | None = None, scan=None) -> vtkMRMLScalarVolumeNode:
        """Import a folder into Slicer's DICOM database and load one series (the only one, or ``seriesInstanceUID``).
        ``scan`` is an earlier :meth:`scanFolder` of the same folder, so it is not scanned again."""
        from DICOMLib import DICOMUtils

        series = (scan or self.scanFolder(folder)).select(seriesInstanceUID)
        if not series.uid:  # anonymised without a SeriesInstanceUID: the database cannot load it by UID
            return self._loadFiles(series)
        if not slicer.dicomDatabase or not slicer.dicomDatabase.isOpen:
            raise RuntimeError(_("Slicer's DICOM database is not open: open the DICOM module once to set it up."))
        if not DICOMUtils.importDicom(folder):  # it logs why; say so rather than that no plugin could load it
            raise RuntimeError(_("Slicer could not import {folder} into its DICOM database (see the Python console "
                                 "log).").format(folder=folder))
        nodeIDs = DICOMUtils.loadSeriesByUID([series.uid])
        volumes = [slicer.mrmlScene.GetNodeByID(i) for i in nodeIDs]
        volumes = [v for v in volumes if v and v.IsA("vtkMRMLScalarVolumeNode")]
        if not volumes:
            raise RuntimeError(_("Slicer's DICOM plugins could not load series {uid}.").format(uid=series.uid))
        return volumes[0]

    @staticmethod
    def _loadFiles(series) -> vtkMRMLScalarVolumeNode:
        files = [str(frame.source_file) for frame in series.ordered("position")]
        fileList = vtk.vtkStringArray()
        for path in dict.fromkeys(files):
            fileList.InsertNextValue(path)
        volume = slicer.modules.volumes.logic().AddArchetypeScalarVolume(files[0], series.description or "DICOM series", 0, fileList)
        if volume is None:  # the reader failed: it returns None rather than raising
            raise RuntimeError(_("Slicer could not load the {count} files of the series, starting with {file}").format(
                count=fileList.GetNumberOfValues(), file=files[0]))
        from segalign.slicer_logic import FILES_ATTRIBUTE

        volume.SetAttribute(FILES_ATTRIBUTE, "\n".join(dict.fromkeys(files)))
        return volume

    def importSegmentation(self, path, referenceVolume=None, labelTable=None) -> vtkMRMLSegmentationNode:
        """Import a segmentation file (NIfTI, .seg.nrrd, NRRD, MHA/MHD, DICOM SEG) or a folder of masks as a segmentation
        node shown over ``referenceVolume``. Installs what reading that format needs, after asking (NIfTI: nibabel)."""
        self._require(self.requirementsFor(path))
        return self.mrml.import_segmentation(path, referenceVolume, label_table=labelTable)

    def loadDicomSeg(self, path, referenceVolume=None) -> vtkMRMLSegmentationNode:
        """Load a DICOM SEG (one SegAlign wrote, or any other) as a segmentation node over ``referenceVolume``,
        placed by its own frames (the library's reader, highdicom: Slicer's DICOM SEG plugin needs the
        QuantitativeReporting extension)."""
        self._require(REQUIREMENTS["dicom"])
        return self.mrml.import_segmentation(path, referenceVolume, name=pathlib.Path(path).parent.name + " SEG")

    def exportSegmentation(self, segmentationNode, referenceVolume, outputFolder, options=None, overwrite=False,
                           progress=None, files=None):
        """Export ``segmentationNode`` onto every original DICOM frame of ``referenceVolume``.

        ``options`` is a ``segalign.options.ExportOptions`` (default: label images, manifest and label table), for
        example ``ExportOptions(masks=True, dicom_seg=DicomSegOptions("labelmap"))``. Overlays, labels.json and the
        DICOM SEG use the segments' current names and colours. Needs nothing Slicer does not bundle.
        """
        self._require(REQUIREMENTS["export"])
        return self.mrml.export(
            segmentationNode, referenceVolume, outputFolder, options, files=files, overwrite=overwrite,
            progress=progress,
        )

    @staticmethod
    def summary(result, segmentationNode) -> str:
        lines = [
            _("Wrote {frames} frames to {folder}").format(frames=result.frames, folder=result.output_dir),
            _("Labels on the frames: {labels}").format(labels=", ".join(str(v) for v in result.labels_found) or "none"),
        ]
        if (result.output_dir / "index.html").exists():
            lines.append(_("Preview: {page}").format(page=result.output_dir / "index.html"))
        if "dicom_seg" in result.outputs:
            lines.append(_("DICOM SEG: {path}").format(path=result.output_dir / result.outputs["dicom_seg"]))
        if "rtstruct" in result.outputs:
            lines.append(_("RTSTRUCT: {path}").format(path=result.output_dir / result.outputs["rtstruct"]))
        lines += [_("Warning: {message}").format(message=w) for w in result.warnings]
        return "\n".join(lines)


def _fileForInstance(uid: str) -> str:
    database = slicer.dicomDatabase
    return database.fileForInstance(uid) if database and database.isOpen else ""


class SegAlignTest(ScriptedLoadableModuleTest):
    """Writes a small synthetic series and segmentation, imports them through a temporary DICOM database, exports,
    and checks every label image against the analytic phantom."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_export_matches_phantom()

    def test_export_matches_phantom(self):
        import csv
        import tempfile

        # The test never downloads (the Extensions build machines may be offline): without nibabel, which Slicer
        # does not bundle and which writes and reads the test's NIfTI, it is skipped, saying how to install it.
        if importlib.util.find_spec("nibabel") is None:
            self.delayDisplay("Skipped: nibabel is not installed in this Slicer, and the self-test does not download "
                              "it (slicer.util.pip_install('nibabel') to run it)")
            return
        import numpy as np
        from DICOMLib import DICOMUtils
        from PIL import Image
        from segalign import synthetic

        self.delayDisplay("Writing a synthetic series with InstanceNumber counting down")
        phantom = synthetic.abdomen_phantom()
        specs = synthetic.stack((-120.0, -90.0, -30.0), 16, (0.0, 0.0, 4.0), spacing=(2.0, 2.0), rows=96, columns=120,
                                instance_numbers=range(16, 0, -1))
        with tempfile.TemporaryDirectory() as tmp:
            dicomFolder = os.path.join(tmp, "dicom")
            synthetic.write_series(dicomFolder, specs, phantom, file_names=synthetic.shuffled_names(len(specs)))
            affine, shape = synthetic.las_affine((-121.0, -91.0, -31.0), (121.0, 103.0, 31.0), (1.5, 1.5, 1.5))
            segmentationPath = os.path.join(tmp, "segmentation.nii.gz")
            synthetic.write_nifti(segmentationPath, synthetic.rasterize(phantom, shape, affine), affine,
                                  label_table_xml=phantom.label_table_xml())
            with DICOMUtils.TemporaryDICOMDatabase(os.path.join(tmp, "database")):
                logic = SegAlignLogic()
                volume = logic.loadDicomFolder(dicomFolder)
                segmentation = logic.importSegmentation(segmentationPath, volume)
                names = {segmentation.GetSegmentation().GetNthSegment(i).GetName()
                         for i in range(segmentation.GetSegmentation().GetNumberOfSegments())}
                self.assertIn("liver", names)
                outputFolder = os.path.join(tmp, "export")
                from segalign.options import DicomSegOptions, ExportOptions

                result = logic.exportSegmentation(
                    segmentation, volume, outputFolder, ExportOptions(dicom_seg=DicomSegOptions())
                )
                self.assertEqual(result.frames, len(specs))
                self.assertEqual(result.outputs, {"dicom_seg": "seg.dcm"})

            with open(os.path.join(outputFolder, "manifest.csv"), newline="") as stream:
                rows = list(csv.DictReader(stream))
            self.assertEqual([int(row["instance_number"]) for row in rows], list(range(1, 17)))
            byPosition = {tuple(np.round(spec.position, 3)): spec for spec in specs}
            agreeing = total = 0
            for row in rows:
                spec = byPosition[tuple(np.round([float(v) for v in row["image_position_patient"].split()], 3))]
                labels = np.array(Image.open(os.path.join(outputFolder, row["label_png"])))
                expected = synthetic.expected_labels(spec, phantom)
                self.assertEqual(labels.shape, expected.shape)
                agreeing += int((labels == expected).sum())
                total += labels.size
            # The segmentation is on a 1.5 mm grid, so only boundary pixels may differ from the analytic shapes
            # (99.3 % agree; a mirrored or shifted export agrees far less).
            self.assertGreater(agreeing / total, 0.98)

            self.delayDisplay("Reading the DICOM SEG back through its references")
            import json

            import pydicom

            seg = pydicom.dcmread(os.path.join(outputFolder, "seg.dcm"))
            with open(os.path.join(outputFolder, "labels.json"), encoding="utf-8") as stream:
                valueOf = {entry["name"]: entry["value"] for entry in json.load(stream)}
            segmentValue = {int(item.SegmentNumber): valueOf[item.SegmentLabel] for item in seg.SegmentSequence}
            frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), seg.Rows, seg.Columns)
            rebuilt = {}
            for frame, groups in zip(frames, seg.PerFrameFunctionalGroupsSequence):
                uid = groups.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
                number = int(groups.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
                rebuilt.setdefault(uid, np.zeros((seg.Rows, seg.Columns), np.uint16))[frame.astype(bool)] = segmentValue[number]
            for row in rows:
                labels = np.array(Image.open(os.path.join(outputFolder, row["label_png"])))
                fromSeg = rebuilt.get(row["sop_instance_uid"], np.zeros(labels.shape, np.uint16))
                self.assertTrue(np.array_equal(fromSeg, labels), row["label_png"])

            self.delayDisplay("Comparing with the command line's engine")
            from segalign import export_segmentation, load_segmentation, scan_folder

            engineFolder = os.path.join(tmp, "engine")
            export_segmentation(scan_folder(dicomFolder).select(), load_segmentation(segmentationPath), engineFolder)
            for row in rows:
                ours = np.array(Image.open(os.path.join(outputFolder, row["label_png"])))
                engine = np.array(Image.open(os.path.join(engineFolder, row["label_png"])))
                self.assertTrue(np.array_equal(ours, engine), row["label_png"])
        self.delayDisplay("Test passed")
