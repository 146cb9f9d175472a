"""Edge cases found in review: multi-frame ordering, legacy multi-frame files, partial label tables, mask tables,
file-system errors, --overwrite of folders SegAlign did not write, the Slicer export's provenance, demo re-runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from conftest import leftovers, read_manifest, run_cli
from phantoms import small_phantom, stack_affine, write_segmentation
from segalign import Segmentation, export_segmentation, scan_folder
from segalign.segmentation import Label
from segalign.options import ExportOptions
from segalign.synthetic import SeriesIdentity, stack, write_enhanced, write_nifti, write_series

PHANTOM = small_phantom()


def test_frames_of_multiframe_files_sharing_an_instance_number_stay_together(tmp_path: Path) -> None:
    identity = SeriesIdentity()
    upper = stack((-16, -16, 3), 3, (0, 0, 1), rows=32, columns=32)
    lower = stack((-16, -16, 0), 3, (0, 0, 1), rows=32, columns=32)
    write_enhanced(tmp_path / "dicom" / "a.dcm", upper, identity=identity, instance_number=1)
    write_enhanced(tmp_path / "dicom" / "b.dcm", lower, identity=identity, instance_number=1)
    frames = scan_folder(tmp_path / "dicom").select().ordered("instance")
    order = [(f.source_file.name, f.frame_number) for f in frames]
    # same InstanceNumber: files by their first frame's position (b is lower), frames in frame order within a file
    assert order == [("b.dcm", 1), ("b.dcm", 2), ("b.dcm", 3), ("a.dcm", 1), ("a.dcm", 2), ("a.dcm", 3)]


def test_legacy_multiframe_without_per_frame_positions_is_refused(tmp_path: Path) -> None:
    specs = stack((-16, -16, 0), 3, (0, 0, 2), rows=32, columns=32)
    path = write_enhanced(tmp_path / "dicom" / "legacy.dcm", specs)
    dataset = pydicom.dcmread(path)
    dataset.ImagePositionPatient = list(specs[0].position)
    dataset.ImageOrientationPatient = list(specs[0].orientation)
    dataset.PixelSpacing = [1, 1]
    del dataset.PerFrameFunctionalGroupsSequence
    del dataset.SharedFunctionalGroupsSequence
    dataset.save_as(path)
    affine, shape = stack_affine(specs)
    segmentation = write_segmentation(tmp_path / "seg.nii.gz", PHANTOM, affine, shape)
    run = run_cli("export", tmp_path / "dicom", segmentation, "-o", tmp_path / "out")
    assert run.code == 1 and "PerFrameFunctionalGroupsSequence" in run.stderr and len(run.stderr.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_partial_label_table_is_completed(tmp_path: Path) -> None:
    specs = stack((-16, -16, -3), 4, (0, 0, 2), rows=32, columns=32)
    write_series(tmp_path / "dicom", specs)
    affine, shape = stack_affine(specs)
    labels = np.zeros(shape, dtype=np.uint8)
    labels[10:20, 10:20, 1] = 1
    labels[5:8, 5:8, 2] = 7
    segmentation = Segmentation(labels, affine, {1: Label(1, "one", (1, 2, 3))}, None)
    assert set(segmentation.label_table) == {1, 7} and segmentation.label_table[7].name == "Segment_7"
    result = export_segmentation(scan_folder(tmp_path / "dicom").select(), segmentation, tmp_path / "out", ExportOptions(masks=True))
    assert result.labels_found == [1, 7]
    names = {e["value"]: e["name"] for e in json.loads((tmp_path / "out" / "labels.json").read_text())}
    assert names == {1: "one", 7: "Segment_7"}
    assert (tmp_path / "out" / "masks" / "Segment_7").is_dir()
    assert json.loads((tmp_path / "out" / "export.json").read_text())["segmentation"] == "segmentation"


def test_mask_table_giving_value_zero_is_refused(tmp_path: Path) -> None:
    specs = stack((-16, -16, -3), 4, (0, 0, 2), rows=32, columns=32)
    write_series(tmp_path / "dicom", specs)
    affine, shape = stack_affine(specs)
    for name in ("liver", "spleen"):
        mask = np.zeros(shape, dtype=np.uint8)
        mask[3:9, 3:9, 1] = 1 if name == "liver" else 0
        mask[20:25, 20:25, 2] = 1 if name == "spleen" else 0
        write_nifti(tmp_path / "masks" / f"{name}.nii.gz", mask, affine)
    (tmp_path / "table.csv").write_text("0,liver\n2,spleen\n")
    run = run_cli("export", tmp_path / "dicom", tmp_path / "masks", "-o", tmp_path / "out", "--labels", tmp_path / "table.csv")
    assert run.code == 1 and "value 0" in run.stderr and "liver.nii.gz" in run.stderr
    (tmp_path / "table.csv").write_text("1,liver\n70000,spleen\n")
    run = run_cli("export", tmp_path / "dicom", tmp_path / "masks", "-o", tmp_path / "out", "--labels", tmp_path / "table.csv")
    assert run.code == 1 and "outside 0..65535" in run.stderr


def test_file_system_errors_are_one_line(tmp_path: Path) -> None:
    specs = stack((-16, -16, -3), 4, (0, 0, 2), rows=32, columns=32)
    write_series(tmp_path / "dicom", specs)
    affine, shape = stack_affine(specs)
    segmentation = write_segmentation(tmp_path / "seg.nii.gz", PHANTOM, affine, shape)
    (tmp_path / "a_file").write_text("x")
    run = run_cli("export", tmp_path / "dicom", segmentation, "-o", tmp_path / "a_file" / "out")
    assert run.code == 1 and len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr
    assert run.stderr.startswith("segalign: error: ")


def test_overwrite_never_replaces_a_folder_segalign_did_not_write(tmp_path: Path) -> None:
    specs = stack((-16, -16, -3), 4, (0, 0, 2), rows=32, columns=32)
    write_series(tmp_path / "dicom", specs)
    affine, shape = stack_affine(specs)
    segmentation = write_segmentation(tmp_path / "seg.nii.gz", PHANTOM, affine, shape)
    documents = tmp_path / "Documents"
    documents.mkdir()
    (documents / "thesis.txt").write_text("precious")
    run = run_cli("export", tmp_path / "dicom", segmentation, "-o", documents, "--overwrite")
    assert run.code == 1 and "not a SegAlign export" in run.stderr
    assert (documents / "thesis.txt").read_text() == "precious" and leftovers(tmp_path) == []
    assert run_cli("export", tmp_path / "dicom", segmentation, "-o", tmp_path / "out", "-q").code == 0
    assert run_cli("export", tmp_path / "dicom", segmentation, "-o", tmp_path / "out", "-q", "--overwrite").code == 0


def test_demo_can_be_rerun_with_another_number_of_slices(tmp_path: Path) -> None:
    assert run_cli("demo", "--output", tmp_path / "demo", "--slices", 3, "-q").code == 0
    run = run_cli("demo", "--output", tmp_path / "demo", "--slices", 2, "-q")
    assert run.code == 0, run.stderr
    assert len(read_manifest(tmp_path / "demo" / "export")) == 2
    bad = run_cli("demo", "--output", tmp_path / "demo", "--slices", 0)
    assert bad.code == 1 and "--slices" in bad.stderr and "Traceback" not in bad.stderr


def test_slicer_export_records_the_node_not_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slicer_scene = pytest.importorskip("slicer_scene", reason="slicer-core is needed")
    from segalign.mrml import SegAlignMRMLLogic

    specs = stack((-16, -16, -3), 4, (0, 0, 2), rows=32, columns=32)
    files = write_series(tmp_path / "dicom", specs)
    affine, shape = stack_affine(specs)
    segmentation = write_segmentation(tmp_path / "results.nii.gz", PHANTOM, affine, shape)
    app = slicer_scene.headless_slicer()
    volume = app.load_dicom_files(files)
    logic = SegAlignMRMLLogic(app.scene)
    node = logic.import_segmentation(segmentation, volume)
    monkeypatch.chdir(tmp_path)
    logic.export(node, volume, tmp_path / "results")  # a folder named like the node, in the working directory
    provenance = json.loads((tmp_path / "results" / "export.json").read_text())
    assert provenance["segmentation"].startswith("Slicer segmentation node results")
