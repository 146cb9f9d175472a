"""Shared fixtures: where the real test data is, and how to run the CLI and read its outputs."""

from __future__ import annotations

import contextlib
import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segalign.cli import main

REPOSITORY = Path(__file__).resolve().parent.parent
#: Real public DICOM data lives beside the repository (never inside it); SEGALIGN_TESTDATA overrides.
TESTDATA = Path(os.environ.get("SEGALIGN_TESTDATA", REPOSITORY.parent / "shared" / "testdata"))


@pytest.fixture
def testdata() -> Path:
    """The shared real-data folder, or a skip saying where it was looked for."""
    if not TESTDATA.is_dir():
        pytest.skip(f"real test data not found at {TESTDATA} (set SEGALIGN_TESTDATA to its folder)")
    return TESTDATA


def require(path: Path) -> Path:
    """Skip with a clear reason when one real-data item is missing."""
    if not path.exists():
        pytest.skip(f"real test data item missing: {path}")
    return path


@dataclass
class CliRun:
    code: int
    stdout: str
    stderr: str


def run_cli(*args: object) -> CliRun:
    """Run ``segalign`` in-process with ``args``; returns exit code and captured output."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(arg) for arg in args])
        except SystemExit as exit_:  # argparse usage errors
            code = int(exit_.code or 0)
    return CliRun(code, out.getvalue(), err.getvalue())


def read_png(path: Path) -> np.ndarray:
    """A PNG as a numpy array, exactly as stored (1-bit images as bool)."""
    with Image.open(path) as image:
        return np.array(image)


def read_manifest(export_dir: Path) -> list[dict[str, str]]:
    with (export_dir / "manifest.csv").open(newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def exported_labels(export_dir: Path) -> list[np.ndarray]:
    """The label image of every manifest row, in manifest order."""
    return [read_png(export_dir / row["label_png"]) for row in read_manifest(export_dir)]


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its content (None for folders): compare before and after to prove nothing
    was written or changed."""
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def leftovers(parent: Path) -> list[str]:
    """Hidden temporary export folders left in ``parent`` (there must never be any)."""
    return sorted(p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name)
