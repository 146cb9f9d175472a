"""Synthetic DICOM series and segmentations with known answers, for the demo, the tests and the benchmark.

A :class:`Phantom` is a set of shapes defined in patient millimetres (LPS). Series are written frame by frame from
explicit geometry (:class:`FrameSpec`), and segmentations by evaluating the phantom at voxel centres, so the label
expected at any DICOM pixel is known analytically, independent of any resampling code.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from .geometry import LPS_TO_RAS
from .shapes import Box, Cylinder, Ellipsoid, Shape, Torus

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)


@dataclass
class Phantom:
    """Shapes in patient space; where shapes overlap, the later one wins. ``body`` sets the CT values only.

    A shape is an :class:`Ellipsoid`, :class:`Box`, :class:`Cylinder` or :class:`Torus` (each has ``value``,
    ``name``, ``hu``, ``color``, ``bounds()`` and ``contains(points)``). Where shapes stand for segments that may
    overlap, :meth:`masks_at` gives each one whole.
    """

    shapes: list[Shape]
    body: Ellipsoid | None = None

    def labels_at(self, points: np.ndarray) -> np.ndarray:
        """Label (uint8) at each LPS point of an array shaped ``(..., 3)``."""
        labels = np.zeros(points.shape[:-1], dtype=np.uint8)
        for shape in self.shapes:
            labels[shape.contains(points)] = shape.value
        return labels

    def masks_at(self, points: np.ndarray) -> dict[int, np.ndarray]:
        """Each shape's own mask (booleans) at each LPS point of an array shaped ``(..., 3)``, by value: segments
        that overlap are each whole (shapes must have values of their own)."""
        values = [shape.value for shape in self.shapes]
        if len(set(values)) != len(values):
            raise ValueError(f"shapes share values: {sorted(values)}")
        return {shape.value: shape.contains(points) for shape in self.shapes}

    def hu_at(self, points: np.ndarray) -> np.ndarray:
        """CT value at each LPS point: air, soft-tissue body, organs."""
        hu = np.full(points.shape[:-1], -1000.0)
        if self.body is not None:
            hu[self.body.contains(points)] = self.body.hu
        for shape in self.shapes:
            hu[shape.contains(points)] = shape.hu
        return hu

    def label_table_xml(self) -> str:
        """The TotalSegmentator-style ``CaretExtension`` XML naming every shape."""
        entries = "\n".join(
            f'<Label Key="{s.value}" Red="{s.color[0] / 255}" Green="{s.color[1] / 255}" Blue="{s.color[2] / 255}" '
            f'Alpha="1"><![CDATA[{s.name}]]></Label>'
            for s in self.shapes
        )
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n<CaretExtension>\n<Date><![CDATA[2026-11-24T00:00:00]]></Date>\n'
            f'<VolumeInformation Index="0">\n<LabelTable>\n{entries}\n</LabelTable>\n</VolumeInformation>\n</CaretExtension>'
        )


def abdomen_phantom(centre: Sequence[float] = (0.0, 0.0, 0.0)) -> Phantom:
    """A few abdominal organs around ``centre`` (LPS mm), with TotalSegmentator v2 label values and colours."""
    cx, cy, cz = centre

    def at(x: float, y: float, z: float) -> tuple[float, float, float]:
        return (cx + x, cy + y, cz + z)

    return Phantom(
        body=Ellipsoid(0, "body", at(0, 0, 0), (170, 120, 400), hu=20),
        shapes=[
            Ellipsoid(5, "liver", at(-70, -10, 30), (80, 70, 60), hu=60, color=(221, 130, 101)),
            Ellipsoid(1, "spleen", at(85, 30, 40), (35, 45, 50), hu=45, color=(157, 108, 162)),
            Ellipsoid(2, "kidney_right", at(-60, 55, -40), (28, 30, 50), hu=35, color=(185, 102, 83)),
            Ellipsoid(3, "kidney_left", at(60, 55, -35), (28, 30, 50), hu=35, color=(95, 158, 205)),
            Ellipsoid(52, "aorta", at(15, 25, 0), (12, 12, 120), hu=180, color=(224, 97, 76)),
            Ellipsoid(31, "vertebrae_L1", at(0, 70, 0), (25, 22, 120), hu=700, color=(241, 214, 145)),
        ],
    )


@dataclass(frozen=True)
class FrameSpec:
    """Geometry and identity of one frame to write."""

    position: tuple[float, float, float]
    orientation: tuple[float, ...] = AXIAL
    spacing: tuple[float, float] = (1.0, 1.0)  #: (between rows, between columns)
    rows: int = 32
    columns: int = 32
    instance_number: int | None = 1

    def pixel_centres(self) -> np.ndarray:
        """LPS centre of every pixel, shaped ``(rows, columns, 3)``."""
        row_cosine = np.asarray(self.orientation[:3], dtype=float)
        column_cosine = np.asarray(self.orientation[3:6], dtype=float)
        r = np.arange(self.rows)[:, None, None]
        c = np.arange(self.columns)[None, :, None]
        return (
            np.asarray(self.position, dtype=float)
            + c * self.spacing[1] * row_cosine
            + r * self.spacing[0] * column_cosine
        )


def stack(
    first_position: Sequence[float],
    count: int,
    step: Sequence[float],
    *,
    orientation: Sequence[float] = AXIAL,
    spacing: tuple[float, float] = (1.0, 1.0),
    rows: int = 32,
    columns: int = 32,
    instance_numbers: Iterable[int | None] | None = None,
) -> list[FrameSpec]:
    """``count`` frames at ``first_position + n * step`` (``step`` need not be along the normal: gantry tilt)."""
    numbers = list(instance_numbers) if instance_numbers is not None else list(range(1, count + 1))
    return [
        FrameSpec(
            position=tuple(np.asarray(first_position, float) + n * np.asarray(step, float)),  # type: ignore[arg-type]
            orientation=tuple(orientation),
            spacing=spacing,
            rows=rows,
            columns=columns,
            instance_number=numbers[n],
        )
        for n in range(count)
    ]


@dataclass
class SeriesIdentity:
    """UIDs and descriptive attributes shared by the files of one written series."""

    series_uid: str = field(default_factory=generate_uid)
    study_uid: str = field(default_factory=generate_uid)
    frame_of_reference_uid: str = field(default_factory=generate_uid)
    description: str = "SegAlign phantom"
    modality: str = "CT"
    series_number: int = 1


def stored_values(spec: FrameSpec, phantom: Phantom) -> np.ndarray:
    """Stored pixel values (HU + 1024, uint16) of a CT frame of ``phantom``."""
    return np.clip(phantom.hu_at(spec.pixel_centres()) + 1024, 0, 4095).astype(np.uint16)


def write_series(
    folder: str | os.PathLike[str],
    specs: Sequence[FrameSpec],
    phantom: Phantom | None = None,
    *,
    identity: SeriesIdentity | None = None,
    file_names: Sequence[str] | None = None,
    pixel_function=None,
) -> list[Path]:
    """Write one single-frame CT file per spec; returns the paths in spec order.

    Pixels are ``pixel_function(spec)`` (uint16), else the phantom's CT values, else zeros.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    identity = identity or SeriesIdentity()
    paths = []
    for index, spec in enumerate(specs):
        pixels = _pixels(spec, phantom, pixel_function)
        dataset = _base_dataset(identity, CT_IMAGE_STORAGE, spec.rows, spec.columns)
        dataset.InstanceNumber = spec.instance_number if spec.instance_number is not None else None
        if spec.instance_number is None:
            del dataset.InstanceNumber
        dataset.ImagePositionPatient = [f"{v:.6f}" for v in spec.position]
        dataset.ImageOrientationPatient = [f"{v:.8f}" for v in spec.orientation]
        dataset.PixelSpacing = [f"{v:.6f}" for v in spec.spacing]
        dataset.SliceThickness = "1"
        dataset.PixelData = pixels.tobytes()
        name = file_names[index] if file_names is not None else f"IM{index:05d}.dcm"
        path = folder / name
        dataset.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_enhanced(
    path: str | os.PathLike[str],
    specs: Sequence[FrameSpec],
    phantom: Phantom | None = None,
    *,
    identity: SeriesIdentity | None = None,
    instance_number: int = 1,
    pixel_function=None,
) -> Path:
    """Write the specs as frames of one enhanced CT file: orientation and spacing shared, position per frame."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    identity = identity or SeriesIdentity()
    first = specs[0]
    dataset = _base_dataset(identity, ENHANCED_CT_IMAGE_STORAGE, first.rows, first.columns)
    dataset.InstanceNumber = instance_number
    dataset.NumberOfFrames = len(specs)
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [f"{v:.6f}" for v in first.spacing]
    measures.SliceThickness = "1"
    shared.PixelMeasuresSequence = DicomSequence([measures])
    plane = Dataset()
    plane.ImageOrientationPatient = [f"{v:.8f}" for v in first.orientation]
    shared.PlaneOrientationSequence = DicomSequence([plane])
    dataset.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per_frame = []
    for number, spec in enumerate(specs, start=1):
        item = Dataset()
        position = Dataset()
        position.ImagePositionPatient = [f"{v:.6f}" for v in spec.position]
        item.PlanePositionSequence = DicomSequence([position])
        content = Dataset()
        content.InStackPositionNumber = number
        item.FrameContentSequence = DicomSequence([content])
        if tuple(spec.orientation) != tuple(first.orientation):
            own = Dataset()
            own.ImageOrientationPatient = [f"{v:.8f}" for v in spec.orientation]
            item.PlaneOrientationSequence = DicomSequence([own])
        per_frame.append(item)
    dataset.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    dataset.PixelData = b"".join(_pixels(spec, phantom, pixel_function).tobytes() for spec in specs)
    dataset.save_as(path, enforce_file_format=True)
    return path


def _pixels(spec: FrameSpec, phantom: Phantom | None, pixel_function) -> np.ndarray:
    if pixel_function is not None:
        return np.asarray(pixel_function(spec), dtype=np.uint16)
    if phantom is not None:
        return stored_values(spec, phantom)
    return np.zeros((spec.rows, spec.columns), dtype=np.uint16)


def _base_dataset(identity: SeriesIdentity, sop_class: str, rows: int, columns: int) -> Dataset:
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = sop_class
    dataset.SOPInstanceUID = sop_uid
    dataset.StudyInstanceUID = identity.study_uid
    dataset.SeriesInstanceUID = identity.series_uid
    dataset.FrameOfReferenceUID = identity.frame_of_reference_uid
    dataset.Modality = identity.modality
    dataset.SeriesDescription = identity.description
    dataset.SeriesNumber = identity.series_number
    dataset.PatientName = "SegAlign^Phantom"
    dataset.PatientID = "SEGALIGN-PHANTOM"
    dataset.PatientPosition = "HFS"
    dataset.Rows = rows
    dataset.Columns = columns
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated = 16
    dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = 0
    dataset.RescaleIntercept = "-1024"
    dataset.RescaleSlope = "1"
    dataset.WindowCenter = "40"
    dataset.WindowWidth = "400"
    return dataset


def grid_affine(
    origin_lps: Sequence[float], spacing: Sequence[float], axes_lps: Sequence[Sequence[float]] | None = None
) -> np.ndarray:
    """Voxel-to-RAS affine of a grid whose voxel ``(0,0,0)`` is at ``origin_lps`` and whose i, j, k axes point
    along ``axes_lps`` (unit LPS vectors; default L, P, S) with ``spacing`` mm."""
    axes = np.asarray(axes_lps if axes_lps is not None else np.eye(3), dtype=float)
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ (axes.T * np.asarray(spacing, dtype=float))
    affine[:3, 3] = LPS_TO_RAS @ np.asarray(origin_lps, dtype=float)
    return affine


def las_affine(lps_box_min: Sequence[float], lps_box_max: Sequence[float], spacing: Sequence[float]) -> tuple[np.ndarray, tuple[int, int, int]]:
    """A TotalSegmentator-like LAS grid covering an LPS box: i towards L, j towards A, k towards S."""
    low = np.asarray(lps_box_min, dtype=float)
    high = np.asarray(lps_box_max, dtype=float)
    spacing = np.asarray(spacing, dtype=float)
    shape = tuple(int(n) for n in np.floor((high - low) / spacing).astype(int) + 1)
    origin = np.array([low[0], high[1], low[2]])  # L axis starts at the right, A axis starts posterior
    affine = grid_affine(origin, spacing, axes_lps=[(1, 0, 0), (0, -1, 0), (0, 0, 1)])
    return affine, shape  # type: ignore[return-value]


def rasterize(phantom: Phantom, shape: Sequence[int], affine: np.ndarray, dtype=np.uint8) -> np.ndarray:
    """The phantom's labels at every voxel centre of a grid (``affine``: voxel to RAS).

    Each shape is evaluated only on the voxels of its bounding box, in phantom order (later shapes win), so
    large grids with many small shapes are quick.
    """
    labels = np.zeros(tuple(shape), dtype=dtype, order="F")
    for ellipsoid in phantom.shapes:
        found = _shape_in_box(ellipsoid, shape, affine)
        if found is not None:
            box, inside = found
            labels[box][inside] = ellipsoid.value
    return labels


def rasterize_shape(shape_of: Shape, shape: Sequence[int], affine: np.ndarray) -> np.ndarray:
    """One shape's mask (booleans, Fortran order) at every voxel centre of a grid (``affine``: voxel to RAS), as
    :func:`rasterize` evaluates it: for a mask file of one structure, whatever the other shapes cover."""
    mask = np.zeros(tuple(shape), dtype=bool, order="F")
    found = _shape_in_box(shape_of, shape, affine)
    if found is not None:
        box, inside = found
        mask[box] = inside
    return mask


def _shape_in_box(shape_of: Shape, shape: Sequence[int], affine: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray] | None:
    """The grid's voxels in the box around a shape (as slices) and which of them it holds; None off the grid."""
    index_from_lps = np.linalg.inv(affine)[:3, :3] @ LPS_TO_RAS
    index_offset = np.linalg.inv(affine)[:3, 3]
    low, high = shape_of.bounds()
    corners = np.array([[x, y, z] for x in (low[0], high[0]) for y in (low[1], high[1]) for z in (low[2], high[2])])
    index = corners @ index_from_lps.T + index_offset
    start = np.clip(np.floor(index.min(axis=0)).astype(int), 0, np.array(shape))
    stop = np.clip(np.ceil(index.max(axis=0)).astype(int) + 1, 0, np.array(shape))
    if np.any(stop <= start):
        return None
    grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(start, stop)], indexing="ij"), axis=-1)
    lps = (grid @ affine[:3, :3].T + affine[:3, 3]) @ LPS_TO_RAS.T
    return tuple(slice(int(a), int(b)) for a, b in zip(start, stop)), shape_of.contains(lps)


def write_nifti(
    path: str | os.PathLike[str],
    labels: np.ndarray,
    affine: np.ndarray,
    *,
    sform_code: int = 2,
    qform_code: int = 0,
    qform: np.ndarray | None = None,
    label_table_xml: str | None = None,
) -> Path:
    """Write a label volume as NIfTI with explicit sform/qform codes and an optional embedded label table."""
    import nibabel as nib  # only here: the rest of this module (and the Slicer self-test) runs without nibabel

    image = nib.Nifti1Image(labels, affine)
    image.set_sform(affine, code=sform_code)
    image.set_qform(qform if qform is not None else affine, code=qform_code)
    if label_table_xml is not None:
        image.header.extensions.append(nib.nifti1.Nifti1Extension(0, label_table_xml.encode("utf-8")))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
    return path


def write_metaimage(path: str | os.PathLike[str], labels: np.ndarray, affine: np.ndarray) -> Path:
    """Write a label volume ``labels[i, j, k]`` with its voxel-to-RAS ``affine`` as an ITK MetaImage (``.mha``),
    with SimpleITK (bundled with 3D Slicer, so the Slicer self-test needs nothing Slicer lacks). ITK's geometry is
    LPS: the affine is converted, and must have orthogonal axes (ITK's direction cosines)."""
    import SimpleITK as sitk

    lps = np.asarray(affine, dtype=float).copy()
    lps[:3] = LPS_TO_RAS @ lps[:3]  # RAS -> LPS: the same diagonal flip both ways
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(labels, (2, 1, 0))))  # ITK's array is [k, j, i]
    image.SetSpacing([float(v) for v in spacing])
    image.SetOrigin([float(v) for v in lps[:3, 3]])
    image.SetDirection([float(v) for v in (lps[:3, :3] / spacing).ravel()])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), True)
    return path


def shuffled_names(count: int, seed: int = 0) -> list[str]:
    """Random-looking file names whose sort order says nothing about the frames."""
    rng = random.Random(seed)
    return [f"{rng.getrandbits(40):010x}.dcm" for _ in range(count)]


def expected_labels(spec: FrameSpec, phantom: Phantom) -> np.ndarray:
    """The analytic label at every pixel centre of a frame."""
    return phantom.labels_at(spec.pixel_centres())


__all__ = [
    "AXIAL",
    "CORONAL",
    "SAGITTAL",
    "Box",
    "Cylinder",
    "Ellipsoid",
    "FrameSpec",
    "Phantom",
    "SeriesIdentity",
    "Torus",
    "abdomen_phantom",
    "expected_labels",
    "grid_affine",
    "las_affine",
    "rasterize",
    "rasterize_shape",
    "shuffled_names",
    "stack",
    "write_enhanced",
    "write_nifti",
    "write_series",
]
