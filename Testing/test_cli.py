"""The ``segalign`` command line: ``info`` against series whose geometry is known, ``demo``, ``export`` output
format (manifest, labels.json, masks, file names), --quiet, progress, cancellation and --overwrite semantics.

All inputs are synthetic and small; only the demo writes 512 x 512 frames (8 of them).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import exported_labels, leftovers, read_manifest, read_png, run_cli, snapshot

import segalign
import segalign.cli
import segalign.cli.progress
from segalign.cli.progress import ProgressBar, duration
from segalign.dicom import scan_folder
from segalign.export import ExportCancelled, export_segmentation
from segalign.readers import load_segmentation
from segalign.synthetic import (
    CORONAL,
    SAGITTAL,
    SeriesIdentity,
    grid_affine,
    stack,
    write_nifti,
    write_series,
)

ROWS, COLUMNS, SLICES = 12, 16, 4
ORIGIN_LPS = (100.0, 60.0, 20.0)
SLICE_STEP = 2.0
AFFINE = grid_affine(ORIGIN_LPS, (1.0, 1.0, SLICE_STEP))  #: voxel (i, j, k) = pixel (row j, column i) of frame k


def label_volume(slices: int = SLICES) -> np.ndarray:
    labels = np.zeros((COLUMNS, ROWS, slices), dtype=np.uint8)
    labels[2:6, 3:8, :SLICES] = 1
    labels[9:14, 1:4, 1:3] = 2
    return labels


def expected_frames(labels: np.ndarray) -> list[np.ndarray]:
    return [np.ascontiguousarray(labels[:, :, k].T) for k in range(SLICES)]


@pytest.fixture
def case(tmp_path: Path):
    """A 4-frame axial series in DICOM_DIR/sub/ and a segmentation on its grid with labels 1 and 2."""

    class Case:
        root = tmp_path
        dicom = tmp_path / "dicom"
        seg = tmp_path / "seg.nii.gz"
        out = tmp_path / "out"
        identity = SeriesIdentity(description="cli test")
        files = write_series(
            tmp_path / "dicom" / "sub",
            stack(ORIGIN_LPS, SLICES, (0, 0, SLICE_STEP), rows=ROWS, columns=COLUMNS),
            identity=identity,
        )

    write_nifti(Case.seg, label_volume(), AFFINE)
    return Case


# --- info --------------------------------------------------------------------------------------------------------


def info_json(folder: Path) -> dict:
    result = run_cli("info", folder, "--json")
    assert result.code == 0, result
    return json.loads(result.stdout)


def info_text(folder: Path) -> str:
    result = run_cli("info", folder)
    assert result.code == 0, result
    assert result.stderr == ""
    return result.stdout


def only_series(folder: Path) -> dict:
    report = info_json(folder)
    assert len(report["series"]) == 1
    return report["series"][0]


def test_info_coronal_stack(tmp_path):
    specs = stack((-10, -6, 40), 5, (0, 3, 0), orientation=CORONAL, spacing=(0.5, 0.75), rows=16, columns=20)
    write_series(tmp_path, specs, identity=SeriesIdentity(description="coronal T2", modality="MR", series_number=4))
    series = only_series(tmp_path)
    assert series["orientation"] == "CORONAL"
    assert series["normal"] == "P"
    assert series["frames"] == 5 and series["files"] == 5 and series["positions"] == 5
    assert series["matrix"] == ["16x20"]
    assert series["pixel_spacing"] == ["0.5 x 0.75"]
    assert series["instance_direction"] == "increases towards P (along the normal)"
    assert series["left_handed_in_instance_order"] is False
    assert series["duplicate_positions"] == 0
    assert series["min_gap_mm"] == pytest.approx(3.0) and series["max_gap_mm"] == pytest.approx(3.0)
    assert series["uniform_spacing"] is True
    assert series["tilt_degrees"] == pytest.approx(0.0, abs=0.05)
    assert (series["description"], series["modality"], series["series_number"]) == ("coronal T2", "MR", 4)

    text = info_text(tmp_path)
    assert "CORONAL, normal towards P" in text
    assert "5 frames in 5 files" in text
    assert "16x20 (rows x columns)" in text
    assert "0.5 x 0.75 mm" in text
    assert "increases towards P (along the normal)" in text
    assert "no duplicates" in text
    assert "3.000 to 3.000 mm (uniform)" in text
    assert "gantry tilt      0.00 deg" in text


def test_info_sagittal_stack(tmp_path):
    write_series(tmp_path, stack((30, -50, 60), 3, (-4, 0, 0), orientation=SAGITTAL, rows=16, columns=16))
    series = only_series(tmp_path)
    assert series["orientation"] == "SAGITTAL"
    assert series["normal"] == "R"
    assert series["instance_direction"] == "increases towards R (along the normal)"
    assert series["min_gap_mm"] == pytest.approx(4.0)


@pytest.mark.parametrize("degrees", [12.0, 25.0])
def test_info_reports_gantry_tilt(tmp_path, degrees):
    step = (0.0, 2.5 * math.tan(math.radians(degrees)), 2.5)  # IPP moves off the axial normal by `degrees`
    write_series(tmp_path, stack((0, 0, 0), 6, step, rows=16, columns=16))
    series = only_series(tmp_path)
    assert series["orientation"] == "AXIAL"  # the planes are axial; only their stacking is tilted
    assert series["tilt_degrees"] == pytest.approx(degrees, abs=0.05)
    assert series["min_gap_mm"] == pytest.approx(2.5, abs=1e-3)  # gaps are measured along the normal
    text = info_text(tmp_path)
    assert f"gantry tilt      {degrees:.2f} deg" in text
    assert "gantry tilt" in text.split("note:", 1)[1]  # and flagged as a note


def test_info_oblique_names_nearest_plane(tmp_path):
    angle = math.radians(20)
    orientation = (1, 0, 0, 0, math.cos(angle), -math.sin(angle))  # axial tipped 20 deg about L-R
    normal = np.cross(orientation[:3], orientation[3:])
    write_series(tmp_path, stack((0, 0, 0), 4, 2 * normal, orientation=orientation, rows=16, columns=16))
    series = only_series(tmp_path)
    assert series["orientation"] == "OBLIQUE (nearest AXIAL, 20.0 deg off)"
    assert series["normal"] == "SP"
    assert series["tilt_degrees"] == pytest.approx(0.0, abs=0.05)
    assert series["min_gap_mm"] == pytest.approx(2.0, abs=1e-3)
    assert "OBLIQUE (nearest AXIAL, 20.0 deg off)" in info_text(tmp_path)


def test_info_missing_slice_gives_uneven_gaps(tmp_path):
    specs = [spec for n, spec in enumerate(stack((0, 0, 0), 6, (0, 0, 2), rows=16, columns=16)) if n != 3]
    write_series(tmp_path, specs)
    series = only_series(tmp_path)
    assert series["positions"] == 5
    assert series["min_gap_mm"] == pytest.approx(2.0)
    assert series["max_gap_mm"] == pytest.approx(4.0)
    assert series["uniform_spacing"] is False
    text = info_text(tmp_path)
    assert "2.000 to 4.000 mm (UNEVEN)" in text
    assert "uneven slice spacing" in text


def test_info_duplicate_positions(tmp_path):
    specs = stack((0, 0, 0), 4, (0, 0, 2), rows=16, columns=16)
    specs = specs + [stack((0, 0, 2), 1, (0, 0, 0), rows=16, columns=16, instance_numbers=[5])[0]]
    write_series(tmp_path, specs)
    series = only_series(tmp_path)
    assert series["frames"] == 5
    assert series["positions"] == 4
    assert series["duplicate_positions"] == 1
    assert series["uniform_spacing"] is True
    text = info_text(tmp_path)
    assert "4 distinct positions, 1 with several frames" in text
    assert "1 position holds more than one frame" in text


def test_info_instance_number_counting_against_the_normal(tmp_path):
    write_series(tmp_path, stack((0, 0, 0), 5, (0, 0, 3), rows=16, columns=16, instance_numbers=range(5, 0, -1)))
    series = only_series(tmp_path)
    assert series["normal"] == "S"
    assert series["instance_direction"] == "increases towards I (against the normal)"
    assert series["left_handed_in_instance_order"] is True
    assert "increases towards I (against the normal); a left-handed stack in that order" in info_text(tmp_path)


def test_info_several_series(tmp_path):
    first = SeriesIdentity(description="one", series_number=1)
    second = SeriesIdentity(description="two", modality="MR", series_number=2)
    write_series(tmp_path / "a", stack((0, 0, 0), 2, (0, 0, 1), rows=8, columns=8), identity=first)
    coronal = stack((0, 0, 0), 3, (0, 0, 1), orientation=CORONAL, rows=8, columns=8)
    write_series(tmp_path / "b", coronal, identity=second)
    (tmp_path / "notes.txt").write_text("not DICOM")
    report = info_json(tmp_path)
    assert [s["uid"] for s in report["series"]] == [first.series_uid, second.series_uid]
    assert [s["frames"] for s in report["series"]] == [2, 3]
    assert [s["orientation"] for s in report["series"]] == ["AXIAL", "CORONAL"]
    assert report["warnings"] == ["skipped 1 files that are not DICOM"]
    text = info_text(tmp_path)
    assert first.series_uid in text and second.series_uid in text
    assert "note: skipped 1 files that are not DICOM" in text


def test_info_reports_a_frame_that_cannot_be_placed(case):
    broken = case.files[1]
    dataset = pydicom.dcmread(broken)
    dataset.ImageOrientationPatient = [1, 0, 0, 1, 0, 0]
    dataset.save_as(broken)
    text = info_text(case.dicom)
    problems = [line for line in text.splitlines() if "problem:" in line]
    assert len(problems) == 1
    assert broken.name in problems[0] and "ImageOrientationPatient" in problems[0]
    assert only_series(case.dicom)["frames"] == SLICES - 1


def test_info_missing_folder(tmp_path):
    result = run_cli("info", tmp_path / "absent")
    assert result.code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [f"segalign: error: DICOM folder not found: {tmp_path / 'absent'}"]


# --- demo --------------------------------------------------------------------------------------------------------


def test_demo_quiet(tmp_path):
    result = run_cli("demo", "--output", tmp_path / "demo", "--slices", 8, "-q")
    assert result.code == 0, result
    assert (result.stdout, result.stderr) == ("", "")
    export = tmp_path / "demo" / "export"
    rows = read_manifest(export)
    assert len(rows) == 8
    assert len(list((tmp_path / "demo" / "ct_dicom").iterdir())) == 8

    # native order: InstanceNumber counts down with position, so it rises while the slice position falls
    numbers = [int(row["instance_number"]) for row in rows]
    positions = [float(row["slice_position"]) for row in rows]
    assert numbers == list(range(1, 9))
    assert all(b < a for a, b in zip(positions, positions[1:]))
    assert positions[0] == pytest.approx(8.75) and positions[-1] == pytest.approx(-8.75)

    images = exported_labels(export)
    assert all(image.shape == (512, 512) for image in images)
    present = set().union(*(set(row["labels_present"].split()) for row in rows))
    assert present == {"1", "2", "3", "5", "31", "52"}  # every organ of the phantom crosses these 8 slices
    # organs where the phantom puts them: pixel centre = -199.609375 + 0.78125 * index (LPS mm)
    middle = images[4]
    assert middle[243, 166] == 5  # liver centre (-70, -10) LPS
    assert middle[294, 364] == 1  # spleen centre (85, 30)
    assert middle[288, 275] == 52  # aorta centre (15, 25)
    assert middle[0, 0] == 0 and middle[511, 511] == 0

    names = {entry["value"]: entry["name"] for entry in json.loads((export / "labels.json").read_text())}
    assert names[5] == "liver" and names[1] == "spleen" and names[31] == "vertebrae_L1"


def test_demo_prints_summary(tmp_path):
    result = run_cli("demo", "--output", tmp_path / "demo", "--slices", 2)
    assert result.code == 0, result
    assert result.stdout.startswith("demo finished\n")
    assert str(tmp_path / "demo" / "ct_dicom") in result.stdout
    assert len(read_manifest(tmp_path / "demo" / "export")) == 2


# --- export output -----------------------------------------------------------------------------------------------


def test_quiet_export_prints_nothing(case):
    seg = write_nifti(case.root / "wide.nii.gz", _with_label_outside_the_series(), AFFINE)  # would warn
    result = run_cli("export", case.dicom, seg, "-o", case.out, "--quiet")
    assert result.code == 0
    assert (result.stdout, result.stderr) == ("", "")
    assert len(read_manifest(case.out)) == SLICES


def _with_label_outside_the_series() -> np.ndarray:
    labels = label_volume(slices=SLICES + 2)
    labels[0:3, 0:3, SLICES + 1] = 7  # beyond the last frame
    return labels


def test_export_prints_summary_and_warnings(case):
    seg = write_nifti(case.root / "wide.nii.gz", _with_label_outside_the_series(), AFFINE)
    result = run_cli("export", case.dicom, seg, "-o", case.out)
    assert result.code == 0
    assert f"wrote {SLICES} frames of series {case.identity.series_uid} to {case.out}" in result.stdout
    assert "2 labels on the frames: Segment_1, Segment_2" in result.stdout
    assert f"manifest: {case.out / 'manifest.csv'}" in result.stdout
    warnings = result.stderr.splitlines()
    assert warnings == [
        "segalign: warning: 1 labels of the segmentation fall on no frame (outside the series' field of view): "
        "7 Segment_7"
    ]


def test_manifest_columns_and_values(case):
    run = run_cli("export", case.dicom, case.seg, "-o", case.out, "-q")
    assert run.code == 0, run
    with (case.out / "manifest.csv").open(newline="") as stream:
        header = next(csv.reader(stream))
    required = ["index", "sop_instance_uid", "frame", "instance_number", "source_file", "label_png",
                "image_position_patient", "labels_present"]
    assert [column for column in header if column in required] == required
    rows = read_manifest(case.out)
    assert [int(row["index"]) for row in rows] == list(range(SLICES))
    expected = expected_frames(label_volume())
    for row, path, want in zip(rows, case.files, expected, strict=True):
        dataset = pydicom.dcmread(case.dicom / row["source_file"])
        assert row["source_file"] == f"sub/{path.name}"  # relative to DICOM_DIR, POSIX separators
        assert row["sop_instance_uid"] == dataset.SOPInstanceUID
        assert int(row["instance_number"]) == dataset.InstanceNumber
        assert row["frame"] == "1"
        position = [float(v) for v in row["image_position_patient"].split(" ")]
        assert position == pytest.approx([float(v) for v in dataset.ImagePositionPatient])
        assert row["label_png"].startswith("labels/") and not Path(row["label_png"]).is_absolute()
        image = read_png(case.out / row["label_png"])
        np.testing.assert_array_equal(image, want)
        present = sorted(int(v) for v in np.unique(image) if v)
        assert row["labels_present"] == " ".join(str(v) for v in present)
    assert rows[0]["labels_present"] == "1" and rows[1]["labels_present"] == "1 2"

    provenance = json.loads((case.out / "export.json").read_text())
    assert provenance["series_instance_uid"] == case.identity.series_uid
    assert provenance["order"] == "instance"


def test_labels_json_and_label_table(case):
    table = case.root / "names.csv"
    table.write_text("value,name,r,g,b\n1,liver,221,130,101\n2,spleen,157,108,162\n9,unused,1,2,3\n")
    run = run_cli("export", case.dicom, case.seg, "-o", case.out, "--labels", table, "-q")
    assert run.code == 0, run
    entries = json.loads((case.out / "labels.json").read_text())
    by_value = {entry["value"]: entry for entry in entries}
    assert set(by_value) == {1, 2, 9}
    for entry in entries:
        assert {"value", "name", "color"} <= set(entry)
        assert len(entry["color"]) == 3 and all(0 <= c <= 255 for c in entry["color"])
    assert (by_value[1]["name"], by_value[1]["color"]) == ("liver", [221, 130, 101])
    assert (by_value[2]["name"], by_value[2]["color"]) == ("spleen", [157, 108, 162])
    assert by_value[1]["frames"] == SLICES and by_value[2]["frames"] == 2 and by_value[9]["frames"] == 0


def test_labels_json_default_names_for_every_label(case):
    assert run_cli("export", case.dicom, case.seg, "-o", case.out, "-q").code == 0
    entries = json.loads((case.out / "labels.json").read_text())
    assert [(e["value"], e["name"]) for e in entries] == [(1, "Segment_1"), (2, "Segment_2")]
    assert all(len(e["color"]) == 3 for e in entries)
    assert entries[0]["color"] != entries[1]["color"]


def test_label_file_names_are_safe(case):
    assert run_cli("export", case.dicom, case.seg, "-o", case.out, "-q").code == 0
    names = sorted(p.name for p in (case.out / "labels").iterdir())
    assert names == [f"{n:04d}_i{n + 1}.png" for n in range(SLICES)]


def test_masks_with_hostile_segment_names(case):
    table = case.root / "names.csv"
    table.write_text('1,../../evil name\n2,"a/b\\\\c:*?"\n')
    before = {p for p in case.root.rglob("*")}
    run = run_cli("export", case.dicom, case.seg, "-o", case.out, "--labels", table, "--masks", "-q")
    assert run.code == 0, run
    created = {p for p in case.root.rglob("*")} - before
    assert all(case.out == p or case.out in p.parents for p in created), "something was written outside OUT_DIR"
    folders = sorted(p.name for p in (case.out / "masks").iterdir())
    assert len(folders) == 2
    for folder in folders:
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", folder), folder
    assert "evil_name" in folders
    names = {entry["value"]: entry["name"] for entry in json.loads((case.out / "labels.json").read_text())}
    assert names[1] == "../../evil name"  # the name itself is kept in labels.json, just not used as a path

    labels = exported_labels(case.out)
    rows = read_manifest(case.out)
    for value, folder in ((1, "evil_name"), (2, next(f for f in folders if f != "evil_name"))):
        for row, label_image in zip(rows, labels):
            mask = read_png(case.out / "masks" / folder / Path(row["label_png"]).name)
            assert mask.dtype == np.bool_  # 1-bit PNG
            np.testing.assert_array_equal(mask, label_image == value)


# --- progress and cancellation -----------------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run_on_terminal(*args: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), _Terminal()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = segalign.cli.main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def test_progress_bar_on_a_terminal(case):
    code, out, err = _run_on_terminal("export", case.dicom, case.seg, "-o", case.out)
    assert code == 0
    assert f"{SLICES}/{SLICES} frames" in err
    assert err.startswith("\r[") and err.endswith("\n")
    assert "wrote 4 frames" in out


def test_no_progress_bar_when_quiet_or_not_a_terminal(case):
    code, out, err = _run_on_terminal("export", case.dicom, case.seg, "-o", case.out, "-q")
    assert (code, out, err) == (0, "", "")
    result = run_cli("export", case.dicom, case.seg, "-o", case.root / "out2")  # stderr is not a terminal
    assert result.code == 0
    assert f"/{SLICES} frames" not in result.stderr and "\r" not in result.stderr


class _Clock:
    """A clock that moves only when told: the progress bar's time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _drawn(done: int, total: int, unit: str = "frames") -> str:
    filled = ProgressBar.WIDTH * done // total
    return f"\r[{'#' * filled}{'.' * (ProgressBar.WIDTH - filled)}] {done}/{total} {unit}"


def test_progress_bar_redraws_at_most_every_interval_and_always_the_last_step():
    stream, clock = _Terminal(), _Clock()
    bar = ProgressBar("frames", stream=stream, interval=0.5, clock=clock)
    bar.update(1, 5)  # the first: drawn
    clock.now += 0.25
    bar.update(2, 5)  # 0.25 s later: not
    clock.now += 0.25
    bar.update(3, 5)  # 0.5 s after the last one drawn
    bar.update(4, 5)  # at once: not
    bar.update(5, 5)  # the last step, at once: always
    bar.finish()
    bar.finish()  # the line is ended once
    assert stream.getvalue() == _drawn(1, 5) + _drawn(3, 5) + _drawn(5, 5) + "\n"


def test_progress_bar_messages_end_its_line_and_it_is_redrawn_after_them():
    stream, clock = _Terminal(), _Clock()
    bar = ProgressBar("jobs", stream=stream, interval=0.1, clock=clock)
    bar.update(1, 4, ", 0 failed")
    bar.message("segalign: job b failed: x")
    bar.update(2, 4, ", 1 failed")  # at once, but the bar's line was ended: drawn again
    bar.finish()
    assert stream.getvalue() == (
        _drawn(1, 4, "jobs") + ", 0 failed\nsegalign: job b failed: x\n" + _drawn(2, 4, "jobs") + ", 1 failed\n"
    )
    assert duration(125) == "2:05" and duration(3723) == "1:02:03"


def test_progress_bar_draws_nothing_when_not_a_terminal_or_quiet():
    pipe = io.StringIO()  # not a terminal: no bar, but messages are lines like any other
    bar = ProgressBar("frames", stream=pipe)
    for done in range(1, 4):
        bar.update(done, 3)
    bar.message("segalign: job b failed: x")
    bar.finish()
    assert pipe.getvalue() == "segalign: job b failed: x\n"
    terminal = _Terminal()  # --quiet on a terminal: nothing at all
    quiet = ProgressBar("frames", stream=terminal, quiet=True)
    quiet.update(3, 3)
    quiet.message("segalign: job b failed: x")
    quiet.finish()
    assert terminal.getvalue() == ""


def _stop_after(frames: int, exception: type[BaseException], calls: list):
    def progress(done: int, total: int) -> None:
        calls.append((done, total))
        if done == frames:
            raise exception()

    return progress


def _inputs(case):
    scan = scan_folder(case.dicom)
    return scan.select(), load_segmentation(case.seg)


@pytest.mark.parametrize("exception", [KeyboardInterrupt, ExportCancelled])
def test_interrupted_export_leaves_nothing(case, exception):
    series, segmentation = _inputs(case)
    calls: list = []
    before = snapshot(case.root)
    with pytest.raises(exception):
        export_segmentation(
            series, segmentation, case.out, dicom_root=case.dicom, progress=_stop_after(2, exception, calls)
        )
    assert calls == [(1, SLICES), (2, SLICES)]
    assert not case.out.exists()
    assert leftovers(case.root) == []
    assert snapshot(case.root) == before


@pytest.mark.parametrize("exception", [KeyboardInterrupt, ExportCancelled])
def test_interrupted_overwrite_keeps_previous_export(case, exception):
    series, segmentation = _inputs(case)
    export_segmentation(series, segmentation, case.out, dicom_root=case.dicom)
    (case.out / "index.html").write_text("from before\n")  # an export's file, not written by this one
    previous = snapshot(case.out)
    assert "manifest.csv" in previous and len([k for k in previous if k.startswith("labels/")]) == SLICES
    before = snapshot(case.root)
    with pytest.raises(exception):
        export_segmentation(
            series, segmentation, case.out, dicom_root=case.dicom, overwrite=True,
            progress=_stop_after(3, exception, []),
        )
    assert snapshot(case.out) == previous
    assert leftovers(case.root) == []
    assert snapshot(case.root) == before


def _interrupt_cli_after(monkeypatch, frames: int, exception: type[BaseException]) -> None:
    def progress(self, done: int, total: int, detail: str = "") -> None:
        if done == frames:
            raise exception()

    monkeypatch.setattr(segalign.cli.progress.ProgressBar, "update", progress)


def test_cli_interrupt_exits_130(case, monkeypatch):
    _interrupt_cli_after(monkeypatch, 2, KeyboardInterrupt)
    before = snapshot(case.root)
    result = run_cli("export", case.dicom, case.seg, "-o", case.out)
    assert result.code == 130
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and "interrupted" in result.stderr
    assert not case.out.exists()
    assert leftovers(case.root) == []
    assert snapshot(case.root) == before


def test_cli_interrupt_during_overwrite_keeps_previous_export(case, monkeypatch):
    assert run_cli("export", case.dicom, case.seg, "-o", case.out, "-q").code == 0
    previous = snapshot(case.out)
    _interrupt_cli_after(monkeypatch, 3, KeyboardInterrupt)
    result = run_cli("export", case.dicom, case.seg, "-o", case.out, "--overwrite", "--masks")
    assert result.code == 130
    assert snapshot(case.out) == previous
    assert not (case.out / "masks").exists()
    assert leftovers(case.root) == []


def test_cli_cancelled_exits_1(case, monkeypatch):
    _interrupt_cli_after(monkeypatch, 1, ExportCancelled)
    result = run_cli("export", case.dicom, case.seg, "-o", case.out)
    assert result.code == 1
    assert result.stderr.startswith("segalign: error: ") and len(result.stderr.splitlines()) == 1
    assert not case.out.exists()
    assert leftovers(case.root) == []


# --- overwrite semantics -----------------------------------------------------------------------------------------


def test_overwrite_replaces_previous_export_completely(case):
    assert run_cli("export", case.dicom, case.seg, "-o", case.out, "--masks", "-q").code == 0
    (case.out / "labels" / "9999_stale.png").write_bytes(b"from an older run\n")
    assert (case.out / "masks").is_dir()

    only_one = label_volume()
    only_one[only_one == 2] = 0
    seg = write_nifti(case.root / "one_label.nii.gz", only_one, AFFINE)
    result = run_cli("export", case.dicom, seg, "-o", case.out, "--overwrite", "-q")
    assert result.code == 0, result
    assert not (case.out / "labels" / "9999_stale.png").exists()
    assert not (case.out / "masks").exists()  # the new export has no masks; the old ones are gone
    assert sorted(p.name for p in case.out.iterdir()) == ["export.json", "labels", "labels.json", "manifest.csv"]
    assert all(row["labels_present"] in ("", "1") for row in read_manifest(case.out))
    assert not any((image == 2).any() for image in exported_labels(case.out))
    assert leftovers(case.root) == []


def test_existing_empty_output_folder_is_used_without_overwrite(case):
    case.out.mkdir()
    result = run_cli("export", case.dicom, case.seg, "-o", case.out, "-q")
    assert result.code == 0, result
    assert len(read_manifest(case.out)) == SLICES
    assert leftovers(case.root) == []


def test_new_output_folder_with_missing_parents(case):
    out = case.root / "a" / "b" / "out"
    assert run_cli("export", case.dicom, case.seg, "-o", out, "-q").code == 0
    assert len(read_manifest(out)) == SLICES
    assert leftovers(out.parent) == []


def test_export_same_output_twice_needs_overwrite(case):
    assert run_cli("export", case.dicom, case.seg, "-o", case.out, "-q").code == 0
    first = snapshot(case.out)
    again = run_cli("export", case.dicom, case.seg, "-o", case.out, "-q")
    assert again.code == 1 and "--overwrite" in again.stderr
    assert snapshot(case.out) == first


def test_ctrl_c_while_the_command_starts_is_one_line_and_130() -> None:
    """A Ctrl-C while ``segalign`` is still importing NumPy (a KeyboardInterrupt raised by the import, as Python's
    SIGINT handler raises it) gets the one line and exit status of any interrupt, no traceback; and ``import
    segalign`` alone loads none of the heavy libraries, which load when a public name is first used."""
    import subprocess
    import sys
    import textwrap

    interrupted = textwrap.dedent("""
        import sys
        class Interrupt:
            def find_spec(self, name, path=None, target=None):
                if name == "numpy":
                    raise KeyboardInterrupt
        sys.meta_path.insert(0, Interrupt())
        sys.argv = ["segalign", "info", "."]
        from segalign.console import run
        raise SystemExit(run())
    """)
    run = subprocess.run([sys.executable, "-c", interrupted], capture_output=True, text=True, timeout=60)
    assert run.returncode == 130, run.stderr
    assert run.stderr == "segalign: interrupted; nothing was written\n"
    light = subprocess.run([sys.executable, "-c", "import sys, segalign; heavy = {'numpy', 'pydicom', 'nibabel'}; "
                            "print(sorted(heavy & set(sys.modules))); segalign.export_segmentation; "
                            "print(sorted(heavy & set(sys.modules)))"], capture_output=True, text=True, timeout=60)
    assert light.stdout.splitlines() == ["[]", "['numpy', 'pydicom']"], (light.stdout, light.stderr)
    assert sorted(segalign.__all__) == sorted(segalign._PUBLIC)  # every public name resolves, and is listed
    for name in segalign.__all__:
        assert getattr(segalign, name).__name__ == name
