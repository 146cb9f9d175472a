"""A Slicer application around a scripted module's *widget*, for tests: real Qt with PythonQt's semantics
(``pythonqt_emulation``) over the ``slicer-core`` wheel (a real MRML scene, Volumes/Segmentations logic and a copy
of Slicer's own ``slicer.util``), plus stand-ins for what only the Slicer application has.

Entry point: :func:`slicer_gui`, a context manager that installs everything into ``sys.modules`` and onto the real
``slicer`` package for the duration of a test (``monkeypatch`` undoes it) and yields a :class:`SlicerGui` handle::

    with slicer_gui(monkeypatch, tmp_path) as gui:
        module = gui.load_module("SegAlign/SegAlign.py")
        widget = gui.create_widget("SegAlign")       # SegAlignWidget(parent); setup()
        gui.enter("SegAlign")
        widget.ui.applyButton.click()
        assert gui.messages == [] and gui.app.overrideCursorDepth == 0

What is Slicer's own code and what is emulated:

* **Real**: the MRML scene and node classes, ``vtkSlicerVolumesLogic`` (``Testing/headless_slicer.py``); the
  whole of ``slicer.util`` from slicer-core (``loadUI``, ``childWidgetVariables``, ``findChildren``,
  ``tryWithErrorDisplay``, ``VTKObservationMixin``, ``NodeModify``, ``getNodesByClass``, ``arrayFromVolume``,
  ``createProgressDialog``, ``settingsValue``...) running over the emulated ``qt``; Qt's widgets themselves.
* **Recorded instead of shown** (``slicer.util``): ``errorDisplay``, ``warningDisplay``, ``infoDisplay`` (in
  :attr:`SlicerGui.messages`); ``confirmOkCancelDisplay``/``confirmYesNoDisplay`` answer from
  :meth:`SlicerGui.answer_confirm` (in testing mode they return True, as Slicer's ``_messageDisplay`` does,
  util.py:3372-3446); ``setSliceViewerLayers``, ``delayDisplay``, ``reloadScriptedModule``;
  ``createProgressDialog`` is Slicer's own, its dialogs are kept in :attr:`SlicerGui.progress_dialogs`.
* **Reproduced from Slicer's source** (cited where they are defined below): ``slicer.ScriptedLoadableModule``,
  ``slicer.parameterNodeWrapper`` (the storage format on the real vtkMRMLScriptedModuleNode is reproduced from
  Base/Python/slicer/parameterNodeWrapper/serializers.py:236-420 and 1057-1104, the caching and GUI binding from
  wrapper.py:31-265 and guiConnectors.py:53-775; bool, int, float, str, pathlib paths, Enum and MRML node
  fields, with validators; unions, lists, parameter packs are not emulated),
  ``slicer.packaging.pip_ensure``/``load_requirements``, ``DICOMLib.DICOMUtils`` (``loadSeriesByUID``,
  ``importDicom``, ``TemporaryDICOMDatabase``), ``slicer.i18n``.
* **Stand-ins of C++ classes** (PythonQt direct-wrapper rules): ``slicer.app``, ``slicer.qMRMLWidget``,
  ``slicer.qMRMLNodeComboBox``, the module and module-widget parents, ``slicer.dicomDatabase``; ``ctk``'s
  ``ctkCollapsibleButton``, ``ctkPathLineEdit``, ``ctkSliderWidget``, ``ctkDICOMIndexer``.

Not emulated: views, layouts and the layout manager, subject hierarchy, DICOM plugins other than the scalar
volume loader, Slicer's developer ("Reload and Test") section.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import pathlib
import re
import shutil
import subprocess
import sys
import types
import typing
import unittest
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import pytest

QtCore = pytest.importorskip("PySide6.QtCore",
                             reason="PySide6 is needed for the GUI tests (pip install PySide6-Essentials)")
slicer = pytest.importorskip("slicer", reason="slicer-core is needed for the GUI tests (pip install slicer-core)")
vtk = pytest.importorskip("vtk")
pytest.importorskip("slicer.util")  # slicer-core's copy of Slicer's util.py, used as it is

import pythonqt_emulation as pqt
from pythonqt_emulation import QObject, cpp_class, set_private

QtWidgets = pqt.QtWidgets
QtGui = pqt.QtGui
Signal, Slot, Property = QtCore.Signal, QtCore.Slot, QtCore.Property


def _private(obj: Any) -> types.SimpleNamespace:
    return pqt._class_info(type(obj)).original_getattribute(obj, "_d")


# ===============================================================================================================
# ctk stand-ins (CTK: Libs/Widgets, Libs/DICOM/Core)


@cpp_class
class ctkCollapsibleButton(QtWidgets.QAbstractButton):
    """CTK's ctkCollapsibleButton (Libs/Widgets/ctkCollapsibleButton.h:48-151): a button that is also the
    container of a layout; ``collapsed`` hides its child widgets, emitting ``contentsCollapsed(bool)``."""

    contentsCollapsed = Signal(bool)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        set_private(self, "_d", types.SimpleNamespace(collapsed=False, collapsedHeight=14))
        QtWidgets.QAbstractButton.setCheckable(self, True)
        QtWidgets.QAbstractButton.setChecked(self, True)
        self.toggled.connect(lambda checked: self.setCollapsed(not checked))

    def paintEvent(self, event: QtGui.QPaintEvent) -> None:  # an abstract button: nothing to draw offscreen
        pass

    def _collapsed(self) -> bool:
        return _private(self).collapsed

    def setCollapsed(self, collapsed: bool) -> None:
        d = _private(self)
        if d.collapsed == bool(collapsed):
            return
        d.collapsed = bool(collapsed)
        QtWidgets.QAbstractButton.setChecked(self, not d.collapsed)
        for child in QObject.children(self):
            if isinstance(child, QtWidgets.QWidget):
                QtWidgets.QWidget.setVisible(child, not d.collapsed)
        self.contentsCollapsed.emit(d.collapsed)

    def _collapsed_height(self) -> int:
        return _private(self).collapsedHeight

    def setCollapsedHeight(self, height: int) -> None:
        _private(self).collapsedHeight = int(height)

    collapsed = Property(bool, _collapsed, setCollapsed, notify=contentsCollapsed)
    collapsedHeight = Property(int, _collapsed_height, setCollapsedHeight)


def _name_filters_pattern(name_filters: Sequence[str]) -> str:
    """The validator pattern ctkPathLineEdit derives from its name filters (CTK Libs/Core/ctkUtils.cpp:102-191,
    used by ctkPathLineEdit.cpp:386-393): each ``*.ext`` of each filter gives ``.*\\.ext?$`` (only the first word
    after the dot, and its last letter optional); patterns without ``*.`` (``*``) give nothing; no extension at
    all gives ``.+`` (any non-empty text)."""
    name_filter = re.compile(r"^(.*)\(([a-zA-Z0-9_.*? +;#\-\[\]@\{\}/!<>\$%&=^~:\|]*)\)$")
    wildcard = re.compile(r"^[\w\s\.\*\_\~\$\[\]]+$")
    parts = []
    for item in name_filters:
        match = name_filter.match(item)
        extensions = match.group(2).split() if match else ([item] if wildcard.match(item) else [])
        for extension in extensions:
            found = re.search(r"\*\.(\w+)", extension)
            if found:
                parts.append(r".*\." + found.group(1) + "?$")
    return "(" + "|".join(parts) + ")" if parts else ".+"


@cpp_class
class ctkPathLineEdit(QtWidgets.QWidget):
    """CTK's ctkPathLineEdit (Libs/Widgets/ctkPathLineEdit.h:71-125, 250-258): ``currentPath`` is the text of its
    line edit; ``currentPathChanged(QString)`` is emitted when the text changes *and is acceptable* to the
    validator built from ``nameFilters`` (ctkPathLineEdit.cpp:730-746), so an empty path is never signalled."""

    Dirs, Files, Drives, NoSymLinks, TypeMask = 0x001, 0x002, 0x004, 0x008, 0x00F
    Readable, Writable, Executable, PermissionMask = 0x010, 0x020, 0x040, 0x070
    Modified, Hidden, System, AccessMask = 0x080, 0x100, 0x200, 0x3F0
    AllDirs, CaseSensitive, NoDotAndDotDot, NoDot, NoDotDot = 0x400, 0x800, 0x1000, 0x2000, 0x4000

    currentPathChanged = Signal(str)
    validInputChanged = Signal(bool)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        line_edit = QtWidgets.QLineEdit(self)
        validator = QtGui.QRegularExpressionValidator(self)
        line_edit.setValidator(validator)
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(line_edit)
        set_private(self, "_d", types.SimpleNamespace(
            line_edit=line_edit, validator=validator, filters=self.AllEntries, name_filters=[], label="",
            valid=False, setting_key="", show_browse=True, show_history=True))
        self._update_filter()
        line_edit.textChanged.connect(self._update_valid_input)

    AllEntries = Dirs | Files | Drives

    def _update_filter(self) -> None:
        d = _private(self)
        d.validator.setRegularExpression(QtCore.QRegularExpression(_name_filters_pattern(d.name_filters)))

    def _update_valid_input(self, *_: Any) -> None:
        d = _private(self)
        old, d.valid = d.valid, QtWidgets.QLineEdit.hasAcceptableInput(d.line_edit)
        if d.valid:
            self.currentPathChanged.emit(self._current_path())
        if d.valid != old:
            self.validInputChanged.emit(d.valid)

    def _current_path(self) -> str:
        return QtWidgets.QLineEdit.text(_private(self).line_edit)

    @Slot(str)
    def setCurrentPath(self, path: str) -> None:
        QtWidgets.QLineEdit.setText(_private(self).line_edit, str(path))

    def _filters(self) -> int:
        return _private(self).filters

    def setFilters(self, filters: int) -> None:
        _private(self).filters = int(filters)

    def _name_filters(self) -> list[str]:
        return list(_private(self).name_filters)

    def setNameFilters(self, filters: Sequence[str]) -> None:
        _private(self).name_filters = [str(f) for f in filters]
        self._update_filter()

    def _label(self) -> str:
        return _private(self).label

    def setLabel(self, label: str) -> None:
        _private(self).label = str(label)

    def _setting_key(self) -> str:
        return _private(self).setting_key

    def setSettingKey(self, key: str) -> None:
        _private(self).setting_key = str(key)

    def _show_browse(self) -> bool:
        return _private(self).show_browse

    def setShowBrowseButton(self, show: bool) -> None:
        _private(self).show_browse = bool(show)

    def _show_history(self) -> bool:
        return _private(self).show_history

    def setShowHistoryButton(self, show: bool) -> None:
        _private(self).show_history = bool(show)

    def addCurrentPathToHistory(self) -> None:
        pass

    def retrieveHistory(self) -> None:
        pass

    currentPath = Property(str, _current_path, setCurrentPath, notify=currentPathChanged, user=True)
    filters = Property(int, _filters, setFilters)
    nameFilters = Property("QStringList", _name_filters, setNameFilters)
    label = Property(str, _label, setLabel)
    settingKey = Property(str, _setting_key, setSettingKey)
    showBrowseButton = Property(bool, _show_browse, setShowBrowseButton)
    showHistoryButton = Property(bool, _show_history, setShowHistoryButton)


@cpp_class
class ctkSliderWidget(QtWidgets.QWidget):
    """CTK's ctkSliderWidget (Libs/Widgets/ctkSliderWidget.h:51-67): a double spin box and slider;
    ``value``/``minimum``/``maximum``/``singleStep``/``pageStep``/``decimals`` are those of its spin box (which
    clamps and rounds, ctkSliderWidget.cpp:220-267, 455-463), ``valueChanged(double)`` is its signal."""

    valueChanged = Signal(float)
    valueIsChanging = Signal(float)
    decimalsChanged = Signal(int)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        spin = QtWidgets.QDoubleSpinBox(self)
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(spin)
        set_private(self, "_d", types.SimpleNamespace(spin=spin, tracking=True))
        spin.valueChanged.connect(self.valueChanged.emit)

    def _spin(self) -> QtWidgets.QDoubleSpinBox:
        return _private(self).spin

    def _value(self) -> float:
        return QtWidgets.QDoubleSpinBox.value(self._spin())

    @Slot(float)
    def setValue(self, value: float) -> None:
        QtWidgets.QDoubleSpinBox.setValue(self._spin(), float(value))

    def _minimum(self) -> float:
        return QtWidgets.QDoubleSpinBox.minimum(self._spin())

    def setMinimum(self, value: float) -> None:
        QtWidgets.QDoubleSpinBox.setMinimum(self._spin(), float(value))

    def _maximum(self) -> float:
        return QtWidgets.QDoubleSpinBox.maximum(self._spin())

    def setMaximum(self, value: float) -> None:
        QtWidgets.QDoubleSpinBox.setMaximum(self._spin(), float(value))

    def setRange(self, minimum: float, maximum: float) -> None:
        QtWidgets.QDoubleSpinBox.setRange(self._spin(), float(minimum), float(maximum))

    def _single_step(self) -> float:
        return QtWidgets.QDoubleSpinBox.singleStep(self._spin())

    def setSingleStep(self, value: float) -> None:
        QtWidgets.QDoubleSpinBox.setSingleStep(self._spin(), float(value))

    def _page_step(self) -> float:
        return 10 * self._single_step()

    def setPageStep(self, value: float) -> None:
        pass

    def _decimals(self) -> int:
        return QtWidgets.QDoubleSpinBox.decimals(self._spin())

    def setDecimals(self, value: int) -> None:
        QtWidgets.QDoubleSpinBox.setDecimals(self._spin(), int(value))
        self.decimalsChanged.emit(int(value))

    def _tracking(self) -> bool:
        return _private(self).tracking

    def setTracking(self, value: bool) -> None:
        _private(self).tracking = bool(value)

    def _prefix(self) -> str:
        return QtWidgets.QDoubleSpinBox.prefix(self._spin())

    def setPrefix(self, value: str) -> None:
        QtWidgets.QDoubleSpinBox.setPrefix(self._spin(), value)

    def _suffix(self) -> str:
        return QtWidgets.QDoubleSpinBox.suffix(self._spin())

    def setSuffix(self, value: str) -> None:
        QtWidgets.QDoubleSpinBox.setSuffix(self._spin(), value)

    value = Property(float, _value, setValue)
    minimum = Property(float, _minimum, setMinimum)
    maximum = Property(float, _maximum, setMaximum)
    singleStep = Property(float, _single_step, setSingleStep)
    pageStep = Property(float, _page_step, setPageStep)
    decimals = Property(int, _decimals, setDecimals, notify=decimalsChanged)
    tracking = Property(bool, _tracking, setTracking)
    prefix = Property(str, _prefix, setPrefix)
    suffix = Property(str, _suffix, setSuffix)


# ---------------------------------------------------------------------------------------------------------------
# DICOM database and indexer


def _tag_value(dataset: Any, tag: str) -> str:
    """A DICOM value as ctkDICOMDatabase returns it: the string form, multiple values joined with a backslash."""
    import pydicom

    group, element = (int(part, 16) for part in tag.split(","))
    item = dataset.get(pydicom.tag.Tag(group, element))
    if item is None or item.value is None:
        return ""
    value = item.value
    if isinstance(value, (list, pydicom.multival.MultiValue)):
        return "\\".join(str(v) for v in value)
    return str(value)


@dataclass
class DicomInstance:
    file: str  # where the database has it: the copy in the database folder, or the original (linked)
    source: str
    copied: bool
    patient: str
    study: str
    series: str
    sop: str


@cpp_class
class ctkDICOMDatabase(QObject):
    """``slicer.dicomDatabase``: CTK's ctkDICOMDatabase (Libs/DICOM/Core/ctkDICOMDatabase.h:62-241) over pydicom.
    ``isOpen``, ``databaseFilename``, ``databaseDirectory`` are properties (``isOpen()`` is an error, as in
    Slicer). Each database file keeps its own index for the process, so reopening one finds its content again.
    A copied file goes to ``<databaseDirectory>/dicom/<study>/<series>/<sop>.dcm`` (ctkDICOMDatabase.cpp:713)."""

    _indexes: dict[str, dict[str, DicomInstance]] = {}

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        set_private(self, "_d", types.SimpleNamespace(filename="", added=[]))

    def _index(self) -> dict[str, DicomInstance]:
        d = _private(self)
        if not d.filename:
            raise RuntimeError("ctkDICOMDatabase: the database is not open")
        return self._indexes.setdefault(d.filename, {})

    def _is_open(self) -> bool:
        return bool(_private(self).filename)

    def _filename(self) -> str:
        return _private(self).filename

    def _directory(self) -> str:
        return os.path.dirname(_private(self).filename) if _private(self).filename else ""

    def openDatabase(self, databaseFile: str, connectionName: str = "") -> bool:
        os.makedirs(os.path.dirname(str(databaseFile)) or ".", exist_ok=True)
        _private(self).filename = str(databaseFile)
        self._index()
        return True

    def closeDatabase(self) -> None:
        _private(self).filename = ""

    def initializeDatabase(self, schemaFile: str = "") -> bool:
        self._index().clear()
        return True

    @property
    def added(self) -> list[DicomInstance]:
        """Every instance inserted through this object, in order (test-side record, not a Slicer API)."""
        return _private(self).added

    def insert_file(self, path: str, copy: bool) -> DicomInstance | None:
        """Index one file as the CTK indexer does (not DICOM or without SOPInstanceUID: skipped)."""
        import pydicom

        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, OSError, ValueError):
            return None
        sop = str(header.get("SOPInstanceUID", "") or "")
        if not sop:
            return None
        study, series = str(header.get("StudyInstanceUID", "")), str(header.get("SeriesInstanceUID", ""))
        stored = os.path.abspath(path)
        if copy:
            stored = os.path.join(self._directory(), "dicom", study, series, sop + ".dcm")
            os.makedirs(os.path.dirname(stored), exist_ok=True)
            shutil.copyfile(path, stored)
        instance = DicomInstance(stored, os.path.abspath(path), copy, str(header.get("PatientID", "")), study,
                                 series, sop)
        self._index()[sop] = instance
        _private(self).added.append(instance)
        return instance

    def patients(self) -> list[str]:
        return sorted({i.patient for i in self._index().values()})

    def studiesForPatient(self, patient: str) -> list[str]:
        return sorted({i.study for i in self._index().values() if i.patient == patient})

    def seriesForStudy(self, study: str) -> list[str]:
        return sorted({i.series for i in self._index().values() if i.study == study})

    def instancesForSeries(self, series: str, hits: int = -1) -> list[str]:
        found = [i.sop for i in self._index().values() if i.series == series]
        return found if hits < 0 else found[:hits]

    def filesForSeries(self, series: str, hits: int = -1) -> list[str]:
        found = [i.file for i in self._index().values() if i.series == series]
        return found if hits < 0 else found[:hits]

    def fileForInstance(self, sop: str) -> str:
        instance = self._index().get(str(sop)) if self._is_open() else None
        return instance.file if instance else ""

    def instanceForFile(self, path: str) -> str:
        return next((i.sop for i in self._index().values() if i.file == str(path)), "")

    def seriesForFile(self, path: str) -> str:
        return next((i.series for i in self._index().values() if i.file == str(path)), "")

    def allFiles(self) -> list[str]:
        return [i.file for i in self._index().values()]

    def fileValue(self, path: str, tag: str) -> str:
        import pydicom

        if not path:
            return ""
        try:
            return _tag_value(pydicom.dcmread(path, stop_before_pixels=True), tag)
        except (pydicom.errors.InvalidDicomError, OSError):
            return ""

    def instanceValue(self, sop: str, tag: str) -> str:
        return self.fileValue(self.fileForInstance(sop), tag)

    isOpen = Property(bool, _is_open)
    databaseFilename = Property(str, _filename)
    databaseDirectory = Property(str, _directory)


@cpp_class
class ctkDICOMIndexer(QObject):
    """CTK's ctkDICOMIndexer (Libs/DICOM/Core/ctkDICOMIndexer.h:78-122): both the ``(db, ...)`` overloads "kept
    for backward compatibility" (which DICOMUtils.importDicom uses) and the ``setDatabase`` ones. Indexing is
    synchronous (background import disabled, the default); a database that is not open is an error."""

    progressStep = Signal(str)
    progressDetail = Signal(str)
    progress = Signal(int)
    indexingComplete = Signal(int, int, int, int)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        set_private(self, "_d", types.SimpleNamespace(database=None, background=False, follow=True))

    def setDatabase(self, database: ctkDICOMDatabase) -> None:
        _private(self).database = database

    def database(self) -> ctkDICOMDatabase | None:
        return _private(self).database

    def _split(self, args: tuple) -> tuple[ctkDICOMDatabase, tuple]:
        if args and isinstance(args[0], ctkDICOMDatabase):
            return args[0], args[1:]
        if args and args[0] is None:
            raise ValueError("ctkDICOMIndexer: no database given")
        database = _private(self).database
        if database is None:
            raise RuntimeError("ctkDICOMIndexer: no database set")
        return database, args

    def addDirectory(self, *args: Any) -> None:
        database, (directory, *rest) = self._split(args)
        copy = bool(rest[0]) if rest else False
        include_hidden = bool(rest[1]) if len(rest) > 1 else True
        if not database.isOpen:
            raise RuntimeError("ctkDICOMIndexer: the database is not open")
        files = []
        for root, folders, names in os.walk(str(directory), followlinks=_private(self).follow):
            if not include_hidden:
                folders[:] = [f for f in folders if not f.startswith(".")]
                names = [n for n in names if not n.startswith(".")]
            files += [os.path.join(root, n) for n in sorted(names)]
        self._add(database, files, copy)

    def addListOfFiles(self, *args: Any) -> None:
        database, (files, *rest) = self._split(args)
        self._add(database, list(files), bool(rest[0]) if rest else False)

    def addFile(self, *args: Any) -> None:
        database, (path, *rest) = self._split(args)
        self._add(database, [path], bool(rest[0]) if rest else False)

    def _add(self, database: ctkDICOMDatabase, files: list[str], copy: bool) -> None:
        if not database.isOpen:
            raise RuntimeError("ctkDICOMIndexer: the database is not open")
        self.progressStep.emit("Parsing DICOM files")
        for path in files:
            database.insert_file(str(path), copy)

    def waitForImportFinished(self, msecTimeout: int = -1) -> None:
        pass

    def _importing(self) -> bool:
        return False

    def _background(self) -> bool:
        return _private(self).background

    def setBackgroundImportEnabled(self, enabled: bool) -> None:
        _private(self).background = bool(enabled)

    importing = Property(bool, _importing)
    backgroundImportEnabled = Property(bool, _background, setBackgroundImportEnabled)


# ===============================================================================================================
# slicer widget stand-ins (Slicer: Libs/MRML/Widgets, Base/QTGUI)


@cpp_class
class qMRMLWidget(QtWidgets.QWidget):
    """Slicer's qMRMLWidget (Libs/MRML/Widgets/qMRMLWidget.h:45-71): ``setMRMLScene(vtkMRMLScene*)`` emits
    ``mrmlSceneChanged(vtkMRMLScene*)`` when the scene changes (qMRMLWidget.cxx:61-70)."""

    mrmlSceneChanged = Signal(object)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        set_private(self, "_d", types.SimpleNamespace(scene=None))

    def mrmlScene(self) -> Any:
        return _private(self).scene

    @Slot(object)
    def setMRMLScene(self, scene: Any) -> None:
        d = _private(self)
        if scene is d.scene:
            return
        d.scene = scene
        self.mrmlSceneChanged.emit(scene)


_SCENE_EVENTS = ("NodeAddedEvent", "NodeRemovedEvent", "EndBatchProcessEvent")
_live_combo_boxes: weakref.WeakSet[qMRMLNodeComboBox] = weakref.WeakSet()


@cpp_class
class qMRMLNodeComboBox(QtWidgets.QWidget):
    """Slicer's qMRMLNodeComboBox (Libs/MRML/Widgets/qMRMLNodeComboBox.h:59-375) over a real QComboBox.

    It lists the scene's nodes of ``nodeTypes`` (``showChildNodeTypes`` false: the exact class only;
    ``HideFromEditors`` nodes only with ``showHidden``; qMRMLSortFilterProxyModel.cxx:215-300), with "None" first
    when ``noneEnabled``; follows the scene's node additions and removals (Qt's own QComboBox rules choose the new
    current item); is disabled until it has a scene. ``setMRMLScene`` restores the current node without
    signalling (qMRMLNodeComboBox.cxx:790-867). ``setCurrentNode`` has the C++ overloads ``(vtkMRMLNode*)`` and the
    deprecated ``(const QString& nodeID)`` (:870-887): PythonQt converts anything that is not a node to a string
    (PythonQtConversion.cpp:823-858), so a wrong argument never raises but selects "None" (an unknown ID).
    Changes emit ``currentNodeChanged(vtkMRMLNode*)``, ``currentNodeChanged(bool)``,
    ``currentNodeIDChanged(QString)`` in that order (:719-740)."""

    currentNodeChanged = Signal((object,), (bool,))
    currentNodeIDChanged = Signal(str)
    nodeActivated = Signal(object)
    nodeAdded = Signal(object)
    nodeAboutToBeRemoved = Signal(object)
    currentNodeRenamed = Signal(str)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        combo = QtWidgets.QComboBox(self)
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(combo)
        set_private(self, "_d", types.SimpleNamespace(
            combo=combo, scene=None, observers=[], node_types=[], show_hidden=False, show_child_types=True,
            hide_child_types=[], none_enabled=False, add_enabled=True, remove_enabled=True, edit_enabled=False,
            rename_enabled=False, select_upon_creation=True, none_display="None", base_name="", attributes={},
            switching=False, requested_id="", requested_node=None))
        combo.currentIndexChanged.connect(self._emit_current_node_changed)
        QtWidgets.QWidget.setEnabled(self, False)  # qMRMLNodeComboBox.cxx:124
        _live_combo_boxes.add(self)

    # -- model --------------------------------------------------------------------------------------------------

    def _combo(self) -> QtWidgets.QComboBox:
        return _private(self).combo

    def _accepts(self, node: Any) -> bool:
        d = _private(self)
        if not d.show_hidden and node.GetHideFromEditors():
            return False
        if not d.node_types:
            return True
        for node_type in d.node_types:
            if not node.IsA(node_type):
                continue
            if not d.show_child_types and node_type != node.GetClassName():
                continue
            if d.show_child_types and any(node.IsA(hidden) for hidden in d.hide_child_types):
                return False
            for name, value in d.attributes.get(node_type, []):
                if node.GetAttribute(name) != (None if value is None else str(value)):
                    break
            else:
                return True
        return False

    def _scene_nodes(self) -> list[Any]:
        scene = _private(self).scene
        if scene is None:
            return []
        return [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())
                if scene.GetNthNode(i) is not None and self._accepts(scene.GetNthNode(i))]

    def _first_node_row(self) -> int:
        return 1 if _private(self).none_enabled else 0

    def _refresh(self) -> None:
        """Bring the items in line with the scene: remove gone nodes, append new ones (QComboBox picks the new
        current item itself, as with the scene model's rows)."""
        d = _private(self)
        combo = d.combo
        wanted = self._scene_nodes()
        wanted_ids = [n.GetID() for n in wanted]
        row = self._first_node_row()
        while row < QtWidgets.QComboBox.count(combo):
            if combo.itemData(row) not in wanted_ids:
                combo.removeItem(row)
            else:
                row += 1
        present = [combo.itemData(r) for r in range(self._first_node_row(), QtWidgets.QComboBox.count(combo))]
        for node in wanted:
            if node.GetID() in present:
                combo.setItemText(combo.findData(node.GetID()), node.GetName() or "")
            else:
                combo.addItem(node.GetName() or "", node.GetID())
                self.nodeAdded.emit(node)

    def _on_scene_event(self, event: str) -> None:
        scene = _private(self).scene
        if scene is None or (scene.IsBatchProcessing() and event != "EndBatchProcessEvent"):
            return
        try:
            self._refresh()
        except RuntimeError:  # the C++ widget is gone
            pass

    def _node_at(self, row: int) -> Any:
        d = _private(self)
        node_id = d.combo.itemData(row) if row >= 0 else None
        return d.scene.GetNodeByID(node_id) if (d.scene is not None and node_id) else None

    def _emit_current_node_changed(self, row: int) -> None:
        if _private(self).switching:
            return
        node = self._node_at(row)
        self.currentNodeChanged[object].emit(node)
        self.currentNodeChanged[bool].emit(node is not None)
        self.currentNodeIDChanged.emit(node.GetID() if node is not None else "")

    def _set_current_id(self, node_id: str) -> None:
        combo = self._combo()
        row = combo.findData(node_id) if node_id else -1
        if row < 0:
            row = 0 if _private(self).none_enabled else -1
        combo.setCurrentIndex(row)

    # -- API ----------------------------------------------------------------------------------------------------

    def mrmlScene(self) -> Any:
        return _private(self).scene

    @Slot(object)
    def setMRMLScene(self, scene: Any) -> None:
        d = _private(self)
        if scene is d.scene:
            return
        old_current = self._current_node_id()
        previous_valid = self.nodeCount() > 0
        for tag in d.observers:
            d.scene.RemoveObserver(tag)
        d.observers = []
        d.switching = True
        d.scene = scene
        try:
            d.combo.clear()
            if d.none_enabled:
                d.combo.addItem(d.none_display, None)
            self._refresh()
        finally:
            d.switching = False
        if scene is not None:
            d.observers = [scene.AddObserver(getattr(slicer.vtkMRMLScene, event),
                                             lambda caller, _, event=event: self._on_scene_event(event))
                           for event in _SCENE_EVENTS]
        if previous_valid:
            self._set_current_id(old_current)
        else:
            new_id = self._current_node_id()
            if d.requested_id:
                new_id = d.requested_id
            elif d.requested_node is not None and d.requested_node.GetID():
                new_id = d.requested_node.GetID()
            self._set_current_id(new_id)
        d.requested_id, d.requested_node = "", None
        QtWidgets.QWidget.setEnabled(self, scene is not None)

    def currentNode(self) -> Any:
        return self._node_at(QtWidgets.QComboBox.currentIndex(self._combo()))

    def _current_node_id(self) -> str:
        node = self.currentNode()
        return node.GetID() if node is not None else ""

    @Slot(object)
    def setCurrentNode(self, node: Any) -> None:
        d = _private(self)
        if node is None or isinstance(node, slicer.vtkMRMLNode):
            if d.scene is None:
                d.requested_id, d.requested_node = "", node
            self._set_current_id(node.GetID() if node is not None else "")
            return
        print("This function is deprecated. Use setCurrentNodeID() instead", file=sys.stderr)
        self.setCurrentNodeID(str(node))

    @Slot(str)
    def setCurrentNodeID(self, node_id: str) -> None:
        d = _private(self)
        if d.scene is None:
            d.requested_id, d.requested_node = str(node_id), None
        self._set_current_id(str(node_id))

    @Slot(int)
    def setCurrentNodeIndex(self, index: int) -> None:
        if index >= self.nodeCount():
            index = -1
        if _private(self).none_enabled:
            index += 1
        self._combo().setCurrentIndex(index)

    def nodeCount(self) -> int:
        if _private(self).scene is None:
            return 0
        return max(0, QtWidgets.QComboBox.count(self._combo()) - self._first_node_row())

    def nodeFromIndex(self, index: int) -> Any:
        return self._node_at(index + self._first_node_row())

    def addAttribute(self, nodeType: str, attributeName: str, attributeValue: Any = None) -> None:
        _private(self).attributes.setdefault(nodeType, []).append((attributeName, attributeValue))
        self._refresh()

    def removeAttribute(self, nodeType: str, attributeName: str) -> None:
        attributes = _private(self).attributes.get(nodeType, [])
        attributes[:] = [a for a in attributes if a[0] != attributeName]
        self._refresh()

    def addNode(self, nodeType: str | None = None) -> Any:
        d = _private(self)
        node_type = nodeType or (d.node_types[0] if d.node_types else None)
        if d.scene is None or node_type is None:
            return None
        node = d.scene.AddNewNodeByClass(node_type, d.base_name or "")
        if d.select_upon_creation:
            self.setCurrentNode(node)
        return node

    def removeCurrentNode(self) -> None:
        _private(self).scene.RemoveNode(self.currentNode())

    # -- properties ---------------------------------------------------------------------------------------------

    def _setter(attribute: str, refresh: bool = False) -> Callable:
        def setter(self: qMRMLNodeComboBox, value: Any) -> None:
            setattr(_private(self), attribute, list(value) if isinstance(value, (list, tuple)) else value)
            if refresh and _private(self).scene is not None:
                self._refresh()

        return setter

    def _getter(attribute: str) -> Callable:
        return lambda self: getattr(_private(self), attribute)

    def setNoneEnabled(self, enabled: bool) -> None:
        d = _private(self)
        enabled = bool(enabled)
        if enabled == d.none_enabled:
            return
        d.none_enabled = enabled
        if enabled:
            d.combo.insertItem(0, d.none_display, None)
        elif QtWidgets.QComboBox.count(d.combo) and d.combo.itemData(0) is None:
            d.combo.removeItem(0)

    def setNodeTypes(self, types_: Sequence[str]) -> None:
        _private(self).node_types = [str(t) for t in types_]
        if _private(self).scene is not None:
            self._refresh()

    setShowHidden = _setter("show_hidden", refresh=True)
    setShowChildNodeTypes = _setter("show_child_types", refresh=True)
    setHideChildNodeTypes = _setter("hide_child_types", refresh=True)
    setAddEnabled = _setter("add_enabled")
    setRemoveEnabled = _setter("remove_enabled")
    setEditEnabled = _setter("edit_enabled")
    setRenameEnabled = _setter("rename_enabled")
    setSelectNodeUponCreation = _setter("select_upon_creation")
    setNoneDisplay = _setter("none_display")
    setBaseName = _setter("base_name")

    nodeTypes = Property("QStringList", _getter("node_types"), setNodeTypes)
    showHidden = Property(bool, _getter("show_hidden"), setShowHidden)
    showChildNodeTypes = Property(bool, _getter("show_child_types"), setShowChildNodeTypes)
    hideChildNodeTypes = Property("QStringList", _getter("hide_child_types"), setHideChildNodeTypes)
    baseName = Property(str, _getter("base_name"), setBaseName)
    noneEnabled = Property(bool, _getter("none_enabled"), setNoneEnabled)
    addEnabled = Property(bool, _getter("add_enabled"), setAddEnabled)
    removeEnabled = Property(bool, _getter("remove_enabled"), setRemoveEnabled)
    editEnabled = Property(bool, _getter("edit_enabled"), setEditEnabled)
    renameEnabled = Property(bool, _getter("rename_enabled"), setRenameEnabled)
    selectNodeUponCreation = Property(bool, _getter("select_upon_creation"), setSelectNodeUponCreation)
    noneDisplay = Property(str, _getter("none_display"), setNoneDisplay)
    currentNodeID = Property(str, _current_node_id, setCurrentNodeID, notify=currentNodeIDChanged)
    del _setter, _getter


@cpp_class
class qSlicerScriptedLoadableModule(QObject):
    """The ``parent`` of a ScriptedLoadableModule: Slicer's qSlicerScriptedLoadableModule
    (Base/QTGUI/qSlicerScriptedLoadableModule.h:37-48, writable metadata) on qSlicerAbstractCoreModule
    (Base/QTCore/qSlicerAbstractCoreModule.h:78-192, read-only ``name`` and ``path``)."""

    def __init__(self, name: str, path: str) -> None:
        super().__init__()
        set_private(self, "_d", types.SimpleNamespace(
            name=name, path=path, title="", categories=[], contributors=[], associatedNodeTypes=[], helpText="",
            acknowledgementText="", icon=QtGui.QIcon(), hidden=False, dependencies=[], index=-1, widget=None,
            module=None))

    def widgetRepresentation(self) -> qSlicerScriptedLoadableModuleWidget | None:
        return _private(self).widget

    def _accessor(attribute: str) -> tuple[Callable, Callable]:
        def getter(self: qSlicerScriptedLoadableModule) -> Any:
            return getattr(_private(self), attribute)

        def setter(self: qSlicerScriptedLoadableModule, value: Any) -> None:
            setattr(_private(self), attribute, list(value) if isinstance(value, (list, tuple)) else value)

        return getter, setter

    name = Property(str, _accessor("name")[0])
    path = Property(str, _accessor("path")[0])
    title = Property(str, *_accessor("title"))
    categories = Property("QStringList", *_accessor("categories"))
    contributors = Property("QStringList", *_accessor("contributors"))
    associatedNodeTypes = Property("QStringList", *_accessor("associatedNodeTypes"))
    helpText = Property(str, *_accessor("helpText"))
    acknowledgementText = Property(str, *_accessor("acknowledgementText"))
    icon = Property(QtGui.QIcon, *_accessor("icon"))
    hidden = Property(bool, *_accessor("hidden"))
    dependencies = Property("QStringList", *_accessor("dependencies"))
    index = Property(int, *_accessor("index"))
    del _accessor


@cpp_class
class qSlicerScriptedLoadableModuleWidget(QtWidgets.QWidget):
    """The ``parent`` of a ScriptedLoadableModuleWidget (Base/QTGUI/qSlicerScriptedLoadableModuleWidget.h:39-61,
    ``isEntered`` from qSlicerAbstractModuleWidget.h:44): a panel with a QVBoxLayout; ``reload()`` is recorded."""

    def __init__(self, module: qSlicerScriptedLoadableModule, reloads: list[str]) -> None:
        super().__init__()
        QtWidgets.QWidget.setLayout(self, QtWidgets.QVBoxLayout())
        set_private(self, "_d", types.SimpleNamespace(module=module, entered=False, python=None, reloads=reloads))

    def _module_name(self) -> str:
        return _private(_private(self).module).name

    def _is_entered(self) -> bool:
        return _private(self).entered

    def reload(self) -> None:
        _private(self).reloads.append(self._module_name())

    def self(self) -> Any:
        return _private(self).python

    moduleName = Property(str, _module_name)
    isEntered = Property(bool, _is_entered)


# ===============================================================================================================
# slicer.app


@cpp_class
class qSlicerModuleManager(QObject):
    """``slicer.app.moduleManager()``: emits ``moduleAboutToBeUnloaded(QString)``, which calls a module widget's
    ``cleanup()`` (ScriptedLoadableModule.py:109-140)."""

    moduleAboutToBeUnloaded = Signal(str)

    def __init__(self, modules: dict[str, qSlicerScriptedLoadableModule]) -> None:
        super().__init__()
        set_private(self, "_d", types.SimpleNamespace(modules=modules))

    def module(self, name: str) -> qSlicerScriptedLoadableModule | None:
        return _private(self).modules.get(name)


@cpp_class
class qSlicerCommandOptions(QObject):
    """``slicer.app.commandOptions()`` (a few of qSlicerCoreCommandOptions' properties)."""

    def __init__(self, app: qSlicerApplication) -> None:
        super().__init__()
        set_private(self, "_d", types.SimpleNamespace(app=app))

    testingEnabled = Property(bool, lambda self: _private(_private(self).app).testing)
    noMainWindow = Property(bool, lambda self: False)
    disablePythonModules = Property(bool, lambda self: False)
    ignoreSlicerRC = Property(bool, lambda self: True)


@cpp_class
class qSlicerApplication(QObject):
    """``slicer.app``: the application object of Slicer (Base/QTCore/qSlicerCoreApplication.h:75-113), as far
    as modules use it: ``testingEnabled()``, ``temporaryPath``, ``defaultScenePath``, ``applicationName``,
    ``processEvents()``, ``setOverrideCursor``/``restoreOverrideCursor`` (real Qt override cursors; the depth of
    those set through ``slicer.app`` is ``overrideCursorDepth``), ``moduleManager()``, ``commandOptions()``,
    ``layoutManager()`` (None: no views), ``settings()``/``userSettings()``, ``topLevelWidgets()``."""

    def __init__(self, temporary: str, scene_path: str, testing: bool,
                 modules: dict[str, qSlicerScriptedLoadableModule]) -> None:
        super().__init__()
        set_private(self, "_d", types.SimpleNamespace(
            temporary=temporary, scene_path=scene_path, testing=testing, depth=0, cursors=[],
            manager=qSlicerModuleManager(modules), options=None))
        _private(self).options = qSlicerCommandOptions(self)

    def testingEnabled(self) -> bool:
        return _private(self).testing

    def setTestingEnabled(self, enabled: bool) -> None:
        _private(self).testing = bool(enabled)

    def commandOptions(self) -> qSlicerCommandOptions:
        return _private(self).options

    def moduleManager(self) -> qSlicerModuleManager:
        return _private(self).manager

    def layoutManager(self) -> None:
        return None

    def processEvents(self, *args: Any) -> None:
        QtCore.QCoreApplication.processEvents(*args)

    def setOverrideCursor(self, cursor: Any) -> None:
        QtWidgets.QApplication.setOverrideCursor(cursor)
        _private(self).depth += 1
        _private(self).cursors.append(cursor)

    def restoreOverrideCursor(self) -> None:
        QtWidgets.QApplication.restoreOverrideCursor()
        _private(self).depth -= 1

    def overrideCursor(self) -> Any:
        return QtWidgets.QApplication.overrideCursor()

    def topLevelWidgets(self) -> list[QtWidgets.QWidget]:
        return QtWidgets.QApplication.topLevelWidgets()

    def settings(self) -> QtCore.QSettings:
        return QtCore.QSettings()

    userSettings = settings

    def _temporary(self) -> str:
        return _private(self).temporary

    def setTemporaryPath(self, path: str) -> None:
        _private(self).temporary = str(path)

    def _scene_path(self) -> str:
        return _private(self).scene_path

    def setDefaultScenePath(self, path: str) -> None:
        _private(self).scene_path = str(path)

    temporaryPath = Property(str, _temporary, setTemporaryPath)
    defaultScenePath = Property(str, _scene_path, setDefaultScenePath)
    applicationName = Property(str, lambda self: "Slicer")
    overrideCursorDepth = Property(int, lambda self: _private(self).depth)
    majorVersion = Property(int, lambda self: 5)
    minorVersion = Property(int, lambda self: 12)


# ===============================================================================================================
# slicer.ScriptedLoadableModule, reproduced from Base/Python/slicer/ScriptedLoadableModule.py


def _build_scripted_loadable_module(qt: types.ModuleType) -> types.ModuleType:
    """The base classes of ScriptedLoadableModule.py, same behaviour (line numbers are that file's)."""
    from slicer.i18n import tr as _  # the stand-in installed before

    class ScriptedLoadableModule:
        """ScriptedLoadableModule.py:17-85: metadata on ``parent``, icon from Resources/Icons, self-test."""

        def __init__(self, parent: Any) -> None:
            super().__init__()
            self.parent = parent
            self.moduleName = self.__class__.__name__
            parent.title = ""
            parent.categories = []
            parent.dependencies = []
            parent.contributors = ["Andras Lasso (PerkLab, Queen's University), Steve Pieper (Isomics)"]
            parent.helpText = _("This module was created from a template and the help section has not yet been "
                                "updated.")
            parent.acknowledgementText = _("This work is supported by NA-MIC, NAC, BIRN, NCIGT, and the Slicer "
                                           "Community.")
            moduleDir = os.path.dirname(self.parent.path)
            for iconExtension in [".svg", ".png"]:
                iconPath = os.path.join(moduleDir, "Resources/Icons", self.moduleName + iconExtension)
                if os.path.isfile(iconPath):
                    parent.icon = qt.QIcon(iconPath)
                    break
            if not hasattr(slicer, "selfTests"):
                slicer.selfTests = {}
            slicer.selfTests[self.moduleName] = self.runTest

        def resourcePath(self, filename: str) -> str:
            return os.path.join(os.path.dirname(self.parent.path), "Resources", filename)

        def runTest(self, msec: int = 100, **kwargs: Any) -> None:
            import importlib

            module = importlib.import_module(self.__module__)
            className = self.moduleName + "Test"
            try:
                TestCaseClass = getattr(module, className)
            except AttributeError:
                raise AssertionError(f"Test case class not found: {self.__module__}.{className} ")
            testCase = TestCaseClass()
            testCase.messageDelay = msec
            testCase.runTest(**kwargs)

    class ScriptedLoadableModuleWidget:
        """ScriptedLoadableModule.py:88-140 and 232-248 (the developer section is not emulated)."""

        def __init__(self, parent: Any = None) -> None:
            super().__init__()
            self.moduleName = self.__class__.__name__
            self.moduleName = self.moduleName.removesuffix("Widget")
            self.developerMode = slicer.util.settingsValue("Developer/DeveloperMode", False,
                                                           converter=slicer.util.toBool)
            if not parent:
                self.parent = slicer.qMRMLWidget()
                self.parent.setLayout(qt.QVBoxLayout())
                self.parent.setMRMLScene(slicer.mrmlScene)
            else:
                self.parent = parent
            self.layout = self.parent.layout()
            if not parent:
                self.setup()
                self.parent.show()
            slicer.app.moduleManager().connect("moduleAboutToBeUnloaded(QString)", self._onModuleAboutToBeUnloaded)

        def resourcePath(self, filename: str) -> str:
            scriptedModulesPath = os.path.dirname(slicer.util.modulePath(self.moduleName))
            return os.path.join(scriptedModulesPath, "Resources", filename)

        def cleanup(self) -> None:
            pass

        def _onModuleAboutToBeUnloaded(self, moduleName: str) -> None:
            if moduleName == self.moduleName:
                self.cleanup()
                slicer.app.moduleManager().disconnect("moduleAboutToBeUnloaded(QString)",
                                                      self._onModuleAboutToBeUnloaded)

        def setupDeveloperSection(self) -> None:
            if not self.developerMode:
                return

        def setup(self) -> None:
            self.setupDeveloperSection()

        def onReload(self) -> None:
            print("\n" * 2 + "-" * 30 + "\nReloading module: " + self.moduleName + "\n" + "-" * 30 + "\n" * 2)
            slicer.util.reloadScriptedModule(self.moduleName)

    class ScriptedLoadableModuleLogic:
        """ScriptedLoadableModule.py:296-364: the parameter node is the scene's singleton
        vtkMRMLScriptedModuleNode tagged with the module name, with the ``ModuleName`` attribute."""

        def __init__(self, parent: Any = None) -> None:
            super().__init__()
            self.moduleName = self.__class__.__name__
            self.moduleName = self.moduleName.removesuffix("Logic")
            self.isSingletonParameterNode = True

        def getParameterNode(self) -> Any:
            if self.isSingletonParameterNode:
                parameterNode = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
                if parameterNode:
                    if parameterNode.GetAttribute("ModuleName") != self.moduleName:
                        parameterNode.SetAttribute("ModuleName", self.moduleName)
                    return parameterNode
            else:
                for nodeIndex in range(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode")):
                    parameterNode = slicer.mrmlScene.GetNthNodeByClass(nodeIndex, "vtkMRMLScriptedModuleNode")
                    if parameterNode.GetAttribute("ModuleName") == self.moduleName:
                        return parameterNode
            return slicer.mrmlScene.AddNode(self.createParameterNode())

        def getAllParameterNodes(self) -> list[Any]:
            found = []
            for nodeIndex in range(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode")):
                parameterNode = slicer.mrmlScene.GetNthNodeByClass(nodeIndex, "vtkMRMLScriptedModuleNode")
                if parameterNode.GetAttribute("ModuleName") == self.moduleName:
                    found.append(parameterNode)
            return found

        def createParameterNode(self) -> Any:
            if slicer.mrmlScene is None:
                return None
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
            node.UnRegister(None)
            if self.isSingletonParameterNode:
                node.SetSingletonTag(self.moduleName)
            node.SetAttribute("ModuleName", self.moduleName)
            node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
            return node

    class ScriptedLoadableModuleTest(unittest.TestCase):
        """ScriptedLoadableModule.py:367-508 (``delayDisplay`` goes to the recorded ``slicer.util.delayDisplay``)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.moduleTestNames = []
            super().__init__(*args, **kwargs)
            self.enableScreenshots = False
            self.screenshotScaleFactor = 1.0
            if not self.moduleTestNames:
                self.moduleTestNames = [m for m in dir(self) if "test" in m and callable(getattr(self, m))]

        def delayDisplay(self, message: str, requestedDelay: int | None = None, msec: int | None = None) -> None:
            if hasattr(self, "messageDelay"):
                msec = self.messageDelay
            if msec is None:
                msec = requestedDelay
            if msec is None:
                msec = 100
            slicer.util.delayDisplay(message, msec)

        def takeScreenshot(self, name: str, description: str, type: int = -1) -> None:
            self.delayDisplay(description)

        def runTest(self) -> None:
            if len(self.moduleTestNames) == 0:
                logging.warning("No test is defined in " + self.__class__.__name__)
                return
            self.setUpClass()
            for test_name in self.moduleTestNames:
                self.setUp()
                logging.info(f"Running {test_name}")
                getattr(self, test_name)()
                self.tearDown()
            self.tearDownClass()

    module = types.ModuleType("slicer.ScriptedLoadableModule", "Emulated (Testing/slicer_gui_emulation.py)")
    module.__all__ = ["ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic",
                      "ScriptedLoadableModuleTest"]
    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic,
                ScriptedLoadableModuleTest):
        cls.__module__ = module.__name__
        setattr(module, cls.__name__, cls)
    return module


# ===============================================================================================================
# slicer.parameterNodeWrapper, reproduced from Base/Python/slicer/parameterNodeWrapper/


class Validator:
    """validators.py:20-32."""

    def validate(self, value: Any) -> None:
        raise NotImplementedError


class NotNone(Validator):
    def validate(self, value: Any) -> None:  # validators.py:58-66
        if value is None:
            raise ValueError("Value must not be None")


class IsInstance(Validator):
    def __init__(self, classtype: Any) -> None:
        self.classtype = classtype

    def validate(self, value: Any) -> None:  # validators.py:69-80
        if value is not None and not isinstance(value, self.classtype):
            raise TypeError(f"Value must be of type '{self.classtype}', is type '{type(value)}' value '{value}'")


class WithinRange(Validator):
    def __init__(self, minimum: Any, maximum: Any) -> None:
        self.minimum, self.maximum = minimum, maximum

    def __repr__(self) -> str:
        return f"WithinRange({self.minimum}, {self.maximum})"

    def validate(self, value: Any) -> None:  # validators.py:83-95
        if not self.minimum <= value <= self.maximum:
            raise ValueError(f"Value must be within range [{self.minimum}, {self.maximum}], is {value}")


class Minimum(Validator):
    def __init__(self, minimum: Any) -> None:
        self.minimum = minimum

    def validate(self, value: Any) -> None:  # validators.py:98-109
        if value < self.minimum:
            raise ValueError(f"Value must be greater than {self.minimum}, is {value}")


class Maximum(Validator):
    def __init__(self, maximum: Any) -> None:
        self.maximum = maximum

    def validate(self, value: Any) -> None:  # validators.py:112-123
        if value > self.maximum:
            raise ValueError(f"Value must be greater than {self.maximum}, is {value}")


class Choice(Validator):
    def __init__(self, choices: Sequence[Any]) -> None:
        self.choices = choices

    def validate(self, value: Any) -> None:  # validators.py:126-137
        if value not in self.choices:
            raise ValueError(f"Value is {value}, but must be in one of the following: {self.choices}")


class Default:
    """default.py: the default value of a parameter (or a generator of it)."""

    def __init__(self, value: Any = None, *, generator: Callable[[], Any] | None = None) -> None:
        self._value, self._generator = value, generator

    @property
    def value(self) -> Any:
        return self._generator() if self._generator else self._value


class Decimals:
    def __init__(self, value: int) -> None:
        self.value = value


class SingleStep:
    def __init__(self, value: float) -> None:
        self.value = value


_PATH_TYPES = (pathlib.Path, pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePath, pathlib.PurePosixPath,
               pathlib.PureWindowsPath)


def _split_annotations(datatype: Any) -> tuple[Any, list[Any]]:
    """util.py:15-28."""
    if typing.get_origin(datatype) is Annotated:
        return typing.get_args(datatype)[0], list(datatype.__metadata__)
    return datatype, []


def _first(annotations: Sequence[Any], kind: type) -> Any:
    return next((a for a in annotations if isinstance(a, kind)), None)


class _Serializer:
    """One parameter's storage on the vtkMRMLScriptedModuleNode, as serializers.py stores it: ``SetParameter``
    with ``"True"``/``"False"`` for bool (:351-381), ``str()`` for int/float (:236-271), str (:275-308) and
    pathlib paths (:312-347), the member ``.name`` for an Enum (:1057-1104); a node as an empty parameter plus
    ``SetNodeReferenceID(name, id)``, read back with ``GetNodeReference`` (:385-420). Presence is
    ``HasParameter``. Validators run before every write (ValidatedSerializer, :121-173)."""

    def __init__(self, datatype: Any, validators: list[Validator]) -> None:
        self.type = datatype
        if datatype is bool:
            kind, base = "bool", [NotNone(), IsInstance(bool)]
        elif datatype in (int, float):
            kind, base = "number", [NotNone(), IsInstance((int, float) if datatype is float else int)]
        elif datatype is str:
            kind, base = "str", [NotNone(), IsInstance(str)]
        elif datatype in _PATH_TYPES:
            kind, base = "path", [NotNone(), IsInstance(datatype)]
        elif isinstance(datatype, type) and issubclass(datatype, enum.Enum):
            if len(datatype) == 0:
                raise ValueError("Cannot serialize empty Enum.")
            kind, base = "enum", [IsInstance(datatype)]
        elif isinstance(datatype, type) and issubclass(datatype, slicer.vtkMRMLNode):
            kind, base = "node", [IsInstance(datatype)]
        else:
            raise NotImplementedError(f"parameterNodeWrapper type {datatype!r} is not emulated "
                                      "(Testing/slicer_gui_emulation.py)")
        self.kind, self.validators = kind, base + list(validators)

    def default(self) -> Any:
        return {"bool": False, "number": 0, "str": "", "node": None}.get(self.kind) if self.kind not in (
            "path", "enum") else (self.type() if self.kind == "path" else next(iter(self.type)))

    def isIn(self, node: Any, name: str) -> bool:
        return bool(node.HasParameter(name))

    def write(self, node: Any, name: str, value: Any) -> None:
        for validator in self.validators:
            validator.validate(value)
        if self.kind == "bool":
            node.SetParameter(name, "True" if value else "False")
        elif self.kind == "enum":
            node.SetParameter(name, value.name)
        elif self.kind == "node":
            node.SetParameter(name, "")
            node.SetNodeReferenceID(name, value.GetID() if value is not None else None)
        else:
            node.SetParameter(name, str(value))

    def read(self, node: Any, name: str) -> Any:
        text = node.GetParameter(name)
        if self.kind == "bool":
            return text == "True"
        if self.kind == "enum":
            try:
                return self.type[text]
            except KeyError as error:
                raise ValueError(f"Found {text!r} in parameter node but it is not a name in {self.type!r}") from error
        if self.kind == "node":
            return node.GetNodeReference(name)
        return self.type(text)


class _Parameter:
    """wrapper.py:31-121: the cached parameter (every emulated serializer supports caching): its value is read
    back after each write inside NodeModify, and re-read when the node is modified by anyone else."""

    def __init__(self, name: str, serializer: _Serializer, default: Default, node: Any) -> None:
        self.name, self.serializer, self.default, self.node = name, serializer, default, node
        if not serializer.isIn(node, name):
            serializer.write(node, name, default.value)
        self._value = self._read()
        self._writing = False
        self_ref = weakref.ref(self)
        self._tag = node.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda caller, event: self_ref()._modified())

    def __del__(self) -> None:
        self.node.RemoveObserver(self._tag)

    def _read(self) -> Any:
        if not self.serializer.isIn(self.node, self.name):
            self.serializer.write(self.node, self.name, self.default.value)
        return self.serializer.read(self.node, self.name)

    def _modified(self) -> None:
        if not self._writing:
            self._value = self._read()

    def read(self) -> Any:
        return self._value

    def write(self, value: Any) -> None:
        self._writing = True
        try:
            with slicer.util.NodeModify(self.node):
                self.serializer.write(self.node, self.name, value)
                self._value = self._read()
        finally:
            self._writing = False


class _GuiConnector:
    """guiConnectors.py:53-114: reads/writes one widget, reporting its changes to a callback."""

    signal_name = ""

    def __init__(self, widget: Any) -> None:
        self._widget, self._callback = widget, None

    def onChanged(self, callback: Callable[[], None] | None) -> None:
        self._callback = callback
        signal = getattr(self._widget, self.signal_name)
        if callback is None:
            signal.disconnect(self.changed)
        else:
            signal.connect(self.changed)

    def changed(self, *_: Any) -> None:
        if self._callback:
            self._callback()

    def widget(self) -> Any:
        return self._widget


class _CheckBoxConnector(_GuiConnector):  # QCheckBoxToBoolConnector, guiConnectors.py:161-192
    signal_name = "stateChanged"

    def read(self) -> bool:
        return self._widget.checked

    def write(self, value: bool) -> None:
        self._widget.checked = value


class _CheckablePushButtonConnector(_CheckBoxConnector):  # guiConnectors.py:194-228
    signal_name = "toggled"

    def __init__(self, widget: Any) -> None:
        super().__init__(widget)
        if not widget.checkable:
            widget.checkable = True


class _IntConnector(_GuiConnector):  # QSliderOrSpinBoxToIntConnector, guiConnectors.py:275-337
    signal_name = "valueChanged"

    def __init__(self, widget: Any, annotations: list[Any]) -> None:
        super().__init__(widget)
        within, low, high = (_first(annotations, k) for k in (WithinRange, Minimum, Maximum))
        if isinstance(widget, QtWidgets.QSlider) and not (within or (low and high)):
            raise RuntimeError("Cannot have a connection to QSlider where the int type is unbounded.")
        if within is not None:
            widget.setRange(within.minimum, within.maximum)
        else:
            widget.setMinimum(low.minimum if low else -(2**31))
            widget.setMaximum(high.maximum if high else 2**31 - 1)

    def read(self) -> int:
        return self._widget.value

    def write(self, value: int) -> None:
        self._widget.value = value


class _FloatConnector(_GuiConnector):  # QDoubleSpinBoxCtkSliderWidgetToFloatIntConnector, :339-415
    signal_name = "valueChanged"

    def __init__(self, widget: Any, datatype: Any, annotations: list[Any]) -> None:
        super().__init__(widget)
        self._integer = datatype is int
        decimals = _first(annotations, Decimals)
        if self._integer:
            widget.decimals = 0
        elif decimals is not None:
            widget.decimals = decimals.value
        step = _first(annotations, SingleStep)
        if step is not None:
            widget.singleStep = step.value
        within, low, high = (_first(annotations, k) for k in (WithinRange, Minimum, Maximum))
        if isinstance(widget, ctkSliderWidget) and not (within or (low and high)):
            raise RuntimeError("Cannot have a connection to ctkSliderWidget where the float types is unbounded.")
        if within is not None:
            widget.minimum, widget.maximum = within.minimum, within.maximum
        else:
            widget.minimum = low.minimum if low else float("-inf")
            widget.maximum = high.maximum if high else float("inf")

    def read(self) -> float | int:
        return int(self._widget.value) if self._integer else self._widget.value

    def write(self, value: float) -> None:
        self._widget.value = int(value) if self._integer else value


class _EnumComboConnector(_GuiConnector):  # QComboBoxToEnumConnector, guiConnectors.py:465-512
    signal_name = "currentIndexChanged"

    def __init__(self, widget: Any, datatype: type[enum.Enum]) -> None:
        super().__init__(widget)
        label = getattr(datatype, "label", lambda member: member.name)
        self._labels = [(label(member), member) for member in datatype]
        saved = self.read()  # on an empty combo box: currentIndex -1, so the last member, as Slicer does
        widget.clear()
        for text, _ in self._labels:
            widget.addItem(text)
        self.write(saved)

    def read(self) -> enum.Enum:
        return self._labels[self._widget.currentIndex][1]

    def write(self, value: enum.Enum) -> None:
        for index, (_, member) in enumerate(self._labels):
            if member == value:
                self._widget.currentIndex = index
                return
        raise ValueError(f"Unable to find value {value}")


class _ChoiceComboConnector(_GuiConnector):  # QComboBoxToStringableConnector, guiConnectors.py:417-463
    signal_name = "currentIndexChanged"

    def __init__(self, widget: Any, choices: Sequence[Any]) -> None:
        super().__init__(widget)
        self._choices = list(choices)
        widget.clear()
        for choice in self._choices:
            widget.addItem(str(choice))

    def read(self) -> Any:
        return self._choices[self._widget.currentIndex]

    def write(self, value: Any) -> None:
        if value not in self._choices:
            raise ValueError(f"Unable to find value {value} in choices {self._choices}")
        self._widget.currentIndex = self._choices.index(value)


class _LineEditConnector(_GuiConnector):  # QLineEditToStrConnector, guiConnectors.py:514-548
    signal_name = "textChanged"

    def read(self) -> str:
        return self._widget.text

    def write(self, value: str) -> None:
        if value != self._widget.text:
            self._widget.text = value


class _PathConnector(_GuiConnector):  # ctkPathLineEditToPathConnector, guiConnectors.py:672-706
    signal_name = "currentPathChanged"

    def __init__(self, widget: Any, datatype: type) -> None:
        super().__init__(widget)
        self._type = datatype

    def read(self) -> Any:
        return self._type(self._widget.currentPath)

    def write(self, value: Any) -> None:
        self._widget.currentPath = str(value)


class _NodeComboConnector(_GuiConnector):  # qMRMLNodeComboBoxToNodeConnector, guiConnectors.py:744-775
    signal_name = "currentNodeChanged"

    def __init__(self, widget: Any, datatype: type) -> None:
        super().__init__(widget)
        widget.nodeTypes = [datatype().GetClassName()]  # replaces the .ui's nodeTypes, as Slicer does

    def read(self) -> Any:
        return self._widget.currentNode()

    def write(self, value: Any) -> None:
        self._widget.setCurrentNode(value)


def _create_gui_connector(widget: Any, datatype: Any) -> _GuiConnector:
    """createGuiConnector (guiConnectors.py:126-146): the widget's *exact* class decides."""
    actual, annotations = _split_annotations(datatype)
    kind = type(widget)
    if actual is bool and kind is QtWidgets.QCheckBox:
        return _CheckBoxConnector(widget)
    if actual is bool and kind is QtWidgets.QPushButton:
        return _CheckablePushButtonConnector(widget)
    if actual is int and kind in (QtWidgets.QSlider, QtWidgets.QSpinBox):
        return _IntConnector(widget, annotations)
    if actual in (float, int) and kind in (QtWidgets.QDoubleSpinBox, ctkSliderWidget):
        return _FloatConnector(widget, actual, annotations)
    if kind is QtWidgets.QComboBox and actual in (int, float, str, bool):
        choice = _first(annotations, Choice)
        if choice is None:
            raise RuntimeError("ComboBoxToStringableConnector requires the Choice annotation to be used.")
        return _ChoiceComboConnector(widget, choice.choices)
    if kind is QtWidgets.QComboBox and isinstance(actual, type) and issubclass(actual, enum.Enum):
        return _EnumComboConnector(widget, actual)
    if kind is QtWidgets.QLineEdit and actual is str:
        return _LineEditConnector(widget)
    if kind is ctkPathLineEdit and actual in _PATH_TYPES:
        return _PathConnector(widget, actual)
    if kind is qMRMLNodeComboBox and isinstance(actual, type) and issubclass(actual, slicer.vtkMRMLNode):
        return _NodeComboConnector(widget, actual)
    raise RuntimeError(f"Unable to create GUI connector from datatype '{datatype}' to widget type '{kind}'.")


SlicerParameterNamePropertyName = "SlicerParameterName"


def parameterNodeWrapper(classtype: type | None = None) -> Any:
    """wrapper.py:305-376: typed properties over a vtkMRMLScriptedModuleNode, defaults written when absent,
    ``connectGui``/``disconnectGui``, and AddObserver/RemoveObserver/StartModify/EndModify/Modified forwarded to
    the node, so the wrapper object itself is what ``VTKObservationMixin.addObserver`` is given (wrapper.py:355-359).
    """

    def wrap(cls: type) -> type:
        hints = typing.get_type_hints(cls, include_extras=True)
        parameters: dict[str, tuple[_Serializer, Default, Any]] = {}
        for name, hinted in hints.items():
            actual, annotations = _split_annotations(hinted)
            serializer = _Serializer(actual, [a for a in annotations if isinstance(a, Validator)])
            if name in cls.__dict__:
                default = Default(cls.__dict__[name])
            else:
                default = _first(annotations, Default) or Default(serializer.default())
            parameters[name] = (serializer, default, hinted)
            setattr(cls, name, property(lambda self, n=name: self._parameters[n].read(),
                                        lambda self, value, n=name: self._parameters[n].write(value)))

        def __init__(self: Any, parameterNode: Any, prefix: str | None = None) -> None:
            self.parameterNode = parameterNode
            self._parameterGUIs, self._nextParameterGUIsTag, self._guiVtkObserverTags = {}, 0, {}
            self._updatingGUIFromParameterNode = False
            self._parameters = {name: _Parameter(f"{prefix or ''}{name}", serializer, default, parameterNode)
                                for name, (serializer, default, _) in parameters.items()}

        def check(self: Any, name: str) -> None:
            if name not in parameters:
                raise ValueError(f"Cannot find a param with the given name: {name}")

        def getValue(self: Any, name: str) -> Any:
            check(self, name)
            return self._parameters[name].read()

        def setValue(self: Any, name: str, value: Any) -> None:
            check(self, name)
            self._parameters[name].write(value)

        def updateGui(self: Any) -> None:  # wrapper.py:182-192
            if self._updatingGUIFromParameterNode:
                return
            try:
                self._updatingGUIFromParameterNode = True
                with slicer.util.NodeModify(self):
                    for mapping in self._parameterGUIs.values():
                        for name, connector in mapping.items():
                            connector.write(self.getValue(name))
            finally:
                self._updatingGUIFromParameterNode = False

        def connectParametersToGui(self: Any, mapping: dict[str, Any]) -> int:  # wrapper.py:195-215
            for name in mapping:
                check(self, name)
            connectors = {name: _create_gui_connector(widget, parameters[name][2]) for name, widget in mapping.items()}
            tag = self._nextParameterGUIsTag
            self._nextParameterGUIsTag += 1
            self._parameterGUIs[tag] = connectors
            for name, connector in connectors.items():
                connector.write(self.getValue(name))

                def callback(name: str = name, connector: _GuiConnector = connector) -> None:
                    with slicer.util.NodeModify(self):
                        if not self._updatingGUIFromParameterNode:
                            self.setValue(name, connector.read())

                connector.onChanged(callback)
            self._guiVtkObserverTags[tag] = self.AddObserver(vtk.vtkCommand.ModifiedEvent,
                                                             lambda caller, event: updateGui(self))
            return tag

        def connectGui(self: Any, gui: Any) -> int:  # wrapper.py:243-255
            widgets = {}
            candidates = (QObject.findChildren(gui, QtWidgets.QWidget) if getattr(gui, "isWidgetType", lambda: False)()
                          else gui.__dict__.values())
            for widget in candidates:
                name = widget.property(SlicerParameterNamePropertyName)
                if name:
                    widgets[name] = widget
            return connectParametersToGui(self, widgets)

        def disconnectGui(self: Any, tag: int) -> None:  # wrapper.py:258-265
            if tag in self._parameterGUIs:
                for connector in self._parameterGUIs[tag].values():
                    connector.onChanged(None)
                del self._parameterGUIs[tag]
            if tag in self._guiVtkObserverTags:
                self.RemoveObserver(self._guiVtkObserverTags.pop(tag))

        cls.__init__ = __init__
        members = {
            "allParameters": {name: hinted for name, (_, _, hinted) in parameters.items()},
            "_is_parameter_node_wrapper": True, "getValue": getValue, "setValue": setValue,
            "connectGui": connectGui, "connectParametersToGui": connectParametersToGui,
            "disconnectGui": disconnectGui, "default": lambda self, name: parameters[name][1],
            "dataType": staticmethod(lambda name: parameters[name][2]),
            "StartModify": lambda self: self.parameterNode.StartModify(),
            "EndModify": lambda self, wasModified: self.parameterNode.EndModify(wasModified),
            "AddObserver": lambda self, event, callback, priority=0.0: self.parameterNode.AddObserver(
                event, callback, priority),
            "RemoveObserver": lambda self, tag: self.parameterNode.RemoveObserver(tag),
            "Modified": lambda self: self.parameterNode.Modified(),
        }
        for attribute, value in members.items():
            if hasattr(cls, attribute):  # wrapper.py:336-340
                raise ValueError(f"Cannot use reserved name '{attribute}' in a parameterNodeWrapper")
            setattr(cls, attribute, value)
        return cls

    return wrap if classtype is None else wrap(classtype)


def _build_parameter_node_wrapper() -> types.ModuleType:
    module = types.ModuleType("slicer.parameterNodeWrapper", "Emulated (Testing/slicer_gui_emulation.py)")
    for item in (parameterNodeWrapper, Validator, NotNone, IsInstance, WithinRange, Minimum, Maximum, Choice,
                 Default, Decimals, SingleStep):
        setattr(module, item.__name__, item)
    module.SlicerParameterNamePropertyName = SlicerParameterNamePropertyName
    module.isParameterNodeWrapper = lambda obj: getattr(obj, "_is_parameter_node_wrapper", False)
    return module


# ===============================================================================================================
# slicer.packaging, reproduced from Base/Python/slicer/packaging.py


@dataclass
class PipRecorder:
    """What ``slicer.packaging`` would have installed (nothing is ever installed); ``fail`` makes the install
    raise ``subprocess.CalledProcessError`` as a failed pip does."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    installed: list[list[str]] = field(default_factory=list)
    fail: bool = False


def _build_packaging(gui: SlicerGui) -> types.ModuleType:
    from packaging.markers import default_environment
    from packaging.requirements import InvalidRequirement, Requirement

    def load_requirements(path: str | os.PathLike) -> list[Requirement]:
        """packaging.py:40-69: one Requirement a line; comments, blank lines and ``-`` options skipped."""
        reqs = []
        with open(path) as stream:
            for line in stream:
                line = line.strip()
                if line and not line.startswith("#") and not line.startswith("-"):
                    reqs.append(Requirement(line))
        return reqs

    def to_requirements(reqs: Any) -> list[Requirement]:
        """packaging.py:121-147."""
        if isinstance(reqs, str):
            try:
                return [Requirement(reqs)]
            except InvalidRequirement:
                return [Requirement(s) for s in reqs.split()]
        if isinstance(reqs, Requirement):
            return [reqs]
        if isinstance(reqs, list):
            return [Requirement(r) if isinstance(r, str) else r for r in reqs]
        raise TypeError(f"Expected str, Requirement, or list, got {type(reqs).__name__}")

    def pip_check(req: Any) -> bool:
        """packaging.py:150-237, without the recursion into extras' dependencies."""
        from importlib.metadata import PackageNotFoundError, version

        for requirement in to_requirements(req):
            if requirement.marker is not None and not requirement.marker.evaluate(default_environment()):
                continue
            try:
                installed = version(requirement.name)
            except PackageNotFoundError:
                return False
            if installed not in requirement.specifier:
                return False
        return True

    def pip_install(requirements: Any, **kwargs: Any) -> None:
        names = [str(r) for r in (requirements if isinstance(requirements, list) else [requirements])]
        if gui.pip.fail:
            raise subprocess.CalledProcessError(1, ["PythonSlicer", "-m", "pip", "install", *names])
        gui.pip.installed.append(names)

    def pip_ensure(requirements: Any, constraints: Any = None, skip_packages: list[str] | None = None,
                   prompt_install: bool = True, prompt_restart: bool = True, requester: str | None = None,
                   skip_in_testing: bool = True, show_progress: bool = True) -> list[str] | None:
        """packaging.py:327-500: None when satisfied; skipped (logged, None) in testing mode; the confirmation
        (a scripted answer) first, ``RuntimeError("User declined package installation")`` when declined; then the
        (recorded) install, which raises ``CalledProcessError`` when the test makes it fail."""
        gui.pip.calls.append({"requirements": requirements, "requester": requester})
        missing = [req for req in to_requirements(requirements) if not pip_check(req)]
        if not missing:
            return None
        if skip_in_testing and slicer.app.testingEnabled():
            missing_str = ", ".join(str(req) for req in missing)
            logging.info(f"Testing mode is enabled: skipping pip_ensure for [{missing_str}]")
            return None
        if prompt_install:
            package_list = "\n".join(f"- {req}" for req in missing)
            title = f"{requester} - Install Python Packages" if requester else "Install Python Packages"
            message = (f"{len(missing)} Python package{'s need' if len(missing) > 1 else ' needs'} to be installed."
                       "\n\nThis will modify Slicer's Python environment. Continue?")
            if not slicer.util.confirmOkCancelDisplay(message, title, detailedText=package_list):
                raise RuntimeError("User declined package installation")
        pip_install([str(req) for req in missing])
        return [] if skip_packages is not None else None

    module = types.ModuleType("slicer.packaging", "Emulated (Testing/slicer_gui_emulation.py)")
    module.load_requirements, module.pip_check, module.pip_ensure = load_requirements, pip_check, pip_ensure
    module.pip_install = pip_install
    return module


# ===============================================================================================================
# DICOMLib.DICOMUtils, reproduced from Modules/Scripted/DICOMLib/DICOMUtils.py


def _build_dicom_lib(gui: SlicerGui) -> tuple[types.ModuleType, types.ModuleType]:
    def loadSeriesByUID(seriesUIDs: Any, messages: Any = None, progressCallback: Any = None,
                        enabledPluginClassNames: Any = None) -> list[str]:
        """DICOMUtils.py:192-223; the loadables are those of the scalar volume plugin only, loaded as
        ``Testing/slicer_scene.load_dicom_volume`` does (named "<SeriesNumber>: <SeriesDescription>")."""
        if not isinstance(seriesUIDs, list):
            raise ValueError("SeriesUIDs must contain a list")
        if seriesUIDs is None or len(seriesUIDs) == 0:
            raise ValueError("No series UIDs given")
        if not slicer.dicomDatabase.isOpen:
            raise OSError("DICOM module or database cannot be accessed")
        from slicer_scene import load_dicom_volume

        loaded = []
        for uid in seriesUIDs:
            files = slicer.dicomDatabase.filesForSeries(uid)
            if not files:
                continue
            number = slicer.dicomDatabase.fileValue(files[0], "0020,0011")
            description = slicer.dicomDatabase.fileValue(files[0], "0008,103E")
            name = ": ".join(part for part in (number, description) if part) or "Unnamed Series"
            volume = load_dicom_volume(gui.headless, [pathlib.Path(f) for f in files], name)
            loaded.append(volume.GetID())
        gui.loaded_series.append(list(seriesUIDs))
        return loaded

    def importDicom(dicomDataDir: str, dicomDatabase: Any = None, copyFiles: bool = False) -> bool:
        """DICOMUtils.py:490-506."""
        try:
            indexer = ctkDICOMIndexer()
            if dicomDatabase is None:
                dicomDatabase = slicer.dicomDatabase
            indexer.addDirectory(dicomDatabase, dicomDataDir, copyFiles)
            indexer.waitForImportFinished()
        except Exception:
            import traceback

            traceback.print_exc()
            logging.error("Failed to import DICOM folder " + str(dicomDataDir))
            return False
        return True

    class TemporaryDICOMDatabase:
        """DICOMUtils.py:471-487 with openTemporaryDatabase/closeTemporaryDatabase (:356-418): the same
        ``slicer.dicomDatabase`` object opens a new, emptied database, and the original one again at the end."""

        def __init__(self, directory: str | None = None) -> None:
            self.temporaryDatabaseDir = directory
            self.originalDatabaseFile = None

        def __enter__(self) -> ctkDICOMDatabase:
            directory = self.temporaryDatabaseDir or "TempDICOMDatabase"
            if not os.path.isabs(directory):
                directory = os.path.join(slicer.app.temporaryPath, directory)
            os.makedirs(directory, exist_ok=True)
            self.originalDatabaseFile = slicer.dicomDatabase.databaseFilename or None
            slicer.dicomDatabase.openDatabase(directory + "/ctkDICOM.sql")
            slicer.dicomDatabase.initializeDatabase()
            return slicer.dicomDatabase

        def __exit__(self, *exc: object) -> None:
            if slicer.dicomDatabase.isOpen:
                slicer.dicomDatabase.initializeDatabase()
                slicer.dicomDatabase.closeDatabase()
            if self.originalDatabaseFile and os.path.exists(os.path.dirname(self.originalDatabaseFile)):
                slicer.dicomDatabase.openDatabase(self.originalDatabaseFile)

    def loadLoadables(loadablesByPlugin: Any, messages: Any = None, progressCallback: Any = None) -> list[str]:
        """DICOMUtils.py:850-920: each selected loadable loaded by its plugin (the last plugin that selects it);
        the IDs of the nodes added meanwhile, storage and display nodes left out, are returned."""
        selected = {}
        for plugin, loadables in loadablesByPlugin.items():
            for loadable in loadables:
                if loadable.selected:
                    selected[loadable] = plugin
        loaded: list[str] = []

        def added(caller: Any, event: Any, node: Any) -> None:
            if not isinstance(node, (slicer.vtkMRMLStorageNode, slicer.vtkMRMLDisplayNode)):
                loaded.append(node.GetID())

        added.CallDataType = vtk.VTK_OBJECT
        tag = slicer.mrmlScene.AddObserver(slicer.vtkMRMLScene.NodeAddedEvent, added)
        try:
            for loadable, plugin in selected.items():
                try:
                    node = plugin.load(loadable)
                except Exception:
                    import traceback

                    node = None
                    logging.error(f"DICOM plugin failed to load '{loadable.name}'\n" + traceback.format_exc())
                if not node and messages is not None:
                    messages.append(f"Could not load: {loadable.name} as a {plugin.loadType}")
                loadable.loadSuccess = bool(node)
        finally:
            slicer.mrmlScene.RemoveObserver(tag)
        return loaded

    utils = types.ModuleType("DICOMLib.DICOMUtils", "Emulated (Testing/slicer_gui_emulation.py)")
    utils.loadSeriesByUID, utils.importDicom, utils.loadLoadables = loadSeriesByUID, importDicom, loadLoadables
    utils.TemporaryDICOMDatabase = TemporaryDICOMDatabase
    package = types.ModuleType("DICOMLib", "Emulated (Testing/slicer_gui_emulation.py)")
    package.__path__ = []
    package.DICOMUtils = utils
    return package, utils


# ===============================================================================================================
# The handle and the entry point


@dataclass
class Message:
    kind: str  # "error", "warning", "info", "confirmOkCancel", "confirmYesNo"
    text: str
    windowTitle: str | None
    kwargs: dict[str, Any]
    answer: Any = None


@dataclass
class LoadedModule:
    module: types.ModuleType  # the module file, imported
    parent: qSlicerScriptedLoadableModule
    instance: Any  # the ScriptedLoadableModule object
    widget_parent: qSlicerScriptedLoadableModuleWidget | None = None
    widget: Any = None  # the ScriptedLoadableModuleWidget object


@dataclass
class SlicerGui:
    """What :func:`slicer_gui` yields: the emulated application and everything it records."""

    monkeypatch: pytest.MonkeyPatch
    qt: types.ModuleType
    ctk: types.ModuleType
    headless: Any  # headless_slicer.HeadlessSlicer
    app: qSlicerApplication
    main_window: QtWidgets.QMainWindow
    dicom_database: ctkDICOMDatabase
    dialogs: pqt.DialogDriver
    pip: PipRecorder = field(default_factory=PipRecorder)
    messages: list[Message] = field(default_factory=list)
    confirm_answers: deque = field(default_factory=deque)
    progress_dialogs: list[Any] = field(default_factory=list)
    slice_viewer_layers: list[dict[str, Any]] = field(default_factory=list)
    delayed: list[str] = field(default_factory=list)
    reloads: list[str] = field(default_factory=list)
    loaded_series: list[list[str]] = field(default_factory=list)
    slot_errors: list[BaseException] = field(default_factory=list)
    extra_problems: list[str] = field(default_factory=list)
    modules: dict[str, LoadedModule] = field(default_factory=dict)
    module_folders: list[str] = field(default_factory=list)
    _module_parents: dict[str, qSlicerScriptedLoadableModule] = field(default_factory=dict)  # moduleManager's

    @property
    def scene(self) -> Any:
        return self.headless.scene

    def answer_confirm(self, *answers: bool) -> None:
        """Queue the user's answers to ``confirmOkCancelDisplay``/``confirmYesNoDisplay`` (True: OK/Yes)."""
        self.confirm_answers.extend(answers)

    @property
    def problems(self) -> list[str]:
        """Everything a user would have been stuck on: unscripted dialogs and questions, exceptions raised in
        slots, an override cursor left set."""
        found = list(self.dialogs.problems) + list(self.extra_problems)
        found += [f"exception in a slot: {type(e).__name__}: {e}" for e in self.slot_errors]
        if QtWidgets.QApplication.overrideCursor() is not None:
            found.append("an override cursor is still set")
        return found

    def errors(self) -> list[str]:
        return [m.text for m in self.messages if m.kind == "error"]

    # -- modules ------------------------------------------------------------------------------------------------

    def load_module(self, path: str | os.PathLike) -> types.ModuleType:
        """Import a scripted module file as Slicer does (its folder on ``sys.path``, ``slicer.modules.<name>``
        with its ``path``) and instantiate its module class with a module parent."""
        import importlib.util

        path = os.path.abspath(path)
        name = pathlib.Path(path).stem
        self.module_folders.append(os.path.dirname(path))
        self.monkeypatch.syspath_prepend(os.path.dirname(path))
        parent = qSlicerScriptedLoadableModule(name, path)
        setattr(slicer.modules, name.lower(), parent)
        self._module_parents[name] = parent
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        self.monkeypatch.setitem(sys.modules, name, module)
        spec.loader.exec_module(module)
        instance = getattr(module, name)(parent)
        _private(parent).module = instance
        self.modules[name] = LoadedModule(module, parent, instance)
        return module

    def create_widget(self, name: str) -> Any:
        """The module panel: ``<name>Widget(parent)`` then ``setup()`` (qSlicerScriptedLoadableModuleWidget.cxx:
        208-213), shown in the main window; ``slicer.modules.<name>Widget`` is set as Slicer sets it."""
        loaded = self.modules[name]
        panel = qSlicerScriptedLoadableModuleWidget(loaded.parent, self.reloads)
        _private(loaded.parent).widget = panel
        widget = getattr(loaded.module, name + "Widget")(panel)
        _private(panel).python = widget
        setattr(slicer.modules, name + "Widget", widget)
        loaded.widget_parent, loaded.widget = panel, widget
        self.main_window.setCentralWidget(panel)
        widget.setup()
        self.main_window.show()
        return widget

    def enter(self, name: str) -> None:
        """The user opens the module (qSlicerScriptedLoadableModuleWidget.cxx:216-221)."""
        loaded = self.modules[name]
        _private(loaded.widget_parent).entered = True
        loaded.widget.enter()

    def exit(self, name: str) -> None:
        """The user leaves the module (qSlicerScriptedLoadableModuleWidget.cxx:224-229)."""
        loaded = self.modules[name]
        _private(loaded.widget_parent).entered = False
        loaded.widget.exit()

    def unload(self, name: str) -> None:
        """The application unloads the module: ``moduleAboutToBeUnloaded(name)`` (the widget's ``cleanup()``)."""
        self.app.moduleManager().moduleAboutToBeUnloaded.emit(name)


def _install_util(gui: SlicerGui) -> None:
    """Replace the application-only parts of slicer-core's ``slicer.util`` (recorded or scripted)."""
    util = slicer.util
    patch = gui.monkeypatch

    def display(kind: str) -> Callable[..., None]:
        def shown(text: str, windowTitle: str | None = None, parent: Any = None, standardButtons: Any = None,
                  **kwargs: Any) -> None:
            logging.log({"error": logging.ERROR, "warning": logging.WARNING}.get(kind, logging.INFO), text)
            gui.messages.append(Message(kind, str(text), windowTitle, kwargs))

        return shown

    def confirm(kind: str) -> Callable[..., bool]:
        def ask(text: str, windowTitle: str | None = None, parent: Any = None, **kwargs: Any) -> bool:
            if gui.app.testingEnabled():  # util.py:3434-3436
                answer = True
            elif gui.confirm_answers:
                answer = bool(gui.confirm_answers.popleft())
            else:
                gui.extra_problems.append(f"unscripted {kind}Display: {text!r}")
                answer = False
            gui.messages.append(Message(kind, str(text), windowTitle, kwargs, answer))
            return answer

        return ask

    real_progress = util.createProgressDialog

    def createProgressDialog(*args: Any, **kwargs: Any) -> Any:
        dialog = real_progress(*args, **kwargs)
        gui.progress_dialogs.append(dialog)
        return dialog

    def delayDisplay(message: str, autoCloseMsec: int = 1000, parent: Any = None, **kwargs: Any) -> None:
        logging.info(message)
        gui.delayed.append(str(message))
        QtCore.QCoreApplication.processEvents()

    def selectModule(name: str) -> None:
        """util.py selectModule: the module's panel is made if it was not (slicer.modules.<name>Widget) and
        entered."""
        if gui.modules[name].widget is None:
            gui.create_widget(name)
        gui.enter(name)

    replacements = {
        "selectModule": selectModule,
        "errorDisplay": display("error"), "warningDisplay": display("warning"), "infoDisplay": display("info"),
        "confirmOkCancelDisplay": confirm("confirmOkCancel"), "confirmYesNoDisplay": confirm("confirmYesNo"),
        "mainWindow": lambda: gui.main_window, "createProgressDialog": createProgressDialog,
        "setSliceViewerLayers": lambda **kwargs: gui.slice_viewer_layers.append(kwargs),
        "delayDisplay": delayDisplay, "reloadScriptedModule": lambda name: gui.reloads.append(name),
    }
    for name, function in replacements.items():
        patch.setattr(util, name, function)


@contextlib.contextmanager
def slicer_gui(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path, *, testing: bool = False,
               strict: bool = True) -> Iterator[SlicerGui]:
    """Install the emulated Slicer application for the block; yields a :class:`SlicerGui`.

    ``testing`` is ``slicer.app.testingEnabled()`` (False: an interactive user, so error displays and questions
    are recorded and answered from the test's queues). With ``strict``, leaving the block with
    :attr:`SlicerGui.problems` (an unscripted dialog, an exception in a slot, an override cursor left set) fails.
    """
    from headless_slicer import headless_slicer

    application = pqt.ensure_application()
    pqt.isolate_settings(str(tmp_path / "settings"))
    qt = pqt.build_qt_module()
    ctk = types.ModuleType("ctk", "CTK stand-ins (Testing/slicer_gui_emulation.py)")
    for cls in (ctkCollapsibleButton, ctkPathLineEdit, ctkSliderWidget, ctkDICOMDatabase, ctkDICOMIndexer):
        setattr(ctk, cls.__name__, cls)
    headless = headless_slicer()
    modules: dict[str, qSlicerScriptedLoadableModule] = {}
    app = qSlicerApplication(str(tmp_path / "temp"), str(tmp_path / "scenes"), testing, modules)
    os.makedirs(tmp_path / "temp", exist_ok=True)
    main_window = QtWidgets.QMainWindow()
    QObject.setObjectName(main_window, "qSlicerMainWindow")
    database = ctkDICOMDatabase()
    database.openDatabase(str(tmp_path / "DICOMDatabase" / "ctkDICOM.sql"))
    gui = SlicerGui(monkeypatch, qt, ctk, headless, app, main_window, database, pqt.DialogDriver())
    gui._module_parents = modules

    i18n = types.ModuleType("slicer.i18n", "Emulated: translation is the identity")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    monkeypatch.setitem(sys.modules, "qt", qt)
    monkeypatch.setitem(sys.modules, "ctk", ctk)
    monkeypatch.setitem(sys.modules, "slicer.i18n", i18n)
    monkeypatch.setattr(slicer, "i18n", i18n, raising=False)
    monkeypatch.setattr(slicer, "app", app, raising=False)
    monkeypatch.setattr(slicer, "mrmlScene", headless.scene, raising=False)
    monkeypatch.setattr(slicer, "dicomDatabase", database, raising=False)
    monkeypatch.setattr(slicer, "selfTests", {}, raising=False)
    # dicomPlugins: DICOM plugin classes by name (DICOMSegmentationPlugin.py:226 registers itself so); empty here
    # unless a test registers a stand-in.
    monkeypatch.setattr(slicer, "modules", types.SimpleNamespace(
        volumes=types.SimpleNamespace(logic=lambda: headless.volumes),
        segmentations=types.SimpleNamespace(logic=lambda: headless.segmentations), dicomPlugins={}), raising=False)
    for cls in (qMRMLWidget, qMRMLNodeComboBox):
        monkeypatch.setattr(slicer, cls.__name__, cls, raising=False)
    _install_util(gui)
    dicom_lib, dicom_utils = _build_dicom_lib(gui)
    monkeypatch.setitem(sys.modules, "DICOMLib", dicom_lib)
    monkeypatch.setitem(sys.modules, "DICOMLib.DICOMUtils", dicom_utils)

    previous_hook = sys.excepthook
    imported_before = set(sys.modules)

    def excepthook(kind: type, error: BaseException, traceback: Any) -> None:
        gui.slot_errors.append(error)
        previous_hook(kind, error, traceback)

    monkeypatch.setattr(sys, "excepthook", excepthook)
    with pqt.pythonqt_semantics(gui.dialogs), pqt.driven_static_helpers():
        pqt.UiLoader.custom = {cls.__name__: cls for cls in (
            ctkCollapsibleButton, ctkPathLineEdit, ctkSliderWidget, qMRMLWidget, qMRMLNodeComboBox)}
        # Built inside the semantics: they run Python code of their own against the emulated qt.
        base = _build_scripted_loadable_module(qt)
        wrapper = _build_parameter_node_wrapper()
        packaging = _build_packaging(gui)
        for name, module in (("ScriptedLoadableModule", base), ("parameterNodeWrapper", wrapper),
                             ("packaging", packaging)):
            monkeypatch.setitem(sys.modules, f"slicer.{name}", module)
            monkeypatch.setattr(slicer, name, module, raising=False)
        try:
            yield gui
            problems = gui.problems
        finally:
            _teardown(gui, application)
            _forget_module_imports(gui, imported_before)
        if strict and problems:
            raise AssertionError("the Slicer GUI emulation saw problems:\n  " + "\n  ".join(problems))


def _importable_elsewhere(package: str, folders: list[str]) -> bool:
    """Whether ``package`` is importable without the module folders on ``sys.path`` (an installed package)."""
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if os.path.join(os.path.abspath(p), "") not in folders]
    try:
        return any(getattr(finder, "find_spec", None) and finder.find_spec(package, None) is not None
                   for finder in sys.meta_path)
    finally:
        sys.path[:] = saved


def _forget_module_imports(gui: SlicerGui, imported_before: set[str]) -> None:
    """Forget the modules that only a loaded module's folder provides (its library package, say), imported during
    the test: they were bound to this test's emulated ``qt`` and ``slicer`` pieces. Installed packages stay."""
    folders = [os.path.join(os.path.abspath(folder), "") for folder in gui.module_folders]
    packages: dict[str, bool] = {}
    for name in set(sys.modules) - imported_before:
        path = os.path.abspath(getattr(sys.modules[name], "__file__", None) or "")
        if not any(path.startswith(folder) for folder in folders):
            continue
        top = name.split(".")[0]
        if top not in packages:
            packages[top] = _importable_elsewhere(top, folders)
        if not packages[top]:
            del sys.modules[name]


def _teardown(gui: SlicerGui, application: QtWidgets.QApplication) -> None:
    """Unload the modules (their panels' ``cleanup()``, as when Slicer exits), detach the combo boxes from the
    scene, restore override cursors, delete every window of the test. Without the cleanup a panel's scene
    observers outlive the test, and fire on a half-collected panel when the scene is destroyed later."""
    for name, loaded in gui.modules.items():
        if loaded.widget is not None:
            with contextlib.suppress(Exception):
                gui.unload(name)
    for combo in list(_live_combo_boxes):
        try:
            d = _private(combo)
            for tag in d.observers:
                d.scene.RemoveObserver(tag)
            d.observers, d.scene = [], None
        except RuntimeError:
            pass
    while QtWidgets.QApplication.overrideCursor() is not None:
        QtWidgets.QApplication.restoreOverrideCursor()
    for widget in QtWidgets.QApplication.topLevelWidgets():
        widget.close()
        widget.deleteLater()
    QtCore.QCoreApplication.sendPostedEvents(None, QtCore.QEvent.Type.DeferredDelete)
    QtCore.QCoreApplication.processEvents()
