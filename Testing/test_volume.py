"""``--volume``: the series' pixels and labels as volumes on its own grid.

Truths, none of them SegAlign's:

* dcm2niix (the shipped ``ref_dcm2niix`` NIfTIs, else the PyPI ``dcm2niix`` run here, see :func:`run_dcm2niix`):
  ``image.nii.gz`` equals its volume voxel for voxel, its affines within 1e-3 mm (with gantry tilt, dcm2niix's raw
  sform differs in one stated way: see test_a_tilted_series...).
* The DICOM tags read here with pydicom (pixel centres written out from the standard, pixel values times
  RescaleSlope plus RescaleIntercept): every voxel centre lies on its pixel's centre and holds its value.
* The export's own label PNGs: every label voxel equals the label of its pixel on its frame's PNG.

Tests skip with the reason when the real data or dcm2niix is missing.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from conftest import TESTDATA, read_manifest, read_png, run_cli
from phantoms import rotated_orientation, small_phantom
from segalign import export_segmentation, load_segmentation, scan_folder
from segalign.errors import SegAlignError
from segalign.options import ExportOptions, VolumeOptions
from segalign.synthetic import SeriesIdentity, las_affine, rasterize, stack, write_nifti, write_series

RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0])
#: Affines and voxel centres agree with their truth within this (mm).
AFFINE_TOLERANCE_MM = 1e-3

#: The regular series of the shared test data (parallel planes, constant spacing, one frame per position), with
#: dcm2niix's NIfTI of it where one is shipped (else dcm2niix is run; with ``-p n`` for Philips, see
#: :func:`run_dcm2niix`).
REGULAR = {
    "totalsegmentator_ct": ("totalsegmentator_example/ct_dicom", None),
    "decubitus_hfs": ("dcm_qa_decubitus/HFS", "dcm_qa_decubitus/ref_dcm2niix/HFS/t1_fl2d_sag_3.nii.gz"),
    "decubitus_hfdr": ("dcm_qa_decubitus/HFDR", "dcm_qa_decubitus/ref_dcm2niix/HFDR/t1_fl2d_sag_2.nii.gz"),
    "dcmqi_ct_3slice": ("dcmqi_segmentations/ct-3slice", None),
    "dcmqi_23x38x3": ("dcmqi_segmentations/23x38x3/image", None),
    "dcmqi_24x38x3": ("dcmqi_segmentations/24x38x3/image", None),
    "dcmqi_23x38x3_multiframe": ("dcmqi_segmentations/23x38x3/multiframe", None),
    "d2n_generic_anatomical": ("dicom2nifti/generic/anatomical/001", None),
    "d2n_generic_implicit": ("dicom2nifti/generic/anatomical/001_implicit", None),
    "d2n_generic_non_isotropic": ("dicom2nifti/generic/anatomical/002_non_isotropic", None),
    "d2n_jpeg2000": ("dicom2nifti/generic/compressed/001", None),
    "d2n_j2k": ("dicom2nifti/generic/compressed_j2k/001", None),
    "d2n_jpeg_lossless": ("dicom2nifti/generic/compressed_jpeg/001", None),
    "d2n_jpegls": ("dicom2nifti/generic/compressed_jpegls/001", None),
    "d2n_rle": ("dicom2nifti/generic/compressed_rle/001", None),
    "d2n_ge": ("dicom2nifti/ge/anatomical/001", None),
    "d2n_hitachi_double_oblique": ("dicom2nifti/hitachi/anatomical/001", None),
    "d2n_hyperfine": ("dicom2nifti/hyperfine/anatomical/001", None),
    "d2n_philips": ("dicom2nifti/philips/anatomical/001", None),
    "d2n_philips_enhanced": ("dicom2nifti/philips_enhanced/anatomical/001", None),
    "d2n_siemens": ("dicom2nifti/siemens/anatomical/001", None),
    "d2n_siemens_multiframe": ("dicom2nifti/siemens_multiframe/anatomical/001", None),
    "d2n_sagittal_reversed": ("dicom2nifti/failing/slicecount/001", None),
    "rtutils_mim_ct": ("rtstruct/rtutils_mim", None),  # two CT slices beside two structure sets
}


# ------------------------------------------------------------------------------------------ truth from the tags


class TagFrame:
    """One frame as the DICOM tags say, read here with pydicom (the standard's C.7.6.2.1.1, written out)."""

    def __init__(self, path: Path, dataset: pydicom.Dataset, index: int) -> None:
        self.path, self.index = path, index
        groups = None
        if "PerFrameFunctionalGroupsSequence" in dataset:
            groups = [dataset.PerFrameFunctionalGroupsSequence[index]]
            if dataset.get("SharedFunctionalGroupsSequence"):
                groups.append(dataset.SharedFunctionalGroupsSequence[0])

        def value(sequence: str, keyword: str, default=None):
            for group in groups or []:
                if sequence in group and keyword in group[sequence][0]:
                    return group[sequence][0][keyword].value
            return dataset.get(keyword, default)

        self.position = np.array(value("PlanePositionSequence", "ImagePositionPatient"), dtype=float)
        self.orientation = np.array(value("PlaneOrientationSequence", "ImageOrientationPatient"), dtype=float)
        self.spacing = np.array(value("PixelMeasuresSequence", "PixelSpacing"), dtype=float)
        self.slope = float(value("PixelValueTransformationSequence", "RescaleSlope", 1) or 1)
        self.intercept = float(value("PixelValueTransformationSequence", "RescaleIntercept", 0) or 0)
        self.rows, self.columns = int(dataset.Rows), int(dataset.Columns)
        self.instance_number = int(dataset.get("InstanceNumber", 0) or 0)
        self.normal = np.cross(self.orientation[:3], self.orientation[3:])

    def centres(self) -> np.ndarray:
        """LPS pixel centres, ``(rows, columns, 3)``: IPP + column * dc * IOP[0:3] + row * dr * IOP[3:6]."""
        r = np.arange(self.rows)[:, None, None]
        c = np.arange(self.columns)[None, :, None]
        return self.position + c * self.spacing[1] * self.orientation[:3] + r * self.spacing[0] * self.orientation[3:]

    def values(self) -> np.ndarray:
        """Modality values: stored * RescaleSlope + RescaleIntercept."""
        dataset = pydicom.dcmread(self.path)
        pixels = dataset.pixel_array
        if pixels.ndim == 3:
            pixels = pixels[self.index]
        return pixels.astype(np.float64) * self.slope + self.intercept


def tag_frames(folder: Path) -> list[TagFrame]:
    """Every image frame of the one series in ``folder``, in position order (along cross(row, column))."""
    frames = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            continue
        if "Rows" not in dataset or not ("ImagePositionPatient" in dataset
                                         or "PerFrameFunctionalGroupsSequence" in dataset):
            continue
        for index in range(int(dataset.get("NumberOfFrames", 1) or 1)):
            frames.append(TagFrame(path, dataset, index))
    normal = frames[0].normal
    return sorted(frames, key=lambda frame: float(np.dot(frame.position, normal)))


def voxel_centres(affine: np.ndarray, shape: tuple[int, ...], k: int) -> np.ndarray:
    """RAS centres of slice ``k``'s voxels, ``(i, j, 3)``."""
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    points = np.stack([i, j, np.full_like(i, k), np.ones_like(i)], axis=-1).astype(float)
    return (points @ affine.T)[..., :3]


def as_voxels(per_pixel: np.ndarray) -> np.ndarray:
    """A frame's ``(rows, columns, ...)`` array as its slice of the volume: voxel (i, j) = column i, row rows-1-j."""
    return np.swapaxes(per_pixel[::-1], 0, 1)


def assert_on_pixel_centres(image: nib.Nifti1Image, frames: list[TagFrame]) -> None:
    """Every voxel centre of the sform lies on its pixel's centre (slice k = k-th frame in position order)."""
    assert image.shape[2] == len(frames)
    affine = image.get_sform()
    for k, frame in enumerate(frames):
        truth = as_voxels(frame.centres() @ RAS_FROM_LPS.T)
        error = np.abs(voxel_centres(affine, image.shape, k) - truth).max()
        assert error < AFFINE_TOLERANCE_MM, f"slice {k}: voxel centres {error:.4g} mm off their pixels"


def assert_labels_are_the_pngs(export: Path, frames: list[TagFrame], names=("labels",)) -> None:
    """Every voxel of labels.nii.gz (and of each further layer) equals its pixel on its frame's label PNG."""
    rows = manifest_by_frame(export)
    for number, name in enumerate(names, start=1):
        labels = np.asanyarray(nib.load(export / f"{name}.nii.gz").dataobj)
        assert labels.shape[2] == len(frames)
        for k, frame in enumerate(frames):
            row = rows[(frame.path.name, frame.index + 1)]
            png = read_png(export / row["label_png" if number == 1 else f"label_png_{number}"])
            assert np.array_equal(labels[:, :, k], as_voxels(png)), f"{name}: slice {k} differs from its PNG"


def manifest_by_frame(export: Path) -> dict[tuple[str, int], dict[str, str]]:
    """The export's manifest rows by (file name, frame number): SOPInstanceUIDs may be blank (TotalSegmentator's
    example), file names are unique in the series' folders here."""
    rows = {(Path(row["source_file"]).name, int(row["frame"])): row for row in read_manifest(export)}
    assert len(rows) == len(read_manifest(export)), "file names are not unique"
    return rows


# ------------------------------------------------------------------------------------------ dcm2niix


def dcm2niix_command() -> str:
    """The dcm2niix executable (the PyPI package's, else one on the PATH), or a skip."""
    try:
        import dcm2niix

        return str(dcm2niix.bin)
    except (ImportError, AttributeError):
        found = shutil.which("dcm2niix")
        if found is None:
            pytest.skip("dcm2niix is not installed (pip install dcm2niix)")
        return found


def run_dcm2niix(dicom: Path, output: Path, name: str = "vol", philips: bool = False) -> Path:
    """dcm2niix's raw conversion of the series in ``dicom`` as ``output/name.nii``: ``-x i``, a 3D acquisition
    stacked as its frames are, not rotated to the nearest canonical orientation (which dcm2niix does by default,
    for 3D sequences only); for Philips ``-p n``, modality units (RescaleSlope and RescaleIntercept), not its
    'precise' scaling. (``-p n`` elsewhere would make dcm2niix use the first frame's slope and intercept for
    every frame: dicom2nifti's 002_non_isotropic has one per frame.)"""
    output.mkdir(parents=True, exist_ok=True)
    command = [dcm2niix_command(), *(["-p", "n"] if philips else []), "-x", "i", "-z", "n", "-b", "n", "-f", name]
    done = subprocess.run([*command, "-o", str(output), str(dicom)], capture_output=True, text=True, timeout=300)
    path = output / f"{name}.nii"
    assert path.is_file(), f"dcm2niix wrote no {path.name}: {done.stdout} {done.stderr}"
    return path


def reference(case: str, tmp_path: Path) -> nib.Nifti1Image:
    folder, shipped = REGULAR[case]
    if shipped is not None and (TESTDATA / shipped).is_file():
        return nib.load(TESTDATA / shipped)
    return nib.load(run_dcm2niix(TESTDATA / folder, tmp_path / "dcm2niix", philips="philips" in case))


def threshold_segmentation(image: nib.Nifti1Image, path: Path) -> Path:
    """A label map made from a volume on its own grid: 1 above its 60th percentile, 2 above its 90th."""
    values = np.asanyarray(image.dataobj).astype(np.float64)
    low, high = np.percentile(values, [60, 90])
    labels = ((values > low).astype(np.uint8) + (values > high)).astype(np.uint8)
    write_nifti(path, labels, image.get_sform())
    return path


def require_data(folder: str) -> Path:
    path = TESTDATA / folder
    if not path.exists():
        pytest.skip(f"real test data item missing: {path}")
    return path


# ------------------------------------------------------------------------------------------ real regular series


@pytest.mark.parametrize("case", sorted(REGULAR))
def test_every_regular_series_gives_dcm2niixs_volume(case: str, tmp_path: Path):
    dicom = require_data(REGULAR[case][0])
    ref = reference(case, tmp_path)
    segmentation = threshold_segmentation(ref, tmp_path / "seg.nii.gz")
    export = tmp_path / "export"
    result = export_segmentation(scan_folder(dicom).select(), load_segmentation(segmentation), export,
                                 ExportOptions(volume=True), threads=1)
    assert result.outputs["volume_image"] == "image.nii.gz" and result.outputs["volume_labels"] == "labels.nii.gz"
    image = nib.load(export / "image.nii.gz")
    assert image.shape == ref.shape[:3]
    assert np.abs(image.get_sform() - ref.get_sform()).max() < AFFINE_TOLERANCE_MM, (image.get_sform(), ref.get_sform())
    assert np.abs(image.get_qform() - ref.get_qform()).max() < AFFINE_TOLERANCE_MM
    assert int(image.header["sform_code"]) == int(ref.header["sform_code"]) == 1
    ours, theirs = image.get_fdata(), ref.get_fdata()
    if image.get_data_dtype().kind == "f":
        assert np.allclose(ours, theirs, rtol=1e-6, atol=1e-6 * max(1.0, np.abs(theirs).max()))
    else:
        assert np.array_equal(ours, theirs), f"{np.count_nonzero(ours != theirs)} voxels differ from dcm2niix's"
    frames = tag_frames(dicom)
    assert_on_pixel_centres(image, frames)
    for k in (0, len(frames) // 2, len(frames) - 1):
        assert np.allclose(ours[:, :, k], as_voxels(frames[k].values()), atol=1e-3), f"slice {k}"
    assert_labels_are_the_pngs(export, frames)


def test_image_dtype_follows_the_rescale(tmp_path: Path):
    """CT with integral slope and intercept: int16 in HU; a float slope: float32 (dcm2niix keeps the stored values
    and a scale factor; the values agree)."""
    dicom = require_data("totalsegmentator_example/ct_dicom")
    ref = nib.load(run_dcm2niix(dicom, tmp_path / "ref"))
    segmentation = threshold_segmentation(ref, tmp_path / "seg.nii.gz")
    run = run_cli("export", dicom, segmentation, "-o", tmp_path / "export", "--volume")
    assert run.code == 0, run.stderr
    assert "volumes:" in run.stdout
    image = nib.load(tmp_path / "export" / "image.nii.gz")
    assert image.get_data_dtype() == np.int16 and np.asanyarray(image.dataobj).min() < -1000  # HU, not stored
    provenance = json.loads((tmp_path / "export" / "export.json").read_text())
    assert provenance["options"]["volume"] == {"format": "nifti", "masks": False, "resample": False}
    assert provenance["volume"]["shape"] == [512, 512, 20]
    assert np.allclose(provenance["volume"]["affine_ras"], image.get_sform(), atol=1e-6)


# ------------------------------------------------------------------------------------------ tilt


def test_a_tilted_series_gets_the_sheared_affine_of_dcm2niixs_raw_conversion(tmp_path: Path):
    """GE head CT, 18.5 deg gantry tilt. Its first 14 slices are evenly spaced (4.22 mm along the table), so they
    make a volume without resampling: the raw slices, as dcm2niix's raw _2.nii.gz holds them, with a sheared
    affine. dcm2niix's raw sform has the same row, column and origin, and its slice column along the table, but
    as long as the slices are apart *along their normal* (4.0019 mm = 4.22 * cos 18.5 deg: its 'retain distance
    between slices', dcm2niix issue 697); SegAlign's is the step from IPP to IPP, which puts every slice on its
    frame. The qform (orthogonal: no shear) is dcm2niix's."""
    source = require_data("dcm_qa_ct_ge_tilt/dicom")
    raw = nib.load(TESTDATA / "dcm_qa_ct_ge_tilt/ref_dcm2niix/_2.nii.gz")
    dicom = tmp_path / "first14"
    dicom.mkdir()
    for number in range(1, 15):
        shutil.copy(source / f"{number:02d}.dcm", dicom)
    segmentation = threshold_segmentation(raw, tmp_path / "seg.nii.gz")
    run = run_cli("export", dicom, segmentation, "-o", tmp_path / "export", "--volume")
    assert run.code == 0, run.stderr
    assert "sheared" in run.stderr
    image = nib.load(tmp_path / "export" / "image.nii.gz")
    ours, theirs = image.get_sform(), raw.get_sform()
    assert np.abs(ours[:, [0, 1, 3]] - theirs[:, [0, 1, 3]]).max() < AFFINE_TOLERANCE_MM
    tilt = math.radians(18.5)
    assert np.abs(ours[:3, 2] - theirs[:3, 2] / math.cos(tilt)).max() < 0.01  # the header's tilt is rounded
    assert np.abs(ours[:3, 2] - [0, 0, 4.22]).max() < AFFINE_TOLERANCE_MM
    assert abs(ours[1, 1] * ours[2, 2] - ours[2, 1] * ours[1, 2]) > 0  # sheared: slice axis off the normal
    assert np.abs(image.get_qform() - raw.get_qform()).max() < AFFINE_TOLERANCE_MM
    assert np.array_equal(image.get_fdata(), raw.get_fdata()[:, :, :14])
    frames = tag_frames(dicom)
    assert_on_pixel_centres(image, frames)
    assert_labels_are_the_pngs(tmp_path / "export", frames)


def test_dicom2niftis_tilted_series_matches_dcm2niix(tmp_path: Path):
    dicom = require_data("dicom2nifti/failing/gantrytilting/001")
    raw = nib.load(run_dcm2niix(dicom, tmp_path / "ref"))
    segmentation = threshold_segmentation(raw, tmp_path / "seg.nii.gz")
    export_segmentation(scan_folder(dicom).select(), load_segmentation(segmentation), tmp_path / "export",
                        ExportOptions(volume=True), threads=1)
    image = nib.load(tmp_path / "export" / "image.nii.gz")
    assert np.array_equal(image.get_fdata(), raw.get_fdata())
    assert np.abs(image.get_sform()[:, [0, 1, 3]] - raw.get_sform()[:, [0, 1, 3]]).max() < AFFINE_TOLERANCE_MM
    assert np.abs(image.get_qform() - raw.get_qform()).max() < AFFINE_TOLERANCE_MM
    frames = tag_frames(dicom)
    assert_on_pixel_centres(image, frames)
    assert_labels_are_the_pngs(tmp_path / "export", frames)


# ------------------------------------------------------------------------------------------ gaps, 4D, mosaics


def test_uneven_spacing_is_refused_with_the_numbers(tmp_path: Path):
    dicom = require_data("dcm_qa_ct_ge_tilt/dicom")
    raw = nib.load(TESTDATA / "dcm_qa_ct_ge_tilt/ref_dcm2niix/_2.nii.gz")
    segmentation = threshold_segmentation(raw, tmp_path / "seg.nii.gz")
    run = run_cli("export", dicom, segmentation, "-o", tmp_path / "export", "--volume")
    assert run.code == 1
    assert "uneven slice spacing: gaps from 1.081 to 6.999 mm" in run.stderr and "--volume-resample" in run.stderr
    assert not (tmp_path / "export").exists()  # refused before anything was sampled or written


@pytest.mark.parametrize("folder, gaps", [
    ("dicom2nifti/failing/sliceincrement/001", "gaps from 5 to 10 mm along the normal (1 slice missing?)"),
    ("dicom2nifti/failing/sliceincrement/002", "gaps from 0.7497 to 1.499 mm along the normal (1 slice missing?)"),
])
def test_a_missing_slice_is_refused_and_resampled_on_request(tmp_path: Path, folder: str, gaps: str):
    dicom = require_data(folder)
    frames = tag_frames(dicom)
    segmentation = _segmentation_around(frames, tmp_path / "seg.nii.gz")
    refused = run_cli("export", dicom, segmentation, "-o", tmp_path / "refused", "--volume")
    assert refused.code == 1 and gaps in refused.stderr, refused.stderr
    run = run_cli("export", dicom, segmentation, "-o", tmp_path / "export", "--volume-resample")
    assert run.code == 0, run.stderr
    _assert_resampled_truth(tmp_path / "export", frames, run.stderr)


def test_the_tilted_gapped_series_is_resampled_along_its_stack(tmp_path: Path):
    dicom = require_data("dcm_qa_ct_ge_tilt/dicom")
    raw = nib.load(TESTDATA / "dcm_qa_ct_ge_tilt/ref_dcm2niix/_2.nii.gz")
    segmentation = threshold_segmentation(raw, tmp_path / "seg.nii.gz")
    run = run_cli("export", dicom, segmentation, "-o", tmp_path / "export", "--volume-resample")
    assert run.code == 0, run.stderr
    # as dcm2niix's equidistant conversion: the smallest gap, at most twice the frames (56 slices)
    assert nib.load(tmp_path / "export" / "image.nii.gz").shape == raw.shape[:2] + (56,)
    _assert_resampled_truth(tmp_path / "export", tag_frames(dicom), run.stderr)


def _segmentation_around(frames: list[TagFrame], path: Path) -> Path:
    """Labels on a grid through the frames' own pixels, stepping 1/3 of the smallest gap: 1 above the median
    value of the first frame (nearest frame), so the labels change from frame to frame."""
    first = frames[0]
    along = [float(np.dot(frame.position - first.position, first.normal)) for frame in frames]
    step = min(np.diff(along)) / 3
    count = round(along[-1] / step) + 1
    values = np.stack([as_voxels(frame.values()) for frame in frames], axis=-1)
    nearest = [int(np.argmin([abs(a - k * step) for a in along])) for k in range(count)]
    labels = (values[:, :, nearest] > np.median(values)).astype(np.uint8)
    lps = np.eye(4)
    lps[:3, 0] = first.orientation[:3] * first.spacing[1]
    lps[:3, 1] = -first.orientation[3:] * first.spacing[0]
    lps[:3, 2] = (frames[-1].position - first.position) / along[-1] * step
    lps[:3, 3] = first.position + (first.rows - 1) * first.spacing[0] * first.orientation[3:]
    write_nifti(path, labels, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps)
    return path


def _assert_resampled_truth(export: Path, frames: list[TagFrame], stderr: str) -> None:
    """Each slice lies on the frames' stacking line between its two neighbouring frames; its image is their linear
    blend by distance, its labels the nearest frame's PNG; the warning gives the largest label displacement."""
    image = nib.load(export / "image.nii.gz")
    labels = np.asanyarray(nib.load(export / "labels.nii.gz").dataobj)
    assert image.get_data_dtype() == np.float32
    affine = image.get_sform()
    rows = manifest_by_frame(export)
    first = frames[0]
    along = np.array([float(np.dot(frame.position - first.position, first.normal)) for frame in frames])
    centres = [as_voxels(frame.centres() @ RAS_FROM_LPS.T) for frame in frames]
    values = [as_voxels(frame.values()) for frame in frames]
    largest = 0.0
    for k in range(image.shape[2]):
        here = voxel_centres(affine, image.shape, k)
        s = float(np.dot(RAS_FROM_LPS @ here[0, 0] - RAS_FROM_LPS @ centres[0][0, 0], first.normal))
        above = int(np.clip(np.searchsorted(along, s - 1e-6), 1, len(frames) - 1))
        below = above - 1
        weight = (s - along[below]) / (along[above] - along[below])
        on_line = (1 - weight) * centres[below] + weight * centres[above]
        assert np.abs(here - on_line).max() < AFFINE_TOLERANCE_MM, f"slice {k} is off the stacking line"
        blended = (1 - weight) * values[below] + weight * values[above]
        assert np.allclose(image.get_fdata()[:, :, k], blended, atol=1e-2 + 1e-5 * np.abs(blended).max())
        nearest = above if weight > 0.5 + 1e-6 else below  # halfway: the lower frame
        distance = float(np.linalg.norm(here[0, 0] - centres[nearest][0, 0]))
        largest = max(largest, distance)
        png = read_png(export / rows[(frames[nearest].path.name, frames[nearest].index + 1)]["label_png"])
        assert np.array_equal(labels[:, :, k], as_voxels(png)), f"slice {k}: not the nearest frame's labels"
    stated = re.search(r"largest displacement ([0-9.e+-]+) mm", stderr)
    assert stated is not None, stderr
    assert abs(float(stated.group(1)) - largest) <= 1e-3 * max(1.0, largest), (stated.group(1), largest)


@pytest.mark.parametrize("folder, shipped", [
    ("dcm_qa_canon_sag_oblique/classic", "dcm_qa_canon_sag_oblique/ref_dcm2niix/11000_SAG_DTI_PA-ALL_20d_cl.nii.gz"),
    ("dcm_qa_canon_sag_oblique/enhanced", "dcm_qa_canon_sag_oblique/ref_dcm2niix/11000_SAG_DTI_PA-ALL_20d_enh.nii.gz"),
    ("dicom2nifti/ge/dti/002", None),
])
def test_a_4d_series_gives_dcm2niixs_4d_volume(tmp_path: Path, folder: str, shipped: str | None):
    """Every position holds as many frames (diffusion directions): a 4D image, at each position its frames in
    acquisition order, as dcm2niix stacks them; the labels are 3D (every frame at a position lies on its plane),
    each slice the PNG of the position's first frame."""
    dicom = require_data(folder)
    ref = nib.load(TESTDATA / shipped) if shipped else nib.load(run_dcm2niix(dicom, tmp_path / "ref"))
    first_volume = nib.Nifti1Image(np.asanyarray(ref.dataobj)[..., 0], ref.get_sform())
    segmentation = threshold_segmentation(first_volume, tmp_path / "seg.nii.gz")
    run = run_cli("export", dicom, segmentation, "-o", tmp_path / "export", "--volume")
    assert run.code == 0, run.stderr
    image = nib.load(tmp_path / "export" / "image.nii.gz")
    assert image.shape == ref.shape and len(image.shape) == 4
    assert np.array_equal(image.get_fdata(), ref.get_fdata())
    assert np.abs(image.get_sform() - ref.get_sform()).max() < AFFINE_TOLERANCE_MM
    assert np.abs(image.get_qform() - ref.get_qform()).max() < AFFINE_TOLERANCE_MM
    frames = tag_frames(dicom)
    firsts = []  # each position's first frame in acquisition order (InstanceNumber, then frame)
    for frame in frames:
        if firsts and abs(float(np.dot(frame.position - firsts[-1][0].position, frame.normal))) < 0.01:
            firsts[-1].append(frame)
        else:
            firsts.append([frame])
    firsts = [min(group, key=lambda frame: (frame.instance_number, frame.index)) for group in firsts]
    assert_on_pixel_centres(nib.Nifti1Image(np.zeros(image.shape[:3]), image.get_sform()), firsts)
    labels = nib.load(tmp_path / "export" / "labels.nii.gz")
    assert labels.shape == image.shape[:3]
    assert_labels_are_the_pngs(tmp_path / "export", firsts)
    assert json.loads((tmp_path / "export" / "export.json").read_text())["volume"]["volumes"] == image.shape[3]
    refused = run_cli("export", dicom, segmentation, "-o", tmp_path / "refused", "--volume-resample")
    assert refused.code == 1 and "the series is 4D" in refused.stderr and "not resampled" in refused.stderr


def test_positions_holding_different_numbers_of_frames_are_refused(tmp_path: Path):
    dicom = require_data("dicom_numpy_dupe_positions")
    series = scan_folder(dicom).select()
    segmentation = _phantom_segmentation_over(series, tmp_path)
    with pytest.raises(SegAlignError, match=r"1 position of 10 holds more than one frame \(from 1 to 2 at a position"):
        export_segmentation(series, load_segmentation(segmentation), tmp_path / "export", ExportOptions(volume=True))
    assert not (tmp_path / "export").exists()


def test_a_mosaic_needs_split_mosaics_and_then_matches_dcm2niix(tmp_path: Path):
    dicom = require_data("dcm_qa_ts_mosaic/dicom_explicit")
    ref = nib.load(TESTDATA / "dcm_qa_ts_mosaic/ref_dcm2niix/1.nii")
    segmentation = threshold_segmentation(ref, tmp_path / "seg.nii.gz")
    refused = run_cli("export", dicom, segmentation, "-o", tmp_path / "refused", "--volume")
    assert refused.code == 1 and "Siemens mosaic" in refused.stderr and "--split-mosaics" in refused.stderr
    run = run_cli("export", dicom, segmentation, "-o", tmp_path / "export", "--volume", "--split-mosaics")
    assert run.code == 0, run.stderr
    image = nib.load(tmp_path / "export" / "image.nii.gz")
    assert image.shape == ref.shape[:3]
    assert np.abs(image.get_sform() - ref.get_sform()).max() < AFFINE_TOLERANCE_MM, (image.get_sform(), ref.get_sform())
    assert np.array_equal(image.get_fdata(), ref.get_fdata())


def _phantom_segmentation_over(series, tmp_path: Path) -> Path:
    """A label map that covers the series' frames (a box of ones over the frames' extent)."""
    points = []
    for frame in series.frames[:: max(1, len(series.frames) // 8)]:
        iop = np.asarray(frame.orientation)
        for r in (0, frame.rows - 1):
            for c in (0, frame.columns - 1):
                points.append(np.asarray(frame.position) + c * frame.pixel_spacing[1] * iop[:3]
                              + r * frame.pixel_spacing[0] * iop[3:])
    low, high = np.min(points, axis=0) - 5, np.max(points, axis=0) + 5
    affine, shape = las_affine(low, high, (4.0, 4.0, 4.0))
    return write_nifti(tmp_path / "box.nii.gz", np.ones(shape, dtype=np.uint8), affine)


# ------------------------------------------------------------------------------------------ phantoms

#: Stacks no converter should get wrong, each (first IPP, frames, IPP step, IOP, InstanceNumbers).
PHANTOM_STACKS = {
    # double oblique, InstanceNumber along the normal
    "double_oblique": ((-14.3, -13.1, -11.7), 11, None, rotated_orientation(0.2, 0.15, 0.1), None),
    # axial, InstanceNumber against the normal: a left-handed stack in acquisition order
    "left_handed": ((-14.3, -13.1, 11.7), 10, (0.0, 0.0, -2.3), rotated_orientation(0.0, 0.0), None),
    # double oblique and left-handed, feet first: InstanceNumber counts down along the normal
    "oblique_left_handed": ((-12.1, -14.2, -10.3), 9, None, rotated_orientation(-0.3, 0.2, 0.4), range(9, 0, -1)),
    # slices stacked off their normal (gantry tilt), evenly: a sheared affine
    "tilted": ((-14.3, -13.1, -11.7), 12, (0.0, 0.9, 2.1), rotated_orientation(0.0, 0.0), None),
    # sagittal, as the decubitus series: the normal along -x
    "sagittal": ((11.0, -14.0, 14.0), 8, None, (0.0, 1.0, 0.0, 0.0, 0.0, -1.0), None),
}


def _phantom_series(root: Path, name: str, drop: int | None = None) -> tuple[Path, Path]:
    """The stack ``name`` of :data:`PHANTOM_STACKS` written as a CT series (minus frame ``drop``), and a
    segmentation of the phantom on an LAS grid of its own (not the series' grid)."""
    first, count, step, orientation, numbers = PHANTOM_STACKS[name]
    if step is None:  # along the normal, 2.2 mm apart
        step = tuple(np.cross(orientation[:3], orientation[3:]) * 2.2)
    specs = stack(first, count, step, orientation=orientation, spacing=(0.93, 0.87), rows=29, columns=31,
                  instance_numbers=numbers)
    if drop is not None:
        del specs[drop]
    phantom = small_phantom()
    write_series(root / "dicom", specs, phantom, identity=SeriesIdentity())
    affine, shape = las_affine((-20, -20, -20), (20, 20, 20), (0.71, 0.83, 0.97))
    segmentation = write_nifti(root / "seg.nii.gz", rasterize(phantom, shape, affine), affine)
    return root / "dicom", segmentation


@pytest.mark.parametrize("name", sorted(PHANTOM_STACKS))
def test_phantom_stacks_put_every_voxel_on_its_pixel(tmp_path: Path, name: str):
    dicom, segmentation = _phantom_series(tmp_path, name)
    run = run_cli("export", dicom, segmentation, "-o", tmp_path / "export", "--volume")
    assert run.code == 0, run.stderr
    image = nib.load(tmp_path / "export" / "image.nii.gz")
    frames = tag_frames(dicom)
    assert_on_pixel_centres(image, frames)
    assert image.get_data_dtype() == np.int16  # slope 1, intercept -1024: HU
    values = np.asanyarray(image.dataobj)
    for k, frame in enumerate(frames):
        assert np.array_equal(values[:, :, k], as_voxels(frame.values())), f"slice {k}"
    assert_labels_are_the_pngs(tmp_path / "export", frames)
    labels = np.asanyarray(nib.load(tmp_path / "export" / "labels.nii.gz").dataobj)
    assert set(np.unique(labels)) == {0, 1, 2, 7}
    assert np.array_equal(nib.load(tmp_path / "export" / "labels.nii.gz").get_sform(), image.get_sform())
    # the qform cannot shear: it differs from the sform for the tilted stack only
    assert np.allclose(image.get_qform(), image.get_sform(), atol=1e-5) == (name != "tilted")


def test_the_volume_is_the_same_in_either_export_order(tmp_path: Path):
    dicom, segmentation = _phantom_series(tmp_path, "oblique_left_handed")
    for order in ("instance", "position"):
        run = run_cli("export", dicom, segmentation, "-o", tmp_path / order, "--volume", "--order", order)
        assert run.code == 0, run.stderr
    for name in ("image.nii.gz", "labels.nii.gz"):
        a, b = nib.load(tmp_path / "instance" / name), nib.load(tmp_path / "position" / name)
        assert np.array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj))
        assert np.array_equal(a.affine, b.affine)


def test_a_phantom_with_a_missing_slice_is_refused_then_resampled(tmp_path: Path):
    dicom, segmentation = _phantom_series(tmp_path, "tilted", drop=5)
    refused = run_cli("export", dicom, segmentation, "-o", tmp_path / "refused", "--volume")
    assert refused.code == 1
    assert "uneven slice spacing: gaps from 2.1 to 4.2 mm along the normal (1 slice missing?)" in refused.stderr
    assert not (tmp_path / "refused").exists()
    run = run_cli("export", dicom, segmentation, "-o", tmp_path / "export", "--volume-resample")
    assert run.code == 0, run.stderr
    assert nib.load(tmp_path / "export" / "image.nii.gz").shape[2] == 12  # the missing slice is back
    _assert_resampled_truth(tmp_path / "export", tag_frames(dicom), run.stderr)
    # the missing slice's labels come from a neighbour, one step (0.9, 2.1) away
    assert "largest displacement 2.285 mm" in run.stderr


def test_a_fractional_rescale_gives_float32_in_modality_units(tmp_path: Path):
    dicom, segmentation = _phantom_series(tmp_path, "double_oblique")
    for number, path in enumerate(sorted(dicom.iterdir())):
        dataset = pydicom.dcmread(path)
        dataset.RescaleSlope, dataset.RescaleIntercept = f"{0.5 + number / 100:.2f}", "-1024.25"
        dataset.save_as(path)
    export_segmentation(scan_folder(dicom).select(), load_segmentation(segmentation), tmp_path / "export",
                        ExportOptions(volume=True), threads=1)
    image = nib.load(tmp_path / "export" / "image.nii.gz")
    assert image.get_data_dtype() == np.float32
    values = np.asanyarray(image.dataobj)
    for k, frame in enumerate(tag_frames(dicom)):
        assert np.array_equal(values[:, :, k], as_voxels(frame.values()).astype(np.float32)), f"slice {k}"


def test_overlapping_segments_give_one_label_volume_per_layer_and_masks(tmp_path: Path):
    dicom, segmentation = _phantom_series(tmp_path, "double_oblique")
    labels = np.asanyarray(nib.load(segmentation).dataobj)
    affine = nib.load(segmentation).affine
    around = write_nifti(tmp_path / "around.nii.gz", (labels > 0).astype(np.uint8) * 5, affine)  # covers all others
    run = run_cli("export", dicom, segmentation, around, "-o", tmp_path / "export", "--volume-masks", "--masks")
    assert run.code == 0, run.stderr
    export = tmp_path / "export"
    frames = tag_frames(dicom)
    assert_labels_are_the_pngs(export, frames, names=("labels", "labels_layer2"))
    table = json.loads((export / "labels.json").read_text())
    masks = sorted(p.name for p in (export / "volume_masks").iterdir())
    assert masks == sorted(f"{entry['name']}.nii.gz" for entry in table)
    rows = manifest_by_frame(export)
    for entry in table:  # each mask volume is the segment's mask PNGs, slice by slice
        mask = np.asanyarray(nib.load(export / "volume_masks" / f"{entry['name']}.nii.gz").dataobj)
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
        for k, frame in enumerate(frames):
            png = read_png(export / "masks" / entry["name"] / Path(rows[(frame.path.name, 1)]["label_png"]).name)
            assert np.array_equal(mask[:, :, k], as_voxels(png).astype(np.uint8)), (entry["name"], k)
    outputs = json.loads((export / "export.json").read_text())["outputs"]
    assert outputs["volume_labels_layer2"] == "labels_layer2.nii.gz" and outputs["volume_masks"] == "volume_masks/"


def test_nrrd_holds_the_same_volumes_in_lps(tmp_path: Path):
    import nrrd

    dicom, segmentation = _phantom_series(tmp_path, "tilted")
    for form in ("nifti", "nrrd"):
        run = run_cli("export", dicom, segmentation, "-o", tmp_path / form, "--volume-format", form)
        assert run.code == 0, run.stderr
    for name in ("image", "labels"):
        nifti = nib.load(tmp_path / "nifti" / f"{name}.nii.gz")
        data, header = nrrd.read(str(tmp_path / "nrrd" / f"{name}.nrrd"), index_order="F")
        assert np.array_equal(data, np.asanyarray(nifti.dataobj)) and data.dtype == nifti.get_data_dtype()
        assert header["space"] == "left-posterior-superior"
        lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ nifti.get_sform()  # exact, sheared
        assert np.allclose(np.asarray(header["space directions"], float).T, lps[:3, :3], atol=1e-9)
        assert np.allclose(np.asarray(header["space origin"], float), lps[:3, 3], atol=1e-9)
    assert_on_pixel_centres(nib.load(tmp_path / "nifti" / "image.nii.gz"), tag_frames(dicom))


def test_the_api_asks_for_volumes_in_its_own_words(tmp_path: Path):
    from segalign import align

    dicom, segmentation = _phantom_series(tmp_path, "left_handed")
    result = align(dicom, segmentation).export(tmp_path / "export", volume=True)
    assert result.outputs["volume_image"] == "image.nii.gz"
    assert ExportOptions(volume="nrrd").volume == VolumeOptions("nrrd")
    assert ExportOptions.from_dict(ExportOptions(volume=VolumeOptions(masks=True)).as_dict()).volume.masks
    with pytest.raises(SegAlignError, match="volume format must be one of 'nifti', 'nrrd'"):
        VolumeOptions("mha")
    dicom, segmentation = _phantom_series(tmp_path / "gap", "left_handed", drop=3)
    with pytest.raises(SegAlignError, match=r"uneven slice spacing.*pass VolumeOptions\(resample=True\)"):
        align(dicom, segmentation).export(tmp_path / "refused", volume=True)
    result = align(dicom, segmentation).export(tmp_path / "resampled", volume=VolumeOptions(resample=True))
    assert any("largest displacement" in warning for warning in result.warnings)


def test_a_volume_export_is_an_export_and_can_be_replaced(tmp_path: Path):
    from segalign.export import EXPORT_ENTRIES, export_problem

    dicom, segmentation = _phantom_series(tmp_path, "sagittal")
    run = run_cli("export", dicom, segmentation, "-o", tmp_path / "export", "--volume-masks", "--volume-format", "nrrd")
    assert run.code == 0, run.stderr
    assert {p.name + ("/" if p.is_dir() else "") for p in (tmp_path / "export").iterdir()} <= EXPORT_ENTRIES
    assert export_problem(tmp_path / "export") is None
    again = run_cli("export", dicom, segmentation, "-o", tmp_path / "export", "--overwrite")
    assert again.code == 0, again.stderr
    assert not (tmp_path / "export" / "image.nrrd").exists()


def test_batches_made_before_volumes_existed_stay_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``ExportOptions.volume`` came after the batch fingerprint: off, it is left out of it (a batch resumed after
    the upgrade does not redo every job); on, it makes another fingerprint."""
    from segalign.batch import Job
    from segalign.batch.fingerprint import job_fingerprint
    from segalign.options import ReadOptions

    dicom, segmentation = _phantom_series(tmp_path, "sagittal")
    job, reads = Job("one", dicom, segmentation), ReadOptions()
    current = job_fingerprint(job, ExportOptions(), reads)
    with_volume = job_fingerprint(job, ExportOptions(volume=True), reads)
    real_as_dict = ExportOptions.as_dict

    def before_volumes(self: ExportOptions) -> dict:  # the options as an older SegAlign wrote them
        values = real_as_dict(self)
        del values["volume"]
        return values

    monkeypatch.setattr(ExportOptions, "as_dict", before_volumes)
    assert job_fingerprint(job, ExportOptions(), reads) == current
    assert with_volume != current


def test_a_volume_file_is_what_nibabel_writes_deflated_on_two_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The .nii.gz is one gzip member (any reader takes it) whose content is byte for byte what nibabel's own
    writer puts in a .nii.gz, also across several deflate blocks (made small here)."""
    import gzip
    import zlib

    from segalign.grid import VolumeGrid
    from segalign.options import VolumeFormat
    from segalign.writers import gzip_stream, volume

    monkeypatch.setattr(gzip_stream, "BLOCK", 1000)
    rng = np.random.default_rng(0)
    lps = np.eye(4)
    lps[:3, :3] = [[0.7, 0.0, 0.3], [0.0, -0.8, 0.0], [0.0, 0.0, 2.1]]
    cases = [((7, 5, 3), np.int16, False), ((33, 29, 11), np.uint8, True), ((1, 1, 1), np.float32, False)]
    for shape, dtype, label in cases:
        data = np.asfortranarray(rng.integers(-1000, 3000, shape).astype(dtype))
        grid = VolumeGrid((), shape, lps, np.array([0.0, 0.0, 1.0]), 8.1)
        volume._write(tmp_path / "ours.nii.gz", data, grid, VolumeFormat.NIFTI, label=label)
        theirs = nib.Nifti1Image(data, grid.ras_affine)
        theirs.set_sform(grid.ras_affine, code=1)
        theirs.set_qform(grid.orthogonal_ras_affine(), code=1)
        theirs.header.set_xyzt_units("mm")
        if label:
            theirs.header.set_intent("label")
        theirs.to_filename(tmp_path / "theirs.nii.gz")
        compressed = (tmp_path / "ours.nii.gz").read_bytes()
        stream = zlib.decompressobj(zlib.MAX_WBITS | 16)
        content = stream.decompress(compressed)
        assert stream.eof and not stream.unused_data  # one gzip member, nothing after it
        assert content == gzip.open(tmp_path / "theirs.nii.gz").read()
        assert np.array_equal(np.asanyarray(nib.load(tmp_path / "ours.nii.gz").dataobj), data)
    gzip_stream.write_gzip(tmp_path / "empty.gz", [])
    assert gzip.open(tmp_path / "empty.gz").read() == b""


def test_one_frame_is_a_volume_one_millimetre_thick(tmp_path: Path):
    specs = stack((-14.3, -13.1, 0.4), 1, (0, 0, 1), orientation=rotated_orientation(0.2, 0.15, 0.1),
                  spacing=(0.93, 0.87), rows=29, columns=31)
    write_series(tmp_path / "dicom", specs, small_phantom())
    affine, shape = las_affine((-20, -20, -20), (20, 20, 20), (0.71, 0.83, 0.97))
    segmentation = write_nifti(tmp_path / "seg.nii.gz", rasterize(small_phantom(), shape, affine), affine)
    run = run_cli("export", tmp_path / "dicom", segmentation, "-o", tmp_path / "export", "--volume")
    assert run.code == 0, run.stderr
    image = nib.load(tmp_path / "export" / "image.nii.gz")
    frames = tag_frames(tmp_path / "dicom")
    assert image.shape == (31, 29, 1)
    assert_on_pixel_centres(image, frames)
    slice_axis = RAS_FROM_LPS @ image.get_sform()[:3, 2]
    assert np.allclose(slice_axis, frames[0].normal, atol=1e-6)  # along the normal, 1 mm
    assert_labels_are_the_pngs(tmp_path / "export", frames)
