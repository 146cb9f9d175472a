"""Static checks of the Slicer module for the defects found in review (issue 13), on SegAlign.py's syntax tree.

The facts about Slicer they rely on were read from Slicer's source (commit 583e9b37d50ead7daf7b783dce465ccaecec8809,
as in test_slicer_static.py):

* ``qt.QInputDialog.getItem`` in PythonQt returns the item only (the ``ok`` flag is dropped), so Cancel is
  indistinguishable from choosing the current item; a QInputDialog object's ``exec_()`` returns
  ``QDialog.Accepted`` or ``QDialog.Rejected``.
* ``DICOMUtils.importDicom`` (Modules/Scripted/DICOMLib/DICOMUtils.py) catches its errors, logs them and returns
  False; ``vtkSlicerVolumesLogic::AddArchetypeScalarVolume`` returns nullptr (None) when the reader fails.
* ``slicer.util.createProgressDialog`` makes a QProgressDialog that is not modal unless told.
* ``slicer.dicomDatabase`` is set by the DICOM module (Modules/Scripted/DICOM/DICOM.py); DICOMPatcher declares
  ``self.parent.dependencies = ["DICOM"]`` for the same reason.
* ``slicer.packaging.pip_ensure`` checks installed versions against the requirement specifiers.
"""

from __future__ import annotations

import ast
from pathlib import Path

from test_slicer_static import dotted  # the same AST reader

MODULE_FILE = Path(__file__).resolve().parent.parent / "SegAlign" / "SegAlign.py"
TREE = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))


def _class(name: str) -> ast.ClassDef:
    return next(node for node in TREE.body if isinstance(node, ast.ClassDef) and node.name == name)


def _method(cls: str, name: str) -> ast.FunctionDef:
    return next(node for node in _class(cls).body if isinstance(node, ast.FunctionDef) and node.name == name)


def _dotted(node: ast.AST) -> str:
    return dotted(node) or ""


def _calls(node: ast.AST) -> list[ast.Call]:
    return [item for item in ast.walk(node) if isinstance(item, ast.Call)]


def _called(node: ast.AST) -> list[str]:
    return [_dotted(call.func) for call in _calls(node)]


def test_series_chooser_checks_the_dialog_result():
    assert "qt.QInputDialog.getItem" not in _called(TREE), "getItem cannot tell Cancel from a choice in PythonQt"
    chooser = _method("SegAlignWidget", "_chooseSeries")
    compares = [node for node in ast.walk(chooser) if isinstance(node, ast.Compare)]
    assert any(isinstance(c.left, ast.Call) and _dotted(c.left.func) == "dialog.exec_" and
               _dotted(c.comparators[0]) == "qt.QDialog.Accepted" for c in compares)
    assert any(isinstance(n, ast.Return) and isinstance(n.value, ast.Constant) and n.value.value is None
               for n in ast.walk(chooser)), "a cancelled chooser returns None"
    importing = _method("SegAlignWidget", "onImportDicom")
    source = ast.unparse(importing)
    assert "if series is None:" in source and "return" in source.split("if series is None:")[1].split("\n")[1]


def _with_wait_cursor(node: ast.AST) -> list[ast.With]:
    return [w for w in ast.walk(node) if isinstance(w, ast.With) and any(
        isinstance(item.context_expr, ast.Call) and any(
            k.arg == "waitCursor" and isinstance(k.value, ast.Constant) and k.value.value for k in item.context_expr.keywords)
        for item in w.items)]


def test_import_dicom_scans_once_and_asks_without_the_wait_cursor():
    importing = _method("SegAlignWidget", "onImportDicom")
    assert _called(importing).count("self.logic.scanFolder") == 1
    assert "self.logic.seriesInFolder" not in _called(importing)
    load = next(c for c in _calls(importing) if _dotted(c.func) == "self.logic.loadDicomFolder")
    assert any(k.arg == "scan" for k in load.keywords), "the scan is handed on, not repeated"
    for block in _with_wait_cursor(importing):
        assert "self._chooseSeries" not in _called(block), "the chooser must not appear under the wait cursor"
    loader = _method("SegAlignLogic", "loadDicomFolder")
    assert "scan_folder" not in _called(loader) or "scan or" in ast.unparse(loader)


def test_import_dicom_failure_is_reported_as_such():
    loader = _method("SegAlignLogic", "loadDicomFolder")
    tests = [node.test for node in ast.walk(loader) if isinstance(node, ast.If)]
    assert any(isinstance(t, ast.UnaryOp) and isinstance(t.op, ast.Not) and isinstance(t.operand, ast.Call)
               and _dotted(t.operand.func) == "DICOMUtils.importDicom" for t in tests), "importDicom's False is checked"


def test_failed_volume_load_is_checked():
    loader = _method("SegAlignLogic", "_loadFiles")
    source = ast.unparse(loader)
    assert "AddArchetypeScalarVolume" in source
    after = source.split("AddArchetypeScalarVolume", 1)[1]
    assert "if volume is None:" in after and "raise" in after.split("if volume is None:", 1)[1].split("\n")[1]


def test_module_depends_on_the_dicom_module():
    init = _method("SegAlign", "__init__")
    assigned = [node for node in ast.walk(init) if isinstance(node, ast.Assign)
                and _dotted(node.targets[0]) == "self.parent.dependencies"]
    assert assigned and "DICOM" in ast.literal_eval(assigned[0].value)


def test_every_logic_entry_point_ensures_what_it_needs():
    for name, needs in (("importSegmentation", "self.requirementsFor"), ("exportSegmentation", "REQUIREMENTS")):
        method = _method("SegAlignLogic", name)
        body = [ast.unparse(statement) for statement in method.body if not isinstance(statement, ast.Expr)
                or not isinstance(statement.value, ast.Constant)]
        assert body[0].startswith("self._require(") and needs in body[0], (name, body[0])
    require = ast.unparse(_method("SegAlignLogic", "ensureDependencies"))
    assert "slicer.packaging.pip_ensure" in require and "find_spec" not in require, \
        "pip_ensure checks versions; a find_spec shortcut would skip that"
    requirements = next(node for node in TREE.body if isinstance(node, ast.Assign)
                        and _dotted(node.targets[0]) == "REQUIREMENTS")
    table = ast.literal_eval(requirements.value)
    assert table["export"] == ["Pillow>=10.0,<14"] and not any("nibabel" in r for r in table["export"]), \
        "export does not need nibabel"
    assert table["nifti"] == ["nibabel>=5.0,<6"]


def test_export_is_modal_and_cannot_be_started_twice():
    apply = _method("SegAlignWidget", "onApplyButton")
    calls = _called(apply)
    assert "progressDialog.setWindowModality" in calls
    source = ast.unparse(apply)
    assert source.index("self.ui.applyButton.enabled = False") < source.index("self._export(")
    final = [node for node in ast.walk(apply) if isinstance(node, ast.Try) and node.finalbody]
    assert any("self._checkCanApply" in _called(ast.Module(body=t.finalbody, type_ignores=[])) for t in final), \
        "Apply is enabled again however the export ends"


def test_self_test_never_downloads():
    test_class = _class("SegAlignTest")
    called = _called(test_class)
    assert not any(name.endswith(("pip_ensure", "pip_install")) for name in called)
    assert "importlib.util.find_spec" in called, "what a download would bring is checked, and the test skipped"


def test_contributors_follow_the_template():
    init = _method("SegAlign", "__init__")
    assigned = next(node for node in ast.walk(init) if isinstance(node, ast.Assign)
                    and _dotted(node.targets[0]) == "self.parent.contributors")
    for entry in ast.literal_eval(assigned.value):  # the template: "John Doe (AnyWare Corp.)"
        assert entry.endswith(")") and " (" in entry, entry


def test_output_folder_starts_as_a_real_folder_and_dependent_options_follow_their_switch():
    init = ast.unparse(_method("SegAlignWidget", "initializeParameterNode"))
    assert "outputFolder" in init and "defaultScenePath" in init
    update = ast.unparse(_method("SegAlignWidget", "_updateDependentOptions"))
    for widget in ("overlayWindowComboBox", "overlayOpacitySliderWidget", "overlayOutlineCheckBox"):
        assert widget in update.split("dicomSegTypeComboBox")[0]
    assert "node.writeOverlays" in update and "node.writeDicomSeg" in update
    assert "self._updateDependentOptions" in _called(_method("SegAlignWidget", "_checkCanApply")), \
        "runs on every parameter change (the parameter node's ModifiedEvent calls _checkCanApply)"


def test_reloading_the_module_reloads_the_library():
    reload = _method("SegAlignWidget", "onReload")
    source = ast.unparse(reload)
    assert "sys.modules" in source and "segalign." in source and "del sys.modules[name]" in source
    assert source.index("del sys.modules") < source.index("ScriptedLoadableModuleWidget.onReload(self)")


#: Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json in Slicer (the commit above): "additionalProperties":
#: false; required "$schema", "category", "scm_url"; the other properties it defines.
CATALOG_REQUIRED = frozenset({"$schema", "category", "scm_url"})
CATALOG_PROPERTIES = CATALOG_REQUIRED | {"build_dependencies", "build_subdirectory", "enabled", "scm_revision",
                                         "scm_type", "tier"}


def test_extensions_index_descriptor():
    import json
    import re

    repository = MODULE_FILE.parent.parent
    entry = json.loads((repository / "SegAlign.json").read_text(encoding="utf-8"))
    assert CATALOG_REQUIRED <= set(entry) <= CATALOG_PROPERTIES, set(entry) ^ CATALOG_PROPERTIES
    assert entry["$schema"].endswith("slicer-extension-catalog-entry-schema-v1.0.1.json#")
    cmake = (repository / "CMakeLists.txt").read_text(encoding="utf-8")
    category = re.search(r'set\(EXTENSION_CATEGORY "([^"]+)"\)', cmake).group(1)
    assert entry["category"] == category
    homepage = re.search(r'set\(EXTENSION_HOMEPAGE "([^"#]+)', cmake).group(1).rstrip("/")
    assert entry["scm_url"].removesuffix(".git") == homepage
    assert entry["build_dependencies"] == [] and "EXTENSION_DEPENDS \"NA\"" in cmake
    assert entry["build_subdirectory"] == "." and entry["scm_type"] == "git" and entry["tier"] in (1, 3, 5)


def test_the_panel_loads_the_written_seg_back():
    apply = ast.unparse(_method("SegAlignWidget", "onApplyButton"))
    assert "result.outputs.get('dicom_seg')" in apply and "loadDicomSegButton.enabled" in apply
    load = _method("SegAlignWidget", "onLoadDicomSeg")
    assert "self.logic.loadDicomSeg" in _called(load)
    assert "REQUIREMENTS['dicom']" in ast.unparse(load)
    logic = _method("SegAlignLogic", "loadDicomSeg")
    assert ast.unparse(logic.body[1]).startswith("self._require(REQUIREMENTS['dicom'])")
