"""Test-side helpers for phantom cases: truth computed from the written DICOM tags, independent of the engine."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pydicom

from segalign.synthetic import FrameSpec, Phantom, rasterize, write_nifti

RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0])


def small_phantom(centre: Sequence[float] = (0.0, 0.0, 0.0)) -> Phantom:
    """Three overlapping ellipsoids with non-round sizes (no pixel centre sits exactly on a boundary)."""
    from segalign.synthetic import Ellipsoid

    cx, cy, cz = centre
    return Phantom(
        shapes=[
            Ellipsoid(1, "big", (cx - 2.3, cy + 1.1, cz + 0.7), (11.3, 8.7, 9.9)),
            Ellipsoid(2, "left_blob", (cx + 7.1, cy - 3.3, cz - 2.9), (4.1, 6.3, 5.2)),
            Ellipsoid(7, "tilted_rod", (cx - 4.2, cy + 4.4, cz + 1.3), (2.7, 3.3, 13.1),
                      axes=_rotation(0.4, 0.3, 0.2)),
        ]
    )


def _rotation(a: float, b: float, c: float) -> tuple[tuple[float, float, float], ...]:
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return tuple(tuple(row) for row in (rz @ ry @ rx))  # type: ignore[return-value]


def rotated_orientation(a: float, b: float, c: float = 0.0) -> tuple[float, ...]:
    """IOP of a plane rotated from axial by angles about x, y and z (radians): double oblique in general."""
    rotation = np.array(_rotation(a, b, c))
    return tuple(np.concatenate([rotation[:, 0], rotation[:, 1]]).tolist())


def pixel_centres_from_file(path: Path, frame: int = 0) -> np.ndarray:
    """LPS pixel centres ``(rows, columns, 3)`` computed from the tags pydicom reads back, written out here from
    the DICOM standard (C.7.6.2.1.1) rather than taken from SegAlign."""
    dataset = pydicom.dcmread(path, stop_before_pixels=True)
    if "PerFrameFunctionalGroupsSequence" in dataset:
        item = dataset.PerFrameFunctionalGroupsSequence[frame]
        shared = dataset.SharedFunctionalGroupsSequence[0]
        ipp = item.PlanePositionSequence[0].ImagePositionPatient
        iop = (item if "PlaneOrientationSequence" in item else shared).PlaneOrientationSequence[0].ImageOrientationPatient
        spacing = shared.PixelMeasuresSequence[0].PixelSpacing
    else:
        ipp, iop, spacing = dataset.ImagePositionPatient, dataset.ImageOrientationPatient, dataset.PixelSpacing
    ipp = np.array(ipp, dtype=float)
    iop = np.array(iop, dtype=float)
    delta_row, delta_column = float(spacing[0]), float(spacing[1])  # PixelSpacing = [row spacing, column spacing]
    x_cosine, y_cosine = iop[:3], iop[3:]  # direction of increasing column, of increasing row
    i = np.arange(dataset.Columns)[None, :, None]  # column index
    j = np.arange(dataset.Rows)[:, None, None]  # row index
    return ipp + x_cosine * delta_column * i + y_cosine * delta_row * j


def stack_affine(
    specs: Sequence[FrameSpec], permutation: Sequence[int] = (0, 1, 2), flips: Sequence[bool] = (False, False, False)
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Voxel-to-RAS affine and shape of a grid whose voxel centres are exactly the pixel centres of a regular
    stack: axis 0 along columns, 1 along rows, 2 from frame to frame (the IPP step, which may be off the normal),
    then permuted and flipped as a converter might store it."""
    first = specs[0]
    iop = np.asarray(first.orientation, dtype=float)
    axes = [iop[:3] * first.spacing[1], iop[3:] * first.spacing[0]]
    step = np.asarray(specs[1].position, float) - np.asarray(first.position, float) if len(specs) > 1 else np.cross(iop[:3], iop[3:])
    axes.append(step)
    sizes = [first.columns, first.rows, len(specs)]
    origin = np.asarray(first.position, dtype=float)
    for axis, flip in enumerate(flips):
        if flip:
            origin = origin + (sizes[axis] - 1) * axes[axis]
            axes[axis] = -axes[axis]
    affine = np.eye(4)
    affine[:3, :3] = RAS_FROM_LPS @ np.column_stack([axes[p] for p in permutation])
    affine[:3, 3] = RAS_FROM_LPS @ origin
    shape = tuple(sizes[p] for p in permutation)
    return affine, shape  # type: ignore[return-value]


def rasterize_here(phantom: Phantom, shape: Sequence[int], affine: np.ndarray) -> np.ndarray:
    """The phantom at every voxel centre, computed here (not with segalign.synthetic.rasterize)."""
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    ras = np.stack([i, j, k], axis=-1) @ affine[:3, :3].T + affine[:3, 3]
    return phantom.labels_at(ras @ RAS_FROM_LPS.T)


def write_segmentation(path: Path, phantom: Phantom, affine: np.ndarray, shape: Sequence[int], **kwargs) -> Path:
    labels = rasterize_here(phantom, shape, affine)
    assert np.array_equal(labels, rasterize(phantom, shape, affine)), "segalign.synthetic.rasterize disagrees"
    return write_nifti(path, labels, affine, **kwargs)


def near_boundary(points: np.ndarray, phantom: Phantom, radius: float) -> np.ndarray:
    """True where the phantom's label changes within ``radius`` mm of a point (checked along 26 directions)."""
    centre = phantom.labels_at(points)
    changed = np.zeros(points.shape[:-1], dtype=bool)
    for offset in np.array(np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1])).reshape(3, -1).T:
        if not offset.any():
            continue
        for fraction in (0.5, 1.0):
            shifted = points + offset / np.linalg.norm(offset) * radius * fraction
            changed |= phantom.labels_at(shifted) != centre
    return changed
