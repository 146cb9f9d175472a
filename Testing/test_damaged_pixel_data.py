"""Damaged compressed pixel data ends an export with SegAlign's one line, from a real process: no signal (GDCM
ended the process with SIGFPE on an RLE frame whose data, header included, is all zeros) and nothing of the
decoders' own (OpenJPEG and GDCM printed "Error with SIZ marker..." on standard error first).

The series are the real compressed ones of ../shared/testdata/dicom2nifti/generic, with their first file's frame
replaced by damaged data.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_fragmented_frames

from conftest import require
from segalign.synthetic import write_nifti


def damaged_series(testdata: Path, kind: str, tmp_path: Path, damage) -> Path:
    source = require(testdata / "dicom2nifti" / "generic" / f"compressed_{kind}" / "001")
    folder = tmp_path / kind
    shutil.copytree(source, folder)
    first = sorted(folder.iterdir())[0]
    dataset = pydicom.dcmread(first)
    frame = b"".join(next(generate_fragmented_frames(dataset.PixelData)))
    dataset.PixelData = encapsulate([damage(frame)])
    dataset.save_as(first)
    return folder


def covering_segmentation(tmp_path: Path) -> Path:
    """A box of label 1 around the series (a sagittal stack near R 100 mm)."""
    affine = np.diag([1.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = (95.0, -100.0, -130.0)
    return write_nifti(tmp_path / "seg.nii.gz", np.ones((15, 70, 70), np.uint8), affine)


def run(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "segalign", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("kind, damage", [
    ("rle", lambda frame: bytes(len(frame))),  # the RLE header and every segment zeros
    ("j2k", lambda frame: frame[:30] + bytes(200)),  # a JPEG 2000 codestream cut inside its SIZ marker
], ids=["rle-zeros", "j2k-truncated"])
def test_damaged_frames_end_in_one_line_and_exit_1(testdata: Path, tmp_path: Path, kind: str, damage) -> None:
    series = damaged_series(testdata, kind, tmp_path, damage)
    segmentation = covering_segmentation(tmp_path)
    result = run("export", series, segmentation, "-o", tmp_path / "out", "--overlays", "--images", "-q")
    assert result.returncode == 1, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("segalign: error: "), result.stderr
    assert sorted(series.iterdir())[0].name in lines[0] and "cannot decode" in lines[0]
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    labels_only = run("export", series, segmentation, "-o", tmp_path / "labels", "-q")
    assert labels_only.returncode == 0, "label export never decodes pixel data"
