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
    """Run ``segalign`` in-process with ``args``; returns exit code and captured output.

    Every export that succeeds is checked against ``segalign.align`` (:func:`assert_align_matches_export`), so the
    notebook API is held to the command's output on every case of the suite; with SEGALIGN_CHECK_EXPORTS=1, also
    ``segalign check`` must find it exact (:func:`assert_check_is_exact`; =all: its DICOM SEG and RTSTRUCT too)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(arg) for arg in args])
        except SystemExit as exit_:  # argparse usage errors
            code = int(exit_.code or 0)
    if code == 0 and args and str(args[0]) == "export" and os.environ.get("SEGALIGN_ALIGN_CHECK", "1") != "0":
        assert_align_matches_export([str(arg) for arg in args])
    checking = os.environ.get("SEGALIGN_CHECK_EXPORTS", "0") in ("1", "all")
    if code == 0 and args and str(args[0]) == "export" and checking:
        assert_check_is_exact([str(arg) for arg in args])
    return CliRun(code, out.getvalue(), err.getvalue())


def assert_check_is_exact(argv: list[str]) -> None:
    """``segalign check`` of the export just written finds it exact (opt in: SEGALIGN_CHECK_EXPORTS=1): its label
    images (every layer where segments overlap); with SEGALIGN_CHECK_EXPORTS=all also the DICOM SEG and RTSTRUCT
    when it wrote them. Exports the check does not compare are left out: several series at once, split mosaics,
    segmentations read with another --overlap than keep or with --allow-many-labels."""
    from segalign import check as checking
    from segalign.cli import parse_arguments

    if "--help" in argv or "-h" in argv:
        return
    args = parse_arguments(argv)
    if args.all_series or args.split_mosaics or args.overlap != "keep" or args.allow_many_labels \
            or not (Path(args.output) / "manifest.csv").is_file():
        return
    from segalign import load_segmentations
    from segalign.dicom import scan_folder

    segmentation = load_segmentations(args.segmentation, args.labels, reference=scan_folder(args.dicom_dir).series,
                                      skip_unplaced_contours=args.skip_unplaced_contours)
    output = Path(args.output)
    import json

    series = args.series or json.loads((output / "export.json").read_text())["series_instance_uid"] or None
    objects = ("seg.dcm", "rtstruct.dcm") if os.environ.get("SEGALIGN_CHECK_EXPORTS") == "all" else ()
    for export in [output] + [output / name for name in objects if (output / name).is_file()]:
        result = checking.check_export(args.dicom_dir, segmentation, export, series=series)
        assert result.exact, f"segalign check of {export} is not exact: {result.findings}"


def assert_align_matches_export(argv: list[str]) -> None:
    """``segalign.align`` with the export's own arguments gives the label images the export wrote (every layer),
    for the frames of its manifest, in its order, with the same frame facts."""
    from segalign import align
    from segalign.cli import parse_arguments
    from segalign.files import utf8_text

    if "--help" in argv or "-h" in argv:
        return
    args = parse_arguments(argv)
    if args.all_series or args.split_mosaics:  # one export per series; tiles as frames: not what align gives
        return
    output = Path(args.output)
    if not (output / "manifest.csv").is_file():  # an export without label images (none today)
        return
    segmentation = args.segmentation if len(args.segmentation) > 1 else args.segmentation[0]
    if isinstance(segmentation, list):
        from segalign import load_segmentations

        from segalign.dicom import scan_folder

        segmentation = load_segmentations(segmentation, args.labels, args.overlap, args.allow_many_labels,
                                          reference=scan_folder(args.dicom_dir).series,
                                          skip_unplaced_contours=args.skip_unplaced_contours)
        alignment = align(args.dicom_dir, segmentation, series=args.series, order=args.order)
    else:
        alignment = align(args.dicom_dir, segmentation, series=args.series, order=args.order, label_table=args.labels,
                          overlap=args.overlap, allow_many_labels=args.allow_many_labels,
                          skip_unplaced_contours=args.skip_unplaced_contours)
    rows = read_manifest(output)
    assert len(rows) == len(alignment), f"align gives {len(alignment)} frames, the export {len(rows)}"
    root = Path(args.dicom_dir).absolute()
    for row, frame in zip(rows, alignment):
        facts = frame.frame
        assert row["sop_instance_uid"] == facts.sop_instance_uid and int(row["frame"]) == facts.frame_number
        assert row["source_file"] == utf8_text(Path(os.path.relpath(facts.source_file.absolute(), root)).as_posix())
        assert row["instance_number"] == ("" if facts.instance_number is None else str(facts.instance_number))
        layers = frame.layers
        assert np.array_equal(read_png(output / row["label_png"]), layers[0]), f"frame {frame.index} differs"
        for number, layer in enumerate(layers[1:], start=2):
            assert np.array_equal(read_png(output / row[f"label_png_{number}"]), layer), f"layer {number} differs"


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
