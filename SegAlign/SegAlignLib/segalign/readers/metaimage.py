"""The MetaImage reader: ITK label maps (``.mha``, ``.mhd`` with its data file), read with SimpleITK.

SimpleITK is ITK's own reader (extra ``segalign[itk]``): the MetaImage header's Offset, TransformMatrix and
ElementSpacing give the LPS placement, which is converted to RAS here; the array is transposed from SimpleITK's
``[z, y, x]`` to SegAlign's ``labels[i, j, k]`` (i along x).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import SegAlignError, describe, short_path
from ..segmentation import Overlap
from .base import Reading, integer_labels

NAME = "metaimage"
NEEDS_SERIES = False  #: the file places itself
#: The first bytes of a MetaImage header hold one of these keys.
METAIMAGE_KEYS = (b"ObjectType", b"NDims", b"DimSize", b"ElementType", b"ElementDataFile")


def matches(path: Path, head: bytes) -> bool:
    """Whether the first bytes of a file are a MetaImage text header (whatever the file's name)."""
    first = head.lstrip()[:40]
    return any(first.startswith(key) for key in METAIMAGE_KEYS)


def read(path: Path, overlap: Overlap) -> Reading:
    """A MetaImage label map: labels (uint8/uint16, ``labels[i, j, k]``) and the RAS affine. (A label map has no
    overlapping segments: ``overlap`` plays no part.)"""
    try:
        import SimpleITK as sitk
    except ImportError:
        raise SegAlignError(
            f"reading {path.suffix} files needs SimpleITK: pip install 'segalign[itk]'"
        ) from None
    try:
        image = sitk.ReadImage(str(path))
    except Exception as error:  # RuntimeError with ITK's multi-line message
        message = " ".join(str(error).split())
        reason = message.split("Description:")[-1].strip() if "Description:" in message else describe(error)
        raise SegAlignError(f"segmentation {short_path(path)} cannot be read: {reason[:200]}") from None
    return reading_of_image(image, path)


def reading_of_image(image: object, path: Path) -> Reading:
    """A SimpleITK image (read from ``path``, or made in memory and named so) as a label map Reading: its array
    taken from ITK's ``[z, y, x]`` to ``labels[i, j, k]``, and its LPS geometry as a RAS affine."""
    import SimpleITK as sitk

    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise SegAlignError(
            f"{short_path(path)}: a {image.GetDimension()}-dimensional image with "
            f"{image.GetNumberOfComponentsPerPixel()} components per pixel; a label map is 3D with one"
        )
    data = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # [z, y, x] -> [x, y, z]; a copy, not a view
    labels = integer_labels(np.asfortranarray(data), path)
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return Reading(labels, np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine, "metaimage")
