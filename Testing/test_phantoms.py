"""Synthetic phantoms: the labels on every exported frame equal an analytic shape defined in patient millimetres.

Where the segmentation grid's voxel centres coincide with the DICOM pixel centres (as when a converter writes the
series as NIfTI and a model segments it), every pixel must be exact. Where it is another grid (coarser, cropped,
rotated), every pixel away from a shape boundary must be exact, and the rest is checked against SimpleITK in
test_simpleitk_oracle.py.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from conftest import exported_labels, read_manifest, read_png, run_cli
from phantoms import (
    near_boundary,
    pixel_centres_from_file,
    rotated_orientation,
    small_phantom,
    stack_affine,
    write_segmentation,
)
from segalign.synthetic import (
    AXIAL,
    CORONAL,
    SAGITTAL,
    SeriesIdentity,
    grid_affine,
    shuffled_names,
    stack,
    write_enhanced,
    write_nifti,
    write_series,
)

PHANTOM = small_phantom()


def export(tmp_path: Path, dicom: Path, segmentation: Path, *extra: str, name: str = "out") -> Path:
    out = tmp_path / name
    run = run_cli("export", dicom, segmentation, "-o", out, "-q", *extra)
    assert run.code == 0, run.stderr
    return out


def assert_exact(out: Path, dicom: Path) -> int:
    """Every exported frame equals the phantom at that frame's pixel centres (from its own tags)."""
    checked = 0
    for row in read_manifest(out):
        labels = read_png(out / row["label_png"])
        truth = PHANTOM.labels_at(pixel_centres_from_file(dicom / row["source_file"], int(row["frame"]) - 1))
        assert labels.shape == truth.shape
        np.testing.assert_array_equal(labels, truth, err_msg=row["label_png"])
        checked += int(truth.any())
    assert checked > 0, "the phantom must hit some frames, or the test proves nothing"
    return checked


CASES = {
    # name: (orientation, spacing (row, col), rows, columns, step, permutation, flips)
    "axial_las": (AXIAL, (0.9, 0.9), 40, 40, (0, 0, 1.5), (0, 1, 2), (False, True, False)),
    "sagittal": (SAGITTAL, (0.8, 0.8), 44, 40, (1.2, 0, 0), (2, 0, 1), (False, False, False)),
    "coronal": (CORONAL, (1.0, 1.0), 36, 42, (0, -1.3, 0), (0, 2, 1), (True, False, True)),
    "double_oblique": (rotated_orientation(0.35, -0.5, 0.2), (0.85, 0.85), 40, 40, None, (1, 0, 2), (False, False, False)),
    "non_square_anisotropic": (AXIAL, (0.6, 1.35), 56, 24, (0, 0, 2.0), (0, 1, 2), (False, False, False)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_coincident_grid_is_exact(tmp_path: Path, case: str) -> None:
    orientation, spacing, rows, columns, step, permutation, flips = CASES[case]
    normal = np.cross(orientation[:3], orientation[3:])
    step = np.asarray(step) if step is not None else 1.4 * normal
    centre_offset = spacing[1] * columns / 2 * np.asarray(orientation[:3]) + spacing[0] * rows / 2 * np.asarray(orientation[3:])
    first = -centre_offset - 12 * step
    specs = stack(first, 24, step, orientation=orientation, spacing=spacing, rows=rows, columns=columns)
    dicom = tmp_path / "dicom"
    write_series(dicom, specs, file_names=shuffled_names(len(specs), seed=len(case)))
    affine, shape = stack_affine(specs, permutation, flips)
    segmentation = write_segmentation(tmp_path / "seg.nii.gz", PHANTOM, affine, shape)
    out = export(tmp_path, dicom, segmentation)
    assert assert_exact(out, dicom) >= 10
    assert all(read_png(out / row["label_png"]).shape == (rows, columns) for row in read_manifest(out))


def test_reversed_and_shuffled_instance_numbers_keep_native_order(tmp_path: Path) -> None:
    specs = stack((-20, -20, -12), 16, (0, 0, 1.5), rows=40, columns=40, instance_numbers=random.Random(3).sample(range(100, 200), 16))
    dicom = tmp_path / "dicom"
    write_series(dicom, specs, file_names=shuffled_names(16, seed=9))
    affine, shape = stack_affine(specs)
    out = export(tmp_path, dicom, write_segmentation(tmp_path / "seg.nii.gz", PHANTOM, affine, shape))
    rows = read_manifest(out)
    numbers = [int(row["instance_number"]) for row in rows]
    assert numbers == sorted(spec.instance_number for spec in specs)
    for row in rows:  # the manifest ties each image to its own file, whatever the names say
        header = pydicom.dcmread(dicom / row["source_file"], stop_before_pixels=True)
        assert int(header.InstanceNumber) == int(row["instance_number"])
        assert header.SOPInstanceUID == row["sop_instance_uid"]
        assert np.allclose([float(v) for v in row["image_position_patient"].split()], header.ImagePositionPatient)
    assert_exact(out, dicom)

    by_position = export(tmp_path, dicom, tmp_path / "seg.nii.gz", "--order", "position", name="by_position")
    positions = [float(row["slice_position"]) for row in read_manifest(by_position)]
    assert positions == sorted(positions) and len(set(positions)) == 16
    assert_exact(by_position, dicom)


def test_gantry_tilt_with_sheared_affine_is_exact(tmp_path: Path) -> None:
    """Tilted CT: the frames are tilted by 17 deg about x but stacked along z, as the table moves."""
    tilt = np.radians(17.0)
    orientation = (1.0, 0.0, 0.0, 0.0, np.cos(tilt), -np.sin(tilt))
    specs = stack((-18, -16, -15), 22, (0, 0, 1.4), orientation=orientation, spacing=(0.9, 0.9), rows=40, columns=40)
    dicom = tmp_path / "dicom"
    write_series(dicom, specs)
    affine, shape = stack_affine(specs, flips=(False, True, False))  # sheared, as dcm2niix writes raw tilted CT
    out = tmp_path / "out"
    run = run_cli("export", dicom, write_segmentation(tmp_path / "seg.nii.gz", PHANTOM, affine, shape), "-o", out)
    assert run.code == 0, run.stderr
    assert "17.00 deg off their normal" in run.stderr
    assert_exact(out, dicom)


def test_missing_slice_is_exact_and_reported(tmp_path: Path) -> None:
    specs = stack((-20, -20, -14), 20, (0, 0, 1.5), rows=40, columns=40)
    affine, shape = stack_affine(specs)  # the segmentation was made before the slice went missing
    del specs[9]
    dicom = tmp_path / "dicom"
    write_series(dicom, specs)
    out = tmp_path / "out"
    run = run_cli("export", dicom, write_segmentation(tmp_path / "seg.nii.gz", PHANTOM, affine, shape), "-o", out)
    assert run.code == 0, run.stderr
    assert "uneven slice spacing: gaps from 1.500 to 3.000 mm" in run.stderr
    assert len(read_manifest(out)) == 19
    assert_exact(out, dicom)


def test_left_handed_stack_is_exact(tmp_path: Path) -> None:
    """Slices stacked against cross(row, col), InstanceNumber following the stacking: a left-handed IJK frame."""
    specs = stack((-20, -20, 14), 20, (0, 0, -1.5), rows=40, columns=40)
    dicom = tmp_path / "dicom"
    write_series(dicom, specs)
    affine, shape = stack_affine(specs)
    assert np.linalg.det(affine[:3, :3]) < 0 < np.linalg.det(np.diag([-1, -1, 1]) @ np.diag([1, 1, 1]))
    out = tmp_path / "out"
    run = run_cli("export", dicom, write_segmentation(tmp_path / "seg.nii.gz", PHANTOM, affine, shape), "-o", out)
    assert run.code == 0
    info = run_cli("info", dicom)
    assert "left-handed" in info.stdout
    positions = [float(row["image_position_patient"].split()[2]) for row in read_manifest(out)]
    assert positions == sorted(positions, reverse=True)
    assert_exact(out, dicom)


def test_enhanced_multiframe_matches_single_frame_files(tmp_path: Path) -> None:
    orientation = rotated_orientation(0.2, 0.1)
    normal = np.cross(orientation[:3], orientation[3:])
    specs = stack(-20 * np.asarray(orientation[:3]) - 20 * np.asarray(orientation[3:]) - 9 * normal, 18, 1.1 * normal,
                  orientation=orientation, spacing=(1.0, 1.0), rows=40, columns=40)
    identity = SeriesIdentity()
    write_enhanced(tmp_path / "enhanced" / "multi.dcm", specs, identity=identity, instance_number=5)
    write_series(tmp_path / "classic", specs)
    affine, shape = stack_affine(specs, permutation=(2, 1, 0))
    segmentation = write_segmentation(tmp_path / "seg.nii.gz", PHANTOM, affine, shape)
    enhanced = export(tmp_path, tmp_path / "enhanced", segmentation, name="out_enhanced")
    classic = export(tmp_path, tmp_path / "classic", segmentation, name="out_classic")
    rows = read_manifest(enhanced)
    assert [int(row["frame"]) for row in rows] == list(range(1, 19))
    assert {row["source_file"] for row in rows} == {"multi.dcm"}
    assert all(row["label_png"].endswith(f"_i5_f{row['frame']}.png") for row in rows)
    assert_exact(enhanced, tmp_path / "enhanced")
    for a, b in zip(exported_labels(enhanced), exported_labels(classic)):
        np.testing.assert_array_equal(a, b)


def test_two_series_and_junk_files(tmp_path: Path) -> None:
    dicom = tmp_path / "dicom"
    first = SeriesIdentity(description="axial", series_number=3)
    second = SeriesIdentity(description="sagittal", series_number=4, modality="CT")
    axial = stack((-20, -20, -10), 12, (0, 0, 1.7), rows=40, columns=40)
    sagittal = stack((-9, -20, 20), 10, (1.9, 0, 0), orientation=SAGITTAL, rows=40, columns=40)
    write_series(dicom / "a", axial, identity=first)
    write_series(dicom / "b", sagittal, identity=second, file_names=[f"IM{n:05d}.dcm" for n in range(100, 110)])
    (dicom / "notes.txt").write_text("not DICOM")
    (dicom / "empty").write_bytes(b"")
    (dicom / "b" / "random.bin").write_bytes(bytes(random.Random(1).getrandbits(8) for _ in range(600)))
    (dicom / "DICM_but_truncated.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00")
    segmentations = {}
    for identity, specs in ((first, axial), (second, sagittal)):
        affine, shape = stack_affine(specs)
        segmentations[identity.description] = write_segmentation(tmp_path / f"{identity.description}.nii", PHANTOM, affine, shape)

    refused = run_cli("export", dicom, segmentations["axial"], "-o", tmp_path / "never")
    assert refused.code == 1
    assert first.series_uid in refused.stderr and second.series_uid in refused.stderr
    assert not (tmp_path / "never").exists()

    for identity, specs in ((first, axial), (second, sagittal)):
        out = tmp_path / identity.description
        segmentation = segmentations[identity.description]
        run = run_cli("export", dicom, segmentation, "-o", out, "--series", identity.series_uid)
        assert run.code == 0, run.stderr
        assert "skipped 3 files that are not DICOM" in run.stderr
        assert "skipped 1 DICOM files that are not images" in run.stderr  # the truncated one
        assert len(read_manifest(out)) == len(specs)
        assert_exact(out, dicom)


def test_coarser_cropped_grid_in_another_orientation(tmp_path: Path) -> None:
    """A 2.3 mm grid rotated 30 deg about z and cropped: exact wherever the nearest voxel cannot change the answer."""
    specs = stack((-22, -22, -13), 26, (0, 0, 1.0), rows=48, columns=48, spacing=(0.9, 0.9), instance_numbers=range(26, 0, -1))
    dicom = tmp_path / "dicom"
    write_series(dicom, specs)
    angle = np.radians(30)
    axes = [(np.cos(angle), np.sin(angle), 0), (0, 0, -1), (-np.sin(angle), np.cos(angle), 0)]  # coronal-ish, rotated
    spacing = (2.3, 2.1, 2.5)
    affine = grid_affine((-25.3, -30.1, 12.2), spacing, axes)
    shape = (20, 11, 16)  # covers only part of the series: some frames fall outside it
    segmentation = write_segmentation(tmp_path / "seg.nii.gz", PHANTOM, affine, shape)
    out = export(tmp_path, dicom, segmentation)
    half_diagonal = 0.5 * float(np.linalg.norm(spacing))
    inside = outside_grid = 0
    inverse = np.linalg.inv(affine)
    for row in read_manifest(out):
        points = pixel_centres_from_file(dicom / row["source_file"])
        labels = read_png(out / row["label_png"])
        index = np.c_[(points @ np.diag([-1, -1, 1])).reshape(-1, 3), np.ones(points[..., 0].size)] @ inverse.T
        covered = np.all((index[:, :3] > 0.5) & (index[:, :3] < np.array(shape) - 1.5), axis=1).reshape(labels.shape)
        missed = np.all((index[:, :3] < -0.5) | (index[:, :3] > np.array(shape) - 0.5), axis=1).reshape(labels.shape)
        safe = covered & ~near_boundary(points, PHANTOM, half_diagonal)
        np.testing.assert_array_equal(labels[safe], PHANTOM.labels_at(points)[safe])
        assert not labels[missed].any(), "outside the segmentation grid the label must be 0"
        inside += int(safe.sum())
        outside_grid += int((~covered).sum())
    assert inside > 10000 and outside_grid > 1000


@pytest.mark.parametrize("variant", ["qform_only", "sform_disagrees"])
def test_qform_only_and_disagreeing_sform(tmp_path: Path, variant: str) -> None:
    specs = stack((-20, -20, -10), 14, (0, 0, 1.5), rows=40, columns=40)
    dicom = tmp_path / "dicom"
    write_series(dicom, specs)
    affine, shape = stack_affine(specs, flips=(True, True, False))
    labels = np.asarray(nib.load(write_segmentation(tmp_path / "ref.nii.gz", PHANTOM, affine, shape)).dataobj)
    if variant == "qform_only":
        path = write_nifti(tmp_path / "seg.nii.gz", labels, affine, sform_code=0, qform_code=1)
        expect_warning = None
    else:
        wrong = affine.copy()
        wrong[:3, 3] += (7.0, 0, 0)  # a stale qform 7 mm off; the sform is right and wins
        path = write_nifti(tmp_path / "seg.nii.gz", labels, affine, sform_code=2, qform_code=1, qform=wrong)
        expect_warning = "sform and qform disagree by up to 7.000 mm; using the sform"
    header = nib.load(path).header
    assert (int(header["sform_code"]), int(header["qform_code"])) == ((0, 1) if variant == "qform_only" else (2, 1))
    out = tmp_path / "out"
    run = run_cli("export", dicom, path, "-o", out)
    assert run.code == 0, run.stderr
    if expect_warning:
        assert expect_warning in run.stderr
    assert json.loads((out / "export.json").read_text())["affine_source"] == ("qform" if variant == "qform_only" else "sform")
    assert_exact(out, dicom)


def test_folder_of_masks_equals_multilabel(tmp_path: Path) -> None:
    specs = stack((-20, -20, -10), 14, (0, 0, 1.5), rows=40, columns=40)
    dicom = tmp_path / "dicom"
    write_series(dicom, specs)
    affine, shape = stack_affine(specs, flips=(True, False, False))
    multilabel = write_segmentation(tmp_path / "seg.nii.gz", PHANTOM, affine, shape)
    labels = np.asarray(nib.load(multilabel).dataobj)
    masks = tmp_path / "masks"
    names = {1: "b_big", 2: "a_left_blob", 7: "c_tilted_rod"}  # file-name order decides values: a=1, b=2, c=3
    for value, name in names.items():
        write_nifti(masks / f"{name}.nii.gz", (labels == value).astype(np.uint8), affine)
    (masks / "README.txt").write_text("not a mask")
    out = export(tmp_path, dicom, masks, "--masks")
    table = {entry["name"]: entry["value"] for entry in json.loads((out / "labels.json").read_text())}
    assert table == {"a_left_blob": 1, "b_big": 2, "c_tilted_rod": 3}
    remap = np.zeros(8, dtype=np.uint8)
    remap[[1, 2, 7]] = [2, 1, 3]
    for row in read_manifest(out):
        truth = remap[PHANTOM.labels_at(pixel_centres_from_file(dicom / row["source_file"]))]
        np.testing.assert_array_equal(read_png(out / row["label_png"]), truth)
        for name, value in table.items():
            mask = read_png(out / "masks" / name / Path(row["label_png"]).name)
            assert mask.dtype == bool
            np.testing.assert_array_equal(mask, truth == value)


def test_labels_above_255_are_written_as_16_bit(tmp_path: Path) -> None:
    specs = stack((-20, -20, -10), 8, (0, 0, 1.5), rows=40, columns=40)
    dicom = tmp_path / "dicom"
    write_series(dicom, specs)
    affine, shape = stack_affine(specs)
    labels = np.asarray(nib.load(write_segmentation(tmp_path / "ref.nii.gz", PHANTOM, affine, shape)).dataobj).astype(np.uint16)
    labels[labels == 7] = 1000
    out = export(tmp_path, dicom, write_nifti(tmp_path / "seg.nii.gz", labels, affine))
    images = exported_labels(out)
    assert all(image.dtype == np.uint16 for image in images)
    assert any((image == 1000).any() for image in images)
    with (out / "manifest.csv").open() as stream:
        assert any("1000" in row["labels_present"].split() for row in csv.DictReader(stream))


def test_export_does_not_depend_on_where_the_folder_is(tmp_path: Path) -> None:
    """source_file is relative to DICOM_DIR, so moving the data keeps the manifest valid."""
    specs = stack((-20, -20, -10), 6, (0, 0, 1.5), rows=40, columns=40)
    write_series(tmp_path / "dicom" / "nested" / "deeper", specs)
    affine, shape = stack_affine(specs)
    segmentation = write_segmentation(tmp_path / "seg.nii.gz", PHANTOM, affine, shape)
    out = export(tmp_path, tmp_path / "dicom", segmentation)
    assert all(row["source_file"].startswith("nested/deeper/") for row in read_manifest(out))
    shutil.move(tmp_path / "dicom", tmp_path / "moved")
    assert_exact(out, tmp_path / "moved")
