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
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import seg_readers as readers
from conftest import TESTDATA, leftovers, read_manifest, read_png, require, run_cli, snapshot
from phantoms import pixel_centres_from_file, rotated_orientation, small_phantom, stack_affine, write_segmentation
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid
from segalign.synthetic import (
    AXIAL,
    CORONAL,
    SAGITTAL,
    SeriesIdentity,
    grid_affine,
    shuffled_names,
    stack,
    write_enhanced,
    write_nifti,
    write_series,
)

PHANTOM = small_phantom()
PHANTOM_NAMES = {"big": 1, "left_blob": 2, "tilted_rod": 7}
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
SEG_TYPES = ("binary", "labelmap")
SOP_CLASS = {"binary": readers.BINARY_SEGMENTATION, "labelmap": readers.LABELMAP_SEGMENTATION}


def need_highdicom():
    return pytest.importorskip("highdicom", reason="highdicom reads the SEG independently (pip install highdicom)")


def need_sitk():
    return pytest.importorskip("SimpleITK", reason="SimpleITK is the resampling oracle (pip install SimpleITK)")


def need_dcmqi() -> None:
    need_sitk()
    if readers.segimage2itkimage() is None:
        pytest.skip("dcmqi's segimage2itkimage is not installed (pip install dcmqi)")


def need_dciodvfy() -> None:
    if readers.dciodvfy() is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed (apt-get install dicom3tools)")


# --------------------------------------------------------------------------------------------------------------------
# Source frames, read here with pydicom
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceFrame:
    path: Path
    frame: int  #: 1-based
    uid: str  #: SOPInstanceUID (the file meta's when the dataset's is blank)
    sop_class: str
    frames_in_file: int
    rows: int
    columns: int
    position: np.ndarray
    orientation: np.ndarray
    spacing: np.ndarray

    @property
    def key(self) -> tuple[str, int]:
        return (self.uid, self.frame)

    def centres(self) -> np.ndarray:
        return readers.pixel_centres(self.position, self.orientation, self.spacing, self.rows, self.columns)


@lru_cache(maxsize=64)
def _headers(folder: Path) -> tuple[tuple[Path, pydicom.Dataset], ...]:
    result = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            result.append((path, pydicom.dcmread(path, stop_before_pixels=True)))
        except pydicom.errors.InvalidDicomError:
            continue
    return tuple(result)


def source_frames(folder: Path) -> dict[tuple[str, int], SourceFrame]:
    """Every frame of every DICOM file in ``folder`` with its geometry, keyed by (SOPInstanceUID, frame)."""
    result = {}
    for path, dataset in _headers(folder):
        uid = str(dataset.get("SOPInstanceUID", "") or "").strip() or str(dataset.file_meta.MediaStorageSOPInstanceUID)
        sop_class = str(dataset.get("SOPClassUID", "") or "").strip() or str(dataset.file_meta.MediaStorageSOPClassUID)
        count = int(dataset.get("NumberOfFrames", 1) or 1)
        per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
        shared = dataset.get("SharedFunctionalGroupsSequence")
        for frame in range(1, count + 1):
            groups = ([per_frame[frame - 1]] if per_frame else []) + ([shared[0]] if shared else [])

            def find(
                sequence: str, keyword: str, groups: list = groups, dataset: pydicom.Dataset = dataset
            ) -> np.ndarray:
                for group in groups:
                    items = group.get(sequence)
                    if items and keyword in items[0]:
                        return np.array([float(v) for v in items[0][keyword].value])
                return np.array([float(v) for v in dataset[keyword].value])

            result[(uid, frame)] = SourceFrame(
                path,
                frame,
                uid,
                sop_class,
                count,
                int(dataset.Rows),
                int(dataset.Columns),
                find("PlanePositionSequence", "ImagePositionPatient"),
                find("PlaneOrientationSequence", "ImageOrientationPatient"),
                find("PixelMeasuresSequence", "PixelSpacing"),
            )
    return result


def source_counts(frames: dict[tuple[str, int], SourceFrame]) -> dict[str, int]:
    """``{SOPInstanceUID: NumberOfFrames}``, as highdicom_label_images wants its sources."""
    return {frame.uid: frame.frames_in_file for frame in frames.values()}


# --------------------------------------------------------------------------------------------------------------------
# SimpleITK oracle: nearest neighbour onto a one-frame reference image built from the frame's IPP, IOP, PixelSpacing
# --------------------------------------------------------------------------------------------------------------------


def itk_from_nifti(path: Path):
    """The NIfTI as an ITK image, geometry from nibabel's affine (as test_simpleitk_oracle does)."""
    sitk = need_sitk()
    image = nib.load(path)
    data = np.asarray(image.dataobj)
    lps = LPS_TO_RAS @ image.affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    result = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    result.SetSpacing(spacing.tolist())
    result.SetOrigin(lps[:3, 3].tolist())
    result.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    return result


def itk_on_frame(segmentation, frame: SourceFrame) -> np.ndarray:
    sitk = need_sitk()
    normal = np.cross(frame.orientation[:3], frame.orientation[3:])
    reference = sitk.Image(frame.columns, frame.rows, 1, sitk.sitkUInt8)
    reference.SetOrigin(frame.position.tolist())
    reference.SetSpacing([float(frame.spacing[1]), float(frame.spacing[0]), 1.0])
    reference.SetDirection(np.column_stack([frame.orientation[:3], frame.orientation[3:], normal]).ravel().tolist())
    resampled = sitk.Resample(
        segmentation, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, segmentation.GetPixelID()
    )
    return sitk.GetArrayFromImage(resampled)[0]


# --------------------------------------------------------------------------------------------------------------------
# Phantom cases: a series, a segmentation, and the truth on each frame
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Case:
    dicom: Path
    segmentation: Path
    truth: Callable[[SourceFrame], np.ndarray]
    args: tuple[str, ...] = ()
    min_labelled_frames: int = 5
    extra: dict = field(default_factory=dict)


def _centred_stack(orientation, spacing, rows, columns, step, count=24, before=12, **kwargs):
    normal = np.cross(orientation[:3], orientation[3:])
    step = np.asarray(step, float) if step is not None else 1.4 * normal
    centre_offset = spacing[1] * columns / 2 * np.asarray(orientation[:3]) + spacing[0] * rows / 2 * np.asarray(
        orientation[3:]
    )
    return stack(
        -centre_offset - before * step,
        count,
        step,
        orientation=orientation,
        spacing=spacing,
        rows=rows,
        columns=columns,
        **kwargs,
    )


def analytic(frame: SourceFrame) -> np.ndarray:
    """The phantom at the frame's pixel centres, from its own tags (phantoms.pixel_centres_from_file)."""
    return PHANTOM.labels_at(pixel_centres_from_file(frame.path, frame.frame - 1))


COINCIDENT = {
    # name: (orientation, spacing (row, col), rows, columns, step, permutation, flips)  -- as in test_phantoms.py
    "axial_las": (AXIAL, (0.9, 0.9), 40, 40, (0, 0, 1.5), (0, 1, 2), (False, True, False)),
    "sagittal": (SAGITTAL, (0.8, 0.8), 44, 40, (1.2, 0, 0), (2, 0, 1), (False, False, False)),
    "coronal": (CORONAL, (1.0, 1.0), 36, 42, (0, -1.3, 0), (0, 2, 1), (True, False, True)),
    "double_oblique": (
        rotated_orientation(0.35, -0.5, 0.2),
        (0.85, 0.85),
        40,
        40,
        None,
        (1, 0, 2),
        (False, False, False),
    ),
}


def _block_labels(points: np.ndarray, count: int, cell: float = 3.1) -> np.ndarray:
    """``count`` labels on a checkerboard of ``cell`` mm cells in x and y (value 1..count, cycling with z), 0 where
    x < -15 mm: an analytic label map with many values; cell edges sit between pixel centres."""
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    index = np.floor((x + 50.05) / cell).astype(np.int64) + 23 * np.floor((y + 50.05) / cell).astype(np.int64)
    index += 7 * np.round(z / 1.5).astype(np.int64)
    values = (index % count + 1).astype(np.uint16)
    values[x < -15.05] = 0
    return values


def build_case(name: str, root: Path) -> Case:
    root.mkdir(parents=True, exist_ok=True)
    dicom = root / "dicom"
    if name in COINCIDENT:
        orientation, spacing, rows, columns, step, permutation, flips = COINCIDENT[name]
        specs = _centred_stack(orientation, spacing, rows, columns, step)
        write_series(dicom, specs, file_names=shuffled_names(len(specs), seed=len(name)))
        affine, shape = stack_affine(specs, permutation, flips)
        return Case(
            dicom, write_segmentation(root / "seg.nii.gz", PHANTOM, affine, shape), analytic, min_labelled_frames=10
        )
    if name == "gantry_tilt":  # as test_phantoms.test_gantry_tilt_with_sheared_affine_is_exact
        tilt = np.radians(17.0)
        orientation = (1.0, 0.0, 0.0, 0.0, np.cos(tilt), -np.sin(tilt))
        specs = stack(
            (-18, -16, -15), 22, (0, 0, 1.4), orientation=orientation, spacing=(0.9, 0.9), rows=40, columns=40
        )
        write_series(dicom, specs)
        affine, shape = stack_affine(specs, flips=(False, True, False))
        return Case(
            dicom, write_segmentation(root / "seg.nii.gz", PHANTOM, affine, shape), analytic, min_labelled_frames=10
        )
    if name == "missing_slice":  # as test_phantoms.test_missing_slice_is_exact_and_reported
        specs = stack((-20, -20, -14), 20, (0, 0, 1.5), rows=40, columns=40)
        affine, shape = stack_affine(specs)
        del specs[9]
        write_series(dicom, specs)
        return Case(
            dicom, write_segmentation(root / "seg.nii.gz", PHANTOM, affine, shape), analytic, min_labelled_frames=10
        )
    if name == "left_handed":  # as test_phantoms.test_left_handed_stack_is_exact
        specs = stack((-20, -20, 14), 20, (0, 0, -1.5), rows=40, columns=40)
        write_series(dicom, specs)
        affine, shape = stack_affine(specs)
        return Case(
            dicom, write_segmentation(root / "seg.nii.gz", PHANTOM, affine, shape), analytic, min_labelled_frames=10
        )
    if name == "enhanced":  # as test_phantoms.test_enhanced_multiframe_matches_single_frame_files
        orientation = rotated_orientation(0.2, 0.1)
        normal = np.cross(orientation[:3], orientation[3:])
        specs = stack(
            -20 * np.asarray(orientation[:3]) - 20 * np.asarray(orientation[3:]) - 9 * normal,
            18,
            1.1 * normal,
            orientation=orientation,
            spacing=(1.0, 1.0),
            rows=40,
            columns=40,
        )
        write_enhanced(dicom / "multi.dcm", specs, identity=SeriesIdentity(), instance_number=5)
        affine, shape = stack_affine(specs, permutation=(2, 1, 0))
        return Case(
            dicom, write_segmentation(root / "seg.nii.gz", PHANTOM, affine, shape), analytic, min_labelled_frames=10
        )
    if name == "coarse_rotated_grid":  # test_simpleitk_oracle's double_oblique_frames_rotated_grid: truth is ITK
        orientation, spacing, rows, columns = rotated_orientation(0.4, -0.3, 0.25), (0.91, 0.77), 44, 52
        axes = np.asarray([(0.9, 0.3, 0.0), (0, 0, 1), (0.3, -0.9, 0.0)], dtype=float)
        q, r = np.linalg.qr(axes.T)
        axes = q.T * np.sign(np.diag(r))[:, None]
        normal = np.cross(orientation[:3], orientation[3:])
        step = 1.45 * normal
        centre = spacing[1] * columns / 2 * np.asarray(orientation[:3]) + spacing[0] * rows / 2 * np.asarray(
            orientation[3:]
        )
        specs = stack(
            -centre - 10 * step,
            20,
            step,
            orientation=orientation,
            spacing=spacing,
            rows=rows,
            columns=columns,
            instance_numbers=range(20, 0, -1),
        )
        write_series(dicom, specs, file_names=shuffled_names(20, seed=4))
        affine = grid_affine((-19.41, -3.77, -21.13), (1.31, 1.17, 1.53), axes)
        segmentation = write_segmentation(root / "seg.nii.gz", PHANTOM, affine, (33, 37, 31))
        itk = itk_from_nifti(segmentation)
        return Case(dicom, segmentation, lambda frame: itk_on_frame(itk, frame))
    if name in ("labels_117", "segments_300"):
        count = 117 if name == "labels_117" else 300
        specs = stack((-20, -20, -6), 10, (0, 0, 1.5), rows=40, columns=40)
        write_series(dicom, specs)
        affine, shape = stack_affine(specs)
        i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
        ras = np.stack([i, j, k], axis=-1) @ affine[:3, :3].T + affine[:3, 3]
        labels = _block_labels(ras @ np.diag([-1.0, -1.0, 1.0]).T, count)
        labels = labels.astype(np.uint8) if count <= 255 else labels
        segmentation = write_nifti(root / "seg.nii.gz", labels, affine)
        args = ("--labels", "totalsegmentator") if count == 117 else ("--allow-many-labels",)
        return Case(dicom, segmentation, lambda frame: _block_labels(frame.centres(), count), args=args)
    if name == "labels_above_255":  # as test_phantoms.test_labels_above_255_are_written_as_16_bit
        specs = stack((-20, -20, -10), 8, (0, 0, 1.5), rows=40, columns=40)
        write_series(dicom, specs)
        affine, shape = stack_affine(specs)
        labels = np.asarray(nib.load(write_segmentation(root / "ref.nii.gz", PHANTOM, affine, shape)).dataobj).astype(
            np.uint16
        )
        labels[labels == 7] = 1000
        remap = np.zeros(8, dtype=np.uint16)
        remap[[1, 2, 7]] = [1, 2, 1000]
        return Case(dicom, write_nifti(root / "seg.nii.gz", labels, affine), lambda frame: remap[analytic(frame)])
    raise KeyError(name)


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


def _highdicom_ready(paths: list[Path]) -> list[pydicom.Dataset]:
    """The source files with the patient/study attributes highdicom copies (synthetic files lack some), rewritten."""
    datasets = []
    for path in paths:
        dataset = pydicom.dcmread(path)
        for keyword in (
            "PatientBirthDate",
            "PatientSex",
            "AccessionNumber",
            "StudyID",
            "StudyDate",
            "StudyTime",
            "ReferringPhysicianName",
        ):
            if keyword not in dataset:
                setattr(dataset, keyword, "")
        dataset.save_as(path)
        datasets.append(pydicom.dcmread(path))
    return datasets


def highdicom_seg(
    path: Path, sources: list[pydicom.Dataset], labels: np.ndarray, names: dict[int, str], kind: str
) -> Path:
    """A SEG made by highdicom from ``labels`` (frames x rows x columns, label values), segment i = i-th value."""
    hd = need_highdicom()
    values = sorted(names)
    segment_array = np.zeros(labels.shape, dtype=np.uint16 if len(values) > 255 else np.uint8)
    for number, value in enumerate(values, start=1):
        segment_array[labels == value] = number
    algorithm = hd.AlgorithmIdentificationSequence(
        name="reader test", version="1", family=hd.sr.CodedConcept("123109", "DCM", "Manual Processing")
    )
    tissue = hd.sr.CodedConcept("85756007", "SCT", "Tissue")
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=names[value],
            segmented_property_category=tissue,
            segmented_property_type=tissue,
            algorithm_type="AUTOMATIC",
            algorithm_identification=algorithm,
        )
        for number, value in enumerate(values, start=1)
    ]
    segmentation = hd.seg.Segmentation(
        sources,
        segment_array,
        kind.upper(),
        descriptions,
        generate_uid(),
        2,
        generate_uid(),
        1,
        "test",
        "test",
        "1",
        "0",
        transfer_syntax_uid=RLELossless if kind == "labelmap" else ExplicitVRLittleEndian,
    )
    segmentation.save_as(path)
    return path


@pytest.mark.parametrize("kind", SEG_TYPES)
@pytest.mark.parametrize("layout", ["single_frame", "enhanced"])
def test_readers_on_highdicom_seg(tmp_path: Path, kind: str, layout: str) -> None:
    """highdicom writes a SEG from a known label array (the phantom on an oblique series): readers (a), (b) and (c)
    give the array back on every source frame, and dciodvfy finds nothing wrong with a BINARY SEG beyond what it
    finds wrong with the sources."""
    need_highdicom()
    orientation = rotated_orientation(0.3, -0.2, 0.1)
    specs = _centred_stack(orientation, (0.8, 0.8), 48, 44, None, count=14, before=7)
    if layout == "enhanced":
        paths = [write_enhanced(tmp_path / "dicom" / "multi.dcm", specs)]
    else:
        paths = write_series(tmp_path / "dicom", specs, file_names=shuffled_names(len(specs), seed=3))
    sources = _highdicom_ready(paths)
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


def importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def test_readers_on_highdicom_seg_with_300_segments(tmp_path: Path) -> None:
    """More than 255 segments: highdicom's LABELMAP stores 16-bit pixels; both readers give the labels back."""
    need_highdicom()
    specs = stack((-20, -20, -6), 6, (0, 0, 1.5), rows=40, columns=40)
    paths = write_series(tmp_path / "dicom", specs)
    sources = _highdicom_ready(paths)
    frames = source_frames(tmp_path / "dicom")
    ordered = [next(f for f in frames.values() if f.path == path) for path in paths]
    truth = {frame.key: _block_labels(frame.centres(), 300) for frame in ordered}
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
    specs = _centred_stack(AXIAL, (0.9, 0.9), 40, 40, (0, 0, 1.5), count=16, before=8)
    paths = write_series(tmp_path / "dicom", specs)
    sources = _highdicom_ready(paths)
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
    assert set(from_pydicom) == {key for key, t in truth.items() if t.any()}, (
        "SEG frames must be exactly where labels are"
    )
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

    # Frames: only where a label is; their number from labels.json (BINARY) or the truth (LABELMAP).
    truth = {key: exported.case.truth(frame) for key, frame in frames.items()}
    if kind == "binary":
        assert len(seg_frames) == sum(int(entry["frames"]) for entry in entries)
        for number, entry in zip(numbers, entries):
            mine = [f for f in seg_frames if f.segment_number == number]
            assert len(mine) == int(entry["frames"]), entry["name"]
            assert len(mine) == sum(int((truth[key] == int(entry["value"])).any()) for key in frames), entry["name"]
    else:
        assert len(seg_frames) == sum(int(t.any()) for t in truth.values())
        assert len({f.source for f in seg_frames}) == len(seg_frames), "one LABELMAP frame per source frame"
    assert int(dataset.NumberOfFrames) == len(seg_frames)
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


def _save_like(labels: np.ndarray, reference: nib.Nifti1Image, path: Path) -> Path:
    image = nib.Nifti1Image(labels.astype(np.uint8), reference.affine, header=reference.header.copy())
    image.set_data_dtype(np.uint8)
    image.header.set_slope_inter(1, 0)
    nib.save(image, str(path))
    return path


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


def _totalsegmentator(base: Path = TESTDATA / "totalsegmentator_example") -> Path:
    if not (base / "ct_dicom").is_dir() or not (base / "segmentation_ml.nii.gz").is_file():
        pytest.skip(f"real test data item missing: {base}")
    return base


@pytest.fixture(scope="module")
def totalsegmentator_binary(tmp_path_factory) -> tuple[Exported, Path]:
    """The TotalSegmentator pair as shipped, exported as BINARY SEG. Its datasets have blank SOPClassUID,
    SOPInstanceUID, SeriesInstanceUID and StudyInstanceUID (only the file meta names class and instance), so the SEG
    references each file by its file meta UIDs and gets new study and series UIDs, with a warning saying so."""
    base = _totalsegmentator()
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
    segmentation_path = _save_like(labels, reference, tmp_path / "seg.nii.gz")
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
    segmentation_path = _save_like(labels, volume_image, tmp_path / "seg.nii.gz")
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
