"""Static checks of the Slicer side of SegAlign: the module file, its Qt Designer panel, and the CMake files.

The Slicer application (Qt, PythonQt, CTK, DICOMLib, ScriptedLoadableModule, parameterNodeWrapper) cannot run
here, so nothing is loaded: SegAlign.py is read with ``ast``, the .ui with ElementTree, the CMake files with a
small tokenizer. What SegAlign uses is compared with

* facts about Slicer's source, written below as frozen sets (the test never reads Slicer's source: CI has none);
* the ``slicer-core`` wheel (Slicer's MRML classes and a copy of ``slicer/util.py``), where it is installed;
  only the tests that need it skip without it.

Every fact below was read from the Slicer source at commit 583e9b37d50ead7daf7b783dce465ccaecec8809
(2026-08-21, Slicer 5.13 development; the files cited beside each set).
"""

from __future__ import annotations

import ast
import inspect
import py_compile
import re
import unittest
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent
MODULE_DIR = REPOSITORY / "SegAlign"
MODULE_NAME = "SegAlign"
MODULE_FILE = MODULE_DIR / f"{MODULE_NAME}.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / f"{MODULE_NAME}.ui"
MODULE_CMAKE = MODULE_DIR / "CMakeLists.txt"
EXTENSION_CMAKE = REPOSITORY / "CMakeLists.txt"
LIB_DIR = MODULE_DIR / f"{MODULE_NAME}Lib"  #: the module's own package: panel, parameters, logic, self-test
PACKAGE_DIR = LIB_DIR / "segalign"  #: the engine shipped inside it
PARAMETER_NODE_CLASS = "SegAlignParameterNode"

# ------------------------------------------------------------------------------------------------------------------
# Facts about Qt (standard Qt 5 QtWidgets classes a Designer file may use without a <customwidget> entry).

QT_WIDGET_CLASSES = frozenset({
    "QWidget", "QFrame", "QLabel", "QPushButton", "QToolButton", "QCheckBox", "QRadioButton", "QComboBox",
    "QFontComboBox", "QLineEdit", "QTextEdit", "QPlainTextEdit", "QTextBrowser", "QSpinBox", "QDoubleSpinBox",
    "QDateEdit", "QTimeEdit", "QDateTimeEdit", "QSlider", "QScrollBar", "QDial", "QProgressBar", "QLCDNumber",
    "QGroupBox", "QTabWidget", "QStackedWidget", "QToolBox", "QScrollArea", "QSplitter", "QListWidget",
    "QTreeWidget", "QTableWidget", "QListView", "QTreeView", "QTableView", "QColumnView", "QDialogButtonBox",
    "QCommandLinkButton", "QKeySequenceEdit", "QCalendarWidget", "QGraphicsView", "QMdiArea",
})
QT_LAYOUT_CLASSES = frozenset({"QVBoxLayout", "QHBoxLayout", "QFormLayout", "QGridLayout", "QStackedLayout"})
#: Qt widget classes with the clicked(bool) signal (QAbstractButton and its subclasses), plus CTK buttons below.
QT_BUTTON_CLASSES = frozenset({"QPushButton", "QToolButton", "QCheckBox", "QRadioButton", "QCommandLinkButton"})
#: Non-widget Qt classes SegAlign.py may reach through ``qt.``.
QT_OTHER_CLASSES = frozenset({
    "QFileDialog", "QInputDialog", "QMessageBox", "QProgressDialog", "QTimer", "QColor", "QSettings", "QApplication",
    "QIcon", "QPixmap", "QSize", "QUrl", "QDesktopServices", "Qt",
})

# ------------------------------------------------------------------------------------------------------------------
# Facts about Slicer and CTK widgets.
#
# qMRML*: each has its header in Slicer's Libs/MRML/Widgets/ (qMRMLWidget.h, qMRMLNodeComboBox.h,
#   qMRMLSliderWidget.h, qMRMLSpinBox.h, qMRMLRangeWidget.h, qMRMLCheckableNodeComboBox.h,
#   qMRMLSegmentSelectorWidget.h).
# ctk*: CTK is not in Slicer's tree; each class is used as class="..." in Slicer's own .ui files, e.g.
#   ctkCollapsibleButton (Base/QTApp/Resources/UI/qSlicerMainWindow.ui),
#   ctkPathLineEdit (Applications/SlicerApp/Testing/Python/Resources/UI/ScenePerformanceTest.ui),
#   ctkCheckBox (Base/QTGUI/Resources/UI/qSlicerSettingsPythonPanel.ui),
#   ctkComboBox (Base/QTGUI/Resources/UI/qSlicerSettingsViewsPanel.ui),
#   ctkDirectoryButton (Base/QTGUI/Resources/UI/qSlicerSaveDataDialog.ui),
#   ctkCheckablePushButton (Base/QTGUI/Resources/UI/qSlicerSettingsModulesPanel.ui),
#   ctkSliderWidget (Base/QTGUI/Resources/UI/qSlicerSettingsDeveloperPanel.ui),
#   ctkDoubleSpinBox and ctkRangeWidget (Libs/MRML/Widgets/Resources/UI/...),
#   ctkDoubleSlider (Modules/Loadable/Colors/Widgets/Resources/UI/qMRMLColorLegendDisplayNodeWidget.ui),
#   ctkDoubleRangeSlider (Libs/MRML/Widgets/Resources/UI/qMRMLWindowLevelWidget.ui),
#   ctkColorPickerButton (Modules/Loadable/Markups/Resources/UI/qSlicerMarkupsSettingsPanel.ui).
SLICER_CTK_WIDGET_CLASSES = frozenset({
    "qMRMLWidget", "qMRMLNodeComboBox", "qMRMLSliderWidget", "qMRMLSpinBox", "qMRMLRangeWidget",
    "qMRMLCheckableNodeComboBox", "qMRMLSegmentSelectorWidget",
    "ctkCollapsibleButton", "ctkPathLineEdit", "ctkCheckBox", "ctkComboBox", "ctkDirectoryButton",
    "ctkCheckablePushButton", "ctkSliderWidget", "ctkDoubleSpinBox", "ctkDoubleSlider", "ctkRangeWidget",
    "ctkDoubleRangeSlider", "ctkColorPickerButton",
})
CTK_BUTTON_CLASSES = frozenset({"ctkCheckablePushButton", "ctkCheckBox", "ctkCollapsibleButton"})
#: qMRMLWidget.h declares the signal; qMRMLNodeComboBox.h the slot (and documents this very connection).
MRML_SCENE_SIGNAL = "mrmlSceneChanged(vtkMRMLScene*)"
MRML_SCENE_SLOT = "setMRMLScene(vtkMRMLScene*)"

# ------------------------------------------------------------------------------------------------------------------
# parameterNodeWrapper GUI connectors: Base/Python/slicer/parameterNodeWrapper/guiConnectors.py. Every connector
# tests ``type(widget)`` exactly (a subclass does not match) against these classes, for these annotated types.
# Optional[...] is only accepted for MRML nodes (isNodeOrUnionOfNodes); QComboBox/ctkComboBox represent
# int/float/str/bool only with a validators.Choice annotation (QComboBoxToStringableConnector).

GUI_CONNECTORS = {
    # QCheckBoxToBoolConnector, QCheckablePushButtonToBoolConnector, ctkCheckablePushButtonToBoolConnector
    "bool": frozenset({"QCheckBox", "ctkCheckBox", "QPushButton", "ctkCheckablePushButton"}),
    # QSliderOrSpinBoxToIntConnector + QDoubleSpinBoxCtkSliderWidgetToFloatIntConnector
    "int": frozenset({"QSlider", "QSpinBox", "QDoubleSpinBox", "ctkSliderWidget", "qMRMLSliderWidget",
                      "ctkDoubleSlider", "ctkDoubleSpinBox", "qMRMLSpinBox"}),
    "float": frozenset({"QDoubleSpinBox", "ctkSliderWidget", "qMRMLSliderWidget", "ctkDoubleSlider",
                        "ctkDoubleSpinBox", "qMRMLSpinBox"}),
    # QLineEditToStrConnector, QLabelToStrConnector, QTextEditPlainTextToStrConnector (QTextEdit, not QPlainTextEdit)
    "str": frozenset({"QLineEdit", "QLabel", "QTextEdit"}),
    # QComboBoxToEnumConnector
    "enum": frozenset({"QComboBox", "ctkComboBox"}),
    # ctkPathLineEditToPathConnector, ctkDirectoryButtonToPathConnector
    "path": frozenset({"ctkPathLineEdit", "ctkDirectoryButton"}),
    # qMRMLNodeComboBoxToNodeConnector (which also sets nodeTypes from the annotation)
    "node": frozenset({"qMRMLNodeComboBox"}),
    # ctkRangeWidgetToRangeConnector, ctkColorPickerButtonToQColorConnector
    "floatrange": frozenset({"ctkRangeWidget", "ctkDoubleRangeSlider", "qMRMLRangeWidget"}),
    "qcolor": frozenset({"ctkColorPickerButton"}),
}
CHOICE_COMBO_BOXES = frozenset({"QComboBox", "ctkComboBox"})
PATHLIB_TYPES = frozenset({"pathlib.Path", "pathlib.PosixPath", "pathlib.WindowsPath", "pathlib.PurePath",
                           "pathlib.PurePosixPath", "pathlib.PureWindowsPath"})
ENUM_BASES = frozenset({"enum.Enum", "enum.IntEnum", "enum.StrEnum", "enum.Flag", "enum.IntFlag"})
#: Base/Python/slicer/parameterNodeWrapper/wrapper.py: parameterNodeWrapper installs these on the wrapped class
#: (checkedSetAttr calls, and ``self.parameterNode`` in _initMethod), besides one property per field.
PARAMETER_NODE_WRAPPER_MEMBERS = frozenset({
    "parameterNode", "allParameters", "default", "isCached", "dataType", "getValue", "setValue", "connectGui",
    "connectParametersToGui", "disconnectGui", "StartModify", "EndModify", "AddObserver", "RemoveObserver",
    "Modified",
})

# ------------------------------------------------------------------------------------------------------------------
# Application-only Python API (Slicer's embedded Python; absent from slicer-core).

#: Base/Python/slicer/util.py: top-level public ``def`` names (slicer-core 5.13.31053's copy has the same names).
MIRROR_UTIL_FUNCTIONS = frozenset({
    "addParameterEditWidgetConnections", "addVolumeFromArray", "addVolumeFromITKImage", "array",
    "arrayFromGridTransform", "arrayFromGridTransformModified", "arrayFromMarkupsControlPointData",
    "arrayFromMarkupsControlPointDataModified", "arrayFromMarkupsControlPoints", "arrayFromMarkupsCurveData",
    "arrayFromMarkupsCurvePoints", "arrayFromModelCellData", "arrayFromModelCellDataModified",
    "arrayFromModelPointData", "arrayFromModelPointDataModified", "arrayFromModelPoints",
    "arrayFromModelPointsModified", "arrayFromModelPolyIds", "arrayFromSegment",
    "arrayFromSegmentBinaryLabelmap", "arrayFromSegmentInternalBinaryLabelmap", "arrayFromTableColumn",
    "arrayFromTableColumnModified", "arrayFromTransformMatrix", "arrayFromVTKMatrix", "arrayFromVolume",
    "arrayFromVolumeModified", "childWidgetVariables", "clickAndDrag", "computeChecksum",
    "confirmOkCancelDisplay", "confirmRetryCloseDisplay", "confirmYesNoDisplay", "createProgressDialog",
    "dataframeFromMarkups", "dataframeFromTable", "delayDisplay", "displayPythonShell",
    "downloadAndExtractArchive", "downloadFile", "errorDisplay", "executePythonModule", "exit", "exportNode",
    "extractAlgoAndDigest", "extractArchive", "findChild", "findChildren", "forceRenderAllViews",
    "getFilesInDirectory", "getFirstNodeByClassByName", "getFirstNodeByName", "getModule", "getModuleGui",
    "getModuleLogic", "getModuleWidget", "getNewModuleGui", "getNewModuleWidget", "getNode", "getNodes",
    "getNodesByClass", "getSubjectHierarchyItemChildren", "importClassesFromDirectory", "importModuleObjects",
    "importQtClassesFromDirectory", "importVTKClassesFromDirectory", "infoDisplay", "itkImageFromVolume",
    "itkImageFromVolumeModified", "launchConsoleProcess", "loadAnnotationFiducial", "loadAnnotationROI",
    "loadAnnotationRuler", "loadColorTable", "loadFiberBundle", "loadLabelVolume", "loadMarkups",
    "loadMarkupsClosedCurve", "loadMarkupsCurve", "loadMarkupsFiducialList", "loadModel", "loadNodeFromFile",
    "loadNodesFromFile", "loadScalarOverlay", "loadScene", "loadSegmentation", "loadSequence",
    "loadShaderProperty", "loadTable", "loadText", "loadTransform", "loadUI", "loadVolume", "logProcessOutput",
    "longPath", "lookupTopLevelWidget", "mainWindow", "messageBox", "moduleNames", "modulePath",
    "moduleSelector", "openAddColorTableDialog", "openAddDataDialog", "openAddFiberBundleDialog",
    "openAddFiducialDialog", "openAddMarkupsDialog", "openAddModelDialog", "openAddScalarOverlayDialog",
    "openAddSegmentationDialog", "openAddShaderPropertyDialog", "openAddTransformDialog", "openAddVolumeDialog",
    "openSaveDataDialog", "pip_install", "pip_uninstall", "plot", "pythonShell", "quit", "reloadScriptedModule",
    "removeParameterEditWidgetConnections", "resetSliceViews", "resetThreeDViews", "restart", "saveNode",
    "saveScene", "selectModule", "selectedModule", "setApplicationLogoVisible", "setDataProbeVisible",
    "setErrorLogVisible", "setMenuBarsVisible", "setModuleHelpSectionVisible", "setModulePanelTitleVisible",
    "setPythonConsoleVisible", "setSliceViewerLayers", "setStatusBarVisible", "setToolbarsVisible",
    "setViewControllersVisible", "settingsValue", "showStatusMessage", "sourceDir", "startQtDesigner",
    "startupEnvironment", "tempDirectory", "toBool", "toLatin1String", "toVTKString", "tryWithErrorDisplay",
    "updateMarkupsControlPointsFromArray", "updateNodeFromParameterEditWidgets",
    "updateParameterEditWidgetsFromNode", "updateSegmentBinaryLabelmapFromArray", "updateTableFromArray",
    "updateTransformMatrixFromArray", "updateVTKMatrixFromArray", "updateVolumeFromArray",
    "updateVolumeFromITKImage", "vtkMatrixFromArray", "warningDisplay",
})
#: Base/Python/slicer/util.py: top-level classes.
MIRROR_UTIL_CLASSES = frozenset({"LazyImport", "MRMLNodeNotFoundException", "NodeModify", "RenderBlocker",
                                 "VTKObservationMixin", "WaitCursor", "MessageDialog", "chdir"})

#: Base/Python/slicer/ScriptedLoadableModule.py: its classes, each with its methods and the ``self.X`` attributes
#: its methods assign. ScriptedLoadableModuleTest also derives from unittest.TestCase.
MIRROR_SCRIPTED_LOADABLE_MODULE = {
    "ScriptedLoadableModule": frozenset({
        "__init__", "getDefaultModuleDocumentationLink", "moduleName", "parent", "resourcePath", "runTest"}),
    "ScriptedLoadableModuleWidget": frozenset({
        "__init__", "_onModuleAboutToBeUnloaded", "cleanup", "developerMode", "editModuleUiButton",
        "editSourceButton", "layout", "moduleName", "onEditSource", "onReload", "onReloadAndTest", "onTest",
        "parent", "reloadButton", "reloadCollapsibleButton", "reloadTestAction", "reloadTestMenu",
        "reloadTestMenuButton", "resourcePath", "restartButton", "setup", "setupDeveloperSection", "testAction"}),
    "ScriptedLoadableModuleLogic": frozenset({
        "__init__", "createParameterNode", "getAllParameterNodes", "getParameterNode", "isSingletonParameterNode",
        "moduleName"}),
    "ScriptedLoadableModuleTest": frozenset({
        "__init__", "delayDisplay", "enableScreenshots", "moduleTestNames", "runTest", "screenshotScaleFactor",
        "setUp", "takeScreenshot", "tearDown"}),
}
#: Base/Python/slicer/util.py, class VTKObservationMixin: methods and assigned attributes.
MIRROR_VTK_OBSERVATION_MIXIN = frozenset({
    "__init__", "Observations", "removeObservers", "addObserver", "removeObserver", "getObserver", "hasObserver",
    "observer"})
#: Base/Python/slicer/i18n.py: top-level functions.
MIRROR_I18N = frozenset({"translate", "getContext", "tr"})
#: Base/Python/slicer/parameterNodeWrapper/__init__.py re-exports the __all__ of wrapper, default, guiConnectors,
#: guiCreation, parameterPack, serializers, types, validators, and five names of util.
MIRROR_PARAMETER_NODE_WRAPPER = frozenset({
    "parameterNodeWrapper", "SlicerParameterNamePropertyName", "findChildWidgetForParameter",
    "isParameterNodeWrapper", "Default", "createGuiConnector", "parameterNodeGuiConnector", "GuiConnector",
    "SlicerPackParameterNamePropertyName", "Decimals", "SingleStep", "GuiCreator", "createGui",
    "parameterNodeGuiCreator", "Label", "isParameterPack", "nestedParameterNames", "parameterPack",
    "parameterNodeSerializer", "Serializer", "ValidatedSerializer", "NumberSerializer", "StringSerializer",
    "PathSerializer", "BoolSerializer", "NodeSerializer", "ListSerializer", "TupleSerializer", "DictSerializer",
    "UnionSerializer", "AnySerializer", "QColorSerializer", "FloatRange", "Validator", "NotNone", "IsInstance",
    "WithinRange", "Minimum", "Maximum", "Choice", "Exclude", "RangeBounds", "findFirstAnnotation",
    "getNodeTypes", "isNodeOrUnionOfNodes", "splitAnnotations", "unannotatedType",
})
#: Base/Python/slicer/packaging.py (added for Slicer 5.12): top-level public functions.
MIRROR_PACKAGING = frozenset({"isPipInstallInProgress", "load_pyproject_dependencies", "load_requirements",
                              "pip_check", "pip_ensure", "pip_install", "pip_uninstall"})
#: Modules/Scripted/DICOMLib/__init__.py star-imports these submodules; DICOMUtils.py's public top-level names.
MIRROR_DICOMLIB_SUBMODULES = frozenset({
    "DICOMProcesses", "DICOMExportScalarVolume", "DICOMExportScene", "DICOMBrowser", "DICOMPlugin", "DICOMUtils",
    "DICOMPluginSelector", "DICOMRecentActivityWidget", "DICOMSendDialog"})
MIRROR_DICOM_UTILS = frozenset({
    "LoadDICOMFilesToDatabase", "TemporaryDICOMDatabase", "allSeriesUIDsInDatabase", "clearDatabase",
    "closeTemporaryDatabase", "createTemporaryDatabase", "deleteTemporaryDatabase",
    "getDatabasePatientUIDByPatientID", "getDatabasePatientUIDByPatientName", "getDefaultPluginClassNames",
    "getGlobalDICOMAuth", "getLoadablesFromFileLists", "getSortedImageFiles", "importDicom", "importFromDICOMWeb",
    "loadByInstanceUID", "loadLoadables", "loadPatient", "loadPatientByName", "loadPatientByPatientID",
    "loadPatientByUID", "loadSeriesByUID", "loadSeriesWithVerification", "openDatabase", "openTemporaryDatabase",
    "refreshDICOMWidget", "registerSlicerURLHandler", "removeEmptyDirs", "selectHighestConfidenceLoadables",
    "seriesUIDsForFiles"})


@dataclass(frozen=True)
class Signature:
    """Positional-or-keyword parameters in order, and whether **kwargs is accepted (no *args in these)."""

    params: tuple[str, ...]
    required: int
    var_keyword: bool = False


#: Signatures of application-only callables SegAlign.py calls (``self`` dropped), from
#: Modules/Scripted/DICOMLib/DICOMUtils.py, Base/Python/slicer/packaging.py, Base/Python/slicer/i18n.py.
MIRROR_SIGNATURES = {
    "DICOMUtils.importDicom": Signature(("dicomDataDir", "dicomDatabase", "copyFiles"), 1),
    "DICOMUtils.loadSeriesByUID": Signature(
        ("seriesUIDs", "messages", "progressCallback", "enabledPluginClassNames"), 1),
    "DICOMUtils.TemporaryDICOMDatabase": Signature(("directory",), 0),
    "packaging.pip_ensure": Signature(("requirements", "constraints", "skip_packages", "prompt_install",
                                       "prompt_restart", "requester", "skip_in_testing", "show_progress"), 1),
    "packaging.pip_install": Signature(("requirements", "constraints", "no_deps_requirements", "skip_packages",
                                        "blocking", "show_progress", "requester", "logCallback",
                                        "completedCallback"), 1),
    "i18n.tr": Signature(("text",), 1),
    "i18n.translate": Signature(("context", "text"), 2),
}

#: Attributes set on the ``slicer`` module by the application, with members verified in Slicer's Python:
#: ``slicer.app`` (Base/Python/slicerqt.py sets it; e.g. slicer.app.processEvents() in 24 Slicer .py files),
#: ``slicer.mrmlScene`` (slicerqt.py; a vtkMRMLScene: its members are checked against slicer-core),
#: ``slicer.modules`` (Base/Python/slicer/__init__.py creates it; e.g. slicer.modules.volumes.logic() in
#: Applications/SlicerApp/Testing/Python/CurvedPlanarReformationTest.py),
#: ``slicer.dicomDatabase`` (Modules/Scripted/DICOM/DICOM.py sets it; .isOpen in DICOM.py,
#: .fileForInstance in DICOMLib/DICOMUtils.py).
MIRROR_APPLICATION_ATTRIBUTES = {
    "app": frozenset({"processEvents", "testingEnabled", "setOverrideCursor", "restoreOverrideCursor",
                      "layoutManager", "defaultScenePath", "temporaryPath"}),  # qSlicerCoreApplication.h Q_PROPERTY
    # slicer.modules.<Module>Widget: set when the panel is made (qSlicerScriptedLoadableModuleWidget.cxx:180,
    # setModuleAttribute("slicer.modules", className)).
    "modules": frozenset({"volumes", "segmentations", "dicom", "data", "SegAlignWidget"}),
    "dicomDatabase": frozenset({"isOpen", "fileForInstance", "databaseDirectory"}),
    "mrmlScene": None,
}
#: Modules/Loadable/Volumes/Logic/vtkSlicerVolumesLogic.h: methods reached as slicer.modules.volumes.logic().X,
#: with their C++ argument counts (AddArchetypeVolume also has 2- and 3-argument overloads).
MIRROR_VOLUMES_LOGIC = {"AddArchetypeScalarVolume": {4}, "AddArchetypeVolume": {2, 3, 4}, "CloneVolume": {2, 3, 4}}
#: The Python files of Base/Python/slicer/ (submodules of the ``slicer`` package), and those imported when the
#: application starts: Base/Python/slicerqt.py imports slicer.util (``from slicer.util import *``) and slicer.cli;
#: slicer/__init__.py imports no submodule. Any other submodule is an attribute of ``slicer`` only once something
#: has imported it (the module template, Utilities/Templates/Modules/Scripted/TemplateKey.py, writes
#: ``import slicer.packaging`` before calling slicer.packaging.pip_ensure).
MIRROR_SLICER_SUBMODULES = frozenset({"ScriptedLoadableModule", "cli", "i18n", "logic", "packaging",
                                      "parameterNodeWrapper", "testing", "util"})
MIRROR_SLICER_SUBMODULES_IMPORTED_AT_STARTUP = frozenset({"util", "cli"})

# ------------------------------------------------------------------------------------------------------------------
# CMake macros: CMake/SlicerMacroBuildScriptedModule.cmake (options, one-value and multi-value keywords) and
# CMake/SlicerMacroPythonTesting.cmake (slicer_add_python_unittest).
SCRIPTED_MODULE_KEYWORDS = frozenset({"WITH_GENERIC_TESTS", "WITH_SUBDIR", "VERBOSE", "NAME", "SCRIPTS", "RESOURCES"})
PYTHON_UNITTEST_KEYWORDS = frozenset({"TESTNAME_PREFIX", "SCRIPT", "SLICER_ARGS"})
EXTENSION_VARIABLES = ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                       "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS")


# ==================================================================================================================
# Readers

def slicer_side_files() -> list[Path]:
    """The Slicer side: the module file and the module's own package (not the engine inside it)."""
    return [MODULE_FILE, *sorted(LIB_DIR.glob("*.py"))]


@lru_cache(maxsize=None)
def module_source() -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in slicer_side_files())


class _Absolute(ast.NodeTransformer):
    """``from .x import y`` inside SegAlignLib as the absolute import it is (``from SegAlignLib.x import y``;
    the engine, ``from .segalign.x``, as ``from segalign.x``, the name it has outside Slicer)."""

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.ImportFrom:
        if node.level == 1:
            module = node.module or ""
            if module == "segalign" or module.startswith("segalign."):
                absolute = module
            else:
                absolute = f"{LIB_DIR.name}.{module}" if module else LIB_DIR.name
            return ast.copy_location(ast.ImportFrom(module=absolute, names=node.names, level=0), node)
        return node


@lru_cache(maxsize=None)
def module_tree() -> ast.Module:
    """Every Slicer-side file's statements as one module (relative imports made absolute)."""
    body = []
    for path in slicer_side_files():
        tree = _Absolute().visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        body.extend(tree.body)
    return ast.Module(body=body, type_ignores=[])


@lru_cache(maxsize=None)
def top_level_classes() -> dict[str, ast.ClassDef]:
    return {node.name: node for node in module_tree().body if isinstance(node, ast.ClassDef)}


def dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


@lru_cache(maxsize=None)
def import_aliases() -> dict[str, str]:
    """Local name -> what it names (``{'_': 'slicer.i18n.tr', 'pathlib': 'pathlib', ...}``), anywhere in the file."""
    aliases = {}
    for node in ast.walk(module_tree()):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    aliases[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def resolve(name: str) -> str:
    """A dotted name with its first component replaced by what the file imported under that name."""
    head, _, rest = name.partition(".")
    origin = import_aliases().get(head, head)
    return f"{origin}.{rest}" if rest else origin


@lru_cache(maxsize=None)
def imports_from() -> list[tuple[str, str]]:
    """(module, name) for every ``from module import name`` in the file (functions included)."""
    return [(node.module, alias.name) for node in ast.walk(module_tree())
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 for alias in node.names]


@lru_cache(maxsize=None)
def attribute_chains() -> list[str]:
    """Every maximal Name.attr.attr chain in the file, e.g. ``slicer.util.loadUI``."""
    inner = set()
    for node in ast.walk(module_tree()):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
            inner.add(id(node.value))
    return [chain for node in ast.walk(module_tree())
            if isinstance(node, ast.Attribute) and id(node) not in inner and (chain := dotted(node))]


def chains_from(prefix: str) -> list[list[str]]:
    """Attribute chains starting at the module imported as ``prefix``, split, without the prefix."""
    out = []
    for chain in attribute_chains():
        parts = chain.split(".")
        if resolve(parts[0]) == prefix and len(parts) > 1:
            out.append(parts[1:])
    return out


def calls() -> list[tuple[str, ast.Call]]:
    """(resolved dotted callee, call) for every call with a dotted callee."""
    out = []
    for node in ast.walk(module_tree()):
        if isinstance(node, ast.Call) and (name := dotted(node.func)):
            out.append((resolve(name), node))
    return out


@lru_cache(maxsize=None)
def ui_root() -> ET.Element:
    return ET.parse(UI_FILE).getroot()


def ui_widgets() -> list[ET.Element]:
    return list(ui_root().iter("widget"))


def ui_widget_classes() -> dict[str, str]:
    return {w.get("name"): w.get("class") for w in ui_widgets()}


def ui_top_widget() -> ET.Element:
    return ui_root().find("widget")


def ui_property(widget: ET.Element, name: str) -> ET.Element | None:
    """A property element of the widget itself (not of its children)."""
    for prop in widget.findall("property"):
        if prop.get("name") == name:
            return prop
    return None


def ui_custom_widgets() -> dict[str, ET.Element]:
    return {cw.findtext("class"): cw for cw in ui_root().iterfind("customwidgets/customwidget")}


def ui_parameter_bindings() -> list[tuple[str, str, str]]:
    """(SlicerParameterName, widget name, widget class) for every widget with that dynamic property."""
    out = []
    for widget in ui_widgets():
        prop = ui_property(widget, "SlicerParameterName")
        if prop is not None:
            out.append((prop.findtext("string", default="").strip(), widget.get("name"), widget.get("class")))
    return out


# --- CMake ------------------------------------------------------------------------------------------------------

_CMAKE_TOKEN = re.compile(r'(?P<comment>#[^\n]*)|(?P<quoted>"(?:\\.|[^"\\])*")|(?P<open>\()|(?P<close>\))'
                          r'|(?P<space>\s+)|(?P<word>[^\s()#"]+)')


@dataclass
class CMakeCommand:
    name: str
    args: list[str] = field(default_factory=list)  # as written; quoted arguments keep their quotes


def parse_cmake(text: str) -> list[CMakeCommand]:
    commands, current, depth, pending = [], None, 0, None
    for match in _CMAKE_TOKEN.finditer(text):
        kind, value = match.lastgroup, match.group()
        if kind in ("comment", "space"):
            continue
        if current is None:
            if kind == "word":
                pending = value
            elif kind == "open" and pending:
                current, depth, pending = CMakeCommand(pending.lower()), 1, None
            continue
        if kind == "open":
            depth += 1
            current.args.append(value)
        elif kind == "close":
            depth -= 1
            if depth == 0:
                commands.append(current)
                current = None
            else:
                current.args.append(value)
        else:
            current.args.append(value)
    assert current is None, f"unbalanced parentheses in CMake command {current.name}"
    return commands


def cmake_expand(args: list[str], variables: dict[str, list[str]]) -> list[str]:
    """Expand ${VAR} (known variables only); an unquoted argument that expands to a list becomes several."""
    out = []
    for arg in args:
        quoted = arg.startswith('"')
        text = arg[1:-1] if quoted else arg
        for _ in range(10):
            new = re.sub(r"\$\{(\w+)\}", lambda m: ";".join(variables[m.group(1)]) if m.group(1) in variables
                         else m.group(0), text)
            if new == text:
                break
            text = new
        out.extend([text] if quoted else [part for part in text.split(";") if part])
    return out


def cmake_variables(commands: list[CMakeCommand]) -> dict[str, list[str]]:
    variables: dict[str, list[str]] = {}
    for command in commands:
        if command.name == "set" and command.args:
            variables[command.args[0]] = cmake_expand(command.args[1:], variables)
    return variables


@lru_cache(maxsize=None)
def module_cmake() -> tuple[list[CMakeCommand], dict[str, list[str]]]:
    commands = parse_cmake(MODULE_CMAKE.read_text(encoding="utf-8"))
    return commands, cmake_variables(commands)


@lru_cache(maxsize=None)
def extension_cmake() -> tuple[list[CMakeCommand], dict[str, list[str]]]:
    commands = parse_cmake(EXTENSION_CMAKE.read_text(encoding="utf-8"))
    return commands, cmake_variables(commands)


def cmake_calls(commands: list[CMakeCommand], name: str) -> list[CMakeCommand]:
    return [c for c in commands if c.name == name.lower()]


# --- slicer-core -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def slicer_core():
    slicer = pytest.importorskip("slicer", reason="slicer-core (Slicer's MRML classes) is not installed")
    try:
        from slicer import vtkMRMLScene  # noqa: F401  (the first MRML access loads the kits)
    except ImportError:
        pytest.skip("the installed 'slicer' package is not slicer-core (no vtkMRMLScene)")
    return slicer


# ==================================================================================================================
# 1. The .ui parses; top level; unique names

def test_ui_parses_with_a_qmrmlwidget_named_after_the_module():
    root = ui_root()
    assert root.tag == "ui"
    assert root.findtext("class") == MODULE_NAME, "<class> must be the module name"
    top = ui_top_widget()
    assert top is not None and top.get("class") == "qMRMLWidget" and top.get("name") == MODULE_NAME, (
        f"top-level widget is {top.get('class')} {top.get('name')!r}, expected qMRMLWidget {MODULE_NAME!r}")
    assert len(root.findall("widget")) == 1, "exactly one top-level widget"


def test_ui_object_names_are_unique():
    widget_names = [w.get("name") for w in ui_widgets()]
    assert all(widget_names), "every widget has a name"
    duplicates = sorted({n for n in widget_names if widget_names.count(n) > 1})
    assert not duplicates, f"duplicate widget names: {duplicates}"
    # childWidgetVariables maps every named child object to an attribute: layouts, spacers and actions too.
    names = widget_names + [e.get("name") for tag in ("layout", "spacer", "action") for e in ui_root().iter(tag)]
    duplicates = sorted({n for n in names if n and names.count(n) > 1})
    assert not duplicates, f"duplicate object names (widgets, layouts, spacers, actions): {duplicates}"


# ==================================================================================================================
# 2. self.ui.<name> in SegAlign.py exists in the .ui

def ui_attribute_uses() -> dict[str, list[int]]:
    uses: dict[str, list[int]] = {}
    for node in ast.walk(module_tree()):
        if isinstance(node, ast.Attribute) and dotted(node.value) == "self.ui":
            uses.setdefault(node.attr, []).append(node.lineno)
    return uses


def test_every_self_ui_name_is_a_widget_in_the_ui():
    uses = ui_attribute_uses()
    assert uses, "SegAlign.py uses no self.ui.<widget>: the check would be vacuous"
    widgets = set(ui_widget_classes())
    missing = {name: lines for name, lines in uses.items() if name not in widgets}
    assert not missing, f"self.ui names with no widget in {UI_FILE.name} (name: lines): {missing}"


def test_the_panel_is_loaded_from_the_ui_file_and_children_exposed_as_self_ui():
    loads = [c for name, c in calls() if name == "slicer.util.loadUI"]
    assert loads, "the widget must load its panel with slicer.util.loadUI"
    paths = [arg.args[0].value for c in loads for arg in c.args
             if isinstance(arg, ast.Call) and dotted(arg.func) == "self.resourcePath"
             and arg.args and isinstance(arg.args[0], ast.Constant)]
    assert paths == [f"UI/{UI_FILE.name}"], f"loadUI(self.resourcePath(...)) paths: {paths}"
    assert any(name == "slicer.util.childWidgetVariables" for name, _ in calls())


def test_resource_paths_exist():
    paths = [c.args[0].value for name, c in calls()
             if name == "self.resourcePath" and c.args and isinstance(c.args[0], ast.Constant)]
    assert paths
    missing = [p for p in paths if not (MODULE_DIR / "Resources" / p).is_file()]
    assert not missing, f"self.resourcePath(...) names files missing under SegAlign/Resources: {missing}"


# ==================================================================================================================
# 3. Widget classes: standard Qt or verified Slicer/CTK; <customwidgets> complete and well formed

def test_widget_and_layout_classes_are_qt_or_slicer_ctk():
    known = QT_WIDGET_CLASSES | SLICER_CTK_WIDGET_CLASSES
    unknown = {w.get("name"): w.get("class") for w in ui_widgets() if w.get("class") not in known}
    assert not unknown, f"widgets of classes neither standard Qt nor verified Slicer/CTK: {unknown}"
    layouts = {lay.get("name"): lay.get("class") for lay in ui_root().iter("layout")
               if lay.get("class") not in QT_LAYOUT_CLASSES}
    assert not layouts, f"unknown layout classes: {layouts}"


def test_custom_widgets_are_declared_with_their_headers():
    custom = ui_custom_widgets()
    for cls, element in custom.items():
        assert cls in SLICER_CTK_WIDGET_CLASSES, f"<customwidget> {cls} is not a verified Slicer/CTK class"
        assert element.findtext("header") == f"{cls}.h", f"{cls}: header {element.findtext('header')!r}"
        assert element.findtext("extends") in QT_WIDGET_CLASSES, f"{cls}: extends {element.findtext('extends')!r}"
    used = {w.get("class") for w in ui_widgets()} - QT_WIDGET_CLASSES
    undeclared = used - set(custom)
    assert not undeclared, f"non-Qt widget classes used but missing from <customwidgets>: {sorted(undeclared)}"


def test_custom_widgets_holding_children_are_containers():
    custom = ui_custom_widgets()
    for widget in ui_widgets():
        cls = widget.get("class")
        if cls in custom and (widget.find("widget") is not None or widget.find("layout") is not None):
            assert custom[cls].findtext("container") == "1", f"{cls} holds children but is not <container>1"


# ==================================================================================================================
# 4. MRML node combo boxes get the scene; their node types exist

def mrml_widgets() -> dict[str, str]:
    top = ui_top_widget().get("name")
    return {n: c for n, c in ui_widget_classes().items() if c.startswith("qMRML") and n != top}


def node_types(widget_name: str) -> list[str]:
    widget = next(w for w in ui_widgets() if w.get("name") == widget_name)
    prop = ui_property(widget, "nodeTypes")
    return [] if prop is None else [s.text.strip() for s in prop.iter("string") if s.text]


def test_mrml_widgets_receive_the_scene_from_the_top_level_widget():
    assert "qMRMLNodeComboBox" in mrml_widgets().values()
    top = ui_top_widget().get("name")
    connections = [(c.findtext("sender"), c.findtext("signal"), c.findtext("receiver"), c.findtext("slot"))
                   for c in ui_root().iterfind("connections/connection")]
    for name in mrml_widgets():
        matching = [c for c in connections if c[2] == name]
        assert matching.count((top, MRML_SCENE_SIGNAL, name, MRML_SCENE_SLOT)) == 1, (
            f"{name} must receive exactly one {top}.{MRML_SCENE_SIGNAL} -> {MRML_SCENE_SLOT}; has {matching}")
    names = set(ui_widget_classes())
    dangling = [c for c in connections if c[0] not in names or c[2] not in names]
    assert not dangling, f"connections naming no widget: {dangling}"


def test_the_module_gives_the_panel_the_scene():
    scene_calls = [c for name, c in calls() if name.endswith(".setMRMLScene")]
    assert any(c.args and dotted(c.args[0]) == "slicer.mrmlScene" for c in scene_calls), (
        "the widget must call uiWidget.setMRMLScene(slicer.mrmlScene), or the combo boxes stay empty")


def test_node_combo_boxes_declare_node_types():
    for name, cls in mrml_widgets().items():
        if cls == "qMRMLNodeComboBox":
            types = node_types(name)
            assert types, f"{name}: no nodeTypes"
            assert all(re.fullmatch(r"vtkMRML\w+Node", t) for t in types), f"{name}: nodeTypes {types}"


def test_node_types_exist_in_slicer_core(slicer_core):
    for name, cls in mrml_widgets().items():
        if cls == "qMRMLNodeComboBox":
            for node_type in node_types(name):
                assert hasattr(slicer_core, node_type), f"{name}: nodeType {node_type} is not an MRML class"
                assert issubclass(getattr(slicer_core, node_type), slicer_core.vtkMRMLNode), node_type


# ==================================================================================================================
# 5. Parameter node fields <-> SlicerParameterName widgets, through parameterNodeWrapper's GUI connectors

@dataclass
class FieldType:
    kind: str  # a GUI_CONNECTORS key, or "unsupported"
    text: str
    nodes: tuple[str, ...] = ()
    enum: str | None = None
    choice: bool = False


def enum_classes() -> dict[str, ast.ClassDef]:
    return {name: c for name, c in top_level_classes().items()
            if any(resolve(dotted(b) or "") in ENUM_BASES for b in c.bases)}


def classify(annotation: ast.AST) -> FieldType:
    text = ast.unparse(annotation)
    if isinstance(annotation, ast.Subscript):
        head = resolve(dotted(annotation.value) or "")
        elements = annotation.slice.elts if isinstance(annotation.slice, ast.Tuple) else [annotation.slice]
        if head in ("typing.Annotated", "typing_extensions.Annotated"):
            inner = classify(elements[0])
            inner.choice = any(isinstance(e, ast.Call) and resolve(dotted(e.func) or "").endswith("Choice")
                               for e in elements[1:])
            inner.text = text
            return inner
        if head in ("typing.Optional", "typing.Union"):
            members = elements + ([ast.Constant(None)] if head == "typing.Optional" else [])
            return classify_union(members, text)
        return FieldType("unsupported", text)
    if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
        members, stack = [], [annotation]
        while stack:
            node = stack.pop()
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
                stack += [node.left, node.right]
            else:
                members.append(node)
        return classify_union(members, text)
    name = dotted(annotation)
    if name is None:
        return FieldType("unsupported", text)
    origin = resolve(name)
    if origin in ("bool", "int", "float", "str"):
        return FieldType(origin, text)
    if origin in PATHLIB_TYPES:
        return FieldType("path", text)
    if origin.startswith("slicer.vtkMRML"):
        return FieldType("node", text, nodes=(origin.split(".", 1)[1],))
    if name in enum_classes():
        return FieldType("enum", text, enum=name)
    if origin.endswith("parameterNodeWrapper.FloatRange"):
        return FieldType("floatrange", text)
    if origin == "qt.QColor":
        return FieldType("qcolor", text)
    return FieldType("unsupported", text)


def classify_union(members: list[ast.AST], text: str) -> FieldType:
    kinds = [classify(m) for m in members if not (isinstance(m, ast.Constant) and m.value is None)]
    if kinds and all(k.kind == "node" for k in kinds):  # isNodeOrUnionOfNodes accepts None in the union
        return FieldType("node", text, nodes=tuple(n for k in kinds for n in k.nodes))
    return FieldType("unsupported", text)  # e.g. Path | None: unannotatedType is a Union, no connector matches


@lru_cache(maxsize=None)
def parameter_node_fields() -> dict[str, tuple[ast.AST, ast.AST | None]]:
    cls = top_level_classes().get(PARAMETER_NODE_CLASS)
    assert cls is not None, f"no class {PARAMETER_NODE_CLASS} in {MODULE_FILE.name}"
    assert any(resolve(dotted(d) or "") == "slicer.parameterNodeWrapper.parameterNodeWrapper"
               for d in cls.decorator_list), f"{PARAMETER_NODE_CLASS} is not decorated with @parameterNodeWrapper"
    return {s.target.id: (s.annotation, s.value) for s in cls.body
            if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}


def test_parameter_names_in_the_ui_are_fields_and_fields_have_one_widget():
    fields = parameter_node_fields()
    assert fields
    bindings = ui_parameter_bindings()
    unknown = [(p, w) for p, w, _ in bindings if p not in fields]
    assert not unknown, f"SlicerParameterName values naming no {PARAMETER_NODE_CLASS} field: {unknown}"
    for name in fields:
        widgets = [w for p, w, _ in bindings if p == name]
        assert len(widgets) == 1, f"field {name!r} is bound to {len(widgets)} widgets: {widgets}"
    for widget in ui_widgets():
        prop = ui_property(widget, "SlicerParameterName")
        if prop is not None:
            assert prop.get("stdset") == "0", f"{widget.get('name')}: SlicerParameterName must be dynamic (stdset=0)"


def test_each_bound_widget_can_represent_its_field_type():
    fields = parameter_node_fields()
    problems = []
    for parameter, widget, widget_class in ui_parameter_bindings():
        if parameter not in fields:
            continue
        ftype = classify(fields[parameter][0])
        allowed = set(GUI_CONNECTORS.get(ftype.kind, ()))
        if ftype.choice and ftype.kind in ("int", "float", "str", "bool"):
            allowed |= CHOICE_COMBO_BOXES
        if widget_class not in allowed:
            problems.append(f"{parameter}: {ftype.text} cannot be shown by {widget_class} {widget} "
                            f"(guiConnectors.py accepts {sorted(allowed) or 'no widget'})")
        if ftype.kind == "node" and sorted(node_types(widget)) != sorted(ftype.nodes):
            problems.append(f"{parameter}: {widget} nodeTypes {node_types(widget)} != annotation {list(ftype.nodes)}")
    assert not problems, "\n".join(problems)


def test_enum_fields_have_member_defaults_and_usable_labels():
    enums = enum_classes()
    for name, (annotation, default) in parameter_node_fields().items():
        ftype = classify(annotation)
        if ftype.kind != "enum":
            continue
        members = {t.id for s in enums[ftype.enum].body if isinstance(s, ast.Assign) for t in s.targets
                   if isinstance(t, ast.Name)}
        if default is not None:
            assert dotted(default) in {f"{ftype.enum}.{m}" for m in members}, f"{name}: default {ast.unparse(default)}"
        # QComboBoxToEnumConnector calls getattr(EnumClass, "label", lambda x: x.name)(member).
        label = next((f for f in enums[ftype.enum].body if isinstance(f, ast.FunctionDef) and f.name == "label"), None)
        if label is not None:
            assert not label.decorator_list and len(label.args.args) == 1, f"{ftype.enum}.label must be label(self)"


def test_node_fields_name_mrml_node_classes(slicer_core):
    for name, (annotation, _) in parameter_node_fields().items():
        ftype = classify(annotation)
        for node_class in ftype.nodes:
            cls = getattr(slicer_core, node_class, None)
            assert cls is not None and issubclass(cls, slicer_core.vtkMRMLNode), f"{name}: {node_class}"
            assert cls().GetClassName() == node_class  # what getNodeTypes() gives the combo box


def test_the_parameter_node_is_connected_to_the_panel_and_used_by_field_name():
    assert any(name.endswith(".connectGui") and c.args and dotted(c.args[0]) == "self.ui" for name, c in calls()), (
        "connectGui(self.ui) is never called: the SlicerParameterName bindings would do nothing")
    known = set(parameter_node_fields()) | PARAMETER_NODE_WRAPPER_MEMBERS
    bad = []
    for function in ast.walk(module_tree()):
        if not isinstance(function, ast.FunctionDef):
            continue
        aliases = {"self._parameterNode"} | {
            t.id for s in ast.walk(function) if isinstance(s, ast.Assign) and dotted(s.value) == "self._parameterNode"
            for t in s.targets if isinstance(t, ast.Name)}
        for node in ast.walk(function):
            if isinstance(node, ast.Attribute) and dotted(node.value) in aliases and node.attr not in known:
                bad.append(f"line {node.lineno}: {ast.unparse(node)}")
    assert not bad, f"parameter node attributes that are neither fields nor wrapper members: {bad}"


# ==================================================================================================================
# 6. Slicer Python API used by SegAlign.py

def util_names() -> tuple[set[str], set[str]]:
    """(names used as slicer.util.X, names imported from slicer.util)."""
    attributes = {parts[1] for parts in chains_from("slicer") if parts[0] == "util" and len(parts) > 1}
    imported = {name for module, name in imports_from() if module == "slicer.util"}
    return attributes, imported


def test_slicer_util_names_are_defined_in_slicers_util_py():
    attributes, imported = util_names()
    assert attributes, "no slicer.util.X found: the check would be vacuous"
    undefined = sorted(attributes - MIRROR_UTIL_FUNCTIONS)
    assert not undefined, f"slicer.util.X with no def X in Slicer's Base/Python/slicer/util.py: {undefined}"
    known = MIRROR_UTIL_FUNCTIONS | MIRROR_UTIL_CLASSES
    assert not imported - known, f"imported from slicer.util but not defined there: {sorted(imported - known)}"


def test_slicer_util_names_and_call_arguments_match_slicer_core(slicer_core):
    import slicer.util

    attributes, imported = util_names()
    missing = sorted(n for n in attributes | imported if not hasattr(slicer.util, n))
    assert not missing, f"not in slicer-core's slicer.util: {missing}"
    problems = []
    for name, call in calls():
        if not name.startswith("slicer.util.") or name.count(".") != 2:
            continue
        function = getattr(slicer.util, name.split(".")[2])
        if any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
            continue
        try:
            inspect.signature(function).bind(*[None] * len(call.args), **{k.arg: None for k in call.keywords})
        except TypeError as error:
            problems.append(f"line {call.lineno}: {ast.unparse(call.func)}(...): {error}")
    assert not problems, "\n".join(problems)


def test_slicer_vtk_classes_exist_in_slicer_core(slicer_core):
    names = {parts[0] for parts in chains_from("slicer") if parts[0].startswith("vtk")}
    names |= {name for module, name in imports_from() if module == "slicer" and name.startswith("vtk")}
    # class names passed as strings (getNodesByClass("..."), IsA("..."))
    names |= {n.value for n in ast.walk(module_tree())
              if isinstance(n, ast.Constant) and isinstance(n.value, str) and re.fullmatch(r"vtkMRML\w+", n.value)}
    assert names
    missing = sorted(n for n in names if not hasattr(slicer_core, n))
    assert not missing, f"not in slicer-core's slicer namespace: {missing}"


def test_vtk_names_exist():
    vtk = pytest.importorskip("vtk", reason="VTK (installed with slicer-core) is not installed")
    missing = []
    for parts in chains_from("vtk"):
        obj = vtk
        for part in parts:
            if not hasattr(obj, part):
                if obj is vtk or isinstance(obj, type):  # stop at instances' methods we cannot follow
                    missing.append(".".join(["vtk"] + parts))
                break
            obj = getattr(obj, part)
    assert not missing, f"missing in VTK: {missing}"


def test_mrml_scene_members_exist_in_slicer_core(slicer_core):
    members = {parts[1] for parts in chains_from("slicer") if parts[0] == "mrmlScene" and len(parts) > 1}
    assert members
    missing = sorted(m for m in members if not hasattr(slicer_core.vtkMRMLScene, m))
    assert not missing, f"slicer.mrmlScene.X not on vtkMRMLScene: {missing}"


def test_top_level_slicer_names_are_known():
    """slicer.X is a verified submodule, application attribute, or an MRML/VTK class (checked above)."""
    unknown = set()
    for parts in chains_from("slicer"):
        top = parts[0]
        if not (top in MIRROR_SLICER_SUBMODULES or top in MIRROR_APPLICATION_ATTRIBUTES or top.startswith("vtk")):
            unknown.add(top)
    for node in ast.walk(module_tree()):
        if (isinstance(node, ast.Call) and dotted(node.func) in ("getattr", "hasattr") and len(node.args) >= 2
                and dotted(node.args[0]) and resolve(dotted(node.args[0])) == "slicer"
                and isinstance(node.args[1], ast.Constant)):
            top = node.args[1].value
            if not (top in MIRROR_SLICER_SUBMODULES or top in MIRROR_APPLICATION_ATTRIBUTES):
                unknown.add(top)
    assert not unknown, f"unknown slicer.X names: {sorted(unknown)}"


def test_application_attribute_members_are_verified():
    problems = []
    for parts in chains_from("slicer"):
        top = parts[0]
        allowed = MIRROR_APPLICATION_ATTRIBUTES.get(top)
        if allowed is not None and len(parts) > 1 and parts[1] not in allowed:
            problems.append(f"slicer.{top}.{parts[1]}")
    # ``slicer.modules.volumes.logic().X(...)`` is a call on a call: find it directly
    for node in ast.walk(module_tree()):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Call)
                and dotted(node.func.value.func) == "slicer.modules.volumes.logic"):
            arities = MIRROR_VOLUMES_LOGIC.get(node.func.attr)
            if arities is None or len(node.args) not in arities:
                problems.append(f"line {node.lineno}: volumes logic {node.func.attr} with {len(node.args)} arguments")
    assert not problems, f"application attributes not verified in Slicer's source: {problems}"


def test_imports_from_application_only_modules_exist_in_slicer():
    known_modules = {
        "slicer.ScriptedLoadableModule": frozenset(MIRROR_SCRIPTED_LOADABLE_MODULE),
        "slicer.i18n": MIRROR_I18N,
        "slicer.parameterNodeWrapper": MIRROR_PARAMETER_NODE_WRAPPER,
        "slicer.packaging": MIRROR_PACKAGING,
        "DICOMLib": MIRROR_DICOMLIB_SUBMODULES,
        "DICOMLib.DICOMUtils": MIRROR_DICOM_UTILS,
    }
    checked, problems = 0, []
    for module, name in imports_from():
        if module in known_modules:
            checked += 1
            if name not in known_modules[module]:
                problems.append(f"from {module} import {name}")
    for parts in chains_from("DICOMLib.DICOMUtils"):
        checked += 1
        if parts[0] not in MIRROR_DICOM_UTILS:
            problems.append(f"DICOMUtils.{parts[0]}")
    for node in ast.walk(module_tree()):  # ``packaging = getattr(slicer, "packaging", None)``; packaging.X
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "packaging":
            checked += 1
            if node.attr not in MIRROR_PACKAGING:
                problems.append(f"packaging.{node.attr}")
        if (isinstance(node, ast.Call) and dotted(node.func) == "hasattr" and len(node.args) == 2
                and dotted(node.args[0]) == "packaging" and isinstance(node.args[1], ast.Constant)):
            if node.args[1].value not in MIRROR_PACKAGING:
                problems.append(f"hasattr(packaging, {node.args[1].value!r})")
    assert checked, "no application-only import found: the check would be vacuous"
    assert not problems, f"names not defined in Slicer's source: {problems}"


def test_application_only_calls_match_slicer_signatures():
    short = {"DICOMLib.DICOMUtils.": "DICOMUtils.", "slicer.packaging.": "packaging.", "slicer.i18n.": "i18n."}
    problems, checked = [], 0
    for name, call in calls():
        if name.startswith("packaging."):  # the local from getattr(slicer, "packaging", None)
            key = name
        else:
            key = next((name.replace(p, s, 1) for p, s in short.items() if name.startswith(p)), None)
        signature = MIRROR_SIGNATURES.get(key)
        if signature is None:
            continue
        checked += 1
        keywords = [k.arg for k in call.keywords]
        if any(isinstance(a, ast.Starred) for a in call.args) or None in keywords:
            continue
        positional = len(call.args)
        if positional > len(signature.params):
            problems.append(f"line {call.lineno}: {key} takes at most {len(signature.params)} positional arguments")
        for keyword in keywords:
            if keyword not in signature.params and not signature.var_keyword:
                problems.append(f"line {call.lineno}: {key} has no parameter {keyword!r}")
            elif keyword in signature.params[:positional]:
                problems.append(f"line {call.lineno}: {key} gets {keyword!r} twice")
        given = set(signature.params[:positional]) | set(keywords)
        if not set(signature.params[:signature.required]) <= given:
            problems.append(f"line {call.lineno}: {key} misses required arguments")
    assert checked >= 3, "expected calls to tr/translate and DICOMUtils: the check would be vacuous"
    assert not problems, "\n".join(problems)


def test_lazily_loaded_slicer_submodules_are_imported_before_use():
    """``slicer.X`` for a submodule the application does not import at startup is an AttributeError (or
    getattr's default) until something imports it: the file must import it itself."""
    imported = {module.split(".")[1] for module, _ in imports_from() if module.startswith("slicer.")}
    imported |= {name for module, name in imports_from() if module == "slicer"}
    for node in ast.walk(module_tree()):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[1] for a in node.names if a.name.startswith("slicer.")}
    used = {(parts[0], "slicer." + ".".join(parts)) for parts in chains_from("slicer")
            if parts[0] in MIRROR_SLICER_SUBMODULES}
    for node in ast.walk(module_tree()):
        if (isinstance(node, ast.Call) and dotted(node.func) in ("getattr", "hasattr") and len(node.args) >= 2
                and dotted(node.args[0]) == "slicer" and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in MIRROR_SLICER_SUBMODULES):
            used.add((node.args[1].value, f"line {node.lineno}: {ast.unparse(node)}"))
    lazy = sorted(where for sub, where in used
                  if sub not in MIRROR_SLICER_SUBMODULES_IMPORTED_AT_STARTUP and sub not in imported)
    assert not lazy, f"slicer submodules used without being imported (add 'import slicer.<name>'): {lazy}"


def test_translation_calls_take_one_literal():
    """tr(text) takes exactly one argument; format placeholders after translation, not inside tr()."""
    tr_names = {local for local, origin in import_aliases().items() if origin == "slicer.i18n.tr"}
    assert tr_names
    bad = []
    for node in ast.walk(module_tree()):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in tr_names:
            if len(node.args) != 1 or node.keywords or not isinstance(node.args[0], ast.Constant):
                bad.append(f"line {node.lineno}: {ast.unparse(node)[:80]}")
    assert not bad, "tr() calls that are not tr('literal'): " + "; ".join(bad)


# ==================================================================================================================
# 7. CMake files

def module_files_on_disk() -> tuple[set[str], set[str]]:
    """(every .py under SegAlign/, every other file that must ship: SegAlign/Resources/** and package data)."""

    def files(root: Path) -> list[Path]:
        return [p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                and not any(part.endswith(".egg-info") or part.startswith(".")
                            for part in p.relative_to(MODULE_DIR).parts)]

    scripts = {p.relative_to(MODULE_DIR).as_posix() for p in files(MODULE_DIR) if p.suffix == ".py"}
    resources = {p.relative_to(MODULE_DIR).as_posix() for p in files(MODULE_DIR / "Resources")}
    resources |= {p.relative_to(MODULE_DIR).as_posix() for p in files(PACKAGE_DIR) if p.suffix not in (".py", ".pyc")}
    return scripts, resources


def test_module_cmake_lists_every_script_and_resource():
    _, variables = module_cmake()
    assert variables.get("MODULE_NAME") == [MODULE_NAME]
    scripts = variables.get("MODULE_PYTHON_SCRIPTS", [])
    resources = variables.get("MODULE_PYTHON_RESOURCES", [])
    assert len(scripts) == len(set(scripts)) and len(resources) == len(set(resources)), "duplicate entries"
    # slicerMacroBuildScriptedModule accepts a script with or without ".py"
    listed_scripts = {s if s.endswith(".py") else s + ".py" for s in scripts}
    on_disk_scripts, needed_resources = module_files_on_disk()
    assert f"{MODULE_NAME}.py" in on_disk_scripts and any(s.startswith(f"{LIB_DIR.name}/segalign/") for s in on_disk_scripts)
    assert listed_scripts == on_disk_scripts, (
        f"MODULE_PYTHON_SCRIPTS: missing {sorted(on_disk_scripts - listed_scripts)}, "
        f"nonexistent {sorted(listed_scripts - on_disk_scripts)}")
    missing = sorted(needed_resources - set(resources))
    assert not missing, f"MODULE_PYTHON_RESOURCES misses files that must ship with the module: {missing}"
    nonexistent = sorted(r for r in resources if not (MODULE_DIR / r).is_file())
    assert not nonexistent, f"MODULE_PYTHON_RESOURCES lists files that do not exist: {nonexistent}"


def test_module_cmake_builds_the_scripted_module_and_registers_its_test():
    commands, variables = module_cmake()
    builds = cmake_calls(commands, "slicerMacroBuildScriptedModule")
    assert len(builds) == 1, "one slicerMacroBuildScriptedModule call"
    raw = builds[0].args
    keywords = [a for a in raw if re.fullmatch(r"[A-Z_]+", a)]
    assert set(keywords) <= SCRIPTED_MODULE_KEYWORDS, f"unknown keywords {set(keywords) - SCRIPTED_MODULE_KEYWORDS}"

    def after(keyword):
        return cmake_expand([raw[raw.index(keyword) + 1]], variables) if keyword in raw else None

    assert after("NAME") == [MODULE_NAME]
    assert raw[raw.index("SCRIPTS") + 1] == "${MODULE_PYTHON_SCRIPTS}"
    assert raw[raw.index("RESOURCES") + 1] == "${MODULE_PYTHON_RESOURCES}"
    tests = cmake_calls(commands, "slicer_add_python_unittest")
    expanded = [cmake_expand(t.args, variables) for t in tests]
    assert ["SCRIPT", f"{MODULE_NAME}.py"] in expanded, f"slicer_add_python_unittest calls: {expanded}"
    for args in expanded:
        assert {a for a in args if re.fullmatch(r"[A-Z_]+", a)} <= PYTHON_UNITTEST_KEYWORDS, args
    # the script registered as a test must hold the test case runUnitTest looks for: <name>Test
    assert f"{MODULE_NAME}Test" in top_level_classes()


def test_extension_cmake():
    commands, variables = extension_cmake()
    names = [c.name for c in commands]
    projects = cmake_calls(commands, "project")
    assert projects and projects[0].args[0] == MODULE_NAME, "project() names the extension"
    for variable in EXTENSION_VARIABLES:
        assert variables.get(variable) and all(v.strip() for v in variables[variable]), f"{variable} is not set"
    assert any(c.args[:2] == ["Slicer", "REQUIRED"] for c in cmake_calls(commands, "find_package"))
    includes = [c.args for c in cmake_calls(commands, "include")]
    for needed in ("${Slicer_USE_FILE}", "${Slicer_EXTENSION_GENERATE_CONFIG}", "${Slicer_EXTENSION_CPACK}"):
        assert [needed] in includes, f"include({needed}) is missing"
    subdirectories = [c.args for c in cmake_calls(commands, "add_subdirectory")]
    assert [MODULE_NAME] in subdirectories, "add_subdirectory(SegAlign) is missing"

    def index(name, args):
        return next(i for i, c in enumerate(commands) if c.name == name and c.args == args)

    find = next(i for i, c in enumerate(commands) if c.name == "find_package" and c.args[:1] == ["Slicer"])
    sub = index("add_subdirectory", [MODULE_NAME])
    assert find < index("include", ["${Slicer_USE_FILE}"]) < sub, "find_package(Slicer), include(USE_FILE), modules"
    generate = index("include", ["${Slicer_EXTENSION_GENERATE_CONFIG}"])
    assert sub < generate < index("include", ["${Slicer_EXTENSION_CPACK}"]), "GENERATE_CONFIG then CPACK, last"
    assert "cmake_minimum_required" == names[0]


def test_extension_urls_into_this_repository_exist():
    """Icon and screenshot URLs that point at this repository's files must name files that exist."""
    _, variables = extension_cmake()
    urls = [u for v in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS") for value in variables.get(v, [])
            for u in value.split()]
    missing = []
    for url in urls:
        match = re.fullmatch(r"https://raw\.githubusercontent\.com/[^/]+/[^/]+/[^/]+/(.+)", url)
        if match and not (REPOSITORY / match.group(1)).is_file():
            missing.append(f"{url} -> {match.group(1)}")
    assert not missing, f"extension metadata points at files not in the repository: {missing}"


# ==================================================================================================================
# 8. SegAlign.py: compiles; Slicer classes; self-test; connected slots and self.X exist

EXPECTED_CLASSES = {
    MODULE_NAME: "ScriptedLoadableModule",
    f"{MODULE_NAME}Widget": "ScriptedLoadableModuleWidget",
    f"{MODULE_NAME}Logic": "ScriptedLoadableModuleLogic",
    f"{MODULE_NAME}Test": "ScriptedLoadableModuleTest",
}


def test_module_file_compiles(tmp_path):
    py_compile.compile(str(MODULE_FILE), cfile=str(tmp_path / "SegAlign.pyc"), doraise=True)


def test_module_classes_derive_from_slicer_bases():
    classes = top_level_classes()
    for name, base in EXPECTED_CLASSES.items():
        assert name in classes, f"class {name} missing"
        bases = [resolve(dotted(b) or "") for b in classes[name].bases]
        assert f"slicer.ScriptedLoadableModule.{base}" in bases, f"{name} bases {bases}, expected {base}"


def class_members(cls: ast.ClassDef) -> set[str]:
    """Methods, class attributes, ``self.X = ...`` targets, and members of its known Slicer bases."""
    members = {s.name for s in cls.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))}
    members |= {t.id for s in cls.body if isinstance(s, ast.Assign) for t in s.targets if isinstance(t, ast.Name)}
    members |= {s.target.id for s in cls.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
    members |= {n.attr for n in ast.walk(cls) if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store)
                and isinstance(n.value, ast.Name) and n.value.id == "self"}
    for base in cls.bases:
        origin = resolve(dotted(base) or "")
        short = origin.rsplit(".", 1)[-1]
        if origin.startswith("slicer.ScriptedLoadableModule."):
            members |= MIRROR_SCRIPTED_LOADABLE_MODULE[short]
            if short == "ScriptedLoadableModuleTest":
                members |= set(dir(unittest.TestCase))
        elif origin == "slicer.util.VTKObservationMixin":
            members |= MIRROR_VTK_OBSERVATION_MIXIN
        elif short in top_level_classes():
            members |= class_members(top_level_classes()[short])
    return members


def test_every_self_attribute_is_defined():
    problems = []
    for name in EXPECTED_CLASSES:
        cls = top_level_classes()[name]
        members = class_members(cls)
        for node in ast.walk(cls):
            if (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load) and isinstance(node.value, ast.Name)
                    and node.value.id == "self" and node.attr not in members):
                problems.append(f"{name} line {node.lineno}: self.{node.attr}")
    assert not problems, "self.X never defined by the class or its Slicer bases: " + "; ".join(problems)


def test_connected_slots_are_widget_methods():
    widget = top_level_classes()[f"{MODULE_NAME}Widget"]
    methods = {s.name for s in widget.body if isinstance(s, ast.FunctionDef)}
    widgets = ui_widget_classes()
    connects, problems = 0, []
    for node in ast.walk(widget):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "connect"
                and len(node.args) == 2 and isinstance(node.args[0], ast.Constant)):
            continue
        connects += 1
        signal, slot = node.args[0].value, dotted(node.args[1]) or ""
        if not slot.startswith("self.") or slot[5:] not in methods:
            problems.append(f"line {node.lineno}: {signal} -> {slot} is not a method of {widget.name}")
        sender = dotted(node.func.value) or ""
        if signal == "clicked(bool)" and sender.startswith("self.ui."):
            cls = widgets.get(sender[8:])
            if cls not in QT_BUTTON_CLASSES | CTK_BUTTON_CLASSES:
                problems.append(f"line {node.lineno}: {sender} is a {cls}, which has no clicked(bool)")
    assert connects, "no .connect(signal, slot) calls found"
    assert not problems, "\n".join(problems)


def test_run_test_runs_every_test_method():
    test_class = top_level_classes()[f"{MODULE_NAME}Test"]
    tests = {s.name for s in test_class.body if isinstance(s, ast.FunctionDef) and s.name.startswith("test_")}
    assert tests, "the self-test has no test_ method"
    run = next((s for s in test_class.body if isinstance(s, ast.FunctionDef) and s.name == "runTest"), None)
    assert run is not None, "runTest is not defined"
    called = [dotted(n.func)[5:] for n in ast.walk(run)
              if isinstance(n, ast.Call) and (dotted(n.func) or "").startswith("self.")]
    assert tests <= set(called), f"runTest does not call {sorted(tests - set(called))}"
    assert "setUp" in called, "runTest must call self.setUp() (Slicer runs runTest, not unittest's runner)"


def test_imports_of_the_segalign_package_resolve():
    """``from segalign[.sub] import X`` in SegAlign.py: X is defined at the top of that package file."""

    def top_level_names(path: Path) -> set[str]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = set()
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        lazy = any(isinstance(node, ast.FunctionDef) and node.name == "__getattr__" for node in tree.body)
        for node in tree.body:  # a package that imports its public names when first used (PEP 562) lists them
            if lazy and isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
                names |= {element.value for element in node.value.elts if isinstance(element, ast.Constant)}
        return names

    found, problems = 0, []
    for module, name in imports_from():
        if module.split(".")[0] != "segalign":
            continue
        found += 1
        path = PACKAGE_DIR.joinpath(*module.split(".")[1:])
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        submodule = path.parent / f"{name}.py" if path.name == "__init__.py" else None
        if not path.is_file() or (name not in top_level_names(path) and not (submodule and submodule.is_file())):
            problems.append(f"from {module} import {name}")
    assert found
    assert not problems, f"unresolved: {problems}"
