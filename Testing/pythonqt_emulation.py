"""PythonQt's semantics over PySide6: the ``qt`` module a Slicer scripted module sees, for tests outside Slicer.

Slicer runs module code under PythonQt (commontk/PythonQt, the ``patched-*`` branches CTK builds; line numbers below
are from branch ``patched-9``), whose rules differ from PySide's in ways that hide or reveal mistakes. This file
reproduces those rules over real Qt widgets (PySide6, offscreen platform); it contains no PythonQt code.

What is reproduced, for every ``QObject`` (PySide6 classes and the C++ stand-ins of ``slicer_gui_emulation``):

* **Attribute lookup order** (``PythonQtInstanceWrapper_getattro``, PythonQtInstanceWrapper.cpp:378-607, and
  ``PythonQtClassInfo::member``, PythonQtClassInfo.cpp:314-380): attributes defined by *Python* subclasses first;
  then every ``Q_PROPERTY`` of the object's class as a plain value (so a property shadows a method of the same
  name: ``progressDialog.maximum`` is an int and ``slider.value()`` fails); then methods, signals and enums; then
  a trailing ``_`` stripped (``exec_`` finds ``exec``, PythonQtClassInfo.cpp:368-380); then dynamic properties
  (``widget.SlicerParameterName``, :564-575); then children by objectName (:590-598); else ``AttributeError``
  "<Class> has no attribute named 'x'" (:600). ``name`` means ``objectName`` (PythonQtClassInfo.cpp:145-152,
  compiled in with ``-DPYTHONQT_SUPPORT_NAME_PROPERTY``, PythonQt CMakeLists.txt:60); ``QTimer.singleShot`` is
  not a property (:156-160).
* **Attribute assignment** (``PythonQtInstanceWrapper_setattro``, :609-731): a property is written (a read-only
  one or a refused value raises ``AttributeError``); a method, signal or enum name cannot be overwritten; an
  existing dynamic property is set; otherwise a *Python* subclass instance gets a Python attribute, and a direct
  C++ wrapper raises ``AttributeError: 'x' does not exist on QPlainTextEdit and creating new attributes on C++
  objects is not allowed`` (:729). So ``textEdit.text = "..."`` is an error in Slicer, not a silent no-op. A tuple
  is accepted for a list-typed property (``combo.nodeTypes = ("vtkMRMLScalarVolumeNode",)``).
* **String connections** ``obj.connect("clicked(bool)", slot)`` / ``obj.disconnect(...)``, and the static
  ``qt.QObject.connect(obj, "clicked(bool)", slot)`` (PythonQtStdDecorators.cpp:50-127, .h:70-78): the
  normalized signature is looked up in the class's *static* meta-object (never a PySide dynamic signal); an
  unknown signal prints ``PythonQt: QObject::connect() signal 'x' does not exist on Class`` and returns False.
  A Python function or bound method with a fixed number of parameters gets only the first arguments of the
  signal (PythonQtSignalReceiver.cpp:62-101); other callables get all of them.
  An exception raised in a slot is printed (through ``sys.excepthook``) and does not reach the emitter, as in
  PythonQt (``handleError``, PythonQtSignalReceiver.cpp:130-135) and in PySide.
* ``obj.connect(signal, receiver, slot)`` with C++ signatures, also used for a ``.ui`` file's ``<connections>``.
  Signatures naming VTK/MRML/CTK pointer types (``vtkMRMLScene*``) are matched to the stand-ins' PySide
  signals of ``PyObject`` type.
* ``qt.QUiLoader`` that builds the registered stand-in classes, sets their ``.ui`` properties itself (string,
  bool, number, double, stringlist, enum and ``set`` flags, and ``stdset="0"`` dynamic properties) and makes the
  ``<connections>``.
* Enums PythonQt style: ``qt.Qt.WaitCursor``, ``qt.QDialog.Accepted``, ``qt.QMessageBox.Yes`` (PySide6 accepts
  the unscoped names).
* Modal dialogs driven by the test: :class:`DialogDriver` answers each ``exec()``/``exec_()`` of a QDialog
  (QInputDialog, QMessageBox...) and the static ``QFileDialog``/``QInputDialog``/``QMessageBox`` helpers from a
  queue, so ``dialog.exec_()`` returns the real ``Accepted``/``Rejected`` code; an unscripted dialog is rejected
  at once and recorded as a problem instead of blocking the test.

Not reproduced: PythonQt's own value conversions (PySide's are used: both give ``str``, ``int``, ``float``,
``bool``, lists); arguments of C++ methods are checked by PySide, which raises ``TypeError`` where PythonQt
converts loosely (``setEnabled("x")``) or raises ``ValueError`` ("Could not find matching overload",
PythonQtSlot.cpp:430-452); ``signal.connect(callable)`` on a signal object uses PySide's argument adaptation and
returns a Connection, not True; wrappers of non-QObject value classes (``QColor``, ``QSize``) keep PySide's
attribute rules; an object's ``__dict__`` is Python's, not PythonQt's list of properties; of PythonQt's own
helpers only ``className()`` and ``delete()`` are added (not ``help()``); the Qt version is PySide6's (Qt 6), whose
properties may differ slightly from the Qt a given Slicer release is built with. Module code calling
``obj.metaObject()`` meets a PySide quirk (see :func:`_class_name`).

The whole application (``slicer``, ``ctk``, the module's life cycle) is in ``slicer_gui_emulation``, whose
:func:`slicer_gui` is the entry point for tests.

The semantics are installed once per process on the PySide6 classes and are active only inside
:func:`pythonqt_semantics` (outside it PySide behaves as usual).
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import sys
import types
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import shiboken6
from PySide6 import QtCore, QtGui, QtUiTools, QtWidgets

QObject = QtCore.QObject
_QT_MODULES = (QtCore, QtGui, QtWidgets)
_BINDING_MODULE_PREFIXES = ("PySide6.", "shiboken6", "Shiboken")
#: Set in a class's own ``__dict__`` to say that the class stands in for a C++ class (see :func:`cpp_class`).
_CPP_MARK = "_pythonqt_cpp_class"

_state = types.SimpleNamespace(active=False, warnings=None, dialogs=None)


# ---------------------------------------------------------------------------------------------------------------
# The application


def ensure_application() -> QtWidgets.QApplication:
    """The process's QApplication (offscreen platform, created once), with settings kept out of the user's files."""
    app = QtWidgets.QApplication.instance()
    if app is None:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
        app = QtWidgets.QApplication(["pythonqt-emulation"])
    if not isinstance(app, QtWidgets.QApplication):
        raise RuntimeError("a QCoreApplication already exists: widgets need a QApplication")
    _install_once()
    return app


def isolate_settings(folder: str) -> None:
    """Make ``qt.QSettings()`` read and write INI files under ``folder`` (never the user's own settings)."""
    QtCore.QCoreApplication.setOrganizationName("SlicerGuiEmulation")
    QtCore.QCoreApplication.setApplicationName("Slicer")
    QtCore.QSettings.setDefaultFormat(QtCore.QSettings.Format.IniFormat)
    for scope in (QtCore.QSettings.Scope.UserScope, QtCore.QSettings.Scope.SystemScope):
        QtCore.QSettings.setPath(QtCore.QSettings.Format.IniFormat, scope, folder)


# ---------------------------------------------------------------------------------------------------------------
# Classes: what is C++, what is Python


def cpp_class(cls: type) -> type:
    """Class decorator: ``cls`` (a Python class) stands in for a C++ class, so its instances follow the rules of a
    PythonQt *direct* wrapper: its Qt properties win over its methods and no new attribute can be created on it.
    A stand-in keeps its private state in one attribute set with :func:`set_private`."""
    setattr(cls, _CPP_MARK, True)
    return cls


def set_private(obj: QObject, name: str, value: Any) -> None:
    """Set the private (C++-side) state of a stand-in, bypassing the PythonQt assignment rules."""
    _generic_setattr(obj, name, value)


def _generic_setattr(obj: QObject, name: str, value: Any) -> None:
    """Python's generic attribute assignment (data descriptors of the class, else the instance dict). The slot
    wrappers of the patched classes cannot be called for this: CPython's ``hackcheck`` refuses them."""
    for klass in type(obj).__mro__:
        attr = klass.__dict__.get(name)
        if attr is not None and hasattr(type(attr), "__set__"):
            type(attr).__set__(attr, obj, value)
            return
        if name in klass.__dict__:
            break
    _class_info(type(obj)).original_getattribute(obj, "__dict__")[name] = value


def _is_binding(cls: type) -> bool:
    return cls is object or cls.__module__.startswith(_BINDING_MODULE_PREFIXES)


def _is_cpp(cls: type) -> bool:
    return _is_binding(cls) or _CPP_MARK in cls.__dict__


@dataclass
class _ClassInfo:
    python_names: frozenset[str]  # defined by Python subclasses: found first, as PyBaseObject_Type.tp_getattro does
    cpp_names: frozenset[str]  # methods, signals, enums of the C++ classes (bindings and stand-ins)
    properties: dict[str, QtCore.QMetaProperty]  # attribute name -> Q_PROPERTY (``name`` -> objectName)
    direct_wrapper: bool  # a C++ class itself: creating attributes is not allowed
    original_getattribute: Callable[[Any, str], Any]


_class_infos: dict[type, _ClassInfo] = {}
_original_getattribute: dict[type, Callable] = {}


def _class_info(cls: type) -> _ClassInfo:
    info = _class_infos.get(cls)
    if info is not None:
        return info
    python_names: set[str] = set()
    cpp_names: set[str] = set()
    for klass in cls.__mro__:
        (cpp_names if _is_cpp(klass) else python_names).update(klass.__dict__)
    meta = cls.staticMetaObject
    properties = {}
    for index in range(meta.propertyCount()):
        prop = meta.property(index)
        if prop.name() == "singleShot" and issubclass(cls, QtCore.QTimer):  # PythonQtClassInfo.cpp:156-160
            continue
        properties[prop.name()] = prop
    if "name" not in properties:  # PythonQtClassInfo.cpp:145-152
        properties["name"] = properties["objectName"]
    getter = next(_original_getattribute[k] for k in cls.__mro__ if k in _original_getattribute)
    info = _ClassInfo(frozenset(python_names), frozenset(cpp_names), properties, _is_cpp(cls), getter)
    _class_infos[cls] = info
    return info


def _class_name(obj: QObject) -> str:
    """The object's C++ class name. (Not ``obj.metaObject()``: shiboken ties the wrapper of the returned static
    meta-object to ``obj``, and invalidates ``Class.staticMetaObject`` itself when ``obj`` is deleted.)"""
    return type(obj).staticMetaObject.className()


def _strip_trailing_underscore(name: str) -> str | None:
    """``exec_`` -> ``exec`` (PythonQtClassInfo.cpp:368-380): a single trailing underscore, not a dunder."""
    if len(name) > 2 and name[-1] == "_" and name[-2] != "_":
        return name[:-1]
    return None


# ---------------------------------------------------------------------------------------------------------------
# Attribute access


#: Properties being read: when Qt's getter is a virtual method (``sizeHint``), shiboken asks the object for a Python
#: override of it by name while the property is read, and must then get the method, not the property again.
_reading: set[tuple[int, str]] = set()


def _pythonqt_getattribute(self: QObject, name: str) -> Any:
    cls = type(self)
    info = _class_infos.get(cls) or _class_info(cls)
    if not _state.active or name[:2] == "__":
        return info.original_getattribute(self, name)
    if name in info.python_names:
        return info.original_getattribute(self, name)
    instance_dict = info.original_getattribute(self, "__dict__")
    if name in instance_dict and name not in info.properties:
        return instance_dict[name]
    prop = info.properties.get(name)
    if prop is not None:
        key = (id(self), name)
        if key in _reading:  # shiboken looking for a Python override of the getter it is running (sizeHint)
            return info.original_getattribute(self, name)
        _reading.add(key)
        try:
            return QObject.property(self, prop.name())
        finally:
            _reading.discard(key)
    stripped = _strip_trailing_underscore(name)
    if stripped is not None and stripped in info.cpp_names:  # PySide's own aliases (exec_) are not PythonQt's
        return _pythonqt_getattribute(self, stripped)
    if name == "connect":
        return types.MethodType(pythonqt_connect, self)
    if name == "disconnect":
        return types.MethodType(pythonqt_disconnect, self)
    try:
        return info.original_getattribute(self, name)
    except AttributeError:
        pass
    stripped = _strip_trailing_underscore(name)
    if stripped is not None:
        try:
            return _pythonqt_getattribute(self, stripped)
        except AttributeError:
            pass
    if name.encode() in QObject.dynamicPropertyNames(self):
        return QObject.property(self, name)
    if name == "className":  # PythonQt's own helpers (PythonQtInstanceWrapper.cpp:361-375)
        return lambda: _class_name(self)
    if name == "delete":
        return lambda: shiboken6.delete(self)
    for child in QObject.children(self):
        if QObject.objectName(child) == name:
            return child
    raise AttributeError(f"{_class_name(self)} has no attribute named '{name}'")


def _pythonqt_setattr(self: QObject, name: str, value: Any) -> None:
    cls = type(self)
    info = _class_infos.get(cls) or _class_info(cls)
    if not _state.active or name[:2] == "__" or isinstance(value, QtCore.SignalInstance):
        _generic_setattr(self, name, value)  # (PySide caches its signal instances on the object)
        return
    type_name = cls.__name__
    prop = info.properties.get(name)
    if prop is not None:
        if not prop.isWritable():
            raise AttributeError(f"Property '{name}' of {type_name} object is not writable")
        if isinstance(value, tuple):  # PythonQt takes any sequence for a list type (QStringList...)
            value = list(value)
        if not QObject.setProperty(self, prop.name(), value):
            raise AttributeError(f"Property '{name}' of type '{prop.typeName()}' does not accept an object of type "
                                 f"{type(value).__name__} ({value!r})")
        return
    if name in info.cpp_names or (_strip_trailing_underscore(name) or "") in info.cpp_names:
        kind = "Signal" if isinstance(getattr(cls, name, None), QtCore.Signal) else "Slot"
        raise AttributeError(f"{kind} '{name}' can not be overwritten on {type_name} object")
    if name.encode() in QObject.dynamicPropertyNames(self):
        QObject.setProperty(self, name, value)
        return
    if not info.direct_wrapper:
        _generic_setattr(self, name, value)
        return
    raise AttributeError(f"'{name}' does not exist on {type_name} and creating new attributes on C++ objects is not "
                         "allowed")


# ---------------------------------------------------------------------------------------------------------------
# String connections


_POINTER_TYPE = re.compile(r"\b(?:vtk|qMRML|qSlicer|ctk)\w*\s*\*")


def normalized(signature: str) -> str:
    """Qt's normalized form of a signal or slot signature (``QMetaObject::normalizedSignature``)."""
    return bytes(QtCore.QMetaObject.normalizedSignature(signature)).decode()


def _meta_signature(meta: QtCore.QMetaObject, signature: str, kinds: tuple) -> str | None:
    """``signature`` as it is in ``meta`` (a static meta-object), trying the stand-ins' ``PyObject`` form of
    VTK/MRML/CTK pointer arguments too; None if it is not a method of one of ``kinds``."""
    for candidate in (signature, _POINTER_TYPE.sub("PyObject", signature)):
        index = meta.indexOfMethod(candidate)
        if index >= 0 and meta.method(index).methodType() in kinds:
            return candidate
    return None


def _signal_signature(sender: QObject, signal: str) -> str | None:
    return _meta_signature(type(sender).staticMetaObject, normalized(signal), (QtCore.QMetaMethod.MethodType.Signal,))


def python_argument_count(function: Callable) -> int | None:
    """How many signal arguments PythonQt passes to ``function`` (PythonQtSignalReceiver.cpp:62-101): the fixed
    parameter count of a function (less ``self`` for a bound method), or None (all of them) for anything else."""
    if inspect.ismethod(function):
        code = getattr(function.__func__, "__code__", None)
        offset = 1
    elif inspect.isfunction(function):
        code, offset = function.__code__, 0
    else:
        return None
    if code is None or code.co_flags & inspect.CO_VARARGS:
        return None
    return code.co_argcount - offset


class _SlotAdapter:
    """The Python callable connected on PythonQt's behalf: passes the first arguments only, as PythonQt does."""

    def __init__(self, function: Callable, count: int | None) -> None:
        self.function = function
        self.count = count

    def __call__(self, *args: Any) -> None:
        self.function(*(args if self.count is None else args[: self.count]))


@dataclass
class _Connection:
    signal: str  # as normalized by the caller (C++ form)
    meta_signal: str  # as it is in the meta-object
    function: Callable
    adapter: _SlotAdapter


_connections: dict[int, list[_Connection]] = {}
#: PySide's own QObject.connect/disconnect (the class attributes are replaced by :func:`_class_level`).
_pyside: dict[str, Callable] = {"connect": QObject.connect, "disconnect": QObject.disconnect}


def _key(obj: QObject) -> int:
    return shiboken6.getCppPointer(obj)[0]


def pythonqt_connect(sender: QObject, signal: str, target: Any = None, slot: str | None = None, *_: Any) -> bool:
    """``sender.connect("signal(args)", callable)`` or ``sender.connect("signal(args)", receiver, "slot(args)")``
    with PythonQt's rules (PythonQtStdDecorators.cpp:50-100)."""
    if not isinstance(signal, str):
        raise TypeError("PythonQt's connect takes the signal as its signature string, e.g. 'clicked(bool)'")
    if not signal:
        print("PythonQt: QObject::connect() signal is empty.", file=sys.stderr)
        return False
    meta_signal = _signal_signature(sender, signal)
    if meta_signal is None:
        print(f"PythonQt: QObject::connect() signal '{signal}' does not exist on "
              f"{_class_name(sender)}", file=sys.stderr)
        return False
    if isinstance(target, QObject):
        return _connect_to_slot(sender, signal, meta_signal, target, slot or "")
    if not callable(target):
        raise TypeError(f"connect() needs a callable or a receiver and a slot, not {target!r}")
    adapter = _SlotAdapter(target, python_argument_count(target))
    _pyside["connect"](sender, QtCore.SIGNAL(meta_signal), adapter)
    _connections.setdefault(_key(sender), []).append(_Connection(normalized(signal), meta_signal, target, adapter))
    return True


def _connect_to_slot(sender: QObject, signal: str, meta_signal: str, receiver: QObject, slot: str) -> bool:
    kinds = (QtCore.QMetaMethod.MethodType.Slot, QtCore.QMetaMethod.MethodType.Method)
    meta_slot = _meta_signature(type(receiver).staticMetaObject, normalized(slot), kinds)
    if meta_slot is None:
        print(f"QObject::connect: No such slot {_class_name(receiver)}::{slot}", file=sys.stderr)
        return False
    method = getattr(receiver, meta_slot.split("(")[0])
    count = len(type(receiver).staticMetaObject.method(
        type(receiver).staticMetaObject.indexOfMethod(meta_slot)).parameterTypes())
    adapter = _SlotAdapter(method, count)
    _pyside["connect"](sender, QtCore.SIGNAL(meta_signal), adapter)
    _connections.setdefault(_key(sender), []).append(_Connection(normalized(signal), meta_signal, method, adapter))
    return True


def pythonqt_disconnect(sender: QObject, signal: str, target: Any = None, slot: str | None = None) -> bool:
    """``sender.disconnect("signal(args)", callable)``: removes the first matching connection (callables compared
    with ``==``, PythonQtSignalReceiver.cpp:145-148 and 218-250); without a callable, all of the signal's."""
    meta_signal = _signal_signature(sender, signal) if isinstance(signal, str) and signal else None
    if meta_signal is None:
        print(f"PythonQt: QObject::disconnect() signal '{signal}' does not exist on "
              f"{_class_name(sender)}", file=sys.stderr)
        return False
    if isinstance(target, QObject):
        target = getattr(target, (slot or "").split("(")[0], None)
    records = _connections.get(_key(sender), [])
    removed = False
    for record in list(records):
        if record.signal == normalized(signal) and (target is None or record.function == target):
            _pyside["disconnect"](sender, QtCore.SIGNAL(meta_signal), record.adapter)
            records.remove(record)
            removed = True
            if target is not None:
                break
    return removed


# ---------------------------------------------------------------------------------------------------------------
# Installing the semantics


_installed = False


def _all_qobject_classes() -> Iterator[type]:
    for module in (QtCore, QtGui, QtWidgets, QtUiTools):
        for name in dir(module):
            value = getattr(module, name, None)  # getattr: PySide6 creates its classes lazily
            if isinstance(value, type) and issubclass(value, QObject):
                yield value


def _install_once() -> None:
    """Put PythonQt's attribute rules on the PySide6 classes (dormant until :func:`pythonqt_semantics`)."""
    global _installed
    if _installed:
        return
    classes = sorted(set(_all_qobject_classes()), key=lambda c: len(c.__mro__))
    for cls in classes:
        if "__getattribute__" in cls.__dict__:
            _original_getattribute[cls] = cls.__dict__["__getattribute__"]
            cls.__getattribute__ = _pythonqt_getattribute
        if "__setattr__" in cls.__dict__:
            cls.__setattr__ = _pythonqt_setattr
    for name, pythonqt_function in (("connect", pythonqt_connect), ("disconnect", pythonqt_disconnect)):
        setattr(QObject, name, _class_level(_pyside[name], pythonqt_function))
    for cls in classes:
        if issubclass(cls, QtWidgets.QDialog) and "exec" in cls.__dict__:
            cls.exec = _driven_exec(cls.__dict__["exec"])
    _installed = True


def _class_level(original: Any, pythonqt_function: Callable) -> Callable:
    """``qt.QObject.connect(sender, "signal(args)", callable)``, PythonQt's static form (PythonQtStdDecorators.h:
    73-78); PySide's own ``QObject.connect`` otherwise (and whenever the semantics are inactive)."""

    def dispatch(*args: Any, **kwargs: Any) -> Any:
        pythonqt_form = len(args) >= 2 and isinstance(args[0], QObject) and isinstance(args[1], str)
        if _state.active and pythonqt_form and args[1][:1] not in "0123456789":  # not a PySide SIGNAL() string
            return pythonqt_function(*args, **kwargs)
        return original(*args, **kwargs)

    return dispatch


@contextlib.contextmanager
def pythonqt_semantics(dialogs: DialogDriver | None = None) -> Iterator[None]:
    """Activate PythonQt's rules (and the dialog driver) for the duration of the block."""
    ensure_application()
    previous = (_state.active, _state.dialogs)
    _state.active, _state.dialogs = True, dialogs
    try:
        yield
    finally:
        _state.active, _state.dialogs = previous
        _connections.clear()


# ---------------------------------------------------------------------------------------------------------------
# Modal dialogs driven by the test


@dataclass
class Accept:
    """Accept the next modal dialog (QDialog.accept())."""


@dataclass
class Reject:
    """Reject (cancel) the next modal dialog."""


@dataclass
class ChooseItem:
    """Choose ``text`` among a QInputDialog's combo box items, then accept; a text that is not an item is a
    problem (the user could not have chosen it)."""

    text: str


@dataclass
class EnterText:
    """Type ``text`` into a QInputDialog, then accept."""

    text: str


@dataclass
class PressButton:
    """Press a QMessageBox's standard button (``qt.QMessageBox.Yes``...)."""

    button: Any


@dataclass
class ChooseFile:
    """The answer of a static ``QFileDialog.get...`` helper: a path (or several), or None for Cancel."""

    path: str | list[str] | None


@dataclass
class DialogRecord:
    kind: str
    title: str
    text: str
    answer: Any


@dataclass
class DialogDriver:
    """Answers modal dialogs from a queue: ``driver.answer(qt_emulation.Reject())``. Every dialog seen is in
    ``shown``; an unscripted or mismatched one is rejected and described in ``problems``."""

    queue: deque = field(default_factory=deque)
    shown: list[DialogRecord] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def answer(self, *answers: Any) -> None:
        self.queue.extend(answers)

    def next_answer(self, kind: str, title: str, text: str, default: Any) -> Any:
        answer = self.queue.popleft() if self.queue else None
        if answer is None:
            self.problems.append(f"unscripted modal {kind} '{title}': {text!r}")
            answer = default
        self.shown.append(DialogRecord(kind, title, text, answer))
        return answer


def _describe(dialog: QtWidgets.QDialog) -> tuple[str, str, str]:
    text = ""
    if isinstance(dialog, QtWidgets.QInputDialog):
        text = QtWidgets.QInputDialog.labelText(dialog)
    elif isinstance(dialog, QtWidgets.QMessageBox):
        text = QtWidgets.QMessageBox.text(dialog)
    return _class_name(dialog), QtWidgets.QWidget.windowTitle(dialog), text


def _apply_answer(dialog: QtWidgets.QDialog, answer: Any, driver: DialogDriver) -> None:
    if isinstance(answer, Reject):
        dialog.reject()
    elif isinstance(answer, ChooseItem) and isinstance(dialog, QtWidgets.QInputDialog):
        items = QtWidgets.QInputDialog.comboBoxItems(dialog)
        if answer.text not in items:
            driver.problems.append(f"{answer.text!r} is not among the items {items}")
            dialog.reject()
            return
        dialog.setTextValue(answer.text)
        dialog.accept()
    elif isinstance(answer, EnterText) and isinstance(dialog, QtWidgets.QInputDialog):
        if QtWidgets.QInputDialog.comboBoxItems(dialog) and not QtWidgets.QInputDialog.isComboBoxEditable(dialog):
            driver.problems.append(f"cannot type {answer.text!r}: the combo box is not editable")
            dialog.reject()
            return
        dialog.setTextValue(answer.text)
        dialog.accept()
    elif isinstance(answer, PressButton) and isinstance(dialog, QtWidgets.QMessageBox):
        button = dialog.button(answer.button)
        if button is None:
            driver.problems.append(f"the message box has no button {answer.button!r}")
            dialog.reject()
            return
        button.click()
    elif isinstance(answer, Accept):
        dialog.accept()
    elif callable(answer):
        answer(dialog)
    else:
        driver.problems.append(f"answer {answer!r} does not fit a {type(dialog).__name__}")
        dialog.reject()


def _driven_exec(original: Callable) -> Callable:
    def exec_(self: QtWidgets.QDialog, *args: Any) -> int:
        driver = _state.dialogs
        if not _state.active or driver is None:
            return original(self, *args)
        kind, title, text = _describe(self)
        answer = driver.next_answer(kind, title, text, Reject())
        QtCore.QTimer.singleShot(0, lambda: _apply_answer(self, answer, driver))
        return original(self, *args)

    return exec_


def _static_dialog(kind: str, default: Any, convert: Callable[[Any], Any]) -> Callable:
    """A static helper (``QFileDialog.getExistingDirectory``...) answered from the queue, as a user would."""

    def helper(*args: Any, **kwargs: Any) -> Any:
        # Every one of these takes ``QWidget* parent`` first: PythonQt finds no overload for anything else
        # (PythonQtSlot.cpp:430-452 raises ValueError), e.g. the caption given first.
        if args and args[0] is not None and not isinstance(args[0], QtWidgets.QWidget):
            raise ValueError(f"{kind}(): no overload takes {type(args[0]).__name__} as its first argument (QWidget*)")
        if len(args) > 1 and not isinstance(args[1], str):
            raise ValueError(f"{kind}(): no overload takes {type(args[1]).__name__} as its caption (QString)")
        driver = _state.dialogs
        title = next((a for a in args[1:2] if isinstance(a, str)), kwargs.get("caption", kwargs.get("title", "")))
        answer = driver.next_answer(kind, str(title), "", None) if driver else None
        return convert(answer) if answer is not None else default

    return staticmethod(helper)


def _file_answer(answer: Any) -> str:
    if isinstance(answer, ChooseFile):
        return "" if answer.path is None else str(answer.path)
    return ""


def _files_answer(answer: Any) -> list[str]:
    if isinstance(answer, ChooseFile) and answer.path is not None:
        return [str(p) for p in (answer.path if isinstance(answer.path, list) else [answer.path])]
    return []


def _driven_static_helpers() -> dict[str, dict[str, Any]]:
    """Queue-answered replacements for the blocking static helpers, returning what PythonQt returns: a plain
    value (a path, "" on Cancel; not PySide's tuples). ``QInputDialog.getItem`` returns the current item even on
    Cancel (Qt's qinputdialog.cpp returns ``text`` then, and PythonQt drops the ``ok`` out-argument)."""

    def get_item(parent: Any, title: str, label: str, items: list, current: int = 0, *args: Any, **kwargs: Any):
        driver = _state.dialogs
        answer = driver.next_answer("QInputDialog.getItem", title, label, Reject()) if driver else Reject()
        if isinstance(answer, ChooseItem):
            if answer.text in items:
                return answer.text
            driver.problems.append(f"{answer.text!r} is not among the items {list(items)}")
        return items[current] if 0 <= current < len(items) else ""

    def button(answer: Any) -> Any:
        return answer.button if isinstance(answer, PressButton) else QtWidgets.QMessageBox.StandardButton.Cancel

    file_dialog = {
        "getExistingDirectory": _static_dialog("QFileDialog.getExistingDirectory", "", _file_answer),
        "getOpenFileName": _static_dialog("QFileDialog.getOpenFileName", "", _file_answer),
        "getSaveFileName": _static_dialog("QFileDialog.getSaveFileName", "", _file_answer),
        "getOpenFileNames": _static_dialog("QFileDialog.getOpenFileNames", [], _files_answer),
    }
    input_dialog = {
        "getItem": staticmethod(get_item),
        "getText": _static_dialog("QInputDialog.getText", "", lambda a: a.text if isinstance(a, EnterText) else ""),
    }
    message_box = {name: _static_dialog(f"QMessageBox.{name}", QtWidgets.QMessageBox.StandardButton.Cancel, button)
                   for name in ("question", "information", "warning", "critical")}
    return {"QFileDialog": file_dialog, "QInputDialog": input_dialog, "QMessageBox": message_box}


# ---------------------------------------------------------------------------------------------------------------
# QUiLoader


#: ``.ui`` property types the loader sets itself on stand-in widgets.
_XML_TYPES = ("string", "bool", "number", "double", "stringlist", "set", "enum", "cstring")


def _xml_value(element: ElementTree.Element, widget: QObject) -> Any:
    kind = element.tag
    text = element.text or ""
    if kind in ("string", "cstring"):
        return text
    if kind == "bool":
        return text.strip() == "true"
    if kind == "number":
        return int(text)
    if kind == "double":
        return float(text)
    if kind == "stringlist":
        return [item.text or "" for item in element.findall("string")]
    if kind in ("set", "enum"):
        value = 0
        for key in text.split("|"):
            scope, _, member = key.strip().rpartition("::")
            owner = type(widget) if scope == type(widget).__name__ else _qt_lookup(scope) if scope else type(widget)
            value |= int(getattr(owner, member))
        return value
    raise ValueError(f"unsupported .ui property type {kind}")


def _qt_lookup(name: str) -> Any:
    for module in _QT_MODULES:
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(name)


class UiLoader(QtUiTools.QUiLoader):
    """``qt.QUiLoader``: Qt's own loader, which also builds the registered stand-in classes (``custom``), sets
    their properties from the ``.ui`` file and makes the ``<connections>`` with PythonQt's connect (so custom
    signatures such as ``mrmlSceneChanged(vtkMRMLScene*)`` work)."""

    custom: dict[str, type] = {}

    def createWidget(self, className: str, parent: QtWidgets.QWidget | None = None, name: str = "") -> Any:
        cls = self.custom.get(className)
        if cls is None:
            return super().createWidget(className, parent, name)
        widget = cls(parent)
        widget.setObjectName(name)
        return widget

    def load(self, device: Any, parent: QtWidgets.QWidget | None = None) -> QtWidgets.QWidget | None:
        if isinstance(device, (str, os.PathLike)):
            with open(device, "rb") as stream:
                data = stream.read()
        else:
            if not device.isOpen():
                device.open(QtCore.QIODevice.OpenModeFlag.ReadOnly)
            data = bytes(device.readAll())
        root = ElementTree.fromstring(data)
        deferred: list[tuple[str, str, ElementTree.Element]] = []
        for widget in root.iter("widget"):
            if widget.get("class") not in self.custom:
                continue
            for prop in list(widget.findall("property")):
                value = next(iter(prop), None)
                if value is not None and value.tag in _XML_TYPES:
                    deferred.append((widget.get("name", ""), prop.get("name", ""), value))
                    widget.remove(prop)
        connections = root.find("connections")
        if connections is not None:
            root.remove(connections)
        buffer = QtCore.QBuffer()
        buffer.setData(QtCore.QByteArray(ElementTree.tostring(root)))
        buffer.open(QtCore.QIODevice.OpenModeFlag.ReadOnly)
        active, _state.active = _state.active, False  # PySide's loader sets its own Python attributes
        try:
            top = super().load(buffer, parent)
        finally:
            _state.active = active
        if top is None:
            return None
        _forget_loader_attributes(top)
        for object_name, prop_name, value in deferred:
            target = _find_named(top, object_name)
            QObject.setProperty(target, prop_name, _xml_value(value, target))
        for connection in connections if connections is not None else []:
            sender = _find_named(top, connection.findtext("sender", ""))
            receiver = _find_named(top, connection.findtext("receiver", ""))
            if not pythonqt_connect(sender, connection.findtext("signal", ""), receiver,
                                    connection.findtext("slot", "")):
                raise RuntimeError(f"the .ui connection {ElementTree.tostring(connection).decode()} failed")
        return top


def _forget_loader_attributes(top: QObject) -> None:
    """PySide's QUiLoader stores every named child as a Python attribute of its parent; PythonQt finds only
    *direct* children by name (PythonQtInstanceWrapper.cpp:590-598), so those attributes are removed."""
    for obj in [top, *top.findChildren(QObject)]:
        attributes = _class_info(type(obj)).original_getattribute(obj, "__dict__")
        for name in [n for n, v in attributes.items() if isinstance(v, QObject)]:
            del attributes[name]


def _find_named(top: QObject, name: str) -> QObject:
    if QObject.objectName(top) == name:
        return top
    found = top.findChild(QObject, name)
    if found is None:
        raise RuntimeError(f"no object named {name!r} in the loaded .ui")
    return found


# ---------------------------------------------------------------------------------------------------------------
# The qt module


def build_qt_module() -> types.ModuleType:
    """The ``qt`` module of PythonQt: every class of QtCore, QtGui and QtWidgets (``qt.Qt`` is Qt's namespace)
    and ``qt.QUiLoader`` (:class:`UiLoader`)."""
    module = types.ModuleType("qt", "PythonQt's qt module, emulated over PySide6 (Testing/pythonqt_emulation.py)")

    def __getattr__(name: str) -> Any:
        if name == "QUiLoader":
            return UiLoader
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return _qt_lookup(name)
        except AttributeError:
            raise AttributeError(f"module 'qt' has no attribute '{name}'") from None

    module.__getattr__ = __getattr__  # type: ignore[attr-defined]
    return module


_MISSING = object()


@contextlib.contextmanager
def driven_static_helpers() -> Iterator[None]:
    """Replace the blocking static helpers (``QFileDialog.getExistingDirectory``...) by queue-answered ones for
    the duration of the block (class attributes, restored afterwards)."""
    saved = []
    for class_name, functions in _driven_static_helpers().items():
        cls = getattr(QtWidgets, class_name)
        for name, function in functions.items():
            saved.append((cls, name, cls.__dict__.get(name, _MISSING)))
            setattr(cls, name, function)
    try:
        yield
    finally:
        for cls, name, original in saved:
            if original is _MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, original)
