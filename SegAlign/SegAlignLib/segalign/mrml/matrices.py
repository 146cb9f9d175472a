"""Matrices between VTK and numpy, and the geometry Slicer volumes can hold.

:func:`matrix_to_array` and :func:`array_to_matrix` convert a vtkMatrix4x4; :func:`oriented_image_array` gives a
vtkOrientedImageData's voxels as ``array[i, j, k]`` with their voxel-to-RAS matrix; :func:`split_affine` splits a
sheared voxel-to-RAS affine into the orthogonal geometry a Slicer volume holds and the linear transform above it;
:func:`grid_offset` says where a volume lies on another's grid in whole voxels (a cropped layer, as an extent).
"""

from __future__ import annotations

import numpy as np

#: Columns of a voxel-to-RAS matrix closer to orthogonal than this are stored as a plain Slicer volume geometry.
ORTHOGONALITY_TOLERANCE = 1e-6


def matrix_to_array(matrix) -> np.ndarray:
    """A vtkMatrix4x4 as a 4x4 numpy array."""
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def array_to_matrix(array: np.ndarray):
    """A 4x4 numpy array as a vtkMatrix4x4."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def oriented_image_array(image) -> tuple[np.ndarray, np.ndarray]:
    """A vtkOrientedImageData's voxels as ``array[i, j, k]`` (a view where possible) and the voxel-to-RAS matrix of
    array index 0 (the image's extent need not start at 0)."""
    from vtk.util import numpy_support

    extent = image.GetExtent()
    scalars = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    shape = (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    voxels = scalars.reshape(shape).transpose(2, 1, 0)  # VTK runs i fastest: [k, j, i] -> [i, j, k]
    return voxels, shifted(matrix_to_array(image_to_world(image)), extent[0::2])


def shifted(matrix: np.ndarray, low) -> np.ndarray:
    """The voxel-to-RAS matrix of index ``low`` of the grid ``matrix`` taken as index 0 (an image's extent start)."""
    matrix = np.array(matrix, dtype=float)
    low = np.asarray(low, dtype=float)
    matrix[:3, 3] = matrix[:3, :3] @ low + matrix[:3, 3]
    return matrix


#: A volume placed on another's grid may be off a whole voxel by at most this (voxels) anywhere.
GRID_TOLERANCE_VOXELS = 1e-6


def grid_offset(base: np.ndarray, affine: np.ndarray) -> tuple[int, int, int] | None:
    """Where index 0 of the grid ``affine`` lies on the grid ``base``, in whole voxels (a volume cropped from it),
    or None when ``affine`` is not ``base`` moved by whole voxels (other axes, spacing or a fractional shift)."""
    index = np.linalg.solve(np.asarray(base, dtype=float), np.asarray(affine, dtype=float))
    offset = np.round(index[:3, 3])
    if not np.allclose(index[:3, :3], np.eye(3), atol=GRID_TOLERANCE_VOXELS) or \
            not np.allclose(index[:3, 3], offset, atol=GRID_TOLERANCE_VOXELS):
        return None
    return int(offset[0]), int(offset[1]), int(offset[2])


def split_affine(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Split a voxel-to-RAS affine into a Slicer volume geometry (orthogonal axes) and a residual linear transform.

    Slicer volumes have orthogonal axes; a sheared affine (raw tilted CT from dcm2niix) is stored as the nearest
    orthogonal geometry plus ``residual``, with ``residual @ geometry == affine``. ``residual`` is None when the
    affine is already orthogonal.
    """
    affine = np.asarray(affine, dtype=float)
    columns = affine[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    directions = columns / spacing
    gram = directions.T @ directions
    if np.max(np.abs(gram - np.eye(3))) <= ORTHOGONALITY_TOLERANCE:
        return affine, None
    q, r = np.linalg.qr(columns)
    signs = np.sign(np.diag(r))
    q = q * signs
    geometry = np.eye(4)
    geometry[:3, :3] = q * np.abs(np.diag(r))
    geometry[:3, 3] = affine[:3, 3]
    residual = affine @ np.linalg.inv(geometry)
    return geometry, residual


def image_to_world(image):
    """A vtkOrientedImageData's image-to-world (voxel-to-RAS) matrix, as a vtkMatrix4x4."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    return matrix


