"""Overlays, image PNGs, per-label statistics and label naming, checked against truth computed here.

Truth is never taken from SegAlign's own ``apply_window``/``overlay``: the DICOM linear VOI function, the blend and
the outline rule are written out below from the documented conventions and evaluated in exact rational arithmetic
(:class:`fractions.Fraction`), so "rounded half up" means exactly that.

* window:  ``x <= c - 0.5 - (w-1)/2 -> 0``, ``x > c - 0.5 + (w-1)/2 -> 255``, else
  ``floor(((x - (c - 0.5)) / (w - 1) + 0.5) * 255 + 0.5)``; no window anywhere: the frame's own range, min -> 0,
  max -> 255, linear between; MONOCHROME1: ``255 - gray``;
* blend:   ``floor((1 - alpha) * g + alpha * C + 0.5)`` per channel on labelled pixels, ``g`` elsewhere;
* outline: a labelled pixel with a 4-neighbour inside the image carrying another label is drawn in its colour.

Synthetic series are written with known stored values (``write_series``/``write_enhanced`` with a pixel function,
headers edited with pydicom); real data comes from ../shared/testdata (skipped when absent).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from conftest import leftovers, read_manifest, read_png, require, run_cli
from segalign.synthetic import grid_affine, stack, write_enhanced, write_nifti, write_series

HALF = Fraction(1, 2)
ORIGIN_LPS = (10.0, 20.0, 30.0)
STEP = 2.0
PRESETS = {  # (centre, width) in HU, as documented for --window
    "abdomen": (40, 400),
    "bone": (400, 1800),
    "brain": (40, 80),
    "lung": (-600, 1500),
    "mediastinum": (50, 350),
}


# --------------------------------------------------------------------------------------------------------------------
# Independent truth
# --------------------------------------------------------------------------------------------------------------------


def voi(x: Fraction, center: Fraction, width: Fraction) -> int:
    """The DICOM linear VOI function (PS3.3 C.11.2.1.2.1) onto 0..255, rounded half up, exactly."""
    if x <= center - HALF - (width - 1) / 2:
        return 0
    if x > center - HALF + (width - 1) / 2:
        return 255
    return math.floor(((x - (center - HALF)) / (width - 1) + HALF) * 255 + HALF)


def modality_values(stored: np.ndarray, slope: object = 1, intercept: object = 0) -> tuple[np.ndarray, list[Fraction]]:
    """(inverse index, exact modality value of each distinct stored value)."""
    unique, inverse = np.unique(stored, return_inverse=True)
    s, b = Fraction(str(slope)), Fraction(str(intercept))
    return inverse.reshape(stored.shape), [Fraction(int(v)) * s + b for v in unique]


def expected_gray(
    stored: np.ndarray, slope: object = 1, intercept: object = 0, window: tuple[object, object] | None = None,
    monochrome1: bool = False,
) -> np.ndarray:
    """8-bit display of stored values: modality LUT, then ``window`` or the frame's range, then MONOCHROME1."""
    inverse, values = modality_values(stored, slope, intercept)
    if window is None:
        low, high = min(values), max(values)
        assert high > low, "a range window needs at least two distinct values"
        lut = [math.floor((v - low) / (high - low) * 255 + HALF) for v in values]
    else:
        center, width = Fraction(str(window[0])), Fraction(str(window[1]))
        lut = [voi(v, center, width) for v in values]
    gray = np.array(lut, dtype=np.int64)[inverse]
    return (255 - gray if monochrome1 else gray).astype(np.uint8)


@lru_cache(maxsize=None)
def blend_table(alpha: str) -> np.ndarray:
    """``table[g, C] = floor((1 - alpha) * g + alpha * C + 0.5)`` for all 8-bit g and C, exactly."""
    a = Fraction(alpha)
    return np.array(
        [[math.floor((1 - a) * g + a * c + HALF) for c in range(256)] for g in range(256)], dtype=np.uint8
    )


def boundary_truth(labels: np.ndarray) -> np.ndarray:
    """Labelled pixels having a 4-neighbour, inside the image, with a different label (plain loops on purpose)."""
    rows, columns = labels.shape
    result = np.zeros(labels.shape, dtype=bool)
    for r in range(rows):
        for c in range(columns):
            value = labels[r, c]
            if value == 0:
                continue
            for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                rr, cc = r + dr, c + dc
                if 0 <= rr < rows and 0 <= cc < columns and labels[rr, cc] != value:
                    result[r, c] = True
                    break
    return result


def expected_overlay(
    gray: np.ndarray, labels: np.ndarray, colors: dict[int, Sequence[int]], alpha: str = "0.4", outline: bool = False
) -> np.ndarray:
    rgb = np.repeat(gray[:, :, None], 3, axis=2).astype(np.uint8)
    if outline:
        edge = boundary_truth(labels)
        for value in np.unique(labels[edge]):
            rgb[edge & (labels == value)] = colors[int(value)]
        return rgb
    table = blend_table(alpha)
    for value in np.unique(labels):
        if value == 0:
            continue
        mask = labels == value
        for channel in range(3):
            rgb[mask, channel] = table[gray[mask], int(colors[int(value)][channel])]
    return rgb


# --------------------------------------------------------------------------------------------------------------------
# Synthetic series with known stored values
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Case:
    dicom: Path
    seg: Path
    files: list[Path]
    stored: list[np.ndarray]  #: per frame, as written (int16 arrays for signed data)
    labels: list[np.ndarray]  #: per frame, (rows, columns)


def make_case(
    root: Path,
    stored: Sequence[np.ndarray],
    labels: Sequence[np.ndarray] | None = None,
    *,
    spacing: tuple[float, float] = (1.0, 1.0),
    edit: Callable[[Dataset, int], None] | None = None,
    instance_numbers: Sequence[int] | None = None,
    label_table_xml: str | None = None,
    extra_label_slice: np.ndarray | None = None,
) -> Case:
    """A classic single-frame series (frame k at z = 30 + 2k) with ``stored[k]`` as pixel data, and a NIfTI label
    volume on exactly its grid (so frame k's label PNG must be ``labels[k]``). ``edit(dataset, k)`` changes headers.
    ``extra_label_slice`` adds one more slice to the volume beyond the last frame (labels on no frame)."""
    rows, columns = stored[0].shape
    labels = list(labels) if labels is not None else [np.zeros((rows, columns), np.uint8) for _ in stored]
    specs = stack(
        ORIGIN_LPS, len(stored), (0, 0, STEP), spacing=spacing, rows=rows, columns=columns,
        instance_numbers=instance_numbers,
    )
    by_z = {round(spec.position[2], 3): frame for spec, frame in zip(specs, stored)}

    def pixels(spec):
        frame = np.asarray(by_z[round(spec.position[2], 3)])
        return frame.view(np.uint16) if frame.dtype == np.int16 else frame.astype(np.uint16)

    dicom = root / "dicom"
    files = write_series(dicom, specs, pixel_function=pixels)
    if edit is not None:
        for index, path in enumerate(files):
            dataset = pydicom.dcmread(path)
            edit(dataset, index)
            dataset.save_as(path, enforce_file_format=True)
    volume_slices = [frame.T for frame in labels]
    if extra_label_slice is not None:
        volume_slices.append(extra_label_slice.T)
    volume = np.ascontiguousarray(np.stack(volume_slices, axis=2).astype(np.uint8))
    seg = write_nifti(
        root / "seg.nii.gz", volume, grid_affine(ORIGIN_LPS, (spacing[1], spacing[0], STEP)),
        label_table_xml=label_table_xml,
    )
    return Case(dicom, seg, files, [np.asarray(s) for s in stored], labels)


def export(case: Case, out: Path, *flags: object, quiet: bool = True):
    run = run_cli("export", case.dicom, case.seg, "-o", out, *(["-q"] if quiet else []), *flags)
    assert run.code == 0, run.stderr
    return run


def labels_json(out: Path) -> dict[int, dict]:
    return {entry["value"]: entry for entry in json.loads((out / "labels.json").read_text(encoding="utf-8"))}


def colors_of(out: Path) -> dict[int, tuple[int, int, int]]:
    return {value: tuple(entry["color"]) for value, entry in labels_json(out).items()}


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("segalign: error: "), stderr
    return lines[0]


def ramp(rows: int, columns: int, start: int = 0, step: int = 1) -> np.ndarray:
    return (start + step * np.arange(rows * columns)).reshape(rows, columns)


def assert_images_equal(got: np.ndarray, expected: np.ndarray, what: str) -> None:
    assert got.shape == expected.shape and got.dtype == expected.dtype, (what, got.shape, got.dtype, expected.dtype)
    bad = np.argwhere(np.any((got != expected).reshape(got.shape[0], got.shape[1], -1), axis=2))
    assert not len(bad), f"{what}: {len(bad)} pixels differ, e.g. at {bad[:5].tolist()}: " + ", ".join(
        f"got {got[tuple(p)].tolist()} expected {expected[tuple(p)].tolist()}" for p in bad[:3]
    )


# --------------------------------------------------------------------------------------------------------------------
# 1. Blend and outline on synthetic frames
# --------------------------------------------------------------------------------------------------------------------

BLEND_ROWS, BLEND_COLUMNS = 32, 40


def _blend_labels() -> np.ndarray:
    labels = np.zeros((BLEND_ROWS, BLEND_COLUMNS), np.uint8)
    labels[0:10, :] = 1  # touches the top, left and right image edges (those are not boundaries)
    labels[10:22, 5:20] = 2
    labels[10:22, 20:35] = 7  # shares a border with label 2: both sides are boundary
    labels[28, 30] = 1  # an isolated pixel: all boundary
    labels[25:32, 0:3] = 7  # touches the bottom-left corner
    return labels


@pytest.fixture
def blend_case(tmp_path: Path) -> Case:
    """Frame 1: a ramp with labels 1, 2, 7, slope 2, intercept -1000 and its own window; frame 2: another ramp
    with another window and no labels. Label 1 and 2 get colours from a user table, 7 the default colour."""
    stored = [ramp(BLEND_ROWS, BLEND_COLUMNS), ramp(BLEND_ROWS, BLEND_COLUMNS, start=3000, step=-2)]
    labels = [_blend_labels(), np.zeros((BLEND_ROWS, BLEND_COLUMNS), np.uint8)]
    windows = [("279", "2559"), ("500", "300")]

    def edit(dataset: Dataset, index: int) -> None:
        dataset.RescaleSlope = "2"
        dataset.RescaleIntercept = "-1000"
        dataset.WindowCenter, dataset.WindowWidth = windows[index]

    case = make_case(tmp_path, stored, labels, edit=edit)
    (tmp_path / "table.csv").write_text("value,name,r,g,b\n1,first,255,0,0\n2,second,0,128,255\n", encoding="utf-8")
    return case


def _blend_truth(case: Case, out: Path, alpha: str, outline: bool = False) -> list[np.ndarray]:
    colors = colors_of(out)
    assert colors[1] == (255, 0, 0) and colors[2] == (0, 128, 255), "labels.json: the user table's colours"
    windows = [("279", "2559"), ("500", "300")]
    return [
        expected_overlay(expected_gray(s, 2, -1000, w), l, colors, alpha, outline)
        for s, l, w in zip(case.stored, case.labels, windows)
    ]


@pytest.mark.parametrize("alpha", [None, "0.75", "0", "1"])
def test_blended_overlay_pixels(blend_case: Case, tmp_path: Path, alpha: str | None) -> None:
    """Unlabelled pixels are exactly the windowed gray (R=G=B); labelled ones the exact blend with labels.json."""
    out = tmp_path / "out"
    export(blend_case, out, "--overlays", "--labels", tmp_path / "table.csv", *(["--alpha", alpha] if alpha else []))
    rows = read_manifest(out)
    assert len(rows) == 2
    expected = _blend_truth(blend_case, out, alpha or "0.4")
    for row, labels, truth in zip(rows, blend_case.labels, expected):
        np.testing.assert_array_equal(read_png(out / row["label_png"]), labels)
        assert row["overlay_png"] == "overlays/" + Path(row["label_png"]).name
        got = read_png(out / row["overlay_png"])
        assert got.dtype == np.uint8 and got.shape == (BLEND_ROWS, BLEND_COLUMNS, 3)
        assert_images_equal(got, truth, row["overlay_png"])
        unlabelled = labels == 0
        assert np.all(got[unlabelled] == got[unlabelled][:, :1]), "gray pixels have R = G = B"
    gray = expected_gray(blend_case.stored[0], 2, -1000, ("279", "2559"))
    assert len(np.unique(gray)) > 250, "the ramp covers the gray range"
    assert all(len(np.unique(gray[blend_case.labels[0] == v])) >= 30 for v in (1, 2, 7)), "and under every label"
    if alpha == "1":  # fully opaque: labelled pixels are exactly the label colour
        colors = colors_of(out)
        got = read_png(out / rows[0]["overlay_png"])
        assert np.all(got[blend_case.labels[0] == 2] == colors[2])
    if alpha == "0":  # fully transparent: the overlay is the gray image
        got = read_png(out / rows[0]["overlay_png"])
        np.testing.assert_array_equal(got, np.repeat(expected_gray(blend_case.stored[0], 2, -1000, ("279", "2559"))[..., None], 3, 2))


def test_no_preview_writes_the_overlays_alone(blend_case: Case, tmp_path: Path) -> None:
    """--no-preview: the same overlays and manifest, no index.html and no viewer/; without --overlays it is refused
    in one line, before anything is written."""
    export(blend_case, tmp_path / "with", "--overlays")
    export(blend_case, tmp_path / "without", "--overlays", "--no-preview")
    assert (tmp_path / "with" / "index.html").is_file() and (tmp_path / "with" / "viewer").is_dir()
    assert not (tmp_path / "without" / "index.html").exists() and not (tmp_path / "without" / "viewer").exists()
    rows = read_manifest(tmp_path / "without")
    assert rows == read_manifest(tmp_path / "with") and len(rows) == 2
    for row in rows:
        np.testing.assert_array_equal(read_png(tmp_path / "without" / row["overlay_png"]),
                                      read_png(tmp_path / "with" / row["overlay_png"]))
    options = json.loads((tmp_path / "without" / "export.json").read_text(encoding="utf-8"))["options"]
    assert options["overlays"]["preview"] is False
    run = run_cli("export", blend_case.dicom, blend_case.seg, "-o", tmp_path / "refused", "--no-preview")
    assert run.code == 1 and "--no-preview needs --overlays" in one_error_line(run.stderr)
    assert not (tmp_path / "refused").exists() and not leftovers(tmp_path)


def test_outline_overlay_pixels(blend_case: Case, tmp_path: Path) -> None:
    """--outline: boundary pixels (4-neighbour rule, image edge not counted) fully coloured, the rest gray."""
    out = tmp_path / "out"
    export(blend_case, out, "--overlays", "--outline", "--alpha", "0.3", "--labels", tmp_path / "table.csv")
    rows = read_manifest(out)
    expected = _blend_truth(blend_case, out, "0.3", outline=True)
    colors = colors_of(out)
    for row, truth in zip(rows, expected):
        assert_images_equal(read_png(out / row["overlay_png"]), truth, row["overlay_png"])
    got = read_png(out / rows[0]["overlay_png"])
    gray = expected_gray(blend_case.stored[0], 2, -1000, ("279", "2559"))
    # Spot checks of the rule, independent of boundary_truth: the top edge of label 1 is not drawn, the row next
    # to label 2 is, interiors are gray, and an isolated pixel is drawn.
    assert np.all(got[0, 3:37] == gray[0, 3:37, None]), "the image edge is not a boundary"
    assert np.all(got[9, 5:35] == colors[1]), "label 1 next to labels 2 and 7"
    assert np.all(got[10, 5:20] == colors[2]) and np.all(got[10, 20:35] == colors[7])
    assert np.all(got[15, 19] == colors[2]) and np.all(got[15, 20] == colors[7]), "2 | 7 border drawn on both sides"
    assert np.all(got[15, 10:18] == gray[15, 10:18, None]), "interior of label 2 stays gray"
    assert np.all(got[28, 30] == colors[1])
    assert np.all(got[31, 0] == gray[31, 0]) and np.all(got[31, 2] == colors[7])


def test_blend_rounds_exact_halves_up(tmp_path: Path) -> None:
    """The blend is rounded half up exactly: with alpha 0.3, gray 26 and colour channel 1 give 0.7*26 + 0.3*1 =
    18.5 -> 19; gray 36 and 1 give 25.5 -> 26; gray 6 and 9 give 4.2 + 2.7 = 6.9 -> 7 (not a tie, sanity)."""
    stored = [np.array([[26, 36, 6, 200]] * 4, dtype=np.uint16)]
    labels = [np.ones((4, 4), np.uint8)]

    def edit(dataset: Dataset, index: int) -> None:  # window mapping stored value x to gray x exactly
        dataset.RescaleSlope, dataset.RescaleIntercept = "1", "0"
        dataset.WindowCenter, dataset.WindowWidth = "128", "256"

    case = make_case(tmp_path, stored, labels, edit=edit)
    (tmp_path / "table.csv").write_text("1,tie,1,1,9\n", encoding="utf-8")
    out = tmp_path / "out"
    export(case, out, "--overlays", "--alpha", "0.3", "--labels", tmp_path / "table.csv")
    gray = expected_gray(stored[0], window=(128, 256))
    assert gray[0].tolist() == [26, 36, 6, 200]
    got = read_png(out / read_manifest(out)[0]["overlay_png"])
    assert got[0, 0].tolist() == [19, 19, 21], "0.7*26 + 0.3*1 = 18.5 rounds half up to 19"
    assert got[0, 1].tolist() == [26, 26, 28], "0.7*36 + 0.3*1 = 25.5 rounds half up to 26"
    assert_images_equal(got, expected_overlay(gray, labels[0], {1: (1, 1, 9)}, "0.3"), "tie blend")


# --------------------------------------------------------------------------------------------------------------------
# 2. Windows
# --------------------------------------------------------------------------------------------------------------------

WINDOW_SIDE = 64  #: 64 x 64 = 4096 stored values 0..4095; with intercept -1400 the values run -1400..2695 HU


@pytest.fixture
def window_case(tmp_path: Path) -> Case:
    """One frame whose values sweep -1400..2695 HU in steps of 1 (every preset's edges are on it), no labels."""

    def edit(dataset: Dataset, index: int) -> None:
        dataset.RescaleSlope, dataset.RescaleIntercept = "1", "-1400"
        dataset.WindowCenter, dataset.WindowWidth = "-100", "250"

    return make_case(tmp_path, [ramp(WINDOW_SIDE, WINDOW_SIDE)], edit=edit)


def _gray_at(gray: np.ndarray, hu: float) -> int:
    index = int(hu + 1400)
    assert float(index - 1400) == hu
    return int(gray.flat[index])


@pytest.mark.parametrize(
    "window, center, width",
    [*((name, c, w) for name, (c, w) in PRESETS.items()), ("100,7", 100, 7), ("-300.25,1000", "-300.25", 1000),
     ("-50,1", -50, 1), (" Lung ", -600, 1500)],
)
def test_window_presets_and_explicit(window_case: Case, tmp_path: Path, window: str, center, width) -> None:
    out = tmp_path / "out"
    export(window_case, out, "--overlays", f"--window={window}")  # "=": argparse takes "-50,1" for an option
    got = read_png(out / read_manifest(out)[0]["overlay_png"])
    gray = got[..., 0]
    assert np.all(got == gray[..., None]), "no labels: R = G = B everywhere"
    assert_images_equal(gray, expected_gray(window_case.stored[0], 1, -1400, (center, width)), f"--window {window}")
    assert np.all(np.diff(gray.ravel().astype(int)) >= 0), "the ramp stays monotonic"
    c, w = Fraction(str(center)), Fraction(width)
    low, high = c - HALF - (w - 1) / 2, c - HALF + (w - 1) / 2
    if low.denominator == 1:  # presets (even widths): the edges fall on integer HU values
        assert _gray_at(gray, low) == 0 and _gray_at(gray, low - 1) == 0
        assert _gray_at(gray, low + 1) == math.floor(Fraction(255) / (w - 1) + HALF) <= 3
        assert _gray_at(gray, high) == 255 and _gray_at(gray, high + 1) == 255
        assert _gray_at(gray, high - 1) == math.floor(255 - Fraction(255) / (w - 1) + HALF)
        assert 0 < _gray_at(gray, float(c)) < 255
    if window == "100,7":  # edges at 96.5 and 102.5: values worked out by hand
        assert [_gray_at(gray, hu) for hu in range(95, 105)] == [0, 0, 21, 64, 106, 149, 191, 234, 255, 255]
    if window == "-50,1":  # width 1: a threshold at c - 0.5
        assert _gray_at(gray, -51) == 0 and _gray_at(gray, -50) == 255
        assert set(np.unique(gray)) == {0, 255}


def test_window_rounds_exact_halves_up(tmp_path: Path) -> None:
    """Window output ties are rounded half up: --window 40.5,11 on HU 36 gives ((36 - 40) / 10 + 0.5) * 255 = 25.5
    -> 26; the abdomen preset on HU -93.5 (slope 0.5) gives ((-93.5 - 39.5) / 399 + 0.5) * 255 = 42.5 -> 43."""

    def edit(dataset: Dataset, index: int) -> None:
        dataset.RescaleSlope, dataset.RescaleIntercept = ["1", "0.5"][index], "-1000"

    stored = [np.full((4, 4), 1036, np.uint16), np.full((4, 4), 1813, np.uint16)]
    stored[0][0, 0] = stored[1][0, 0] = 0  # something else on the frame
    case = make_case(tmp_path, stored, edit=edit)
    out = tmp_path / "a"
    export(case, out, "--overlays", "--window", "40.5,11")
    assert read_png(out / read_manifest(out)[0]["overlay_png"])[1, 1].tolist() == [26, 26, 26]
    out = tmp_path / "b"
    export(case, out, "--overlays", "--window", "abdomen")
    assert expected_gray(stored[1], "0.5", -1000, PRESETS["abdomen"])[1, 1] == 43
    assert read_png(out / read_manifest(out)[1]["overlay_png"])[1, 1].tolist() == [43, 43, 43]


@pytest.fixture
def header_case(tmp_path: Path) -> Case:
    """Five frames, each the 0..4095 ramp (-1400..2695 HU) with its own header: (0) one window, (1) two windows,
    (2) none, (3) MONOCHROME1 with a window and a label, (4) MONOCHROME1 without a window."""

    def edit(dataset: Dataset, index: int) -> None:
        dataset.RescaleSlope, dataset.RescaleIntercept = "1", "-1400"
        dataset.WindowCenter, dataset.WindowWidth = "-100", "250"
        if index == 1:
            dataset.WindowCenter, dataset.WindowWidth = ["300", "-100"], ["1500", "250"]
        if index in (2, 4):
            del dataset.WindowCenter, dataset.WindowWidth
        if index in (3, 4):
            dataset.PhotometricInterpretation = "MONOCHROME1"

    labels = [np.zeros((WINDOW_SIDE, WINDOW_SIDE), np.uint8) for _ in range(5)]
    labels[3][20:40, 10:50] = 4
    stored = [ramp(WINDOW_SIDE, WINDOW_SIDE) for _ in range(5)]
    stored[4] = stored[4][::-1].copy()
    return make_case(tmp_path, stored, labels, edit=edit)


def test_frame_own_window_first_value_range_and_monochrome1(header_case: Case, tmp_path: Path) -> None:
    out = tmp_path / "out"
    export(header_case, out, "--overlays")
    rows = read_manifest(out)
    assert len(rows) == 5
    colors = colors_of(out)
    own = expected_gray(header_case.stored[0], 1, -1400, (-100, 250))
    first = expected_gray(header_case.stored[1], 1, -1400, (300, 1500))
    ranged = expected_gray(header_case.stored[2], 1, -1400, None)
    expected = [
        own,
        first,
        ranged,
        255 - own,
        expected_gray(header_case.stored[4], 1, -1400, None, monochrome1=True),
    ]
    for index, (row, truth) in enumerate(zip(rows, expected)):
        got = read_png(out / row["overlay_png"])
        assert_images_equal(got, expected_overlay(truth, header_case.labels[index], colors), f"frame {index}")
    # The documented facts, on the pixels themselves.
    gray = [read_png(out / row["overlay_png"])[..., 0] for row in rows]
    assert not np.array_equal(gray[1], own), "two windows: the first (300, 1500) is used, not the second"
    assert gray[2].min() == 0 and gray[2].max() == 255, "no window: min -> 0, max -> 255"
    assert gray[2].flat[0] == 0 and gray[2].flat[-1] == 255
    assert gray[2].flat[2048] == math.floor(Fraction(2048 * 255, 4095) + HALF)
    assert np.all(gray[3][header_case.labels[3] == 0] == 255 - own[header_case.labels[3] == 0]), "MONOCHROME1"
    stored = header_case.stored[4]
    assert np.all(gray[4][stored == stored.max()] == 0), "MONOCHROME1 without a window: max -> black"
    assert np.all(gray[4][stored == stored.min()] == 255), "and min -> white"
    assert gray[3][0, 0] == 255, "MONOCHROME1: the lowest value is white"


def test_explicit_window_overrides_frame_windows_and_keeps_monochrome1(header_case: Case, tmp_path: Path) -> None:
    out = tmp_path / "out"
    export(header_case, out, "--overlays", "--window", "bone", "--alpha", "0.75")
    colors = colors_of(out)
    bone = expected_gray(header_case.stored[0], 1, -1400, PRESETS["bone"])
    for index, row in enumerate(read_manifest(out)):
        gray = expected_gray(header_case.stored[index], 1, -1400, PRESETS["bone"], monochrome1=index in (3, 4))
        got = read_png(out / row["overlay_png"])
        assert_images_equal(got, expected_overlay(gray, header_case.labels[index], colors, "0.75"), f"frame {index}")
    assert np.array_equal(read_png(out / read_manifest(out)[3]["overlay_png"])[0:20, :, 0], 255 - bone[0:20])


@pytest.mark.parametrize("window", ["soft", "40", "40,400,3", "forty,400", "lung,"])
def test_bad_window_is_refused_naming_the_presets(window_case: Case, tmp_path: Path, window: str) -> None:
    out = tmp_path / "out"
    run = run_cli("export", window_case.dicom, window_case.seg, "-o", out, "--overlays", f"--window={window}")
    assert run.code == 1
    line = one_error_line(run.stderr)
    for name in PRESETS:
        assert name in line, (name, line)
    assert not out.exists() and not leftovers(tmp_path)


def test_negative_window_centre_as_its_own_argument(window_case: Case, tmp_path: Path) -> None:
    """``--window CENTER,WIDTH`` with a negative centre, written as two arguments the way the help shows it
    (``--window -600,1500``), is a window, not an unknown option."""
    out = tmp_path / "out"
    run = run_cli("export", window_case.dicom, window_case.seg, "-o", out, "-q", "--overlays", "--window", "-600,1500")
    assert run.code == 0, run.stderr
    gray = read_png(out / read_manifest(out)[0]["overlay_png"])[..., 0]
    np.testing.assert_array_equal(gray, expected_gray(window_case.stored[0], 1, -1400, PRESETS["lung"]))


# --------------------------------------------------------------------------------------------------------------------
# 4. --images
# --------------------------------------------------------------------------------------------------------------------


def _modality(stored: np.ndarray, slope: object, intercept: object) -> np.ndarray:
    inverse, values = modality_values(stored, slope, intercept)
    return np.array(values, dtype=object)[inverse]


def _check_images(out: Path, case: Case, expected_png: list[np.ndarray], slopes, intercepts) -> None:
    rows = read_manifest(out)
    for row, png_truth, labels, stored, slope, intercept in zip(rows, expected_png, case.labels, case.stored, slopes, intercepts):
        assert Path(row["image_png"]).name == Path(row["label_png"]).name
        assert row["image_png"].startswith("images/")
        image = read_png(out / row["image_png"])
        label = read_png(out / row["label_png"])
        assert image.dtype == np.uint16, "16-bit PNG"
        assert image.shape == label.shape == (int(row["rows"]), int(row["columns"]))
        np.testing.assert_array_equal(image, png_truth)
        np.testing.assert_array_equal(label, labels)
        # png * image_slope + image_intercept reproduces the modality values exactly.
        got = _modality(image, row["image_slope"], row["image_intercept"])
        assert np.all(got == _modality(stored, slope, intercept)), row["image_png"]


def test_images_unsigned(header_case: Case, tmp_path: Path) -> None:
    out = tmp_path / "out"
    export(header_case, out, "--images")
    assert (out / "images").is_dir() and not (out / "overlays").exists() and not (out / "index.html").exists()
    _check_images(out, header_case, header_case.stored, ["1"] * 5, ["-1400"] * 5)
    assert read_manifest(out)[0]["image_intercept"] == "-1400" and read_manifest(out)[0]["image_slope"] == "1"


def test_images_signed_shifted_by_32768(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    stored = [rng.integers(-32768, 32768, size=(20, 24)).astype(np.int16) for _ in range(2)]
    stored[0][0, :4] = [-32768, -1, 0, 32767]
    labels = [np.zeros((20, 24), np.uint8), np.zeros((20, 24), np.uint8)]
    labels[1][5:9, 3:20] = 3
    slopes, intercepts = ["1.5", "0.25"], ["-20", "7.75"]

    def edit(dataset: Dataset, index: int) -> None:
        dataset.PixelRepresentation = 1
        dataset.RescaleSlope, dataset.RescaleIntercept = slopes[index], intercepts[index]

    case = make_case(tmp_path, stored, labels, edit=edit)
    assert pydicom.dcmread(case.files[0]).pixel_array.dtype == np.int16
    out = tmp_path / "out"
    export(case, out, "--images", "--overlays")
    expected = [(s.astype(np.int32) + 32768).astype(np.uint16) for s in stored]
    _check_images(out, case, expected, slopes, intercepts)
    row = read_manifest(out)[0]
    assert Fraction(row["image_intercept"]) == Fraction(-20) - 32768 * Fraction("1.5")
    assert read_png(out / row["image_png"])[0, :4].tolist() == [0, 32767, 32768, 65535]
    # The overlay of signed data is windowed on the signed modality values (the file's own window 40/400).
    for index, row in enumerate(read_manifest(out)):
        gray = expected_gray(stored[index], slopes[index], intercepts[index], (40, 400))
        assert_images_equal(read_png(out / row["overlay_png"]), expected_overlay(gray, labels[index], colors_of(out)), row["overlay_png"])


def test_images_and_overlays_of_enhanced_multiframe(tmp_path: Path) -> None:
    """One enhanced file, 5 frames stored in a position order that is not z order, each with distinct pixel
    values, its own rescale (PixelValueTransformationSequence) and window (FrameVOILUTSequence) per frame."""
    rows_, columns = 12, 16
    z_order = [3, 0, 4, 1, 2]  # frame n (0-based) lies at slice z_order[n]
    specs = stack(ORIGIN_LPS, 5, (0, 0, STEP), rows=rows_, columns=columns)
    specs = [specs[k] for k in z_order]
    stored = {n: ramp(rows_, columns, start=500 * n + 7, step=3) for n in range(5)}
    by_z = {round(spec.position[2], 3): stored[n] for n, spec in enumerate(specs)}
    path = write_enhanced(
        tmp_path / "dicom" / "enhanced.dcm", specs, pixel_function=lambda spec: by_z[round(spec.position[2], 3)]
    )
    intercepts = [str(-1000 - 10 * n) for n in range(5)]
    windows = [(str(100 * n), str(300 + 200 * n)) for n in range(5)]
    dataset = pydicom.dcmread(path)
    for n, item in enumerate(dataset.PerFrameFunctionalGroupsSequence):
        transform = Dataset()
        transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = "1", intercepts[n], "HU"
        item.PixelValueTransformationSequence = DicomSequence([transform])
        voi_item = Dataset()
        voi_item.WindowCenter, voi_item.WindowWidth = windows[n]
        item.FrameVOILUTSequence = DicomSequence([voi_item])
    dataset.save_as(path, enforce_file_format=True)
    # labels: slice k carries label k + 1 in a block, so frame n must show label z_order[n] + 1
    volume = np.zeros((columns, rows_, 5), np.uint8)
    for k in range(5):
        volume[2:10, 3:9, k] = k + 1
    seg = write_nifti(tmp_path / "seg.nii.gz", volume, grid_affine(ORIGIN_LPS, (1.0, 1.0, STEP)))
    out = tmp_path / "out"
    run = run_cli("export", tmp_path / "dicom", seg, "-o", out, "-q", "--images", "--overlays")
    assert run.code == 0, run.stderr
    rows = read_manifest(out)
    assert sorted(int(row["frame"]) for row in rows) == [1, 2, 3, 4, 5]
    colors = colors_of(out)
    for row in rows:
        n = int(row["frame"]) - 1
        image = read_png(out / row["image_png"])
        label = read_png(out / row["label_png"])
        assert Path(row["image_png"]).name == Path(row["label_png"]).name
        np.testing.assert_array_equal(image, stored[n], err_msg=f"frame {n + 1}")
        assert set(np.unique(label)) == {0, z_order[n] + 1}, "the label of the frame's own position"
        assert Fraction(row["image_intercept"]) == Fraction(intercepts[n]) and Fraction(row["image_slope"]) == 1
        gray = expected_gray(stored[n], 1, intercepts[n], windows[n])
        assert_images_equal(read_png(out / row["overlay_png"]), expected_overlay(gray, label, colors), row["overlay_png"])


# --------------------------------------------------------------------------------------------------------------------
# 5. --stats
# --------------------------------------------------------------------------------------------------------------------


def _pairs(text: str) -> dict[int, str]:
    return {int(value): number for value, number in (item.split(":") for item in text.split())}


def test_stats_counts_and_areas(tmp_path: Path) -> None:
    rows_, columns = 20, 30
    labels = [np.zeros((rows_, columns), np.uint8) for _ in range(3)]
    labels[0][2:9, 4:27] = 1
    labels[0][12:19, 1:8] = 200
    labels[1][0:20, 0:3] = 2
    labels[1][5, 5] = 1
    spacing = (0.7, 1.3)  # between rows, between columns
    case = make_case(tmp_path, [ramp(rows_, columns)] * 3, labels, spacing=spacing)
    out = tmp_path / "out"
    export(case, out, "--stats")
    area = Decimal("0.7") * Decimal("1.3")
    rows = read_manifest(out)
    assert [row["pixel_spacing"] for row in rows] == ["0.7 1.3"] * 3
    for row in rows:
        png = read_png(out / row["label_png"])
        counts = {int(v): int((png == v).sum()) for v in np.unique(png) if v}
        assert {v: int(n) for v, n in _pairs(row["label_pixels"]).items()} == counts
        areas = _pairs(row["label_areas_mm2"])
        assert set(areas) == set(counts)
        for value, text in areas.items():
            assert text == str((counts[value] * area).quantize(Decimal("0.01"))), (value, text)
    assert _pairs(rows[0]["label_pixels"]) == {1: "161", 200: "49"}
    assert _pairs(rows[0]["label_areas_mm2"]) == {1: "146.51", 200: "44.59"}
    assert rows[2]["label_pixels"] == rows[2]["label_areas_mm2"] == ""


# --------------------------------------------------------------------------------------------------------------------
# 6. Compressed transfer syntaxes, and the missing-decoder path
# --------------------------------------------------------------------------------------------------------------------

COMPRESSED = ["compressed", "compressed_j2k", "compressed_jpeg", "compressed_jpegls", "compressed_rle"]
SYNTAX_NAMES = {
    "compressed_j2k": "JPEG 2000",
    "compressed_jpeg": "JPEG Lossless",
    "compressed_jpegls": "JPEG-LS",
    "compressed_rle": "RLE Lossless",
}


def _generic(testdata: Path) -> Path:
    return require(testdata / "dicom2nifti" / "generic")


def _files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.dcm"))


def _nifti_on_frame(data: np.ndarray, affine: np.ndarray, dataset: Dataset) -> np.ndarray:
    """The NIfTI voxel at the centre of every pixel of a frame (the grids coincide: rounding is exact)."""
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    iop = np.array([float(v) for v in dataset.ImageOrientationPatient])
    spacing = [float(v) for v in dataset.PixelSpacing]
    r, c = np.meshgrid(np.arange(rows), np.arange(columns), indexing="ij")
    lps = (
        np.array([float(v) for v in dataset.ImagePositionPatient])
        + (c * spacing[1])[..., None] * iop[:3]
        + (r * spacing[0])[..., None] * iop[3:]
    )
    ras = lps * np.array([-1.0, -1.0, 1.0])
    index = (np.c_[ras.reshape(-1, 3), np.ones(rows * columns)] @ np.linalg.inv(affine).T)[:, :3]
    rounded = np.round(index).astype(int)
    assert np.allclose(index, rounded, atol=1e-3)
    return data[rounded[:, 0], rounded[:, 1], rounded[:, 2]].reshape(rows, columns)


@pytest.fixture
def compressed_reference(testdata: Path, tmp_path: Path):
    """The uncompressed reference of the 4 compressed slices and a 2-level segmentation from the ground truth.

    Data facts (asserted): the compressed_* folders hold the same 4 instances (same SOPInstanceUIDs and positions)
    in four transfer syntaxes; generic/compressed is a byte copy of compressed_j2k (JPEG 2000 too); anatomical/001
    is uncompressed at the same positions but with different pixel data, so it is no reference. The uncompressed
    reference is the ground-truth NIfTI written by dicom2nifti (its voxels are the stored values)."""
    generic = _generic(testdata)
    headers = {
        name: [pydicom.dcmread(p, stop_before_pixels=True) for p in _files(require(generic / name / "001"))]
        for name in COMPRESSED
    }
    anatomical = [pydicom.dcmread(p) for p in _files(require(generic / "anatomical" / "001"))]
    reference_uids = [h.SOPInstanceUID for h in headers["compressed_j2k"]]
    for name in COMPRESSED:
        assert [h.SOPInstanceUID for h in headers[name]] == reference_uids, name
        assert [h.ImagePositionPatient for h in headers[name]] == [h.ImagePositionPatient for h in anatomical]
        assert all(h.file_meta.TransferSyntaxUID.is_compressed for h in headers[name]), name
    for name, syntax in SYNTAX_NAMES.items():
        assert headers[name][0].file_meta.TransferSyntaxUID.name.startswith(syntax), name
    assert [p.read_bytes() for p in _files(generic / "compressed" / "001")] == [
        p.read_bytes() for p in _files(generic / "compressed_j2k" / "001")
    ]
    assert [a.SOPInstanceUID for a in anatomical] != reference_uids

    truth_image = nib.load(str(require(generic / "compressed" / "001_ground_truth.nii.gz")))
    truth = np.asanyarray(truth_image.dataobj)
    reference = [_nifti_on_frame(truth, truth_image.affine, h) for h in headers["compressed_j2k"]]
    assert not any(np.array_equal(r, a.pixel_array) for r, a in zip(reference, anatomical))
    levels = ((truth > 100).astype(np.uint8) + (truth > 180).astype(np.uint8)).astype(np.uint8)
    seg_image = nib.Nifti1Image(levels, truth_image.affine, header=truth_image.header)
    seg_image.set_data_dtype(np.uint8)
    seg = tmp_path / "levels.nii.gz"
    nib.save(seg_image, str(seg))
    return generic, reference, seg


@pytest.mark.parametrize("name", COMPRESSED)
def test_compressed_images_equal_uncompressed_reference(compressed_reference, tmp_path: Path, name: str) -> None:
    sitk = pytest.importorskip("SimpleITK")
    generic, reference, seg = compressed_reference
    dicom = generic / name / "001"
    out = tmp_path / name
    run = run_cli("export", dicom, seg, "-o", out, "-q", "--images", "--overlays")
    assert run.code == 0, run.stderr
    rows = read_manifest(out)
    assert len(rows) == 4
    for row in rows:
        k = int(row["instance_number"]) - 1
        image = read_png(out / row["image_png"])
        assert image.dtype == np.uint16
        np.testing.assert_array_equal(image, reference[k], err_msg=f"{name} {row['image_png']}")
        gdcm = sitk.GetArrayFromImage(sitk.ReadImage(str(dicom / row["source_file"])))  # an independent decoder
        np.testing.assert_array_equal(image, gdcm.reshape(image.shape))
        np.testing.assert_array_equal(
            read_png(out / row["label_png"]), (reference[k] > 100).astype(np.uint8) + (reference[k] > 180)
        )
        gray = expected_gray(reference[k], 1, 0, None)  # no window, no rescale in these files
        assert_images_equal(
            read_png(out / row["overlay_png"]),
            expected_overlay(gray, read_png(out / row["label_png"]), colors_of(out)),
            f"{name} {row['overlay_png']}",
        )


_BLOCKER = textwrap.dedent(
    """
    # Test-only: pretend no pixel-data decoder plugin is installed.
    import os
    import sys

    BLOCKED = {"pylibjpeg", "openjpeg", "libjpeg", "rle", "gdcm", "jpeg_ls"}  # jpeg_ls: pyjpegls (highdicom needs it)


    class _Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked by the test")
            return None


    if os.environ.get("SEGALIGN_TEST_WITHOUT_SIMPLEITK"):  # neither SimpleITK's GDCM (which Slicer bundles)
        BLOCKED.add("SimpleITK")
    sys.meta_path.insert(0, _Blocker())
    if os.environ.get("SEGALIGN_TEST_PILLOW_WITHOUT_OPENJPEG"):  # Pillow built without OpenJPEG
        from PIL import features

        _check_codec = features.check_codec
        features.check_codec = lambda feature: False if feature == "jpg_2000" else _check_codec(feature)
    """
)


def _run_blocked(tmp_path: Path, *args: object, pillow_j2k: bool = True, simpleitk: bool = True) -> subprocess.CompletedProcess:
    blocker = tmp_path / "blocker"
    blocker.mkdir(exist_ok=True)
    (blocker / "sitecustomize.py").write_text(_BLOCKER, encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(blocker), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("SEGALIGN_TEST_PILLOW_WITHOUT_OPENJPEG", None)
    if not pillow_j2k:
        env["SEGALIGN_TEST_PILLOW_WITHOUT_OPENJPEG"] = "1"
    env.pop("SEGALIGN_TEST_WITHOUT_SIMPLEITK", None)
    if not simpleitk:
        env["SEGALIGN_TEST_WITHOUT_SIMPLEITK"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "segalign", *map(str, args)], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=120,
    )


def test_blocker_really_blocks_the_decoders(tmp_path: Path) -> None:
    """The sitecustomize used below is active in the subprocess: the plugins cannot be imported."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import importlib\nfor m in ('pylibjpeg', 'openjpeg', 'libjpeg', 'rle', 'gdcm'):\n"
        "    try:\n        importlib.import_module(m)\n    except ImportError:\n        print('blocked', m)\n"
        "from PIL import features\nprint('j2k', features.check_codec('jpg_2000'))\n",
        encoding="utf-8",
    )
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(_BLOCKER, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(blocker), "SEGALIGN_TEST_PILLOW_WITHOUT_OPENJPEG": "1"}
    result = subprocess.run([sys.executable, str(probe)], env=env, capture_output=True, text=True, timeout=60)
    assert result.stdout.split("\n")[:5] == [f"blocked {m}" for m in ("pylibjpeg", "openjpeg", "libjpeg", "rle", "gdcm")]
    assert "j2k False" in result.stdout


def test_missing_jpeg2000_decoder_refuses_overlays_but_exports_labels(compressed_reference, tmp_path: Path) -> None:
    """No pylibjpeg, no gdcm and a Pillow without OpenJPEG: --overlays on JPEG 2000 exits 1 with one line naming
    the transfer syntax and the extra to install, and writes nothing; plain label export still works."""
    generic, reference, seg = compressed_reference
    dicom = generic / "compressed_j2k" / "001"
    out = tmp_path / "exports" / "j2k"
    result = _run_blocked(tmp_path, "export", dicom, seg, "-o", out, "-q", "--overlays", pillow_j2k=False, simpleitk=False)
    assert result.returncode == 1, (result.stdout, result.stderr)
    line = one_error_line(result.stderr)
    assert "JPEG 2000" in line and "segalign[codecs]" in line, line
    assert "1.2.840.10008.1.2.4.90" in line, "the transfer syntax UID, not only the decoder library's words"
    assert not out.exists()
    assert not (tmp_path / "exports").exists(), "parents made for the export are removed again"

    out = tmp_path / "labels_only"
    result = _run_blocked(tmp_path, "export", dicom, seg, "-o", out, "-q", pillow_j2k=False, simpleitk=False)
    assert result.returncode == 0, result.stderr
    rows = read_manifest(out)
    assert len(rows) == 4 and not (out / "overlays").exists()
    for row in rows:
        k = int(row["instance_number"]) - 1
        np.testing.assert_array_equal(
            read_png(out / row["label_png"]), (reference[k] > 100).astype(np.uint8) + (reference[k] > 180)
        )


@pytest.mark.parametrize("name", ["compressed_jpeg", "compressed_jpegls"])
def test_missing_jpeg_decoders_refuse_images(compressed_reference, tmp_path: Path, name: str) -> None:
    """JPEG Lossless and JPEG-LS have no decoder besides pylibjpeg, gdcm and SimpleITK's GDCM: without all three,
    --images exits 1, naming them."""
    generic, _, seg = compressed_reference
    out = tmp_path / "out"
    result = _run_blocked(tmp_path, "export", generic / name / "001", seg, "-o", out, "-q", "--images", simpleitk=False)
    assert result.returncode == 1, (result.stdout, result.stderr)
    line = one_error_line(result.stderr)
    assert SYNTAX_NAMES[name] in line and "segalign[codecs]" in line and "SimpleITK" in line, line
    uid = pydicom.dcmread(next((generic / name / "001").glob("*.dcm")), stop_before_pixels=True).file_meta.TransferSyntaxUID
    assert str(uid) in line, line
    assert not out.exists() and not leftovers(tmp_path)


@pytest.mark.parametrize("name", ["compressed_jpeg", "compressed_jpegls"])
def test_as_in_slicer_jpeg_lossless_decodes_through_simpleitk(compressed_reference, tmp_path: Path, name: str) -> None:
    """3D Slicer bundles SimpleITK but no pydicom JPEG plugin: the panel's defaults (overlays on) and --images work
    there, decoded by GDCM through SimpleITK, and the images equal the uncompressed reference exactly."""
    pytest.importorskip("SimpleITK")
    generic, reference, seg = compressed_reference
    out = tmp_path / "out"
    result = _run_blocked(tmp_path, "export", generic / name / "001", seg, "-o", out, "-q", "--images", "--overlays")
    assert result.returncode == 0, result.stderr
    rows = read_manifest(out)
    assert len(rows) == 4
    for row in rows:
        np.testing.assert_array_equal(read_png(out / row["image_png"]), reference[int(row["instance_number"]) - 1])
        assert (out / row["overlay_png"]).is_file()


@pytest.mark.parametrize("name", ["compressed_j2k", "compressed_rle"])
def test_without_codecs_pillow_and_pydicom_still_decode_exactly(compressed_reference, tmp_path: Path, name: str) -> None:
    """Without the codecs extra, JPEG 2000 falls back to Pillow's OpenJPEG and RLE to pydicom's own decoder;
    whatever decodes it, the 16-bit images must equal the uncompressed reference exactly."""
    generic, reference, seg = compressed_reference
    out = tmp_path / "out"
    result = _run_blocked(tmp_path, "export", generic / name / "001", seg, "-o", out, "-q", "--images")
    assert result.returncode == 0, result.stderr
    for row in read_manifest(out):
        np.testing.assert_array_equal(read_png(out / row["image_png"]), reference[int(row["instance_number"]) - 1])


# --------------------------------------------------------------------------------------------------------------------
# 7. The TotalSegmentator example (CT in JPEG 2000, segmentation with an embedded label table)
# --------------------------------------------------------------------------------------------------------------------


def _embedded_table(path: Path) -> dict[int, tuple[str, tuple[int, int, int]]]:
    """Names and 0..255 colours from the NIfTI header's CaretExtension XML, parsed here."""
    for extension in nib.load(str(path)).header.extensions:
        content = extension.get_content()
        text = content.decode("utf-8") if isinstance(content, bytes) else str(content)
        if "<LabelTable" in text:
            root = ElementTree.fromstring(text.strip().rstrip("\x00"))
            return {
                int(label.attrib["Key"]): (
                    (label.text or "").strip(),
                    tuple(round(float(label.attrib[channel]) * 255) for channel in ("Red", "Green", "Blue")),
                )
                for label in root.iter("Label")
            }
    raise AssertionError("no LabelTable in the NIfTI header")


def test_totalsegmentator_example_overlays(testdata: Path, tmp_path: Path) -> None:
    base = require(testdata / "totalsegmentator_example")
    dicom, segmentation = require(base / "ct_dicom"), require(base / "segmentation_ml.nii.gz")
    out = tmp_path / "out"
    run = run_cli("export", dicom, segmentation, "-o", out, "-q", "--overlays")
    assert run.code == 0, run.stderr
    embedded = _embedded_table(segmentation)
    assert embedded[5] == ("liver", (0, 255, 255))
    table = labels_json(out)
    for value, (name, color) in embedded.items():
        assert table[value]["name"] == name and tuple(table[value]["color"]) == color, value
    assert (out / "index.html").is_file()
    rows = read_manifest(out)
    assert len(rows) == 20
    colors = {value: color for value, (_, color) in embedded.items()}
    liver_pixels = 0
    for row in rows:
        dataset = pydicom.dcmread(dicom / row["source_file"])
        assert dataset.file_meta.TransferSyntaxUID.name.startswith("JPEG 2000")
        stored = dataset.pixel_array
        window = (dataset.WindowCenter[0], dataset.WindowWidth[0])  # multi-valued: [40, 300] and [300, 1500]
        gray = expected_gray(stored, dataset.RescaleSlope, dataset.RescaleIntercept, window)
        labels = read_png(out / row["label_png"])
        got = read_png(out / row["overlay_png"])
        liver = labels == 5
        liver_pixels += int(liver.sum())
        if liver.any():  # the sample asked for: liver pixels against the blend written out by hand
            for r, c in np.argwhere(liver)[:: max(1, int(liver.sum()) // 50)]:
                g = int(gray[r, c])
                expected = [math.floor(Fraction(3, 5) * g + Fraction(2, 5) * channel + HALF) for channel in (0, 255, 255)]
                assert got[r, c].tolist() == expected, (row["overlay_png"], r, c, g)
        assert_images_equal(got, expected_overlay(gray, labels, colors), row["overlay_png"])
    assert liver_pixels > 10000


# --------------------------------------------------------------------------------------------------------------------
# 8. Label names: the built-in TotalSegmentator table, the guess, embedded tables, default names and colours
# --------------------------------------------------------------------------------------------------------------------


def values_case(root: Path, values: Sequence[int], label_table_xml: str | None = None) -> Case:
    """Two 32 x 32 frames; each value gets a 2 x 2 block on frame 1 (values must fit uint8)."""
    labels = [np.zeros((32, 32), np.uint8), np.zeros((32, 32), np.uint8)]
    for index, value in enumerate(values):
        r, c = divmod(index, 16)
        labels[0][2 * r : 2 * r + 2, 2 * c : 2 * c + 2] = value
    return make_case(root, [ramp(32, 32)] * 2, labels, label_table_xml=label_table_xml)


TOTALSEG_KNOWN = {1: "spleen", 5: "liver", 52: "aorta", 117: "costal_cartilages", 31: "vertebrae_L1"}


def test_labels_totalsegmentator_builtin_table(tmp_path: Path) -> None:
    case = values_case(tmp_path, [1, 5, 31, 52, 117])
    out = tmp_path / "out"
    export(case, out, "--labels", "totalsegmentator")
    table = labels_json(out)
    for value, name in TOTALSEG_KNOWN.items():
        assert table[value]["name"] == name, value
    assert sorted(table) == list(range(1, 118)), "the 117 'total' classes"
    assert len({entry["name"] for entry in table.values()}) == 117
    assert table[2]["name"] == "kidney_right" and table[2]["voxels"] == 0


def test_totalsegmentator_values_are_guessed_with_a_warning(tmp_path: Path) -> None:
    values = [1, 5, 31, 52, 117, *range(60, 75), 90]  # 21 distinct 'total' values, no table
    case = values_case(tmp_path, values)
    out = tmp_path / "out"
    run = export(case, out, quiet=False)
    table = labels_json(out)
    for value, name in TOTALSEG_KNOWN.items():
        assert table[value]["name"] == name
    warned = [line for line in run.stderr.splitlines() if line.startswith("segalign: warning:") and "TotalSegmentator" in line]
    assert len(warned) == 1, run.stderr
    exported = json.loads((out / "export.json").read_text(encoding="utf-8"))["warnings"]
    assert any("TotalSegmentator" in warning for warning in exported)


@pytest.mark.parametrize(
    "values",
    [
        pytest.param([1, 5, 31, 52, 117, *range(60, 74)], id="19-values"),
        pytest.param([1, 5, 31, 52, *range(60, 75), 118], id="value-118"),
    ],
)
def test_no_guess_gives_segment_names(tmp_path: Path, values: list[int]) -> None:
    case = values_case(tmp_path, values)
    out = tmp_path / "out"
    run = export(case, out, quiet=False)
    table = labels_json(out)
    assert sorted(table) == sorted(values)
    assert all(table[v]["name"] == f"Segment_{v}" for v in values)
    assert "TotalSegmentator" not in run.stderr


def test_embedded_table_wins_over_the_guess(tmp_path: Path) -> None:
    values = [1, 5, 31, 52, 117, *range(60, 76)]
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?><CaretExtension><VolumeInformation Index="0"><LabelTable>'
        '<Label Key="5" Red="0.2" Green="0.4" Blue="0.6" Alpha="1"><![CDATA[my_liver]]></Label>'
        '<Label Key="52" Red="1" Green="0" Blue="0" Alpha="1"><![CDATA[vessel]]></Label>'
        "</LabelTable></VolumeInformation></CaretExtension>"
    )
    case = values_case(tmp_path, values, label_table_xml=xml)
    out = tmp_path / "out"
    run = export(case, out, quiet=False)
    table = labels_json(out)
    assert table[5]["name"] == "my_liver" and table[5]["color"] == [51, 102, 153]
    assert table[52]["name"] == "vessel" and table[52]["color"] == [255, 0, 0]
    assert table[1]["name"] == "Segment_1" and table[117]["name"] == "Segment_117"
    assert "TotalSegmentator" not in run.stderr


def test_default_colours_are_distinct_and_deterministic(tmp_path: Path) -> None:
    values = [*range(1, 25), 118, 200, 255]
    first = values_case(tmp_path / "a", values)
    second = values_case(tmp_path / "b", list(reversed(values)))  # other positions, other order
    export(first, tmp_path / "a" / "out", "--overlays")
    export(second, tmp_path / "b" / "out", "--overlays")
    colors_a, colors_b = colors_of(tmp_path / "a" / "out"), colors_of(tmp_path / "b" / "out")
    assert sorted(colors_a) == sorted(values)
    assert colors_a == colors_b, "same value, same colour, whatever else is in the segmentation"
    assert len(set(colors_a.values())) == len(values), "different values, different colours"
    # The overlays really use those colours (alpha 0.4 blend on the frame's own window).
    out = tmp_path / "a" / "out"
    row = read_manifest(out)[0]
    gray = expected_gray(first.stored[0], 1, -1024, (40, 400))
    assert_images_equal(read_png(out / row["overlay_png"]), expected_overlay(gray, first.labels[0], colors_a), "defaults")
