"""The SegAlign panel, driven as a user drives it, on real Qt with PythonQt's semantics and real MRML.

The module file is loaded as Slicer loads it and its panel built from the real .ui file; buttons are clicked,
dialogs answered, the parameter node set. What is emulated (PythonQt's rules over PySide6, the CTK and qMRML
widgets, ``slicer.app``, DICOMLib, ``slicer.packaging``, ``parameterNodeWrapper``) and what is Slicer's own
(MRML, Volumes and Segmentations logic, ``slicer.util``) is stated in ``pythonqt_emulation.py`` and
``slicer_gui_emulation.py``. Each test checks what the user would see or find on disk, so that a mistake in the
module (a misspelled signal or property, a string where Slicer wants a list, an inverted dialog check, an
observer left behind, a node ID for a node) fails it; ``Testing/mutation/`` measures how many such mistakes do.
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6.QtWidgets", reason="PySide6 is needed for the panel tests (pip install PySide6-Essentials)")
slicer = pytest.importorskip("slicer", reason="slicer-core is needed for the panel tests (pip install slicer-core)")
vtk = pytest.importorskip("vtk")

import pythonqt_emulation as pqt  # noqa: E402
from conftest import read_manifest, read_png, run_cli  # noqa: E402
from phantoms import small_phantom, stack_affine, write_segmentation  # noqa: E402
from slicer_gui_emulation import slicer_gui  # noqa: E402

from segalign.synthetic import SeriesIdentity, shuffled_names, stack, write_series  # noqa: E402

REPOSITORY = Path(__file__).resolve().parent.parent
MODULE_DIR = REPOSITORY / "SegAlign"
MODULE_FILE = MODULE_DIR / "SegAlign.py"
PHANTOM = small_phantom()


# ---------------------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def gui(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    with slicer_gui(monkeypatch, tmp_path / "slicer") as handle:
        yield handle


class Panel:
    """The module loaded, its panel made and entered; the module's own package as the module sees it."""

    def __init__(self, gui) -> None:
        self.gui = gui
        self.module = gui.load_module(MODULE_FILE)
        self.widget = gui.create_widget("SegAlign")
        gui.enter("SegAlign")
        self.ui = self.widget.ui
        self.lib = sys.modules["SegAlignLib"]

    @property
    def parameters(self):
        return self.widget._parameterNode

    def errors(self) -> list[str]:
        return [m.text for m in self.gui.messages if m.kind == "error"]

    @property
    def summary(self) -> str:
        return self.ui.summaryTextEdit.toPlainText()


@pytest.fixture
def panel(gui) -> Panel:
    return Panel(gui)


class Case:
    """A folder of two series (the axial phantom series, and a second one), and a NIfTI segmentation of the
    first."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.specs = stack((-20.2, -19.6, -12.1), 12, (0, 0, 1.6), rows=36, columns=40,
                           instance_numbers=range(12, 0, -1))
        self.dicom = root / "dicom"
        self.files = write_series(self.dicom / "a", self.specs, file_names=shuffled_names(12, seed=5),
                                  identity=SeriesIdentity(series_number=3, description="phantom axial"))
        other = stack((-20.0, -20.0, -30.0), 5, (0, 0, 3.0), rows=16, columns=16)
        self.other_files = write_series(self.dicom / "b", other,
                                        identity=SeriesIdentity(series_number=9, description="other"))
        affine, shape = stack_affine(self.specs)
        self.segmentation = write_segmentation(root / "seg.nii.gz", PHANTOM, affine, shape)
        self.labels = root / "names.csv"
        self.labels.write_text("1,big\n2,left_blob\n7,tilted_rod\n")

    def cli_labels(self, out: Path) -> list[np.ndarray]:
        run = run_cli("export", self.dicom / "a", self.segmentation, "-o", out, "-q", "--labels", self.labels)
        assert run.code == 0, run.stderr
        return [read_png(out / row["label_png"]) for row in read_manifest(out)]


@pytest.fixture
def case(tmp_path: Path) -> Case:
    return Case(tmp_path / "case")


def series_label(panel: Panel, folder: Path, description: str) -> str:
    """What the series chooser lists for the series of ``folder`` described so."""
    scan = panel.lib.segalign.scan_folder(folder)
    return next(series.label() for series in scan.series if series.description == description)


def import_dicom(panel: Panel, case: Case, database: str = "temporary", series: str = "phantom axial") -> None:
    """The user's way: Import DICOM folder..., the folder, the series, where to import it."""
    uses = panel.lib.logic.DicomDatabaseUse
    panel.gui.dialogs.answer(pqt.ChooseFile(str(case.dicom)), pqt.ChooseItem(series_label(panel, case.dicom, series)),
                             pqt.ChooseItem(uses(database).label()))
    panel.ui.importDicomButton.click()


def import_segmentation(panel: Panel, path: Path, labels: Path | None = None) -> None:
    panel.ui.segmentationPathLineEdit.currentPath = str(path)
    if labels is not None:
        panel.ui.labelTablePathLineEdit.currentPath = str(labels)
    panel.ui.importSegmentationButton.click()


def ready_to_export(panel: Panel, case: Case, out: Path) -> None:
    import_dicom(panel, case)
    import_segmentation(panel, case.segmentation, case.labels)
    panel.parameters.outputFolder = out
    panel.parameters.writeOverlays = False


def pngs(out: Path) -> list[np.ndarray]:
    return [read_png(out / row["label_png"]) for row in read_manifest(out)]


# ---------------------------------------------------------------------------------------------------------------
# Importing a DICOM folder


def test_import_dicom_loads_the_chosen_series_through_a_temporary_database(panel: Panel, case: Case) -> None:
    user_database = panel.gui.dicom_database
    import_dicom(panel, case)
    volume = panel.parameters.referenceVolume
    assert volume is not None and volume.IsA("vtkMRMLScalarVolumeNode"), panel.errors()
    assert volume.GetImageData().GetDimensions() == (40, 36, 12)
    assert panel.ui.referenceVolumeSelector.currentNode() is volume, "the panel shows it"
    assert sorted(volume.GetAttribute("SegAlign.dicomFiles").split("\n")) == sorted(map(str, case.files))
    assert user_database.allFiles() == [], "the user's DICOM database is not touched"
    assert not list(Path(panel.gui.app.temporaryPath).rglob("*.dcm")), "a temporary load copies no file"
    assert len(panel.gui.loaded_series) == 1
    assert panel.gui.slice_viewer_layers[-1] == {"background": volume, "fit": True}
    reading = panel.gui.progress_dialogs[0]
    assert reading.maximum == len(case.files) + len(case.other_files), "every header is read once"
    assert reading.visible is False, "closed at the end"
    assert reading.windowModality == panel.gui.qt.Qt.ApplicationModal
    assert panel.errors() == [] and panel.gui.app.overrideCursorDepth == 0
    asked = [(record.kind, record.title, record.text) for record in panel.gui.dialogs.shown]
    assert [kind for kind, _, _ in asked] == ["QFileDialog.getExistingDirectory", "QInputDialog", "QInputDialog"]
    assert asked[0][1] == "DICOM folder to import"
    assert asked[1][1:] == ("Choose a series", "The folder holds several series:")
    assert asked[2][1:] == ("DICOM database", "Where should Slicer import the series?")


@pytest.mark.parametrize("use", ["link", "copy"])
def test_link_and_copy_add_only_the_chosen_series_to_the_users_database(panel: Panel, case: Case, use: str) -> None:
    import_dicom(panel, case, database=use)
    database = panel.gui.dicom_database
    instances = database.added
    assert len(instances) == len(case.files), "only the chosen series, not the whole folder"
    assert all(instance.copied == (use == "copy") for instance in instances)
    stored = sorted(database.allFiles())
    if use == "link":
        assert stored == sorted(map(str, case.files))
    else:
        assert not set(stored) & set(map(str, case.files)) and all(Path(p).is_file() for p in stored)
    assert panel.parameters.referenceVolume is not None


@pytest.mark.parametrize("cancelled", ["folder", "series", "database"])
def test_cancelling_any_question_imports_nothing(panel: Panel, case: Case, cancelled: str) -> None:
    answers = {
        "folder": [pqt.ChooseFile(None)],
        "series": [pqt.ChooseFile(str(case.dicom)), pqt.Reject()],
        "database": [pqt.ChooseFile(str(case.dicom)), pqt.ChooseItem(series_label(panel, case.dicom, "other")),
                     pqt.Reject()],
    }[cancelled]
    panel.gui.dialogs.answer(*answers)
    panel.ui.importDicomButton.click()
    assert panel.parameters.referenceVolume is None
    assert panel.gui.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 0
    assert panel.gui.loaded_series == [] and panel.gui.dicom_database.allFiles() == []
    assert panel.errors() == [] and not panel.gui.dialogs.queue


def test_the_series_chooser_takes_only_the_series_listed(panel: Panel, case: Case) -> None:
    """The user cannot type a series of their own into the chooser (its combo box is not editable)."""
    panel.gui.dialogs.answer(pqt.ChooseFile(str(case.dicom)), pqt.EnterText("a series typed in"))
    panel.ui.importDicomButton.click()
    assert panel.gui.dialogs.problems == ["cannot type 'a series typed in': the combo box is not editable"]
    panel.gui.dialogs.problems.clear()
    assert panel.parameters.referenceVolume is None and panel.gui.slot_errors == []


def test_the_series_chooser_loads_the_series_chosen(panel: Panel, case: Case) -> None:
    import_dicom(panel, case, series="other")
    volume = panel.parameters.referenceVolume
    assert volume.GetImageData().GetDimensions() == (16, 16, 5)
    assert sorted(volume.GetAttribute("SegAlign.dicomFiles").split("\n")) == sorted(map(str, case.other_files))


def test_reading_the_headers_can_be_cancelled(panel: Panel, case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancel pressed while the headers are read: the scan stops there, nothing is asked or imported, and the
    summary says so."""
    seen = []
    original = type(panel.gui.app).processEvents

    def cancel_on_the_fourth(self, *args):
        seen.append(panel.gui.progress_dialogs[-1].value)
        if len(seen) == 4:
            panel.gui.progress_dialogs[-1].cancel()
        return original(self, *args)

    monkeypatch.setattr(type(panel.gui.app), "processEvents", cancel_on_the_fourth)
    panel.gui.dialogs.answer(pqt.ChooseFile(str(case.dicom)))
    panel.ui.importDicomButton.click()
    assert seen == [1, 2, 3, 4], "stopped at the first progress report after Cancel"
    assert panel.parameters.referenceVolume is None and panel.errors() == []
    assert "Cancelled" in panel.summary


# ---------------------------------------------------------------------------------------------------------------
# Importing a segmentation


def test_import_segmentation_shows_its_warnings(panel: Panel, case: Case) -> None:
    import nibabel as nib

    import_dicom(panel, case)
    nifti = nib.load(case.segmentation)
    image = nib.Nifti1Image(np.asarray(nifti.dataobj), nifti.affine)
    shifted = nifti.affine.copy()
    shifted[2, 3] += 4.0
    image.set_qform(shifted, code=1)
    image.set_sform(nifti.affine, code=2)
    path = case.root / "disagree.nii.gz"
    nib.save(image, path)
    import_segmentation(panel, path, case.labels)
    node = panel.parameters.segmentation
    assert node is not None and node.IsA("vtkMRMLSegmentationNode"), panel.errors()
    assert panel.ui.segmentationSelector.currentNode() is node
    names = sorted(node.GetSegmentation().GetNthSegment(i).GetName() for i in range(3))
    assert names == ["big", "left_blob", "tilted_rod"]
    assert re.search(r"Warning: disagree.nii.gz: sform and qform disagree by up to 4.000 mm", panel.summary)
    assert panel.gui.pip.installed == [], "nibabel is there: nothing installed"
    assert panel.gui.slice_viewer_layers[-1] == {"background": panel.parameters.referenceVolume}


def test_import_a_folder_of_masks(panel: Panel, case: Case, tmp_path: Path) -> None:
    import nibabel as nib

    labels = np.asarray(nib.load(case.segmentation).dataobj)
    folder = tmp_path / "masks"
    folder.mkdir()
    for value, name in ((1, "big"), (2, "left_blob")):
        nib.save(nib.Nifti1Image((labels == value).astype(np.uint8), nib.load(case.segmentation).affine),
                 folder / f"{name}.nii.gz")
    panel.gui.dialogs.answer(pqt.ChooseFile(str(folder)))
    panel.ui.importMaskFolderButton.click()
    node = panel.parameters.segmentation
    assert node is not None, panel.errors()
    assert panel.gui.slice_viewer_layers == [], "no DICOM volume to show it over"
    assert panel.gui.dialogs.shown[-1].title == "Folder of binary NIfTI masks"
    assert sorted(node.GetSegmentation().GetNthSegment(i).GetName() for i in range(2)) == ["big", "left_blob"]


def test_overlapping_segments_are_named_on_import_and_in_the_summary(panel: Panel, case: Case, tmp_path: Path) -> None:
    """A folder of masks that overlap (an outline around both organs): the import message and the export's summary
    say the segments overlap and are each kept whole, in two layers; a segmentation without overlaps says nothing."""
    import nibabel as nib

    import_dicom(panel, case)
    image = nib.load(case.segmentation)
    labels = np.asarray(image.dataobj)
    folder = tmp_path / "masks"
    folder.mkdir()
    for name, mask in (("big", labels == 1), ("left_blob", labels == 2), ("outline", labels != 0)):
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), image.affine), folder / f"{name}.nii.gz")
    panel.gui.dialogs.answer(pqt.ChooseFile(str(folder)))
    panel.ui.importMaskFolderButton.click()
    assert panel.parameters.segmentation is not None, panel.errors()
    note = "Segments overlap: each is kept whole, in 2 layers"
    assert panel.summary.splitlines()[:2] == [f"Imported {folder} as masks", note]
    panel.parameters.outputFolder = tmp_path / "out"
    panel.parameters.writeOverlays = False
    panel.ui.applyButton.click()
    assert panel.errors() == []
    assert panel.summary.splitlines()[:3] == [f"Wrote 12 frames to {tmp_path / 'out'}", "Labels on the frames: 1, 2, 3",
                                             note]
    import_segmentation(panel, case.segmentation, case.labels)
    assert "Segments overlap" not in panel.summary


def test_a_file_segalign_cannot_read_is_refused_before_anything_is_installed(panel: Panel, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a segmentation\n")
    import_segmentation(panel, notes)
    assert panel.parameters.segmentation is None
    assert len(panel.errors()) == 1 and "is not a format SegAlign reads" in panel.errors()[0]
    assert [m for m in panel.gui.messages if m.kind.startswith("confirm")] == [], "no installation offered"
    assert panel.gui.pip.installed == []


def test_a_file_segalign_cannot_read_is_refused_even_where_nibabel_is_missing(
        panel: Panel, tmp_path: Path, nibabel_missing: str) -> None:
    """The file is judged by its content first: where NIfTI's reader is missing, a file that is no segmentation is
    refused, saying why, without offering to install nibabel for it."""
    notes = tmp_path / "notes.txt"
    notes.write_text("not a segmentation\n")
    import_segmentation(panel, notes)
    assert len(panel.errors()) == 1 and "is not a format SegAlign reads" in panel.errors()[0], panel.errors()
    assert [m for m in panel.gui.messages if m.kind.startswith("confirm")] == [], "no installation offered"
    assert panel.gui.pip.installed == []


@pytest.fixture
def nibabel_missing(panel: Panel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The module's requirements list asking for a nibabel no one has: what Slicer's Python lacks nibabel is like."""
    requirements = tmp_path / "requirements.txt"
    text = panel.lib.dependencies.REQUIREMENTS_FILE.read_text()
    requirements.write_text(text.replace("nibabel>=5.0,<6", "nibabel>=99"))
    monkeypatch.setattr(panel.lib.dependencies, "REQUIREMENTS_FILE", requirements)
    return "nibabel>=99"


@pytest.mark.parametrize("outcome", ["declined", "failed", "testing"])
def test_an_install_that_does_not_happen_is_one_error_and_no_traceback(
        panel: Panel, case: Case, nibabel_missing: str, outcome: str) -> None:
    if outcome == "testing":
        panel.gui.app.setTestingEnabled(True)
    else:
        panel.gui.answer_confirm(outcome == "failed")
        panel.gui.pip.fail = outcome == "failed"
    shown_before = len(panel.errors())
    import_segmentation(panel, case.segmentation)
    assert panel.parameters.segmentation is None
    if outcome != "testing":  # in testing mode Slicer shows no error dialogs (util.py tryWithErrorDisplay)
        message = panel.errors()[shown_before:]
        assert len(message) == 1 and nibabel_missing in message[0]
        assert {"declined": "were not installed", "failed": "failed (pip exited with"}[outcome] in message[0]
    assert panel.gui.slot_errors == [], "nothing escapes the slot"
    assert panel.gui.pip.installed == [], "nothing was installed"
    assert panel.gui.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0


# ---------------------------------------------------------------------------------------------------------------
# Export


def test_export_writes_every_frame_and_the_summary(panel: Panel, case: Case, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    assert panel.ui.applyButton.toolTip == "Select the DICOM volume, the segmentation and an output folder"
    ready_to_export(panel, case, out)
    assert panel.ui.applyButton.enabled is True, panel.errors()
    assert panel.ui.applyButton.toolTip == "Export the segmentation onto every DICOM frame"
    during = []
    original = type(panel.gui.app).processEvents

    def watch(self, *args):
        during.append((panel.ui.applyButton.enabled, panel.gui.progress_dialogs[-1].windowModality,
                       panel.gui.app.overrideCursorDepth))
        return original(self, *args)

    monkeypatch.setattr(type(panel.gui.app), "processEvents", watch)
    panel.ui.applyButton.click()
    assert panel.errors() == []
    assert f"Wrote 12 frames to {out}" in panel.summary and "Labels on the frames: 1, 2, 7" in panel.summary
    for mine, theirs in zip(pngs(out), case.cli_labels(tmp_path / "cli"), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert [int(r["instance_number"]) for r in read_manifest(out)] == list(range(1, 13))
    assert during and all(enabled is False for enabled, _, _ in during), "Export is off while it runs"
    assert all(modality == panel.gui.qt.Qt.ApplicationModal for _, modality, _ in during)
    assert all(depth == 1 for _, _, depth in during), "the wait cursor shows while it runs"
    assert panel.gui.progress_dialogs[-1].maximum == 12 and panel.gui.progress_dialogs[-1].visible is False
    assert panel.ui.applyButton.enabled is True, "and on again afterwards"
    assert panel.ui.loadDicomSegButton.enabled is False, "no SEG written"
    assert panel.gui.app.overrideCursorDepth == 0


def test_cancelling_the_export_leaves_nothing(panel: Panel, case: Case, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    ready_to_export(panel, case, out)
    calls = []
    original = type(panel.gui.app).processEvents

    def cancel_at_frame_three(self, *args):
        calls.append(1)
        if len(calls) == 3:
            panel.gui.progress_dialogs[-1].cancel()
        return original(self, *args)

    monkeypatch.setattr(type(panel.gui.app), "processEvents", cancel_at_frame_three)
    panel.ui.applyButton.click()
    assert len(calls) == 3
    assert not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(".out")]
    assert "Cancelled" in panel.summary and panel.errors() == []
    assert panel.ui.applyButton.enabled is True


def test_export_options_follow_the_panel(panel: Panel, case: Case, tmp_path: Path) -> None:
    """Masks, a label-map SEG and position order chosen in the panel are what gets written."""
    out = tmp_path / "out"
    ready_to_export(panel, case, out)
    panel.ui.writeMasksCheckBox.checked = True
    panel.ui.writeDicomSegCheckBox.checked = True
    panel.ui.dicomSegTypeComboBox.currentIndex = 1
    panel.ui.orderComboBox.currentIndex = 1
    panel.ui.applyButton.click()
    export = json.loads((out / "export.json").read_text())
    assert export["options"]["order"] == "position" and export["options"]["masks"] is True
    assert export["options"]["dicom_seg"]["segmentation_type"] == "labelmap"
    assert (out / "masks").is_dir() and (out / "seg.dcm").is_file()
    assert f"DICOM SEG: {out / 'seg.dcm'}" in panel.summary
    assert panel.ui.loadDicomSegButton.enabled is True


def test_a_failed_export_is_one_error_and_the_panel_goes_on(panel: Panel, case: Case, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="SegAlign")
    out = tmp_path / "out"
    ready_to_export(panel, case, out)
    out.mkdir()
    (out / "mine.txt").write_text("not SegAlign's")
    panel.ui.applyButton.click()
    assert len(panel.errors()) == 1 and "Export failed." in panel.errors()[0]
    assert "is not a SegAlign export" in panel.errors()[0]
    assert (out / "mine.txt").read_text() == "not SegAlign's"
    assert panel.ui.applyButton.enabled is True and panel.gui.slot_errors == []
    logged = [r for r in caplog.records if r.name == "SegAlign" and r.levelname == "DEBUG"]
    assert len(logged) == 1 and logged[0].exc_info is not None, "the traceback goes to the log, at debug level"


# ---------------------------------------------------------------------------------------------------------------
# Loading the written DICOM SEG back


class SegPluginStandIn:
    """Stands in for Slicer's DICOMSegmentationPlugin (Modules/Scripted/DICOMPlugins/DICOMSegmentationPlugin.py)
    with its contract: ``examineFiles`` takes files whose Modality is SEG, ``load`` finds the SEG's file through
    ``slicer.dicomDatabase.fileForInstance`` (so it must have been imported into the current database) and reads
    it with dcmqi's segimage2itkimage, as the plugin does, into a segmentation node."""

    loadType = "DICOMSegmentation"
    used: list[str] = []

    class Loadable:  # DICOMLib's DICOMLoadable: a plain object, hashable by identity
        def __init__(self, path: str) -> None:
            self.files, self.name, self.selected, self.confidence = [path], "SEG", True, 0.95
            self.uid = slicer.dicomDatabase.fileValue(path, "0008,0018")

    def examineFiles(self, files):
        return [self.Loadable(path) for path in files if slicer.dicomDatabase.fileValue(path, "0008,0060") == "SEG"]

    def load(self, loadable):
        import subprocess
        import tempfile

        from segalign.mrml import SegAlignMRMLLogic

        path = slicer.dicomDatabase.fileForInstance(loadable.uid)
        assert path, "the plugin reads the SEG through the DICOM database"
        folder = tempfile.mkdtemp(dir=slicer.app.temporaryPath)
        binary = shutil.which("segimage2itkimage", path=os.path.dirname(sys.executable))
        subprocess.run([binary, "--inputDICOM", path, "--outputDirectory", folder, "--mergeSegments",
                        "--outputType", "nrrd"], check=True, capture_output=True)
        merged = sorted(Path(folder).glob("*.nrrd"))
        node = SegAlignMRMLLogic(slicer.mrmlScene).import_segmentation(merged[0], name="SEG (plugin)")
        SegPluginStandIn.used.append(path)
        return node


def test_the_written_seg_loads_back_through_slicers_plugin(panel: Panel, case: Case, tmp_path: Path) -> None:
    if shutil.which("segimage2itkimage", path=os.path.dirname(sys.executable)) is None:
        pytest.skip("dcmqi's segimage2itkimage is needed (pip install dcmqi)")
    slicer.modules.dicomPlugins["DICOMSegmentationPlugin"] = SegPluginStandIn
    SegPluginStandIn.used = []
    out = tmp_path / "out"
    ready_to_export(panel, case, out)
    panel.parameters.writeDicomSeg = True
    panel.ui.applyButton.click()
    panel.ui.loadDicomSegButton.click()
    assert SegPluginStandIn.used == [str(out / "seg.dcm")], panel.errors()
    assert panel.gui.dicom_database.allFiles() == [], "read through a temporary database"
    loaded = [n for n in slicer.util.getNodesByClass("vtkMRMLSegmentationNode") if n.GetName() == "SEG (plugin)"]
    assert len(loaded) == 1 and f"Loaded {out / 'seg.dcm'} as SEG (plugin)" in panel.summary
    role = loaded[0].GetReferenceImageGeometryReferenceRole()
    assert loaded[0].GetNodeReference(role) is panel.parameters.referenceVolume, "shown over the DICOM volume"
    again = panel.widget.logic.exportSegmentation(loaded[0], panel.parameters.referenceVolume, tmp_path / "again")
    assert again.labels_found == [1, 2, 3], "dcmqi numbers the segments 1..N"
    lookup = np.array([0, 1, 2, 7], dtype=np.uint8)
    for mine, back in zip(pngs(out), pngs(tmp_path / "again"), strict=True):
        np.testing.assert_array_equal(mine, lookup[back])


def test_without_slicers_plugin_the_seg_loads_through_the_library(panel: Panel, case: Case, tmp_path: Path) -> None:
    pytest.importorskip("highdicom")
    out = tmp_path / "out"
    ready_to_export(panel, case, out)
    panel.parameters.writeDicomSeg = True
    panel.ui.applyButton.click()
    panel.ui.loadDicomSegButton.click()
    loaded = [n for n in slicer.util.getNodesByClass("vtkMRMLSegmentationNode") if n.GetName().endswith("SEG")]
    assert len(loaded) == 1, panel.errors()
    assert panel.gui.slice_viewer_layers[-1] == {"background": panel.parameters.referenceVolume}


# ---------------------------------------------------------------------------------------------------------------
# Life cycle: the parameter node, scene close, reload


def test_leaving_the_module_stops_following_the_parameter_node(panel: Panel, case: Case, tmp_path: Path) -> None:
    import_dicom(panel, case)
    assert panel.ui.applyButton.enabled is False
    parameters = panel.widget.logic.getParameterNode()
    panel.gui.exit("SegAlign")
    parameters.segmentation = panel.widget.logic.importSegmentation(case.segmentation, parameters.referenceVolume)
    assert panel.ui.applyButton.enabled is False, "no observer left: the panel does not follow while away"
    assert panel.ui.segmentationSelector.currentNode() is None, "and the GUI is disconnected"
    panel.gui.enter("SegAlign")
    assert panel.ui.applyButton.enabled is True and panel.ui.segmentationSelector.currentNode() is not None


def test_the_options_that_need_another_follow_it(panel: Panel) -> None:
    ui = panel.ui
    assert ui.writeOverlaysCheckBox.checked is True and ui.overlayWindowComboBox.enabled is True
    ui.writeOverlaysCheckBox.checked = False
    assert not any(w.enabled for w in (ui.overlayWindowComboBox, ui.overlayOpacitySliderWidget,
                                       ui.overlayOutlineCheckBox))
    assert ui.dicomSegTypeComboBox.enabled is False
    ui.writeDicomSegCheckBox.checked = True
    assert ui.dicomSegTypeComboBox.enabled is True and panel.parameters.writeDicomSeg is True


def test_closing_the_scene_gives_a_fresh_parameter_node(panel: Panel, case: Case) -> None:
    import_dicom(panel, case)
    panel.ui.writeMasksCheckBox.checked = True
    panel.gui.scene.Clear()
    assert panel.parameters is not None and panel.parameters.referenceVolume is None
    assert panel.parameters.writeMasks is False and panel.ui.writeMasksCheckBox.checked is False
    assert str(panel.parameters.outputFolder).endswith("SegAlign")


def test_closing_the_scene_again_and_again_leaves_no_observer_behind(panel: Panel) -> None:
    """Each scene close replaces the parameter node; the panel stops observing the old one (VTKObservationMixin's
    list of observations does not grow)."""
    observed = len(panel.widget.Observations)
    for _ in range(3):
        panel.gui.scene.Clear()
    assert len(panel.widget.Observations) == observed
    assert panel.widget.hasObserver(panel.parameters, vtk.vtkCommand.ModifiedEvent, panel.widget._checkCanApply)


def test_every_parameter_is_stored_on_the_module_node_and_survives_saving_the_scene(
        panel: Panel, case: Case, tmp_path: Path) -> None:
    """Slicer's parameterNodeWrapper stores each field on the vtkMRMLScriptedModuleNode (bool as True/False,
    numbers and paths as text, enums by name, nodes as references); the scene saved to a .mrml file and read into
    a new scene gives the same parameters."""
    params = panel.lib.parameters
    import_dicom(panel, case)
    import_segmentation(panel, case.segmentation)
    p = panel.parameters
    values = dict(outputFolder=tmp_path / "exports" / "ct", writeMasks=True, order=params.ExportOrder.POSITION,
                  writeOverlays=False, overlayWindow=params.OverlayWindow.LUNG, overlayOpacity=0.65,
                  overlayOutline=True, writeImages=True, writeStats=True, writeDicomSeg=True,
                  dicomSegType=params.DicomSegType.LABELMAP, writeRtStruct=True, overwrite=True)
    for name, value in values.items():
        setattr(p, name, value)
    raw = p.parameterNode
    assert raw.IsA("vtkMRMLScriptedModuleNode") and raw.GetAttribute("ModuleName") == "SegAlign"
    assert raw.GetParameter("writeMasks") == "True" and raw.GetParameter("overwrite") == "True"
    assert raw.GetParameter("order") == "POSITION" and raw.GetParameter("overlayWindow") == "LUNG"
    assert raw.GetParameter("overlayOpacity") == "0.65" and raw.GetParameter("outputFolder") == str(values["outputFolder"])
    assert raw.GetNodeReference("referenceVolume") is p.referenceVolume
    assert raw.GetNodeReference("segmentation") is p.segmentation
    assert panel.ui.overlayWindowComboBox.currentText == "Lung" and panel.ui.writeRtStructCheckBox.checked is True

    scene_file = tmp_path / "scene" / "scene.mrml"
    scene_file.parent.mkdir()
    panel.gui.scene.SetRootDirectory(str(scene_file.parent))
    panel.gui.scene.SetURL(str(scene_file))
    assert panel.gui.scene.Commit()
    reopened = slicer.vtkMRMLScene()
    reopened.SetURL(str(scene_file))
    assert reopened.Connect()
    node = next(reopened.GetNthNodeByClass(i, "vtkMRMLScriptedModuleNode")
                for i in range(reopened.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode"))
                if reopened.GetNthNodeByClass(i, "vtkMRMLScriptedModuleNode").GetAttribute("ModuleName") == "SegAlign")
    back = params.SegAlignParameterNode(node)
    for name, value in values.items():
        assert getattr(back, name) == value, name
    assert back.referenceVolume.GetName() == p.referenceVolume.GetName()
    assert back.segmentation.GetName() == p.segmentation.GetName()
    assert back.referenceVolume.GetScene() is reopened


def test_export_options_match_the_command_lines(panel: Panel) -> None:
    """The panel's choices and the same choices as command-line flags give the same ExportOptions."""
    from segalign.cli import build_parser

    params = panel.lib.parameters
    p = panel.parameters
    p.order, p.writeMasks, p.writeImages, p.writeOverlays = params.ExportOrder.POSITION, True, True, True
    p.overlayWindow, p.overlayOpacity, p.overlayOutline = params.OverlayWindow.LUNG, 0.25, True
    p.writeDicomSeg, p.dicomSegType, p.writeRtStruct = True, params.DicomSegType.LABELMAP, True
    options = params.export_options(p)
    args = build_parser().parse_args([
        "export", "d", "s", "-o", "o", "--masks", "--overlays", "--window", "lung", "--alpha", "0.25", "--outline",
        "--images", "--dicom-seg", "--dicom-seg-type", "labelmap", "--order", "position", "--rtstruct"])
    engine_cli = importlib.import_module(f"{panel.lib.segalign.__name__}.cli")  # the module's own copy
    from_cli = engine_cli.export_options(args)
    assert options.as_dict() == from_cli.as_dict()
    p.writeOverlays, p.writeDicomSeg, p.writeRtStruct = False, False, False
    assert params.export_options(p).as_dict() == panel.lib.segalign.options.ExportOptions(
        order="position", masks=True, images=True).as_dict()


def test_reload_forgets_only_the_modules_own_package(panel: Panel) -> None:
    import segalign  # the pip package (here the editable install of the same code)

    assert "SegAlignLib.segalign.export" in sys.modules
    panel.widget.onReload()
    assert panel.gui.reloads == ["SegAlign"]
    assert not [name for name in sys.modules if name == "SegAlignLib" or name.startswith("SegAlignLib.")]
    assert sys.modules["segalign"] is segalign, "a segalign installed in Slicer's Python is left alone"


def test_the_engine_in_the_module_folder_cannot_collide_with_a_pip_segalign(panel: Panel) -> None:
    """Slicer puts the module's folder on sys.path: nothing there is importable as ``segalign``, and the engine the
    module uses is its own copy, SegAlignLib.segalign."""
    assert importlib.machinery.PathFinder.find_spec("segalign", [str(MODULE_DIR)]) is None
    engine = sys.modules["SegAlignLib.segalign"]
    assert Path(engine.__file__).parent == MODULE_DIR / "SegAlignLib" / "segalign"
    assert panel.widget.logic.mrml.__class__.__module__ == "SegAlignLib.segalign.mrml.logic"


# ---------------------------------------------------------------------------------------------------------------
# The self-test, and the README's console snippet


class _Blocked:
    """An import hook: the packages 3D Slicer does not bundle are not there."""

    names = ("nibabel", "nrrd", "slicerio")

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r} (not bundled with Slicer)")
        return None


def test_the_self_test_runs_with_only_what_slicer_bundles(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """ctest py_SegAlign runs the self-test in testing mode, where pip_ensure installs nothing, in a Slicer without
    nibabel, pynrrd or slicerio: it must test, not skip. Files it cannot delete (Windows keeps the DICOM database
    open) do not fail it."""
    for name in [n for n in sys.modules if n.split(".")[0] in _Blocked.names]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_Blocked(), *sys.meta_path])
    real_rmtree = shutil.rmtree

    def windows_rmtree(path, ignore_errors=False, onerror=None, **kwargs):  # the database's files stay locked
        if not ignore_errors:
            raise PermissionError(13, "The process cannot access the file because it is being used", str(path))
        real_rmtree(path, ignore_errors=True)

    monkeypatch.setattr(shutil, "rmtree", windows_rmtree)
    with slicer_gui(monkeypatch, tmp_path / "slicer", testing=True) as gui:
        module = gui.load_module(MODULE_FILE)
        user_database = gui.dicom_database.databaseFilename
        module.SegAlignTest().runTest()
        assert "Test passed" in gui.delayed
        assert any("Loading the DICOM SEG back" in m for m in gui.delayed)
        assert gui.pip.installed == [] and gui.dicom_database.databaseFilename == user_database
        assert gui.dicom_database.allFiles() == []
        assert not [p for p in Path(gui.app.temporaryPath).glob("SegAlignTest-*")], "its files are removed"
        assert "nibabel" not in sys.modules


def readme_console_snippet() -> str:
    text = (REPOSITORY / "README.md").read_text(encoding="utf-8")
    after = text.split("**From the Python console**", 1)[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readmes_console_snippet_runs_as_written(gui, case: Case, tmp_path: Path, capsys) -> None:
    """The snippet, with only its three example paths replaced by this test's files."""
    snippet = readme_console_snippet()
    paths = {"/data/ct_dicom": case.dicom / "a", "/data/ct_seg.nii.gz": case.segmentation,
             "/data/ct_labels": tmp_path / "ct_labels"}
    for example, real in paths.items():
        assert example in snippet
        snippet = snippet.replace(example, str(real))
    gui.load_module(MODULE_FILE)
    exec(compile(snippet, "README.md", "exec"), {"slicer": slicer})
    printed = capsys.readouterr().out
    assert printed.startswith("12 [1, 2, 7]")
    assert (tmp_path / "ct_labels" / "seg.dcm").is_file() and (tmp_path / "ct_labels" / "masks").is_dir()
    assert gui.dicom_database.allFiles() == []


# ---------------------------------------------------------------------------------------------------------------
# Loading without a database, and what each operation needs


def test_a_series_without_a_series_uid_loads_without_a_database(panel: Panel, tmp_path: Path) -> None:
    """Anonymised files with no SeriesInstanceUID cannot be loaded by UID: they are read with the ITK/GDCM reader
    Slicer's scalar volume plugin uses, and the volume still knows its files for the export."""
    import pydicom

    specs = stack((-10.0, -10.0, -5.0), 6, (0, 0, 2.0), rows=12, columns=14)
    files = write_series(tmp_path / "anon", specs)
    for path in files:
        dataset = pydicom.dcmread(path)
        del dataset.SeriesInstanceUID
        dataset.save_as(path)
    panel.gui.dialogs.answer(pqt.ChooseFile(str(tmp_path / "anon")),
                             pqt.ChooseItem(panel.lib.logic.DicomDatabaseUse.TEMPORARY.label()))
    panel.ui.importDicomButton.click()
    volume = panel.parameters.referenceVolume
    assert volume is not None, panel.errors()
    assert volume.GetImageData().GetDimensions() == (14, 12, 6) and panel.gui.loaded_series == []
    assert sorted(volume.GetAttribute("SegAlign.dicomFiles").split("\n")) == sorted(map(str, files))


def test_files_the_reader_cannot_load_are_an_error_not_a_missing_volume(panel: Panel, tmp_path: Path) -> None:
    """vtkSlicerVolumesLogic returns None when its reader fails: the logic says so."""
    series = panel.lib.segalign.dicom.Series(uid="", frames=[panel.lib.segalign.dicom.Frame(
        tmp_path / "broken.dcm", 1, "", 1, (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0), (1.0, 1.0), 4, 4)])
    (tmp_path / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    with pytest.raises(panel.lib.segalign.errors.SegAlignError, match="could not load the 1 files of the series"):
        panel.widget.logic._loadFiles(series)


def test_each_operation_asks_for_what_it_needs_and_no_more(panel: Panel) -> None:
    dependencies = panel.lib.dependencies
    names = {operation: sorted(r.name for r in dependencies.requirements_for(operation))
             for operation in dependencies.OPERATIONS}
    base = ["numpy", "pydicom"]
    assert names == {"nifti": sorted(base + ["nibabel"]), "nrrd": sorted(base + ["pynrrd", "slicerio"]),
                     "metaimage": base, "dicom": base, "rtstruct": base, "export": sorted(base + ["Pillow"])}
    pyproject = (REPOSITORY / "pyproject.toml").read_text()
    assert 'dependencies = { file = ["SegAlign/Resources/requirements.txt"] }' in pyproject, \
        "the library's dependencies are the same list"


def test_entering_the_module_picks_a_dicom_volume_already_loaded(gui, case: Case) -> None:
    """A volume loaded from DICOM before the panel opens is preselected; a volume that is not from DICOM is not,
    and a choice already made is kept."""
    from slicer_scene import load_dicom_volume

    plain = gui.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "not from DICOM")
    volume = load_dicom_volume(gui.headless, case.files, "from DICOM")
    panel = Panel(gui)
    assert panel.parameters.referenceVolume is volume
    panel.parameters.referenceVolume = plain
    gui.exit("SegAlign")
    gui.enter("SegAlign")
    assert panel.parameters.referenceVolume is plain, "the user's choice is kept"


def test_entering_the_module_with_no_dicom_volume_selects_none(gui) -> None:
    gui.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "not from DICOM")
    assert Panel(gui).parameters.referenceVolume is None


def test_an_export_reuses_the_headers_read_when_segalign_loaded_the_volume(
        panel: Panel, case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The headers SegAlign read to load a series are not read again by its exports; they are read again when the
    volume's files are not the ones SegAlign loaded, or when the files are given."""
    logic = panel.widget.logic
    bridge = type(logic.mrml)
    reads = []
    real = bridge.series_for_volume

    def counted(self, volume, files=None, progress=None):
        reads.append(files)
        return real(self, volume, files, progress)

    monkeypatch.setattr(bridge, "series_for_volume", counted)
    volume = logic.loadDicomFolder(case.dicom / "a")
    node = logic.importSegmentation(case.segmentation, volume)
    first = logic.exportSegmentation(node, volume, tmp_path / "first")
    assert reads == [] and first.frames == 12
    given = [str(path) for path in case.files[:6]]
    assert logic.exportSegmentation(node, volume, tmp_path / "given", files=given).frames == 6
    assert reads == [given]
    volume.SetAttribute("SegAlign.dicomFiles", "\n".join(given))
    assert logic.exportSegmentation(node, volume, tmp_path / "changed").frames == 6
    assert reads == [given, None]


def test_the_summary_names_every_file_written(panel: Panel, case: Case, tmp_path: Path) -> None:
    out = tmp_path / "out"
    ready_to_export(panel, case, out)
    panel.parameters.writeOverlays = True
    panel.parameters.writeDicomSeg = True
    panel.parameters.writeRtStruct = True
    panel.ui.applyButton.click()
    lines = panel.summary.splitlines()
    assert lines[:5] == [f"Wrote 12 frames to {out}", "Labels on the frames: 1, 2, 7", f"Preview: {out / 'index.html'}",
                         f"DICOM SEG: {out / 'seg.dcm'}", f"RTSTRUCT: {out / 'rtstruct.dcm'}"], panel.summary
    assert all(line.startswith("Warning: ") for line in lines[5:])
    assert (out / "index.html").is_file() and (out / "rtstruct.dcm").is_file()


def test_a_volume_loaded_by_slicers_dicom_module_finds_its_files_in_the_database(
        panel: Panel, case: Case, tmp_path: Path) -> None:
    """A series the user loaded through the DICOM module (not SegAlign): its files are found through its
    DICOM.instanceUIDs in Slicer's DICOM database."""
    from DICOMLib import DICOMUtils

    assert DICOMUtils.importDicom(str(case.dicom / "a"))
    uid = slicer.dicomDatabase.seriesForFile(str(case.files[0]))
    volume = panel.gui.scene.GetNodeByID(DICOMUtils.loadSeriesByUID([uid])[0])
    assert volume.GetAttribute("SegAlign.dicomFiles") is None
    node = panel.widget.logic.importSegmentation(case.segmentation, volume, case.labels)
    result = panel.widget.logic.exportSegmentation(node, volume, tmp_path / "out")
    assert result.frames == 12
    for mine, theirs in zip(pngs(tmp_path / "out"), case.cli_labels(tmp_path / "cli"), strict=True):
        np.testing.assert_array_equal(mine, theirs)


def test_the_choices_are_listed_by_their_labels(panel: Panel) -> None:
    def items(combo) -> list[str]:
        return [combo.itemText(i) for i in range(combo.count)]

    assert items(panel.ui.orderComboBox) == ["Acquisition (InstanceNumber, frame)", "Position along the normal"]
    assert items(panel.ui.dicomSegTypeComboBox) == [
        "Binary (one frame per segment and slice; readable everywhere)",
        "Label map (one compressed frame per slice; smaller, newer readers)"]
    assert items(panel.ui.overlayWindowComboBox) == ["Each frame's own", "Abdomen", "Bone", "Brain", "Lung",
                                                     "Mediastinum"]
