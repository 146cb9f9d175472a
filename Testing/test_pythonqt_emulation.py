"""Fidelity of the Slicer GUI emulation (``pythonqt_emulation``, ``slicer_gui_emulation``): each test pins one
rule of PythonQt or of a Slicer stand-in that a module mistake would trip over in Slicer, so that the same mistake
fails here. The last test runs SegAlign's own widget through its life cycle."""

from __future__ import annotations

import enum
import functools
import pathlib
import subprocess
from typing import Annotated
from xml.etree import ElementTree

import pytest

pytest.importorskip("PySide6.QtWidgets",
                    reason="PySide6 is needed for the GUI emulation (pip install PySide6-Essentials)")
slicer = pytest.importorskip("slicer", reason="slicer-core is needed for the GUI emulation (pip install slicer-core)")
vtk = pytest.importorskip("vtk")

import pythonqt_emulation as pqt
from slicer_gui_emulation import WithinRange, slicer_gui

REPOSITORY = pathlib.Path(__file__).resolve().parent.parent
MODULE_FILE = REPOSITORY / "SegAlign" / "SegAlign.py"
UI_FILE = REPOSITORY / "SegAlign" / "Resources" / "UI" / "SegAlign.ui"


@pytest.fixture
def gui(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path):
    with slicer_gui(monkeypatch, tmp_path) as handle:
        yield handle


# ---------------------------------------------------------------------------------------------------------------
# Attributes


def test_properties_are_attributes_for_get_and_set(gui) -> None:
    qt = gui.qt
    widget = qt.QWidget()
    assert widget.enabled is True
    widget.enabled = False
    assert widget.isEnabled() is False, "the method is still there, and sees the property's change"
    progress = qt.QProgressDialog()
    progress.maximum = 10
    progress.value = 3
    assert qt.QProgressDialog.value(progress) == 3
    text = qt.QPlainTextEdit()
    text.plainText = "summary"
    assert text.toPlainText() == "summary" and text.plainText == "summary"
    widget.toolTip = "tip"
    assert widget.toolTip == "tip"
    progress.labelText = "Exporting..."  # its C++ setter calls the virtual sizeHint(), itself a property
    assert progress.labelText == "Exporting..." and progress.sizeHint.width() > 0


def test_a_property_wins_over_the_method_of_the_same_name(gui) -> None:
    qt = gui.qt
    progress, slider = qt.QProgressDialog(), qt.QSlider()
    progress.maximum = 7
    assert progress.maximum == 7
    with pytest.raises(TypeError, match="not callable"):
        slider.value()
    assert callable(progress.setWindowModality) and callable(progress.isEnabled)
    progress.setWindowModality(qt.Qt.ApplicationModal)
    assert progress.windowModality == qt.Qt.ApplicationModal


def test_a_misspelled_attribute_is_an_error_not_a_new_attribute(gui) -> None:
    qt = gui.qt
    progress = qt.QProgressDialog()
    assert progress.wasCanceled is False
    with pytest.raises(AttributeError, match="has no attribute named 'wasCancelled'"):
        _ = progress.wasCancelled
    box = qt.QPlainTextEdit()
    box.plainText = "before"
    with pytest.raises(AttributeError, match="creating new attributes on C\\+\\+ objects is not allowed"):
        box.text = "after"
    assert box.toPlainText() == "before", "what the box shows is unchanged"
    with pytest.raises(AttributeError, match="can not be overwritten"):
        box.setPlainText = None

    class Panel(qt.QWidget):  # a Python subclass may have attributes of its own, as in PythonQt
        pass

    panel = Panel()
    panel.helper = 3
    assert panel.helper == 3


def test_name_dynamic_properties_children_and_exec_underscore(gui) -> None:
    qt = gui.qt
    parent = qt.QWidget()
    child = qt.QPushButton(parent)
    child.name = "applyButton"
    assert child.objectName == "applyButton" and child.name == "applyButton"  # objectName is a property too
    assert parent.applyButton is child, "a direct child is found by its objectName"
    parent.setProperty("SlicerParameterName", "outputFolder")
    assert parent.SlicerParameterName == "outputFolder"
    parent.SlicerParameterName = "other"
    assert parent.property("SlicerParameterName") == "other"
    dialog = qt.QDialog()
    assert dialog.exec_ == dialog.exec
    assert child.className() == "QPushButton"
    assert slicer.util.findChildren(parent, className="QPush*") == [child]


def test_enums_are_reachable_pythonqt_style(gui) -> None:
    qt = gui.qt
    assert qt.QDialog.Accepted == 1 and qt.QDialog.Rejected == 0
    for value in (qt.Qt.WaitCursor, qt.QFile.ReadOnly, qt.Qt.ApplicationModal, qt.QMessageBox.Yes):
        assert value is not None


# ---------------------------------------------------------------------------------------------------------------
# Connections


def test_string_connect_resolves_the_signal_and_adapts_the_arguments(gui) -> None:
    qt = gui.qt
    button = qt.QPushButton()
    calls = []

    class Owner:
        def onClick(self):
            calls.append("method")

    assert button.connect("clicked(bool)", Owner().onClick) is True
    assert button.connect("clicked( bool )", lambda checked: calls.append(("lambda", checked))) is True
    assert button.connect("clicked(bool)", lambda *args: calls.append(("varargs", args))) is True
    assert button.connect("clicked(bool)", functools.partial(calls.append)) is True
    assert qt.QObject.connect(button, "toggled(bool)", calls.append) is True, "PythonQt's static form"
    button.click()
    assert calls == ["method", ("lambda", False), ("varargs", (False,)), False]


def test_a_misspelled_signal_connects_nothing(gui, capsys: pytest.CaptureFixture) -> None:
    qt = gui.qt
    button = qt.QPushButton()
    calls = []
    assert button.connect("clickd(bool)", lambda: calls.append(1)) is False
    assert "signal 'clickd(bool)' does not exist on QPushButton" in capsys.readouterr().err
    assert button.connect("clicked(int)", lambda: calls.append(2)) is False, "the signature must match too"
    assert type(button).staticMetaObject.indexOfSignal("clickd(bool)") == -1, "no dynamic signal was created"
    button.click()
    assert calls == []


def test_disconnect_removes_the_first_matching_connection(gui) -> None:
    qt = gui.qt
    button = qt.QPushButton()
    calls = []

    def slot():
        calls.append(1)

    button.connect("clicked(bool)", slot)
    button.connect("clicked(bool)", slot)
    assert button.disconnect("clicked(bool)", slot) is True
    button.click()
    assert calls == [1]


def test_an_exception_in_a_slot_is_printed_not_raised(gui) -> None:
    button = gui.qt.QPushButton()
    button.connect("clicked(bool)", lambda: 1 / 0)
    button.click()  # does not raise: PythonQt prints it and goes on
    assert [type(e) for e in gui.slot_errors] == [ZeroDivisionError]
    gui.slot_errors.clear()


# ---------------------------------------------------------------------------------------------------------------
# Dialogs


def test_modal_dialogs_return_the_real_codes(gui) -> None:
    qt = gui.qt
    dialog = qt.QDialog()
    gui.dialogs.answer(pqt.Reject())
    assert dialog.exec_() == qt.QDialog.Rejected
    gui.dialogs.answer(pqt.Accept())
    assert dialog.exec_() == qt.QDialog.Accepted
    chooser = qt.QInputDialog()
    chooser.setComboBoxItems(["first", "second"])
    chooser.setComboBoxEditable(False)
    gui.dialogs.answer(pqt.ChooseItem("second"))
    assert chooser.exec_() == qt.QDialog.Accepted and chooser.textValue() == "second"
    box = qt.QMessageBox()
    box.setStandardButtons(qt.QMessageBox.Yes | qt.QMessageBox.No)
    gui.dialogs.answer(pqt.PressButton(qt.QMessageBox.No))
    assert box.exec_() == qt.QMessageBox.No
    gui.dialogs.answer(pqt.ChooseFile("/data/dicom"))
    assert qt.QFileDialog.getExistingDirectory(None, "Folder") == "/data/dicom"
    assert qt.QInputDialog.getItem(None, "Series", "Choose", ["a", "b"], 1, False) == "b", \
        "unscripted: rejected, and PythonQt's getItem gives the current item on Cancel"
    assert gui.problems == ["unscripted modal QInputDialog.getItem 'Series': 'Choose'"]
    gui.dialogs.problems.clear()


def test_an_unscripted_modal_dialog_is_rejected_and_reported(gui) -> None:
    assert gui.qt.QDialog().exec_() == gui.qt.QDialog.Rejected
    assert gui.problems and "unscripted modal QDialog" in gui.problems[0]
    gui.dialogs.problems.clear()


def test_message_displays_are_recorded_and_questions_scripted(gui) -> None:
    gui.answer_confirm(False)
    assert slicer.util.confirmOkCancelDisplay("Install?") is False
    slicer.util.errorDisplay("broken")
    assert [(m.kind, m.text) for m in gui.messages] == [("confirmOkCancel", "Install?"), ("error", "broken")]
    with pytest.raises(RuntimeError), slicer.util.tryWithErrorDisplay("Failed.", waitCursor=True):
        raise RuntimeError("inner")
    assert gui.errors()[-1].startswith("Failed.\n\ninner")
    assert gui.app.overrideCursorDepth == 0 and gui.qt.QApplication.overrideCursor() is None


# ---------------------------------------------------------------------------------------------------------------
# The module's panel


def _ui_classes() -> dict[str, str]:
    root = ElementTree.parse(UI_FILE).getroot()
    named = {w.get("name"): w.get("class") for w in root.iter("widget")}
    named.update({layout.get("name"): layout.get("class") for layout in root.iter("layout")})
    return named


def test_load_ui_gives_every_named_child_with_its_class(gui) -> None:
    ui_widget = slicer.util.loadUI(str(UI_FILE))
    ui = slicer.util.childWidgetVariables(ui_widget)
    for name, class_name in _ui_classes().items():
        widget = getattr(ui, name)
        assert type(widget).__name__ == class_name, name
        owner = gui.ctk if class_name.startswith("ctk") else slicer if class_name.startswith("qMRML") else gui.qt
        assert type(widget) is getattr(owner, class_name), name
    assert ui.overlayOpacitySliderWidget.maximum == 1.0 and ui.overlayOpacitySliderWidget.decimals == 2
    assert ui.segmentationPathLineEdit.filters & gui.ctk.ctkPathLineEdit.Files
    assert ui.referenceVolumeSelector.nodeTypes == ["vtkMRMLScalarVolumeNode"]
    assert ui.writeMasksCheckBox.SlicerParameterName == "writeMasks"
    assert ui_widget.applyButton is ui.applyButton, "a direct child, found by name as PythonQt does"
    with pytest.raises(AttributeError):
        _ = ui_widget.writeMasksCheckBox  # a grandchild (inside a collapsible button) is not an attribute


def test_node_combo_boxes_list_the_scene_once_it_is_set(gui) -> None:
    scene = gui.scene
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT")
    scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")  # a child class: not listed
    hidden = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "hidden")
    hidden.SetHideFromEditors(True)
    ui_widget = slicer.util.loadUI(str(UI_FILE))
    ui = slicer.util.childWidgetVariables(ui_widget)
    selector = ui.referenceVolumeSelector
    assert selector.enabled is False, "no scene yet"
    ui_widget.setMRMLScene(scene)  # the .ui's connections pass it on to the combo boxes
    assert selector.enabled is True and selector.mrmlScene() is scene
    assert [selector.nodeFromIndex(i).GetName() for i in range(selector.nodeCount())] == ["CT"]
    assert selector.currentNode() is None, "None is first (noneEnabled)"
    later = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "later")
    assert selector.nodeCount() == 2
    seen = []
    selector.connect("currentNodeChanged(vtkMRMLNode*)", lambda node: seen.append(node))
    selector.connect("currentNodeChanged(bool)", lambda valid: seen.append(valid))
    selector.setCurrentNode(later)
    assert selector.currentNode() is later and selector.currentNodeID == later.GetID() and seen == [later, True]
    selector.setCurrentNode("no such ID")  # the deprecated QString overload: an unknown ID selects None
    assert selector.currentNode() is None
    selector.setCurrentNode(volume)
    selector.setCurrentNode(5)  # PythonQt converts it to the string "5": again an unknown ID, no exception
    assert selector.currentNode() is None
    selector.setCurrentNode(later)
    scene.RemoveNode(later)
    assert selector.currentNode() is not later and selector.nodeCount() == 1
    assert ui.segmentationSelector.nodeCount() == 0


def test_path_line_edit_signals_only_acceptable_paths(gui, tmp_path: pathlib.Path) -> None:
    ui = slicer.util.childWidgetVariables(slicer.util.loadUI(str(UI_FILE)))
    seen = []
    ui.outputFolderPathLineEdit.connect("currentPathChanged(QString)", seen.append)
    ui.outputFolderPathLineEdit.currentPath = str(tmp_path)
    ui.outputFolderPathLineEdit.setCurrentPath("")  # empty: not acceptable, so not signalled
    assert seen == [str(tmp_path)] and ui.outputFolderPathLineEdit.currentPath == ""
    tables = []
    ui.labelTablePathLineEdit.connect("currentPathChanged(QString)", tables.append)
    ui.labelTablePathLineEdit.currentPath = "labels.json"  # not among its name filters
    ui.labelTablePathLineEdit.currentPath = "labels.csv"
    assert tables == ["labels.csv"]


# ---------------------------------------------------------------------------------------------------------------
# Parameter node wrapper


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"

    def label(self) -> str:
        return self.value.capitalize()


def _wrapper_class():
    from slicer.parameterNodeWrapper import parameterNodeWrapper

    assert slicer.parameterNodeWrapper.WithinRange is WithinRange

    @parameterNodeWrapper
    class Parameters:
        volume: slicer.vtkMRMLScalarVolumeNode
        folder: pathlib.Path
        flag: bool = True
        count: int = 4
        opacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.4
        title: str = "a title"
        colour: Colour = Colour.GREEN

    return Parameters


def _parameter_node(gui):
    from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

    class DemoLogic(ScriptedLoadableModuleLogic):
        pass

    return DemoLogic().getParameterNode()


def test_the_parameter_node_is_the_modules_singleton(gui) -> None:
    node = _parameter_node(gui)
    assert node.GetSingletonTag() == "Demo" and node.GetAttribute("ModuleName") == "Demo"
    assert node.GetName() == "Demo" and node.IsA("vtkMRMLScriptedModuleNode")
    assert _parameter_node(gui) is node


def test_the_wrapper_stores_what_slicer_stores_and_survives_a_saved_scene(gui, tmp_path: pathlib.Path) -> None:
    from headless_slicer import headless_slicer

    Parameters = _wrapper_class()
    node = _parameter_node(gui)
    parameters = Parameters(node)
    assert [node.GetParameter(n) for n in ("flag", "count", "opacity", "title", "colour", "folder", "volume")] == \
        ["True", "4", "0.4", "a title", "GREEN", ".", ""], "defaults written when absent"
    volume = gui.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT")
    parameters.volume = volume
    parameters.folder = tmp_path / "out"
    parameters.flag, parameters.count, parameters.opacity = False, 7, 0.25
    parameters.title, parameters.colour = "other", Colour.RED
    assert node.GetNodeReferenceID("volume") == volume.GetID() and node.GetParameter("colour") == "RED"
    assert node.GetParameter("flag") == "False" and node.GetParameter("folder") == str(tmp_path / "out")
    with pytest.raises(ValueError, match="within range"):
        parameters.opacity = 1.5
    assert parameters.opacity == 0.25
    with pytest.raises(TypeError):
        parameters.count = "7"

    gui.scene.SetURL(str(tmp_path / "scene.mrml"))
    assert gui.scene.Commit()
    reloaded = headless_slicer()
    reloaded.scene.SetURL(str(tmp_path / "scene.mrml"))
    assert reloaded.scene.Connect()
    again = Parameters(reloaded.scene.GetSingletonNode("Demo", "vtkMRMLScriptedModuleNode"))
    assert (again.flag, again.count, again.opacity, again.title, again.colour, again.folder) == \
        (False, 7, 0.25, "other", Colour.RED, tmp_path / "out")
    assert again.volume.GetName() == "CT" and again.volume.GetID() == volume.GetID()


def test_gui_binding_works_both_ways(gui, tmp_path: pathlib.Path) -> None:
    from slicer.util import VTKObservationMixin

    Parameters = _wrapper_class()
    parameters = Parameters(_parameter_node(gui))
    volume = gui.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT")
    qt, ctk = gui.qt, gui.ctk
    panel = slicer.qMRMLWidget()
    widgets = {"flag": qt.QCheckBox(panel), "count": qt.QSpinBox(panel), "opacity": ctk.ctkSliderWidget(panel),
               "title": qt.QLineEdit(panel), "colour": qt.QComboBox(panel), "folder": ctk.ctkPathLineEdit(panel),
               "volume": slicer.qMRMLNodeComboBox(panel)}
    widgets["volume"].setMRMLScene(gui.scene)
    for name, widget in widgets.items():
        widget.setProperty("SlicerParameterName", name)
    modified = []

    class Observer(VTKObservationMixin):
        def onModified(self, caller, event):
            modified.append(event)

    observer = Observer()
    observer.addObserver(parameters, vtk.vtkCommand.ModifiedEvent, observer.onModified)
    tag = parameters.connectGui(panel)
    assert widgets["flag"].checked is True and widgets["opacity"].value == 0.4
    assert [widgets["colour"].itemText(i) for i in range(widgets["colour"].count)] == ["Red", "Green"]
    assert widgets["colour"].currentText == "Green" and widgets["title"].text == "a title"
    assert widgets["opacity"].maximum == 1.0, "WithinRange sets the slider's range"

    widgets["flag"].checked = False
    widgets["opacity"].value = 0.7
    widgets["colour"].currentIndex = 0
    widgets["title"].text = "typed"
    widgets["folder"].currentPath = str(tmp_path)
    widgets["volume"].setCurrentNode(volume)
    assert (parameters.flag, parameters.opacity, parameters.colour, parameters.title) == (False, 0.7, Colour.RED,
                                                                                         "typed")
    assert parameters.folder == tmp_path and parameters.volume is volume
    assert modified, "the wrapper's ModifiedEvent reaches an observer given the wrapper itself"

    parameters.count = 9
    parameters.volume = None
    assert widgets["count"].value == 9 and widgets["volume"].currentNode() is None
    parameters.disconnectGui(tag)
    widgets["flag"].checked = True
    assert parameters.flag is False, "disconnected"
    observer.removeObservers()


# ---------------------------------------------------------------------------------------------------------------
# packaging and DICOM


def test_pip_ensure_follows_slicers_control_flow(gui, tmp_path: pathlib.Path) -> None:
    import slicer.packaging

    assert slicer.packaging.pip_ensure(["numpy>=1"], requester="Demo") is None
    assert gui.messages == [], "satisfied: nothing asked"
    gui.answer_confirm(False)
    with pytest.raises(RuntimeError, match="User declined package installation"):
        slicer.packaging.pip_ensure(["no-such-package-segalign>=1"], requester="Demo")
    gui.answer_confirm(True)
    slicer.packaging.pip_ensure("no-such-package-segalign>=1", requester="Demo")
    assert gui.pip.installed == [["no-such-package-segalign>=1"]]
    gui.pip.fail = True
    gui.answer_confirm(True)
    with pytest.raises(subprocess.CalledProcessError):
        slicer.packaging.pip_ensure(["no-such-package-segalign>=1"])
    gui.app.setTestingEnabled(True)
    assert slicer.packaging.pip_ensure(["no-such-package-segalign>=1"]) is None
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# comment\n\n-r other.txt\nnibabel>=5.0,<6\n")
    assert [str(r) for r in slicer.packaging.load_requirements(requirements)] == ["nibabel<6,>=5.0"]


def test_load_series_by_uid_keeps_slicers_contracts(gui, tmp_path: pathlib.Path) -> None:
    from DICOMLib import DICOMUtils
    from segalign.synthetic import stack, write_series

    with pytest.raises(ValueError, match="SeriesUIDs must contain a list"):
        DICOMUtils.loadSeriesByUID("1.2.3")
    files = write_series(tmp_path / "dicom", stack((-20, -20, -10), 4, (0, 0, 2.0), rows=16, columns=16))
    database = slicer.dicomDatabase
    original = database.databaseFilename
    with DICOMUtils.TemporaryDICOMDatabase(str(tmp_path / "temporary")) as temporary:
        assert temporary is database and database.databaseFilename != original
        assert DICOMUtils.importDicom(str(tmp_path / "dicom"), copyFiles=True) is True
        series = database.seriesForFile(database.allFiles()[0])
        stored = database.filesForSeries(series)
        assert len(stored) == 4 and all(p.startswith(str(tmp_path / "temporary" / "dicom")) for p in stored)
        assert all(instance.copied for instance in database.added)
        node_ids = DICOMUtils.loadSeriesByUID([series])
        volume = gui.scene.GetNodeByID(node_ids[0])
        assert volume.IsA("vtkMRMLScalarVolumeNode") and len(volume.GetAttribute("DICOM.instanceUIDs").split()) == 4
    assert database.databaseFilename == original and database.allFiles() == []
    assert DICOMUtils.importDicom(str(tmp_path / "dicom")) is True, "linked, not copied"
    assert sorted(database.allFiles()) == sorted(str(f) for f in files)
    assert database.fileValue(str(files[0]), "0020,000E") == series
    with pytest.raises(TypeError):
        database.isOpen()  # a property in Slicer


# ---------------------------------------------------------------------------------------------------------------
# A real module


def test_segalign_widget_life_cycle(gui) -> None:
    """SegAlign's own module file: setup, enter, Apply with nothing selected, exit, cleanup."""
    gui.load_module(MODULE_FILE)
    assert slicer.modules.segalign.title == "SegAlign"
    widget = gui.create_widget("SegAlign")
    gui.enter("SegAlign")
    assert slicer.modules.segalign.widgetRepresentation().isEntered
    assert widget.ui.applyButton.enabled is False, "nothing selected"
    widget.ui.applyButton.click()  # a disabled button does nothing
    assert gui.progress_dialogs == [] and gui.messages == []
    node = widget.logic.getParameterNode()
    assert node.parameterNode.GetAttribute("ModuleName") == "SegAlign"
    assert widget.ui.outputFolderPathLineEdit.currentPath == str(node.outputFolder)
    gui.exit("SegAlign")
    gui.unload("SegAlign")
    assert gui.problems == []
