"""Exports of real public DICOM series (../shared/testdata, see its README.md) checked against independent truth.

Truth never comes from SegAlign itself. It is one of:

* **threshold consistency**: a reference NIfTI of the series (dcm2niix, dicom2nifti) is turned into a label map
  ``levels(ref)`` (the number of thresholds a voxel value exceeds, thresholds chosen between distinct pixel values),
  exported back onto the series, and every PNG must equal ``levels(modality-LUT pixel_array)`` of its own frame;
* the same with a label volume the test builds itself from the decoded frames and their IPP/IOP/PixelSpacing
  (for series no converter gets right: gantry tilt, missing slices, repeated positions, mixed orientations);
* plain nibabel reorientation of a segmentation whose grid coincides with the DICOM grid;
* SimpleITK nearest-neighbour resampling, with each frame's grid as GDCM reads it from the DICOM file;
* header facts read with pydicom (InstanceNumber, SOP Instance UIDs, GantryDetectorTilt, per-frame positions).

The pixel data is decoded here (JPEG 2000, JPEG Lossless, JPEG-LS, RLE need the pylibjpeg codecs).
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ElementTree
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform
from pydicom.pixels import apply_modality_lut

from conftest import leftovers, read_manifest, read_png, require, run_cli

#: Multiply homogeneous LPS coordinates by this to get RAS (and back).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


# --------------------------------------------------------------------------------------------------------------------
# Helpers: pixel data, thresholds, NIfTI writing, exporting
# --------------------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def header(path: Path) -> pydicom.Dataset:
    """The full header of a DICOM file (no pixel data), read with pydicom."""
    return pydicom.dcmread(path, stop_before_pixels=True)


@lru_cache(maxsize=None)
def _decoded_frames(path: Path) -> tuple[np.ndarray, ...]:
    """Every frame of a file as modality values (Modality LUT / rescale applied, per frame where the file says so)."""
    dataset = pydicom.dcmread(path)
    pixels = dataset.pixel_array
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames == 1:
        pixels = pixels[None]
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
    shared = dataset.get("SharedFunctionalGroupsSequence")
    result = []
    for index in range(frames):
        groups = ([per_frame[index]] if per_frame else []) + ([shared[0]] if shared else [])
        rescale = None
        for group in groups:
            items = group.get("PixelValueTransformationSequence")
            if items and "RescaleSlope" in items[0]:
                rescale = float(items[0].RescaleSlope), float(items[0].RescaleIntercept)
                break
        if rescale is not None:
            values = pixels[index].astype(np.float64) * rescale[0] + rescale[1]
        else:
            values = np.asarray(apply_modality_lut(pixels[index], dataset), dtype=np.float64)
        values.setflags(write=False)
        result.append(values)
    return tuple(result)


def modality_pixels(path: Path, frame: int = 1) -> np.ndarray:
    """Frame ``frame`` (1-based) of ``path`` as decoded by pydicom, in modality units (e.g. HU)."""
    return _decoded_frames(Path(path))[frame - 1]


@pytest.fixture(autouse=True)
def _forget_decoded_pixels():
    """Decoded pixel data is large; keep it only for the duration of one test."""
    yield
    _decoded_frames.cache_clear()
    header.cache_clear()


def separating_thresholds(values: list[np.ndarray], quantiles: list[float]) -> np.ndarray:
    """Thresholds near the given quantiles of the pooled pixel values, each moved half-way between two adjacent
    distinct values, so that no pixel value is anywhere near a threshold (no float ties)."""
    pooled = np.concatenate([np.ravel(v) for v in values])
    distinct = np.unique(pooled)
    assert len(distinct) > 2, "the pixel data is (nearly) constant; a threshold check would be meaningless"
    chosen = []
    for quantile in quantiles:
        value = np.quantile(pooled, quantile)
        above = int(np.clip(np.searchsorted(distinct, value, side="right"), 1, len(distinct) - 1))
        chosen.append((distinct[above - 1] + distinct[above]) / 2)
    return np.unique(chosen)


def per_frame_median_thresholds(values: list[np.ndarray]) -> np.ndarray:
    """One separating threshold at the median of every frame: every frame then has labels on both sides."""
    return np.unique(np.concatenate([separating_thresholds([v], [0.5]) for v in values]))


def levels(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Label map: the number of thresholds each value exceeds (0 = below all; with one threshold, ``values > t``)."""
    values = np.asarray(values)
    result = np.zeros(values.shape, dtype=np.uint8)
    for threshold in np.asarray(thresholds).ravel():
        result += values > threshold
    return result


def assert_well_populated(label_images: list[np.ndarray], max_share: float = 0.9) -> None:
    """Every frame's truth has more than one label, the most common covering at most ``max_share`` of it, so a
    shifted, flipped or transposed export cannot pass by accident."""
    for index, labels in enumerate(label_images):
        counts = np.bincount(labels.ravel())
        share = counts.max() / labels.size
        assert share <= max_share, f"frame {index}: truth is {share:.1%} one label"


def save_labels_like(labels: np.ndarray, reference: nib.Nifti1Image, path: Path) -> Path:
    """Save ``labels`` as uint8 NIfTI with the reference's header (affine, sform/qform and their codes).

    Verifies on re-reading that the data, both forms and both codes survived.
    """
    assert labels.shape == reference.shape[:3]
    image = nib.Nifti1Image(labels.astype(np.uint8), reference.affine, header=reference.header.copy())
    image.set_data_dtype(np.uint8)
    image.header.set_slope_inter(1, 0)
    nib.save(image, str(path))
    again = nib.load(str(path))
    np.testing.assert_array_equal(np.asanyarray(again.dataobj), labels)
    for getter in ("get_sform", "get_qform"):
        ours, our_code = getattr(again.header, getter)(coded=True)
        theirs, their_code = getattr(reference.header, getter)(coded=True)
        assert int(our_code) == int(their_code), f"{getter} code changed: {our_code} != {their_code}"
        if their_code:
            np.testing.assert_allclose(ours, theirs, atol=1e-5, err_msg=getter)
    return path


def save_labels_with_affine(labels: np.ndarray, affine_ras: np.ndarray, path: Path) -> Path:
    """Save ``labels`` as uint8 NIfTI with ``affine_ras`` as sform (code 1, scanner) and no qform."""
    image = nib.Nifti1Image(labels.astype(np.uint8), affine_ras)
    image.header.set_sform(affine_ras, code=1)
    image.header.set_qform(None, code=0)
    nib.save(image, str(path))
    return path


def export_cli(dicom: Path, segmentation: Path, out: Path, *extra: object):
    """Run ``segalign export`` and require success, no temporary folders left behind, and a manifest that lists
    every frame of every file in ``dicom`` exactly once, in native order (InstanceNumber, then frame number, as
    pydicom reads them)."""
    run = run_cli("export", dicom, segmentation, "-o", out, *extra)
    assert run.code == 0, f"export failed ({run.code}): {run.stderr}"
    assert leftovers(out.parent) == []
    rows = read_manifest(out)
    listed = [(dicom / row["source_file"], int(row["frame"])) for row in rows]
    assert sorted(listed) == sorted(all_frames(dicom)), "the manifest must list every frame exactly once"
    native = [(int(header(path).InstanceNumber), frame) for path, frame in listed]
    assert native == sorted(native), "the manifest is not in InstanceNumber, frame order"
    for row, (path, frame) in zip(rows, listed):
        assert read_png(out / row["label_png"]).shape == (int(header(path).Rows), int(header(path).Columns))
    return run


def export_warnings(out: Path) -> list[str]:
    return json.loads((out / "export.json").read_text(encoding="utf-8"))["warnings"]


def dicom_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def all_frames(folder: Path) -> list[tuple[Path, int]]:
    """(file, 1-based frame number) of every frame of every file in ``folder``."""
    return [
        (path, frame)
        for path in dicom_files(folder)
        for frame in range(1, int(header(path).get("NumberOfFrames", 1) or 1) + 1)
    ]


def frame_geometry(path: Path, frame: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(IPP, IOP, PixelSpacing) of one frame, from pydicom: functional groups for enhanced files, else top level."""
    dataset = header(path)
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
    shared = dataset.get("SharedFunctionalGroupsSequence")
    groups = ([per_frame[frame - 1]] if per_frame else []) + ([shared[0]] if shared else [])

    def find(sequence: str, keyword: str):
        for group in groups:
            items = group.get(sequence)
            if items and keyword in items[0]:
                return items[0][keyword].value
        return dataset[keyword].value

    return (
        np.array(find("PlanePositionSequence", "ImagePositionPatient"), dtype=float),
        np.array(find("PlaneOrientationSequence", "ImageOrientationPatient"), dtype=float),
        np.array(find("PixelMeasuresSequence", "PixelSpacing"), dtype=float),
    )


def normal_of(orientation: np.ndarray) -> np.ndarray:
    normal = np.cross(orientation[:3], orientation[3:6])
    return normal / np.linalg.norm(normal)


def assert_rows_match_levels(out: Path, dicom: Path, thresholds: np.ndarray, rows: list[dict] | None = None) -> int:
    """Every listed manifest row's PNG equals ``levels(pixels of its own frame)``, exactly; returns the row count."""
    rows = read_manifest(out) if rows is None else rows
    for row in rows:
        got = read_png(out / row["label_png"])
        want = levels(modality_pixels(dicom / row["source_file"], int(row["frame"])), thresholds)
        assert got.shape == want.shape, f"{row['label_png']}: shape {got.shape}, frame is {want.shape}"
        wrong = int(np.count_nonzero(got != want))
        assert wrong == 0, (
            f"{row['label_png']} ({row['source_file']} frame {row['frame']}): {wrong} of {want.size} pixels differ "
            "from the thresholded pixel data of the frame"
        )
    return len(rows)


def stack_frames_as_nifti(
    frames: list[tuple[Path, int]], label_images: list[np.ndarray], path: Path, fill: int = 0,
    step: np.ndarray | None = None,
) -> tuple[Path, list[int]]:
    """Build a label volume from frames of one orientation, written in patient space from their own headers.

    Voxel ``(i, j, k)`` is column ``i``, row ``j`` of the frame in slot ``k``; the affine's columns are
    ``IOP[0:3] * PixelSpacing[1]``, ``IOP[3:6] * PixelSpacing[0]`` and the IPP step between neighbouring slots
    (sheared when the gantry is tilted), converted from LPS to RAS. Slots without a frame (missing slices) are
    ``fill``. Returns the path and each frame's slot.
    """
    geometry = [frame_geometry(*frame) for frame in frames]
    orientation, spacing = geometry[0][1], geometry[0][2]
    for _, iop, ps in geometry:
        assert np.allclose(iop, orientation, atol=1e-6) and np.allclose(ps, spacing, atol=1e-9)
    normal = normal_of(orientation)
    order = sorted(range(len(frames)), key=lambda index: float(np.dot(geometry[index][0], normal)))
    positions = [geometry[index][0] for index in order]
    if step is None:
        gaps = [b - a for a, b in zip(positions, positions[1:])]
        step = min(gaps, key=lambda gap: float(np.linalg.norm(gap)))
    step = np.asarray(step, dtype=float)
    origin = positions[0]
    slots = {}
    for index in order:
        offset = geometry[index][0] - origin
        slot = round(float(np.dot(offset, step) / np.dot(step, step)))
        assert np.allclose(origin + slot * step, geometry[index][0], atol=1e-3), "frames are not on one stacking line"
        slots[index] = slot
    rows, columns = label_images[0].shape
    volume = np.full((columns, rows, max(slots.values()) + 1), fill, dtype=np.uint8)
    for index, labels in enumerate(label_images):
        volume[:, :, slots[index]] = labels.T
    lps = np.eye(4)
    lps[:3, 0] = orientation[:3] * spacing[1]
    lps[:3, 1] = orientation[3:6] * spacing[0]
    lps[:3, 2] = step
    lps[:3, 3] = origin
    return save_labels_with_affine(volume, LPS_TO_RAS @ lps, path), [slots[index] for index in range(len(frames))]


def info_json(folder: Path) -> dict:
    run = run_cli("info", folder, "--json")
    assert run.code == 0, run.stderr
    return json.loads(run.stdout)


# SimpleITK: the second, independent implementation of "nearest voxel of each pixel centre" --------------------------


def itk_labels_on_frame(segmentation_path: Path, dicom_file: Path) -> np.ndarray:
    """The segmentation (read by ITK's own NIfTI reader) resampled nearest-neighbour onto the frame's grid as
    GDCM reads it from the DICOM file (its own IPP, IOP and PixelSpacing); [row, column]."""
    sitk = pytest.importorskip("SimpleITK", reason="SimpleITK is the independent oracle")
    segmentation = sitk.ReadImage(str(segmentation_path))
    reference = sitk.ReadImage(str(dicom_file))
    resampled = sitk.Resample(
        segmentation, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, segmentation.GetPixelID()
    )
    return sitk.GetArrayFromImage(resampled)[0]


def assert_same_as_itk(out: Path, dicom: Path, segmentation_path: Path) -> None:
    for row in read_manifest(out):
        ours = read_png(out / row["label_png"])
        theirs = itk_labels_on_frame(segmentation_path, dicom / row["source_file"])
        wrong = int(np.count_nonzero(ours != theirs))
        assert wrong == 0, f"{row['label_png']}: {wrong} pixels differ from SimpleITK nearest-neighbour resampling"


# --------------------------------------------------------------------------------------------------------------------
# 1. TotalSegmentator example: the seed's use case
# --------------------------------------------------------------------------------------------------------------------


def _embedded_label_names(image: nib.Nifti1Image) -> dict[int, tuple[str, list[int]]]:
    """Label names and colours from the CaretExtension XML in the NIfTI header, parsed here."""
    for extension in image.header.extensions:
        content = extension.get_content()
        text = content.decode("utf-8") if isinstance(content, bytes) else str(content)
        if "<LabelTable" in text:
            root = ElementTree.fromstring(text.strip().rstrip("\x00"))
            return {
                int(label.attrib["Key"]): (
                    (label.text or "").strip(),
                    [round(float(label.attrib[channel]) * 255) for channel in ("Red", "Green", "Blue")],
                )
                for label in root.iter("Label")
            }
    raise AssertionError("no LabelTable in the NIfTI header extensions")


def _placement_scores(hu: np.ndarray, labels: np.ndarray, bone_values: list[int]) -> tuple[float, float]:
    """(fraction of labelled pixels with HU > -500, fraction of bone-labelled pixels with HU > 150)."""
    labelled = labels > 0
    bone = np.isin(labels, bone_values)
    return float(np.mean(hu[labelled] > -500)), float(np.mean(hu[bone] > 150))


def test_totalsegmentator_ct_export_equals_reoriented_segmentation(testdata: Path, tmp_path: Path) -> None:
    """TotalSegmentator CT (JPEG 2000, blank UIDs, InstanceNumber against z) + its LAS segmentation, via the CLI.

    Truth: the NIfTI reoriented to LPS with nibabel and sliced at each frame's IPP (the grids coincide), the file
    meta UIDs and InstanceNumbers read with pydicom, the label XML parsed here, and the CT numbers themselves.
    """
    base = require(testdata / "totalsegmentator_example")
    dicom = require(base / "ct_dicom")
    segmentation_path = require(base / "segmentation_ml.nii.gz")
    out = tmp_path / "export"
    run = export_cli(dicom, segmentation_path, out)

    files = dicom_files(dicom)
    rows = read_manifest(out)
    assert len(files) == 20 and len(rows) == 20
    assert sorted(row["source_file"] for row in rows) == sorted(path.name for path in files)

    # Native order: InstanceNumber ascending, which here runs against z (so position order would differ).
    headers = [header(dicom / row["source_file"]) for row in rows]
    instance_numbers = [int(h.InstanceNumber) for h in headers]
    assert instance_numbers == sorted(int(header(path).InstanceNumber) for path in files)
    assert len(set(instance_numbers)) == 20
    assert [int(row["instance_number"]) for row in rows] == instance_numbers
    z = [float(h.ImagePositionPatient[2]) for h in headers]
    assert np.all(np.diff(z) < 0), "data: z falls as InstanceNumber rises"

    # Blank SOPInstanceUID in the dataset: the manifest carries the file meta MediaStorageSOPInstanceUID.
    for row, h in zip(rows, headers):
        assert not str(h.get("SOPInstanceUID", "") or "").strip()
        assert row["sop_instance_uid"] == str(h.file_meta.MediaStorageSOPInstanceUID)
        assert row["frame"] == "1"

    # The missing SeriesInstanceUID is reported, on stderr and in export.json.
    assert not any(str(header(path).get("SeriesInstanceUID", "") or "").strip() for path in files)
    assert any("SeriesInstanceUID" in warning for warning in export_warnings(out))
    assert "SeriesInstanceUID" in run.stderr

    # Truth: reorient to LPS (i -> L, j -> P, k -> S) and take [row, column] = [j, i] at each frame's IPP.
    image = nib.load(str(segmentation_path))
    assert nib.aff2axcodes(image.affine) == ("L", "A", "S")
    lps_image = image.as_reoriented(ornt_transform(io_orientation(image.affine), axcodes2ornt("LPS")))
    lps_data = np.asanyarray(lps_image.dataobj)
    voxel_to_lps = LPS_TO_RAS @ lps_image.affine
    assert np.allclose(voxel_to_lps[:3, :3], np.diag(np.diag(voxel_to_lps[:3, :3])))
    assert np.all(np.diag(voxel_to_lps)[:3] > 0)
    labelled_frames = 0
    label_images, hu_images = [], []
    for row, h in zip(rows, headers):
        assert [float(v) for v in h.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        spacing = [float(v) for v in h.PixelSpacing]
        assert np.isclose(voxel_to_lps[0, 0], spacing[1]) and np.isclose(voxel_to_lps[1, 1], spacing[0])
        index = np.linalg.solve(voxel_to_lps, [*map(float, h.ImagePositionPatient), 1.0])[:3]
        assert np.allclose(index, np.round(index), atol=1e-3), "the frame's first pixel is not on a voxel centre"
        i0, j0, k = (int(v) for v in np.round(index))
        expected = lps_data[i0 : i0 + int(h.Columns), j0 : j0 + int(h.Rows), k].T
        got = read_png(out / row["label_png"])
        assert got.dtype == np.uint8 and got.shape == (int(h.Rows), int(h.Columns)) == expected.shape
        np.testing.assert_array_equal(got, expected, err_msg=row["label_png"])
        assert row["labels_present"].split() == [str(v) for v in np.unique(expected) if v]
        labelled_frames += bool(expected.any())
        label_images.append(got)
        hu_images.append(modality_pixels(dicom / row["source_file"]))
    assert labelled_frames == 20

    # Label table: names (and colours) as embedded in the header; voxel and frame counts.
    embedded = _embedded_label_names(image)
    assert embedded[5][0] == "liver"
    table = {entry["value"]: entry for entry in json.loads((out / "labels.json").read_text(encoding="utf-8"))}
    for value, (name, colour) in embedded.items():
        assert table[value]["name"] == name, value
        assert table[value]["color"] == colour, value
    voxels = np.bincount(np.asanyarray(image.dataobj).ravel(), minlength=256)
    labels = np.stack(label_images)
    for value, entry in table.items():
        assert entry["voxels"] == int(voxels[value]), value
        assert entry["frames"] == int(np.sum([np.any(frame == value) for frame in labels])), value

    # Sanity with the real pixels: labelled pixels lie in the body and bone labels on bone. A mirrored mask fails.
    hu = np.stack(hu_images)
    bone = [v for v, (name, _) in embedded.items() if name.startswith(("vertebrae_", "rib_", "humerus_"))]
    assert np.isin(labels, bone).sum() > 10000, "the bone check needs bone labels on these frames"
    in_body, on_bone = _placement_scores(hu, labels, bone)
    left_right = _placement_scores(hu, labels[:, :, ::-1], bone)
    up_down = _placement_scores(hu, labels[:, ::-1, :], bone)
    shifted = _placement_scores(hu, np.roll(labels, 10, axis=2), bone)  # 10 pixels ~ 1 cm to the side
    body_bound, bone_bound = 0.97, 0.6
    assert in_body > body_bound and on_bone > bone_bound, (in_body, on_bone)
    wrong_placements = {"left-right": left_right, "up-down": up_down, "shift": shifted}
    for name, (mirrored_body, mirrored_bone) in wrong_placements.items():
        assert mirrored_body <= body_bound or mirrored_bone <= bone_bound, (name, mirrored_body, mirrored_bone)


# --------------------------------------------------------------------------------------------------------------------
# 2. Decubitus: threshold consistency with dcm2niix references
# --------------------------------------------------------------------------------------------------------------------

DECUBITUS = {"HFS": "ref_dcm2niix/HFS/t1_fl2d_sag_3.nii.gz", "HFDR": "ref_dcm2niix/HFDR/t1_fl2d_sag_2.nii.gz"}


@pytest.mark.parametrize("position", sorted(DECUBITUS))
def test_decubitus_threshold_consistency(testdata: Path, tmp_path: Path, position: str) -> None:
    """Head-first supine and decubitus-right sagittal T1: levels(dcm2niix NIfTI) exported must equal
    levels(pixel_array) of every frame exactly (patient position must not change the LPS mapping)."""
    base = require(testdata / "dcm_qa_decubitus")
    dicom = require(base / position)
    reference = nib.load(str(require(base / DECUBITUS[position])))
    files = dicom_files(dicom)
    assert {str(header(path).PatientPosition) for path in files} == {position}
    pixels = [modality_pixels(path) for path in files]
    thresholds = separating_thresholds(pixels, [0.5, 0.8, 0.95])
    assert len(thresholds) == 3
    truth = [levels(p, thresholds) for p in pixels]
    assert all(np.mean(np.concatenate([t.ravel() for t in truth]) == value) > 0.01 for value in range(4))
    labels = levels(np.asanyarray(reference.dataobj), thresholds)
    segmentation = save_labels_like(labels, reference, tmp_path / "seg.nii.gz")
    out = tmp_path / "export"
    export_cli(dicom, segmentation, out)
    assert assert_rows_match_levels(out, dicom, thresholds) == len(files) == 35


# --------------------------------------------------------------------------------------------------------------------
# 3. GE head CT with 18.5 degree gantry tilt and uneven gaps
# --------------------------------------------------------------------------------------------------------------------


#: CT thresholds (HU) between air and soft tissue, and soft tissue and bone; half-integers never equal a CT number.
CT_THRESHOLDS = np.array([-200.5, 300.5])


def _ge_tilt(testdata: Path) -> tuple[Path, Path]:
    base = require(testdata / "dcm_qa_ct_ge_tilt")
    return require(base / "dicom"), require(base / "ref_dcm2niix")


def test_ge_tilt_raw_sheared_reference(testdata: Path, tmp_path: Path) -> None:
    """dcm2niix's raw conversion (sheared sform, orthogonal qform): the export uses the sform and warns.

    Truth: every frame lies in a plane of constant k of the sheared sform (checked here); where the nearest
    reference slice is the frame's own slice the PNG must equal levels(pixels of the frame); elsewhere it must
    equal levels(pixels of the frame dcm2niix stored in the nearest slice). dcm2niix stores the 28 slices
    equally spaced although the real gaps are uneven (13 x 4.0 mm, 1.08 mm, 13 x 7.0 mm), so slice k is not
    at frame k's position for most frames after the first uneven gap: pixel > t cannot hold there.
    """
    dicom, references = _ge_tilt(testdata)
    reference = nib.load(str(require(references / "_2.nii.gz")))
    sform, sform_code = reference.header.get_sform(coded=True)
    qform, qform_code = reference.header.get_qform(coded=True)
    assert sform_code > 0 and qform_code > 0
    corners = np.array([[i, j, k, 1] for i in (0, 511) for j in (0, 511) for k in (0, 27)], dtype=float)
    disagreement = np.max(np.linalg.norm((corners @ (sform - qform).T)[:, :3], axis=1))
    assert disagreement > 1.0, "data: sform and qform are expected to disagree"

    files = sorted(dicom_files(dicom), key=lambda path: int(header(path).InstanceNumber))
    pixels = [modality_pixels(path) for path in files]
    data = np.asanyarray(reference.dataobj)
    # dcm2niix stored the frames in InstanceNumber order: slice s holds the pixel values of frame s.
    for s, values in enumerate(pixels):
        assert np.array_equal(np.sort(data[:, :, s], axis=None), np.sort(values, axis=None)), s
    thresholds = CT_THRESHOLDS
    assert_well_populated([levels(p, thresholds) for p in pixels], max_share=0.95)  # the top of the head is mostly air
    segmentation = save_labels_like(levels(data, thresholds), reference, tmp_path / "seg.nii.gz")
    out = tmp_path / "export"
    export_cli(dicom, segmentation, out)
    assert any("sform and qform disagree" in warning for warning in export_warnings(out))

    ras_to_index = np.linalg.inv(sform)
    own_slice, outside = [], []
    rows = read_manifest(out)
    assert [row["source_file"] for row in rows] == [path.name for path in files]
    for rank, row in enumerate(rows):
        ipp, iop, spacing = frame_geometry(dicom / row["source_file"])
        corners_lps = [ipp + c * spacing[1] * iop[:3] + r * spacing[0] * iop[3:] for r in (0, 511) for c in (0, 511)]
        k = [(ras_to_index @ LPS_TO_RAS @ [*point, 1.0])[2] for point in corners_lps]
        assert np.ptp(k) < 1e-3, "data: the sheared sform has the frames in planes of constant k"
        nearest = int(np.floor(k[0] + 0.5))
        if nearest == rank:
            own_slice.append(rank)
        if 0 <= nearest < 28:
            expected = levels(pixels[nearest], thresholds)
        else:  # beyond the last slice of the reference: nothing to sample
            expected = np.zeros((512, 512), dtype=np.uint8)
            outside.append(rank)
        wrong = int(np.count_nonzero(read_png(out / row["label_png"]) != expected))
        assert wrong == 0, f"frame {rank + 1}: {wrong} pixels differ from levels(slice {nearest} pixels)"
    # pixel > t of the frame itself, exactly, for the frames the reference places correctly
    assert own_slice[:10] == list(range(10)) and len(own_slice) >= 11, own_slice
    assert outside and outside == list(range(outside[0], 28)), outside
    assert_rows_match_levels(out, dicom, thresholds, [rows[rank] for rank in own_slice])


def test_ge_tilt_corrected_reference_agrees_closely(testdata: Path, tmp_path: Path) -> None:
    """dcm2niix's tilt-corrected, equidistant (resliced) reference: close to (pixels > t) on every frame, where t
    separates air from tissue, and identical to SimpleITK nearest-neighbour resampling of the same label map.

    The bound is checked to be fair: the same figure for the truth moved by 2 pixels (1 mm) falls below it.
    """
    dicom, references = _ge_tilt(testdata)
    reference = nib.load(str(require(references / "_2_Tilt_Eq_1.nii.gz")))
    files = dicom_files(dicom)
    thresholds = CT_THRESHOLDS[:1]
    assert_well_populated([levels(modality_pixels(path), thresholds) for path in files], max_share=0.95)
    segmentation = save_labels_like(
        levels(np.asanyarray(reference.dataobj), thresholds), reference, tmp_path / "seg.nii.gz"
    )
    out = tmp_path / "export"
    export_cli(dicom, segmentation, out)
    assert not any("disagree" in warning for warning in export_warnings(out))
    agreements, moved = [], []
    for row in read_manifest(out):
        expected = levels(modality_pixels(dicom / row["source_file"]), thresholds)
        got = read_png(out / row["label_png"])
        agreements.append(float(np.mean(got == expected)))
        moved.append(float(np.mean(got == np.roll(expected, 2, axis=0))))
    assert len(agreements) == 28
    assert min(agreements) >= 0.98, agreements
    assert np.mean(agreements) >= 0.995, agreements
    assert np.mean(moved) < 0.995, moved
    assert_same_as_itk(out, dicom, segmentation)


def test_ge_tilt_info_reports_tilt_and_uneven_gaps(testdata: Path) -> None:
    """``segalign info``: tilt as in the GantryDetectorTilt tag (+18.5), gaps as computed here from the IPPs."""
    dicom, _ = _ge_tilt(testdata)
    files = dicom_files(dicom)
    tilts = {float(header(path).GantryDetectorTilt) for path in files}
    assert tilts == {18.5}
    normal = normal_of(frame_geometry(files[0])[1])
    along = np.sort([float(np.dot(frame_geometry(path)[0], normal)) for path in files])
    gaps = np.diff(along)
    report = info_json(dicom)
    assert len(report["series"]) == 1
    series = report["series"][0]
    assert series["frames"] == 28
    assert abs(series["tilt_degrees"] - 18.5) < 0.05
    assert series["uniform_spacing"] is False
    assert abs(series["min_gap_mm"] - gaps.min()) < 0.01 and abs(series["max_gap_mm"] - gaps.max()) < 0.01
    assert abs(gaps.min() - 1.08) < 0.01 and abs(gaps.max() - 7.0) < 0.01
    text = run_cli("info", dicom)
    assert text.code == 0 and "UNEVEN" in text.stdout and "18.50 deg" in text.stdout


# --------------------------------------------------------------------------------------------------------------------
# 4. Canon double-oblique DTI: classic (520 files) and enhanced (one multi-frame file)
# --------------------------------------------------------------------------------------------------------------------


def test_canon_classic_and_enhanced_exports_are_identical(testdata: Path, tmp_path: Path) -> None:
    """Same acquisition as 520 single-frame files and as one enhanced multi-frame file.

    Headers (read here) map classic InstanceNumber n to enhanced frame n: same per-frame IPP, same decoded pixels;
    enhanced frames with TemporalPositionIndex 1 are the first volume. Truth: levels(pixels) for the first volume
    (the segmentation is levels of dcm2niix's volume 0), the first volume's label at the same IPP for the others.
    """
    base = require(testdata / "dcm_qa_canon_sag_oblique")
    classic, enhanced = require(base / "classic"), require(base / "enhanced")
    reference = nib.load(str(require(base / "ref_dcm2niix" / "11000_SAG_DTI_PA-ALL_20d_cl.nii.gz")))
    assert reference.ndim == 4 and reference.shape[3] == 13

    classic_files = {int(header(path).InstanceNumber): path for path in dicom_files(classic)}
    assert sorted(classic_files) == list(range(1, 521))
    (enhanced_file,) = dicom_files(enhanced)
    enhanced_header = header(enhanced_file)
    assert int(enhanced_header.NumberOfFrames) == 520
    first_volume = []
    for n in range(1, 521):
        classic_ipp = frame_geometry(classic_files[n])[0]
        enhanced_ipp = frame_geometry(enhanced_file, n)[0]
        assert np.allclose(classic_ipp, enhanced_ipp, atol=1e-3), n
        np.testing.assert_array_equal(modality_pixels(classic_files[n]), modality_pixels(enhanced_file, n))
        content = enhanced_header.PerFrameFunctionalGroupsSequence[n - 1].FrameContentSequence[0]
        if int(content.TemporalPositionIndex) == 1:
            first_volume.append(n)
    assert len(first_volume) == 40
    normal = normal_of(frame_geometry(enhanced_file, 1)[1])
    assert len({round(float(np.dot(frame_geometry(enhanced_file, n)[0], normal)), 2) for n in first_volume}) == 40

    pixels = [modality_pixels(classic_files[n]) for n in first_volume]
    thresholds = separating_thresholds(pixels, [0.6, 0.9])
    assert_well_populated([levels(p, thresholds) for p in pixels])
    volume0 = nib.Nifti1Image(np.asanyarray(reference.dataobj)[..., 0], reference.affine, header=reference.header)
    labels = levels(np.asanyarray(volume0.dataobj), thresholds)
    segmentation = save_labels_like(labels, volume0, tmp_path / "seg.nii.gz")

    out_classic, out_enhanced = tmp_path / "classic", tmp_path / "enhanced"
    export_cli(classic, segmentation, out_classic)
    export_cli(enhanced, segmentation, out_enhanced)
    rows_classic, rows_enhanced = read_manifest(out_classic), read_manifest(out_enhanced)
    assert len(rows_classic) == len(rows_enhanced) == 520
    assert [int(row["instance_number"]) for row in rows_classic] == list(range(1, 521))
    assert [int(row["frame"]) for row in rows_enhanced] == list(range(1, 521))
    for n, (row_c, row_e) in enumerate(zip(rows_classic, rows_enhanced), start=1):
        assert Path(row_c["source_file"]).name == classic_files[n].name
        listed_ipp = [float(v) for v in row_e["image_position_patient"].split()]
        assert np.allclose(listed_ipp, frame_geometry(enhanced_file, n)[0])
        np.testing.assert_array_equal(
            read_png(out_classic / row_c["label_png"]), read_png(out_enhanced / row_e["label_png"]), err_msg=str(n)
        )

    # The first volume's frames: exact threshold consistency, in both exports.
    first_classic = [rows_classic[n - 1] for n in first_volume]
    first_enhanced = [rows_enhanced[n - 1] for n in first_volume]
    assert assert_rows_match_levels(out_classic, classic, thresholds, first_classic) == 40
    assert assert_rows_match_levels(out_enhanced, enhanced, thresholds, first_enhanced) == 40
    # Every other frame sits at a position of the first volume and must carry that frame's labels.
    by_position = {
        tuple(np.round(frame_geometry(enhanced_file, n)[0], 2)): read_png(out_enhanced / row["label_png"])
        for n, row in zip(first_volume, first_enhanced)
    }
    for n, row in enumerate(rows_enhanced, start=1):
        expected = by_position[tuple(np.round(frame_geometry(enhanced_file, n)[0], 2))]
        np.testing.assert_array_equal(read_png(out_enhanced / row["label_png"]), expected, err_msg=str(n))


# --------------------------------------------------------------------------------------------------------------------
# 5. dicom2nifti test series
# --------------------------------------------------------------------------------------------------------------------

#: every ``*_ground_truth.nii.gz`` of the dicom2nifti data, and how it is checked
DICOM2NIFTI_CASES = {
    "failing/slicecount/001": "exact",
    "failing/sliceincrement/002": "resliced",
    "ge/anatomical/001": "exact",
    "ge/dti/002": "4d",
    "generic/anatomical/001": "exact",
    "generic/anatomical/001_implicit": "exact",
    "generic/anatomical/002_non_isotropic": "exact",
    "generic/compressed/001": "exact",
    "generic/compressed_j2k/001": "exact",
    "generic/compressed_jpeg/001": "exact",
    "generic/compressed_jpegls/001": "exact",
    "generic/compressed_rle/001": "exact",
    "hitachi/anatomical/001": "exact",
    "hyperfine/anatomical/001": "exact",
    "philips/anatomical/001": "exact",
    "philips_enhanced/anatomical/001": "exact",
    "siemens/anatomical/001": "exact",
    "siemens_multiframe/anatomical/001": "exact",
}


def _dicom2nifti(testdata: Path) -> Path:
    return require(testdata / "dicom2nifti")


def test_dicom2nifti_cases_cover_every_ground_truth(testdata: Path) -> None:
    """No ground truth file is left out of the parametrised check below."""
    base = _dicom2nifti(testdata)
    found = {
        str(path.relative_to(base))[: -len("_ground_truth.nii.gz")]
        for path in base.rglob("*_ground_truth.nii.gz")
    }
    assert found == set(DICOM2NIFTI_CASES)


@pytest.mark.parametrize("case", sorted(DICOM2NIFTI_CASES))
def test_dicom2nifti_ground_truth_threshold_consistency(testdata: Path, tmp_path: Path, case: str) -> None:
    """levels(ground truth) exported onto the series equals levels(decoded pixel_array) of every frame.

    Thresholds sit at the median of every frame (so each frame has labels on both sides, even where frames have
    different rescale slopes). 4D ``ge/dti``: each volume v in turn, checked on the frames of volume v (the v-th
    frame in InstanceNumber order at each position); other frames must carry the label of volume v's frame at their
    position. ``failing/sliceincrement/002``'s truth is tilt-corrected and resliced by dicom2nifti (514 rows, 5 slices
    although one is missing, the first slice all padding), so it is compared with SimpleITK resampling instead; the
    exact check of that series is ``test_tilt_with_missing_slice_own_sheared_volume``.
    """
    mode = DICOM2NIFTI_CASES[case]
    base = _dicom2nifti(testdata)
    dicom = require(base / case)
    reference = nib.load(str(require(base / f"{case}_ground_truth.nii.gz")))
    data = np.asanyarray(reference.dataobj)
    scan_frames = all_frames(dicom)
    if "compressed" in case:
        assert all(header(path).file_meta.TransferSyntaxUID.is_compressed for path, _ in scan_frames)
    pixels = [modality_pixels(path, frame) for path, frame in scan_frames]
    thresholds = per_frame_median_thresholds(pixels)
    assert_well_populated([levels(p, thresholds) for p in pixels])

    if mode == "4d":
        assert data.ndim == 4
        by_position = defaultdict(list)
        for path, frame in scan_frames:
            position = tuple(np.round(frame_geometry(path, frame)[0], 3))
            by_position[position].append((int(header(path).InstanceNumber), path))
        volumes = data.shape[3]
        assert {len(frames) for frames in by_position.values()} == {volumes}
        for volume in range(volumes):
            members = {sorted(frames)[volume][1].name for frames in by_position.values()}
            reference_volume = nib.Nifti1Image(data[..., volume], reference.affine, header=reference.header)
            segmentation = save_labels_like(
                levels(data[..., volume], thresholds), reference_volume, tmp_path / f"seg{volume}.nii.gz"
            )
            out = tmp_path / f"export{volume}"
            export_cli(dicom, segmentation, out)
            rows = read_manifest(out)
            assert len(rows) == len(scan_frames)
            own = [row for row in rows if Path(row["source_file"]).name in members]
            assert assert_rows_match_levels(out, dicom, thresholds, own) == len(by_position)
            at_position = {row["image_position_patient"]: read_png(out / row["label_png"]) for row in own}
            for row in rows:
                expected = at_position[row["image_position_patient"]]
                np.testing.assert_array_equal(read_png(out / row["label_png"]), expected, err_msg=row["label_png"])
        return

    labels = levels(data, thresholds)
    while labels.ndim > 3 and labels.shape[-1] == 1:
        labels = labels[..., 0]
    reference_3d = nib.Nifti1Image(data.reshape(labels.shape), reference.affine, header=reference.header)
    segmentation = save_labels_like(labels, reference_3d, tmp_path / "seg.nii.gz")
    out = tmp_path / "export"
    export_cli(dicom, segmentation, out)
    assert len(read_manifest(out)) == len(scan_frames)
    if mode == "exact":
        assert_rows_match_levels(out, dicom, thresholds)
    else:
        assert mode == "resliced"
        assert_same_as_itk(out, dicom, segmentation)


def _frames_by_instance(folder: Path) -> list[Path]:
    return sorted(dicom_files(folder), key=lambda path: (int(header(path).InstanceNumber), path.name))


def test_gantry_tilt_own_sheared_volume(testdata: Path, tmp_path: Path) -> None:
    """failing/gantrytilting (14 degrees, no ground truth): a sheared-affine volume built here from the frames'
    own IPP/IOP must come back exactly on every frame; ``info`` reports the tilt computed here from the headers."""
    dicom = require(_dicom2nifti(testdata) / "failing" / "gantrytilting" / "001")
    files = _frames_by_instance(dicom)
    pixels = [modality_pixels(path) for path in files]
    thresholds = per_frame_median_thresholds(pixels)
    truth = [levels(p, thresholds) for p in pixels]
    assert_well_populated(truth)
    segmentation, slots = stack_frames_as_nifti([(path, 1) for path in files], truth, tmp_path / "seg.nii.gz")
    assert sorted(slots) == [0, 1, 2, 3]
    out = tmp_path / "export"
    export_cli(dicom, segmentation, out)
    assert assert_rows_match_levels(out, dicom, thresholds) == 4
    assert any("tilt" in warning for warning in export_warnings(out))

    ipp_first, iop, _ = frame_geometry(files[0])
    ipp_last = frame_geometry(files[-1])[0]
    stacking = (ipp_last - ipp_first) / np.linalg.norm(ipp_last - ipp_first)
    tilt = math.degrees(math.acos(abs(float(np.dot(stacking, normal_of(iop))))))
    assert abs(tilt - 14.0) < 0.1
    (series,) = info_json(dicom)["series"]
    assert abs(series["tilt_degrees"] - tilt) < 0.01


def test_tilt_with_missing_slice_own_sheared_volume(testdata: Path, tmp_path: Path) -> None:
    """failing/sliceincrement/002 (15.5 degree tilt, slice 4 missing): a sheared volume with an empty slot for the
    missing slice, filled with a label that must appear nowhere, comes back exactly on the four frames."""
    out = _gapped_series_round_trip(require(_dicom2nifti(testdata) / "failing" / "sliceincrement" / "002"), tmp_path)
    warnings = " ".join(export_warnings(out))
    assert "uneven slice spacing" in warnings and "tilt" in warnings


def test_missing_slice_exports_and_warns(testdata: Path, tmp_path: Path) -> None:
    """failing/sliceincrement/001 (5 mm steps, one 10 mm gap): exact on every frame, label of the empty slot
    never appears, and the export warns about uneven spacing."""
    out = _gapped_series_round_trip(require(_dicom2nifti(testdata) / "failing" / "sliceincrement" / "001"), tmp_path)
    assert any("uneven slice spacing" in warning for warning in export_warnings(out))


def _gapped_series_round_trip(dicom: Path, tmp_path: Path) -> Path:
    """Four frames with a missing slot between frames 3 and 4: stack them into a volume with the empty slot filled
    with label 250, export, and require every frame exact (250 must appear nowhere). Returns the export folder."""
    files = _frames_by_instance(dicom)
    pixels = [modality_pixels(path) for path in files]
    thresholds = per_frame_median_thresholds(pixels)
    truth = [levels(p, thresholds) for p in pixels]
    assert_well_populated(truth)
    segmentation, slots = stack_frames_as_nifti([(path, 1) for path in files], truth, tmp_path / "seg.nii.gz", fill=250)
    assert slots == [0, 1, 2, 4]
    out = tmp_path / "export"
    export_cli(dicom, segmentation, out)
    assert assert_rows_match_levels(out, dicom, thresholds) == 4
    return out


def test_frames_at_one_position_export_and_warn(testdata: Path, tmp_path: Path) -> None:
    """failing/notavolume: 4 frames at one position. A one-slice label volume built from the first frame (by
    InstanceNumber) lands on all four frames (their pixels differ; their place does not); the export warns."""
    dicom = require(_dicom2nifti(testdata) / "failing" / "notavolume" / "001")
    files = _frames_by_instance(dicom)
    assert len(files) == 4
    first = modality_pixels(files[0])
    thresholds = per_frame_median_thresholds([first])
    truth = levels(first, thresholds)
    assert_well_populated([truth])
    assert not np.array_equal(first, modality_pixels(files[1]))
    normal = normal_of(frame_geometry(files[0])[1])
    segmentation, _ = stack_frames_as_nifti([(files[0], 1)], [truth], tmp_path / "seg.nii.gz", step=normal)
    out = tmp_path / "export"
    export_cli(dicom, segmentation, out)
    rows = read_manifest(out)
    assert [Path(row["source_file"]).name for row in rows] == [path.name for path in files]
    for row in rows:
        np.testing.assert_array_equal(read_png(out / row["label_png"]), truth, err_msg=row["source_file"])
    assert any("1 position holds more than one frame" in warning for warning in export_warnings(out))


@pytest.mark.parametrize("built_from", [0, 1])
def test_two_orientations_in_one_series(testdata: Path, tmp_path: Path, built_from: int) -> None:
    """failing/sliceorientation: one SeriesInstanceUID, two orientations (and two pixel spacings), two frames each.
    A volume built from one orientation's frames comes back exactly on them; the other frames get exactly what
    SimpleITK resampling gives on their own grid; the export warns about several orientations."""
    dicom = require(_dicom2nifti(testdata) / "failing" / "sliceorientation" / "001")
    files = dicom_files(dicom)
    assert len({str(header(path).SeriesInstanceUID) for path in files}) == 1
    groups = defaultdict(list)
    for path in files:
        groups[tuple(np.round(frame_geometry(path)[1], 6))].append(path)
    assert sorted(len(group) for group in groups.values()) == [2, 2]
    chosen = sorted(groups.values(), key=lambda group: group[0].name)[built_from]
    pixels = [modality_pixels(path) for path in chosen]
    thresholds = per_frame_median_thresholds(pixels)
    truth = [levels(p, thresholds) for p in pixels]
    assert_well_populated(truth)
    segmentation, slots = stack_frames_as_nifti([(path, 1) for path in chosen], truth, tmp_path / "seg.nii.gz")
    assert sorted(slots) == [0, 1]
    out = tmp_path / "export"
    export_cli(dicom, segmentation, out)
    rows = read_manifest(out)
    assert sorted(Path(row["source_file"]).name for row in rows) == sorted(path.name for path in files)
    own = [row for row in rows if dicom / row["source_file"] in chosen]
    assert assert_rows_match_levels(out, dicom, thresholds, own) == 2
    for row in rows:
        h = header(dicom / row["source_file"])
        assert read_png(out / row["label_png"]).shape == (int(h.Rows), int(h.Columns))
        assert np.allclose([float(v) for v in row["pixel_spacing"].split()], [float(v) for v in h.PixelSpacing])
    assert_same_as_itk(out, dicom, segmentation)
    assert any("different orientations" in warning for warning in export_warnings(out))


# --------------------------------------------------------------------------------------------------------------------
# 6. pydicom dicomdirtests: a folder with several series
# --------------------------------------------------------------------------------------------------------------------


def test_several_series_listed_and_export_refused_without_series(testdata: Path, tmp_path: Path) -> None:
    """98892003 holds several MR series (localizers, varying orientation): ``info`` lists every SeriesInstanceUID
    pydicom finds, and ``export`` without --series fails with status 1, one error line, then one line per series."""
    folder = require(
        testdata / "pydicom_test_files" / "src" / "pydicom" / "data" / "test_files" / "dicomdirtests" / "98892003"
    )
    uids = {str(header(path).SeriesInstanceUID) for path in dicom_files(folder)}
    assert len(uids) > 1
    report = info_json(folder)
    assert {series["uid"] for series in report["series"]} == uids
    assert sum(series["frames"] for series in report["series"]) == len(dicom_files(folder))
    text = run_cli("info", folder)
    assert text.code == 0 and all(uid in text.stdout for uid in uids)

    segmentation = tmp_path / "seg.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), dtype=np.uint8), np.eye(4)), str(segmentation))
    out = tmp_path / "export"
    run = run_cli("export", folder, segmentation, "-o", out)
    assert run.code == 1
    first, *listing = run.stderr.strip().splitlines()
    assert first.startswith("segalign: error:") and "--series" in first and len(listing) == len(uids), run.stderr
    missing = [uid for uid in uids if not any(uid in line for line in listing)]
    assert not missing, f"the listing does not name {missing}: {listing}"
    assert not out.exists() and leftovers(tmp_path) == []


# --------------------------------------------------------------------------------------------------------------------
# 7. dcmqi: label maps against the DICOM SEG made from them (feet-first CT, odd matrix sizes, legacy multi-frame)
# --------------------------------------------------------------------------------------------------------------------

DCMQI_CASES = {
    # case: (DICOM folder, label map, DICOM SEG made from that label map)
    "ct-3slice_feet_first": ("ct-3slice", "derived_nifti/liver_seg.nii.gz", "liver.dcm"),
    "23x38x3_single_frame": ("23x38x3/image", "23x38x3/nrrd/label.nrrd", "23x38x3/seg/label.seg"),
    "23x38x3_legacy_multiframe": ("23x38x3/multiframe", "23x38x3/nrrd/label.nrrd", "23x38x3/seg/label.seg"),
    "24x38x3_single_frame": ("24x38x3/image", "24x38x3/nrrd/label.nrrd", "24x38x3/seg/label.seg"),
    "24x38x3_legacy_multiframe": ("24x38x3/multiframe", "24x38x3/nrrd/label.nrrd", "24x38x3/seg/label.seg"),
}


@pytest.mark.parametrize("case", sorted(DCMQI_CASES))
def test_dcmqi_label_map_matches_reference_dicom_seg(testdata: Path, tmp_path: Path, case: str) -> None:
    """A label map exported onto its series equals the BINARY DICOM SEG dcmqi made from the same label map: SEG
    frames are matched to image frames by ReferencedSOPInstanceUID (single-frame files) or by IPP (the legacy
    converted multi-frame copy). NRRD label maps are converted to NIfTI with SimpleITK (its own LPS -> RAS)."""
    base = require(testdata / "dcmqi_segmentations")
    folder, label_map, seg_file = (require(base / part) for part in DCMQI_CASES[case])
    segmentation = label_map
    if label_map.suffix == ".nrrd":
        sitk = pytest.importorskip("SimpleITK", reason="converts the NRRD label map to NIfTI")
        segmentation = tmp_path / "labels.nii.gz"
        sitk.WriteImage(sitk.ReadImage(str(label_map)), str(segmentation))
    values = [int(v) for v in np.unique(np.asanyarray(nib.load(str(segmentation)).dataobj)) if v]
    assert len(values) == 1
    out = tmp_path / "export"
    export_cli(folder, segmentation, out)

    seg = pydicom.dcmread(seg_file)
    assert seg.SegmentationType == "BINARY" and len(seg.SegmentSequence) == 1
    masks = seg.pixel_array.reshape(int(seg.NumberOfFrames), int(seg.Rows), int(seg.Columns))
    by_uid, by_position = {}, {}
    for mask, item in zip(masks, seg.PerFrameFunctionalGroupsSequence):
        uid = str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        position = tuple(np.round(np.array(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float), 3))
        by_uid[uid] = by_position[position] = (mask != 0).astype(np.uint8) * values[0]
    rows = read_manifest(out)
    assert len(rows) == len(masks) == 3
    multiframe = int(header(folder / rows[0]["source_file"]).get("NumberOfFrames", 1) or 1) > 1
    labelled = 0
    for row in rows:
        path, frame = folder / row["source_file"], int(row["frame"])
        if multiframe:
            expected = by_position[tuple(np.round(frame_geometry(path, frame)[0], 3))]
        else:
            expected = by_uid[str(header(path).SOPInstanceUID)]
        np.testing.assert_array_equal(read_png(out / row["label_png"]), expected, err_msg=row["label_png"])
        labelled += int(expected.any())
    assert labelled >= 1
    if case.startswith("ct-3slice"):
        assert {str(header(path).PatientPosition) for path in dicom_files(folder)} == {"FFS"}
