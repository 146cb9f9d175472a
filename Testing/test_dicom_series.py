"""series_from_files, the one way to build a Series from given files (the Slicer bridge's way): the same Series a
scan of the folder finds, whatever the order of the files; files of several series, or none, refused; progress once
per file, and an exception from it stops the reading."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Callable

import pydicom
import pytest

from segalign.dicom import headers, scan_folder, series_from_files
from segalign.errors import SegAlignError
from segalign.synthetic import CORONAL, SeriesIdentity, shuffled_names, stack, write_enhanced, write_series


def _files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def _edit_all(folder: Path, change: Callable[[pydicom.Dataset], None]) -> None:
    for path in _files(folder):
        dataset = pydicom.dcmread(path)
        change(dataset)
        dataset.save_as(path)


def _axial(folder: Path) -> None:
    write_series(folder, stack((-16, -16, 0), 5, (0, 0, 2), rows=8, columns=8))


def _tilted_without_instance_numbers(folder: Path) -> None:
    specs = stack((-16, -16, 0), 6, (0, 0.5, 2), rows=8, columns=6, instance_numbers=[None] * 6)
    write_series(folder, specs, file_names=shuffled_names(6, seed=11))


def _coronal_with_a_missing_slice(folder: Path) -> None:
    specs = stack((-16, 0, 16), 6, (0, 2, 0), orientation=CORONAL, rows=6, columns=8)
    write_series(folder, specs[:2] + specs[3:], file_names=shuffled_names(5, seed=12))


def _enhanced_in_two_files(folder: Path) -> None:
    identity = SeriesIdentity()
    write_enhanced(folder / "a.dcm", stack((-16, -16, 3), 3, (0, 0, 1), rows=8, columns=8), identity=identity)
    write_enhanced(folder / "b.dcm", stack((-16, -16, 0), 3, (0, 0, 1), rows=8, columns=8), identity=identity)


def _in_two_subfolders(folder: Path) -> None:
    identity = SeriesIdentity(description="split", series_number=7)
    specs = stack((-16, -16, 0), 6, (0, 0, 2), rows=8, columns=8)
    write_series(folder / "a", specs[:3], identity=identity)
    write_series(folder / "b", specs[3:], identity=identity, file_names=["x.dcm", "y.dcm", "z.dcm"])


def _without_series_uid(folder: Path) -> None:
    _axial(folder)
    _edit_all(folder, lambda dataset: delattr(dataset, "SeriesInstanceUID"))


def _with_a_repeated_sop_instance_uid(folder: Path) -> None:
    _axial(folder)
    shutil.copy(folder / "IM00002.dcm", folder / "IM00002_copy.dcm")


def _with_a_frame_that_cannot_be_placed(folder: Path) -> None:
    _axial(folder)
    dataset = pydicom.dcmread(folder / "IM00003.dcm")
    del dataset.PixelSpacing
    dataset.save_as(folder / "IM00003.dcm")


SAME_AS_A_SCAN = {
    "axial": _axial,
    "tilted, without InstanceNumber": _tilted_without_instance_numbers,
    "coronal, a slice missing": _coronal_with_a_missing_slice,
    "enhanced, in two files": _enhanced_in_two_files,
    "in two subfolders": _in_two_subfolders,
    "no SeriesInstanceUID (a note)": _without_series_uid,
    "a SOPInstanceUID in two files (a note naming them)": _with_a_repeated_sop_instance_uid,
    "a frame without PixelSpacing (a problem)": _with_a_frame_that_cannot_be_placed,
}


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("write", SAME_AS_A_SCAN.values(), ids=SAME_AS_A_SCAN.keys())
def test_the_files_of_a_folder_in_any_order_are_the_series_the_scan_finds(tmp_path: Path, write, seed: int) -> None:
    folder = tmp_path / "dicom"
    write(folder)
    paths = [str(path) for path in _files(folder)]
    random.Random(seed).shuffle(paths)
    scanned = scan_folder(folder).select()
    assert scanned.frames
    assert series_from_files(paths + paths[:2]) == scanned  # a file given twice is read once


def test_what_the_scan_finds_is_what_the_files_hold(tmp_path: Path) -> None:
    """The comparison above compares everything a Series holds (so it would see a note or problem lost)."""
    _with_a_frame_that_cannot_be_placed(tmp_path / "broken")
    _with_a_repeated_sop_instance_uid(tmp_path / "repeated")
    broken = series_from_files(_files(tmp_path / "broken"))
    assert len(broken.problems) == 1 and "IM00003.dcm" in broken.problems[0] and "PixelSpacing" in broken.problems[0]
    repeated = series_from_files(_files(tmp_path / "repeated"))
    assert any("IM00002.dcm, IM00002_copy.dcm" in note for note in repeated.notes), repeated.notes


def _two_series(folder: Path) -> list[str]:
    uids = ["1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"]
    for index, uid in enumerate(uids):
        write_series(folder / f"s{index}", stack((-16, -16, 0), 2, (0, 0, 2), rows=4, columns=4),
                     identity=SeriesIdentity(series_uid=uid))
    return uids


def _one_without_uid(folder: Path) -> list[str]:
    uid = "1.2.826.0.1.3680043.8.498.3"
    write_series(folder / "with", stack((-16, -16, 0), 2, (0, 0, 2), rows=4, columns=4),
                 identity=SeriesIdentity(series_uid=uid))
    write_series(folder / "without", stack((-16, -16, 0), 2, (0, 0, 2), rows=4, columns=4))
    _edit_all(folder / "without", lambda dataset: delattr(dataset, "SeriesInstanceUID"))
    return [uid, "(no SeriesInstanceUID)"]


def _five_series(folder: Path) -> list[str]:
    uids = [f"1.2.826.0.1.3680043.8.498.1{index}" for index in range(5)]
    for index, uid in enumerate(uids):
        write_series(folder / f"s{index}", stack((-16, -16, 0), 1, (0, 0, 2), rows=4, columns=4),
                     identity=SeriesIdentity(series_uid=uid))
    return uids[:3] + ["and 2 more"]


SEVERAL_SERIES = {"two series": _two_series, "one without a UID": _one_without_uid, "five series": _five_series}


@pytest.mark.parametrize("write", SEVERAL_SERIES.values(), ids=SEVERAL_SERIES.keys())
def test_files_of_several_series_are_refused_naming_them(tmp_path: Path, write) -> None:
    words = write(tmp_path / "dicom")
    with pytest.raises(SegAlignError, match="different series") as refused:
        series_from_files(_files(tmp_path / "dicom"))
    message = str(refused.value)
    assert "\n" not in message and all(word in message for word in words), message


def _not_dicom(folder: Path) -> Path:
    _axial(folder)
    (folder / "notes.txt").write_text("not DICOM")
    return folder / "notes.txt"


def _missing(folder: Path) -> Path:
    _axial(folder)
    return folder / "gone.dcm"  # listed, then deleted before it was read


@pytest.mark.parametrize("write", [_not_dicom, _missing], ids=["not DICOM", "missing"])
def test_a_file_that_cannot_be_read_is_refused_naming_it(tmp_path: Path, write) -> None:
    """The files are the caller's choice: nothing is skipped quietly, as a scan of a folder would."""
    bad = write(tmp_path / "dicom")
    with pytest.raises(SegAlignError, match="cannot be read as DICOM") as refused:
        series_from_files(sorted({*_files(tmp_path / "dicom"), bad}))
    assert str(refused.value).startswith(f"{bad}: ")


def test_no_files_are_refused() -> None:
    with pytest.raises(SegAlignError, match="no DICOM files given"):
        series_from_files([])


@pytest.mark.parametrize("count", [1, 2, 5])
def test_progress_is_called_once_per_file(tmp_path: Path, count: int) -> None:
    write_series(tmp_path, stack((-16, -16, 0), count, (0, 0, 2), rows=4, columns=4))
    calls: list[tuple[int, int]] = []
    paths = _files(tmp_path)
    series = series_from_files(paths + paths[:1], progress=lambda done, total: calls.append((done, total)))
    assert len(series.frames) == count
    assert calls == [(done, count) for done in range(1, count + 1)]


class Stop(Exception):
    """Raised from a progress callback: a user's Cancel."""


@pytest.mark.parametrize("stop", [KeyboardInterrupt, Stop], ids=["Ctrl-C", "exception"])
@pytest.mark.parametrize("stop_at", [1, 3, 5])
def test_an_exception_from_progress_stops_the_reading(tmp_path: Path, monkeypatch, stop_at: int, stop) -> None:
    write_series(tmp_path, stack((-16, -16, 0), 5, (0, 0, 2), rows=4, columns=4))
    read: list[Path] = []
    real = headers.read_header

    def counting(path):
        read.append(path)
        return real(path)

    def progress(done: int, total: int) -> None:
        if done == stop_at:
            raise stop()

    monkeypatch.setattr(headers, "read_header", counting)  # the documented seam series_from_files reads through
    with pytest.raises(stop):
        series_from_files(_files(tmp_path), progress=progress)
    assert len(read) == stop_at, "a file was read after progress raised"
