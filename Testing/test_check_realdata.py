"""``segalign check`` on real series (../shared/testdata, see its README.md): the faults users make, each named
exactly, SegAlign's own exports exact, and rt-utils' RTSTRUCTs on tilted and gapped series judged precisely.

The series, and what each exercises:

* ``ge_tilt``: dcm_qa_ct_ge_tilt, GE head CT, 28 slices, gantry tilt 18.5 degrees, gaps 1.08 to 7 mm. The
  segmentation is levels of dcm2niix's sheared reference (six frames past its last slice have no labels).
* ``ct3slice``: dcmqi's ct-3slice, feet-first, InstanceNumber against position, so in acquisition order the stack
  is **left-handed** (positions fall along the normal IOP[0:3] x IOP[3:6] as InstanceNumber rises); the segmentation
  is dcmqi's liver, spine and heart label maps (derived_nifti) as one label map.
* ``pydicom_ct5n``: pydicom's feet-first 16 x 16 CT (98892001/CT5N), also left-handed in acquisition order.
* ``sliceincrement_gap``, ``sliceincrement``, ``gantrytilting``: dicom2nifti's failing cases: 5 mm steps with one
  10 mm gap; a 15.5 degree tilt with a missing slice; a 14 degree tilt. Their pixel data is noise (anonymised), so
  the segmentation is the levels of each frame's pixels blurred (smooth blobs), stacked into a sheared volume from
  the frames' own headers.
* ``canon_enhanced``: the Canon double-oblique sagittal DTI as one enhanced multi-frame file, 520 frames of 80 x 80
  (13 volumes of 40 positions: frames at one position have the same labels); the segmentation is levels of
  dcm2niix's first volume.

Truth is ``segalign.align`` in acquisition order (held to independent oracles by test_realdata.py); every wrong
export is built here from it the way users make them, and where a finding prints code, the code is run.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pydicom
import pytest
import segalign
from conftest import TESTDATA, read_png, run_cli
from PIL import Image
from segalign.check import TRANSFORMS
from test_check import check_json, finding, run_undo, write_pngs
from test_realdata import (
    CT_THRESHOLDS,
    _decoded_frames,
    _frames_by_instance,
    dicom_files,
    header,
    levels,
    modality_pixels,
    save_labels_like,
    separating_thresholds,
    stack_frames_as_nifti,
)

#: The issue's in-plane transforms, written out: the user's image for a frame's true labels ``a``.
MADE = {
    "identity": lambda a: a, "flip_rows": lambda a: a[::-1, :], "flip_columns": lambda a: a[:, ::-1],
    "rotate_180": lambda a: a[::-1, ::-1], "transpose": lambda a: a.T, "transpose_flip_rows": lambda a: a.T[::-1, :],
    "transpose_flip_columns": lambda a: a.T[:, ::-1], "transpose_rotate_180": lambda a: a.T[::-1, ::-1],
}
assert tuple(MADE) == TRANSFORMS


@dataclass
class Case:
    name: str
    dicom: Path
    seg: Path
    truth: np.ndarray  #: (frames, rows, columns), acquisition order
    left_handed: bool  #: positions fall along the normal as the frames go on (acquisition order)
    #: For a segmentation on the frames' own grid: the frame (acquisition order) in each slice k of the NIfTI
    #: (None: a slice of no frame), so nibabel's data[:, :, k] is a frame's labels in some in-plane layout.
    slices: list[int | None] | None = None
    notes: list[str] = field(default_factory=list)


def blurred(values: np.ndarray, radius: int = 10, passes: int = 3) -> np.ndarray:
    """A box blur (``passes`` times, edges repeated): noise becomes smooth blobs."""
    result = np.asarray(values, dtype=float)
    for _ in range(passes):
        for axis in (0, 1):
            padded = np.pad(result, [(radius + 1, radius) if a == axis else (0, 0) for a in (0, 1)], mode="edge")
            summed = np.cumsum(padded, axis=axis)
            size = summed.shape[axis]
            result = (np.take(summed, range(2 * radius + 1, size), axis=axis)
                      - np.take(summed, range(size - 2 * radius - 1), axis=axis)) / (2 * radius + 1)
    return result


def _left_handed(frames) -> bool:
    normal = np.asarray(frames[0].normal, dtype=float)
    heights = [float(np.dot(frame.position, normal)) for frame in frames]
    return all(b < a for a, b in itertools.pairwise(heights))


def _truth(name: str, dicom: Path, seg: Path, slices=None) -> Case:
    alignment = segalign.align(dicom, seg)
    return Case(name, dicom, seg, alignment.labels, _left_handed(alignment.frames), slices)


def _stacked_case(name: str, folder: Path, root: Path, smooth: bool) -> Case:
    files = _frames_by_instance(folder)
    pixels = [modality_pixels(path) for path in files]
    values = [blurred(p) for p in pixels] if smooth else pixels
    thresholds = separating_thresholds(values, [0.5, 0.85])
    labels = [levels(v, thresholds) for v in values]
    segmentation, slots = stack_frames_as_nifti([(path, 1) for path in files], labels, root / f"{name}.nii.gz")
    case = _truth(name, folder, segmentation)
    by_uid = {str(header(path).SOPInstanceUID): slot for path, slot in zip(files, slots)}
    alignment = segalign.align(folder, segmentation)
    slice_frame: list[int | None] = [None] * (max(slots) + 1)
    for index, frame in enumerate(alignment):
        slice_frame[by_uid[frame.frame.sop_instance_uid]] = index
    case.slices = slice_frame
    return case


def _build(name: str, root: Path) -> Case:
    data = TESTDATA
    if not data.is_dir():
        pytest.skip(f"real test data not found at {data} (set SEGALIGN_TESTDATA to its folder)")

    def need(path: Path) -> Path:
        if not path.exists():
            pytest.skip(f"real test data item missing: {path}")
        return path

    if name == "ge_tilt":
        base = need(data / "dcm_qa_ct_ge_tilt")
        reference = nib.load(str(need(base / "ref_dcm2niix" / "_2.nii.gz")))
        seg = save_labels_like(levels(np.asanyarray(reference.dataobj), CT_THRESHOLDS), reference, root / "ge.nii.gz")
        return _truth(name, need(base / "dicom"), seg)
    if name == "ct3slice":
        base = need(data / "dcmqi_segmentations")
        combined = None
        for part in ("liver", "spine", "heart"):  # values 1, 2, 3 in dcmqi's files; later ones win
            image = nib.load(str(need(base / "derived_nifti" / f"{part}_seg.nii.gz")))
            values = np.asanyarray(image.dataobj).astype(np.uint8)
            combined = values if combined is None else np.where(values != 0, values, combined)
        seg = save_labels_like(combined, image, root / "ct3slice.nii.gz")
        case = _truth(name, need(base / "ct-3slice"), seg)
        # the label map's slices are the frames' own planes: which frame is in slice k, from the headers
        inverse = np.linalg.inv(image.affine)
        alignment = segalign.align(case.dicom, seg)
        case.slices = [None] * combined.shape[2]
        for index, frame in enumerate(alignment):
            ras = np.array([-1.0, -1.0, 1.0]) * np.asarray(frame.frame.position, dtype=float)
            k = (inverse @ np.append(ras, 1.0))[2]
            assert abs(k - round(k)) < 1e-3
            case.slices[round(k)] = index
        return case
    if name == "pydicom_ct5n":
        folder = need(data / "pydicom_test_files" / "src" / "pydicom" / "data" / "test_files" / "dicomdirtests"
                      / "98892001" / "CT5N")
        return _stacked_case(name, folder, root, smooth=False)
    if name in ("sliceincrement_gap", "sliceincrement", "gantrytilting"):
        sub = {"sliceincrement_gap": "sliceincrement/001", "sliceincrement": "sliceincrement/002",
               "gantrytilting": "gantrytilting/001"}[name]
        return _stacked_case(name, need(data / "dicom2nifti" / "failing" / sub), root, smooth=True)
    if name == "canon_enhanced":
        base = need(data / "dcm_qa_canon_sag_oblique")
        reference = nib.load(str(need(base / "ref_dcm2niix" / "11000_SAG_DTI_PA-ALL_20d_cl.nii.gz")))
        volume = np.asanyarray(reference.dataobj)[..., 0]
        thresholds = separating_thresholds([volume], [0.6, 0.9])
        volume0 = nib.Nifti1Image(volume, reference.affine, header=reference.header)
        seg = save_labels_like(levels(volume, thresholds), volume0, root / "canon.nii.gz")
        return _truth(name, need(base / "enhanced"), seg)
    raise AssertionError(name)


CASES = ["ge_tilt", "ct3slice", "pydicom_ct5n", "sliceincrement_gap", "sliceincrement", "gantrytilting",
         "canon_enhanced"]


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """Each case built once, on first use."""
    built: dict[str, Case] = {}
    root = tmp_path_factory.mktemp("realcases")

    def get(name: str) -> Case:
        if name not in built:
            built[name] = _build(name, root)
        return built[name]

    yield get
    _decoded_frames.cache_clear()
    header.cache_clear()


def test_the_cases_are_what_the_docstring_says(cases) -> None:
    """Left-handed in acquisition order: the two feet-first series, not the head-first ones (nor the canon)."""
    handed = {name: cases(name).left_handed for name in ("ge_tilt", "ct3slice", "pydicom_ct5n", "gantrytilting")}
    assert handed == {"ge_tilt": False, "ct3slice": True, "pydicom_ct5n": True, "gantrytilting": False}
    assert {str(header(path).PatientPosition) for path in dicom_files(cases("ct3slice").dicom)} == {"FFS"}
    for name in CASES:
        truth = cases(name).truth
        labelled = [k for k in range(len(truth)) if truth[k].any()]
        assert len(labelled) >= min(3, len(truth)), name
        assert len(np.unique(truth)) >= 3, f"{name}: more than one label"
    assert cases("canon_enhanced").truth.shape == (520, 80, 80)


# ---------------------------------------------------------------------------------------------------------------
# SegAlign's own exports: exact
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", CASES)
def test_segalign_exports_check_exact(cases, name: str, tmp_path: Path) -> None:
    case = cases(name)
    out = tmp_path / "out"
    exports = [out, out / "labels", out / "masks"]
    if all("FrameOfReferenceUID" in header(path) for path in dicom_files(case.dicom)):
        run = run_cli("export", case.dicom, case.seg, "-o", out, "--masks", "--dicom-seg", "--rtstruct")
        exports += [out / "seg.dcm", out / "rtstruct.dcm"]
    else:  # dicom2nifti's anonymised series: no frame of reference for a SEG or an RTSTRUCT to place content in
        refused = run_cli("export", case.dicom, case.seg, "-o", tmp_path / "refused", "--dicom-seg")
        assert refused.code == 1 and "has no FrameOfReferenceUID" in refused.stderr
        run = run_cli("export", case.dicom, case.seg, "-o", out, "--masks")
    assert run.code == 0, run.stderr
    for export in exports:
        code, result = check_json(case.dicom, case.seg, export)
        assert code == 0, (export.name, result["findings"])
        assert result["frames"] == len(case.truth)
        assert all(label["dice_before"] in (1.0, None) for label in result["labels"])


# ---------------------------------------------------------------------------------------------------------------
# the faults users make
# ---------------------------------------------------------------------------------------------------------------

def _faults() -> list[tuple[str, str]]:
    pairs = []
    for name in CASES:
        pairs += [(name, "reversed"), (name, "one_off")] + [(name, t) for t in TRANSFORMS[1:]]
        if name in ("ge_tilt", "canon_enhanced"):  # 11 frames or more: 1.png, 10.png, 11.png ... 2.png differs
            pairs.append((name, "numbers_as_text"))
        if name in ("ct3slice", "pydicom_ct5n", "sliceincrement_gap", "sliceincrement", "gantrytilting"):
            pairs.append((name, "nibabel"))  # the segmentation's slices are the frames' own planes
    return pairs


@pytest.mark.parametrize(("name", "fault"), _faults())
def test_fault_is_named_exactly(cases, name: str, fault: str, tmp_path: Path) -> None:
    case = cases(name)
    truth = case.truth
    count = len(truth)
    if fault == "reversed":
        images = truth[::-1]
        export = write_pngs(tmp_path / "pngs", list(images))
        _, result = check_json(case.dicom, case.seg, export)
        assert result["frame_of_image"] == list(range(count - 1, -1, -1))
        assert result["in_plane"] == "identity" and result["residual_mismatched_pixels"] == 0
        line = finding(result, "reverse order", f"image i holds frame {count - 1} - i", "images = images[::-1]")
        # reversed acquisition order is position order: up the normal on a left-handed stack, else down it (not
        # so for 4D: 13 volumes at the same 40 positions)
        assert ("sorted by position along the slice normal" in line) == (name != "canon_enhanced")
        assert ("along the slice normal, downwards" in line) == (name not in ("canon_enhanced", "ct3slice",
                                                                               "pydicom_ct5n"))
        assert case.left_handed == (name in ("ct3slice", "pydicom_ct5n"))
        back = run_undo(line, images=np.stack([read_png(export / n) for n in result["image_names"]]))["images"]
        assert np.array_equal(back, truth)
    elif fault == "one_off":
        images = list(truth[1:]) + [np.zeros_like(truth[0])]  # z off by one: the last slice falls off
        export = write_pngs(tmp_path / "pngs", images)
        _, result = check_json(case.dicom, case.seg, export)
        assert result["frame_of_image"] == list(range(1, count)) + [None]
        assert result["residual_mismatched_pixels"] == int(np.count_nonzero(truth[0]))
        line = finding(result, "1 slice after", "image i holds frame i + 1")
        assert np.array_equal(run_undo(line, images=np.stack(images))["fixed"][1:], truth[1:])
    elif fault in MADE:
        images = [MADE[fault](frame) for frame in truth]
        export = write_pngs(tmp_path / "pngs", images)
        _, result = check_json(case.dicom, case.seg, export)
        assert result["frame_of_image"] == list(range(count)) and result["residual_mismatched_pixels"] == 0
        # the transforms that give these images from the truth (more than one only for symmetric labels)
        same = [t for t in TRANSFORMS if all(np.array_equal(MADE[t](a), b) for a, b in zip(truth, images))]
        assert same == [fault], f"{name}: {fault} is not told apart by the labels ({same})"
        assert result["in_plane"] == fault
        line = finding(result, f"({fault})", "every image")
        for k in (0, count // 2, count - 1):
            fixed = run_undo(line, image=read_png(export / f"{k:04d}.png"))["fixed"]
            assert np.array_equal(fixed, truth[k])
        assert all(label["dice_after"] in (1.0, None) for label in result["labels"])
    elif fault == "numbers_as_text":
        names = [f"{k + 1}.png" for k in range(count)]
        folder = write_pngs(tmp_path / "pngs", list(truth), names)
        stacked = np.stack([read_png(path) for path in sorted(folder.glob("*.png"))])  # sorted(glob(...))
        np.save(tmp_path / "stacked.npy", stacked)
        _, result = check_json(case.dicom, case.seg, tmp_path / "stacked.npy")
        expected = [int(path.stem) - 1 for path in sorted(folder.glob("*.png"))]
        assert expected != list(range(count))
        assert result["frame_of_image"] == expected and result["residual_mismatched_pixels"] == 0
        line = finding(result, "sorted by number from 1 as text (1, 10, 100" if count > 99 else
                       "sorted by number from 1 as text (1, 10, 11")
        fixed = run_undo(line, images=stacked, frame_of_image=result["frame_of_image"], fixed=np.zeros_like(truth))
        assert np.array_equal(fixed["fixed"], truth)
    elif fault == "nibabel":
        data = np.asarray(nib.load(str(case.seg)).dataobj)
        images = [data[:, :, k].astype(np.uint8) for k in range(data.shape[2])]  # as notebooks save slices
        export = write_pngs(tmp_path / "pngs", images)
        _, result = check_json(case.dicom, case.seg, export)
        # the oracle: which frame each slice is (from the headers), under which of the transforms
        expected = [frame if frame is not None and truth[frame].any() else None for frame in case.slices]
        same = {t for t in TRANSFORMS
                if all(np.array_equal(MADE[t](truth[f]), images[k]) for k, f in enumerate(expected) if f is not None)}
        assert len(same) == 1, same
        (layout,) = same
        assert result["frame_of_image"] == expected and result["in_plane"] == layout
        assert result["residual_mismatched_pixels"] == sum(
            int(np.count_nonzero(truth[f])) for f in range(count) if f not in expected)
        finding(result, f"({layout})", "every image")
        if expected != list(range(count)):
            assert any("frame" in line and ("order" in line or "holds" in line) for line in result["findings"])
    else:
        raise AssertionError(fault)


# ---------------------------------------------------------------------------------------------------------------
# rt-utils RTSTRUCTs on tilted and gapped series
# ---------------------------------------------------------------------------------------------------------------

def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def rtutils_rtstruct(case: Case, path: Path):
    """An RTSTRUCT made by rt-utils from the right masks: SegAlign's truth, each label one ROI named by its segment,
    slice k of the mask being rt-utils' own slice k (``rt.series_data``, which it sorts by position along the
    normal). Whatever is wrong with it is rt-utils' doing. Returns rt-utils' object, its slice order (frames), the
    masks given."""
    rt_utils = pytest.importorskip("rt_utils", reason="rt-utils writes the RTSTRUCTs (pip install rt-utils)")
    alignment = segalign.align(case.dicom, case.seg)
    with contextlib.redirect_stdout(io.StringIO()):
        rt = rt_utils.RTStructBuilder.create_new(str(case.dicom))
        frame_of_uid = {frame.frame.sop_instance_uid: index for index, frame in enumerate(alignment)}
        order = [frame_of_uid[str(ds.SOPInstanceUID)] for ds in rt.series_data]
        given = {}
        for label in alignment.segments:
            mask = np.stack([case.truth[f] == label.value for f in order], axis=-1)
            if mask.any():
                rt.add_roi(mask=mask, name=label.name)
                given[label.name] = mask
        rt.save(str(path))
    return rt, order, given


def stack_geometry(series) -> SimpleNamespace:
    """rt-utils' geometry, from the headers of its sorted slices (pydicom): slice k's pixel (column, row) at
    IPP_0 + column * PixelSpacing[0] * IOP[0:3] + row * PixelSpacing[1] * IOP[3:6] + k * s * normal, s the mean
    spacing along the normal; and, per slice, how far that is from the slice's own plane and grid."""
    first = series[0]
    iop = np.asarray(first.ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    heights = [float(np.dot(np.asarray(ds.ImagePositionPatient, dtype=float), normal)) for ds in series]
    spacing = (heights[-1] - heights[0]) / (len(series) - 1)
    origin = np.asarray(first.ImagePositionPatient, dtype=float)
    row_spacing, column_spacing = (float(v) for v in first.PixelSpacing)
    off, moved_mm, moved_px, planes = [], [], [], []
    for k, ds in enumerate(series):
        placed = origin + k * spacing * normal
        step = placed - np.asarray(ds.ImagePositionPatient, dtype=float)
        off.append(float(np.dot(step, normal)))
        within = step - off[-1] * normal
        moved_mm.append(float(np.linalg.norm(within)))
        moved_px.append(float(np.hypot(np.dot(within, iop[:3]) / column_spacing, np.dot(within, iop[3:]) / row_spacing)))
        # rt_readers' plane: columns along spacing[1] * IOP[0:3]; rt-utils uses PixelSpacing[0] there
        planes.append(SimpleNamespace(position=placed, orientation=iop, spacing=(column_spacing, row_spacing)))
    ends = np.asarray(series[-1].ImagePositionPatient, float) - origin
    tilt = math.degrees(math.acos(min(1.0, abs(float(np.dot(ends, normal))) / float(np.linalg.norm(ends)))))
    gaps = np.diff(heights)
    return SimpleNamespace(spacing=spacing, heights=heights, off=off, moved_mm=moved_mm, moved_px=moved_px, planes=planes, tilt=tilt,
                           gaps=(float(gaps.min()), float(gaps.max())))


@pytest.mark.parametrize("name", ["ge_tilt", "sliceincrement_gap", "sliceincrement", "gantrytilting"])
def test_rtutils_rtstruct_on_tilted_and_gapped_series(cases, name: str, tmp_path: Path) -> None:
    """rt-utils places every slice's contours on one orthogonal stack from the lowest slice at the mean spacing
    (rt_utils/image_helper.py, get_pixel_to_patient_transformation_matrix): on a tilted series the contours are on
    their planes but moved within them, on gapped slices off their planes; and OpenCV's contours run through the
    centres of the boundary pixels. The check names the stack with the distances computed here from the headers,
    judges the contours where the stack puts them, and finds every remaining difference under a contour."""
    from rt_readers import even_odd, on_edges, to_pixels

    case = cases(name)
    path = tmp_path / "rtutils.dcm"
    rt, order, given = rtutils_rtstruct(case, path)
    geometry = stack_geometry(rt.series_data)
    assert all(gap > 0 for gap in np.diff(geometry.heights)), "rt-utils sorts its slices up the normal"
    with_contours = [k for k, f in enumerate(order) if case.truth[f].any()]

    dataset = pydicom.dcmread(path)
    uid_rank = {str(ds.SOPInstanceUID): k for k, ds in enumerate(rt.series_data)}
    contours = [(uid_rank[str(c.ContourImageSequence[0].ReferencedSOPInstanceUID)],
                 np.asarray(c.ContourData, dtype=float).reshape(-1, 3), roi.ReferencedROINumber)
                for roi in dataset.ROIContourSequence for c in roi.ContourSequence]
    off = [k for k, _, _ in contours if abs(geometry.off[k]) > 0.01]

    _, result = check_json(case.dicom, case.seg, path)
    assert result["exact"] is False and result["in_plane"] == "identity"
    assert result["frame_of_image"] == [int(n.split()[1]) for n in result["image_names"]]  # each on its own frame
    line = finding(result, "stack of parallel planes built from the lowest frame",
                   f"k x {abs(geometry.spacing):.4g} mm, the mean slice spacing", "as rt-utils places them")
    max_off = max(abs(geometry.off[k]) for k in with_contours)
    if max_off > 0.01:
        assert f"{len(off)} contours of {len(contours)} lie off the plane of the frame they reference, by up to " \
               f"{max_off:.3g} mm (the slices are {geometry.gaps[0]:.3g} to {geometry.gaps[1]:.3g} mm apart" in line
    else:
        assert "off the plane" not in line
    moved = [k for k in with_contours if geometry.moved_mm[k] > 0.01]
    if moved:
        assert f"the contours of {_plural(len(moved), 'frame')} are moved within their planes, by up to " \
               f"{max(geometry.moved_mm[k] for k in with_contours):.3g} mm " \
               f"({max(geometry.moved_px[k] for k in with_contours):.3g} pixels; the slices are stacked " \
               f"{geometry.tilt:.3g} degrees off their normal" in line
    else:
        assert "moved within" not in line
    expected = {"ge_tilt": (True, True), "sliceincrement_gap": (True, False), "sliceincrement": (True, True),
                "gantrytilting": (False, True)}[name]
    assert (max_off > 0.01, bool(moved)) == expected, "the series is tilted / gapped as the README says"

    # what is left: the half-pixel shrink, every pixel under a contour (the check's words), and the oracle here:
    # rt_readers' own rasteriser on the contours placed by the stack computed above: the pixels strictly inside
    # and the pixels whose centres lie on a contour are, together, exactly the masks rt-utils was given
    finding(result, "all of them labelled by SegAlign only and each under a contour", "half a pixel",
            "counted inside, the contours give SegAlign's labels")
    names = {int(item.ROINumber): str(item.ROIName) for item in dataset.StructureSetROISequence}
    on_contours = 0
    rows, columns = case.truth.shape[1:]
    for k in with_contours:
        for number, name_ in names.items():
            polygons = []
            for rank, points, roi in contours:
                if rank == k and int(roi) == number:
                    rc, distance = to_pixels(points, geometry.planes[k])
                    assert np.max(np.abs(distance)) < 0.01, "the contours lie on rt-utils' stack planes"
                    polygons.append(rc)
            if not polygons:
                continue
            edges = np.zeros((rows, columns), dtype=bool)
            for polygon in polygons:
                edges |= on_edges(polygon, np.roll(polygon, -1, axis=0), (rows, columns), 1e-3)
            strictly = even_odd(polygons, (rows, columns)) & ~edges
            assert np.array_equal(strictly | edges, given[name_][:, :, k]), (name_, k)
            on_contours += int(np.count_nonzero(edges))
    assert 0 < result["residual_mismatched_pixels"] <= on_contours
    assert all(0.8 < label["dice_after"] < 1.0 for label in result["labels"] if label["frames"])


def test_rtutils_reads_its_own_contours_back_as_the_masks(cases, tmp_path: Path) -> None:
    """What docs/check.md says of rt-utils' reader: cv.fillPoly through its own stack geometry counts the pixels
    under a contour inside, so rt-utils sees its tilted, gapped GE RTSTRUCT as exactly the masks it was given."""
    case = cases("ge_tilt")
    rt, _, given = rtutils_rtstruct(case, tmp_path / "rtutils.dcm")
    with contextlib.redirect_stdout(io.StringIO()):
        for name, mask in given.items():
            assert np.array_equal(rt.get_roi_mask_by_name(name), mask), name


# ---------------------------------------------------------------------------------------------------------------
# overlapping segments on a real series: dcmqi's BINARY SEG of ct-3slice with five overlapping segments
# ---------------------------------------------------------------------------------------------------------------

def test_dcmqi_overlapping_seg_and_exports_of_it(cases, tmp_path: Path) -> None:
    """partial_overlaps.dcm (dcmqi's writer) as the segmentation, and as the export: exact, frame by frame; SegAlign's
    export of it (layers, masks, BINARY SEG, RTSTRUCT) exact; its masks written reversed and one segment mirrored
    left to right on every frame: named."""
    base = TESTDATA / "dcmqi_segmentations"
    seg, dicom = base / "partial_overlaps.dcm", base / "ct-3slice"
    if not seg.exists() or not dicom.exists():
        pytest.skip(f"real test data item missing: {seg}")
    alignment = segalign.align(dicom, seg)
    assert len(alignment.layers) > 1, "the segments overlap on the frames"
    masks = {label.name: alignment.mask(label.value) for label in alignment.segments}
    shared = sum(int(np.count_nonzero(sum(m[k].astype(int) for m in masks.values()) > 1)) for k in range(3))
    code, result = check_json(dicom, seg, seg)
    assert code == 0, result["findings"]
    finding(result, f"the segments overlap (SegAlign's labels have {shared} pixels in two segments or more")
    assert [label["name"] for label in result["labels"]] == list(masks)
    out = tmp_path / "out"
    assert run_cli("export", dicom, seg, "-o", out, "--masks", "--dicom-seg", "--rtstruct").code == 0
    for export in (out, out / "masks", out / "seg.dcm", out / "rtstruct.dcm"):
        code, result = check_json(dicom, seg, export)
        assert code == 0, (export.name, result["findings"])
    for name, stacked in masks.items():  # the user's masks: reversed, every segment whole
        folder = tmp_path / "user" / name
        folder.mkdir(parents=True)
        for k, mask in enumerate(stacked[::-1]):
            Image.fromarray((mask[:, ::-1] * 255).astype(np.uint8)).save(folder / f"{k}.png")
    _, result = check_json(dicom, seg, tmp_path / "user")
    assert result["frame_of_image"] == [2, 1, 0] and result["in_plane"] == "flip_columns"
    assert result["residual_mismatched_pixels"] == 0
    finding(result, "the images hold the frames in reverse order")
    assert all(label["dice_after"] == 1.0 for label in result["labels"])
