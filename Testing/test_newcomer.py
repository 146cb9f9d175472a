"""What a new user met, each as a test: the command line says what it can do, errors go to standard error, and what
it tells the user to run can be run as written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import run_cli


def run(*args: object, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "segalign", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd)


def test_bare_segalign_lists_every_command_with_its_line() -> None:
    result = run()
    assert result.returncode == 2 and result.stdout == ""
    for command in ("export", "batch", "jobs", "info", "demo"):
        line = next((line for line in result.stderr.splitlines() if line.strip().startswith(command + " ")), None)
        assert line is not None and len(line.split()) > 2, (command, result.stderr)


def test_info_without_a_series_says_why_on_standard_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no DICOM here\n")
    text = run_cli("info", tmp_path)
    assert text.code == 1
    assert "no DICOM image series" in text.stderr and "no DICOM image series" not in text.stdout
    as_json = run_cli("info", tmp_path, "--json")
    assert as_json.code == 1 and json.loads(as_json.stdout)["series"] == []
    assert as_json.stderr.startswith("segalign: error: no DICOM image series")


def test_the_demos_same_as_line_runs_as_written(tmp_path: Path) -> None:
    """With the virtual environment not activated (segalign not on the PATH), the line names this Python."""
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    result = run("demo", "--output", tmp_path / "demo", "--slices", "6", env=env)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if "same as:" in line)
    command = line.split("same as:", 1)[1].strip()
    assert command.startswith(f"{sys.executable} -m segalign export ")
    again = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0, again.stderr


def _demo(tmp_path: Path) -> Path:
    from segalign.demo import run_demo

    return run_demo(tmp_path / "demo", slices=6).dicom_dir.parent


def test_jobs_names_a_study_with_its_segmentation_beside_it_and_says_what_it_passed_over(tmp_path: Path) -> None:
    import shutil

    demo = _demo(tmp_path)
    one = tmp_path / "one"
    shutil.copytree(demo / "ct_dicom", one / "p1" / "dicom")
    shutil.copy(demo / "segmentation.nii.gz", one / "p1.nii.gz")
    listed = run_cli("jobs", one)
    assert listed.code == 0 and listed.stdout.splitlines()[1].endswith(",p1"), listed.stdout  # named after p1
    two = tmp_path / "two"
    for study in ("p1", "p2"):
        shutil.copytree(demo / "ct_dicom", two / study / "dicom")
    shutil.copy(demo / "segmentation.nii.gz", two / "p1.seg.nii.gz")  # not STUDY.<suffix>: passed over, and said
    shutil.copy(demo / "segmentation.nii.gz", two / "p2.nii.gz")
    listed = run_cli("jobs", two)
    assert [line.split(",")[-1] for line in listed.stdout.splitlines()[1:]] == ["p2"]
    assert "passed over p1.seg.nii.gz beside it" in listed.stderr


def test_the_batch_summary_says_which_jobs_had_warnings(tmp_path: Path) -> None:
    import shutil

    import nibabel as nib

    demo = _demo(tmp_path)
    studies = tmp_path / "studies"
    for study in ("clean", "warned"):
        shutil.copytree(demo / "ct_dicom", studies / study / "dicom")
    shutil.copy(demo / "segmentation.nii.gz", studies / "clean.nii.gz")
    image = nib.load(demo / "segmentation.nii.gz")
    shifted = image.affine.copy()
    shifted[2, 3] += 5.0
    warned = nib.Nifti1Image(image.get_fdata().astype("uint8"), image.affine)
    warned.set_sform(image.affine, code=2)
    warned.set_qform(shifted, code=1)  # sform and qform disagree: a warning
    nib.save(warned, studies / "warned.nii.gz")
    result = run_cli("batch", studies, "-o", tmp_path / "out")
    assert result.code == 0, result.stderr
    summary = next(line for line in result.stdout.splitlines() if line.startswith("batch:"))
    assert "2 exported (1 with warnings: see the warnings column)" in summary
