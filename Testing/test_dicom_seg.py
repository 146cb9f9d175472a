"""``segalign export --dicom-seg``: the DICOM SEG (``seg.dcm``) checked frame by frame against truth SegAlign does
not compute.

Readers (Testing/seg_readers.py, none of them SegAlign's): (a) pydicom alone, (b) highdicom, (c) dcmqi's
segimage2itkimage (volumes sampled at every source pixel centre), (d) dciodvfy. The readers themselves are first
checked on SEGs made by highdicom's own writer from a known mask array and on dcmqi's reference SEGs with the label
maps they were made from (``test_readers_*``), so a failure further down is about SegAlign's SEG, not the readers.

Truth per frame is what the other tests use: the analytic phantom at the frame's pixel centres (computed from its
own tags) where the segmentation grid coincides with the DICOM grid, else SimpleITK nearest-neighbour resampling
onto a one-frame reference image. The SEG, rebuilt by (a) and (b), must equal it exactly on every frame, and equal
the export's own labels/*.png.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import seg_readers as readers
from conftest import leftovers, read_manifest, read_png, require, run_cli, snapshot
from phantoms import rotated_orientation, stack_affine, write_segmentation
from pydicom.uid import RLELossless
from seg_cases import (
    COINCIDENT,
    PHANTOM,
    PHANTOM_NAMES,
    SEG_TYPES,
    SOP_CLASS,
    Case,
    SourceFrame,
    block_labels,
    build_case,
    centred_stack,
    highdicom_ready,
    highdicom_seg,
    importable,
    itk_from_nifti,
    itk_on_frame,
    need_dciodvfy,
    need_dcmqi,
    need_highdicom,
    need_sitk,
    save_like,
    source_counts,
    source_frames,
    totalsegmentator_example,
)
from segalign.synthetic import (
    AXIAL,
    shuffled_names,
    stack,
    write_enhanced,
    write_nifti,
    write_series,
)

# The phantom cases, the source frames read with pydicom and the SimpleITK oracle are in seg_cases.py.


CASES = [
    *COINCIDENT,
    "gantry_tilt",
    "missing_slice",
    "left_handed",
    "enhanced",
    "coarse_rotated_grid",
    "labels_117",
    "labels_above_255",
]
#: (case, type) pairs checked frame by frame; segments_300 only as LABELMAP (its 16-bit pixels are the point)
FRAME_CASES = [(case, kind) for case in CASES for kind in SEG_TYPES] + [("segments_300", "labelmap")]
#: cases dcmqi can hold as volumes (regular stacks, no tilt, no gap)
DCMQI_CASES = [
    "axial_las",
    "sagittal",
    "coronal",
    "double_oblique",
    "left_handed",
    "enhanced",
    "coarse_rotated_grid",
    "labels_above_255",
]


@dataclass
class Exported:
    case: Case
    out: Path
    kind: str
    run: object

    @property
    def seg(self) -> Path:
        return self.out / "seg.dcm"

    def labels_json(self) -> list[dict]:
        return json.loads((self.out / "labels.json").read_text(encoding="utf-8"))

    def export_json(self) -> dict:
        return json.loads((self.out / "export.json").read_text(encoding="utf-8"))

    def table(self) -> dict[str, int]:
        """``{name: value}`` of the labels present on some frame (the SEG's segments)."""
        return {entry["name"]: int(entry["value"]) for entry in self.labels_json() if int(entry["frames"]) > 0}

    def pngs(self) -> dict[tuple[str, int], np.ndarray]:
        return {
            (row["sop_instance_uid"], int(row["frame"])): read_png(self.out / row["label_png"])
            for row in read_manifest(self.out)
        }


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Exports made once per module: ``exports(case, kind)`` (kind binary or labelmap)."""
    cache: dict[tuple[str, str], Exported] = {}
    cases: dict[str, Case] = {}

    def get(name: str, kind: str) -> Exported:
        if (name, kind) not in cache:
            if name not in cases:
                cases[name] = build_case(name, tmp_path_factory.mktemp(name))
            case = cases[name]
            out = case.dicom.parent / f"out_{kind}"
            run = run_cli(
                "export",
                case.dicom,
                case.segmentation,
                "-o",
                out,
                "-q",
                "--dicom-seg",
                "--dicom-seg-type",
                kind,
                *case.args,
            )
            assert run.code == 0, f"{name} {kind}: export failed ({run.code}): {run.stderr}"
            assert (out / "seg.dcm").is_file(), f"{name} {kind}: no seg.dcm in {sorted(p.name for p in out.iterdir())}"
            cache[(name, kind)] = Exported(case, out, kind, run)
        return cache[(name, kind)]

    return get


def assert_frames_equal(where: str, frames: dict, got: dict, want: dict, *, name: str) -> None:
    """``got`` (from a SEG reader; frames it lacks count as empty) equals ``want`` on every source frame."""
    stray = sorted(set(got) - set(frames))
    assert not stray, f"{where}: {name} has frames for source frames the series does not have: {stray[:5]}"
    problems = []
    for key, frame in frames.items():
        expected = want[key]
        image = got.get(key)
        if image is None:
            image = np.zeros_like(expected)
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


# --------------------------------------------------------------------------------------------------------------------
# 1. The readers, on SEGs made by highdicom's writer and by dcmqi (no SegAlign involved)
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", SEG_TYPES)
@pytest.mark.parametrize("layout", ["single_frame", "enhanced"])
def test_readers_on_highdicom_seg(tmp_path: Path, kind: str, layout: str) -> None:
    """highdicom writes a SEG from a known label array (the phantom on an oblique series): readers (a), (b) and (c)
    give the array back on every source frame, and dciodvfy finds nothing wrong with a BINARY SEG beyond what it
    finds wrong with the sources."""
    need_highdicom()
    orientation = rotated_orientation(0.3, -0.2, 0.1)
    specs = centred_stack(orientation, (0.8, 0.8), 48, 44, None, count=14, before=7)
    if layout == "enhanced":
        paths = [write_enhanced(tmp_path / "dicom" / "multi.dcm", specs)]
    else:
        paths = write_series(tmp_path / "dicom", specs, file_names=shuffled_names(len(specs), seed=3))
    sources = highdicom_ready(paths)
    frames = source_frames(tmp_path / "dicom")
    ordered = sorted(frames.values(), key=lambda f: (str(f.path), f.frame))
    if layout == "single_frame":  # highdicom takes frame i from source_images[i]
        ordered = [next(f for f in frames.values() if f.path == path) for path in paths]
    truth = {frame.key: PHANTOM.labels_at(frame.centres()) for frame in ordered}
    assert sum(int(t.any()) for t in truth.values()) >= 8
    labels = np.stack([truth[frame.key] for frame in ordered])
    names = {value: name for name, value in PHANTOM_NAMES.items()}
    seg = highdicom_seg(tmp_path / "seg.dcm", sources, labels, names, kind)
    header = pydicom.dcmread(seg, stop_before_pixels=True)
    assert header.SOPClassUID == SOP_CLASS[kind]
    if kind == "labelmap":
        assert header.file_meta.TransferSyntaxUID == RLELossless

    assert_frames_equal(layout, frames, readers.pydicom_label_images(seg, PHANTOM_NAMES), truth, name="pydicom")
    assert_frames_equal(
        layout,
        frames,
        readers.highdicom_label_images(seg, PHANTOM_NAMES, source_counts(frames)),
        truth,
        name="highdicom",
    )
    by_order = readers.pydicom_label_images(seg, [1, 2, 7])  # mapping by segment order gives the same
    assert_frames_equal(layout, frames, by_order, truth, name="pydicom by order")
    with pytest.raises(readers.SegReadError, match="not in the label table"):
        readers.pydicom_label_images(seg, {"big": 1, "left_blob": 2})

    if readers.segimage2itkimage() is not None and importable("SimpleITK"):
        segments = readers.dcmqi_segments(seg, tmp_path / "dcmqi")
        assert {s.label: n for n, s in segments.items()} == {"big": 1, "left_blob": 2, "tilted_rod": 3}
        for number, value in ((1, 1), (2, 2), (3, 7)):
            for frame in frames.values():
                sampled, offset = readers.sample_nearest(segments[number].mask, frame.centres())
                if truth[frame.key].any():
                    assert offset < 1e-3, f"dcmqi's grid is not on frame {frame.key}: {offset}"
                np.testing.assert_array_equal(
                    sampled != 0, truth[frame.key] == value, err_msg=f"dcmqi {number} {frame.key}"
                )

    if kind == "binary" and readers.dciodvfy() is not None:
        allowed = {readers.normalise_message(e) for path in paths for e in readers.dciodvfy_errors(path)}
        extra = sorted({readers.normalise_message(e) for e in readers.dciodvfy_errors(seg)} - allowed)
        assert not extra, extra


def test_readers_on_highdicom_seg_with_300_segments(tmp_path: Path) -> None:
    """More than 255 segments: highdicom's LABELMAP stores 16-bit pixels; both readers give the labels back."""
    need_highdicom()
    specs = stack((-20, -20, -6), 6, (0, 0, 1.5), rows=40, columns=40)
    paths = write_series(tmp_path / "dicom", specs)
    sources = highdicom_ready(paths)
    frames = source_frames(tmp_path / "dicom")
    ordered = [next(f for f in frames.values() if f.path == path) for path in paths]
    truth = {frame.key: block_labels(frame.centres(), 300) for frame in ordered}
    values = sorted(set(np.unique(np.stack(list(truth.values())))) - {0})
    assert len(values) == 300
    names = {int(v): f"segment {int(v)}" for v in values}
    seg = highdicom_seg(tmp_path / "seg.dcm", sources, np.stack([truth[f.key] for f in ordered]), names, "labelmap")
    assert int(pydicom.dcmread(seg, stop_before_pixels=True).BitsAllocated) == 16
    table = {name: value for value, name in names.items()}
    assert_frames_equal("300", frames, readers.pydicom_label_images(seg, table), truth, name="pydicom")
    assert_frames_equal(
        "300", frames, readers.highdicom_label_images(seg, table, source_counts(frames)), truth, name="highdicom"
    )


REFERENCE_SEGS = {
    # case: (SEG, label map it was made from, source folder, value standing for "no frame" in the label map)
    "ct-3slice_liver": ("liver.dcm", "liver_seg.nrrd", "ct-3slice", None),
    "23x38x3": ("23x38x3/seg/label.seg", "23x38x3/nrrd/label.nrrd", "23x38x3/image", None),  # bit-packed across frames
    "24x38x3": ("24x38x3/seg/label.seg", "24x38x3/nrrd/label.nrrd", "24x38x3/image", None),
    "sparse_labelmap": ("sparse-labelmap-noppv.dcm", "sparse_labelmap_noppv_seg.nrrd", "24x38x3/image", None),
    "sparse_labelmap_padding": ("sparse-labelmap-ppv5.dcm", "sparse_labelmap_ppv5_seg.nrrd", "24x38x3/image", 5),
}


def _dcmqi_reference(testdata: Path) -> Path:
    return require(testdata / "dcmqi_segmentations")


@pytest.mark.parametrize("case", sorted(REFERENCE_SEGS))
def test_readers_on_dcmqi_reference_segs(testdata: Path, tmp_path: Path, case: str) -> None:
    """dcmqi's reference SEGs (BINARY, feet-first, 23-column frames bit-packed across frame boundaries, sparse
    LABELMAP with a Background segment 0 and a pixel padding value) against the label maps they were made from,
    sampled here at every source pixel centre: readers (a), (b) and (c) agree with the label map exactly."""
    sitk = need_sitk()
    base = _dcmqi_reference(testdata)
    seg_name, label_map, folder, padding = REFERENCE_SEGS[case]
    seg, label_map, folder = require(base / seg_name), require(base / label_map), require(base / folder)
    frames = source_frames(folder)
    volume = sitk.ReadImage(str(label_map))
    truth = {}
    for key, frame in frames.items():
        values, offset = readers.sample_nearest(volume, frame.centres())
        assert offset < 1e-3, f"data: the label map's voxels are not on the pixel centres of {key}"
        if padding is not None:
            values[values == padding] = 0  # the frame the sparse SEG leaves out
        truth[key] = values.astype(np.uint8)
    assert any(t.any() for t in truth.values())
    labelled = sum(int(t.any()) for t in truth.values())
    found = readers.pydicom_label_images(seg)
    assert len(found) == labelled if "sparse" in case else len(found) == 3
    assert_frames_equal(case, frames, found, truth, name="pydicom")
    if importable("highdicom"):
        # dcmqi does not write SpatialLocationsPreserved, so highdicom must be told to index by source frame anyway
        with pytest.raises(RuntimeError, match="spatial locations"):
            readers.highdicom_label_images(seg, None, source_counts(frames))
        got = readers.highdicom_label_images(seg, None, source_counts(frames), ignore_spatial_locations=True)
        assert_frames_equal(case, frames, got, truth, name="highdicom")
    if readers.segimage2itkimage() is not None:
        segments = readers.dcmqi_segments(seg, tmp_path / "dcmqi")
        for key, frame in frames.items():
            rebuilt = np.zeros_like(truth[key])
            for number, segment in segments.items():
                if number == 0:
                    continue
                sampled, _ = readers.sample_nearest(segment.mask, frame.centres())
                rebuilt[sampled != 0] = number
            np.testing.assert_array_equal(rebuilt, truth[key], err_msg=f"dcmqi {case} {key}")


def test_readers_on_overlapping_reference_segments(testdata: Path) -> None:
    """partial_overlaps.dcm: five overlapping segments, some on several frames. Per-segment masks (pydicom) equal
    the three label maps they were made from; a single label image cannot hold them, which both readers say."""
    sitk = need_sitk()
    base = _dcmqi_reference(testdata)
    seg = require(base / "partial_overlaps.dcm")
    frames = source_frames(require(base / "ct-3slice"))
    volumes = [sitk.ReadImage(str(require(base / f"partial_overlaps-{n}.nrrd"))) for n in (1, 2, 3)]
    masks = readers.pydicom_segment_masks(seg)
    assert sum(len(per_segment) for per_segment in masks.values()) == 7
    checked = 0
    for key, frame in frames.items():
        sampled = [readers.sample_nearest(volume, frame.centres())[0] for volume in volumes]
        for number in range(1, 6):
            expected = np.any([values == number for values in sampled], axis=0)
            got = masks.get(key, {}).get(number, np.zeros_like(expected))
            np.testing.assert_array_equal(got, expected, err_msg=f"segment {number} on {key}")
            checked += int(expected.any())
    assert checked == 7
    with pytest.raises(readers.SegReadError, match="overlaps"):
        readers.pydicom_label_images(seg)
    if importable("highdicom"):
        with pytest.raises(readers.SegReadError, match="overlap"):
            readers.highdicom_label_images(seg, None, source_counts(frames), ignore_spatial_locations=True)


def test_readers_detect_tampering(tmp_path: Path) -> None:
    """The checks have teeth: a highdicom SEG with two frames' source references swapped, one frame moved by a
    pixel, or two SegmentLabels swapped no longer matches the truth by the readers that look at what was changed."""
    need_highdicom()
    specs = centred_stack(AXIAL, (0.9, 0.9), 40, 40, (0, 0, 1.5), count=16, before=8)
    paths = write_series(tmp_path / "dicom", specs)
    sources = highdicom_ready(paths)
    frames = source_frames(tmp_path / "dicom")
    ordered = [next(f for f in frames.values() if f.path == path) for path in paths]
    truth = {frame.key: PHANTOM.labels_at(frame.centres()) for frame in ordered}
    names = {value: name for name, value in PHANTOM_NAMES.items()}
    seg = highdicom_seg(tmp_path / "seg.dcm", sources, np.stack([truth[f.key] for f in ordered]), names, "binary")
    assert_frames_equal("untouched", frames, readers.pydicom_label_images(seg, PHANTOM_NAMES), truth, name="pydicom")

    def tampered(name: str, change: Callable[[pydicom.Dataset], None]) -> Path:
        dataset = pydicom.dcmread(seg)
        change(dataset)
        dataset.save_as(tmp_path / name)
        return tmp_path / name

    def swap_sources(dataset: pydicom.Dataset) -> None:
        items = dataset.PerFrameFunctionalGroupsSequence
        big = [i for i, item in enumerate(items) if item.SegmentIdentificationSequence[0].ReferencedSegmentNumber == 1]
        a, b = items[big[0]], items[big[len(big) // 2]]
        sa, sb = (
            a.DerivationImageSequence[0].SourceImageSequence[0],
            b.DerivationImageSequence[0].SourceImageSequence[0],
        )
        sa.ReferencedSOPInstanceUID, sb.ReferencedSOPInstanceUID = (
            sb.ReferencedSOPInstanceUID,
            sa.ReferencedSOPInstanceUID,
        )

    swapped = tampered("swapped.dcm", swap_sources)
    with pytest.raises(AssertionError, match="pixels differ|overlap"):
        assert_frames_equal(
            "swapped", frames, readers.pydicom_label_images(swapped, PHANTOM_NAMES), truth, name="pydicom"
        )
    with pytest.raises(AssertionError, match="pixels differ|overlap"):
        got = readers.highdicom_label_images(swapped, PHANTOM_NAMES, source_counts(frames))
        assert_frames_equal("swapped", frames, got, truth, name="highdicom")

    def swap_labels(dataset: pydicom.Dataset) -> None:
        first, second = dataset.SegmentSequence[0], dataset.SegmentSequence[1]
        first.SegmentLabel, second.SegmentLabel = second.SegmentLabel, first.SegmentLabel

    relabelled = tampered("relabelled.dcm", swap_labels)
    with pytest.raises(AssertionError, match="pixels differ|overlap"):
        assert_frames_equal(
            "relabelled", frames, readers.pydicom_label_images(relabelled, PHANTOM_NAMES), truth, name="pydicom"
        )

    if readers.segimage2itkimage() is not None and importable("SimpleITK"):

        def shift_all(dataset: pydicom.Dataset) -> None:  # every frame one column to the right
            for item in dataset.PerFrameFunctionalGroupsSequence:
                plane = item.PlanePositionSequence[0]
                plane.ImagePositionPatient = [
                    float(plane.ImagePositionPatient[0]) + 0.9,
                    *plane.ImagePositionPatient[1:],
                ]

        shifted = readers.dcmqi_segments(tampered("shifted.dcm", shift_all), tmp_path / "dcmqi")
        wrong = 0
        for frame in frames.values():
            sampled, _ = readers.sample_nearest(shifted[1].mask, frame.centres())
            wrong += int(np.count_nonzero((sampled != 0) != (truth[frame.key] == 1)))
        assert wrong > 50, "dcmqi must see a SEG moved by one pixel"


def test_dciodvfy_reader_reports_errors(tmp_path: Path) -> None:
    """dciodvfy_errors returns the Error lines: a synthetic CT without ImageType has at least that error."""
    need_dciodvfy()
    (path,) = write_series(tmp_path / "dicom", stack((0, 0, 0), 1, (0, 0, 1)))
    errors = readers.dciodvfy_errors(path)
    assert errors and all(line.startswith("Error") for line in errors)
    assert any("ImageType" in line for line in errors), errors
    assert readers.normalise_message("Error -   Missing  x ") == "Missing x"


# --------------------------------------------------------------------------------------------------------------------
# 2. SegAlign's SEG on the phantoms, frame by frame
# --------------------------------------------------------------------------------------------------------------------


def _places_left_out_frames(seg: Path) -> bool:
    """Whether the SEG gives SpacingBetweenSlices (and so may leave its empty frames out)."""
    dataset = pydicom.dcmread(seg, stop_before_pixels=True)
    return "SpacingBetweenSlices" in dataset.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]


@pytest.mark.parametrize("case,kind", FRAME_CASES)
def test_seg_frames_equal_truth(exports, case: str, kind: str) -> None:
    """Every source frame: the SEG read by pydicom alone and by highdicom equals the truth (analytic, or SimpleITK for
    the coarse rotated grid) and the export's own label PNG, exactly; frames without labels have no SEG frame."""
    exported = exports(case, kind)
    frames = source_frames(exported.case.dicom)
    truth = {key: exported.case.truth(frame) for key, frame in frames.items()}
    assert sum(int(t.any()) for t in truth.values()) >= exported.case.min_labelled_frames, "the truth must have labels"
    pngs = exported.pngs()
    assert set(pngs) == set(frames), "the manifest must list every source frame"
    assert_frames_equal(case, frames, pngs, truth, name="labels/*.png")
    table = exported.table()

    from_pydicom = readers.pydicom_label_images(exported.seg, table)
    if _places_left_out_frames(exported.seg):
        assert set(from_pydicom) == {key for key, t in truth.items() if t.any()}, (
            "SEG frames must be exactly where labels are"
        )
    else:  # no SpacingBetweenSlices (a gap, uneven spacing): a reader could not place left-out frames
        assert set(from_pydicom) == set(frames), "every frame is written when SpacingBetweenSlices is not"
    assert_frames_equal(case, frames, from_pydicom, truth, name="SEG (pydicom)")
    if importable(
        "highdicom"
    ):  # whether highdicom indexes without the override: test_highdicom_indexes_by_source_frame
        from_highdicom = readers.highdicom_label_images(
            exported.seg, table, source_counts(frames), ignore_spatial_locations=True
        )
        assert_frames_equal(case, frames, from_highdicom, truth, name="SEG (highdicom)")


@pytest.mark.parametrize("case,kind", [("axial_las", "binary"), ("enhanced", "labelmap")])
def test_highdicom_indexes_by_source_frame(exports, case: str, kind: str) -> None:
    """highdicom's get_pixels_by_source_instance / _frame work on the SEG as it is, with no override: each frame's
    SourceImageSequence item says SpatialLocationsPreserved YES (the SEG's pixels lie on the source's own pixels)."""
    need_highdicom()
    exported = exports(case, kind)
    frames = source_frames(exported.case.dicom)
    _, seg_frames = readers.read_seg_frames(exported.seg)
    said = sorted({str(frame.spatial_locations_preserved) for frame in seg_frames})
    assert said == ["YES"], f"SourceImageSequence SpatialLocationsPreserved is {said}, not YES on every frame"
    got = readers.highdicom_label_images(exported.seg, exported.table(), source_counts(frames))
    assert_frames_equal(case, frames, got, exported.pngs(), name="SEG (highdicom, strict)")


@pytest.mark.parametrize("case,kind", FRAME_CASES)
def test_seg_structure(exports, case: str, kind: str) -> None:
    """SOP class, transfer syntax and bit depth; segments 1..n by ascending label value, named from labels.json, with
    a CIELab colour close to the label's colour; as many frames as there are (label, frame) pairs (BINARY) or
    labelled frames (LABELMAP), none empty; each frame on its source frame (IPP, IOP, PixelSpacing, Rows,
    Columns); patient, study and frame of reference from the source, new series and instance UIDs; export.json."""
    exported = exports(case, kind)
    frames = source_frames(exported.case.dicom)
    dataset, seg_frames = readers.read_seg_frames(exported.seg)
    entries = [entry for entry in exported.labels_json() if int(entry["frames"]) > 0]
    entries.sort(key=lambda entry: int(entry["value"]))

    assert dataset.SOPClassUID == SOP_CLASS[kind] == dataset.file_meta.MediaStorageSOPClassUID
    assert dataset.SOPInstanceUID == dataset.file_meta.MediaStorageSOPInstanceUID
    assert dataset.Modality == "SEG"
    assert dataset.SegmentationType == kind.upper()
    syntax = dataset.file_meta.TransferSyntaxUID
    if kind == "binary":
        assert int(dataset.BitsAllocated) == 1 and int(dataset.BitsStored) == 1
        assert not syntax.is_compressed, f"BINARY SEG in {syntax.name}"
    else:
        assert syntax == RLELossless, f"LABELMAP SEG in {syntax.name}, not RLE Lossless"
        assert int(dataset.BitsAllocated) == (16 if len(entries) > 255 else 8), (len(entries), dataset.BitsAllocated)
    some = next(iter(frames.values()))
    assert (int(dataset.Rows), int(dataset.Columns)) == (some.rows, some.columns)

    # Segments: one per label present on some frame, 1..n in ascending value, SegmentLabel = labels.json name. A
    # LABELMAP describes every pixel value it holds (PS3.3 C.8.20.2.3): segment 0 is the background, the padding.
    segments = list(dataset.SegmentSequence)
    if kind == "labelmap":
        background = segments.pop(0)
        assert int(background.SegmentNumber) == 0 and str(background.SegmentLabel) == "Background"
        assert background.SegmentedPropertyTypeCodeSequence[0].CodeValue == "125040"
        assert int(dataset.PixelPaddingValue) == 0
    numbers = [int(item.SegmentNumber) for item in segments]
    assert numbers == list(range(1, len(entries) + 1)), numbers[:10]
    assert [str(item.SegmentLabel) for item in segments] == [entry["name"] for entry in entries]
    for item, entry in zip(segments, entries):
        lab = item.get("RecommendedDisplayCIELabValue")
        assert lab is not None and len(lab) == 3 and all(0 <= int(v) <= 65535 for v in lab), item.SegmentNumber
        if importable("highdicom"):  # highdicom's CIELab -> sRGB conversion
            from highdicom.color import CIELabColor

            rgb = CIELabColor.from_dicom_value([int(v) for v in lab]).to_rgb(clip=True)
            assert np.max(np.abs(np.subtract(rgb, entry["color"]))) <= 3, (entry["name"], rgb, entry["color"])
        assert item.get("SegmentAlgorithmType"), item.SegmentNumber
        assert item.get("SegmentedPropertyCategoryCodeSequence") and item.get("SegmentedPropertyTypeCodeSequence")

    # Frames: only where a label is; their number from labels.json (BINARY) or the truth (LABELMAP). Without
    # SpacingBetweenSlices every empty frame is written too (for BINARY as a frame of the first segment).
    truth = {key: exported.case.truth(frame) for key, frame in frames.items()}
    if not _places_left_out_frames(exported.seg):
        empty = [key for key, t in truth.items() if not t.any()]
        assert empty, "the case has empty frames"
        assert {f.source for f in seg_frames} == set(frames)
        assert sorted(f.source for f in seg_frames if not f.pixels.any()) == sorted(empty)
        assert all(f.segment_number in (None, 1) for f in seg_frames if not f.pixels.any())
        seg_frames = [f for f in seg_frames if f.pixels.any()]
    if kind == "binary":
        assert len(seg_frames) == sum(int(entry["frames"]) for entry in entries)
        for number, entry in zip(numbers, entries):
            mine = [f for f in seg_frames if f.segment_number == number]
            assert len(mine) == int(entry["frames"]), entry["name"]
            assert len(mine) == sum(int((truth[key] == int(entry["value"])).any()) for key in frames), entry["name"]
    else:
        assert len(seg_frames) == sum(int(t.any()) for t in truth.values())
        assert len({f.source for f in seg_frames}) == len(seg_frames), "one LABELMAP frame per source frame"
    assert int(dataset.NumberOfFrames) == len(seg_frames) + (0 if _places_left_out_frames(exported.seg) else
                                                             len([k for k, t in truth.items() if not t.any()]))
    for frame in seg_frames:
        assert frame.pixels.any(), f"SEG frame {frame.index + 1} is empty"
        assert frame.source in frames, f"SEG frame {frame.index + 1} references {frame.source}, not a source frame"
        source = frames[frame.source]
        where = f"SEG frame {frame.index + 1} ({source.path.name} frame {source.frame})"
        assert frame.position is not None and np.allclose(frame.position, source.position, atol=1e-4), (
            where,
            frame.position,
            source.position,
        )
        assert frame.orientation is not None and np.allclose(frame.orientation, source.orientation, atol=1e-6), where
        assert frame.spacing is not None and np.allclose(frame.spacing, source.spacing, atol=1e-6), where
    multi = [f for f in frames.values() if f.frames_in_file > 1]
    if multi:
        dataset_items = dataset.PerFrameFunctionalGroupsSequence
        for item in dataset_items:
            assert "ReferencedFrameNumber" in item.DerivationImageSequence[0].SourceImageSequence[0], (
                "multi-frame source"
            )

    # Identity: copied from the source; new series and instance.
    first_path = next(iter(frames.values())).path
    source = pydicom.dcmread(first_path, stop_before_pixels=True)
    for keyword in (
        "PatientName",
        "PatientID",
        "StudyInstanceUID",
        "FrameOfReferenceUID",
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
    assert dataset.SOPInstanceUID not in {f.uid for f in frames.values()}
    assert re.fullmatch(r"[0-9]+(\.[0-9]+)+", dataset.SeriesInstanceUID) and len(dataset.SeriesInstanceUID) <= 64
    assert dataset.SeriesDescription == "SegAlign segmentation"
    assert int(dataset.SeriesNumber) == int(source.SeriesNumber) + 1000
    referenced = dataset.ReferencedSeriesSequence
    assert [str(item.SeriesInstanceUID) for item in referenced] == [str(source.SeriesInstanceUID)]
    listed = {str(item.ReferencedSOPInstanceUID) for item in referenced[0].ReferencedInstanceSequence}
    assert {f.source[0] for f in seg_frames} <= listed <= {f.uid for f in frames.values()}

    assert exported.export_json().get("outputs") == {"dicom_seg": "seg.dcm"}


@pytest.mark.parametrize("kind", SEG_TYPES)
@pytest.mark.parametrize("case", DCMQI_CASES)
def test_dcmqi_reads_seg_on_every_pixel_centre(exports, tmp_path: Path, case: str, kind: str) -> None:
    """dcmqi's segimage2itkimage turns the SEG into one volume per segment; each, sampled at every pixel centre of
    every source frame, equals the truth mask of its label; dcmqi's names are labels.json's, its colours close."""
    need_dcmqi()
    exported = exports(case, kind)
    frames = source_frames(exported.case.dicom)
    entries = sorted((e for e in exported.labels_json() if int(e["frames"]) > 0), key=lambda e: int(e["value"]))
    segments = readers.dcmqi_segments(exported.seg, tmp_path / "dcmqi")
    assert sorted(segments) == list(range(1, len(entries) + 1))
    truth = {key: exported.case.truth(frame) for key, frame in frames.items()}
    for number, entry in zip(range(1, len(entries) + 1), entries):
        segment = segments[number]
        assert segment.label == entry["name"]
        if segment.rgb is not None:
            assert np.max(np.abs(np.subtract(segment.rgb, entry["color"]))) <= 3, (
                entry["name"],
                segment.rgb,
                entry["color"],
            )
        problems = []
        for key, frame in frames.items():
            sampled, offset = readers.sample_nearest(segment.mask, frame.centres())
            expected = truth[key] == int(entry["value"])
            if expected.any() and offset > 1e-3:
                problems.append(f"{key}: pixel centres {offset:.4f} voxels off dcmqi's grid")
            wrong = int(np.count_nonzero((sampled != 0) != expected))
            if wrong:
                problems.append(f"{frame.path.name} frame {frame.frame}: {wrong} pixels differ")
        assert not problems, f"{case} {kind} segment {number} ({entry['name']}):\n" + "\n".join(problems[:8])


@pytest.mark.parametrize("case", ["axial_las", "enhanced", "gantry_tilt", "labels_117"])
def test_dciodvfy_binary_seg_has_no_errors_of_its_own(exports, case: str) -> None:
    """dciodvfy finds no error in the BINARY SEG that it does not also find in its source instances."""
    need_dciodvfy()
    exported = exports(case, "binary")
    paths = {frame.path for frame in source_frames(exported.case.dicom).values()}
    allowed = {readers.normalise_message(error) for path in paths for error in readers.dciodvfy_errors(path)}
    errors = readers.dciodvfy_errors(exported.seg)
    extra = sorted({readers.normalise_message(error) for error in errors} - allowed)
    assert not extra, f"{case}: dciodvfy errors of the SEG's own:\n" + "\n".join(extra)


def test_python_api_writes_the_same_seg(exports, tmp_path: Path) -> None:
    """``export_segmentation(..., ExportOptions(dicom_seg=DicomSegOptions("labelmap")))`` writes seg.dcm with the
    same frames as the command line."""
    from segalign import export_segmentation, load_segmentation, scan_folder
    from segalign.options import DicomSegOptions, ExportOptions

    cli = exports("double_oblique", "labelmap")
    series = scan_folder(cli.case.dicom).select()
    out = tmp_path / "api"
    export_segmentation(
        series,
        load_segmentation(cli.case.segmentation),
        out,
        ExportOptions(dicom_seg=DicomSegOptions("labelmap")),
        dicom_root=cli.case.dicom,
    )
    frames = source_frames(cli.case.dicom)
    table = cli.table()
    api = readers.pydicom_label_images(out / "seg.dcm", table)
    assert_frames_equal("api", frames, api, {k: v for k, v in cli.pngs().items()}, name="API SEG")
    assert pydicom.dcmread(out / "seg.dcm", stop_before_pixels=True).SOPClassUID == readers.LABELMAP_SEGMENTATION
    assert json.loads((out / "export.json").read_text(encoding="utf-8")).get("outputs") == {"dicom_seg": "seg.dcm"}


# --------------------------------------------------------------------------------------------------------------------
# 3. Real series: the SEG against SimpleITK resampling
# --------------------------------------------------------------------------------------------------------------------


def _real_export(dicom: Path, segmentation: Path, out: Path, kind: str) -> Exported:
    run = run_cli("export", dicom, segmentation, "-o", out, "-q", "--dicom-seg", "--dicom-seg-type", kind)
    assert run.code == 0, f"export failed ({run.code}): {run.stderr}"
    assert (out / "seg.dcm").is_file()
    return Exported(Case(dicom, segmentation, lambda frame: None), out, kind, run)


def _check_real(exported: Exported, oracle: Callable[[SourceFrame], np.ndarray], min_labelled: int) -> None:
    frames = source_frames(exported.case.dicom)
    truth = {key: oracle(frame) for key, frame in frames.items()}
    assert sum(int(t.any()) for t in truth.values()) >= min_labelled
    table = exported.table()
    pngs = exported.pngs()
    assert_frames_equal("real", frames, pngs, truth, name="labels/*.png")
    from_pydicom = readers.pydicom_label_images(exported.seg, table)
    assert set(from_pydicom) == {key for key, t in truth.items() if t.any()}
    assert_frames_equal("real", frames, from_pydicom, truth, name="SEG (pydicom)")
    if importable("highdicom"):
        got = readers.highdicom_label_images(exported.seg, table, source_counts(frames), ignore_spatial_locations=True)
        assert_frames_equal("real", frames, got, truth, name="SEG (highdicom)")
    dataset, seg_frames = readers.read_seg_frames(exported.seg)
    for frame in seg_frames:
        source = frames[frame.source]
        assert np.allclose(frame.position, source.position, atol=1e-4), (frame.index, frame.position, source.position)
        assert np.allclose(frame.orientation, source.orientation, atol=1e-6), frame.index
        if source.frames_in_file > 1:
            ref = (
                dataset.PerFrameFunctionalGroupsSequence[frame.index].DerivationImageSequence[0].SourceImageSequence[0]
            )
            assert int(ref.ReferencedFrameNumber) == source.frame


@pytest.fixture(scope="module")
def totalsegmentator_binary(tmp_path_factory) -> tuple[Exported, Path]:
    """The TotalSegmentator pair as shipped, exported as BINARY SEG. Its datasets have blank SOPClassUID,
    SOPInstanceUID, SeriesInstanceUID and StudyInstanceUID (only the file meta names class and instance), so the SEG
    references each file by its file meta UIDs and gets new study and series UIDs, with a warning saying so."""
    base = totalsegmentator_example()
    for path in sorted((base / "ct_dicom").iterdir())[:3]:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        assert not str(dataset.get("SOPInstanceUID", "") or "").strip(), "data: the datasets' SOPInstanceUID is blank"
        assert not str(dataset.get("StudyInstanceUID", "") or "").strip(), "data: the StudyInstanceUID is blank"
    out = tmp_path_factory.mktemp("totalseg") / "out"
    return _real_export(base / "ct_dicom", base / "segmentation_ml.nii.gz", out, "binary"), base


def test_totalsegmentator_blank_uids_are_said_not_guessed_silently(totalsegmentator_binary) -> None:
    exported, base = totalsegmentator_binary
    warnings = json.loads((exported.out / "export.json").read_text())["warnings"]
    study = [w for w in warnings if "no StudyInstanceUID" in w]
    series = [w for w in warnings if "no SeriesInstanceUID; seg.dcm references it as" in w]
    assert study and series, warnings
    dataset = pydicom.dcmread(exported.seg, stop_before_pixels=True)
    assert dataset.StudyInstanceUID in study[0]
    assert dataset.ReferencedSeriesSequence[0].SeriesInstanceUID in series[0]
    meta = {pydicom.dcmread(p, stop_before_pixels=True).file_meta.MediaStorageSOPInstanceUID
            for p in (base / "ct_dicom").iterdir()}
    referenced = {item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
                  for item in dataset.PerFrameFunctionalGroupsSequence}
    assert referenced <= meta and len(referenced) >= 15


def test_totalsegmentator_seg_equals_simpleitk(totalsegmentator_binary) -> None:
    """TotalSegmentator CT (JPEG 2000) and its 31-label segmentation, BINARY: every frame of the SEG equals ITK's
    resampling of the NIfTI (read by ITK) onto the frame as GDCM reads it; the SEG references each file by its file
    meta SOPInstanceUID."""
    sitk = need_sitk()
    exported, base = totalsegmentator_binary
    segmentation = sitk.ReadImage(str(base / "segmentation_ml.nii.gz"))

    def oracle(frame: SourceFrame) -> np.ndarray:
        reference = sitk.ReadImage(str(frame.path))
        resampled = sitk.Resample(
            segmentation, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, segmentation.GetPixelID()
        )
        return sitk.GetArrayFromImage(resampled)[0]

    _check_real(exported, oracle, min_labelled=20)
    dataset = pydicom.dcmread(exported.seg, stop_before_pixels=True)
    assert len(dataset.SegmentSequence) == len(exported.table()) >= 20
    names = [str(item.SegmentLabel) for item in dataset.SegmentSequence]
    assert "liver" in names, names


def test_totalsegmentator_binary_seg_passes_dciodvfy(totalsegmentator_binary) -> None:
    need_dciodvfy()
    exported, _ = totalsegmentator_binary
    paths = {frame.path for frame in source_frames(exported.case.dicom).values()}
    allowed = {readers.normalise_message(error) for path in paths for error in readers.dciodvfy_errors(path)}
    extra = sorted({readers.normalise_message(error) for error in readers.dciodvfy_errors(exported.seg)} - allowed)
    assert not extra, "dciodvfy errors of the SEG's own:\n" + "\n".join(extra)


def test_ge_tilt_labelmap_seg_equals_simpleitk(testdata: Path, tmp_path: Path) -> None:
    """GE head CT, 18.5 degree gantry tilt, uneven gaps; the tilt-corrected dcm2niix volume thresholded at -200.5 and
    300.5 HU as segmentation, LABELMAP: every SEG frame equals ITK's resampling onto the frame as GDCM reads it."""
    sitk = need_sitk()
    base = require(testdata / "dcm_qa_ct_ge_tilt")
    dicom = require(base / "dicom")
    reference = nib.load(str(require(base / "ref_dcm2niix" / "_2_Tilt_Eq_1.nii.gz")))
    data = np.asanyarray(reference.dataobj)
    labels = (data > -200.5).astype(np.uint8) + (data > 300.5).astype(np.uint8)
    segmentation_path = save_like(labels, reference, tmp_path / "seg.nii.gz")
    exported = _real_export(dicom, segmentation_path, tmp_path / "out", "labelmap")
    segmentation = sitk.ReadImage(str(segmentation_path))

    def oracle(frame: SourceFrame) -> np.ndarray:
        reference_frame = sitk.ReadImage(str(frame.path))
        resampled = sitk.Resample(
            segmentation, reference_frame, sitk.Transform(), sitk.sitkNearestNeighbor, 0, segmentation.GetPixelID()
        )
        return sitk.GetArrayFromImage(resampled)[0]

    _check_real(exported, oracle, min_labelled=25)
    assert pydicom.dcmread(exported.seg, stop_before_pixels=True).file_meta.TransferSyntaxUID == RLELossless


def test_canon_enhanced_binary_seg_equals_simpleitk(testdata: Path, tmp_path: Path) -> None:
    """Canon double-oblique DTI as one enhanced file of 520 frames (13 volumes at 40 positions); dcm2niix's first
    volume thresholded as segmentation, BINARY: every SEG frame (ReferencedFrameNumber = the source frame) equals ITK's
    resampling onto a one-frame reference built from that frame's functional groups."""
    need_sitk()
    base = require(testdata / "dcm_qa_canon_sag_oblique")
    dicom = require(base / "enhanced")
    reference = nib.load(str(require(base / "ref_dcm2niix" / "11000_SAG_DTI_PA-ALL_20d_enh.nii.gz")))
    volume0 = np.asanyarray(reference.dataobj)[..., 0]
    thresholds = np.quantile(volume0, [0.6, 0.9]) + 0.5  # dcm2niix stores integers; +0.5 keeps ties away
    labels = (volume0 > thresholds[0]).astype(np.uint8) + (volume0 > thresholds[1]).astype(np.uint8)
    volume_image = nib.Nifti1Image(volume0, reference.affine, header=reference.header)
    segmentation_path = save_like(labels, volume_image, tmp_path / "seg.nii.gz")
    exported = _real_export(dicom, segmentation_path, tmp_path / "out", "binary")
    itk = itk_from_nifti(segmentation_path)
    _check_real(exported, lambda frame: itk_on_frame(itk, frame), min_labelled=100)


# --------------------------------------------------------------------------------------------------------------------
# 4. Refusals: one error line, exit status 1, nothing left behind
# --------------------------------------------------------------------------------------------------------------------


def _assert_refused(tmp_path: Path, dicom: Path, segmentation: Path, kind: str, pattern: str) -> None:
    plain = run_cli("export", dicom, segmentation, "-o", tmp_path / "plain", "-q")
    assert plain.code == 0, f"without --dicom-seg the export works: {plain.stderr}"
    parent = tmp_path / "exports"
    parent.mkdir()
    before = snapshot(tmp_path / "dicom")
    run = run_cli("export", dicom, segmentation, "-o", parent / "out", "-q", "--dicom-seg", "--dicom-seg-type", kind)
    assert run.code == 1, (run.code, run.stderr)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("segalign: error:"), run.stderr
    assert re.search(pattern, lines[0], re.IGNORECASE), lines[0]
    assert list(parent.iterdir()) == [] and leftovers(parent) == [], sorted(p.name for p in parent.iterdir())
    assert snapshot(tmp_path / "dicom") == before


@pytest.mark.parametrize("kind", SEG_TYPES)
def test_refused_without_frame_of_reference(tmp_path: Path, kind: str) -> None:
    specs = stack((-20, -20, -10), 10, (0, 0, 1.5), rows=40, columns=40)
    for path in write_series(tmp_path / "dicom", specs):
        dataset = pydicom.dcmread(path)
        del dataset.FrameOfReferenceUID
        dataset.save_as(path)
    affine, shape = stack_affine(specs)
    segmentation = write_segmentation(tmp_path / "seg.nii.gz", PHANTOM, affine, shape)
    _assert_refused(tmp_path, tmp_path / "dicom", segmentation, kind, r"frame ?of ?reference")


@pytest.mark.parametrize("kind", SEG_TYPES)
def test_refused_when_no_label_falls_on_a_frame(tmp_path: Path, kind: str) -> None:
    """The segmentation's grid covers the series, but its only label lies beyond the last frame."""
    specs = stack((-20, -20, -10), 30, (0, 0, 1.5), rows=40, columns=40)
    affine, shape = stack_affine(specs)
    write_series(tmp_path / "dicom", specs[:20])
    labels = np.zeros(shape, dtype=np.uint8)
    labels[10:20, 10:20, 25:28] = 3
    segmentation = write_nifti(tmp_path / "seg.nii.gz", labels, affine)
    _assert_refused(tmp_path, tmp_path / "dicom", segmentation, kind, r"label|segment")


def test_help_lists_dicom_seg_options() -> None:
    run = run_cli("export", "--help")
    assert run.code == 0
    assert "--dicom-seg" in run.stdout and "--dicom-seg-type" in run.stdout
    assert "binary" in run.stdout and "labelmap" in run.stdout
