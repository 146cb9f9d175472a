"""Patient-space geometry of DICOM frames and NIfTI voxels.

Conventions, stated once and used everywhere in SegAlign:

* DICOM patient coordinates are **LPS**: +x towards the patient's Left, +y Posterior, +z Superior.
* NIfTI world coordinates (the affine nibabel returns) are **RAS**: +x Right, +y Anterior, +z Superior.
  The two differ by ``diag(-1, -1, 1)``.
* A frame's pixel ``(r, c)`` is row ``r``, column ``c`` of ``pixel_array`` as pydicom returns it.
  ``ImageOrientationPatient[0:3]`` is the direction of increasing column index (along a row),
  ``ImageOrientationPatient[3:6]`` the direction of increasing row index (down a column).
  ``PixelSpacing`` is ``[spacing between rows, spacing between columns]``, so the centre of pixel ``(r, c)`` is::

      IPP + c * PixelSpacing[1] * IOP[0:3] + r * PixelSpacing[0] * IOP[3:6]

* A NIfTI voxel index is ``(i, j, k)`` into the array nibabel returns; ``affine @ (i, j, k, 1)`` is its centre in
  RAS millimetres.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

#: Multiply an LPS point by this matrix to get RAS, and vice versa.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])

#: Letters for the positive direction of each LPS axis and of its negative.
_POSITIVE_LPS = ("L", "P", "S")
_NEGATIVE_LPS = ("R", "A", "I")
_PLANE_FOR_NORMAL_AXIS = ("SAGITTAL", "CORONAL", "AXIAL")

#: A plane whose normal is within this angle of a patient axis is called by that axis' plane name.
ORTHOGONAL_TOLERANCE_DEGREES = 0.5


def slice_normal(orientation: np.ndarray) -> np.ndarray:
    """Unit normal ``cross(IOP[0:3], IOP[3:6])`` of a frame with ImageOrientationPatient ``orientation``."""
    orientation = np.asarray(orientation, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:6])
    return normal / np.linalg.norm(normal)


def pixel_to_lps(
    position: np.ndarray, orientation: np.ndarray, spacing: tuple[float, float], row: float, column: float
) -> np.ndarray:
    """LPS centre (mm) of pixel ``(row, column)`` of a frame, from its IPP, IOP and PixelSpacing."""
    position = np.asarray(position, dtype=float)
    orientation = np.asarray(orientation, dtype=float)
    return position + column * spacing[1] * orientation[:3] + row * spacing[0] * orientation[3:6]


class IndexMapping(NamedTuple):
    """Continuous voxel index of pixel ``(r, c)``: ``origin + r * per_row + c * per_column``."""

    origin: np.ndarray
    per_row: np.ndarray
    per_column: np.ndarray


def frame_index_mapping(
    ras_to_index: np.ndarray, position: np.ndarray, orientation: np.ndarray, spacing: tuple[float, float]
) -> IndexMapping:
    """Map a frame's pixel grid into the continuous voxel indices of a volume.

    ``ras_to_index`` is the inverse of the volume's voxel-to-RAS affine. The mapping is affine in ``(r, c)``, so
    it is returned as the index of pixel ``(0, 0)`` and the increments for one row and one column.
    """
    lps_to_index = ras_to_index[:3, :3] @ LPS_TO_RAS
    orientation = np.asarray(orientation, dtype=float)
    origin = lps_to_index @ np.asarray(position, dtype=float) + ras_to_index[:3, 3]
    per_row = lps_to_index @ (orientation[3:6] * spacing[0])
    per_column = lps_to_index @ (orientation[:3] * spacing[1])
    return IndexMapping(origin, per_row, per_column)


def direction_letters(vector: np.ndarray, threshold: float = 1e-3) -> str:
    """Patient-direction letters of an LPS vector, dominant first, e.g. ``"S"`` or ``"SPL"`` for an oblique one.

    Components smaller than ``threshold`` times the largest are left out (the preview's edge letters use 0.1, so
    that a frame tilted by less than about 6 degrees is named by one axis, as OHIF and Slicer's slice views do).
    """
    vector = np.asarray(vector, dtype=float)
    largest = np.max(np.abs(vector))
    letters = []
    for axis in np.argsort(-np.abs(vector), kind="stable"):
        if largest > 0 and abs(vector[axis]) >= threshold * largest:
            letters.append(_POSITIVE_LPS[axis] if vector[axis] > 0 else _NEGATIVE_LPS[axis])
    return "".join(letters)


class PlaneOrientation(NamedTuple):
    """How a frame's plane sits in the patient."""

    name: str  #: AXIAL, SAGITTAL, CORONAL or OBLIQUE
    nearest: str  #: the plane name of the nearest patient axis (same as ``name`` unless OBLIQUE)
    degrees_off: float  #: angle between the slice normal and that axis

    def describe(self) -> str:
        """E.g. ``AXIAL`` or ``OBLIQUE (nearest AXIAL, 18.5 deg off)``."""
        if self.name == "OBLIQUE":
            return f"OBLIQUE (nearest {self.nearest}, {self.degrees_off:.1f} deg off)"
        return self.name


def plane_orientation(orientation: np.ndarray) -> PlaneOrientation:
    """Classify ImageOrientationPatient as AXIAL, SAGITTAL, CORONAL or OBLIQUE by its slice normal."""
    normal = slice_normal(orientation)
    axis = int(np.argmax(np.abs(normal)))
    degrees = math.degrees(math.acos(min(1.0, abs(float(normal[axis])))))
    nearest = _PLANE_FOR_NORMAL_AXIS[axis]
    name = nearest if degrees <= ORTHOGONAL_TOLERANCE_DEGREES else "OBLIQUE"
    return PlaneOrientation(name, nearest, degrees)


def same_orientation(a: np.ndarray, b: np.ndarray, tolerance: float = 1e-4) -> bool:
    """True when two ImageOrientationPatient values agree to ``tolerance`` in every cosine."""
    return bool(np.max(np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float))) <= tolerance)


def tilt_degrees(stacking: np.ndarray, normal: np.ndarray) -> float:
    """Angle between the direction slices are stacked along and the slice normal (gantry tilt), in degrees."""
    stacking = np.asarray(stacking, dtype=float)
    length = np.linalg.norm(stacking)
    if length == 0:
        return 0.0
    cosine = abs(float(np.dot(stacking / length, normal)))
    return math.degrees(math.acos(min(1.0, cosine)))
