"""SegAlignWidget: the module's panel (Resources/UI/SegAlign.ui), wired to :class:`~SegAlignLib.logic.SegAlignLogic`.

The panel follows Slicer's scripted module template: widgets bound to the parameter node by their
``SlicerParameterName``, scene close observed, the parameter node's GUI connection dropped on ``exit``. Work that
reads files (the DICOM headers, the export) runs under a modal progress dialog that can cancel it; an error is
shown once in Slicer's error dialog and the panel goes on (no traceback in the console).
"""

from __future__ import annotations

import contextlib
import logging
import pathlib
import sys
from typing import Callable, Iterator, TypeVar

import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from .logic import DicomDatabaseUse, SegAlignLogic
from .parameters import SegAlignParameterNode, export_options
from .segalign.export import ExportCancelled
from .segalign.mrml import FILES_ATTRIBUTE

T = TypeVar("T")
Progress = Callable[[int, int], None]

#: This package: what a module reload forgets, and only that.
PACKAGE = __name__.rpartition(".")[0]


class SegAlignWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The SegAlign panel."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: SegAlignLogic | None = None
        self._writtenSeg: str | None = None  # the seg.dcm of the last export, which the panel can load back
        self._parameterNode: SegAlignParameterNode | None = None
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
        """Reload the module together with this package (widget, logic and the library inside it): Slicer's reload
        re-reads the module file only, so the package's modules are forgotten first and imported afresh by the
        reloaded module file. Nothing outside the package is touched (a segalign installed in Slicer's Python
        included)."""
        for name in [name for name in sys.modules if name == PACKAGE or name.startswith(PACKAGE + ".")]:
            del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)

    # ------------------------------------------------------------------------------------- parameter node

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
            volume = next((node for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
                           if node.GetAttribute("DICOM.instanceUIDs") or node.GetAttribute(FILES_ATTRIBUTE)), None)
            if volume:
                self._parameterNode.referenceVolume = volume

    def setParameterNode(self, inputParameterNode: SegAlignParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            if self.hasObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply):  # not after exit()
                self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def _updateDependentOptions(self) -> None:
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

    # ---------------------------------------------------------------------------------------------- import

    def onImportDicom(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("DICOM folder to import"))
        if not folder:
            return
        with self._progressDialog(_("Reading the DICOM headers...")) as progress:  # once: it chooses and loads
            scan = self._attempt(_("Failed to read the DICOM folder."), lambda: self.logic.scanFolder(folder, progress))
        if scan is None:
            return
        series = None
        if len(scan.series) > 1:  # asked without the wait cursor
            series = self._choose(_("Choose a series"), _("The folder holds several series:"), scan.series,
                                  [item.label() for item in scan.series])
            if series is None:  # cancelled: nothing is imported
                return
        members = list(DicomDatabaseUse)
        database = self._choose(_("DICOM database"), _("Where should Slicer import the series?"), members,
                                [member.label() for member in members])
        if database is None:
            return
        volume = self._attempt(_("Failed to import the DICOM folder."), lambda: self.logic.loadDicomFolder(
            folder, series.uid if series is not None else None, scan=scan, database=database))
        if volume is None:
            return
        self._parameterNode.referenceVolume = volume
        slicer.util.setSliceViewerLayers(background=volume, fit=True)

    @staticmethod
    def _choose(title: str, text: str, items: list[T], labels: list[str]) -> T | None:
        """The item the user picks in a modal list, or None if they cancel (a dialog whose result is checked:
        PythonQt's QInputDialog.getItem returns the current item on Cancel)."""
        dialog = qt.QInputDialog(slicer.util.mainWindow())
        dialog.setWindowTitle(title)
        dialog.setLabelText(text)
        dialog.setComboBoxItems(labels)
        dialog.setComboBoxEditable(False)
        if dialog.exec_() != qt.QDialog.Accepted:
            return None
        return items[labels.index(dialog.textValue())]

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
        labelTable = self.ui.labelTablePathLineEdit.currentPath or None
        reference = self._parameterNode.referenceVolume
        node = self._attempt(_("Failed to import the segmentation."),
                             lambda: self.logic.importSegmentation(path, reference, labelTable))
        if node is None:
            return
        self._parameterNode.segmentation = node
        lines = [_("Imported {path} as {name}").format(path=path, name=node.GetName())]
        overlaps = self.logic.overlapNote(self.logic.layerCount(node))
        if overlaps:
            lines.append(overlaps)
        lines += [_("Warning: {message}").format(message=warning) for warning in self.logic.importWarnings(node)]
        self.ui.summaryTextEdit.plainText = "\n".join(lines)
        if reference:
            slicer.util.setSliceViewerLayers(background=reference)

    # ---------------------------------------------------------------------------------------------- export

    def onApplyButton(self) -> None:
        node = self._parameterNode
        # Modal, and Apply off until the export ends: a second click cannot start a nested export into the folder.
        self.ui.applyButton.enabled = False
        try:
            with self._progressDialog(_("Exporting the frames...")) as progress:
                result = self._attempt(_("Export failed."), lambda: self.logic.exportSegmentation(
                    node.segmentation, node.referenceVolume, node.outputFolder, export_options(node),
                    overwrite=node.overwrite, progress=progress))
        finally:
            self._checkCanApply()
        if result is None:
            return
        self.ui.summaryTextEdit.plainText = self.logic.summary(result)
        seg = result.outputs.get("dicom_seg")
        self._writtenSeg = str(result.output_dir / seg) if seg else None
        self.ui.loadDicomSegButton.enabled = self._writtenSeg is not None

    def onLoadDicomSeg(self) -> None:
        if not self._writtenSeg:
            return
        path, reference = self._writtenSeg, self._parameterNode.referenceVolume
        node = self._attempt(_("Failed to load the DICOM SEG."), lambda: self.logic.loadDicomSeg(path, reference))
        if node is None:
            return
        slicer.util.setSliceViewerLayers(background=reference)
        self.ui.summaryTextEdit.appendPlainText(_("Loaded {path} as {name}").format(path=path, name=node.GetName()))

    # --------------------------------------------------------------------------------------------- helpers

    @contextlib.contextmanager
    def _progressDialog(self, text: str) -> Iterator[Progress]:
        """A modal progress dialog for the block; the callback it gives raises ExportCancelled when the user
        presses Cancel (the library stops and removes what it wrote)."""
        dialog = slicer.util.createProgressDialog(parent=slicer.util.mainWindow(), windowTitle=_("SegAlign"),
                                                  labelText=text, maximum=0)
        dialog.setWindowModality(qt.Qt.ApplicationModal)

        def progress(done: int, total: int) -> None:
            dialog.maximum = total
            dialog.value = done
            slicer.app.processEvents()
            if dialog.wasCanceled:
                raise ExportCancelled(_("cancelled"))

        try:
            yield progress
        finally:
            dialog.close()

    def _attempt(self, message: str, work: Callable[[], T]) -> T | None:
        """``work()``, under the wait cursor. An error is shown once, with ``message``, in Slicer's error dialog
        (``tryWithErrorDisplay``, which raises it again: it stops here, with its traceback in the log at debug
        level) and gives None; so does a cancel, which the summary box reports."""
        try:
            with slicer.util.tryWithErrorDisplay(message, waitCursor=True):
                try:
                    return work()
                except ExportCancelled:
                    self.ui.summaryTextEdit.plainText = _("Cancelled; nothing was written or imported.")
                    return None
        except Exception:
            logging.getLogger("SegAlign").debug(message, exc_info=True)
            return None
