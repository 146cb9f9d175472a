"""Test-side helpers for phantom cases: truth computed from the written DICOM tags, independent of the engine."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Sequence

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


# ---------------------------------------------------------------------------------------------------------------
# Nested and crossing structures: segments that overlap (the BODY around every organ, a tumour in its organ...)
# ---------------------------------------------------------------------------------------------------------------

#: The structures of :func:`nested_phantom`, by value, and the pairs of them that overlap. A BODY holds every other
#: structure but the two slabs (which stick out of it); liver > tumour (nested three deep); a ring crosses a tube
#: (two small crossings); a one-voxel dot lies inside the kidney; the two slabs overlap on one frame only.
NESTED_NAMES = {1: "body", 2: "liver", 3: "kidney", 4: "tumour", 5: "tube", 6: "ring", 7: "dot", 8: "slab_lower",
                9: "slab_upper"}
NESTED_OVERLAPS = {(1, 2), (1, 3), (1, 4), (1, 5), (1, 6), (1, 7), (1, 8), (1, 9), (2, 4), (3, 7), (5, 6), (8, 9)}


def nested_phantom(centre: Sequence[float], orientation: Sequence[float], half_width: float,
                   depths: Sequence[float], affine: np.ndarray) -> Phantom:
    """Nine structures that overlap as :data:`NESTED_OVERLAPS` says, laid out in a stack's own frame: ``u`` along
    its rows (IOP[0:3]), ``v`` along its columns (IOP[3:6]), ``w`` along the normal, around ``centre`` (LPS mm),
    sized by the stack's in-plane ``half_width`` (mm) and its planes' ``depths`` (their offsets from ``centre``
    along ``w``, mm). The two slabs overlap within 0.3 plane gaps of the plane three quarters along (so on that
    frame only); the dot is a sphere of 0.3 voxels around the voxel centre of the segmentation grid (``affine``:
    voxel to RAS) nearest the kidney's centre (one voxel). Sizes are fractions chosen so that no pixel centre of a
    regular stack falls on a boundary."""
    from segalign.synthetic import Box, Cylinder, Ellipsoid, Torus

    u, v = np.asarray(orientation[:3], dtype=float), np.asarray(orientation[3:6], dtype=float)
    w = np.cross(u, v)
    axes = (tuple(u), tuple(v), tuple(w))
    ordered = np.sort(np.asarray(depths, dtype=float))
    a, b = half_width, float(ordered[-1] - ordered[0]) / 2
    gap = float(np.min(np.diff(ordered)))
    plane = float(ordered[round(0.75 * (len(ordered) - 1))])

    def at(x: float, y: float, z: float) -> np.ndarray:
        return np.asarray(centre, dtype=float) + x * a * u + y * a * v + z * b * w

    def slab(value: int, low: float, high: float) -> Box:
        middle = at(-0.447, 0.523, 0.0) + w * (plane + (low + high) / 2 * gap)
        return Box(value, NESTED_NAMES[value], tuple(middle), (0.171 * a, 0.103 * a, (high - low) / 2 * gap),
                   axes=axes)

    dot = snap_to_voxel(at(0.353, 0.253, -0.297), affine)
    voxel = float(np.min(np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)))
    return Phantom(shapes=[
        Ellipsoid(1, "body", tuple(at(0.013, -0.011, 0.007)), (0.853 * a, 0.707 * a, 0.803 * b), axes=axes),
        Ellipsoid(2, "liver", tuple(at(-0.351, -0.103, 0.051)), (0.303 * a, 0.297 * a, 0.453 * b), axes=axes),
        Ellipsoid(3, "kidney", tuple(at(0.353, 0.253, -0.297)), (0.183 * a, 0.203 * a, 0.403 * b), axes=axes),
        Ellipsoid(4, "tumour", tuple(at(-0.403, -0.053, 0.101)), (0.103 * a, 0.083 * a, 0.203 * b), axes=axes),
        Cylinder(5, "tube", tuple(at(0.303, -0.397, 0.013)), 0.331 * a, (0.053 * a, 0.187 * b), axes=axes),
        Torus(6, "ring", tuple(at(0.307, -0.403, 0.009)), 0.143 * a, 0.047 * a, 0.153 * b, axes=axes),
        Ellipsoid(7, "dot", tuple(float(c) for c in dot), (0.3 * voxel,) * 3),
        slab(8, -4.07, 0.31),
        slab(9, -0.29, 3.93),
    ])  # type: ignore[arg-type]


def nested_phantom_on(specs: Sequence[FrameSpec], affine: np.ndarray) -> Phantom:
    """:func:`nested_phantom` on a stack of frames (``specs``, before any is left out), centred on it, whose
    segmentation grid is ``affine`` (voxel to RAS)."""
    first = specs[0]
    u, v = np.asarray(first.orientation[:3], dtype=float), np.asarray(first.orientation[3:6], dtype=float)
    middles = [np.asarray(s.position, dtype=float) + (s.columns - 1) / 2 * s.spacing[1] * u
               + (s.rows - 1) / 2 * s.spacing[0] * v for s in specs]
    centre = np.mean(middles, axis=0)
    depths = [(np.asarray(s.position, dtype=float) - centre) @ np.cross(u, v) for s in specs]
    half_width = min(first.columns * first.spacing[1], first.rows * first.spacing[0]) / 2
    return nested_phantom(centre, first.orientation, half_width, depths, affine)


def snap_to_voxel(point_lps: Sequence[float], affine: np.ndarray) -> np.ndarray:
    """The voxel centre (LPS) of a grid (``affine``: voxel to RAS) nearest a point."""
    ras = RAS_FROM_LPS @ np.asarray(point_lps, dtype=float)
    index = np.round(np.linalg.solve(affine[:3, :3], ras - affine[:3, 3]))
    return RAS_FROM_LPS @ (affine[:3, :3] @ index + affine[:3, 3])


def masks_here(phantom: Phantom, shape: Sequence[int], affine: np.ndarray) -> dict[int, np.ndarray]:
    """Each structure's mask at every voxel centre of a grid, computed here (as :func:`rasterize_here` does)."""
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    ras = np.stack([i, j, k], axis=-1) @ affine[:3, :3].T + affine[:3, 3]
    return phantom.masks_at(ras @ RAS_FROM_LPS.T)


def fewest_layers(overlaps: Iterable[tuple[int, int]], values: Iterable[int]) -> int:
    """The fewest layers segments that overlap as ``overlaps`` says can be kept in (the graph's chromatic
    number, by trying every colouring: for the few segments of a test)."""
    import itertools

    values = sorted(values)
    pairs = {tuple(sorted(pair)) for pair in overlaps}
    for count in range(1, len(values) + 1):
        for colours in itertools.product(range(count), repeat=len(values)):
            given = dict(zip(values, colours))
            if all(given[a] != given[b] for a, b in pairs if a in given and b in given):
                return count
    return len(values)
