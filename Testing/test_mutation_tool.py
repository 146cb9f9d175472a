"""Unit tests of the mutation tool, Testing/mutation/mutate.py: the mutant generator on small inline snippets, and a
tiny end-to-end run on a throwaway package.

The kill rate of the Slicer module's tests is measured by running the tool (see Testing/mutation/README.md), not
here.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

TOOL = Path(__file__).resolve().parent / "mutation" / "mutate.py"


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("segalign_mutation_tool", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


mutate = _load_tool()


def mutants_of(source: str, path: str = "pkg/module.py") -> list:
    """The mutants of a dedented snippet."""
    return mutate.generate_mutants(textwrap.dedent(source), path)


def changed(source: str, category: str) -> set[str]:
    """The first mutated line of each mutant of ``category``, stripped."""
    return {m.mutated.splitlines()[0].strip() for m in mutants_of(source) if m.category == category}


# --- Each category yields the expected mutants ------------------------------------------------------------------


def test_signal_signatures_are_misspelt_and_their_arguments_dropped_or_altered() -> None:
    assert changed('self.ui.applyButton.connect("clicked(bool)", self.onApply)\n', "signal") == {
        'self.ui.applyButton.connect("click(bool)", self.onApply)',
        'self.ui.applyButton.connect("clicked()", self.onApply)',
        'self.ui.applyButton.connect("clicked(int)", self.onApply)',
    }
    assert changed("selector.disconnect('currentNodeChanged(vtkMRMLNode*)', self.onNode)\n", "signal") == {
        "selector.disconnect('nodeChanged(vtkMRMLNode*)', self.onNode)",
        "selector.disconnect('currentNodeChanged()', self.onNode)",
        "selector.disconnect('currentNodeChanged(vtkMRMLNode)', self.onNode)",
    }
    assert changed('timer.connect("timeout()", self.tick)\n', "signal") == {
        'timer.connect("timeou()", self.tick)', 'timer.connect("timeout(bool)", self.tick)'}


def test_pythonqt_signal_attributes_are_misspelt_once() -> None:
    source = "self.ui.applyButton.clicked.connect(self.onApply)\n"
    assert changed(source, "signal") == {"self.ui.applyButton.click.connect(self.onApply)"}
    assert "self.ui.applyButton.clickedx.connect(self.onApply)" not in changed(source, "attribute")


def test_strings_and_attributes_that_are_not_signals_are_left_alone() -> None:
    assert changed('client.connect("localhost", 8080)\n', "signal") == set()
    assert changed("self.database.connect(url)\n", "signal") == set()


def test_widget_names_and_qt_property_names_are_renamed() -> None:
    source = """\
        self.ui.applyButton.enabled = ready
        self.ui.summaryTextEdit.plainText = text
        if progressDialog.wasCanceled:
            path = self.ui.segmentationPathLineEdit.currentPath
        self.ui.statusLabel.show()
        okButton.setIcon(icon)
        result.data.size
    """
    assert changed(source, "attribute") == {
        "self.ui.applyPushButton.enabled = ready",
        "self.ui.applyButton.enable = ready",
        "self.ui.summaryPlainTextEdit.plainText = text",
        "self.ui.summaryTextEdit.text = text",
        "if progressDialog.wasCancelled:",
        "path = self.ui.segmentationLineEdit.currentPath",
        "path = self.ui.segmentationPathLineEdit.path",
        "self.ui.StatusLabel.show()",  # no known suffix: the first letter's case
        "okButton.setIconx(icon)",  # statusLabel is not widget-like by its name, okButton is
    }


def test_neighbouring_positional_arguments_are_swapped() -> None:
    assert changed("f(a, b, c)\n", "swap-args") == {"f(b, a, c)", "f(a, c, b)"}
    assert changed("f(a,\n  b)\n", "swap-args") == {"f(b,"}
    source = """\
        g(x, x)
        h(*items, last)
        k(a, key=b)
        self.assertEqual(first, second)
        np.array_equal(first, second)
    """
    assert changed(source, "swap-args") == set()


def test_cleanup_calls_del_sys_modules_and_finally_bodies_are_removed() -> None:
    source = """\
        def cleanup(self):
            self.removeObservers()
            slicer.mrmlScene.RemoveNode(node)
            shutil.rmtree(folder)
            del sys.modules[name]
            del table[name]
            cache.clear()
            try:
                work()
            finally:
                qt.QApplication.restoreOverrideCursor()
                self.busy = None
    """
    removals = [m for m in mutants_of(source) if m.category == "remove-cleanup"]
    assert {m.original.strip() for m in removals} == {
        "self.removeObservers()", "slicer.mrmlScene.RemoveNode(node)", "shutil.rmtree(folder)",
        "del sys.modules[name]", "qt.QApplication.restoreOverrideCursor()",
        "qt.QApplication.restoreOverrideCursor()\n        self.busy = None",  # the whole finally: body
    }
    assert all(m.mutated.strip().startswith("pass") for m in removals)
    whole_finally = next(m for m in removals if "finally" in m.description)
    text = textwrap.dedent(source).encode()
    mutated = whole_finally.edit.apply(text).decode()
    assert "restoreOverrideCursor" not in mutated and "self.busy = None" not in mutated


def test_conditions_are_negated_and_comparisons_inverted() -> None:
    source = """\
        if dialog.exec_() != qt.QDialog.Accepted:
            pass
        if not folder:
            pass
        if ready:
            pass
        if a and b:
            pass
        x = a is None
        y = key in table
        z = 1 if flag else 2
    """
    assert changed(source, "negate") == {
        "if dialog.exec_() == qt.QDialog.Accepted:",
        "if folder:",
        "if not ready:",
        "if not (a and b):",
        "x = a is not None",
        "y = key not in table",
        "z = 1 if not flag else 2",
    }
    assert len([m for m in mutants_of(source) if m.category == "negate" and m.line == 1]) == 1, \
        "an if on one comparison is inverted once, not also negated"


def test_nodes_are_passed_as_their_ids_and_lists_as_their_element() -> None:
    source = """\
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        selector.setCurrentNode(node)
        displayNode.SetAndObserveColorNodeID(colorNode.GetID())
        DICOMUtils.loadSeriesByUID([uid])
        logic.process(inputVolume, 3)
        widget.connect("clicked(bool)", self.onImportSegmentation)
        slicer.util.setSliceViewerLayers(background=volume)
    """
    assert changed(source, "node-id") == {
        "segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode.GetID())",
        "selector.setCurrentNode(node.GetID())",
        "DICOMUtils.loadSeriesByUID(uid)",
        "logic.process(inputVolume.GetID(), 3)",
    }


def test_returned_values_become_none() -> None:
    source = """\
        def f(x):
            if x:
                return x + 1
            if x is None:
                return None
            return
    """
    returns = [m for m in mutants_of(source) if m.category == "return-none"]
    assert [(m.original.strip(), m.mutated.strip()) for m in returns] == [("return x + 1", "return None")]


def test_boolean_keyword_setter_and_attribute_constants_are_flipped() -> None:
    source = """\
        with slicer.util.tryWithErrorDisplay(message, waitCursor=True):
            dialog.setComboBoxEditable(False)
        self.ui.applyButton.enabled = False
        flag = True
        f(True)
    """
    assert changed(source, "flip-bool") == {
        "with slicer.util.tryWithErrorDisplay(message, waitCursor=False):",
        "dialog.setComboBoxEditable(True)",
        "self.ui.applyButton.enabled = True",
    }


# --- What is never mutated ---------------------------------------------------------------------------------------


def test_docstrings_annotations_messages_and_type_checking_code_are_not_mutated() -> None:
    source = '''\
        """Module: if a == b: f(a, b); return x; self.ui.okButton.connect("clicked(bool)", slot)."""
        from __future__ import annotations

        from typing import TYPE_CHECKING, Annotated

        if TYPE_CHECKING:
            Alias = g(a, b)


        def f(a: Annotated[int, Range(0, 1)], b: Node[x, y] = None) -> Map(str, int):
            """Doc: return a != b."""
            logging.info("%s %s", a, b)
            logger.warning("%s", h(a, b))
            message = _("{a} {b}").format(a=a, b=h(b, a))
            text = tr("{} {}") % (g(a, b), a)
            value: Annotated[float, Range(0.0, 1.0)] = 0.4
            print(a, b)
    '''
    assert mutants_of(source) == []


# --- Every mutant is one compiling change, with a stable ID ------------------------------------------------------

SLICER_LIKE = '''\
"""A panel much like a Slicer module's widget, with something for every category."""

import shutil
import sys

import qt
import slicer


class Widget:
    def setup(self):
        self.ui.applyButton.connect("clicked(bool)", self.onApply)
        self.ui.inputSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onInput)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onClose)

    def cleanup(self):
        self.removeObservers()
        for name in [n for n in sys.modules if n.startswith("segalign.")]:
            del sys.modules[name]

    def onApply(self):
        dialog = slicer.util.createProgressDialog(parent=None, maximum=100)
        self.ui.applyButton.enabled = False
        try:
            with slicer.util.tryWithErrorDisplay(_("Failed."), waitCursor=True):
                volume = self.ui.inputSelector.currentNode()
                segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
                if dialog.wasCanceled or volume is None:
                    return None
                self.ui.summaryTextEdit.plainText = self.logic.summary(volume, segmentation)
        finally:
            dialog.close()
            shutil.rmtree(self.scratch, ignore_errors=True)

    def choose(self, items):
        dialog = qt.QInputDialog(slicer.util.mainWindow())
        dialog.setComboBoxItems([item.label() for item in items])
        if dialog.exec_() != qt.QDialog.Accepted:
            return None
        return items[[item.label() for item in items].index(dialog.textValue())]
'''


def test_every_category_appears_and_every_mutant_is_one_compiling_change() -> None:
    found = mutate.generate_mutants(SLICER_LIKE, "pkg/widget.py")
    assert {m.category for m in found} == set(mutate.CATEGORIES) - {"named"}, "named ones come only from --patches"
    original = ast.dump(ast.parse(SLICER_LIKE))
    data = SLICER_LIKE.encode()
    for mutant in found:
        mutated = mutant.edit.apply(data)
        compile(mutated, mutant.path, "exec", dont_inherit=True)
        assert ast.dump(ast.parse(mutated)) != original, mutant.id
        # One change: everything before the edit and after it is the original text.
        assert mutated.startswith(data[: mutant.edit.start]) and mutated.endswith(data[mutant.edit.end:])
        line = SLICER_LIKE.splitlines()[mutant.line - 1]
        assert mutant.original.splitlines()[0] == line
        assert line[mutant.col - 1:].startswith(data[mutant.edit.start:mutant.edit.end].decode()[:10]), mutant.id
    assert len({m.edit.apply(data) for m in found}) == len(found), "no two mutants are the same program"


def test_ids_are_unique_and_stable_between_runs() -> None:
    first = [m.id for m in mutate.generate_mutants(SLICER_LIKE, "pkg/widget.py")]
    second = [m.id for m in mutate.generate_mutants(SLICER_LIKE, "pkg/widget.py")]
    assert first == second and len(set(first)) == len(first)
    categories = "|".join(map(re.escape, mutate.CATEGORIES))
    pattern = re.compile(rf"^pkg/widget\.py:\d+:\d+:({categories}):\d+$")
    assert all(pattern.match(i) for i in first), first
    assert "pkg/widget.py:12:37:signal:0" in first  # "clicked(bool)" on line 12, column 37


def test_sanity_mutant_raises_at_import_after_the_docstring_and_future_imports(tmp_path: Path) -> None:
    source = '"""Doc."""\nfrom __future__ import annotations\n\n\n@staticmethod\ndef f():\n    pass\n'  # before the @
    sane = mutate.sanity_source(source, "pkg/m.py")
    tree = ast.parse(sane)
    assert isinstance(tree.body[2], ast.Raise) and mutate.SANITY_MARKER in ast.unparse(tree.body[2])
    module = tmp_path / "sane_module.py"
    module.write_text(sane)
    spec = importlib.util.spec_from_file_location("sane_module", module)
    assert spec is not None and spec.loader is not None
    with pytest.raises(RuntimeError, match=mutate.SANITY_MARKER):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


def test_equivalent_file_needs_a_reason(tmp_path: Path) -> None:
    listed = tmp_path / "equivalent.txt"
    listed.write_text("# comment\n\npkg/m.py:3:5:negate:0   both branches do the same\npkg/m.py:9:1:negate:0\tsame\n",
                      encoding="utf-8")
    assert mutate.read_equivalent(listed) == {"pkg/m.py:3:5:negate:0": "both branches do the same",
                                              "pkg/m.py:9:1:negate:0": "same"}
    listed.write_text("pkg/m.py:3:5:negate:0\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="no reason"):
        mutate.read_equivalent(listed)


def test_package_roots_are_the_folders_above_top_level_packages() -> None:
    files = ["SegAlign/SegAlign.py", "SegAlign/segalign/__init__.py", "SegAlign/segalign/readers/__init__.py",
             "top/__init__.py", "Testing/test_x.py"]
    assert mutate.package_roots(files) == [".", "SegAlign"]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_repository_files_are_tracked_and_untracked_but_not_ignored(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("ignored.txt\n__pycache__/\n")
    for name in ("tracked.py", "untracked.py", "ignored.txt", "__pycache__/x.cpython-311.pyc"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("x = 1\n")
    subprocess.run(["git", "-C", str(tmp_path), "add", "tracked.py", ".gitignore"], check=True)
    assert mutate.repository_files(tmp_path) == [".gitignore", "tracked.py", "untracked.py"]


# --- End to end on a throwaway package ---------------------------------------------------------------------------

CALC = '''\
"""A throwaway module for the mutation tool's end-to-end test."""

import time


def double(x):
    return x * 2


def halve(x):
    return x / 2


def pause(long):
    if long:
        time.sleep(60)
'''

KILLS_DOUBLE_ONLY = '''\
from pkg.calc import double, pause


def test_double():
    pause(False)
    assert double(2) == 4
'''


def throwaway_repository(root: Path, test_source: str) -> Path:
    """A package ``pkg`` in ``lib/`` (not at the top, where ``python -m pytest`` would find it anyway, like the
    ``segalign`` package in ``SegAlign/``) with the module above, and a ``tests`` folder holding ``test_source``."""
    (root / "lib" / "pkg").mkdir(parents=True)
    (root / "lib" / "pkg" / "__init__.py").write_text("")
    (root / "lib" / "pkg" / "calc.py").write_text(CALC)
    (root / "tests").mkdir()
    (root / "tests" / "test_calc.py").write_text(test_source)
    (root / "pytest.ini").write_text("[pytest]\n")
    return root


def run_tool(repo: Path, tmp_path: Path, *extra: str) -> tuple[int, dict]:
    report = tmp_path / "report.json"
    code = mutate.main(["--repo", str(repo), "--target", "lib/pkg/calc.py", "--tests", "tests/test_calc.py",
                        "--timeout", "5", "--jobs", "2", "--json", str(report), *extra])
    return code, json.loads(report.read_text()) if report.exists() else {}


def test_end_to_end_counts_killed_survived_and_timed_out_mutants(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    repo = throwaway_repository(tmp_path / "repo", KILLS_DOUBLE_ONLY)
    # The original package is importable too, as an editable install would make it: the copy must still win.
    monkeypatch.setenv("PYTHONPATH", str(repo / "lib"))
    code, report = run_tool(repo, tmp_path, "--equivalent", str(tmp_path / "none.txt"))
    assert code == 0
    status = {m["id"]: m["status"] for m in report["mutants"]}
    assert status == {
        "lib/pkg/calc.py:7:12:return-none:0": "killed",  # double() returns None: the test fails
        "lib/pkg/calc.py:11:12:return-none:0": "survived",  # halve() is never tested
        "lib/pkg/calc.py:15:8:negate:0": "timeout",  # pause(False) now sleeps
    }
    total = report["categories"][-1]
    assert (total["mutants"], total["killed"], total["survived"], total["timeout"]) == (3, 1, 1, 1)
    assert report["kill_rate"] == pytest.approx(2 / 3)
    assert "test_double" in next(m["killed_by"] for m in report["mutants"] if m["status"] == "killed")


def test_equivalent_mutants_are_excluded_from_the_rate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = throwaway_repository(tmp_path / "repo", KILLS_DOUBLE_ONLY)
    listed = tmp_path / "equivalent.txt"
    listed.write_text("lib/pkg/calc.py:11:12:return-none:0  halve() is dead code here\n"
                      "lib/pkg/calc.py:99:1:negate:0  an ID that no longer exists\n")
    code, report = run_tool(repo, tmp_path, "--equivalent", str(listed), "--fail-under", "90",
                            "--only", "lib/pkg/calc.py:7:12:return-none:0",
                            "--only", "lib/pkg/calc.py:11:12:return-none:0")
    assert code == 0
    assert report["kill_rate"] == 1.0 and report["equivalent"] == 1
    assert report["stale_equivalent"] == ["lib/pkg/calc.py:99:1:negate:0"]
    printed = capsys.readouterr().out
    assert "Equivalent mutants (listed in the equivalent file, excluded from the rate): 1" in printed
    assert "stale ID" in printed


def test_a_failing_baseline_stops_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = throwaway_repository(tmp_path / "repo", "def test_broken():\n    assert False\n")
    code, report = run_tool(repo, tmp_path)
    assert code == 2 and report == {}
    assert "fail without any mutation" in capsys.readouterr().err


def test_a_target_the_tests_never_import_stops_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = throwaway_repository(tmp_path / "repo", "def test_nothing():\n    assert True\n")
    code, report = run_tool(repo, tmp_path)
    assert code == 2 and report == {}
    assert "never import the copy's lib/pkg/calc.py" in capsys.readouterr().err


def test_list_prints_the_mutants_without_running_tests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = throwaway_repository(tmp_path / "repo", "def test_broken():\n    assert False\n")
    assert mutate.main(["--repo", str(repo), "--target", "lib/pkg/calc.py", "--list"]) == 0
    printed = capsys.readouterr().out
    assert "lib/pkg/calc.py:7:12:return-none:0  return x * 2 -> return None" in printed
    assert "3 mutants" in printed


def test_named_patches_become_mutants_and_a_stale_patch_is_an_error(tmp_path: Path) -> None:
    source = "def f(dialog):\n    if dialog.exec_() != 1:\n        return None\n    return 'ok'\n"
    patches = tmp_path / "patches.json"
    patches.write_text(json.dumps([{"file": "m.py", "old": "!= 1", "new": "== 1", "description": "inverted"}]))
    (mutant,) = mutate.read_patches(patches, {"m.py": source})
    assert (mutant.category, mutant.line, mutant.col, mutant.description) == ("named", 2, 23, "inverted")
    assert mutant.original == "    if dialog.exec_() != 1:" and mutant.mutated == "    if dialog.exec_() == 1:"
    assert mutant.edit.apply(source.encode()).decode() == source.replace("!= 1", "== 1")
    patches.write_text(json.dumps([{"file": "m.py", "old": "return", "new": "yield", "description": "twice"}]))
    with pytest.raises(ValueError, match="occurs 2 times"):
        mutate.read_patches(patches, {"m.py": source})
