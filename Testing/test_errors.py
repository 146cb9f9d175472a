"""Every bad-input path of ``segalign export``: one clear line on stderr, exit status 1 (2 for usage errors), no
traceback, and nothing written: OUT_DIR not created (or untouched), no hidden temporary folder beside it, inputs
untouched.

All inputs are synthetic and tiny. The series is an axial stack of SLICES frames of ROWS x COLUMNS pixels whose
first pixel sits far from the patient origin, and the segmentation is a label volume on exactly the series' grid
(voxel ``(i, j, k)`` is pixel ``(row j, column i)`` of frame ``k``), so the expected label images are known.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import exported_labels, leftovers, read_manifest, run_cli, snapshot

from segalign.synthetic import (
    SeriesIdentity,
    grid_affine,
    stack,
    write_enhanced,
    write_nifti,
    write_series,
)

ROWS, COLUMNS, SLICES = 12, 16, 4
ORIGIN_LPS = (100.0, 60.0, 20.0)  #: first pixel of the first frame: far from (0, 0), so an LPS/RAS mix-up misses
SLICE_STEP = 2.0
AFFINE = grid_affine(ORIGIN_LPS, (1.0, 1.0, SLICE_STEP))  #: voxel (i, j, k) = pixel (row j, column i) of frame k


def label_volume(dtype=np.uint8) -> np.ndarray:
    labels = np.zeros((COLUMNS, ROWS, SLICES), dtype=dtype)
    labels[2:6, 3:8, :] = 1
    labels[9:14, 1:4, 1:3] = 2
    return labels


def expected_frames(labels: np.ndarray) -> list[np.ndarray]:
    """The label image of each frame in native order (InstanceNumber 1..SLICES ascends with k)."""
    return [np.ascontiguousarray(labels[:, :, k].T) for k in range(labels.shape[2])]


def write_dicom(folder: Path, count: int = SLICES, identity: SeriesIdentity | None = None) -> list[Path]:
    specs = stack(ORIGIN_LPS, count, (0, 0, SLICE_STEP), rows=ROWS, columns=COLUMNS)
    return write_series(folder, specs, identity=identity)


@pytest.fixture
def case(tmp_path: Path):
    """A good DICOM folder and segmentation; each test breaks one thing."""

    class Case:
        root = tmp_path
        dicom = tmp_path / "dicom"
        seg = tmp_path / "seg.nii.gz"
        out = tmp_path / "out"
        files = write_dicom(tmp_path / "dicom")

    write_nifti(Case.seg, label_volume(), AFFINE)
    return Case


def refused(root: Path, *args: object, words: tuple[str, ...] = ()) -> str:
    """Run the CLI, require a one-line error naming ``words`` and no change at all under ``root``."""
    before = snapshot(root)
    result = run_cli(*args)
    assert result.code == 1, result
    assert result.stdout == "", result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"error must be one line, got: {result.stderr!r}"
    message = lines[0]
    assert message.startswith("segalign: error: "), message
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert leftovers(root) == []
    assert snapshot(root) == before, "a refused export changed files"
    return message


def export_ok(*args: object):
    result = run_cli(*args)
    assert result.code == 0, result
    return result


# --- DICOM folder ----------------------------------------------------------------------------------------------


def test_dicom_folder_missing(case):
    missing = case.root / "no_such_folder"
    refused(case.root, "export", missing, case.seg, "-o", case.out, words=("no_such_folder", "not found"))


def test_dicom_folder_is_a_file(case):
    refused(case.root, "export", case.files[0], case.seg, "-o", case.out, words=(case.files[0].name,))


def test_folder_without_dicom_images(case):
    junk = case.root / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("not a DICOM file\n")
    (junk / "empty.dcm").write_bytes(b"")
    (junk / "random.dcm").write_bytes(bytes(range(256)) * 4)
    message = refused(case.root, "export", junk, case.seg, "-o", case.out, words=(str(junk), "no DICOM image series"))
    assert "3 non-DICOM files" in message


def test_several_series_without_series_option_lists_every_series(case):
    folder = case.root / "mixed"
    identities = [
        SeriesIdentity(description="first CT", modality="CT", series_number=3),
        SeriesIdentity(description="second MR", modality="MR", series_number=7),
        SeriesIdentity(description="third PT", modality="PT", series_number=9),
    ]
    for number, (identity, count) in enumerate(zip(identities, (2, 3, 5))):
        write_dicom(folder / f"s{number}", count=count, identity=identity)
    before = snapshot(case.root)
    result = run_cli("export", folder, case.seg, "-o", case.out)
    assert result.code == 1 and result.stdout == "" and snapshot(case.root) == before
    message, *listing = result.stderr.splitlines()
    assert message.startswith("segalign: error: 3 series in") and "--series" in message
    assert len(listing) == 3  # one line per series, after the one-line error
    for identity, count, line in zip(identities, (2, 3, 5), listing):
        assert identity.series_uid in line
        # number, modality, description and frame count are given together for each series
        assert f"#{identity.series_number} {identity.modality} '{identity.description}', {count} frames" in line


def test_series_option_picks_one_of_several(case):
    folder = case.root / "mixed"
    wanted = SeriesIdentity(description="wanted", series_number=2)
    write_dicom(folder / "a", count=3, identity=SeriesIdentity(description="other", series_number=1))
    write_dicom(folder / "b", identity=wanted)
    export_ok("export", folder, case.seg, "-o", case.out, "--series", wanted.series_uid, "-q")
    rows = read_manifest(case.out)
    assert len(rows) == SLICES
    assert all(row["source_file"].startswith("b/") for row in rows)


def test_unknown_series_uid(case):
    identity = pydicom.dcmread(case.files[0]).SeriesInstanceUID
    before = snapshot(case.root)
    result = run_cli("export", case.dicom, case.seg, "-o", case.out, "--series", "1.2.3.999")
    assert result.code == 1 and snapshot(case.root) == before
    message, *listing = result.stderr.splitlines()
    assert message.startswith("segalign: error: no series with") and "1.2.3.999" in message
    assert len(listing) == 1 and identity in listing[0]  # and says what is there, on the next line


# --- segmentation file -------------------------------------------------------------------------------------------


def test_segmentation_missing(case):
    missing = case.root / "missing.nii.gz"
    refused(case.root, "export", case.dicom, missing, "-o", case.out, words=("missing.nii.gz", "not found"))


def _text_file(path: Path) -> None:
    path.write_text("1 2 3\n")


def _random_bytes_gz(path: Path) -> None:
    path.write_bytes(b"definitely not gzip " * 20)


def _random_bytes_nii(path: Path) -> None:
    path.write_bytes(b"definitely not nifti " * 20)


def _truncated_gz(path: Path) -> None:
    rng = np.random.default_rng(0)
    write_nifti(path, rng.integers(0, 3, (64, 64, 32), dtype=np.uint8), AFFINE)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # header readable, voxel data cut short


def _truncated_nii(path: Path) -> None:
    write_nifti(path, label_volume(), AFFINE)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 300])  # header intact, voxel data cut short


@pytest.mark.parametrize(
    "name, make",
    [
        ("segmentation.txt", _text_file),
        ("corrupt.nii.gz", _random_bytes_gz),
        ("corrupt.nii", _random_bytes_nii),
        ("truncated.nii.gz", _truncated_gz),
        ("truncated.nii", _truncated_nii),
    ],
)
def test_segmentation_not_nifti(case, name, make):
    path = case.root / name
    make(path)
    refused(case.root, "export", case.dicom, path, "-o", case.out, words=(name,))


def test_true_4d_nifti_refused(case):
    volume = np.stack([label_volume(), label_volume()], axis=-1)  # x, y, z, 2
    path = write_nifti(case.root / "four_d.nii.gz", volume, AFFINE)
    refused(case.root, "export", case.dicom, path, "-o", case.out, words=("four_d.nii.gz", "(16, 12, 4, 2)"))


def test_trailing_singleton_4th_dimension_accepted(case):
    path = write_nifti(case.root / "singleton.nii.gz", label_volume()[..., None], AFFINE)
    assert nib.load(path).shape == (COLUMNS, ROWS, SLICES, 1)
    export_ok("export", case.dicom, path, "-o", case.out, "-q")
    for got, want in zip(exported_labels(case.out), expected_frames(label_volume()), strict=True):
        np.testing.assert_array_equal(got, want)


def test_float_with_fraction_refused(case):
    volume = label_volume(np.float32)
    volume[0, 0, 0] = 1.5
    path = write_nifti(case.root / "fraction.nii.gz", volume, AFFINE)
    refused(case.root, "export", case.dicom, path, "-o", case.out, words=("fraction.nii.gz", "1.5", "non-integer"))


def test_float_with_integral_values_accepted(case):
    path = write_nifti(case.root / "float.nii.gz", label_volume(np.float32), AFFINE)
    export_ok("export", case.dicom, path, "-o", case.out, "-q")
    for got, want in zip(exported_labels(case.out), expected_frames(label_volume()), strict=True):
        np.testing.assert_array_equal(got, want)


def test_negative_label_refused(case):
    volume = label_volume(np.int16)
    volume[1, 1, 1] = -3
    path = write_nifti(case.root / "negative.nii.gz", volume, AFFINE)
    refused(case.root, "export", case.dicom, path, "-o", case.out, words=("negative.nii.gz", "negative", "-3"))


def test_label_above_65535_refused(case):
    volume = label_volume(np.int32)
    volume[1, 1, 1] = 70000
    path = write_nifti(case.root / "huge.nii.gz", volume, AFFINE)
    refused(case.root, "export", case.dicom, path, "-o", case.out, words=("huge.nii.gz", "70000", "65535"))


def test_nifti_without_sform_or_qform_refused(case):
    path = write_nifti(case.root / "nowhere.nii.gz", label_volume(), AFFINE, sform_code=0, qform_code=0)
    header = nib.load(path).header
    assert int(header["sform_code"]) == 0 and int(header["qform_code"]) == 0
    refused(case.root, "export", case.dicom, path, "-o", case.out, words=("nowhere.nii.gz", "sform_code", "qform_code"))


def test_nifti_with_qform_only_accepted(case):
    path = write_nifti(case.root / "qform.nii.gz", label_volume(), AFFINE, sform_code=0, qform_code=1)
    export_ok("export", case.dicom, path, "-o", case.out, "-q")
    for got, want in zip(exported_labels(case.out), expected_frames(label_volume()), strict=True):
        np.testing.assert_array_equal(got, want)


def test_segmentation_that_does_not_overlap_the_series(case):
    # the classic mistake: an affine to LPS stored as if it were RAS, so x and y are negated
    lps_as_ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ AFFINE
    path = write_nifti(case.root / "lps.nii.gz", label_volume(), lps_as_ras)
    refused(case.root, "export", case.dicom, path, "-o", case.out, words=("lps.nii.gz", "do not overlap at all"))


def test_oblique_frames_passing_beside_a_small_segmentation(case):
    """The frames' bounding box holds the volume, but no pixel falls in it: refused after sampling, nothing left."""
    tipped = (1, 0, 0, 0, np.sqrt(0.5), -np.sqrt(0.5))  # the plane z = -y (LPS)
    frames = case.root / "oblique"
    write_series(frames, stack((0, 0, 0), 2, (0, 0.1, 0.1), orientation=tipped, rows=16, columns=16))
    small = write_nifti(case.root / "small.nii.gz", np.ones((2, 2, 2), np.uint8), grid_affine((5, 5, -2), (1, 1, 1)))
    refused(case.root, "export", frames, small, "-o", case.out, words=("small.nii.gz", "no pixel of any frame falls inside"))


# --- folder of masks ---------------------------------------------------------------------------------------------


def write_mask(path: Path, box: tuple[slice, ...], shape=(COLUMNS, ROWS, SLICES), affine=AFFINE) -> Path:
    mask = np.zeros(shape, dtype=np.uint8)
    mask[box] = 1
    return write_nifti(path, mask, affine)


def test_masks_on_different_shapes_refused(case):
    masks = case.root / "masks"
    write_mask(masks / "a_liver.nii.gz", np.s_[2:6, 2:6, :])
    write_mask(masks / "b_spleen.nii.gz", np.s_[8:12, 2:6, :], shape=(COLUMNS, ROWS, SLICES + 1))
    refused(case.root, "export", case.dicom, masks, "-o", case.out, words=("a_liver.nii.gz", "b_spleen.nii.gz", "grid"))


def test_masks_with_different_affines_refused(case):
    masks = case.root / "masks"
    shifted = AFFINE.copy()
    shifted[:3, 3] += (0.0, 0.0, 5.0)
    write_mask(masks / "a_liver.nii.gz", np.s_[2:6, 2:6, :])
    write_mask(masks / "b_spleen.nii.gz", np.s_[8:12, 2:6, :], affine=shifted)
    refused(case.root, "export", case.dicom, masks, "-o", case.out, words=("a_liver.nii.gz", "b_spleen.nii.gz", "grid"))


def _overlapping_masks(folder: Path) -> np.ndarray:
    """Two overlapping masks, the later one in name order written first; returns the later-wins label volume."""
    later = write_mask(folder / "b_second.nii.gz", np.s_[6:14, 4:10, :])
    earlier = write_mask(folder / "a_first.nii.gz", np.s_[2:10, 2:8, :])
    assert earlier.stat().st_mtime_ns >= later.stat().st_mtime_ns
    expected = np.zeros((COLUMNS, ROWS, SLICES), dtype=np.uint8)
    expected[2:10, 2:8, :] = 1
    expected[6:14, 4:10, :] = 2
    return expected


def test_overlapping_masks_refused(case):
    masks = case.root / "masks"
    _overlapping_masks(masks)
    refused(
        case.root, "export", case.dicom, masks, "-o", case.out, "--overlap", "error",
        words=("a_first.nii.gz", "b_second.nii.gz", "overlap", "--overlap later-wins"),
    )


def test_overlapping_masks_later_wins(case):
    masks = case.root / "masks"
    expected = _overlapping_masks(masks)
    result = export_ok("export", case.dicom, masks, "-o", case.out, "--overlap", "later-wins")
    assert "more than one mask" in result.stderr
    for got, want in zip(exported_labels(case.out), expected_frames(expected), strict=True):
        np.testing.assert_array_equal(got, want)
    assert (exported_labels(case.out)[0][4:8, 6:10] == 2).all()  # the overlap belongs to b_second (later by name)


def test_mask_folder_without_nifti(case):
    masks = case.root / "masks"
    masks.mkdir()
    (masks / "readme.txt").write_text("no masks here\n")
    (masks / "liver.nii.gz.bak").write_bytes(case.seg.read_bytes())
    refused(case.root, "export", case.dicom, masks, "-o", case.out, words=(str(masks), ".nii"))


def test_mask_folder_with_label_table_not_naming_a_file(case):
    masks = case.root / "masks"
    write_mask(masks / "liver.nii.gz", np.s_[2:6, 2:6, :])
    write_mask(masks / "spleen.nii.gz", np.s_[8:12, 2:6, :])
    table = case.root / "table.csv"
    table.write_text("1,liver\n")
    refused(case.root, "export", case.dicom, masks, "-o", case.out, "--labels", table, words=("spleen.nii.gz",))


# --- label table -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, words",
    [
        ("value,name\n1,liver\nx2,spleen\n", ("line 3", "'x2'", "not an integer")),
        ("1,liver\n2.5,spleen\n", ("line 2", "'2.5'", "not an integer")),
        ("1,liver,red,0,0\n", ("line 1", "colour")),
        ("1,liver,255,0,0\n2,spleen,300,0,0\n", ("line 2", "colour", "0..255")),
        ("1,liver,255,0\n", ("line 1", "value,name")),
        ("-1,liver\n", ("line 1", "outside 0..65535")),
        ("1,\n", ("line 1", "name")),
        ("value,name\n", ("no labels",)),
    ],
    ids=["non-integer", "fractional", "colour-word", "colour-range", "colour-short", "negative", "no-name", "empty"],
)
def test_malformed_label_table(case, text, words):
    table = case.root / "labels.csv"
    table.write_text(text)
    refused(case.root, "export", case.dicom, case.seg, "-o", case.out, "--labels", table, words=("labels.csv",) + words)


def test_label_table_missing(case):
    table = case.root / "missing_labels.csv"
    refused(
        case.root, "export", case.dicom, case.seg, "-o", case.out, "--labels", table,
        words=("missing_labels.csv", "not found"),
    )


# --- output folder -----------------------------------------------------------------------------------------------


def test_output_folder_not_empty_without_overwrite(case):
    case.out.mkdir()
    (case.out / "precious.txt").write_text("keep me\n")
    (case.out / "sub").mkdir()
    (case.out / "sub" / "data.bin").write_bytes(b"\x00\x01")
    refused(case.root, "export", case.dicom, case.seg, "-o", case.out, words=(str(case.out), "--overwrite"))
    assert (case.out / "precious.txt").read_text() == "keep me\n"


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_output_is_a_file(case, overwrite):
    case.out.write_text("a file, not a folder\n")
    refused(
        case.root, "export", case.dicom, case.seg, "-o", case.out, *overwrite, words=(str(case.out), "not a folder")
    )
    assert case.out.read_text() == "a file, not a folder\n"


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
@pytest.mark.parametrize("where", ["same", "same-spelled-differently", "parent", "grandparent"])
def test_output_folder_equal_to_or_containing_the_dicom_folder(case, where, overwrite):
    nested = case.root / "study" / "series"
    files = write_dicom(nested)
    segmentation = case.root / "elsewhere" / "seg.nii.gz"
    segmentation.parent.mkdir()
    case.seg.rename(segmentation)
    out = {
        "same": nested,
        "same-spelled-differently": Path(f"{nested}/../series"),
        "parent": nested.parent,
        "grandparent": case.root,
    }[where]
    refused(case.root, "export", nested, segmentation, "-o", out, *overwrite, words=("would contain",))
    assert all(path.is_file() for path in files)  # the DICOM files are all still there (snapshot checks content)


def test_output_folder_containing_the_segmentation(case):
    inputs = case.root / "inputs"
    inputs.mkdir()
    segmentation = inputs / "seg.nii.gz"
    case.seg.rename(segmentation)
    refused(case.root, "export", case.dicom, segmentation, "-o", inputs, "--overwrite", words=("would contain",))
    assert segmentation.is_file()


# --- DICOM geometry ----------------------------------------------------------------------------------------------


def _edit(path: Path, change) -> None:
    dataset = pydicom.dcmread(path)
    change(dataset)
    dataset.save_as(path)


def test_frame_without_image_position_patient(case):
    """One file of the series has no ImagePositionPatient: the export must refuse, naming the file and the tag,
    rather than silently leave the frame out (one label PNG per DICOM frame)."""
    broken = case.files[1]
    _edit(broken, lambda ds: delattr(ds, "ImagePositionPatient"))
    refused(case.root, "export", case.dicom, case.seg, "-o", case.out, words=(broken.name, "ImagePositionPatient"))


def test_enhanced_frame_without_image_position_patient(case):
    specs = stack(ORIGIN_LPS, SLICES, (0, 0, SLICE_STEP), rows=ROWS, columns=COLUMNS)
    enhanced = write_enhanced(case.root / "enhanced" / "multi.dcm", specs)

    def drop_position(dataset):
        del dataset.PerFrameFunctionalGroupsSequence[2].PlanePositionSequence

    _edit(enhanced, drop_position)
    refused(
        case.root, "export", enhanced.parent, case.seg, "-o", case.out,
        words=("multi.dcm", "frame 3", "ImagePositionPatient"),
    )


@pytest.mark.parametrize(
    "orientation",
    [[2, 0, 0, 0, 1, 0], [1, 0, 0, 0.6, 0.8, 0], [0, 0, 0, 0, 1, 0]],
    ids=["not-unit", "not-orthogonal", "zero"],
)
def test_orientation_not_orthonormal(case, orientation):
    broken = case.files[2]
    _edit(broken, lambda ds: setattr(ds, "ImageOrientationPatient", orientation))
    refused(case.root, "export", case.dicom, case.seg, "-o", case.out, words=(broken.name, "ImageOrientationPatient"))


def test_orientation_not_orthonormal_in_every_frame(case):
    for path in case.files:
        _edit(path, lambda ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 0.6, 0.8, 0]))
    refused(case.root, "export", case.dicom, case.seg, "-o", case.out, words=("ImageOrientationPatient",))


def test_pixel_spacing_missing(case):
    broken = case.files[0]
    _edit(broken, lambda ds: delattr(ds, "PixelSpacing"))
    refused(case.root, "export", case.dicom, case.seg, "-o", case.out, words=(broken.name, "PixelSpacing", "missing"))


def test_pixel_spacing_missing_in_every_frame(case):
    for path in case.files:
        _edit(path, lambda ds: delattr(ds, "PixelSpacing"))
    refused(case.root, "export", case.dicom, case.seg, "-o", case.out, words=("PixelSpacing", "missing"))


def test_info_on_series_without_pixel_spacing_does_not_crash(case):
    for path in case.files:
        _edit(path, lambda ds: delattr(ds, "PixelSpacing"))
    result = run_cli("info", case.dicom)
    assert "Traceback" not in result.stderr
    assert result.code in (0, 1), result
    assert "PixelSpacing" in result.stdout + result.stderr


def test_pixel_spacing_not_positive(case):
    broken = case.files[3]
    _edit(broken, lambda ds: setattr(ds, "PixelSpacing", [0, 1]))
    refused(case.root, "export", case.dicom, case.seg, "-o", case.out, words=(broken.name, "PixelSpacing"))


# --- command line usage ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [["--order", "sideways"], ["--overlap", "average"], ["--bogus"]],
    ids=["order", "overlap", "unknown-option"],
)
def test_usage_errors_exit_2(case, extra):
    before = snapshot(case.root)
    result = run_cli("export", case.dicom, case.seg, "-o", case.out, *extra)
    assert result.code == 2
    assert "usage:" in result.stderr and "Traceback" not in result.stderr
    assert snapshot(case.root) == before


def test_usage_error_missing_output_exits_2(case):
    result = run_cli("export", case.dicom, case.seg)
    assert result.code == 2
    assert "-o/--output" in result.stderr


def test_error_in_a_real_process_has_no_traceback(case):
    """The installed entry point, run as a process: one line on stderr, status 1."""
    completed = subprocess.run(
        [sys.executable, "-m", "segalign", "export", case.root / "nowhere", case.seg, "-o", case.out],
        capture_output=True, text=True, timeout=60,
    )
    assert completed.returncode == 1
    assert completed.stdout == ""
    assert completed.stderr.count("\n") == 1 and completed.stderr.startswith("segalign: error: ")
    assert "Traceback" not in completed.stderr
    assert not case.out.exists()
