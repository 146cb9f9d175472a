"""Overlapping segments through every output, exact on every frame for every segment.

An analytic phantom of nested and crossing structures (a BODY holding an organ holding a tumour that pokes out of
it, a tilted rod crossing all of them and leaving the body, a structure of one pixel inside the organ) is written
as a folder of NIfTI masks, one per structure, on a grid whose voxel centres are the pixel centres of the series
(so nearest-neighbour sampling is exact and the truth at a pixel centre is the structure's own inequality there).
Three series: an axial one, a double-oblique one, and a tilted double-oblique one (frames stepped off their
normal, as a gantry tilt steps them), their grids stored permuted and flipped.

The truth is computed here, from the DICOM tags pydicom reads back (pixel centres by PS3.3 C.7.6.2.1.1) and the
structures' inequalities, never from SegAlign. Every output is read back by independent readers: the label PNG
layers with labels.json and manifest.csv, the masks, the statistics, the overlays (computed here exactly), the
BINARY SEG by highdicom, by pydicom alone and by dcmqi, the RTSTRUCT by the tests' own rasteriser; a LABELMAP SEG
is refused in one line when two segments share a pixel of a frame, and written when they never do; dcmqi's
``partial_overlaps.dcm`` goes through a BINARY export unchanged.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

import rt_readers
import seg_readers
from conftest import leftovers, read_manifest, read_png, require, run_cli, snapshot
from phantoms import rotated_orientation
from preview_cases import expected_overlay
from seg_cases import SourceFrame, importable, source_frames
from segalign.errors import MESSAGE_LIMIT
from segalign.export import export_problem
from segalign.synthetic import AXIAL, stack, write_series

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


# --------------------------------------------------------------------------------------------------------------------
# The phantom: ellipsoids in LPS millimetres, each a segment of its own (the inequality written out here)
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    name: str  #: the mask's file stem, which the folder reader makes the segment's name
    centre: tuple[float, float, float]
    radii: tuple[float, float, float]
    axes: tuple = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))  #: rows: the ellipsoid's axes in LPS

    def level(self, points: np.ndarray) -> np.ndarray:
        """``|R (x - centre) / radii|^2``: at most 1 inside."""
        local = (points - np.asarray(self.centre)) @ np.asarray(self.axes, float).T
        return np.sum((local / np.asarray(self.radii)) ** 2, axis=-1)

    def contains(self, points: np.ndarray) -> np.ndarray:
        return self.level(points) <= 1.0


def _tilted(a: float, b: float) -> np.ndarray:
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    return tuple(map(tuple, (ry @ rx).T))


def phantom(dot: tuple[float, float, float]) -> list[Shape]:
    """Mask files in name order (the folder reader's values 1, 2, ...): BODY around everything, an organ in it, a
    tumour crossing the organ's edge, a tilted rod crossing all three and leaving the body, and a dot of one pixel
    (centred on a pixel centre ``dot``, smaller than a pixel) inside the organ."""
    return [
        Shape("a_body", (0.3, -0.4, 0.2), (15.3, 12.7, 14.1)),
        Shape("b_organ", (-3.1, 1.2, -0.9), (7.3, 6.1, 8.2)),
        Shape("c_tumour", (-8.2, 2.9, 1.7), (3.3, 2.7, 3.9)),
        Shape("d_rod", (1.1, -0.7, 0.4), (1.9, 2.3, 19.7), _tilted(0.5, 0.3)),
        Shape("e_dot", dot, (0.41, 0.37, 0.43)),
    ]


#: name: (orientation, pixel spacing (row, column), rows, columns, frames, step off the normal (mm, along rows),
#: permutation and flips of the mask grid's axes)
GEOMETRIES = {
    "axial": (AXIAL, (0.9, 0.8), 40, 44, 16, 0.0, (0, 1, 2), (False, True, False)),
    "double_oblique": (rotated_orientation(-0.3, 0.4, 0.1), (0.8, 0.8), 42, 42, 16, 0.0, (1, 0, 2),
                       (False, False, True)),
    "tilted_oblique": (rotated_orientation(0.35, -0.45, 0.2), (0.85, 0.95), 38, 42, 16, 0.6, (2, 0, 1),
                       (True, False, True)),
}
STEP_ALONG_NORMAL = 1.9


@dataclass
class Case:
    root: Path
    dicom: Path
    masks: Path
    shapes: list[Shape]
    frames: dict[tuple[str, int], SourceFrame]  #: as pydicom reads them back
    instance: dict[tuple[str, int], int]  #: InstanceNumber of each frame
    tilt: float  #: mm the frames step along their rows from one to the next (0: a regular stack)

    def truth(self, key: tuple[str, int]) -> dict[int, np.ndarray]:
        """Segment value (1.. in file-name order) -> its pixels on the frame, from the frame's own tags."""
        centres = self.frames[key].centres()
        return {value: shape.contains(centres) for value, shape in enumerate(self.shapes, start=1)}


def build(root: Path, geometry: str, extra_grid_frames: int = 0, shapes=None) -> Case:
    """The series (InstanceNumber counting against the stack, file names not in order) and the mask folder on a
    grid that holds the stack's pixel centres as voxel centres (``extra_grid_frames`` more slices beyond it)."""
    orientation, spacing, rows, columns, count, tilt, permutation, flips = GEOMETRIES[geometry]
    iop = np.asarray(orientation, float)
    normal = np.cross(iop[:3], iop[3:])
    step = STEP_ALONG_NORMAL * normal + tilt * iop[3:]
    first = -(columns - 1) / 2 * spacing[1] * iop[:3] - (rows - 1) / 2 * spacing[0] * iop[3:] - (count - 1) / 2 * step
    specs = stack(first, count + extra_grid_frames, step, orientation=orientation, spacing=spacing, rows=rows,
                  columns=columns, instance_numbers=[200 - 3 * n for n in range(count + extra_grid_frames)])
    middle = specs[count // 2]
    dot = tuple(np.asarray(middle.position) + 17 * spacing[1] * iop[:3] + 15 * spacing[0] * iop[3:])
    shapes = shapes(dot) if shapes is not None else phantom(dot)

    def pixels(spec):  # CT values that follow the structures: 1024 + 60 per structure holding the pixel
        centres = spec.pixel_centres()
        return (1000 + 60 * sum(shape.contains(centres).astype(int) for shape in shapes)).astype(np.uint16)

    names = [f"{(7 * n) % count:03d}_{n}.dcm" for n in range(count)]
    dicom = root / "dicom"
    write_series(dicom, specs[:count], pixel_function=pixels, file_names=names)

    # The grid: axis 0 along columns, 1 along rows, 2 from frame to frame, then permuted and flipped.
    axes = [iop[:3] * spacing[1], iop[3:] * spacing[0], step]
    sizes = [columns, rows, count + extra_grid_frames]
    origin = np.asarray(first, float)
    for axis, flip in enumerate(flips):
        if flip:
            origin = origin + (sizes[axis] - 1) * axes[axis]
            axes[axis] = -axes[axis]
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ np.column_stack([axes[p] for p in permutation])
    affine[:3, 3] = LPS_TO_RAS @ origin
    shape = [sizes[p] for p in permutation]
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(float)
    voxels = (index @ affine[:3, :3].T + affine[:3, 3]) @ LPS_TO_RAS.T
    masks = root / "masks"
    masks.mkdir()
    for shape_ in shapes:
        level = shape_.level(voxels)
        assert np.min(np.abs(level - 1)) > 1e-5, f"{shape_.name}: a voxel centre on the boundary"
        image = nib.Nifti1Image((level <= 1).astype(np.uint8), affine)
        image.set_sform(affine, code=2)
        nib.save(image, masks / f"{shape_.name}.nii.gz")

    frames = source_frames(dicom)
    instance = {key: int(pydicom.dcmread(frame.path, stop_before_pixels=True).InstanceNumber)
                for key, frame in frames.items()}
    case = Case(root, dicom, masks, shapes, frames, instance, tilt)
    for key, frame in frames.items():  # no pixel centre within rounding of a boundary: the truth is unambiguous
        centres = frame.centres()
        assert all(np.min(np.abs(s.level(centres) - 1)) > 1e-5 for s in shapes), key
    return case


@pytest.fixture(scope="module", params=sorted(GEOMETRIES))
def case(request, tmp_path_factory) -> Case:
    case = build(tmp_path_factory.mktemp(request.param), request.param)
    # The phantom is what it claims: every structure on some frame, each overlapping another somewhere, the dot on
    # exactly one pixel of one frame, the tumour partly outside the organ, the rod partly outside the body.
    truths = [case.truth(key) for key in case.frames]
    area = {v: sum(int(t[v].sum()) for t in truths) for v in range(1, 6)}
    assert min(area.values()) > 0 and area[5] == 1, area
    assert any((t[3] & ~t[2]).any() for t in truths) and any((t[4] & ~t[1]).any() for t in truths)
    assert all(any((t[v] & t[1]).any() for t in truths) for v in range(2, 6))
    return case


@pytest.fixture(scope="module")
def exported(case: Case) -> Path:
    out = case.root / "out"
    run = run_cli("export", case.dicom, case.masks, "-o", out, "-q", "--masks", "--stats", "--overlays",
                  "--dicom-seg", "--rtstruct")
    assert run.code == 0, run.stderr
    return out


def labels_json(out: Path) -> dict[int, dict]:
    return {entry["value"]: entry for entry in json.loads((out / "labels.json").read_text(encoding="utf-8"))}


def key_of(row: dict[str, str]) -> tuple[str, int]:
    return (row["sop_instance_uid"], int(row["frame"]))


def empty(frame: SourceFrame) -> np.ndarray:
    return np.zeros((frame.rows, frame.columns), bool)


# --------------------------------------------------------------------------------------------------------------------
# The PNG folder
# --------------------------------------------------------------------------------------------------------------------


def test_label_layers_rebuild_every_segment(case: Case, exported: Path) -> None:
    """labels.json says which layer holds each segment, the manifest's label_png / label_png_<n> columns (after
    every other column) where each frame's layer images are; from them every segment's pixels on every frame are
    exactly the truth, and each layer image holds only its own segments' values."""
    table = labels_json(exported)
    assert {value: entry["name"] for value, entry in table.items()} == {
        value: shape.name for value, shape in enumerate(case.shapes, start=1)}
    layers = {value: entry["layer"] for value, entry in table.items()}
    count = max(layers.values())
    assert count >= 3 and sorted(set(layers.values())) == list(range(1, count + 1)), layers
    with (exported / "manifest.csv").open(encoding="utf-8") as stream:
        header = stream.readline().strip().split(",")
    assert header[-(count - 1):] == [f"label_png_{n}" for n in range(2, count + 1)], header
    rows = read_manifest(exported)
    assert len(rows) == len(case.frames)
    assert [case.instance[key_of(row)] for row in rows] == sorted(case.instance.values()), "native order"
    for row in rows:
        key = key_of(row)
        images = {1: read_png(exported / row["label_png"])}
        for n in range(2, count + 1):
            assert row[f"label_png_{n}"] == f"layers/{n}/" + Path(row["label_png"]).name
            images[n] = read_png(exported / row[f"label_png_{n}"])
        truth = case.truth(key)
        for n, image in images.items():
            assert set(np.unique(image).tolist()) <= {0} | {v for v, layer in layers.items() if layer == n}
        for value, pixels in truth.items():
            np.testing.assert_array_equal(images[layers[value]] == value, pixels, err_msg=f"segment {value} {key}")
        assert row["labels_present"].split() == [str(v) for v, pixels in truth.items() if pixels.any()]
    assert export_problem(exported) is None, "layers/ is an export's own: --overwrite may replace the folder"


def test_masks_and_stats_are_each_segments_own_pixels(case: Case, exported: Path) -> None:
    """--masks: one image per segment per frame, overlaps kept; --stats: each segment's own pixels and area."""
    table = labels_json(exported)
    for row in read_manifest(exported):
        key = key_of(row)
        truth = case.truth(key)
        name = Path(row["label_png"]).name
        for value, pixels in truth.items():
            mask = read_png(exported / "masks" / table[value]["name"] / name)
            assert mask.dtype == bool
            np.testing.assert_array_equal(mask, pixels, err_msg=f"mask of {value} on {key}")
        area = float(np.prod(case.frames[key].spacing))
        counted = {int(v): int(n) for v, n in (pair.split(":") for pair in row["label_pixels"].split())}
        assert counted == {v: int(p.sum()) for v, p in truth.items() if p.any()}
        areas = {int(v): float(a) for v, a in (pair.split(":") for pair in row["label_areas_mm2"].split())}
        assert sorted(areas) == sorted(counted)
        assert all(abs(areas[v] - counted[v] * area) <= 0.005 + 1e-9 for v in areas), (areas, counted)


def test_overlays_fill_the_first_layer_and_outline_the_others(case: Case, exported: Path) -> None:
    table = labels_json(exported)
    colors = {value: tuple(entry["color"]) for value, entry in table.items()}
    count = max(entry["layer"] for entry in table.values())
    rows = read_manifest(exported)
    busiest = sorted(rows, key=lambda row: -sum(p.sum() for p in case.truth(key_of(row)).values()))[:3]
    for row in busiest:
        layers = [read_png(exported / row["label_png"])] + [read_png(exported / row[f"label_png_{n}"])
                                                            for n in range(2, count + 1)]
        stored = pydicom.dcmread(case.frames[key_of(row)].path).pixel_array
        got = read_png(exported / row["overlay_png"])
        np.testing.assert_array_equal(got, expected_overlay(stored, layers, colors), err_msg=row["overlay_png"])
        second = layers[1] != 0
        assert (got[second] != got[second][:, :1]).any(), "the outlines are drawn"


# --------------------------------------------------------------------------------------------------------------------
# The BINARY DICOM SEG
# --------------------------------------------------------------------------------------------------------------------


def _segments(dataset: pydicom.Dataset, table: dict[int, dict]) -> dict[int, int]:
    """SegmentNumber -> label value, by SegmentLabel (the segment's name in labels.json)."""
    by_name = {entry["name"]: value for value, entry in table.items()}
    return {int(item.SegmentNumber): by_name[str(item.SegmentLabel)] for item in dataset.SegmentSequence}


def test_binary_seg_holds_each_segments_own_frames(case: Case, exported: Path) -> None:
    """Per segment per frame, as pydicom alone and highdicom read it back, exactly the truth; SegmentsOverlap YES."""
    path = exported / "seg.dcm"
    dataset = pydicom.dcmread(path, stop_before_pixels=True)
    assert dataset.SegmentationType == "BINARY" and dataset.SegmentsOverlap == "YES"
    values = _segments(dataset, labels_json(exported))
    assert sorted(values.values()) == [1, 2, 3, 4, 5]
    masks = seg_readers.pydicom_segment_masks(path)
    for key, frame in case.frames.items():
        truth = case.truth(key)
        for number, value in values.items():
            got = masks.get(key, {}).get(number, empty(frame))
            np.testing.assert_array_equal(got, truth[value], err_msg=f"pydicom: segment {value} on {key}")
    if not importable("highdicom"):
        pytest.skip("highdicom is not installed")
    import highdicom

    seg = highdicom.seg.segread(str(path))
    uids = sorted({key[0] for key in case.frames})
    for number, value in values.items():
        stack_ = seg.get_pixels_by_source_instance(uids, segment_numbers=[number], combine_segments=False,
                                                   assert_missing_frames_are_empty=True)
        assert stack_.shape[-1] == 1
        for uid, pixels in zip(uids, stack_[..., 0]):
            np.testing.assert_array_equal(pixels != 0, case.truth((uid, 1))[value],
                                          err_msg=f"highdicom: segment {value} on {uid}")


def test_binary_seg_read_by_dcmqi(case: Case, exported: Path, tmp_path: Path) -> None:
    """dcmqi's segimage2itkimage: one volume per group of segments that do not overlap; each segment sampled at
    every pixel centre of every frame is exactly the truth (dcmqi's volumes are regular stacks: no tilted one)."""
    if seg_readers.segimage2itkimage() is None or not importable("SimpleITK"):
        pytest.skip("dcmqi's segimage2itkimage (or SimpleITK) is not installed")
    if case.tilt:
        pytest.skip("dcmqi makes a volume of a regular stack only; a tilted series' frames are not on one")
    path = exported / "seg.dcm"
    values = _segments(pydicom.dcmread(path, stop_before_pixels=True), labels_json(exported))
    segments = seg_readers.dcmqi_segments(path, tmp_path / "dcmqi")
    assert sorted(segments) == sorted(values)
    for key, frame in case.frames.items():
        truth = case.truth(key)
        for number, value in values.items():
            sampled, offset = seg_readers.sample_nearest(segments[number].mask, frame.centres())
            assert offset < 1e-3, "dcmqi's volume has a voxel centre at every pixel centre"
            np.testing.assert_array_equal(sampled != 0, truth[value], err_msg=f"dcmqi: segment {value} on {key}")


# --------------------------------------------------------------------------------------------------------------------
# The RTSTRUCT
# --------------------------------------------------------------------------------------------------------------------


def test_rtstruct_traces_each_roi_from_its_own_mask(case: Case, exported: Path) -> None:
    dataset, rois = rt_readers.read_rtstruct(exported / "rtstruct.dcm")
    by_name = {entry["name"]: value for value, entry in labels_json(exported).items()}
    values = {number: by_name[roi.name] for number, roi in rois.items()}
    assert sorted(values.values()) == [1, 2, 3, 4, 5]
    rasterised = rt_readers.rtstruct_masks(rois, case.frames)
    for key, frame in case.frames.items():
        truth = case.truth(key)
        for number, value in values.items():
            got = rasterised[number].get(key, empty(frame))
            np.testing.assert_array_equal(got, truth[value], err_msg=f"ROI {value} on {key}")


# --------------------------------------------------------------------------------------------------------------------
# The LABELMAP DICOM SEG
# --------------------------------------------------------------------------------------------------------------------


def test_labelmap_is_refused_in_one_line_naming_two_segments_and_the_frame(case: Case, tmp_path: Path) -> None:
    """The first frame in export order where two segments share a pixel: named with its InstanceNumber and file,
    with two segments that do share a pixel there (names and values), before anything is written."""
    out = tmp_path / "out"
    before = snapshot(tmp_path)
    run = run_cli("export", case.dicom, case.masks, "-o", out, "--dicom-seg-type", "labelmap")
    lines = run.stderr.strip().splitlines()
    assert run.code == 1 and len(lines) == 1 and lines[0].startswith("segalign: error: "), run.stderr
    line = lines[0]
    assert not out.exists() and snapshot(tmp_path) == before and not leftovers(tmp_path)
    ordered = sorted(case.frames, key=lambda key: case.instance[key])
    first = next(key for key in ordered
                 if any((a & b).any() for i, a in enumerate(case.truth(key).values())
                        for b in list(case.truth(key).values())[i + 1:]))
    assert f"InstanceNumber {case.instance[first]} ({case.frames[first].path.name})" in line, line
    truth = case.truth(first)
    named = [value for value, shape in enumerate(case.shapes, start=1) if f"{value} ({shape.name})" in line]
    assert len(named) == 2 and (truth[named[0]] & truth[named[1]]).any(), line
    shared = int((truth[named[0]] & truth[named[1]]).sum())
    assert f"share {shared} pixels" in line, line
    assert "--dicom-seg-type binary" in line and "--overlap later-wins" in line, line


def test_labelmap_refusal_stays_one_line_whatever_the_names(case: Case, tmp_path: Path) -> None:
    """Names of 150 characters: the line is cut to the command line's limit, and still names the frame and the
    way out."""
    masks = tmp_path / "masks"
    masks.mkdir()
    for path in sorted(case.masks.iterdir()):
        (masks / (path.name.split(".")[0] + "_" + "x" * 150 + ".nii.gz")).write_bytes(path.read_bytes())
    run = run_cli("export", case.dicom, masks, "-o", tmp_path / "out", "--dicom-seg-type", "labelmap")
    lines = run.stderr.strip().splitlines()
    assert run.code == 1 and len(lines) == 1 and len(lines[0]) <= len("segalign: error: ") + MESSAGE_LIMIT, lines
    assert "InstanceNumber" in lines[0] and lines[0].endswith("use --dicom-seg-type binary or --overlap later-wins")
    assert not (tmp_path / "out").exists()

def _apart(dot):
    """A long blob on the left, a rod that leans into it only beyond the series' last frame (on the grid's extra
    slices), a third segment apart from both, and a fourth beyond the last frame (on no frame, so the LABELMAP's
    segments are numbered again at the end): segments overlap in the volume, never on a frame."""
    del dot
    lean = np.array([-0.25, 0.0, 1.0]) / math.hypot(0.25, 1.0)
    across = np.array([lean[2], 0.0, -lean[0]])
    return [
        Shape("a_left", (-7.2, 0.3, 0.1), (5.7, 5.3, 200.0)),
        Shape("b_rod", (6.0, 0.2, 0.0), (2.03, 1.97, 200.0), (tuple(across), (0.0, 1.0, 0.0), tuple(lean))),
        Shape("c_apart", (0.1, 9.0, 0.2), (2.3, 2.1, 3.3)),
        Shape("d_beyond", (0.2, -9.1, 29.5), (2.1, 2.3, 2.2)),
    ]


def test_labelmap_is_written_when_the_layers_never_meet_on_the_frames(tmp_path: Path) -> None:
    """Segments that overlap in the volume (layers) but share no pixel of any frame: a LABELMAP SEG is written,
    every frame its segments exactly; a BINARY one says SegmentsOverlap NO."""
    case = build(tmp_path / "case", "axial", extra_grid_frames=10, shapes=_apart)
    count = len(case.frames)
    assert all(not (t[a] & t[b]).any() for t in map(case.truth, case.frames) for a, b in ((1, 2), (1, 3), (2, 3))), \
        "no pixel of a frame in two segments"
    assert all(any(t[v].any() for t in map(case.truth, case.frames)) for v in (1, 2, 3))
    assert not any(t[4].any() for t in map(case.truth, case.frames)), "d_beyond is on no frame"
    out = tmp_path / "labelmap"
    run = run_cli("export", case.dicom, case.masks, "-o", out, "-q", "--dicom-seg-type", "labelmap")
    assert run.code == 0, run.stderr
    table = labels_json(out)
    assert max(entry["layer"] for entry in table.values()) >= 2, "the segments do overlap in the volume"
    dataset = pydicom.dcmread(out / "seg.dcm", stop_before_pixels=True)
    assert dataset.SegmentationType == "LABELMAP" and dataset.SegmentsOverlap == "NO"
    assert sorted(str(item.SegmentLabel) for item in dataset.SegmentSequence) == ["Background", "a_left", "b_rod", "c_apart"]
    names = {entry["name"]: value for value, entry in table.items()}
    images = seg_readers.pydicom_label_images(out / "seg.dcm", names)
    assert len(case.frames) == count
    for key, frame in case.frames.items():
        expected = np.zeros((frame.rows, frame.columns), np.uint8)
        for value, pixels in case.truth(key).items():
            expected[pixels] = value
        np.testing.assert_array_equal(images.get(key, expected * 0), expected, err_msg=str(key))
    binary = tmp_path / "binary"
    assert run_cli("export", case.dicom, case.masks, "-o", binary, "-q", "--dicom-seg").code == 0
    assert pydicom.dcmread(binary / "seg.dcm", stop_before_pixels=True).SegmentsOverlap == "NO"


# --------------------------------------------------------------------------------------------------------------------
# dcmqi's partial_overlaps.dcm
# --------------------------------------------------------------------------------------------------------------------


def test_dcmqi_partial_overlaps_through_a_binary_export(testdata: Path, tmp_path: Path) -> None:
    """dcmqi's own overlapping SEG on its CT, exported as BINARY: every segment on every frame as in the input
    (pydicom alone, and highdicom), by name; the label layers and masks give the same pixels."""
    base = require(testdata / "dcmqi_segmentations")
    seg = require(base / "partial_overlaps.dcm")
    dicom = require(base / "ct-3slice")
    out = tmp_path / "out"
    run = run_cli("export", dicom, seg, "-o", out, "-q", "--dicom-seg", "--masks")
    assert run.code == 0, run.stderr
    frames = source_frames(dicom)
    source = pydicom.dcmread(seg, stop_before_pixels=True)
    names = {int(item.SegmentNumber): str(item.SegmentLabel) for item in source.SegmentSequence}
    written = pydicom.dcmread(out / "seg.dcm", stop_before_pixels=True)
    assert written.SegmentsOverlap == "YES"
    numbers = {str(item.SegmentLabel): int(item.SegmentNumber) for item in written.SegmentSequence}
    assert sorted(numbers) == sorted(names.values())
    before, after = seg_readers.pydicom_segment_masks(seg), seg_readers.pydicom_segment_masks(out / "seg.dcm")
    overlapping = 0
    table = labels_json(out)
    by_name = {entry["name"]: value for value, entry in table.items()}
    rows = {key_of(row): row for row in read_manifest(out)}
    for key, frame in frames.items():
        masks = {name: before.get(key, {}).get(number, empty(frame)) for number, name in names.items()}
        overlapping += sum(int((a & b).sum()) for i, a in enumerate(masks.values()) for b in list(masks.values())[i + 1:])
        row = rows[key]
        for name, mask in masks.items():
            np.testing.assert_array_equal(after.get(key, {}).get(numbers[name], empty(frame)), mask,
                                          err_msg=f"{name} on {key}")
            layer = table[by_name[name]]["layer"]
            image = read_png(out / (row["label_png"] if layer == 1 else row[f"label_png_{layer}"]))
            np.testing.assert_array_equal(image == by_name[name], mask, err_msg=f"layer image of {name} on {key}")
            np.testing.assert_array_equal(read_png(out / "masks" / name / Path(row["label_png"]).name), mask)
    assert overlapping > 0, "the reference's segments do overlap on its frames"
    if importable("highdicom"):
        import highdicom

        written_seg = highdicom.seg.segread(str(out / "seg.dcm"))
        uids = sorted({key[0] for key in frames})
        for name, number in numbers.items():
            pixels = written_seg.get_pixels_by_source_instance(uids, segment_numbers=[number],
                                                               assert_missing_frames_are_empty=True)[..., 0]
            for uid, got in zip(uids, pixels):
                source_number = next(n for n, label in names.items() if label == name)
                expected = before.get((uid, 1), {}).get(source_number, empty(frames[(uid, 1)]))
                np.testing.assert_array_equal(got != 0, expected, err_msg=f"highdicom {name} on {uid}")
