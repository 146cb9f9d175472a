#!/usr/bin/env python3
"""Mutation testing of the Slicer module: do its tests catch the mistakes that Slicer module code is prone to?

The tool makes *mutants* of the target files, each one small change of the kind a person makes when writing or
restructuring a scripted Slicer module (a misspelt signal signature, a renamed widget, swapped arguments, a lost
cleanup call, a negated condition, a node passed as its ID, a lost return value, a flipped flag), runs the given
tests against each mutant in a copy of the repository, and reports which mutants the tests *kill* (make fail) and
which *survive*. A surviving mutant is a mistake the tests would let through: add a test, or judge it equivalent
(the change does not alter behaviour) and list it in ``equivalent.txt`` with the reason.

Standard library only; Python >= 3.10. See README.md beside this file for usage and the categories.
"""

from __future__ import annotations

import argparse
import ast
import bisect
import dataclasses
import json
import os
import queue
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

#: The mutation categories, in report order, with a one-line summary each.
CATEGORIES: dict[str, str] = {
    "signal": "Qt signal signatures in connect()/disconnect() (name misspelt, argument list dropped or altered)",
    "attribute": "self.ui widget names, misspelt Qt property names, renamed attributes of widget-like objects",
    "swap-args": "two neighbouring positional arguments swapped",
    "remove-cleanup": "cleanup call, del sys.modules[...] or a finally: body removed",
    "negate": "if condition negated, comparison inverted (== !=, is / is not, in / not in)",
    "node-id": "node argument passed as its ID, one-element list passed as its element",
    "return-none": "returned value replaced by None",
    "flip-bool": "boolean constant flipped (keyword argument, set...() argument, attribute assignment)",
    "named": "a mistake written out by hand in a --patches file (e.g. the ones a review found)",
}

# --- What the categories look for ------------------------------------------------------------------------------

#: A Qt signal signature as PythonQt takes it in ``connect("name(args)", slot)``.
SIGNAL_RE = re.compile(r"^(?P<name>[A-Za-z_]\w*)\((?P<args>[^()]*)\)$")

#: Attribute names taken for PythonQt signals in ``widget.<signal>.connect(slot)`` (not ``self.db.connect(url)``).
SIGNAL_ATTRIBUTE_RE = re.compile(r"(ed|Changed|timeout)$")

#: Misspellings of common signal names (a verb instead of the past tense, a neighbouring name); otherwise the name
#: loses its last character.
SIGNAL_MISSPELLINGS: dict[str, str] = {
    "clicked": "click",
    "toggled": "toggle",
    "pressed": "press",
    "released": "release",
    "triggered": "trigger",
    "activated": "activate",
    "accepted": "accept",
    "rejected": "reject",
    "finished": "finish",
    "valueChanged": "valueChange",
    "textChanged": "textChange",
    "stateChanged": "stateChange",
    "currentIndexChanged": "indexChanged",
    "currentNodeChanged": "nodeChanged",
    "currentPathChanged": "pathChanged",
    "currentTextChanged": "textChanged",
}

#: A signal argument type and the type it is mistaken for; any other type becomes ``int`` (``int`` becomes ``bool``).
SIGNAL_ARGUMENT_SWAPS: dict[str, str] = {
    "bool": "int",
    "int": "double",
    "double": "int",
    "float": "int",
    "QString": "int",
    "const QString&": "int",
    "vtkMRMLNode*": "vtkMRMLNode",
    "QModelIndex": "int",
    "QVariant": "int",
}

#: Qt and Slicer property or method names, and the name they are commonly mistaken for.
PROPERTY_MISSPELLINGS: dict[str, str] = {
    "plainText": "text",
    "wasCanceled": "wasCancelled",
    "enabled": "enable",
    "checked": "isChecked",
    "currentPath": "path",
    "toolTip": "tooltip",
    "currentText": "text",
    "currentIndex": "index",
    "currentNode": "currentNodeID",
    "currentNodeID": "currentNodeId",
    "setCurrentNode": "setCurrentNodeID",
    "setCurrentNodeID": "setCurrentNode",
    "visible": "isVisible",
    "maximum": "max",
    "minimum": "min",
    "singleStep": "step",
    "windowTitle": "title",
    "textValue": "text",
    "isOpen": "isOpened",
    "isEntered": "entered",
    "readOnly": "readonly",
    "placeholderText": "placeholder",
}

#: Widget-name suffixes and the suffix a renamed or misremembered widget has instead (first match wins); other
#: ``self.ui`` names get the case of their first letter swapped.
WIDGET_SUFFIX_SWAPS: tuple[tuple[str, str], ...] = (
    ("PushButton", "Button"),
    ("ToolButton", "Button"),
    ("Button", "PushButton"),
    ("CheckBox", "Checkbox"),
    ("ComboBox", "Combobox"),
    ("PathLineEdit", "LineEdit"),
    ("LineEdit", "PathLineEdit"),
    ("PlainTextEdit", "TextEdit"),
    ("TextEdit", "PlainTextEdit"),
    ("SliderWidget", "Slider"),
    ("Slider", "SliderWidget"),
    ("SpinBox", "Spinbox"),
    ("Selector", "ComboBox"),
)

#: Objects whose name ends like this (any case) are taken for widgets or dialogs: any attribute read or written on
#: them may be renamed (a character appended).
WIDGET_LIKE_SUFFIXES: tuple[str, ...] = ("button", "checkbox", "combobox", "edit", "selector", "widget", "dialog")

#: Calls whose removal leaves something behind (an observer, a node, a connection, a cursor, a file).
CLEANUP_CALLS: frozenset[str] = frozenset({
    "removeObserver", "removeObservers", "RemoveObserver", "RemoveObservers", "RemoveAllObservers", "RemoveNode",
    "disconnectGui", "disconnect", "close", "restoreOverrideCursor", "deleteLater", "closeDatabase", "rmtree",
    "unlink", "cleanup", "Clear",
})
CLEANUP_DOTTED: frozenset[str] = frozenset({"os.remove", "os.rmdir", "shutil.rmtree"})

#: Slicer API names taking a node (``x`` becomes ``x.GetID()``): SetAndObserve..., ...Node, setCurrentNode.
NODE_API_RE = re.compile(r"^(SetAndObserve\w*|setCurrentNode|\w+Node)$")
#: Arguments that look like nodes by their name (``volume``, ``referenceVolume``, ``segmentationNode``...), unless
#: the name is a method's (``self.onImportSegmentation``, ``logic.loadVolume``).
NODE_NAME_RE = re.compile(r"(node|volume|segmentation)$", re.IGNORECASE)
METHOD_NAME_RE = re.compile(r"^_?(on|get|set|import|export|load|save|add|remove|create|make|read|write|find|select|"
                            r"update|show|run|apply|check|ensure)[A-Z]")
#: Slicer functions documented to take a node or its ID alike (no node-id mutants: they would be equivalent).
NODE_OR_ID_CALLS: frozenset[str] = frozenset({"setSliceViewerLayers"})

#: Callees whose two first arguments can be swapped without changing anything (no swap mutants for them).
SYMMETRIC_CALLS: frozenset[str] = frozenset({
    "assertEqual", "assertNotEqual", "assertAlmostEqual", "assertNotAlmostEqual", "assertCountEqual",
    "assertSetEqual", "assertListEqual", "assertDictEqual", "assertTupleEqual", "assertSequenceEqual",
    "array_equal", "array_equiv", "allclose", "isclose", "max", "min",
})

#: Message text is not behaviour: calls to these are not mutated at all (nor ``.format()`` of their result).
TRANSLATION_CALLS: frozenset[str] = frozenset({"_", "tr", "translate", "QT_TRANSLATE_NOOP"})
LOGGING_OBJECTS: frozenset[str] = frozenset({"logging", "logger", "log", "_log", "_logger", "LOG", "LOGGER"})
LOGGING_METHODS: frozenset[str] = frozenset({"debug", "info", "warning", "warn", "error", "exception", "critical",
                                             "log"})
MESSAGE_CALLS: frozenset[str] = frozenset({"print", "warnings.warn"})
#: Typing helpers: their type arguments are annotations.
TYPING_CALLS: frozenset[str] = frozenset({"TypeVar", "typing.TypeVar", "NewType", "typing.NewType"})
CAST_CALLS: frozenset[str] = frozenset({"cast", "typing.cast"})

#: What the sanity mutant raises at the top of each target; seen in pytest's output, it proves the copy's file ran.
SANITY_MARKER = "mutation-sanity-check"

PYTEST_OPTIONS: tuple[str, ...] = ("-x", "-q", "-p", "no:cacheprovider", "--tb=short", "-rfE")


# --- Source positions ------------------------------------------------------------------------------------------


def dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for a Name or a chain of Attributes, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def last_name(node: ast.AST) -> str | None:
    """The last name of a Name or Attribute (``c`` of ``a.b.c``), else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def short(text: str, width: int = 48) -> str:
    """``text`` on one line, cut to ``width`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


class Source:
    """A file's text with byte offsets for AST positions (``col_offset`` counts UTF-8 bytes)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.data = text.encode("utf-8")
        self.line_starts = [0] + [match.end() for match in re.finditer(rb"\n", self.data)]

    def offset(self, line: int, col: int) -> int:
        """Byte offset of AST position (``line`` 1-based, ``col`` in bytes)."""
        return self.line_starts[line - 1] + col

    def start(self, node: ast.AST) -> int:
        return self.offset(node.lineno, node.col_offset)  # type: ignore[attr-defined]

    def end(self, node: ast.AST) -> int:
        return self.offset(node.end_lineno, node.end_col_offset)  # type: ignore[attr-defined]

    def segment(self, node: ast.AST) -> str:
        return self.data[self.start(node):self.end(node)].decode("utf-8")

    def slice(self, start: int, end: int) -> str:
        return self.data[start:end].decode("utf-8")

    def position(self, offset: int) -> tuple[int, int]:
        """(line, column), both 1-based, the column in characters, of a byte offset."""
        index = bisect.bisect_right(self.line_starts, offset) - 1
        return index + 1, len(self.data[self.line_starts[index]:offset].decode("utf-8", "replace")) + 1

    def lines(self, start: int, end: int) -> str:
        """The whole lines that the bytes ``start:end`` touch."""
        first = bisect.bisect_right(self.line_starts, start) - 1
        last = bisect.bisect_right(self.line_starts, max(start, end - 1)) - 1
        stop = self.line_starts[last + 1] if last + 1 < len(self.line_starts) else len(self.data)
        return self.data[self.line_starts[first]:stop].decode("utf-8", "replace").rstrip("\r\n")


# --- Mutants ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Edit:
    """Replace the bytes ``start:end`` of the file by ``text``."""

    start: int
    end: int
    text: str

    def apply(self, data: bytes) -> bytes:
        return data[: self.start] + self.text.encode("utf-8") + data[self.end:]


@dataclasses.dataclass(frozen=True)
class Mutant:
    """One single change of one target file."""

    path: str  #: the file, relative to the repository, with forward slashes
    line: int  #: where the change starts (1-based)
    col: int  #: the same, 1-based column in characters
    category: str
    index: int  #: distinguishes mutants of one category at one position
    description: str
    edit: Edit
    original: str  #: the original line(s) the change touches
    mutated: str  #: the same line(s) after the change

    @property
    def id(self) -> str:
        """Stable between runs while the file is unchanged: ``file:line:col:category:index``."""
        return f"{self.path}:{self.line}:{self.col}:{self.category}:{self.index}"

    @property
    def location(self) -> str:
        return f"{self.path}:{self.line}"


@dataclasses.dataclass(frozen=True)
class _Candidate:
    category: str
    edit: Edit
    description: str
    sequence: int


class _Generator:
    """Walks one module's syntax tree and proposes edits, category by category."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.candidates: list[_Candidate] = []
        self._handled: set[int] = set()  # Attribute nodes already mutated by the signal category

    # Walking -----------------------------------------------------------------------------------------------

    def walk(self, node: ast.AST) -> None:
        if self._skipped(node):
            return
        self._mutate(node)
        for child in self._children(node):
            self.walk(child)

    @staticmethod
    def _is_message_call(node: ast.AST) -> bool:
        """A translation, logging or print call: its arguments are message text."""
        if not isinstance(node, ast.Call):
            return False
        name = dotted(node.func) or ""
        if isinstance(node.func, ast.Name) and node.func.id in TRANSLATION_CALLS:
            return True
        if isinstance(node.func, ast.Attribute) and node.func.attr in ("tr", "translate"):
            return True
        if name in MESSAGE_CALLS:
            return True
        parts = name.split(".")
        return len(parts) >= 2 and parts[-1] in LOGGING_METHODS and parts[-2] in LOGGING_OBJECTS

    def _skipped(self, node: ast.AST) -> bool:
        if self._is_message_call(node):
            return True
        if isinstance(node, ast.Call) and (dotted(node.func) or "") in TYPING_CALLS:
            return True
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format"
                and self._is_message_call(node.func.value)):
            return True
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod) and self._is_message_call(node.left):
            return True
        type_alias = getattr(ast, "TypeAlias", None)
        return type_alias is not None and isinstance(node, type_alias)

    @staticmethod
    def _is_type_checking(test: ast.AST) -> bool:
        return last_name(test) == "TYPE_CHECKING"

    def _children(self, node: ast.AST) -> list[ast.AST]:
        """The child nodes to visit: not annotations, not ``if TYPE_CHECKING:`` bodies, not cast()'s type."""
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            defaults = [*node.args.defaults, *(d for d in node.args.kw_defaults if d is not None)]
            if isinstance(node, ast.Lambda):
                return [*defaults, node.body]
            return [*node.decorator_list, *defaults, *node.body]
        if isinstance(node, ast.AnnAssign):
            return [node.target] + ([node.value] if node.value is not None else [])
        if isinstance(node, ast.If) and self._is_type_checking(node.test):
            return list(node.orelse)
        if isinstance(node, ast.Call) and (dotted(node.func) or "") in CAST_CALLS:
            return [*node.args[1:], *(k.value for k in node.keywords)]
        return list(ast.iter_child_nodes(node))

    # Recording ---------------------------------------------------------------------------------------------

    def add(self, category: str, start: int, end: int, text: str, description: str) -> None:
        self.candidates.append(_Candidate(category, Edit(start, end, text), description, len(self.candidates)))

    def _mutate(self, node: ast.AST) -> None:
        if isinstance(node, ast.Call):
            self._signal(node)
            self._swap_arguments(node)
            self._node_ids(node)
            self._flip_call_booleans(node)
        elif isinstance(node, ast.Attribute):
            self._attribute(node)
        elif isinstance(node, ast.Expr):
            self._remove_cleanup_call(node)
        elif isinstance(node, ast.Delete):
            self._remove_del_sys_modules(node)
        elif isinstance(node, (ast.If, ast.IfExp)):
            self._negate(node)
        elif isinstance(node, ast.Compare):
            self._invert_comparison(node)
        elif isinstance(node, ast.Return):
            self._return_none(node)
        elif isinstance(node, ast.Assign):
            self._flip_assigned_boolean(node)
        if isinstance(node, (ast.Try, *((ast.TryStar,) if hasattr(ast, "TryStar") else ()))):
            self._remove_finally(node)

    # (1) signal --------------------------------------------------------------------------------------------

    @staticmethod
    def _misspelt_signal(name: str) -> str:
        return SIGNAL_MISSPELLINGS.get(name, name[:-1] if len(name) > 1 else name + "x")

    def _signal(self, call: ast.Call) -> None:
        if not isinstance(call.func, ast.Attribute) or call.func.attr not in ("connect", "disconnect"):
            return
        signatures = [arg for arg in call.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
                      and SIGNAL_RE.match(arg.value.strip())]
        for arg in signatures:
            self._signal_string(arg)
        signal_attribute = call.func.value  # PythonQt: button.clicked.connect(slot)
        if (not signatures and isinstance(signal_attribute, ast.Attribute)
                and SIGNAL_ATTRIBUTE_RE.search(signal_attribute.attr)):
            self._handled.add(id(signal_attribute))
            new = self._misspelt_signal(signal_attribute.attr)
            self._rename(signal_attribute, new, "signal", f".{signal_attribute.attr}.{call.func.attr} -> "
                         f".{new}.{call.func.attr} (signal name misspelt)")

    def _signal_string(self, arg: ast.Constant) -> None:
        match = SIGNAL_RE.match(arg.value.strip())
        assert match is not None
        name, arguments = match["name"], match["args"].strip()
        text = self.source.segment(arg)
        quote = text[-1] if text[-1:] in ("'", '"') else '"'
        start, end = self.source.start(arg), self.source.end(arg)

        def propose(signature: str, why: str) -> None:
            self.add("signal", start, end, f"{quote}{signature}{quote}", f"{text} -> {quote}{signature}{quote} ({why})")

        propose(f"{self._misspelt_signal(name)}({arguments})", "signal name misspelt")
        if arguments:
            propose(f"{name}()", "argument list dropped")
            first, *rest = [a.strip() for a in arguments.split(",")]
            other = SIGNAL_ARGUMENT_SWAPS.get(first, "int" if first != "int" else "bool")
            propose(f"{name}({', '.join([other, *rest])})", "argument type altered")
        else:
            propose(f"{name}(bool)", "argument added")

    # (2) attribute -----------------------------------------------------------------------------------------

    def _rename(self, node: ast.Attribute, new: str, category: str, description: str) -> None:
        end = self.source.end(node)
        start = end - len(node.attr.encode("utf-8"))
        if self.source.data[start:end] != node.attr.encode("utf-8"):
            return  # the name is not where expected (cannot happen for plain code); no mutant
        self.add(category, start, end, new, description)

    @staticmethod
    def _renamed_widget(name: str) -> str:
        for suffix, replacement in WIDGET_SUFFIX_SWAPS:
            if name.endswith(suffix) and len(name) > len(suffix):
                return name[: -len(suffix)] + replacement
        return name[:1].swapcase() + name[1:]

    def _attribute(self, node: ast.Attribute) -> None:
        if id(node) in self._handled or (node.attr.startswith("__") and node.attr.endswith("__")):
            return
        owner = node.value
        owner_text = short(self.source.segment(owner), 32)
        if dotted(owner) in ("self.ui", "ui"):
            if isinstance(node.ctx, ast.Load):
                new = self._renamed_widget(node.attr)
                self._rename(node, new, "attribute", f"{owner_text}.{node.attr} -> {owner_text}.{new} (widget name)")
        elif node.attr in PROPERTY_MISSPELLINGS:
            new = PROPERTY_MISSPELLINGS[node.attr]
            self._rename(node, new, "attribute", f".{node.attr} -> .{new} (Qt property name)")
        elif (last_name(owner) or "").lower().endswith(WIDGET_LIKE_SUFFIXES):
            new = node.attr + "x"
            self._rename(node, new, "attribute", f"{owner_text}.{node.attr} -> {owner_text}.{new} (attribute name)")

    # (3) swap-args -----------------------------------------------------------------------------------------

    def _swap_arguments(self, call: ast.Call) -> None:
        if last_name(call.func) in SYMMETRIC_CALLS:
            return
        args = call.args
        callee = short(self.source.segment(call.func), 40)
        for i in range(len(args) - 1):
            left, right = args[i], args[i + 1]
            if isinstance(left, ast.Starred) or isinstance(right, ast.Starred):
                continue
            left_text, right_text = self.source.segment(left), self.source.segment(right)
            if left_text == right_text:
                continue
            start, end = self.source.start(left), self.source.end(right)
            between = self.source.slice(self.source.end(left), self.source.start(right))
            self.add("swap-args", start, end, right_text + between + left_text,
                     f"{callee}(): arguments {i + 1} and {i + 2} swapped ({short(left_text, 24)} <-> "
                     f"{short(right_text, 24)})")

    # (4) remove-cleanup ------------------------------------------------------------------------------------

    def _remove_statement(self, statement: ast.stmt, description: str) -> None:
        self.add("remove-cleanup", self.source.start(statement), self.source.end(statement), "pass", description)

    def _remove_cleanup_call(self, statement: ast.Expr) -> None:
        call = statement.value
        if not isinstance(call, ast.Call):
            return
        if last_name(call.func) in CLEANUP_CALLS or (dotted(call.func) or "") in CLEANUP_DOTTED:
            self._remove_statement(statement, f"removed {short(self.source.segment(call))}")

    def _remove_del_sys_modules(self, statement: ast.Delete) -> None:
        if any(isinstance(t, ast.Subscript) and dotted(t.value) == "sys.modules" for t in statement.targets):
            self._remove_statement(statement, f"removed {short(self.source.segment(statement))}")

    def _remove_finally(self, node: ast.AST) -> None:
        body: list[ast.stmt] = getattr(node, "finalbody", [])
        if body:
            count = f"{len(body)} statement{'s' if len(body) > 1 else ''}"
            self.add("remove-cleanup", self.source.start(body[0]), self.source.end(body[-1]), "pass",
                     f"finally: body removed ({count}: {short(self.source.segment(body[0]), 32)}...)")

    # (5) negate --------------------------------------------------------------------------------------------

    def _negate(self, node: ast.If | ast.IfExp) -> None:
        test = node.test
        if isinstance(node, ast.If) and self._is_type_checking(test):
            return
        if isinstance(test, ast.Compare) and len(test.ops) == 1 and type(test.ops[0]) in INVERTED:
            return  # the inverted comparison is the same mutant
        text = self.source.segment(test)
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            operand = self.source.segment(test.operand)
            simple = isinstance(test.operand, (ast.Name, ast.Attribute, ast.Call, ast.Subscript, ast.Constant))
            new = operand if simple and "\n" not in operand else f"({operand})"
        elif isinstance(test, (ast.Name, ast.Attribute, ast.Call, ast.Subscript)):
            new = f"not {text}"
        else:
            new = f"not ({text})"
        keyword = "if" if isinstance(node, ast.If) else "... if"
        self.add("negate", self.source.start(test), self.source.end(test), new,
                 f"{keyword} {short(text, 36)} -> {keyword} {short(new, 40)}")

    def _invert_comparison(self, node: ast.Compare) -> None:
        operands = [node.left, *node.comparators]
        for i, op in enumerate(node.ops):
            if type(op) not in INVERTED:
                continue
            gap_start, gap_end = self.source.end(operands[i]), self.source.start(operands[i + 1])
            gap = self.source.slice(gap_start, gap_end)
            match = OPERATOR_RE.search(gap)
            if match is None:
                continue
            old = " ".join(match.group(0).split())
            new = INVERTED[type(op)]
            start = gap_start + len(gap[: match.start()].encode("utf-8"))
            end = gap_start + len(gap[: match.end()].encode("utf-8"))
            self.add("negate", start, end, new, f"{old} -> {new} in {short(self.source.segment(node), 48)}")

    # (6) node-id -------------------------------------------------------------------------------------------

    def _node_ids(self, call: ast.Call) -> None:
        callee_name = last_name(call.func) or ""
        callee = short(self.source.segment(call.func), 40)
        node_api = bool(NODE_API_RE.match(callee_name))
        values = [*call.args, *(k.value for k in call.keywords if k.arg is not None)]
        for value in values:
            if isinstance(value, (ast.Name, ast.Attribute)):
                name = last_name(value) or ""
                looks_like_node = bool(NODE_NAME_RE.search(name)) and not METHOD_NAME_RE.match(name)
                if name == "GetID" or callee_name in NODE_OR_ID_CALLS or not (node_api or looks_like_node):
                    continue
                text = self.source.segment(value)
                self.add("node-id", self.source.start(value), self.source.end(value), f"{text}.GetID()",
                         f"{short(text, 32)} -> {short(text, 32)}.GetID() in {callee}() (node passed as its ID)")
            elif (isinstance(value, ast.List) and len(value.elts) == 1
                  and not isinstance(value.elts[0], ast.Starred)):
                element = self.source.segment(value.elts[0])
                new = element if "\n" not in element else f"({element})"
                self.add("node-id", self.source.start(value), self.source.end(value), new,
                         f"[{short(element, 32)}] -> {short(element, 32)} in {callee}() (list passed as its element)")

    # (7) return-none ---------------------------------------------------------------------------------------

    def _return_none(self, node: ast.Return) -> None:
        value = node.value
        if value is None or (isinstance(value, ast.Constant) and value.value is None):
            return
        self.add("return-none", self.source.start(value), self.source.end(value), "None",
                 f"return {short(self.source.segment(value), 40)} -> return None")

    # (8) flip-bool -----------------------------------------------------------------------------------------

    def _flip(self, value: ast.Constant, before: str, after: str = "") -> None:
        new = "False" if value.value else "True"
        self.add("flip-bool", self.source.start(value), self.source.end(value), new,
                 f"{before}{value.value!r}{after} -> {before}{new}{after}")

    def _flip_call_booleans(self, call: ast.Call) -> None:
        for keyword in call.keywords:
            value = keyword.value
            if keyword.arg is not None and isinstance(value, ast.Constant) and isinstance(value.value, bool):
                self._flip(value, f"{keyword.arg}=")
        name = last_name(call.func) or ""
        if name.startswith("set"):  # Qt setters: setEnabled(False), setChecked(True)...
            for arg in call.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, bool):
                    self._flip(arg, f"{name}(", ")")

    def _flip_assigned_boolean(self, node: ast.Assign) -> None:
        if (isinstance(node.value, ast.Constant) and isinstance(node.value.value, bool)
                and any(isinstance(t, ast.Attribute) for t in node.targets)):
            target = short(self.source.segment(node.targets[0]), 40)
            self._flip(node.value, f"{target} = ")


INVERTED: dict[type, str] = {
    ast.Eq: "!=", ast.NotEq: "==", ast.Is: "is not", ast.IsNot: "is", ast.In: "not in", ast.NotIn: "in",
}
OPERATOR_RE = re.compile(r"==|!=|<=|>=|<|>|\bis\s+not\b|\bnot\s+in\b|\bis\b|\bin\b")
_CATEGORY_ORDER = {name: i for i, name in enumerate(CATEGORIES)}


def generate_mutants(text: str, path: str) -> list[Mutant]:
    """Every mutant of the module source ``text`` (``path`` names it in the IDs), in file order.

    Each mutant is one edit; mutants that compile to the same source as an earlier one, or as the original, or that
    do not compile, are left out. The IDs depend only on ``text`` and ``path``.
    """
    source = Source(text)
    tree = ast.parse(text, filename=path)
    generator = _Generator(source)
    generator.walk(tree)
    seen = {source.data}
    kept: list[_Candidate] = []
    for candidate in sorted(generator.candidates,
                            key=lambda c: (c.edit.start, _CATEGORY_ORDER[c.category], c.sequence)):
        mutated = candidate.edit.apply(source.data)
        if mutated in seen:
            continue
        try:
            compile(mutated, path, "exec", dont_inherit=True)
        except (SyntaxError, ValueError):
            continue
        seen.add(mutated)
        kept.append(candidate)
    mutants: list[Mutant] = []
    counters: dict[tuple[int, int, str], int] = {}
    for candidate in kept:
        line, col = source.position(candidate.edit.start)
        index = counters.get((line, col, candidate.category), 0)
        counters[(line, col, candidate.category)] = index + 1
        after = Source(candidate.edit.apply(source.data).decode("utf-8"))
        new_end = candidate.edit.start + len(candidate.edit.text.encode("utf-8"))
        mutants.append(Mutant(
            path=path, line=line, col=col, category=candidate.category, index=index,
            description=candidate.description, edit=candidate.edit,
            original=source.lines(candidate.edit.start, candidate.edit.end),
            mutated=after.lines(candidate.edit.start, max(new_end, candidate.edit.start + 1)),
        ))
    return mutants


def sanity_source(text: str, path: str) -> str:
    """``text`` with a statement raising ``RuntimeError(SANITY_MARKER ...)`` before its first statement (after the
    docstring and ``from __future__`` imports): a mutant that every test importing the file must fail on."""
    source = Source(text)
    tree = ast.parse(text, filename=path)
    body = list(tree.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body.pop(0)  # the docstring
    while body and isinstance(body[0], ast.ImportFrom) and body[0].module == "__future__":
        body.pop(0)
    statement = f"raise RuntimeError({f'{SANITY_MARKER} {path}'!r})\n"
    if not body:
        return text + ("" if text.endswith("\n") or not text else "\n") + statement
    first = body[0]
    line = min([first.lineno, *(d.lineno for d in getattr(first, "decorator_list", []))])
    offset = source.line_starts[line - 1]
    return (source.data[:offset] + statement.encode("utf-8") + source.data[offset:]).decode("utf-8")


# --- Equivalent mutants ----------------------------------------------------------------------------------------


def read_patches(path: Path, originals: dict[str, str]) -> list[Mutant]:
    """Hand-written mutants: a JSON list of ``{"file", "old", "new", "description"}``, each replacing the one
    occurrence of ``old`` in ``file`` (a target) by ``new``. Category ``named``; an ``old`` that is missing or not
    unique is an error, so the list cannot silently go stale."""
    mutants = []
    for number, patch in enumerate(json.loads(path.read_text(encoding="utf-8")), start=1):
        file, old, new = patch["file"], patch["old"], patch["new"]
        if file not in originals:
            raise ValueError(f"{path.name} #{number}: {file} is not a --target")
        data = originals[file].encode("utf-8")
        needle = old.encode("utf-8")
        if data.count(needle) != 1:
            raise ValueError(f"{path.name} #{number}: {old!r} occurs {data.count(needle)} times in {file}, not once")
        start = data.index(needle)
        edit = Edit(start, start + len(needle), new)
        line = data[:start].count(b"\n") + 1
        col = len(data[data.rfind(b"\n", 0, start) + 1:start].decode("utf-8")) + 1
        after = Source(edit.apply(data).decode("utf-8"))
        mutants.append(Mutant(file, line, col, "named", number, patch["description"], edit,
                              Source(originals[file]).lines(start, start + len(needle)),
                              after.lines(start, start + len(new.encode("utf-8")))))
    return mutants


def read_equivalent(path: Path | None) -> dict[str, str]:
    """Mutant ID -> reason, from a file of ``ID reason...`` lines (``#`` comments and blank lines ignored)."""
    if path is None or not path.is_file():
        return {}
    table: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        mutant_id, *reason = line.split(None, 1)
        if not reason:
            raise SystemExit(f"{path}:{number}: no reason given for {mutant_id} (write 'ID reason...')")
        table[mutant_id] = reason[0].strip()
    return table


# --- The repository copies -------------------------------------------------------------------------------------

_SKIPPED_DIRS = frozenset({".git", ".hg", ".svn", ".venv", "venv", "__pycache__", "node_modules", "build", "dist",
                           ".tox", ".nox", ".mypy_cache", ".pytest_cache", ".ruff_cache"})


def repository_files(repo: Path) -> list[str]:
    """The repository's files, relative: git's tracked and untracked non-ignored files, or (outside git) every file
    outside hidden, virtual-environment, build and cache folders. Never bytecode."""
    try:
        top = subprocess.run(["git", "-C", str(repo), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, check=True).stdout.strip()
        in_git = Path(top).resolve() == repo.resolve()
    except (OSError, subprocess.CalledProcessError):
        in_git = False
    if in_git:
        listed = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "-c", "-o", "--exclude-standard"],
                                capture_output=True, check=True).stdout.decode("utf-8").split("\0")
        names = sorted({name for name in listed if name and (repo / name).is_file()})
    else:
        names = []
        for folder, dirs, files in os.walk(repo):
            dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS and not d.startswith(".")
                             and not d.endswith(".egg-info"))
            names += [Path(folder, f).relative_to(repo).as_posix() for f in sorted(files)]
    return [n for n in names if "__pycache__" not in n.split("/") and not n.endswith((".pyc", ".pyo"))]


def package_roots(files: Iterable[str]) -> list[str]:
    """Folders (relative, ``.`` for the top) holding a top-level package: a folder with ``__init__.py`` whose
    parent has none."""
    packages = {str(Path(f).parent.as_posix()) for f in files if Path(f).name == "__init__.py"}
    roots = set()
    for package in packages:
        parent = Path(package).parent.as_posix()
        if parent not in packages and package != ".":
            roots.add(parent)
    return sorted(roots)


_PROBE = """
import importlib.util, json, sys
found = {}
for name in json.loads(sys.argv[1]):
    try:
        spec = importlib.util.find_spec(name)
    except Exception:
        spec = None
    if spec is None:
        continue
    paths = [spec.origin] if spec.origin and spec.origin not in ("built-in", "frozen") else []
    found[name] = paths + list(spec.submodule_search_locations or [])
print(json.dumps(found))
"""


def probe_imports(python: str, names: Sequence[str], env: dict[str, str], cwd: Path) -> dict[str, list[str]]:
    """Where ``python`` finds each top-level module or package of ``names`` (files and folders)."""
    if not names:
        return {}
    result = subprocess.run([python, "-c", _PROBE, json.dumps(list(names))], capture_output=True, text=True, env=env,
                            cwd=cwd, timeout=120, check=False)
    if result.returncode != 0:
        raise SystemExit(f"could not ask {python} where it imports from:\n{result.stderr}")
    return json.loads(result.stdout)


def _inside(path: str, folder: Path) -> bool:
    try:
        return Path(path).resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


@dataclasses.dataclass
class RunResult:
    """One pytest run: exit code (None: timed out), output, duration."""

    code: int | None
    output: str
    seconds: float

    @property
    def failing(self) -> str:
        """The first FAILED/ERROR line of pytest's summary, or the last line of output."""
        for line in self.output.splitlines():
            if line.startswith(("FAILED ", "ERROR ")):
                return short(line, 160)
        lines = [line for line in self.output.splitlines() if line.strip()]
        return short(lines[-1], 160) if lines else ""


class Workspace:
    """A worker's copy of the repository, in which one mutant at a time is applied and the tests run."""

    def __init__(self, repo: Path, files: Sequence[str], parent: Path, name: str) -> None:
        self.repo = repo
        self.root = parent / name
        for relative in files:
            source, target = repo / relative, self.root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_symlink():
                os.symlink(os.readlink(source), target)
            else:
                shutil.copy2(source, target)
        self.env: dict[str, str] = dict(os.environ)
        self._process: subprocess.Popen[bytes] | None = None

    def set_python_path(self, entries: Sequence[str]) -> None:
        """Put the copy's folders first on the import path, before anything installed (editable or not)."""
        paths = [str((self.root / entry).resolve()) for entry in entries]
        inherited = os.environ.get("PYTHONPATH")
        self.env["PYTHONPATH"] = os.pathsep.join(paths + ([inherited] if inherited else []))
        self.env["PYTHONDONTWRITEBYTECODE"] = "1"  # no stale bytecode of a same-size mutant written the same second

    def run(self, command: Sequence[str], timeout: float) -> RunResult:
        started = time.monotonic()
        process = subprocess.Popen(list(command), cwd=self.root, env=self.env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self._process = process
        try:
            output, _ = process.communicate(timeout=timeout)
            code: int | None = process.returncode
        except subprocess.TimeoutExpired:
            self.kill()
            output, _ = process.communicate()
            code = None
        finally:
            self._process = None
        return RunResult(code, output.decode("utf-8", "replace"), time.monotonic() - started)

    def kill(self) -> None:
        """Stop the running test process and everything it started (its own process group)."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        try:
            if hasattr(os, "killpg"):
                os.killpg(process.pid, signal.SIGKILL)
            else:  # pragma: no cover - Windows
                process.kill()
        except ProcessLookupError:
            pass

    def run_with(self, relative: str, content: bytes, command: Sequence[str], timeout: float) -> RunResult:
        """Run the tests with ``relative`` replaced by ``content``, then put the file back."""
        path = self.root / relative
        original = path.read_bytes()
        path.write_bytes(content)
        try:
            return self.run(command, timeout)
        finally:
            path.write_bytes(original)


# --- Running ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    """What the tests did to one mutant."""

    mutant: Mutant
    status: str  #: killed, survived or timeout
    seconds: float
    killed_by: str = ""
    equivalent: str | None = None  #: the reason, if listed in the equivalent file


def run_pool(workspaces: Sequence[Workspace], jobs: Sequence[tuple[str, bytes]], command: Sequence[str],
             timeout: float, done: Callable[[int, RunResult], None]) -> None:
    """Run ``jobs`` (file, content) across the workspaces, one at a time in each; ``done(index, result)`` is called
    as each ends. Ctrl-C stops the running tests and re-raises."""
    pending: queue.Queue[int] = queue.Queue()
    for index in range(len(jobs)):
        pending.put(index)
    stop = threading.Event()
    errors: list[BaseException] = []

    def work(workspace: Workspace) -> None:
        while not stop.is_set():
            try:
                index = pending.get_nowait()
            except queue.Empty:
                return
            try:
                result = workspace.run_with(jobs[index][0], jobs[index][1], command, timeout)
                if not stop.is_set():
                    done(index, result)
            except BaseException as error:  # noqa: BLE001 - handed to the main thread
                errors.append(error)
                stop.set()

    threads = [threading.Thread(target=work, args=(w,), daemon=True) for w in workspaces]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    except KeyboardInterrupt:
        stop.set()
        for workspace in workspaces:
            workspace.kill()
        for thread in threads:
            thread.join()
        raise
    if errors:
        raise errors[0]


@dataclasses.dataclass
class Report:
    """The whole run, as printed and as written by ``--json``."""

    targets: list[str]
    tests: str
    baseline_seconds: float
    seconds: float
    outcomes: list[Outcome]
    stale_equivalent: list[str]

    def rows(self) -> list[dict[str, object]]:
        """One row per category that has mutants, then the total; equivalent mutants are left out."""
        counted = [o for o in self.outcomes if o.equivalent is None]
        rows = []
        for category in [*CATEGORIES, "total"]:
            group = [o for o in counted if category in ("total", o.mutant.category)]
            if not group and category != "total":
                continue
            killed = sum(o.status == "killed" for o in group)
            timeout = sum(o.status == "timeout" for o in group)
            rate = (killed + timeout) / len(group) if group else None
            rows.append({"category": category, "mutants": len(group), "killed": killed,
                         "survived": len(group) - killed - timeout, "timeout": timeout, "kill_rate": rate})
        return rows

    @property
    def kill_rate(self) -> float | None:
        return self.rows()[-1]["kill_rate"]  # type: ignore[return-value]

    def to_json(self) -> dict[str, object]:
        return {
            "targets": self.targets, "tests": self.tests, "baseline_seconds": round(self.baseline_seconds, 2),
            "seconds": round(self.seconds, 1), "categories": self.rows(), "kill_rate": self.kill_rate,
            "equivalent": sum(o.equivalent is not None for o in self.outcomes),
            "stale_equivalent": self.stale_equivalent,
            "mutants": [{
                "id": o.mutant.id, "file": o.mutant.path, "line": o.mutant.line, "col": o.mutant.col,
                "category": o.mutant.category, "description": o.mutant.description, "original": o.mutant.original,
                "mutated": o.mutant.mutated, "status": o.status, "seconds": round(o.seconds, 2),
                "killed_by": o.killed_by, "equivalent": o.equivalent,
            } for o in self.outcomes],
        }

    def text(self) -> str:
        lines = [f"{'category':<16}{'mutants':>9}{'killed':>9}{'survived':>10}{'timeout':>9}{'kill rate':>11}"]
        for row in self.rows():
            rate = "-" if row["kill_rate"] is None else f"{100 * row['kill_rate']:.1f}%"  # type: ignore[operator]
            if row["category"] == "total":
                lines.append("-" * 64)
            lines.append(f"{row['category']:<16}{row['mutants']:>9}{row['killed']:>9}{row['survived']:>10}"
                         f"{row['timeout']:>9}{rate:>11}")
        total = self.rows()[-1]
        rate = "-" if total["kill_rate"] is None else f"{100 * total['kill_rate']:.1f}%"  # type: ignore[operator]
        equivalent = [o for o in self.outcomes if o.equivalent is not None]
        lines += ["", (f"Kill rate: {rate} ({total['killed']} killed + {total['timeout']} timed out of "
                       f"{total['mutants']} mutants; timeouts count as killed)")]
        lines.append(f"Equivalent mutants (listed in the equivalent file, excluded from the rate): {len(equivalent)}")
        for outcome in equivalent:
            if outcome.status != "survived":
                lines.append(f"  {outcome.mutant.id} is listed as equivalent but was {outcome.status}: remove it "
                             f"from the list")
        for stale in self.stale_equivalent:
            lines.append(f"  {stale} is listed as equivalent but no such mutant exists now (stale ID)")
        survivors = [o for o in self.outcomes if o.equivalent is None and o.status == "survived"]
        lines += ["", f"Surviving mutants: {len(survivors)}"]
        for outcome in survivors:
            mutant = outcome.mutant
            lines.append(f"  {mutant.id}  {mutant.location}  {mutant.description}")
            lines += [f"      - {line.strip()}" for line in mutant.original.splitlines()[:4]]
            lines += [f"      + {line.strip()}" for line in mutant.mutated.splitlines()[:4]]
        lines.append("")
        lines.append(f"Time: {self.seconds:.0f} s (baseline run {self.baseline_seconds:.1f} s)")
        return "\n".join(lines)


def _fail(message: str) -> int:
    print(f"mutate.py: {message}", file=sys.stderr)
    return 2


def _repository(path: str | None) -> Path:
    if path:
        return Path(path).resolve()
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True)
        return Path(top.stdout.strip()).resolve()
    except (OSError, subprocess.CalledProcessError):
        return Path.cwd().resolve()


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Mutation testing of a Slicer module: mutate the target files one change at a time, run the "
                    "tests on each mutant in a copy of the repository, report the kill rate and the survivors.")
    parser.add_argument("--target", action="append", required=True, metavar="FILE",
                        help="a file to mutate, relative to the repository (repeat for several)")
    parser.add_argument("--tests", default="", metavar="ARGS",
                        help='what pytest runs, as one string, e.g. "Testing/test_a.py Testing/test_b.py"')
    parser.add_argument("--repo", metavar="DIR", help="the repository (default: the git top folder of the current one)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per mutant (default 120)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="mutants run at once")
    parser.add_argument("--sample", type=int, metavar="N", help="run a random sample of N mutants")
    parser.add_argument("--seed", type=int, default=0, help="the sample's random seed (default 0)")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop (no tests run)")
    parser.add_argument("--only", action="append", metavar="ID", help="run only this mutant (repeat for several)")
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    parser.add_argument("--equivalent", metavar="FILE",
                        help="mutant IDs judged equivalent, one 'ID reason' a line (default: equivalent.txt beside "
                             "this script)")
    parser.add_argument("--python", default=sys.executable, help="the Python that runs pytest (default: this one)")
    parser.add_argument("--pythonpath", action="append", default=[], metavar="DIR",
                        help="a repository folder to put first on the tests' import path (found automatically: "
                             "package roots, the targets' own folders, editable installs' folders)")
    parser.add_argument("--allow-unimported", action="store_true",
                        help="go on when the tests never import a target (its mutants can then only be killed by "
                             "tests reading its source)")
    parser.add_argument("--patches", metavar="FILE",
                        help="also run the hand-written mutants of this JSON file (see the README)")
    parser.add_argument("--patches-only", action="store_true", help="run only the --patches mutants")
    parser.add_argument("--fail-under", type=float, metavar="PERCENT", help="exit 1 if the kill rate is lower")
    parser.add_argument("--keep", action="store_true", help="keep the repository copies (their folder is printed)")
    return parser.parse_args(argv)


def _targets(repo: Path, names: Sequence[str]) -> list[str]:
    targets = []
    for name in names:
        path = Path(name)
        path = (path if path.is_absolute() else repo / path).resolve()
        if not path.is_file():
            raise SystemExit(f"mutate.py: no such target file: {name}")
        if not path.is_relative_to(repo):
            raise SystemExit(f"mutate.py: {name} is not inside the repository {repo}")
        targets.append(path.relative_to(repo).as_posix())
    return list(dict.fromkeys(targets))


def _python_path(repo: Path, files: Sequence[str], targets: Sequence[str], extra: Sequence[str], python: str,
                 scratch: Path) -> tuple[list[str], list[str], list[str]]:
    """The copy's folders to put first on the import path; the package names that must then be found in the copy;
    and every package name of the repository (none may be found in the repository itself)."""
    entries = list(extra)
    file_set = set(files)
    for target in targets:  # a module file outside any package (Slicer puts its folder on sys.path)
        folder = Path(target).parent.as_posix()
        if ("__init__.py" if folder == "." else f"{folder}/__init__.py") not in file_set:
            entries.append(folder)
    roots = package_roots(files)
    entries += roots
    packages = [Path(f).parent.as_posix() for f in files if Path(f).name == "__init__.py"]
    top_level = {Path(p).name for p in packages if Path(p).parent.as_posix() in roots}
    names = sorted({Path(p).name for p in packages if Path(p).name.isidentifier()})
    # Editable installs of the repository's packages (package-dir mappings included): their folders too.
    for name, paths in probe_imports(python, names, dict(os.environ), scratch).items():
        for found in paths:
            if _inside(found, repo):
                location = Path(found).resolve()
                package = location.parent if location.is_file() else location
                root = package.parent.relative_to(repo.resolve()).as_posix()
                if (repo / root).is_dir():
                    entries.append(root)
                    top_level.add(name)
    return list(dict.fromkeys(entries)), sorted(n for n in top_level if n.isidentifier()), names


def _check_imports(workspace: Workspace, python: str, repo: Path, expected: Sequence[str],
                   names: Sequence[str]) -> str | None:
    """Why the copy would not import its own packages, or None: each of ``expected`` must be found in the copy,
    none of ``names`` in the repository itself (an editable install)."""
    for name, paths in probe_imports(python, names, workspace.env, workspace.root).items():
        inside_repo = [p for p in paths if _inside(p, repo) and not _inside(p, workspace.root)]
        if inside_repo:
            return f"'{name}' is imported from the repository itself ({inside_repo[0]}), not from the copy"
        if name in expected and not any(_inside(p, workspace.root) for p in paths):
            return f"'{name}' is imported from {paths[0] if paths else '?'}, not from the copy"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the tool; returns the exit code (0 done, 1 kill rate under --fail-under, 2 cannot run)."""
    arguments = parse_arguments(argv)
    started = time.monotonic()
    repo = _repository(arguments.repo)
    targets = _targets(repo, arguments.target)
    originals = {t: (repo / t).read_text(encoding="utf-8") for t in targets}
    mutants = [m for t in targets for m in generate_mutants(originals[t], t)]
    if arguments.patches:
        try:
            named = read_patches(Path(arguments.patches), originals)
        except (OSError, ValueError, KeyError) as error:
            return _fail(f"--patches: {error}")
        mutants = named if arguments.patches_only else mutants + named
    equivalent_file = Path(arguments.equivalent) if arguments.equivalent else Path(__file__).with_name(
        "equivalent.txt")
    equivalent = read_equivalent(equivalent_file)
    known = {m.id for m in mutants}
    stale = sorted(i for i in equivalent if i.split(":")[0] in targets and i not in known)

    if arguments.only:
        wanted = set(arguments.only)
        missing = sorted(wanted - known)
        if missing:
            return _fail(f"no such mutant: {', '.join(missing)} (see --list)")
        mutants = [m for m in mutants if m.id in wanted]
    if arguments.sample is not None and arguments.sample < len(mutants):
        chosen = set(random.Random(arguments.seed).sample(range(len(mutants)), arguments.sample))
        mutants = [m for i, m in enumerate(mutants) if i in chosen]

    if arguments.list:
        for mutant in mutants:
            mark = "  [equivalent]" if mutant.id in equivalent else ""
            print(f"{mutant.id}  {mutant.description}{mark}")
            print(f"    - {mutant.original.splitlines()[0].strip()}")
            print(f"    + {mutant.mutated.splitlines()[0].strip()}")
        counts = {c: sum(m.category == c for m in mutants) for c in CATEGORIES}
        print(f"\n{len(mutants)} mutants: " + ", ".join(f"{c} {n}" for c, n in counts.items()))
        if arguments.json:
            Path(arguments.json).write_text(json.dumps({"mutants": [
                {"id": m.id, "category": m.category, "description": m.description, "original": m.original,
                 "mutated": m.mutated} for m in mutants]}, indent=2) + "\n", encoding="utf-8")
        return 0
    if not arguments.tests.strip():
        return _fail("--tests is needed to run the mutants (or use --list)")
    if not mutants:
        return _fail("no mutants to run")

    command = [arguments.python, "-m", "pytest", *PYTEST_OPTIONS, *shlex.split(arguments.tests)]
    scratch = Path(tempfile.mkdtemp(prefix="mutation-"))
    try:
        return _run(arguments, repo, targets, originals, mutants, equivalent, stale, command, scratch, started)
    except KeyboardInterrupt:
        print("\nmutate.py: interrupted", file=sys.stderr)
        return 130
    finally:
        if arguments.keep:
            print(f"Repository copies kept in {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def _run(arguments: argparse.Namespace, repo: Path, targets: list[str], originals: dict[str, str],
         mutants: list[Mutant], equivalent: dict[str, str], stale: list[str], command: list[str], scratch: Path,
         started: float) -> int:
    files = repository_files(repo)
    files = sorted(set(files) | set(targets))
    entries, expected, names = _python_path(repo, files, targets, arguments.pythonpath, arguments.python, scratch)
    jobs = max(1, min(arguments.jobs, len(mutants)))
    workspaces = [Workspace(repo, files, scratch, f"copy{i}") for i in range(jobs)]
    for workspace in workspaces:
        workspace.set_python_path(entries)
        problem = _check_imports(workspace, arguments.python, repo, expected, names)
        if problem:
            return _fail(f"in the copy, {problem}: add the folder that holds it with --pythonpath")
    log = sys.stderr
    print(f"Repository copied {jobs}x into {scratch} ({len(files)} files); import path first: "
          f"{', '.join(entries) or '(none)'}", file=log)

    print(f"Baseline: {' '.join(shlex.quote(c) for c in command[1:])}", file=log)
    baseline = workspaces[0].run(command, max(arguments.timeout * 10, 600))
    if baseline.code != 0:
        return _fail(f"the tests fail without any mutation (exit {baseline.code}); fix them first:\n"
                     f"{baseline.output[-4000:]}")
    if not re.search(r"\b[1-9]\d* passed\b", baseline.output):
        return _fail(f"the baseline ran no test that passed:\n{baseline.output[-2000:]}")
    print(f"Baseline passed in {baseline.seconds:.1f} s", file=log)
    if baseline.seconds > arguments.timeout / 2:
        print(f"warning: the baseline took {baseline.seconds:.0f} s, near --timeout {arguments.timeout:.0f}: "
              f"mutants may time out for no reason", file=log)

    # Sanity: a target raising at import must fail the tests, with its marker in the output (the copy's file ran).
    sanity_targets = sorted({m.path for m in mutants})
    sanity: dict[str, RunResult] = {}
    run_pool(workspaces, [(t, sanity_source(originals[t], t).encode("utf-8")) for t in sanity_targets], command,
             arguments.timeout, lambda i, r: sanity.__setitem__(sanity_targets[i], r))
    for target in sanity_targets:
        result = sanity[target]
        if result.code == 0:
            message = (f"the tests passed with {target} raising at import: they never import the copy's {target}, "
                       f"so its mutants can only be killed by tests reading its source")
            if not arguments.allow_unimported:
                return _fail(message + " (check the import path, or pass --allow-unimported)")
            print(f"warning: {message}", file=log)
        elif SANITY_MARKER not in result.output:
            print(f"warning: the sanity mutant of {target} failed the tests, but its error is not in their output "
                  f"({result.failing}): check that the tests import the copy's file", file=log)
        else:
            print(f"Sanity: the tests import the copy's {target}", file=log)

    outcomes: list[Outcome | None] = [None] * len(mutants)
    lock = threading.Lock()
    finished = [0]

    def done(index: int, result: RunResult) -> None:
        mutant = mutants[index]
        status = "timeout" if result.code is None else "survived" if result.code == 0 else "killed"
        outcome = Outcome(mutant, status, result.seconds, result.failing if status == "killed" else "",
                          equivalent.get(mutant.id))
        with lock:
            outcomes[index] = outcome
            finished[0] += 1
            print(f"[{finished[0]:>4}/{len(mutants)}] {status:<8} {result.seconds:6.1f} s  {mutant.id}", file=log)

    print(f"Running {len(mutants)} mutants, {jobs} at a time, {arguments.timeout:.0f} s each at most", file=log)
    run_pool(workspaces, [(m.path, m.edit.apply(originals[m.path].encode("utf-8"))) for m in mutants], command,
             arguments.timeout, done)
    report = Report(targets, arguments.tests, baseline.seconds, time.monotonic() - started,
                    [o for o in outcomes if o is not None], stale)
    print(report.text())
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    rate = report.kill_rate
    if arguments.fail_under is not None and (rate is None or 100 * rate < arguments.fail_under):
        print(f"mutate.py: the kill rate is under {arguments.fail_under}%", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
