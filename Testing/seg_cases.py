"""The DICOM SEG and RTSTRUCT tests' shared cases: phantom series with their segmentation and the truth on each
frame, the source frames as pydicom reads them, the SimpleITK nearest-neighbour oracle on one frame, SEGs made by
highdicom's own writer, and the real TotalSegmentator pair. Used by test_dicom_seg.py, test_rtstruct.py and
test_formats.py; nothing here uses SegAlign's reading or sampling."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import seg_readers as readers
from conftest import TESTDATA
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



@dataclass
class Case:
    dicom: Path
    segmentation: Path
    truth: Callable[[SourceFrame], np.ndarray]
    args: tuple[str, ...] = ()
    min_labelled_frames: int = 5
    extra: dict = field(default_factory=dict)



def centred_stack(orientation, spacing, rows, columns, step, count=24, before=12, **kwargs):
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



def block_labels(points: np.ndarray, count: int, cell: float = 3.1) -> np.ndarray:
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
        specs = centred_stack(orientation, spacing, rows, columns, step)
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
        labels = block_labels(ras @ np.diag([-1.0, -1.0, 1.0]).T, count)
        labels = labels.astype(np.uint8) if count <= 255 else labels
        segmentation = write_nifti(root / "seg.nii.gz", labels, affine)
        args = ("--labels", "totalsegmentator") if count == 117 else ("--allow-many-labels",)
        return Case(dicom, segmentation, lambda frame: block_labels(frame.centres(), count), args=args)
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



def highdicom_ready(paths: list[Path]) -> list[pydicom.Dataset]:
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



def importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True



def save_like(labels: np.ndarray, reference: nib.Nifti1Image, path: Path) -> Path:
    image = nib.Nifti1Image(labels.astype(np.uint8), reference.affine, header=reference.header.copy())
    image.set_data_dtype(np.uint8)
    image.header.set_slope_inter(1, 0)
    nib.save(image, str(path))
    return path



def totalsegmentator_example(base: Path = TESTDATA / "totalsegmentator_example") -> Path:
    if not (base / "ct_dicom").is_dir() or not (base / "segmentation_ml.nii.gz").is_file():
        pytest.skip(f"real test data item missing: {base}")
    return base
