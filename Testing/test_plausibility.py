"""A plausible but wrong input must not pass quietly: partial coverage, intensity images given as segmentations,
swapped arguments, several series, and messages that read naturally.

The series is an axial stack of SLICES frames whose voxel grid the segmentation shares (voxel ``(i, j, k)`` is
pixel ``(row j, column i)`` of frame ``k``), so which frames a cropped segmentation covers is known exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import leftovers, read_manifest, run_cli
from segalign import load_segmentation, scan_folder
from segalign.errors import SegAlignError
from segalign.segmentation import looks_like_image
from segalign.synthetic import SeriesIdentity, grid_affine, stack, write_nifti, write_series

ROWS, COLUMNS, SLICES = 12, 16, 10
ORIGIN = (40.0, -30.0, 15.0)
STEP = 2.5


def write_dicom(folder: Path, identity: SeriesIdentity | None = None, count: int = SLICES,
                orientation=(1, 0, 0, 0, 1, 0)) -> list[Path]:
    specs = stack(ORIGIN, count, (0, 0, STEP), rows=ROWS, columns=COLUMNS, orientation=orientation)
    return write_series(folder, specs, identity=identity)


def cropped_segmentation(path: Path, first: int, last: int) -> Path:
    """Labels on frames ``first..last`` only: the volume spans just those slices (a cropped segmentation)."""
    labels = np.zeros((COLUMNS, ROWS, last - first + 1), np.uint8)
    labels[3:9, 2:7, :] = 1
    labels[10:14, 5:9, 1:] = 4
    origin = (ORIGIN[0], ORIGIN[1], ORIGIN[2] + first * STEP)
    return write_nifti(path, labels, grid_affine(origin, (1.0, 1.0, STEP)))


# --- partial coverage --------------------------------------------------------------------------------------------


def test_partial_coverage_is_warned_with_the_numbers(tmp_path: Path) -> None:
    dicom = tmp_path / "dicom"
    write_dicom(dicom)
    seg = cropped_segmentation(tmp_path / "seg.nii.gz", 3, 6)  # frames 3..6 of 0..9
    run = run_cli("export", dicom, seg, "-o", tmp_path / "out")
    assert run.code == 0, run.stderr
    warnings = [line for line in run.stderr.splitlines() if "covers only part" in line]
    assert len(warnings) == 1, run.stderr
    assert "6 of 10 frames lie outside its extent (export indices 0-2, 7-9)" in warnings[0]
    assert "6 frames have no label" in warnings[0]
    assert "S[15,38]" in warnings[0] and "S[22,30]" in warnings[0]  # series 15..37.5 mm, segmentation 22.5..30
    coverage = json.loads((tmp_path / "out" / "export.json").read_text())["coverage"]
    rows = read_manifest(tmp_path / "out")
    assert coverage["frames"] == len(rows) == SLICES
    assert coverage["frames_outside_extent"] == 6
    assert coverage["frames_without_label"] == sum(1 for row in rows if not row["labels_present"]) == 6


def test_full_coverage_is_not_warned_about(tmp_path: Path) -> None:
    dicom = tmp_path / "dicom"
    write_dicom(dicom)
    seg = cropped_segmentation(tmp_path / "seg.nii.gz", 0, SLICES - 1)
    run = run_cli("export", dicom, seg, "-o", tmp_path / "out")
    assert run.code == 0 and "covers only part" not in run.stderr
    coverage = json.loads((tmp_path / "out" / "export.json").read_text())["coverage"]
    assert coverage["frames_outside_extent"] == 0 and coverage["frames_without_label"] == 0


# --- intensity images given as the segmentation -------------------------------------------------------------------


def smooth_image(shape=(40, 40, 30), low=0, high=1800, seed=1) -> np.ndarray:
    """An MR-like int16 volume: a smooth bright blob, noise, values spread over low..high."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    blob = np.exp(-(grid ** 2).sum(axis=0) * 1.5)
    values = low + (high - low) * blob + rng.normal(0, 40, shape)
    return np.clip(np.round(values), low, high).astype(np.int16)


def test_an_mr_image_given_as_segmentation_is_refused_with_an_option_to_insist(tmp_path: Path) -> None:
    dicom = tmp_path / "dicom"
    write_dicom(dicom)
    image = write_nifti(tmp_path / "t1.nii.gz", smooth_image(), grid_affine(ORIGIN, (1.0, 1.0, 1.0)))
    run = run_cli("export", dicom, image, "-o", tmp_path / "out")
    assert run.code == 1 and not (tmp_path / "out").exists() and leftovers(tmp_path) == []
    (line,) = run.stderr.splitlines()
    assert "t1.nii.gz looks like an intensity image, not a label map" in line and "--allow-many-labels" in line
    assert "distinct values" in line
    insisted = run_cli("export", dicom, image, "-o", tmp_path / "out", "--allow-many-labels", "-q")
    assert insisted.code == 0, insisted.stderr
    with pytest.raises(SegAlignError, match="allow_many_labels=True"):
        load_segmentation(image)


def test_a_ct_image_given_as_segmentation_says_it_looks_like_an_image(tmp_path: Path) -> None:
    dicom = tmp_path / "dicom"
    write_dicom(dicom)
    ct = write_nifti(tmp_path / "ct.nii.gz", smooth_image(low=-1024, high=1500), grid_affine(ORIGIN, (1, 1, 1)))
    run = run_cli("export", dicom, ct, "-o", tmp_path / "out")
    assert run.code == 1 and "intensity image" in run.stderr and "-1024" in run.stderr


def test_an_atlas_with_hundreds_of_labels_is_not_mistaken_for_an_image(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    labels = rng.permutation(np.repeat(np.arange(1, 401, dtype=np.uint16), rng.integers(5, 60, 400)))
    volume = np.zeros(40 * 40 * 30, np.uint16)
    volume[: labels.size] = labels
    path = write_nifti(tmp_path / "atlas.nii.gz", volume.reshape(40, 40, 30), grid_affine(ORIGIN, (1, 1, 1)))
    assert len(load_segmentation(path).values) == 400


@pytest.mark.parametrize("values, expected", [
    ({v: 1000 for v in range(1, 300)}, True),  # perfectly flat histogram over a dense range: an image
    ({v: 10 ** (v % 3) for v in range(1, 300)}, False),  # dense but rough: label sizes unrelated to neighbours
    ({v * 3: 1000 for v in range(1, 300)}, False),  # sparse values
    ({v: 1000 for v in range(1, 200)}, False),  # too few values to say
])
def test_looks_like_image_on_histograms(values: dict[int, int], expected: bool) -> None:
    assert bool(looks_like_image(values)) is expected


# --- swapped arguments --------------------------------------------------------------------------------------------


def test_swapped_arguments_are_called_swapped(tmp_path: Path) -> None:
    dicom = tmp_path / "dicom"
    write_dicom(dicom)
    seg = cropped_segmentation(tmp_path / "seg.nii.gz", 0, 9)
    run = run_cli("export", seg, dicom, "-o", tmp_path / "out")
    assert run.code == 1 and not (tmp_path / "out").exists()
    (line,) = run.stderr.splitlines()
    assert "look swapped" in line and "not found" not in line and "DICOM_DIR SEGMENTATION" in line


# --- several series -----------------------------------------------------------------------------------------------


@pytest.fixture
def three_series(tmp_path: Path) -> tuple[Path, list[SeriesIdentity], Path]:
    folder = tmp_path / "study"
    identities = [
        SeriesIdentity(description="axial", series_number=3),
        SeriesIdentity(description="axial repeat", series_number=3),
        SeriesIdentity(description="coronal", series_number=1),
    ]
    write_dicom(folder / "a", identities[0])
    write_dicom(folder / "b", identities[1], count=4)
    write_dicom(folder / "c", identities[2], count=3, orientation=(1, 0, 0, 0, 0, -1))
    return folder, identities, cropped_segmentation(tmp_path / "seg.nii.gz", 0, 9)


def test_the_refusal_lists_what_tells_several_series_apart(three_series, tmp_path: Path) -> None:
    folder, identities, seg = three_series
    run = run_cli("export", folder, seg, "-o", tmp_path / "out")
    assert run.code == 1
    first, *listing = run.stderr.splitlines()
    assert first.startswith("segalign: error: 3 series in") and "--series" in first and len(first) < 300
    assert len(listing) == 3
    # scan order: by SeriesNumber, then UID
    by_number = sorted(identities, key=lambda i: (i.series_number, i.series_uid))
    for index, (line, identity) in enumerate(zip(listing, by_number), start=1):
        assert line.strip().startswith(f"[{index}] #{identity.series_number} CT '{identity.description}'")
        assert identity.series_uid in line and "folder " in line
    assert "CORONAL" in listing[0] and "AXIAL" in listing[1] and "3 frames" in listing[0]


def test_series_by_number_index_or_uid_and_ambiguity_refused(three_series, tmp_path: Path) -> None:
    folder, identities, seg = three_series
    scan = scan_folder(folder)
    coronal = identities[2]
    assert scan.select("1").uid == coronal.series_uid  # SeriesNumber 1 and index 1 are the same series
    assert scan.select(1).uid == coronal.series_uid
    assert scan.select(identities[1].series_uid).uid == identities[1].series_uid
    with pytest.raises(SegAlignError, match="ambiguous") as error:  # SeriesNumber 3 is two series, index 3 a third
        scan.select("3")
    assert len(error.value.details) == 3
    index_two = scan.series[1].uid
    assert scan.select("2").uid == index_two  # no series has SeriesNumber 2: the index
    with pytest.raises(SegAlignError, match="no series with UID, SeriesNumber or index 7"):
        scan.select("7")
    out = tmp_path / "out"
    run = run_cli("export", folder, seg, "-o", out, "--series", "1", "-q")
    assert run.code == 0, run.stderr
    assert {row["source_file"].split("/")[0] for row in read_manifest(out)} == {"c"}


def test_library_messages_name_arguments_and_the_cli_names_flags(three_series) -> None:
    folder, _, _ = three_series
    with pytest.raises(SegAlignError) as error:
        scan_folder(folder).select()
    assert "series=" in str(error.value) and "--series" not in str(error.value)
    assert "--series" in error.value.cli_message


# --- info and reprs -----------------------------------------------------------------------------------------------


def test_info_numbers_several_series_and_fails_without_any(three_series, tmp_path: Path) -> None:
    folder, identities, _ = three_series
    run = run_cli("info", folder)
    assert run.code == 0
    assert "3 series (export one with --series" in run.stdout
    assert "[1] Series" in run.stdout and "[3] Series" in run.stdout
    assert "frames           3 frames in 3 files" in run.stdout
    assert "folder           c   (PatientPosition" in run.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not DICOM")
    nothing = run_cli("info", empty)
    assert nothing.code == 1 and "no DICOM image series" in nothing.stderr  # an error: on standard error
    assert run_cli("info", empty, "--json").code == 1


def test_info_reads_naturally_for_one_frame_and_explains_left_handed_stacks(tmp_path: Path) -> None:
    one = tmp_path / "one"
    write_dicom(one, count=1)
    text = run_cli("info", one).stdout
    assert "1 frame in 1 file" in text and "1 distinct position" in text
    assert "1 files" not in text and "1 positions" not in text
    reversed_stack = tmp_path / "reversed"
    specs = stack(ORIGIN, 4, (0, 0, STEP), rows=ROWS, columns=COLUMNS, instance_numbers=[4, 3, 2, 1])
    write_series(reversed_stack, specs)
    text = run_cli("info", reversed_stack).stdout
    assert "left-handed stack in that order (stacking InstanceNumber against cross(row, column) mirrors it" in text


def test_reprs_are_a_line_not_the_whole_volume(three_series) -> None:
    folder, _, seg = three_series
    scan = scan_folder(folder)
    segmentation = load_segmentation(seg)
    for thing in (scan, scan.series[0], segmentation):
        assert len(repr(thing)) < 300 and "\n" not in repr(thing), repr(thing)
    assert repr(segmentation).startswith("<Segmentation seg.nii.gz: 16x12x10 uint8, 2 labels")
    assert "3 series" in repr(scan)


def test_a_segmentation_path_that_is_not_a_file_says_so(tmp_path: Path) -> None:
    dicom = tmp_path / "dicom"
    write_dicom(dicom)
    run = run_cli("export", dicom, "/dev/null", "-o", tmp_path / "out")
    assert run.code == 1 and "is not a regular file" in run.stderr and "not found" not in run.stderr
    run = run_cli("export", dicom, tmp_path / ("x" * 5000 + ".nii.gz"), "-o", tmp_path / "out")
    assert run.code == 1 and run.stderr.count("\n") == 1 and "Traceback" not in run.stderr


def test_overlapping_masks_name_the_argument_or_the_flag(tmp_path: Path) -> None:
    masks = tmp_path / "masks"
    volume = np.zeros((4, 4, 4), np.uint8)
    volume[1:3, 1:3, 1:3] = 1
    for name in ("a", "b"):
        write_nifti(masks / f"{name}.nii.gz", volume, grid_affine(ORIGIN, (1, 1, 1)))
    with pytest.raises(SegAlignError) as error:
        load_segmentation(masks, overlap="error")  # the default keeps both, in two layers
    assert "overlap='later-wins'" in str(error.value) and "--overlap later-wins" in error.value.cli_message
    assert len(load_segmentation(masks, overlap="later-wins").values) == 1


def test_a_grid_of_similar_sized_regions_is_a_label_map_not_an_image(tmp_path: Path) -> None:
    """512 equal cubes have a perfectly smooth histogram, but each region is constant: a label map."""
    cube = np.arange(1, 513, dtype=np.uint16).reshape(8, 8, 8)
    volume = np.kron(cube, np.ones((8, 8, 8), np.uint16))
    path = write_nifti(tmp_path / "grid.nii.gz", volume, grid_affine(ORIGIN, (1, 1, 1)))
    assert len(load_segmentation(path).values) == 512
    assert looks_like_image({v: 512 for v in range(1, 513)})  # the histogram alone would call it an image


def test_series_with_a_non_ascii_digit_is_a_one_line_error(three_series, tmp_path: Path) -> None:
    folder, _, seg = three_series
    run = run_cli("export", folder, seg, "-o", tmp_path / "out", "--series", "\u00b2")
    assert run.code == 1 and "Traceback" not in run.stderr and "no series with" in run.stderr.splitlines()[0]
