"""``segalign export --rtstruct``: the RT Structure Set (``rtstruct.dcm``) checked frame by frame against truth SegAlign
does not compute.

Readers (Testing/rt_readers.py, none of them SegAlign's): (a) pydicom, with a rasteriser written there: each
contour's points are mapped into the (row, column) pixel coordinates of the frame its ContourImageSequence
references, by inverting that frame's plane (every point must lie in it within 1e-3 mm), and every pixel centre is
marked by the even-odd rule, the contours of one ROI on one frame XORed; (b) dicompyler-core; (c) rt-utils; (d)
dciodvfy. The rasteriser is first checked on hand-made polygons against a brute-force point-in-polygon loop, and on
RTSTRUCTs rt-utils writes from known masks (``test_rasteriser_*``, ``test_readers_*``), so a failure further down is
about SegAlign's RTSTRUCT, not the readers.

Truth per frame is what test_dicom_seg uses (its case builders are reused): the analytic phantom at the frame's pixel
centres (from its own tags) where the segmentation grid coincides with the DICOM grid, else SimpleITK
nearest-neighbour resampling onto a one-frame reference image; label arrays painted directly for the shape cases.
The rasterised RTSTRUCT must equal it exactly on every frame, and equal the export's own labels/*.png.

Finally, rt-utils' RTSTRUCT, made the way its users make one (SimpleITK reads the series and resamples the NIfTI,
``add_roi`` per label), is put beside SegAlign's on a tilted series and on one with a missing slice.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import rt_readers as rt
import seg_readers
from conftest import leftovers, read_manifest, read_png, require, run_cli, snapshot
from phantoms import stack_affine, write_segmentation
from seg_cases import (
    PHANTOM,
    Case,
    SourceFrame,
    analytic,
    build_case,
    centred_stack,
    highdicom_ready,
    importable,
    itk_from_nifti,
    itk_on_frame,
    need_dciodvfy,
    need_sitk,
    save_like,
    source_frames,
    totalsegmentator_example,
)
from segalign.synthetic import AXIAL, grid_affine, shuffled_names, stack, write_nifti, write_series

#: rt-utils and dicompyler-core were written for pydicom 2: their use of attributes pydicom 3 deprecates is theirs
pytestmark = [
    pytest.mark.filterwarnings("ignore:'FileDataset.is_little_endian' will be removed:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:'FileDataset.is_implicit_VR' will be removed:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The 'pydicom.pixel_data_handlers' module will be removed:DeprecationWarning"),
]

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
PLANE_TOLERANCE = 1e-3  #: mm: how far a contour point may lie from the plane of the frame it references
DS_PATTERN = re.compile(rb"^ *[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)? *$")


def need_rtutils():
    return pytest.importorskip("rt_utils", reason="rt-utils is the comparison writer/reader (pip install rt-utils)")


def need_dicompyler() -> None:
    pytest.importorskip("dicompylercore", reason="dicompyler-core is a second reader (pip install dicompyler-core)")


# --------------------------------------------------------------------------------------------------------------------
# Cases: test_dicom_seg's builders, plus non-square anisotropic pixels, feet-first, a tilted series with an
# orthonormal segmentation grid, hand-painted shapes, and a huge jagged outline
# --------------------------------------------------------------------------------------------------------------------

#: cases with single-frame synthetic files that get the study attributes rt-utils insists on (StudyDate, StudyTime,
#: StudyID...), as test_dicom_seg gives them for highdicom
RTUTILS_READY = ("axial_las", "missing_slice", "missing_slice_fine", "tilt_orthonormal", "shapes")


def _painted(root: Path, specs, labels_frc: np.ndarray) -> Case:
    """A series from ``specs`` and a segmentation whose voxels are its pixels (``labels_frc[frame, row, column]``);
    the truth of a frame is its painted array (found by position along the stack)."""
    dicom = root / "dicom"
    write_series(dicom, specs, file_names=shuffled_names(len(specs), seed=7))
    affine, shape = stack_affine(specs)
    volume = np.ascontiguousarray(np.transpose(labels_frc, (2, 1, 0)))  # (column, row, frame) as stack_affine says
    assert volume.shape == shape
    segmentation = write_nifti(root / "seg.nii.gz", volume, affine)
    first = np.asarray(specs[0].position, float)
    step = np.asarray(specs[1].position, float) - first

    def truth(frame: SourceFrame) -> np.ndarray:
        index = (frame.position - first) @ step / (step @ step)
        k = round(float(index))
        assert abs(index - k) < 1e-6 and 0 <= k < len(specs), index
        return labels_frc[k]

    return Case(dicom, segmentation, truth, min_labelled_frames=1)


SHAPES_ROWS, SHAPES_COLUMNS = 40, 40


def shapes_labels() -> np.ndarray:
    """Six 40 x 40 frames of hand-painted structures (frame, row, column):

    0: nothing; 1: a square with a square hole holding an island (label 1, 3 contours) and a ring (label 2, 2
    contours); 2: one-pixel islands, four on the frame's corners (label 3, 4-point contours each) and
    diagonal-touching pixels (label 4: a checkerboard block and a diagonal pair); 3: every pixel labelled 5 (one
    4-point contour around the frame); 4: label 5 everywhere but a square of label 1 (5: 2 contours, 1: one);
    5: an L, a U and a plus (label 6), concave corners.
    """
    labels = np.zeros((6, SHAPES_ROWS, SHAPES_COLUMNS), dtype=np.uint8)
    f = labels[1]
    f[5:25, 5:25] = 1
    f[10:20, 10:20] = 0
    f[13:17, 13:17] = 1
    rr, cc = np.mgrid[0:SHAPES_ROWS, 0:SHAPES_COLUMNS]
    distance = np.hypot(rr - 30.2, cc - 30.7)
    f[(distance <= 8.1) & (distance > 4.3)] = 2
    f = labels[2]
    for r, c in [(0, 0), (0, 39), (39, 0), (39, 39), (5, 20), (20, 33), (33, 20)]:
        f[r, c] = 3
    block = np.zeros((6, 6), dtype=bool)
    block[(np.add.outer(np.arange(6), np.arange(6)) % 2) == 0] = True
    f[10:16, 10:16][block] = 4
    f[30, 30] = f[31, 31] = 4
    labels[3] = 5
    labels[4] = 5
    labels[4][12:20, 8:30] = 1
    f = labels[5]
    f[3:15, 3:6] = 6
    f[12:15, 3:14] = 6  # L
    f[20:35, 20:23] = 6
    f[32:35, 20:32] = 6
    f[20:35, 29:32] = 6  # U
    f[5:16, 30:33] = 6
    f[9:12, 25:38] = 6  # plus
    return labels


HUGE_COLUMNS, HUGE_ROWS = 1200, 64


def huge_labels(seed: int = 11) -> np.ndarray:
    """Three 64 x 1200 frames; the middle one holds one region made of a run of rows per column, top and bottom
    changing at every column: one outline of exactly 4 * 1200 corner points, no holes."""
    rng = np.random.default_rng(seed)
    top = rng.integers(2, 22, HUGE_COLUMNS)
    bottom = rng.integers(40, 62, HUGE_COLUMNS)
    for values in (top, bottom):
        for c in range(1, HUGE_COLUMNS):
            if values[c] == values[c - 1]:
                values[c] += 1 if c % 2 else -1
    assert np.all(np.diff(top) != 0) and np.all(np.diff(bottom) != 0)
    labels = np.zeros((3, HUGE_ROWS, HUGE_COLUMNS), dtype=np.uint8)
    rows = np.arange(HUGE_ROWS)[:, None]
    labels[1] = ((rows >= top[None, :]) & (rows <= bottom[None, :])).astype(np.uint8)
    return labels


def build(name: str, root: Path) -> Case:
    root.mkdir(parents=True, exist_ok=True)
    if name == "anisotropic":  # non-square frames, non-square pixels
        specs = centred_stack(AXIAL, (0.7, 1.3), 40, 64, (0, 0, 1.5), count=20, before=10)
        write_series(root / "dicom", specs, file_names=shuffled_names(len(specs), seed=5))
        affine, shape = stack_affine(specs, (1, 0, 2), (True, False, False))
        case = Case(root / "dicom", write_segmentation(root / "seg.nii.gz", PHANTOM, affine, shape), analytic)
    elif name == "feet_first":  # FFS: IOP (-1, 0, 0, 0, 1, 0), slices along the normal (towards the feet)
        orientation = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
        specs = centred_stack(orientation, (0.9, 0.9), 40, 40, (0, 0, -1.5), count=20, before=10)
        paths = write_series(root / "dicom", specs)
        for path in paths:
            dataset = pydicom.dcmread(path)
            dataset.PatientPosition = "FFS"
            dataset.save_as(path)
        affine, shape = stack_affine(specs, (0, 1, 2), (True, False, True))
        case = Case(root / "dicom", write_segmentation(root / "seg.nii.gz", PHANTOM, affine, shape), analytic)
    elif name == "tilt_orthonormal":  # 17 deg gantry tilt; the segmentation on an axial grid (as after dcm2niix's
        # tilt correction), so SimpleITK can read it: truth is SimpleITK's resampling
        tilt = np.radians(17.0)
        orientation = (1.0, 0.0, 0.0, 0.0, np.cos(tilt), -np.sin(tilt))
        specs = stack(
            (-18, -16, -15), 22, (0, 0, 1.4), orientation=orientation, spacing=(0.9, 0.9), rows=40, columns=40
        )
        write_series(root / "dicom", specs)
        segmentation = write_segmentation(
            root / "seg.nii.gz", PHANTOM, grid_affine((-21.13, -27.71, -24.37), (0.83, 0.87, 1.19)), (52, 62, 50)
        )
        itk = itk_from_nifti(segmentation)
        case = Case(root / "dicom", segmentation, lambda frame: itk_on_frame(itk, frame), min_labelled_frames=10)
    elif name == "missing_slice_fine":  # missing_slice's series; the segmentation on a finer axial grid (0.5 mm
        # slices, as a resampled model output), so nearest-neighbour sampling no longer snaps back onto the frames
        specs = stack((-20, -20, -14), 20, (0, 0, 1.5), rows=40, columns=40)
        del specs[9]
        write_series(root / "dicom", specs)
        segmentation = write_segmentation(
            root / "seg.nii.gz", PHANTOM, grid_affine((-21.37, -22.11, -16.29), (0.77, 0.81, 0.5)), (56, 54, 66)
        )
        itk = itk_from_nifti(segmentation)
        case = Case(root / "dicom", segmentation, lambda frame: itk_on_frame(itk, frame), min_labelled_frames=10)
    elif name == "shapes":
        specs = stack((-20, -20, -4), 6, (0, 0, 1.5), rows=SHAPES_ROWS, columns=SHAPES_COLUMNS)
        case = _painted(root, specs, shapes_labels())
    elif name == "huge":
        specs = stack((-300, -16, -1), 3, (0, 0, 1.0), spacing=(0.5, 0.5), rows=HUGE_ROWS, columns=HUGE_COLUMNS)
        case = _painted(root, specs, huge_labels())
    else:
        case = build_case(name, root)
    if name in RTUTILS_READY:
        highdicom_ready(sorted(p for p in case.dicom.iterdir() if p.is_file()))
    return case


#: every geometry, checked frame by frame
GEOMETRY_CASES = [
    "axial_las",
    "sagittal",
    "coronal",
    "double_oblique",
    "gantry_tilt",
    "tilt_orthonormal",
    "missing_slice",
    "missing_slice_fine",
    "left_handed",
    "anisotropic",
    "enhanced",
    "feet_first",
    "coarse_rotated_grid",
    "labels_117",
]
FRAME_CASES = [*GEOMETRY_CASES, "shapes", "huge"]


@dataclass
class Exported:
    name: str
    case: Case
    out: Path
    run: object
    _frames: dict = field(default_factory=dict)

    @property
    def rtstruct(self) -> Path:
        return self.out / "rtstruct.dcm"

    def frames(self) -> dict[tuple[str, int], SourceFrame]:
        if not self._frames:
            self._frames.update(source_frames(self.case.dicom))
        return self._frames

    def labels_json(self) -> list[dict]:
        return json.loads((self.out / "labels.json").read_text(encoding="utf-8"))

    def entries(self) -> list[dict]:
        """labels.json entries of the labels present on some frame, by ascending value: ROI n is the n-th."""
        return sorted((e for e in self.labels_json() if int(e["frames"]) > 0), key=lambda e: int(e["value"]))

    def values(self) -> dict[int, int]:
        """``{ROINumber: label value}`` as the RTSTRUCT must number its ROIs."""
        return {number: int(entry["value"]) for number, entry in enumerate(self.entries(), start=1)}

    def export_json(self) -> dict:
        return json.loads((self.out / "export.json").read_text(encoding="utf-8"))

    def pngs(self) -> dict[tuple[str, int], np.ndarray]:
        return {
            (row["sop_instance_uid"], int(row["frame"])): read_png(self.out / row["label_png"])
            for row in read_manifest(self.out)
        }

    def truth(self) -> dict[tuple[str, int], np.ndarray]:
        return {key: self.case.truth(frame) for key, frame in self.frames().items()}


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Exports made once per module: ``exports(case)``, with --rtstruct (and the case's own arguments)."""
    cache: dict[str, Exported] = {}

    def get(name: str) -> Exported:
        if name not in cache:
            case = build(name, tmp_path_factory.mktemp(name))
            out = case.dicom.parent / "out"
            run = run_cli("export", case.dicom, case.segmentation, "-o", out, "-q", "--rtstruct", *case.args)
            assert run.code == 0, f"{name}: export failed ({run.code}): {run.stderr}"
            assert (out / "rtstruct.dcm").is_file(), (
                f"{name}: no rtstruct.dcm in {sorted(p.name for p in out.iterdir())}"
            )
            cache[name] = Exported(name, case, out, run)
        return cache[name]

    return get


def assert_frames_equal(where: str, frames: dict, got: dict, want: dict, *, name: str) -> None:
    """``got`` equals ``want`` on every source frame (frames ``got`` lacks count as empty)."""
    stray = sorted(set(got) - set(frames))
    assert not stray, f"{where}: {name} has frames the series does not have: {stray[:5]}"
    problems = []
    for key, frame in frames.items():
        expected = np.asarray(want[key])
        image = got.get(key)
        image = np.zeros_like(expected) if image is None else np.asarray(image)
        if image.shape != expected.shape:
            problems.append(f"{frame.path.name} frame {key[1]}: shape {image.shape}, expected {expected.shape}")
            continue
        wrong = image != expected
        if wrong.any():
            r, c = np.argwhere(wrong)[0]
            problems.append(
                f"{frame.path.name} frame {key[1]}: {int(wrong.sum())} of {wrong.size} pixels differ "
                f"(first at row {r}, column {c}: {name} {image[r, c]}, expected {expected[r, c]}; "
                f"{name} values {np.unique(image).tolist()[:8]}, expected {np.unique(expected).tolist()[:8]})"
            )
    assert not problems, f"{where}: {name} differs on {len(problems)} frames:\n" + "\n".join(problems[:8])


def check_rtstruct(where: str, path: Path, frames: dict, truth: dict, values: dict[int, int], pngs: dict | None):
    """The core check, shared by phantoms and real series. Every contour: CLOSED_PLANAR, NumberOfContourPoints
    right, every point in the plane of the frame it references (1e-3 mm), running along pixel edges with collinear
    points dropped; every ROI on every frame, rasterised, equals the truth mask of its label; contours exactly on
    the frames where the label is; the label images built from the ROIs equal the truth and the PNGs."""
    _, rois = rt.read_rtstruct(path)
    assert sorted(rois) == sorted(values), f"{where}: ROI numbers {sorted(rois)[:10]}, expected {sorted(values)[:10]}"
    placed = rt.place_contours(rois, frames, plane_tolerance=PLANE_TOLERANCE)
    problems = []
    for item in placed:
        found = rt.edge_following_problems(item.rc)
        if found:
            problems.append(f"ROI {item.contour.roi} contour {item.contour.index} on {item.key}: {'; '.join(found)}")
    assert not problems, f"{where}: contours not along pixel edges:\n" + "\n".join(problems[:8])
    masks = rt.rtstruct_masks(rois, frames, placed=placed)
    wrong = []
    for number, value in values.items():
        want_frames = {key for key, t in truth.items() if (np.asarray(t) == value).any()}
        have = set(masks[number])
        if have != want_frames:
            wrong.append(
                f"ROI {number} (label {value}): contours on {len(have)} frames, label on {len(want_frames)}; "
                f"extra {sorted(have - want_frames)[:2]}, missing {sorted(want_frames - have)[:2]}"
            )
        for key in sorted(have & want_frames):
            expected = np.asarray(truth[key]) == value
            differ = masks[number][key] != expected
            if differ.any():
                r, c = np.argwhere(differ)[0]
                wrong.append(
                    f"ROI {number} (label {value}) on {frames[key].path.name} frame {key[1]}: {int(differ.sum())} "
                    f"pixels differ, first at row {r}, column {c} (rasterised {bool(masks[number][key][r, c])})"
                )
    assert not wrong, f"{where}: ROIs differ from the truth:\n" + "\n".join(wrong[:10])
    images = rt.label_images(masks, values, frames)
    assert_frames_equal(where, frames, images, truth, name="RTSTRUCT")
    if pngs is not None:
        assert set(pngs) == set(frames), f"{where}: the manifest must list every source frame"
        assert_frames_equal(where, frames, images, pngs, name="RTSTRUCT vs labels/*.png")
    return rois, placed


# --------------------------------------------------------------------------------------------------------------------
# 1. The rasteriser and the readers, on hand-made polygons and on rt-utils' RTSTRUCTs (no SegAlign involved)
# --------------------------------------------------------------------------------------------------------------------


def brute_force(polygons: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Even-odd point-in-polygon, one pixel and one edge at a time (the textbook loop, for checking even_odd)."""
    result = np.zeros(shape, dtype=bool)
    for r in range(shape[0]):
        for c in range(shape[1]):
            inside = False
            for polygon in polygons:
                n = len(polygon)
                for i in range(n):
                    (r0, c0), (r1, c1) = polygon[i], polygon[(i + 1) % n]
                    if (r0 > r) != (r1 > r) and c < c0 + (r - r0) * (c1 - c0) / (r1 - r0):
                        inside = not inside
            result[r, c] = inside
    return result


def _box(r0: int, c0: int, r1: int, c1: int) -> np.ndarray:
    """The outline of pixels r0..r1, c0..c1 (inclusive), clockwise on screen."""
    return np.array([(r0 - 0.5, c0 - 0.5), (r0 - 0.5, c1 + 0.5), (r1 + 0.5, c1 + 0.5), (r1 + 0.5, c0 - 0.5)])


HAND_MADE = {
    # name: (polygons, the pixels they stand for)
    "square": ([_box(2, 3, 5, 7)], [(r, c) for r in range(2, 6) for c in range(3, 8)]),
    "ring_two_squares": (
        [_box(1, 1, 8, 8), _box(3, 3, 6, 6)[::-1]],
        [(r, c) for r in range(1, 9) for c in range(1, 9) if not (3 <= r <= 6 and 3 <= c <= 6)],
    ),
    "ring_same_winding": (  # the even-odd rule ignores winding
        [_box(1, 1, 8, 8), _box(3, 3, 6, 6)],
        [(r, c) for r in range(1, 9) for c in range(1, 9) if not (3 <= r <= 6 and 3 <= c <= 6)],
    ),
    "two_islands": (
        [_box(0, 0, 1, 1), _box(6, 5, 8, 9)],
        [(0, 0), (0, 1), (1, 0), (1, 1)] + [(r, c) for r in range(6, 9) for c in range(5, 10)],
    ),
    "island_in_hole": (
        [_box(0, 0, 9, 9), _box(2, 2, 7, 7), _box(4, 4, 5, 5)],
        [(r, c) for r in range(10) for c in range(10) if not (2 <= r <= 7 and 2 <= c <= 7)]
        + [(4, 4), (4, 5), (5, 4), (5, 5)],
    ),
    "one_pixel": ([_box(4, 6, 4, 6)], [(4, 6)]),
    "frame_corner_pixels": ([_box(0, 0, 0, 0), _box(9, 9, 9, 9)], [(0, 0), (9, 9)]),
    "l_shape": (
        [np.array([(0.5, 0.5), (0.5, 2.5), (2.5, 2.5), (2.5, 4.5), (4.5, 4.5), (4.5, 0.5)])],
        [(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2), (3, 3), (3, 4), (4, 1), (4, 2), (4, 3), (4, 4)],
    ),
    "diagonal_squares": ([_box(2, 2, 2, 2), _box(3, 3, 3, 3)], [(2, 2), (3, 3)]),
    "diagonal_one_outline": (  # two diagonal pixels as one polygon through their shared corner
        [np.array([(1.5, 1.5), (1.5, 2.5), (2.5, 2.5), (2.5, 3.5), (3.5, 3.5), (3.5, 2.5), (2.5, 2.5), (2.5, 1.5)])],
        [(2, 2), (3, 3)],
    ),
    "full_frame": ([_box(0, 0, 9, 9)], [(r, c) for r in range(10) for c in range(10)]),
    "beyond_the_frame": (
        [np.array([(-5.5, -5.5), (-5.5, 3.5), (3.5, 3.5), (3.5, -5.5)])],
        [(r, c) for r in range(4) for c in range(4)],
    ),
}


@pytest.mark.parametrize("name", sorted(HAND_MADE))
def test_rasteriser_on_hand_made_polygons(name: str) -> None:
    """Pixel-edge polygons whose pixels are known: the rasteriser marks exactly those (and the brute-force loop
    agrees); pixel-edge polygons pass edge_following_problems, with no pixel centre on an edge."""
    polygons, cells = HAND_MADE[name]
    expected = np.zeros((10, 10), dtype=bool)
    for r, c in cells:
        expected[r, c] = True
    got = rt.even_odd(polygons, (10, 10))
    np.testing.assert_array_equal(got, expected, err_msg=name)
    np.testing.assert_array_equal(brute_force(polygons, (10, 10)), expected, err_msg=f"{name} (brute force)")
    np.testing.assert_array_equal(rt.even_odd(polygons, (10, 10), boundary="inside"), expected, err_msg=name)
    if name not in ("diagonal_one_outline", "beyond_the_frame"):
        for polygon in polygons:
            assert rt.edge_following_problems(polygon) == [], (name, polygon)
    assert not rt.on_edges(
        np.concatenate(polygons), np.concatenate([np.roll(p, -1, 0) for p in polygons]), (10, 10), 1e-3
    ).any()


def test_rasteriser_equals_brute_force_on_random_polygons() -> None:
    """Random polygons (generic vertices, self-intersecting, several per frame): even_odd equals the brute-force
    even-odd loop everywhere, on and off the frame."""
    rng = np.random.default_rng(3)
    for trial in range(40):
        shape = (int(rng.integers(3, 17)), int(rng.integers(3, 17)))
        polygons = [
            rng.uniform(-2, max(shape) + 2, (int(rng.integers(3, 12)), 2)) for _ in range(int(rng.integers(1, 4)))
        ]
        np.testing.assert_array_equal(rt.even_odd(polygons, shape), brute_force(polygons, shape), err_msg=str(trial))


def test_rasteriser_boundary_inside_is_for_centre_contours() -> None:
    """Polygons through pixel centres (as OpenCV's findContours draws them): with boundary='inside' the pixels on
    the outline count, a hole traced through its rim's centres keeps its rim."""
    outer = np.array([(1, 1), (1, 6), (6, 6), (6, 1)], dtype=float)  # pixels 1..6 x 1..6, through their centres
    hole = np.array([(2, 2), (2, 5), (5, 5), (5, 2)], dtype=float)  # the rim of a hole of pixels 3..4 x 3..4
    got = rt.even_odd([outer, hole], (8, 8), boundary="inside")
    expected = np.zeros((8, 8), dtype=bool)
    expected[1:7, 1:7] = True
    expected[3:5, 3:5] = False
    np.testing.assert_array_equal(got, expected)
    line = np.array([(3, 1), (3, 5)], dtype=float)  # a one-pixel-wide line: a degenerate polygon
    assert rt.even_odd([line], (8, 8), boundary="inside").sum() == 5
    assert rt.even_odd([line], (8, 8)).sum() == 0


def test_edge_following_problems_are_found() -> None:
    square = _box(2, 2, 4, 4)
    assert rt.edge_following_problems(square) == []
    assert any("collinear" in p for p in rt.edge_following_problems(np.insert(square, 1, (1.5, 3.5), axis=0)))
    assert any("repeated" in p for p in rt.edge_following_problems(np.insert(square, 1, square[0], axis=0)))
    assert any("corner" in p for p in rt.edge_following_problems(square + 0.2))
    diamond = np.array([(0.5, 2.5), (2.5, 4.5), (4.5, 2.5), (2.5, 0.5)])
    assert any("not along" in p for p in rt.edge_following_problems(diamond))
    assert any("repeated" in p for p in rt.edge_following_problems(np.vstack([square, square[:1]])))  # closed twice


def test_plane_inversion_round_trips_and_catches_points_off_the_plane() -> None:
    """to_pixels inverts DICOM's pixel-to-patient mapping on a double-oblique, anisotropic frame; a point moved
    0.01 mm along the normal is 0.01 mm off the plane."""

    @dataclass
    class Frame:
        position: np.ndarray
        orientation: np.ndarray
        spacing: np.ndarray
        rows: int = 30
        columns: int = 50

    from phantoms import rotated_orientation

    frame = Frame(np.array([-12.3, 45.6, -7.8]), np.array(rotated_orientation(0.4, -0.3, 0.25)), np.array([0.7, 1.3]))
    rc = np.array([[-0.5, -0.5], [0.0, 0.0], [12.5, 7.5], [29.5, 49.5]])
    points = rt.from_pixels(rc, frame)
    centres = seg_readers.pixel_centres(frame.position, frame.orientation, frame.spacing, frame.rows, frame.columns)
    np.testing.assert_allclose(points[1], centres[0, 0], atol=1e-12)
    np.testing.assert_allclose(points[2], (centres[12, 7] + centres[13, 8]) / 2, atol=1e-12)  # a pixel corner
    back, off = rt.to_pixels(points, frame)
    np.testing.assert_allclose(back, rc, atol=1e-9)
    assert np.abs(off).max() < 1e-9
    normal = np.cross(frame.orientation[:3], frame.orientation[3:])
    _, off = rt.to_pixels(points + 0.01 * normal, frame)
    np.testing.assert_allclose(off, 0.01, atol=1e-9)


def test_huge_outline_expectation_by_hand() -> None:
    """The huge case's expectations, checked without SegAlign: its outline written out here from the column runs
    (down the left side, along the bottom, up the right, back along the top) has 4 * 1200 corners, runs along pixel
    edges with no collinear points, and rasterises to the painted region."""
    region = huge_labels()[1] == 1
    top = region.argmax(axis=0)
    bottom = region.shape[0] - 1 - region[::-1].argmax(axis=0)
    columns = np.arange(HUGE_COLUMNS)
    outline = [(top[0] - 0.5, -0.5), (bottom[0] + 0.5, -0.5)]
    for c in columns:  # along the bottom, left to right
        outline += [(bottom[c] + 0.5, c - 0.5), (bottom[c] + 0.5, c + 0.5)]
    outline.append((top[-1] - 0.5, HUGE_COLUMNS - 0.5))
    for c in columns[::-1]:  # along the top, right to left
        outline += [(top[c] - 0.5, c + 0.5), (top[c] - 0.5, c - 0.5)]
    polygon = np.array(outline)
    keep = np.ones(len(polygon), dtype=bool)  # drop repeated points
    keep[1:] = np.any(np.diff(polygon, axis=0) != 0, axis=1)
    polygon = polygon[keep]
    if np.array_equal(polygon[0], polygon[-1]):
        polygon = polygon[:-1]
    assert rt.edge_following_problems(polygon) == []
    assert len(polygon) == 4 * HUGE_COLUMNS
    np.testing.assert_array_equal(rt.even_odd([polygon], region.shape), region)


def _rtutils_from_truth(exported_case: Case, path: Path, values: dict[int, str]) -> tuple[Path, list[str]]:
    """rt-utils' RTSTRUCT made from the truth masks themselves (no resampling involved)."""
    rt_utils = need_rtutils()
    import contextlib
    import io

    frames = source_frames(exported_case.dicom)
    with contextlib.redirect_stdout(io.StringIO()):
        builder = rt_utils.RTStructBuilder.create_new(str(exported_case.dicom))
        order = [(str(ds.SOPInstanceUID), 1) for ds in builder.series_data]
        truth = np.stack([exported_case.truth(frames[key]) for key in order], axis=-1)  # (rows, columns, slices)
        for value, name in sorted(values.items()):
            builder.add_roi(mask=truth == value, name=name)
        builder.save(str(path))
    return path, [uid for uid, _ in order]


def test_readers_on_rtutils_rtstruct(tmp_path: Path) -> None:
    """rt-utils writes an RTSTRUCT from the phantom's own masks on a plain axial series (its contours run through
    boundary pixel centres): rasterised with boundary='inside', every ROI equals its mask on every frame; every point
    lies in its frame's plane; dicompyler-core and rt-utils read the names back; and the raw DS walk finds rt-utils'
    DS values longer than 16 characters (the DS check has teeth)."""
    need_rtutils()
    case = build("axial_las", tmp_path / "axial")
    frames = source_frames(case.dicom)
    names = {1: "big", 2: "left_blob", 7: "tilted_rod"}
    path, _ = _rtutils_from_truth(case, tmp_path / "rtutils.dcm", names)
    _, rois = rt.read_rtstruct(path)
    assert [roi.name for roi in rois.values()] == ["big", "left_blob", "tilted_rod"]
    masks = rt.rtstruct_masks(rois, frames, boundary="inside", plane_tolerance=PLANE_TOLERANCE)
    truth = {key: case.truth(frame) for key, frame in frames.items()}
    images = rt.label_images(masks, {1: 1, 2: 2, 3: 7}, frames)
    assert sum(int(t.any()) for t in truth.values()) >= 10
    assert_frames_equal("rt-utils from truth", frames, images, truth, name="rt-utils RTSTRUCT")
    # without boundary='inside' the outline pixels are lost: the convention matters, and is what differs
    plain = rt.label_images(
        rt.rtstruct_masks(rois, frames, plane_tolerance=PLANE_TOLERANCE), {1: 1, 2: 2, 3: 7}, frames
    )
    assert sum(int((plain[k] != truth[k]).sum()) for k in frames) > 100

    long_values = [v for _, raw in rt.raw_decimal_strings(path) for v in raw.rstrip(b" \0").split(b"\\") if len(v) > 16]
    assert long_values, "rt-utils writes str(float) DS values; the raw walk must see them"

    if importable("dicompylercore"):
        structures, coordinates = rt.dicompyler_read(path)
        assert {n: s["name"] for n, s in structures.items()} == {1: "big", 2: "left_blob", 3: "tilted_rod"}
        for number, roi in rois.items():
            expected: dict[str, int] = {}
            for contour in roi.contours:
                key = rt.dicompyler_plane_key(contour.points)
                expected[key] = expected.get(key, 0) + 1
            assert {k: len(v) for k, v in coordinates[number].items()} == expected
    assert rt.rtutils_names(case.dicom, path) == ["big", "left_blob", "tilted_rod"]

    # teeth: a contour referencing the neighbouring frame is caught by the plane check
    dataset = pydicom.dcmread(path)
    contours = dataset.ROIContourSequence[0].ContourSequence
    contours[0].ContourImageSequence[0].ReferencedSOPInstanceUID = (
        contours[-1].ContourImageSequence[0].ReferencedSOPInstanceUID
    )
    dataset.save_as(tmp_path / "moved.dcm")
    with pytest.raises(rt.ContourError, match="off the plane"):
        rt.place_contours(rt.read_rtstruct(tmp_path / "moved.dcm")[1], frames, plane_tolerance=PLANE_TOLERANCE)


# --------------------------------------------------------------------------------------------------------------------
# 2. SegAlign's RTSTRUCT on the phantoms and shapes, frame by frame
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", FRAME_CASES)
def test_rtstruct_frames_equal_truth(exports, case: str) -> None:
    """Every contour in its frame's plane and along pixel edges; every ROI on every frame, rasterised here, equals
    the truth mask of its label (analytic, SimpleITK, or painted) and the export's labels/*.png; contours exactly
    on the frames where the label is."""
    exported = exports(case)
    frames = exported.frames()
    truth = exported.truth()
    assert sum(int(t.any()) for t in truth.values()) >= exported.case.min_labelled_frames, "the truth must have labels"
    pngs = exported.pngs()
    assert_frames_equal(case, frames, pngs, truth, name="labels/*.png")
    check_rtstruct(case, exported.rtstruct, frames, truth, exported.values(), pngs)


def _raw_ds_problems(path: Path) -> tuple[int, list[str]]:
    """How many DS values the file holds, and those longer than 16 characters or not decimal strings."""
    problems, count = [], 0
    for keyword, raw in rt.raw_decimal_strings(path):
        text = raw.rstrip(b" \0")  # the element's even-length padding
        if not text:
            continue
        for value in text.split(b"\\"):
            count += 1
            if len(value) > 16 or not DS_PATTERN.match(value):
                problems.append(f"{keyword}: {value!r} ({len(value)} characters)")
    return count, problems


STRUCTURE_CASES = [
    "axial_las",
    "double_oblique",
    "gantry_tilt",
    "anisotropic",
    "enhanced",
    "feet_first",
    "labels_117",
    "shapes",
    "huge",
]


@pytest.mark.parametrize("case", STRUCTURE_CASES)
def test_rtstruct_structure(exports, case: str) -> None:
    """SOP class and Implicit VR Little Endian; one ROI per label present on some frame, numbered 1..n by ascending
    label value, named and coloured from labels.json, AUTOMATIC; the frame of reference chain listing every source
    image; each contour's reference (SOP class and instance, frame number for a multi-frame source) and its
    ContourImageSequence naming one image; Type 2 attributes present; patient and study copied, new series and
    instance; every DS value at most 16 characters (raw text); export.json's outputs."""
    exported = exports(case)
    frames = exported.frames()
    entries = exported.entries()
    dataset, rois = rt.read_rtstruct(exported.rtstruct)
    source = pydicom.dcmread(next(iter(frames.values())).path, stop_before_pixels=True)

    assert dataset.SOPClassUID == rt.RT_STRUCTURE_SET_STORAGE == dataset.file_meta.MediaStorageSOPClassUID
    assert dataset.SOPInstanceUID == dataset.file_meta.MediaStorageSOPInstanceUID
    assert dataset.file_meta.TransferSyntaxUID == IMPLICIT_VR_LITTLE_ENDIAN, dataset.file_meta.TransferSyntaxUID
    assert dataset.Modality == "RTSTRUCT"
    assert str(dataset.get("StructureSetLabel", "")).strip(), "StructureSetLabel is Type 1"

    # ROIs: 1..n in ascending label value, names and colours from labels.json
    assert list(rois) == list(range(1, len(entries) + 1)), list(rois)[:10]
    for number, entry in zip(rois, entries):
        roi = rois[number]
        assert roi.name == entry["name"], (number, roi.name, entry["name"])
        assert roi.color == tuple(int(v) for v in entry["color"]), (number, roi.color, entry["color"])
        assert roi.generation_algorithm == "AUTOMATIC", (number, roi.generation_algorithm)
        assert roi.frame_of_reference == str(source.FrameOfReferenceUID), number
        assert roi.contours, f"ROI {number} ({roi.name}) has no contours"
        assert roi.interpreted_type is not None and roi.interpreter is not None, f"ROI {number}: Type 2 missing"
    observations = dataset.RTROIObservationsSequence
    assert sorted(int(item.ReferencedROINumber) for item in observations) == list(rois)
    assert len({int(item.ObservationNumber) for item in observations}) == len(observations)

    # The frame of reference chain: one frame of reference, one study, one series, every source image listed.
    (reference,) = dataset.ReferencedFrameOfReferenceSequence
    assert reference.FrameOfReferenceUID == source.FrameOfReferenceUID
    (study,) = reference.RTReferencedStudySequence
    assert study.ReferencedSOPInstanceUID == source.StudyInstanceUID
    assert re.fullmatch(r"[0-9]+(\.[0-9]+)+", str(study.ReferencedSOPClassUID))
    (series,) = study.RTReferencedSeriesSequence
    assert series.SeriesInstanceUID == source.SeriesInstanceUID
    listed = series.ContourImageSequence
    classes = {frame.uid: frame.sop_class for frame in frames.values()}
    assert {str(item.ReferencedSOPInstanceUID) for item in listed} == set(classes)
    for item in listed:
        assert item.ReferencedSOPClassUID == classes[item.ReferencedSOPInstanceUID]
        if "ReferencedFrameNumber" in item:
            count = next(f.frames_in_file for f in frames.values() if f.uid == item.ReferencedSOPInstanceUID)
            numbers = item.ReferencedFrameNumber
            numbers = [numbers] if isinstance(numbers, int) else list(numbers)
            assert all(1 <= int(n) <= count for n in numbers), numbers

    # Each contour: one contour image, its own frame (checked in the plane by place_contours), SOP class right.
    multi = any(frame.frames_in_file > 1 for frame in frames.values())
    for roi in rois.values():
        for contour in roi.contours:
            assert len(contour.references) == 1, (roi.number, contour.index, contour.references)
            uid, number = contour.references[0]
            assert contour.sop_classes == [classes[uid]]
            if multi:
                assert number is not None, f"ROI {roi.number} contour {contour.index}: no ReferencedFrameNumber"
    rt.place_contours(rois, frames, plane_tolerance=PLANE_TOLERANCE)

    # Type 2 attributes (present, maybe empty) of the RTSTRUCT IOD's modules.
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",  # Patient
        "StudyDate",
        "StudyTime",
        "ReferringPhysicianName",
        "StudyID",
        "AccessionNumber",  # General Study
        "SeriesNumber",
        "OperatorsName",  # RT Series
        "Manufacturer",  # General Equipment
        "StructureSetDate",
        "StructureSetTime",  # Structure Set
    ):
        assert keyword in dataset, f"Type 2 attribute {keyword} missing"
    for item in dataset.StructureSetROISequence:
        assert "ROIName" in item and "ROIGenerationAlgorithm" in item
    for item in dataset.RTROIObservationsSequence:
        assert "RTROIInterpretedType" in item and "ROIInterpreter" in item

    # Identity: copied from the source, new series and instance.
    for keyword in (
        "PatientName",
        "PatientID",
        "StudyInstanceUID",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyID",
    ):
        if str(source.get(keyword, "") or ""):
            assert str(dataset.get(keyword, "")) == str(source.get(keyword)), keyword
    assert dataset.SeriesInstanceUID != source.SeriesInstanceUID
    assert dataset.SOPInstanceUID not in classes
    for uid in (dataset.SeriesInstanceUID, dataset.SOPInstanceUID):
        assert re.fullmatch(r"[0-9]+(\.[0-9]+)+", str(uid)) and len(str(uid)) <= 64, uid

    count, problems = _raw_ds_problems(exported.rtstruct)
    assert count >= sum(3 * len(c.points) for roi in rois.values() for c in roi.contours)
    assert not problems, f"{case}: DS values that are too long or not decimal strings:\n" + "\n".join(problems[:8])

    assert exported.export_json().get("outputs") == {"rtstruct": "rtstruct.dcm"}


def test_checks_detect_tampering(exports, tmp_path: Path) -> None:
    """The checks have teeth: SegAlign's shapes RTSTRUCT with a hole's contour dropped, one corner moved by a pixel,
    every point moved by half a pixel, a contour pointed at the next frame, two ROI names swapped, or a collinear
    point added no longer passes check_rtstruct (or the name check)."""
    exported = exports("shapes")
    frames, truth, values, pngs = exported.frames(), exported.truth(), exported.values(), exported.pngs()
    check_rtstruct("untouched", exported.rtstruct, frames, truth, values, pngs)

    def tampered(name: str, change: Callable[[pydicom.Dataset], None]) -> Path:
        dataset = pydicom.dcmread(exported.rtstruct)
        change(dataset)
        dataset.save_as(tmp_path / name)
        return tmp_path / name

    def first_roi(dataset: pydicom.Dataset) -> pydicom.Sequence:
        return dataset.ROIContourSequence[0].ContourSequence

    def drop_hole(dataset: pydicom.Dataset) -> None:
        contours = first_roi(dataset)
        by_frame: dict[str, list[int]] = {}
        for index, contour in enumerate(contours):
            by_frame.setdefault(contour.ContourImageSequence[0].ReferencedSOPInstanceUID, []).append(index)
        with_three = next(indices for indices in by_frame.values() if len(indices) == 3)
        del contours[with_three[1]]

    def move_corner(dataset: pydicom.Dataset) -> None:
        contour = first_roi(dataset)[0]
        uid = contour.ContourImageSequence[0].ReferencedSOPInstanceUID
        frame = frames[(uid, 1)]
        data = [float(v) for v in contour.ContourData]
        data[0:3] = (np.array(data[0:3]) + frame.orientation[:3] * frame.spacing[1]).tolist()
        contour.ContourData = [f"{v:.6g}" for v in data]

    def move_all(dataset: pydicom.Dataset) -> None:
        for item in dataset.ROIContourSequence:
            for contour in item.ContourSequence:
                uid = contour.ContourImageSequence[0].ReferencedSOPInstanceUID
                frame = frames[(uid, 1)]
                points = np.array([float(v) for v in contour.ContourData]).reshape(-1, 3)
                points += frame.orientation[3:] * frame.spacing[0] / 2
                contour.ContourData = [f"{v:.6g}" for v in points.ravel()]

    def next_frame(dataset: pydicom.Dataset) -> None:
        body = next(number for number, value in values.items() if value == 5)  # on two neighbouring frames
        (item,) = [item for item in dataset.ROIContourSequence if int(item.ReferencedROINumber) == body]
        contours = item.ContourSequence
        uids = [c.ContourImageSequence[0].ReferencedSOPInstanceUID for c in contours]
        other = next(uid for uid in uids if uid != uids[0])
        contours[0].ContourImageSequence[0].ReferencedSOPInstanceUID = other

    def collinear(dataset: pydicom.Dataset) -> None:
        contour = first_roi(dataset)[0]
        points = np.array([float(v) for v in contour.ContourData]).reshape(-1, 3)
        middle = (points[0] + points[1]) / 2
        contour.ContourData = [f"{v:.6g}" for v in np.vstack([points[:1], middle, points[1:]]).ravel()]
        contour.NumberOfContourPoints = len(points) + 1

    for name, change, pattern in [
        ("dropped.dcm", drop_hole, "pixels differ"),
        ("corner.dcm", move_corner, "not along pixel edges|pixels differ"),
        ("half_pixel.dcm", move_all, "not a pixel corner"),
        ("next_frame.dcm", next_frame, "off the plane"),
        ("collinear.dcm", collinear, "collinear"),
    ]:
        with pytest.raises(AssertionError, match=pattern):
            check_rtstruct(name, tampered(name, change), frames, truth, values, pngs)

    def swap_names(dataset: pydicom.Dataset) -> None:
        first, second = dataset.StructureSetROISequence[0], dataset.StructureSetROISequence[1]
        first.ROIName, second.ROIName = second.ROIName, first.ROIName

    _, rois = rt.read_rtstruct(tampered("names.dcm", swap_names))
    assert [roi.name for roi in rois.values()] != [entry["name"] for entry in exported.entries()]


def _contours_on(rois: dict, frames: dict, truth: dict, frame_index: int, value: int, values: dict[int, int]):
    """The contours of the ROI of label ``value`` on the painted frame ``frame_index`` (frames of the shapes series
    are found through the truth, which is indexed by position)."""
    number = next(n for n, v in values.items() if v == value)
    placed = rt.place_contours({number: rois[number]}, frames, plane_tolerance=PLANE_TOLERANCE)
    target = [key for key in frames if np.array_equal(truth[key], shapes_labels()[frame_index])]
    assert len(target) == 1
    return [item for item in placed if item.key == target[0]], frames[target[0]]


def test_shapes_contours(exports) -> None:
    """Holes and islands are separate contours; a ring is two; one-pixel islands (on the frame's corners too) are
    4-point contours at the pixel's corners; a frame labelled everywhere is one 4-point contour around the frame,
    and with a hole in it, two."""
    exported = exports("shapes")
    frames, truth, values = exported.frames(), exported.truth(), exported.values()
    _, rois = rt.read_rtstruct(exported.rtstruct)
    assert sorted(values.values()) == [1, 2, 3, 4, 5, 6]

    def corners(item) -> set[tuple[float, float]]:
        return {(round(float(r), 3), round(float(c), 3)) for r, c in item.rc}

    hole, _ = _contours_on(rois, frames, truth, 1, 1, values)
    assert len(hole) == 3 and all(len(item.rc) == 4 for item in hole), [len(i.rc) for i in hole]
    assert {frozenset(corners(item)) for item in hole} == {
        frozenset({(4.5, 4.5), (4.5, 24.5), (24.5, 24.5), (24.5, 4.5)}),
        frozenset({(9.5, 9.5), (9.5, 19.5), (19.5, 19.5), (19.5, 9.5)}),
        frozenset({(12.5, 12.5), (12.5, 16.5), (16.5, 16.5), (16.5, 12.5)}),
    }
    ring, _ = _contours_on(rois, frames, truth, 1, 2, values)
    assert len(ring) == 2, len(ring)
    islands, _ = _contours_on(rois, frames, truth, 2, 3, values)
    assert len(islands) == 7 and all(len(item.rc) == 4 for item in islands), [len(i.rc) for i in islands]
    assert {(round(float(item.rc[:, 0].mean()), 3), round(float(item.rc[:, 1].mean()), 3)) for item in islands} == {
        (0.0, 0.0),
        (0.0, 39.0),
        (39.0, 0.0),
        (39.0, 39.0),
        (5.0, 20.0),
        (20.0, 33.0),
        (33.0, 20.0),
    }
    diagonal, frame = _contours_on(rois, frames, truth, 2, 4, values)
    assert diagonal and rt.even_odd([i.rc for i in diagonal], (frame.rows, frame.columns)).sum() == 18 + 2
    (full,), frame = _contours_on(rois, frames, truth, 3, 5, values)
    assert corners(full) == {(-0.5, -0.5), (-0.5, 39.5), (39.5, 39.5), (39.5, -0.5)}, full.rc
    assert len(full.rc) == 4
    # the points themselves: the frame's outer corners in patient space
    centres = frame.centres()
    outer = {tuple(np.round(p, 4)) for p in full.contour.points}
    half_row = frame.orientation[3:] * frame.spacing[0] / 2
    half_column = frame.orientation[:3] * frame.spacing[1] / 2
    expected = {
        tuple(np.round(centres[0, 0] - half_row - half_column, 4)),
        tuple(np.round(centres[0, -1] - half_row + half_column, 4)),
        tuple(np.round(centres[-1, -1] + half_row + half_column, 4)),
        tuple(np.round(centres[-1, 0] + half_row - half_column, 4)),
    }
    assert outer == expected, (outer, expected)
    body_with_hole, _ = _contours_on(rois, frames, truth, 4, 5, values)
    assert len(body_with_hole) == 2 and all(len(item.rc) == 4 for item in body_with_hole)
    (organ,), _ = _contours_on(rois, frames, truth, 4, 1, values)
    assert corners(organ) == {(11.5, 7.5), (11.5, 29.5), (19.5, 29.5), (19.5, 7.5)}
    concave, _ = _contours_on(rois, frames, truth, 5, 6, values)
    assert sorted(len(item.rc) for item in concave) == [6, 8, 12], [len(i.rc) for i in concave]


def test_huge_contour_is_read_back_intact(exports) -> None:
    """One jagged outline of 4 * 1200 corner points: its ContourData is over 64 KiB (more than an explicit-VR DS can
    hold, hence Implicit VR), pydicom reads every value back, and it rasterises to the painted region."""
    exported = exports("huge")
    dataset, rois = rt.read_rtstruct(exported.rtstruct)
    assert dataset.file_meta.TransferSyntaxUID == IMPLICIT_VR_LITTLE_ENDIAN
    (roi,) = rois.values()
    (contour,) = roi.contours
    assert contour.number_of_points == len(contour.points) == 4 * HUGE_COLUMNS
    lengths = rt.raw_element_lengths(exported.rtstruct, "ContourData")
    assert max(lengths) > 65535, lengths
    raw = next(raw for keyword, raw in rt.raw_decimal_strings(exported.rtstruct) if keyword == "ContourData")
    assert len(raw) == max(lengths)
    parsed = np.array([float(v) for v in raw.rstrip(b" \0").split(b"\\")])
    np.testing.assert_array_equal(parsed, contour.points.ravel())
    # done by test_rtstruct_frames_equal_truth too, repeated here for the one frame
    frames, truth = exported.frames(), exported.truth()
    key = contour.frame_key()
    (placed,) = rt.place_contours(rois, frames, plane_tolerance=PLANE_TOLERANCE)
    np.testing.assert_array_equal(rt.even_odd([placed.rc], (HUGE_ROWS, HUGE_COLUMNS)), truth[key] == 1)


# --------------------------------------------------------------------------------------------------------------------
# 3. Second readers: dicompyler-core and rt-utils; dciodvfy; the Python API and export.json
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["axial_las", "double_oblique", "enhanced", "shapes", "labels_117"])
def test_dicompyler_reads_every_roi(exports, case: str) -> None:
    """dicompyler-core's GetStructures names and colours every ROI as labels.json does; GetStructureCoordinates
    files as many contours under each plane key as pydicom finds, with the same points."""
    need_dicompyler()
    exported = exports(case)
    entries = exported.entries()
    _, rois = rt.read_rtstruct(exported.rtstruct)
    structures, coordinates = rt.dicompyler_read(exported.rtstruct)
    assert sorted(structures) == list(range(1, len(entries) + 1))
    for number, entry in zip(sorted(structures), entries):
        structure = structures[number]
        assert structure["name"] == entry["name"]
        assert structure["color"].tolist() == [int(v) for v in entry["color"]], (number, structure["color"])
        assert structure["empty"] is False
        expected: dict[str, list] = {}
        for contour in rois[number].contours:
            expected.setdefault(rt.dicompyler_plane_key(contour.points), []).append(contour)
        planes = coordinates[number]
        assert {k: len(v) for k, v in planes.items()} == {k: len(v) for k, v in expected.items()}, number
        for key, contours in expected.items():
            for plane, contour in zip(planes[key], contours):
                assert plane["type"] == "CLOSED_PLANAR"
                assert plane["num_points"] == len(contour.points)
                np.testing.assert_allclose(np.asarray(plane["data"], dtype=float), contour.points, atol=0)
    if case == "axial_las":  # axial frames: dicompyler's plane keys are the frames
        frames = exported.frames()
        truth = exported.truth()
        for number, value in exported.values().items():
            per_frame = {
                str(round(float(frame.position[2]), 2)) + "0"
                for key, frame in frames.items()
                if (truth[key] == value).any()
            }
            assert set(coordinates[number]) == per_frame


def test_rtutils_reads_names_and_masks_on_a_plain_axial_series(exports) -> None:
    """rt-utils reads every ROI name. Its masks (get_roi_mask_by_name rounds each vertex to the nearest pixel centre
    with numpy's round-half-to-even and fills with cv.fillPoly, edges included) hold every truth pixel and otherwise
    only pixels next to the truth's outline: SegAlign's corners are half-way between centres, so rt-utils' own
    reading grows each structure by up to one pixel (the known difference; counted here, not hidden)."""
    need_rtutils()
    exported = exports("axial_las")
    names = [entry["name"] for entry in exported.entries()]
    assert rt.rtutils_names(exported.case.dicom, exported.rtstruct) == names
    uids, masks = rt.rtutils_masks(exported.case.dicom, exported.rtstruct)
    assert sorted(masks) == sorted(names)
    truth = exported.truth()
    grown = total = 0
    for entry in exported.entries():
        mask = masks[entry["name"]]
        for index, uid in enumerate(uids):
            got = mask[:, :, index]
            expected = truth[(uid, 1)] == int(entry["value"])
            assert not (expected & ~got).any(), f"{entry['name']} on {uid}: rt-utils lost truth pixels"
            extra = got & ~expected
            assert not (extra & ~rt.mask_boundary_band(expected)).any(), f"{entry['name']}: extra pixels away"
            grown += int(extra.sum())
            total += int(expected.sum())
    assert grown > 0, "rt-utils' rounding of half-integer corners was expected to grow the masks"
    print(f"rt-utils' own masks: {grown} pixels beyond the truth's {total} (all next to its outline)")


@pytest.mark.parametrize("case", ["axial_las", "enhanced", "gantry_tilt", "labels_117", "shapes"])
def test_dciodvfy_rtstruct_has_no_errors_of_its_own(exports, case: str) -> None:
    """dciodvfy finds no error in the RTSTRUCT that it does not also find in its source instances."""
    need_dciodvfy()
    exported = exports(case)
    paths = {frame.path for frame in exported.frames().values()}
    allowed = {seg_readers.normalise_message(e) for path in paths for e in seg_readers.dciodvfy_errors(path)}
    errors = seg_readers.dciodvfy_errors(exported.rtstruct)
    extra = sorted({seg_readers.normalise_message(e) for e in errors} - allowed)
    assert not extra, f"{case}: dciodvfy errors of the RTSTRUCT's own:\n" + "\n".join(extra)


def test_python_api_writes_the_same_rtstruct(exports, tmp_path: Path) -> None:
    """``export_segmentation(..., ExportOptions(rtstruct=RtStructOptions()))`` writes rtstruct.dcm with the same
    contours as the command line (rasterised: the truth, on every frame)."""
    from segalign import export_segmentation, load_segmentation, scan_folder
    from segalign.options import ExportOptions, RtStructOptions

    cli = exports("double_oblique")
    series = scan_folder(cli.case.dicom).select()
    out = tmp_path / "api"
    export_segmentation(
        series,
        load_segmentation(cli.case.segmentation),
        out,
        ExportOptions(rtstruct=RtStructOptions()),
        dicom_root=cli.case.dicom,
    )
    check_rtstruct("api", out / "rtstruct.dcm", cli.frames(), cli.truth(), cli.values(), cli.pngs())
    _, from_cli = rt.read_rtstruct(cli.rtstruct)
    _, from_api = rt.read_rtstruct(out / "rtstruct.dcm")
    assert [(r.name, r.color, len(r.contours)) for r in from_cli.values()] == [
        (r.name, r.color, len(r.contours)) for r in from_api.values()
    ]
    assert json.loads((out / "export.json").read_text(encoding="utf-8")).get("outputs") == {"rtstruct": "rtstruct.dcm"}


def test_rtstruct_and_dicom_seg_together(exports, tmp_path: Path) -> None:
    """--rtstruct with --dicom-seg writes both, and export.json lists both."""
    cli = exports("axial_las")
    out = tmp_path / "both"
    run = run_cli("export", cli.case.dicom, cli.case.segmentation, "-o", out, "-q", "--rtstruct", "--dicom-seg")
    assert run.code == 0, run.stderr
    outputs = json.loads((out / "export.json").read_text(encoding="utf-8")).get("outputs")
    assert outputs == {"dicom_seg": "seg.dcm", "rtstruct": "rtstruct.dcm"}, outputs
    assert (out / "seg.dcm").is_file() and (out / "rtstruct.dcm").is_file()
    check_rtstruct("both", out / "rtstruct.dcm", cli.frames(), cli.truth(), cli.values(), cli.pngs())


def test_help_lists_rtstruct() -> None:
    run = run_cli("export", "--help")
    assert run.code == 0 and "--rtstruct" in run.stdout


# --------------------------------------------------------------------------------------------------------------------
# 4. Real series: the RTSTRUCT against SimpleITK resampling (one test per series)
# --------------------------------------------------------------------------------------------------------------------


def _real(dicom: Path, segmentation: Path, out: Path) -> Path:
    run = run_cli("export", dicom, segmentation, "-o", out, "-q", "--rtstruct")
    assert run.code == 0, f"export failed ({run.code}): {run.stderr}"
    assert (out / "rtstruct.dcm").is_file()
    return out


def _check_real(where: str, dicom: Path, out: Path, oracle: Callable[[SourceFrame], np.ndarray], min_labelled: int):
    frames = source_frames(dicom)
    truth = {key: oracle(frame) for key, frame in frames.items()}
    assert sum(int(t.any()) for t in truth.values()) >= min_labelled
    entries = sorted(
        (e for e in json.loads((out / "labels.json").read_text(encoding="utf-8")) if int(e["frames"]) > 0),
        key=lambda e: int(e["value"]),
    )
    values = {number: int(entry["value"]) for number, entry in enumerate(entries, start=1)}
    pngs = {
        (row["sop_instance_uid"], int(row["frame"])): read_png(out / row["label_png"]) for row in read_manifest(out)
    }
    assert_frames_equal(where, frames, pngs, truth, name="labels/*.png")
    rois, _ = check_rtstruct(where, out / "rtstruct.dcm", frames, truth, values, pngs)
    assert [roi.name for roi in rois.values()] == [entry["name"] for entry in entries]
    _, problems = _raw_ds_problems(out / "rtstruct.dcm")
    assert not problems, f"{where}: DS values too long:\n" + "\n".join(problems[:8])
    return frames, rois


def _gdcm_oracle(segmentation_path: Path) -> Callable[[SourceFrame], np.ndarray]:
    sitk = need_sitk()
    segmentation = sitk.ReadImage(str(segmentation_path))

    def oracle(frame: SourceFrame) -> np.ndarray:
        reference = sitk.ReadImage(str(frame.path))
        resampled = sitk.Resample(
            segmentation, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, segmentation.GetPixelID()
        )
        return sitk.GetArrayFromImage(resampled)[0]

    return oracle


def testtotalsegmentator_example_rtstruct_equals_simpleitk(testdata: Path, tmp_path: Path) -> None:
    """TotalSegmentator CT (JPEG 2000, blank dataset UIDs) and its 31-label segmentation: every ROI on every frame
    equals ITK's resampling of the NIfTI onto the frame as GDCM reads it; contours reference each file by its file
    meta SOPInstanceUID (the manifest's)."""
    base = totalsegmentator_example()
    out = _real(base / "ct_dicom", base / "segmentation_ml.nii.gz", tmp_path / "out")
    frames, rois = _check_real(
        "totalsegmentator", base / "ct_dicom", out, _gdcm_oracle(base / "segmentation_ml.nii.gz"), min_labelled=15
    )
    assert len(rois) >= 20 and "liver" in [roi.name for roi in rois.values()]
    meta = {frame.uid for frame in frames.values()}
    assert {c.references[0][0] for roi in rois.values() for c in roi.contours} <= meta
    if seg_readers.dciodvfy() is not None:
        paths = {frame.path for frame in frames.values()}
        allowed = {seg_readers.normalise_message(e) for path in paths for e in seg_readers.dciodvfy_errors(path)}
        errors = {seg_readers.normalise_message(e) for e in seg_readers.dciodvfy_errors(out / "rtstruct.dcm")}
        assert not sorted(errors - allowed), sorted(errors - allowed)


def test_ge_tilt_rtstruct_equals_simpleitk(testdata: Path, tmp_path: Path) -> None:
    """GE head CT, 18.5 degree gantry tilt, uneven gaps; the tilt-corrected dcm2niix volume thresholded at -200.5 and
    300.5 HU as segmentation: every ROI on every frame equals ITK's resampling onto the frame as GDCM reads it."""
    need_sitk()
    base = require(testdata / "dcm_qa_ct_ge_tilt")
    dicom = require(base / "dicom")
    reference = nib.load(str(require(base / "ref_dcm2niix" / "_2_Tilt_Eq_1.nii.gz")))
    data = np.asanyarray(reference.dataobj)
    labels = (data > -200.5).astype(np.uint8) + (data > 300.5).astype(np.uint8)
    segmentation = save_like(labels, reference, tmp_path / "seg.nii.gz")
    out = _real(dicom, segmentation, tmp_path / "out")
    _, rois = _check_real("ge_tilt", dicom, out, _gdcm_oracle(segmentation), min_labelled=25)
    assert len(rois) == 2


def _box_mean(volume: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2 radius + 1)^3 box, edges replicated."""
    padded = np.pad(volume, radius, mode="edge")
    total = np.zeros_like(volume)
    offsets = range(-radius, radius + 1)
    for a in offsets:
        for b in offsets:
            for c in offsets:
                total += padded[
                    radius + a : radius + a + volume.shape[0],
                    radius + b : radius + b + volume.shape[1],
                    radius + c : radius + c + volume.shape[2],
                ]
    return total / (2 * radius + 1) ** 3


def test_canon_enhanced_rtstruct_equals_simpleitk(testdata: Path, tmp_path: Path) -> None:
    """Canon double-oblique DTI as one enhanced file of 520 frames (13 volumes at 40 positions); dcm2niix's first
    volume, smoothed (5 x 5 x 5 box: the raw DTI thresholded gives ~13 000 noise islands, pydicom alone then takes a
    minute to read them) and thresholded: every ROI on every frame (ReferencedFrameNumber = the source frame) equals
    ITK's resampling onto a one-frame reference built from that frame's functional groups."""
    need_sitk()
    base = require(testdata / "dcm_qa_canon_sag_oblique")
    dicom = require(base / "enhanced")
    reference = nib.load(str(require(base / "ref_dcm2niix" / "11000_SAG_DTI_PA-ALL_20d_enh.nii.gz")))
    volume0 = np.asanyarray(reference.dataobj)[..., 0]
    smooth = _box_mean(volume0.astype(float), 2)
    thresholds = np.quantile(smooth, [0.6, 0.9])
    labels = (smooth > thresholds[0]).astype(np.uint8) + (smooth > thresholds[1]).astype(np.uint8)
    segmentation = save_like(
        labels, nib.Nifti1Image(volume0, reference.affine, header=reference.header), tmp_path / "seg.nii.gz"
    )
    out = _real(dicom, segmentation, tmp_path / "out")
    itk = itk_from_nifti(segmentation)
    _, rois = _check_real("canon", dicom, out, lambda frame: itk_on_frame(itk, frame), min_labelled=100)
    assert all(c.references[0][1] is not None for roi in rois.values() for c in roi.contours)


# --------------------------------------------------------------------------------------------------------------------
# 5. Side by side: rt-utils' RTSTRUCT made the way its users make one
# --------------------------------------------------------------------------------------------------------------------


def _nearest_frame(points: np.ndarray, frames: dict, candidates: list) -> tuple[tuple[str, int], float]:
    """The frame whose plane is nearest to the contour's points (mean distance along its normal), as readers that
    match contours to slices by position do, and that distance."""
    best, distance = None, math.inf
    for key in candidates:
        _, off = rt.to_pixels(points, frames[key])
        d = abs(float(off.mean()))
        if d < distance:
            best, distance = key, d
    return best, distance


@pytest.mark.parametrize("case", ["tilt_orthonormal", "missing_slice", "missing_slice_fine"])
def test_side_by_side_with_rtutils(exports, tmp_path: Path, case: str) -> None:
    """A documented comparison. rt-utils' RTSTRUCT as its users make it: SimpleITK's ImageSeriesReader reads the
    series and the NIfTI is resampled onto that volume (nearest neighbour); RTStructBuilder.create_new and add_roi
    per label. rt-utils places every slice with one pixel-to-patient matrix from the first slice and the mean slice
    spacing along the normal (image_helper.get_pixel_to_patient_transformation_matrix).

    Both RTSTRUCTs are rasterised here (rt-utils' contours run through pixel centres: boundary='inside'; its points
    projected onto the plane they are meant for). Per frame: pixels differing from the truth on the frame each
    contour references, how far its points lie off that frame's plane, and pixels differing when each contour is
    put on the frame nearest to its points (as readers matching contours to slices by position do). SegAlign: none
    anywhere, every point within 1e-3 mm of its frame's plane. rt-utils (numbers from one run, printed by the test):
    on the tilted series, its contours slide along the frames (pixels differ on 15 of 15 labelled
    frames, 5 to 101 pixels each); with a missing slice, its points drift off their frames' planes by up to 0.75 mm
    (half the gap) on 14 or more frames; where the segmentation grid coincides with the frames, nearest-neighbour
    resampling happens to snap back onto the right slices and the pixels come out right; on a finer (0.5 mm)
    segmentation grid they are the pixels of the wrong positions (12 frames differ, by up to 39 pixels).
    """
    need_rtutils()
    need_sitk()
    exported = exports(case)
    frames = exported.frames()
    truth = exported.truth()
    names = {int(entry["value"]): entry["name"] for entry in exported.entries()}
    values = {name: value for value, name in names.items()}

    # SegAlign: exact on every frame, every point in its plane.
    check_rtstruct(case, exported.rtstruct, frames, truth, exported.values(), None)
    _, ours = rt.read_rtstruct(exported.rtstruct)
    ours_off = max(item.off_plane for item in rt.place_contours(ours, frames, plane_tolerance=None))
    assert ours_off <= PLANE_TOLERANCE

    path, itk_order, order = rt.rtutils_like_users(
        exported.case.dicom, exported.case.segmentation, names, tmp_path / "rtutils.dcm"
    )
    assert itk_order == order, "SimpleITK and rt-utils sort the slices the same way (else the masks land shuffled)"
    _, theirs = rt.read_rtstruct(path)
    roi_values = {number: values[roi.name] for number, roi in theirs.items()}
    keys = [(uid, 1) for uid in order]

    referenced = rt.label_images(
        rt.rtstruct_masks(theirs, frames, boundary="inside", plane_tolerance=None), roi_values, frames
    )
    off_plane: dict = {}
    moved: dict = {}
    for item in rt.place_contours(theirs, frames, plane_tolerance=None):
        off_plane[item.key] = max(off_plane.get(item.key, 0.0), item.off_plane)
        nearest, _ = _nearest_frame(item.contour.points, frames, keys)
        rc, _ = rt.to_pixels(item.contour.points, frames[nearest])
        moved.setdefault((item.contour.roi, nearest), []).append(rc)
    by_position = {
        number: {
            key: rt.even_odd(polys, (frames[key].rows, frames[key].columns), boundary="inside")
            for (n, key), polys in moved.items()
            if n == number
        }
        for number in theirs
    }
    nearest_images = rt.label_images(by_position, roi_values, frames)

    differ_referenced = [int((referenced[k] != truth[k]).sum()) for k in keys]
    differ_nearest = [int((nearest_images[k] != truth[k]).sum()) for k in keys]
    off = [round(off_plane.get(k, 0.0), 3) for k in keys]
    labelled = [int((truth[k] != 0).sum()) for k in keys]
    report = {
        "case": case,
        "frames (rt-utils order)": len(keys),
        "labelled pixels per frame": labelled,
        "rt-utils: pixels differing on the referenced frame": differ_referenced,
        "rt-utils: largest point distance from the referenced frame's plane (mm)": off,
        "rt-utils: pixels differing on the nearest frame": differ_nearest,
        "SegAlign: pixels differing": [0] * len(keys),
        "SegAlign: largest point distance from its frame's plane (mm)": ours_off,
    }
    (tmp_path / "comparison.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report))
    pixels_wrong = sum(1 for d in differ_referenced if d)
    off_plane_frames = sum(1 for o in off if o > PLANE_TOLERANCE)
    if case == "tilt_orthonormal":  # in their planes, slid along them
        assert pixels_wrong >= 10, report
    elif case == "missing_slice":  # off their planes; nearest-neighbour sampling of the coincident grid snaps
        # SimpleITK's evenly spaced slices back onto the right NIfTI slices, so the pixels happen to come out right
        assert max(off) > 0.5 and off_plane_frames >= 10, report
    else:  # missing_slice_fine: off their planes, and the pixels are those of the wrong positions
        assert max(off) > 0.5 and off_plane_frames >= 10, report
        assert pixels_wrong >= 5, report


# --------------------------------------------------------------------------------------------------------------------
# 6. Refusals: one error line, exit status 1, nothing left behind
# --------------------------------------------------------------------------------------------------------------------


def _assert_refused(tmp_path: Path, dicom: Path, segmentation: Path, pattern: str) -> None:
    plain = run_cli("export", dicom, segmentation, "-o", tmp_path / "plain", "-q")
    assert plain.code == 0, f"without --rtstruct the export works: {plain.stderr}"
    parent = tmp_path / "exports"
    parent.mkdir()
    before = snapshot(tmp_path / "dicom")
    run = run_cli("export", dicom, segmentation, "-o", parent / "out", "-q", "--rtstruct")
    assert run.code == 1, (run.code, run.stderr)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("segalign: error:"), run.stderr
    assert re.search(pattern, lines[0], re.IGNORECASE), lines[0]
    assert list(parent.iterdir()) == [] and leftovers(parent) == [], sorted(p.name for p in parent.iterdir())
    assert snapshot(tmp_path / "dicom") == before


def test_refused_without_frame_of_reference(tmp_path: Path) -> None:
    specs = stack((-20, -20, -10), 10, (0, 0, 1.5), rows=40, columns=40)
    for path in write_series(tmp_path / "dicom", specs):
        dataset = pydicom.dcmread(path)
        del dataset.FrameOfReferenceUID
        dataset.save_as(path)
    affine, shape = stack_affine(specs)
    segmentation = write_segmentation(tmp_path / "seg.nii.gz", PHANTOM, affine, shape)
    _assert_refused(tmp_path, tmp_path / "dicom", segmentation, r"frame ?of ?reference")


def test_refused_when_no_label_falls_on_a_frame(tmp_path: Path) -> None:
    """The segmentation's grid covers the series, but its only label lies beyond the last frame."""
    specs = stack((-20, -20, -10), 30, (0, 0, 1.5), rows=40, columns=40)
    affine, shape = stack_affine(specs)
    write_series(tmp_path / "dicom", specs[:20])
    labels = np.zeros(shape, dtype=np.uint8)
    labels[10:20, 10:20, 25:28] = 3
    segmentation = write_nifti(tmp_path / "seg.nii.gz", labels, affine)
    _assert_refused(tmp_path, tmp_path / "dicom", segmentation, r"label|segment|structure|contour")
