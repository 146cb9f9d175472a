"""SegAlign.py's console logic (``SegAlignLogic``) on slicer-core: a real MRML scene and Volumes logic, with
stand-ins only for what the Slicer application alone provides (Qt, translation, the scripted-module base classes,
``slicer.packaging``, whose ``pip_ensure`` is recorded here instead of installing anything).

Checks the review's defects 3 (every public entry point ensures what it needs, and only that) and 5 (a failed
volume load is an error, not a None).
"""

from __future__ import annotations

import importlib.util
import sys
import types
import unittest
from pathlib import Path

import numpy as np
import pytest

from phantoms import small_phantom, stack_affine, write_segmentation
from slicer_scene import headless_slicer, load_dicom_volume, slicer
from segalign.synthetic import stack, write_series

MODULE_FILE = Path(__file__).resolve().parent.parent / "SegAlign" / "SegAlign.py"


@pytest.fixture
def module(monkeypatch: pytest.MonkeyPatch):
    """SegAlign.py imported against slicer-core; ``module.ensured`` lists every pip_ensure call."""
    app = headless_slicer()
    ensured: list[list[str]] = []

    def stand_in(name: str, **attributes) -> types.ModuleType:
        stand = types.ModuleType(name)
        stand.__dict__.update(attributes)
        monkeypatch.setitem(sys.modules, name, stand)
        return stand

    class ScriptedLoadableModuleLogic:
        def __init__(self) -> None:
            pass

        def getParameterNode(self):  # not used by these tests
            raise NotImplementedError

    stand_in("qt")
    i18n = stand_in("slicer.i18n", tr=lambda text: text, translate=lambda context, text: text)
    wrapper = stand_in("slicer.parameterNodeWrapper", parameterNodeWrapper=lambda cls: cls,
                       WithinRange=lambda low, high: None)
    base = stand_in("slicer.ScriptedLoadableModule", ScriptedLoadableModule=type("ScriptedLoadableModule", (), {}),
                    ScriptedLoadableModuleLogic=ScriptedLoadableModuleLogic,
                    ScriptedLoadableModuleTest=unittest.TestCase,
                    ScriptedLoadableModuleWidget=type("ScriptedLoadableModuleWidget", (), {}))

    def pip_ensure(requirements, **kwargs):
        ensured.append(list(requirements))
        if getattr(pip_ensure, "declined", False):
            raise RuntimeError("the user declined")

    packaging = stand_in("slicer.packaging", pip_ensure=pip_ensure)
    for name, stand in (("i18n", i18n), ("parameterNodeWrapper", wrapper), ("ScriptedLoadableModule", base),
                        ("packaging", packaging)):
        monkeypatch.setattr(slicer, name, stand, raising=False)
    monkeypatch.setattr(slicer, "mrmlScene", app.scene, raising=False)
    monkeypatch.setattr(slicer, "modules", types.SimpleNamespace(volumes=types.SimpleNamespace(logic=lambda: app.volumes)),
                        raising=False)
    monkeypatch.setattr(slicer, "dicomDatabase", None, raising=False)
    spec = importlib.util.spec_from_file_location("SegAlign_under_test", MODULE_FILE)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    loaded.ensured, loaded.app, loaded.pip_ensure = ensured, app, pip_ensure
    return loaded


@pytest.fixture
def case(tmp_path: Path):
    specs = stack((-20, -20, -10), 12, (0, 0, 1.7), rows=40, columns=40)
    files = write_series(tmp_path / "dicom", specs)
    affine, shape = stack_affine(specs)
    return files, write_segmentation(tmp_path / "seg.nii.gz", small_phantom(), affine, shape)


def test_import_asks_for_nibabel_only_and_export_for_nothing_slicer_lacks(module, case, tmp_path: Path) -> None:
    files, segmentation = case
    volume = load_dicom_volume(module.app, files)
    logic = module.SegAlignLogic()
    node = logic.importSegmentation(str(segmentation), volume)
    assert module.ensured == [["nibabel>=5.0,<6"]]
    result = logic.exportSegmentation(node, volume, tmp_path / "out", files=[str(f) for f in files])
    assert module.ensured[1:] == [["Pillow>=10.0,<14"]], "export needs what Slicer bundles, version-checked"
    assert result.frames == 12 and result.labels_found == [1, 2, 7]


def test_each_format_asks_for_its_own_reader(module, tmp_path: Path) -> None:
    nrrd = pytest.importorskip("nrrd")
    path = tmp_path / "labels.nrrd"
    nrrd.write(str(path), np.zeros((4, 4, 4), np.uint8), {"space": "left-posterior-superior",
                                                          "space directions": np.eye(3), "space origin": np.zeros(3)})
    assert module.SegAlignLogic.requirementsFor(str(path)) == ["pynrrd>=1.0,<2", "slicerio>=1.4,<2"]
    assert module.SegAlignLogic.requirementsFor(str(tmp_path)) == ["nibabel>=5.0,<6"]


def test_declined_install_is_an_error_naming_the_package(module, case) -> None:
    files, segmentation = case
    module.pip_ensure.declined = True
    with pytest.raises(RuntimeError, match="nibabel"):
        module.SegAlignLogic().importSegmentation(str(segmentation))
    assert module.app.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0


def test_failed_volume_load_is_an_error_not_none(module, tmp_path: Path) -> None:
    """vtkSlicerVolumesLogic returns None when its reader fails; the logic says so instead of handing it on."""
    from segalign.dicom import Frame, Series

    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    series = Series(uid="", frames=[Frame(broken, 1, "", 1, (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0), (1.0, 1.0), 4, 4)])
    with pytest.raises(RuntimeError, match="could not load the 1 files of the series"):
        module.SegAlignLogic._loadFiles(series)
