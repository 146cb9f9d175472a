"""``segalign batch``: a cohort of phantoms, real series and broken jobs, on a process pool, in this process and on
a real Dask cluster (a scheduler and two worker processes on 127.0.0.1), with resume after every kind of stop.

Truth: every good export equals its phantom at the pixel centres computed here from each frame's own tags (or, for
the real TotalSegmentator CT, SimpleITK's resampling); a broken job's error is the line ``segalign export`` prints
for the same inputs; the Dask cluster's exports equal the local ones file for file.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import nibabel as nib
import numpy as np
import pytest

from conftest import TESTDATA, leftovers, read_manifest, read_png, run_cli
from phantoms import pixel_centres_from_file, rotated_orientation, small_phantom, stack_affine, write_segmentation
from segalign.batch import (
    Job,
    RESULT_COLUMNS,
    find_jobs,
    job_fingerprint,
    name_jobs,
    read_jobs,
    run_batch,
    write_jobs,
)
from segalign.errors import SegAlignError
from segalign.export import export_problem
from segalign.options import ExportOptions, ReadOptions
from segalign.synthetic import AXIAL, SAGITTAL, Phantom, stack, write_nifti, write_series

PHANTOM = small_phantom()
BROKEN = ("missing", "no_segmentation", "corrupt", "no_overlap")
#: A hard bound on every test that starts processes or a cluster (seconds).
TIME_LIMIT = 240


@contextlib.contextmanager
def time_limit(seconds: int = TIME_LIMIT) -> Iterator[None]:
    """Fail (rather than hang) a test whose processes stop answering."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"the test took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# --- the cohort ----------------------------------------------------------------------------------------------------


@dataclass
class Study:
    name: str
    dicom: Path
    segmentation: Path
    phantom: Phantom | None = None  #: None for a broken job
    values: dict[int, int] | None = None  #: phantom value -> exported value (a folder of masks renumbers)


GEOMETRIES = {
    # name: (orientation, spacing, rows, columns, step)
    "axial": (AXIAL, (0.9, 0.9), 40, 40, (0, 0, 1.5)),
    "sagittal": (SAGITTAL, (0.8, 0.8), 44, 40, (1.2, 0, 0)),
    "oblique": (rotated_orientation(0.35, -0.5, 0.2), (0.85, 0.85), 40, 40, None),
}


def _phantom_study(root: Path, name: str, geometry: str, slices: int = 20, size: int | None = None,
                   phantom: Phantom = PHANTOM) -> Study:
    orientation, spacing, rows, columns, step = GEOMETRIES[geometry]
    if size is not None:
        rows = columns = size
        spacing = (40.0 / size, 40.0 / size)
    normal = np.cross(orientation[:3], orientation[3:])
    step = step if step is not None else tuple(1.4 * normal)
    centre = -(np.asarray(orientation[:3]) * spacing[1] * columns + np.asarray(orientation[3:]) * spacing[0] * rows) / 2
    first = centre - np.asarray(step) * slices / 2
    specs = stack(tuple(first), slices, step, orientation=orientation, spacing=spacing, rows=rows, columns=columns,
                  instance_numbers=range(slices, 0, -1))
    dicom = root / name / "dicom"
    write_series(dicom, specs, phantom)
    affine, shape = stack_affine(specs, (0, 1, 2), (False, True, False))
    segmentation = write_segmentation(root / name / "seg.nii.gz", phantom, affine, shape)
    return Study(name, dicom, segmentation, phantom, {v: v for v in (1, 2, 7)})


def _mask_study(root: Path, name: str) -> Study:
    """TotalSegmentator's layout: a folder of binary masks, one per structure, numbered in name order."""
    study = _phantom_study(root, name, "axial")
    image = nib.load(study.segmentation)
    labels = np.asarray(image.dataobj)
    masks = root / name / "segmentations"
    for value, label_name in ((1, "big"), (2, "left_blob"), (7, "tilted_rod")):
        write_nifti(masks / f"{label_name}.nii.gz", (labels == value).astype(np.uint8), image.affine)
    study.segmentation.unlink()
    return Study(name, study.dicom, masks, PHANTOM, {1: 1, 2: 2, 7: 3})


def make_cohort(root: Path) -> list[Study]:
    """Phantoms on three geometries and a folder of masks, the real TotalSegmentator CT when the shared data is
    here, and three broken jobs: a missing folder, a corrupt NIfTI, a segmentation that covers no frame."""
    studies = [_phantom_study(root, name, name) for name in GEOMETRIES] + [_mask_study(root, "masks")]
    real = TESTDATA / "totalsegmentator_example"
    if (real / "ct_dicom").is_dir() and (real / "segmentation_ml.nii.gz").is_file():
        studies.append(Study("totalsegmentator", real / "ct_dicom", real / "segmentation_ml.nii.gz"))
    broken = _phantom_study(root, "corrupt", "axial")
    broken.segmentation.write_bytes(b"\x1f\x8b" + os.urandom(300))
    far = _phantom_study(root, "no_overlap", "axial")
    image = nib.load(far.segmentation)
    moved = image.affine.copy()
    moved[:3, 3] += 500.0
    write_nifti(far.segmentation, np.asarray(image.dataobj), moved)
    studies += [
        Study("missing", root / "missing" / "dicom", far.segmentation),
        Study("no_segmentation", far.dicom, root / "no_overlap" / "not-there.nii.gz"),
        Study("corrupt", broken.dicom, broken.segmentation),
        Study("no_overlap", far.dicom, far.segmentation),
    ]
    for study in studies:
        if study.name in ("corrupt", "no_overlap"):
            study.phantom = None
    return studies


def write_table(studies: list[Study], path: Path) -> Path:
    write_jobs([Job(s.name, s.dicom, s.segmentation) for s in studies], path)
    return path


def read_rows(table: Path) -> dict[str, dict[str, str]]:
    with table.open(newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert list(rows[0]) == list(RESULT_COLUMNS) if rows else True
    by_name = {row["name"]: row for row in rows}
    assert len(by_name) == len(rows), "a job has two rows"
    return by_name


def good(studies: list[Study]) -> list[Study]:
    return [s for s in studies if s.name not in BROKEN]


def assert_exact(study: Study, out: Path) -> None:
    """The export of ``study`` in ``out`` equals its phantom on every frame (or SimpleITK for the real CT)."""
    assert export_problem(out) is None, export_problem(out)
    rows = read_manifest(out)
    assert rows
    if study.phantom is None:  # the real TotalSegmentator CT: SimpleITK resamples the same NIfTI onto each frame
        from test_realdata import assert_same_as_itk

        assert_same_as_itk(out, study.dicom, study.segmentation)
        return
    hits = 0
    mapping = np.zeros(256, dtype=np.uint8)
    for value, exported in (study.values or {}).items():
        mapping[value] = exported
    for row in rows:
        truth = mapping[study.phantom.labels_at(pixel_centres_from_file(study.dicom / row["source_file"]))]
        np.testing.assert_array_equal(read_png(out / row["label_png"]), truth, err_msg=f"{study.name} {row['label_png']}")
        hits += int(truth.any())
    assert hits > 0


def export_error(study: Study, tmp_path: Path) -> str:
    """The one line ``segalign export`` prints for the study's inputs."""
    run = run_cli("export", study.dicom, study.segmentation, "-o", tmp_path / f"single-{study.name}", "-q")
    assert run.code == 1
    first = run.stderr.splitlines()[0]
    assert first.startswith("segalign: error: ")
    return first.removeprefix("segalign: error: ")


def assert_cohort(studies: list[Study], out: Path, tmp_path: Path, statuses: dict[str, str] | None = None) -> None:
    rows = read_rows(out / "batch.csv")
    assert sorted(rows) == sorted(s.name for s in studies)
    for study in studies:
        row = rows[study.name]
        if study in good(studies):
            assert row["status"] == (statuses or {}).get(study.name, "ok"), row
            assert row["error"] == ""
            assert int(row["frames"]) == len(read_manifest(out / study.name))
            assert_exact(study, out / study.name)
        else:
            assert row["status"] == "failed", row
            assert row["error"] == export_error(study, tmp_path), row
            assert not (out / study.name).exists()
    assert leftovers(out) == []


def run_segalign(*args: object, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "segalign", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Study], Path]:
    root = tmp_path_factory.mktemp("cohort")
    studies = make_cohort(root)
    return studies, write_table(studies, root / "jobs.csv")


# --- local runs ----------------------------------------------------------------------------------------------------


def test_pool_exports_every_job_exactly_and_reports_broken_ones(cohort, tmp_path: Path) -> None:
    studies, table = cohort
    out = tmp_path / "out"
    with time_limit():
        run = run_segalign("batch", table, "-o", out, "--workers", "2")
    assert run.returncode == 1, run.stderr
    failed = len(studies) - len(good(studies))
    assert run.stdout.strip().splitlines()[-1].startswith(f"batch: {len(studies)} jobs: {len(good(studies))} exported")
    assert f"{failed} failed" in run.stdout
    for study in studies:
        if study not in good(studies):
            assert f"segalign: job {study.name} failed: " in run.stderr
    assert_cohort(studies, out, tmp_path)
    provenance = json.loads((out / "axial" / "export.json").read_text())
    assert provenance["batch"]["job"] == "axial" and len(provenance["batch"]["fingerprint"]) == 64


def test_in_process_run_gives_the_same_exports_as_the_pool(cohort, tmp_path: Path) -> None:
    studies, table = cohort
    pool, here = tmp_path / "pool", tmp_path / "here"
    with time_limit():
        first = run_batch(read_jobs(table), pool, workers=2)
        second = run_batch(read_jobs(table), here, workers=1)
    assert [(r.name, r.status, r.frames, r.error) for r in first.results] == \
        [(r.name, r.status, r.frames, r.error) for r in second.results]
    for study in good(studies):
        assert_same_export(pool / study.name, here / study.name)


def assert_same_export(a: Path, b: Path) -> None:
    """The label images, manifest and label table of two exports are byte for byte the same."""
    names = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.suffix in (".png", ".csv")
                   or p.name == "labels.json")
    assert names == sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.suffix in (".png", ".csv")
                           or p.name == "labels.json")
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_rerun_skips_redoes_what_changed_and_retries_failures(tmp_path: Path) -> None:
    studies = make_cohort(tmp_path / "studies")
    table = write_table(studies, tmp_path / "jobs.csv")
    out = tmp_path / "out"
    with time_limit():
        assert run_cli("batch", table, "-o", out, "--workers", "1", "-q").code == 1
        before = {s.name: (out / s.name / "export.json").stat().st_mtime_ns for s in good(studies)}
        again = run_cli("batch", table, "-o", out, "--workers", "1")
        assert again.code == 1
        assert f"{len(good(studies))} skipped" in again.stdout
        assert_cohort(studies, out, tmp_path, statuses={s.name: "skipped" for s in studies})
        assert before == {s.name: (out / s.name / "export.json").stat().st_mtime_ns for s in good(studies)}

        # One segmentation changes (another phantom): only its job is exported again, and exactly.
        changed = next(s for s in studies if s.name == "sagittal")
        moved = small_phantom(centre=(3.0, -2.0, 1.0))
        image = nib.load(changed.segmentation)
        write_segmentation(changed.segmentation, moved, image.affine, image.shape)
        changed.phantom = moved
        assert run_cli("batch", table, "-o", out, "--workers", "1", "-q").code == 1
        statuses = {s.name: "skipped" for s in studies}
        statuses["sagittal"] = "ok"
        assert_cohort(studies, out, tmp_path, statuses)

        # The broken job is repaired: it is retried and now exported.
        repaired = next(s for s in studies if s.name == "corrupt")
        axial = next(s for s in studies if s.name == "axial")
        shutil.copyfile(axial.segmentation, repaired.segmentation)
        repaired.phantom, repaired.values = PHANTOM, axial.values
        result = run_batch(read_jobs(table), out, workers=1)
        assert {r.name: r.status for r in result.results}["corrupt"] == "ok"
        assert_exact(repaired, out / "corrupt")

        # Other options: every job is exported again.
        result = run_batch(read_jobs(table), out, ExportOptions(stats=True), workers=1)
        assert {r.status for r in result.results if r.name in before} == {"ok"}
        assert "label_pixels" in (out / "axial" / "manifest.csv").read_text().splitlines()[0]


def test_changed_dicom_file_or_label_table_redoes_the_job(tmp_path: Path) -> None:
    study = _phantom_study(tmp_path, "one", "axial")
    job = Job("one", study.dicom, study.segmentation)
    options, reads = ExportOptions(), ReadOptions()
    first = job_fingerprint(job, options, reads)
    assert job_fingerprint(job, options, reads) == first
    some_file = sorted(study.dicom.iterdir())[3]
    os.utime(some_file, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert job_fingerprint(job, options, reads) != first
    table = tmp_path / "labels.csv"
    table.write_text("1,big\n2,left_blob\n7,rod\n")
    with_table = job_fingerprint(job, options, ReadOptions(str(table)))
    table.write_text("1,big\n2,left_blob\n7,tilted rod\n")
    assert job_fingerprint(job, options, ReadOptions(str(table))) != with_table
    assert job_fingerprint(Job("one", study.dicom, study.segmentation, series="2"), options, reads) != \
        job_fingerprint(job, options, reads)


def test_options_added_later_keep_older_exports_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An option added after the fingerprint was first written (--no-preview's ``overlays.preview``) leaves an
    export made before it complete while at its default: the fingerprint is the one of the options without it;
    the other value makes another fingerprint."""
    from segalign.options import OverlayOptions

    study = _phantom_study(tmp_path, "one", "axial")
    job, reads = Job("one", study.dicom, study.segmentation), ReadOptions()
    options = ExportOptions(overlays=OverlayOptions())
    real_as_dict = ExportOptions.as_dict

    def before_the_option(self: ExportOptions) -> dict:  # the options as an older SegAlign wrote them
        values = real_as_dict(self)
        del values["overlays"]["preview"]
        return values

    current = job_fingerprint(job, options, reads)
    without_page = job_fingerprint(job, ExportOptions(overlays=OverlayOptions(preview=False)), reads)
    monkeypatch.setattr(ExportOptions, "as_dict", before_the_option)
    assert job_fingerprint(job, options, reads) == current
    assert without_page != current


def test_parts_cover_every_job_once_and_merge(cohort, tmp_path: Path) -> None:
    studies, table = cohort
    out = tmp_path / "out"
    names = []
    with time_limit():
        for part in (0, 1):
            run = run_cli("batch", table, "-o", out, "--num-parts", "2", "--part-id", part, "--workers", "1", "-q")
            assert run.code == (1 if any(s not in good(studies) for s in studies[part::2]) else 0)
            names.append(sorted(read_rows(out / f"batch-part-{part}-of-2.csv")))
        assert not set(names[0]) & set(names[1])
        assert sorted(names[0] + names[1]) == sorted(s.name for s in studies)
        assert not (out / "batch.csv").exists()
        merged = run_cli("batch", table, "-o", out, "--workers", "2", "-q")
    assert merged.code == 1
    assert_cohort(studies, out, tmp_path, statuses={s.name: "skipped" for s in studies})
    bad = run_cli("batch", table, "-o", out, "--num-parts", "2", "--part-id", "2")
    assert bad.code == 1 and "--part-id must be 0..1 for --num-parts 2" in bad.stderr


def test_foreign_output_folder_and_table_are_never_replaced(tmp_path: Path) -> None:
    study = _phantom_study(tmp_path / "studies", "axial", "axial")
    table = write_table([study], tmp_path / "jobs.csv")
    out = tmp_path / "out"
    (out / "axial").mkdir(parents=True)
    (out / "axial" / "notes.txt").write_text("mine")
    run = run_cli("batch", table, "-o", out, "--workers", "1", "-q")
    assert run.code == 1
    row = read_rows(out / "batch.csv")["axial"]
    assert row["status"] == "failed" and "is not a SegAlign export" in row["error"]
    assert (out / "axial" / "notes.txt").read_text() == "mine"
    other = tmp_path / "other"
    other.mkdir()
    (other / "batch.csv").write_text("my,own,table\n")
    run = run_cli("batch", table, "-o", other, "--workers", "1")
    assert run.code == 1 and "is not a SegAlign batch table" in run.stderr
    assert (other / "batch.csv").read_text() == "my,own,table\n" and not (other / "axial").exists()


# --- interruptions -------------------------------------------------------------------------------------------------


def _slow_cohort(root: Path, count: int = 6) -> tuple[list[Study], Path]:
    """Studies big enough (256 x 256 x 40, with overlays and images) that a batch can be stopped half way."""
    studies = [_phantom_study(root, f"case{index}", "axial", slices=40, size=256) for index in range(count)]
    return studies, write_table(studies, root / "jobs.csv")


def _start(table: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "segalign", "batch", str(table), "-o", str(out), "--overlays", "--images", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def _wait_for_rows(out: Path, count: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        table = out / "batch.csv"
        if table.exists() and len(table.read_text().splitlines()) > count:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError(f"no {count} finished jobs within {timeout} s")


def _descendants(pid: int) -> list[int]:
    psutil = pytest.importorskip("psutil", reason="psutil (a dependency of distributed) lists the workers")
    return [child.pid for child in psutil.Process(pid).children(recursive=True)]


def _pool_workers(pid: int) -> list[int]:
    """The pool's worker processes: forked from the batch (or from its fork server); not the resource tracker."""
    psutil = pytest.importorskip("psutil")
    workers = []
    for child in psutil.Process(pid).children():
        command = " ".join(child.cmdline())
        if "forkserver" in command:
            workers += [worker.pid for worker in child.children()]
        elif "resource_tracker" not in command and child.status() != psutil.STATUS_ZOMBIE:
            workers.append(child.pid)
    return workers


def _commands(pid: int) -> list[tuple[int, str, str]]:
    """The children of ``pid``: pid, status, command line (for messages)."""
    psutil = pytest.importorskip("psutil")
    return [(child.pid, child.status(), " ".join(child.cmdline())[:120]) for child in psutil.Process(pid).children()]


def _alive(pid: int) -> bool:
    psutil = pytest.importorskip("psutil")
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(pids: list[int], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if _alive(pid)]
        if not alive:
            return
        time.sleep(0.1)
    raise AssertionError(f"processes {alive} still run {timeout} s after the batch was stopped")


def assert_no_incomplete_export(out: Path, studies: list[Study]) -> None:
    """Every folder that looks like an export is a complete one: export.json last, every manifest row's PNGs."""
    for study in studies:
        folder = out / study.name
        if not folder.exists():
            continue
        assert export_problem(folder) is None, export_problem(folder)
        rows = read_manifest(folder)
        assert len(rows) == 40
        assert all((folder / row["label_png"]).is_file() for row in rows)


def assert_resumes(studies: list[Study], table: Path, out: Path) -> None:
    run = run_segalign("batch", table, "-o", out, "--overlays", "--images", "--workers", "2")
    assert run.returncode == 0, run.stderr
    rows = read_rows(out / "batch.csv")
    assert {row["status"] for row in rows.values()} <= {"ok", "skipped"}
    assert sorted(rows) == sorted(s.name for s in studies)
    for study in studies:
        assert_exact(study, out / study.name)
    assert leftovers(out) == []


@contextlib.contextmanager
def _running_batch(root: Path, finished: int = 1) -> Iterator[tuple[list[Study], Path, Path, subprocess.Popen]]:
    """A two-worker batch of slow jobs, once ``finished`` of them are done: (studies, table, out, process), within
    the time limit; whatever the test does, its process group is killed at the end if it still runs."""
    studies, table = _slow_cohort(root / "studies")
    out = root / "out"
    with time_limit():
        process = _start(table, out, "--workers", "2")
        try:
            _wait_for_rows(out, finished, process)
            yield studies, table, out, process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(30)


def _assert_stopped_cleanly(studies: list[Study], table: Path, out: Path, workers: list[int]) -> None:
    """The workers are gone, nothing temporary or half written is left, and a rerun completes the batch."""
    _wait_gone(workers)  # they end with their batch, and their exports remove what they wrote
    assert leftovers(out) == []
    assert_no_incomplete_export(out, studies)
    assert_resumes(studies, table, out)


def test_sigkill_of_the_whole_batch_then_rerun_completes(tmp_path: Path) -> None:
    with _running_batch(tmp_path, finished=2) as (studies, table, out, process):
        os.killpg(process.pid, signal.SIGKILL)  # the coordinator and its workers, as when a node dies
        process.wait(30)
        assert_no_incomplete_export(out, studies)
        assert len(read_rows(out / "batch.csv")) < len(studies)
        assert_resumes(studies, table, out)


def test_sigkill_of_the_coordinator_stops_its_workers_cleanly(tmp_path: Path) -> None:
    with _running_batch(tmp_path) as (studies, table, out, process):
        workers = _descendants(process.pid)
        assert workers, "the pool has worker processes"
        process.kill()
        process.wait(30)
        _assert_stopped_cleanly(studies, table, out, workers)


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_interrupt_stops_workers_and_leaves_nothing_half_written(tmp_path: Path, how: str) -> None:
    with _running_batch(tmp_path) as (studies, table, out, process):
        workers = _descendants(process.pid)
        if how == "ctrl-c":
            os.killpg(process.pid, signal.SIGINT)  # a terminal sends it to the whole foreground group
        else:
            process.terminate()  # a scheduler's timeout, to the batch alone
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == (130 if how == "ctrl-c" else 143), stderr
        assert "interrupted" in stderr and "run the same command again" in stderr
        _assert_stopped_cleanly(studies, table, out, workers)


def test_a_lost_worker_is_replaced_and_its_job_redone(tmp_path: Path) -> None:
    with _running_batch(tmp_path) as (studies, table, out, process):
        workers = _pool_workers(process.pid)
        assert len(workers) == 2, _commands(process.pid)
        os.kill(workers[0], signal.SIGKILL)  # out of memory, say
        _, stderr = process.communicate(timeout=180)
    assert process.returncode == 0, (stderr, (out / "batch.csv").read_text())
    rows = read_rows(out / "batch.csv")
    # A job whose export was published just before its pool broke is found complete when it is submitted again.
    assert {row["status"] for row in rows.values()} <= {"ok", "skipped"} and len(rows) == len(studies)
    for study in studies:
        assert_exact(study, out / study.name)
    run_cli("batch", table, "-o", out, "--overlays", "--images", "--workers", "1", "-q")  # cleans what the kill left
    assert leftovers(out) == []


# --- a real Dask cluster -------------------------------------------------------------------------------------------


@pytest.fixture
def dask_cluster() -> Iterator[str]:
    """A scheduler and two single-threaded worker processes on 127.0.0.1; closed whatever the test does."""
    distributed = pytest.importorskip("distributed", reason="segalign[dask] is not installed")
    with time_limit():
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
        )
        try:
            yield cluster.scheduler_address
        finally:
            cluster.close()


def test_dask_cluster_gives_the_same_results_as_this_machine(cohort, dask_cluster: str, tmp_path: Path) -> None:
    studies, table = cohort
    assert dask_cluster.startswith("tcp://127.0.0.1:")
    out = tmp_path / "dask"
    run = run_segalign("batch", table, "-o", out, "--scheduler", dask_cluster)
    assert run.returncode == 1, run.stderr
    assert_cohort(studies, out, tmp_path)
    local = run_batch(read_jobs(table), tmp_path / "local", workers=1)
    assert {r.name: (r.status, r.frames, r.error) for r in local.results} == \
        {name: (row["status"], int(row["frames"]) if row["frames"] else None, row["error"])
         for name, row in read_rows(out / "batch.csv").items()}
    for study in good(studies):
        assert_same_export(out / study.name, tmp_path / "local" / study.name)
    again = run_batch(read_jobs(table), out, scheduler=dask_cluster)
    assert {r.status for r in again.results if r.name in {s.name for s in good(studies)}} == {"skipped"}


def test_unreachable_scheduler_is_one_line_and_leaves_the_table(cohort, tmp_path: Path) -> None:
    studies, table = cohort
    out = tmp_path / "out"
    out.mkdir()
    (out / "batch.csv").write_text(",".join(RESULT_COLUMNS) + "\nearlier,ok,3,1.00,,0,a,b,\n")
    pytest.importorskip("distributed")
    with time_limit():
        run = run_segalign("batch", table, "-o", out, "--scheduler", "tcp://127.0.0.1:9", timeout=120)
    assert run.returncode == 1
    assert run.stderr.startswith("segalign: error: cannot connect to the Dask scheduler at tcp://127.0.0.1:9")
    assert len(run.stderr.strip().splitlines()) == 1
    assert "earlier,ok" in (out / "batch.csv").read_text()


def test_missing_dask_extra_names_it(cohort, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, table = cohort
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed now raises ImportError
    with pytest.raises(SegAlignError, match=r"pip install 'segalign\[dask\]'"):
        run_batch(read_jobs(table), tmp_path / "out", scheduler="tcp://127.0.0.1:8786")


# --- the jobs table and the layouts --------------------------------------------------------------------------------


def test_jobs_table_paths_names_and_errors(tmp_path: Path) -> None:
    table = tmp_path / "cohort" / "jobs.csv"
    table.parent.mkdir()
    table.write_text(
        "\ufeffsegmentation,dicom_dir,series,name\n"
        "seg/a.nii.gz,a/ct,,\n"
        "seg/b.nii.gz,b/ct,,\n"
        "\n"
        "seg/c.nii.gz,/data/c,3,\n"
        "seg/d.nii.gz,/data/c,4,\n"
        "seg/e.nii.gz,x/y,,Patient 7/CT\n",
        encoding="utf-8",
    )
    jobs = read_jobs(table)
    assert [job.name for job in jobs] == ["a_ct", "b_ct", "c_series-3", "c_series-4", "Patient_7_CT"]
    assert jobs[0].dicom_dir == table.parent / "a" / "ct" and jobs[0].segmentation == table.parent / "seg" / "a.nii.gz"
    assert jobs[2].dicom_dir == Path("/data/c") and jobs[2].series == "3" and jobs[0].series is None

    def refused(text: str, message: str) -> None:
        table.write_text(text)
        with pytest.raises(SegAlignError, match=message):
            read_jobs(table)

    refused("dicom_dir,seg\n", "it has no column segmentation")
    refused("dicom_dir,segmentation,serie\na,b,1\n", "column 'serie' is not one of")
    refused("dicom_dir,segmentation\na,\n", "line 2: segmentation is empty")
    refused("dicom_dir,segmentation,name\na,b,x\nc,d,X\n", "line 3: name 'X' is also the name of .* line 2")
    refused("dicom_dir,segmentation\n", "has a header but no jobs")
    refused("", "is empty")
    refused("dicom_dir,segmentation\na,b,c\n", "line 2: 3 values")
    with pytest.raises(SegAlignError, match="jobs table not found"):
        read_jobs(tmp_path / "nothing.csv")


def test_derived_names_are_unique_and_stable() -> None:
    jobs = [(Path("/s/p1/ct"), None, None), (Path("/s/p2/ct"), None, None), (Path("/t/p1/ct"), None, None),
            (Path("/u/batch.csv"), None, None), (Path("/v/ct"), None, "p1_ct")]
    names = name_jobs(jobs)
    assert names == ["s_p1_ct", "p2_ct", "t_p1_ct", "batch.csv_job", "p1_ct"]
    assert name_jobs(jobs) == names
    assert name_jobs([(Path("/a/x"), None, None), (Path("/a/x"), None, None)]) == ["x", "x-2"]


def _dicom_folder(path: Path) -> Path:
    specs = stack((0, 0, 0), 2, (0, 0, 1), rows=4, columns=4)
    write_series(path, specs)
    return path


def test_find_jobs_recognises_the_common_layouts(tmp_path: Path) -> None:
    root = tmp_path / "studies"
    _dicom_folder(root / "s1" / "DICOM" / "series1")  # DICOM nested below, a segmentation file
    (root / "s1" / "seg.nii.gz").write_bytes(b"x")
    _dicom_folder(root / "s2" / "ct")  # TotalSegmentator's folder of masks
    (root / "s2" / "segmentations").mkdir()
    for name in ("liver.nii.gz", "spleen.nii.gz"):
        (root / "s2" / "segmentations" / name).write_bytes(b"x")
    _dicom_folder(root / "s3")  # DICOM files in the study folder, the segmentation beside them
    (root / "s3" / "labels.nii").write_bytes(b"x")
    _dicom_folder(root / "s4")  # a DICOM folder with its segmentation beside it
    (root / "s4.nii.gz").write_bytes(b"x")
    _dicom_folder(root / "s5" / "ct")  # two segmentations: ambiguous
    (root / "s5" / "a.nii.gz").write_bytes(b"x")
    (root / "s5" / "b.nii.gz").write_bytes(b"x")
    (root / "notes").mkdir()  # not a study
    (root / "notes" / "readme.txt").write_text("hello")
    jobs, notes = find_jobs(root)
    found = {job.name: (job.dicom_dir.relative_to(root).as_posix(), job.segmentation.relative_to(root).as_posix())
             for job in jobs}
    assert found == {
        "s1": ("s1/DICOM", "s1/seg.nii.gz"),
        "s2": ("s2/ct", "s2/segmentations"),
        "s3": ("s3", "s3/labels.nii"),
        "s4": ("s4", "s4.nii.gz"),
    }
    assert any(note.endswith("s5: 2 segmentations (a.nii.gz, b.nii.gz): choose with --segmentation PATTERN")
               for note in notes), notes
    assert any("notes: no segmentation in it" in note for note in notes), notes
    chosen, _ = find_jobs(root, segmentation="b.*")
    assert {job.name: job.segmentation.name for job in chosen}["s5"] == "b.nii.gz"
    single, notes = find_jobs(root / "s1")
    assert [(job.name, job.dicom_dir.name) for job in single] == [("s1", "DICOM")] and notes == []

    run = run_cli("jobs", root, "-o", tmp_path / "jobs.csv")
    assert run.code == 0 and "4 jobs written" in run.stderr and "not a job" in run.stderr
    assert [job.name for job in read_jobs(tmp_path / "jobs.csv")] == ["s1", "s2", "s3", "s4"]
    assert [job.dicom_dir for job in read_jobs(tmp_path / "jobs.csv")] == [job.dicom_dir for job in jobs]


def test_batch_takes_a_folder_of_studies(tmp_path: Path) -> None:
    studies = [_phantom_study(tmp_path / "studies", "p1", "axial"), _mask_study(tmp_path / "studies", "p2")]
    out = tmp_path / "out"
    run = run_cli("batch", tmp_path / "studies", "-o", out, "--workers", "1", "-q")
    assert run.code == 0, run.stderr
    for study in studies:
        assert_exact(study, out / study.name)


def test_progress_bar_shows_jobs_failures_rate_and_time_left() -> None:
    from segalign.batch import JobResult
    from segalign.cli.progress import ProgressBar, job_progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    bar = ProgressBar("jobs", stream=stream, interval=0)
    progress = job_progress(bar)
    progress(1, 4, 0, JobResult("a", "ok", 3, 0.1))
    progress(2, 4, 1, JobResult("b", "failed", None, 0.1, "segmentation not found: x"))
    bar.finish()
    text = stream.getvalue()
    assert "1/4 jobs, 0 failed" in text and "2/4 jobs, 1 failed" in text
    assert "jobs/min" in text and " left" in text
    assert "segalign: job b failed: segmentation not found: x" in text
    quiet = Terminal()
    silent = job_progress(ProgressBar("jobs", quiet=True, stream=quiet, interval=0))
    silent(1, 1, 1, JobResult("b", "failed", None, 0.1, "x"))
    assert quiet.getvalue() == ""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="zombies are read from Linux's /proc")
def test_a_killed_process_not_yet_reaped_counts_as_gone() -> None:
    """Containers whose first process is no init never reap killed workers: their temporary folders are stale."""
    from segalign.export.locks import pid_running

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert pid_running(child.pid)
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pid_running(child.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert Path(f"/proc/{child.pid}").exists(), "not reaped yet: a zombie"
        assert not pid_running(child.pid)
    finally:
        child.kill()
        child.wait()


def test_output_inside_a_dicom_folder_is_refused(tmp_path: Path) -> None:
    study = _phantom_study(tmp_path / "studies", "axial", "axial")
    table = write_table([study], tmp_path / "jobs.csv")
    run = run_cli("batch", table, "-o", study.dicom / "exports", "--workers", "1")
    assert run.code == 1 and "is inside the DICOM folder" in run.stderr and "of job axial" in run.stderr
    assert not (study.dicom / "exports").exists()


CRASHING_BATCH = """
import json, os, signal, sys
from pathlib import Path
import segalign.batch as batch
import segalign.batch.run
from segalign.batch.executors import pool_context

if pool_context().get_start_method() != "fork":
    print(json.dumps("no fork"))
    sys.exit(0)
real = batch.run.run_job

def crashing(job, *args, **kwargs):  # planted here, inherited by the forked workers
    if job.name == "case1":
        os.kill(os.getpid(), signal.SIGKILL)
    return real(job, *args, **kwargs)

batch.run.run_job = crashing  # the documented seam: run_batch hands this module's run_job to its executor
result = batch.run_batch(batch.read_jobs(sys.argv[1]), sys.argv[2], workers=2)
print(json.dumps({r.name: [r.status, r.error] for r in result.results}))
"""


def test_a_job_that_kills_its_worker_fails_alone(tmp_path: Path) -> None:
    """A job whose worker dies every time (out of memory, say) fails after three tries; the jobs that were in
    flight beside it when it broke the pool are redone and exported."""
    studies = [_phantom_study(tmp_path / "studies", f"case{index}", "axial") for index in range(6)]
    table = write_table(studies, tmp_path / "jobs.csv")
    run = subprocess.run([sys.executable, "-c", CRASHING_BATCH, str(table), str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=TIME_LIMIT)
    assert run.returncode == 0, run.stderr
    statuses = json.loads(run.stdout)
    if statuses == "no fork":
        pytest.skip("the crashing job is planted in the batch process, which only forked workers inherit")
    assert statuses.pop("case1") == ["failed", "its worker process died 3 times (killed, or out of memory?)"]
    # A job published just before the pool broke is found complete when rerun: skipped, never failed.
    assert {status for status, _ in statuses.values()} <= {"ok", "skipped"} and len(statuses) == 5
    for study in studies:
        if study.name != "case1":
            assert_exact(study, tmp_path / "out" / study.name)
    assert leftovers(tmp_path / "out") == []


def test_tables_written_elsewhere_keep_their_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = _phantom_study(tmp_path / "studies", "p1", "axial")
    monkeypatch.chdir(tmp_path)
    relative = Job("p1", Path("studies/p1/dicom"), Path("studies/p1/seg.nii.gz"))
    (tmp_path / "tables").mkdir()
    write_jobs([relative], tmp_path / "tables" / "jobs.csv")  # the study is not under the table's folder
    [back] = read_jobs(tmp_path / "tables" / "jobs.csv")
    assert back.dicom_dir == study.dicom and back.segmentation == study.segmentation
    run = run_cli("jobs", "studies")
    printed = list(csv.reader(io.StringIO(run.stdout)))
    assert printed[1][:2] == [str(study.dicom), str(study.segmentation)]
