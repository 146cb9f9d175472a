"""Segmentations that are already in memory: a nibabel image, a SimpleITK image, or a labels array with its affine.

A notebook usually holds the segmentation it wants aligned (a model's output, an image read with nibabel or
SimpleITK) rather than a file. :func:`segmentation_in_memory` takes it as the file readers would take the same
volume saved to disk, with the same checks (a label map of integers, an affine that places it, not an intensity
image) and the same label tables, so that ``align(dicom, nib.load(path))`` and ``align(dicom, path)`` agree:

* a nibabel NIfTI image: its labels and the affine nibabel resolves (sform, else qform), as :mod:`.nifti` reads a
  file; any other nibabel spatial image (MGH...), its ``affine``;
* a SimpleITK image: its array and its LPS geometry taken to RAS, as :mod:`.metaimage` reads a file;
* ``(array, affine)``: ``array[i, j, k]`` is the label of the voxel whose centre is ``affine @ (i, j, k, 1)`` in
  **RAS** millimetres (nibabel's convention, the one ``nib.Nifti1Image(array, affine)`` takes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import SegAlignError
from ..segmentation import Label, Overlap, Segmentation, check_affine, embedded_label_table, read_label_file
from .base import Reading, integer_labels

#: What a segmentation argument may be, as messages say it.
IN_MEMORY = "a nibabel image, a SimpleITK image, or an (array, affine) pair with a RAS affine"


def is_in_memory(value: object) -> bool:
    """Whether ``value`` is a segmentation this module takes (not a path, not a loaded :class:`Segmentation`)."""
    return _kind(value) is not None


def segmentation_in_memory(
    value: Any,
    label_table: str | os.PathLike[str] | Mapping[int, Label] | None = None,
    overlap: Overlap = "keep",
    allow_many_labels: bool = False,
) -> Segmentation:
    """``value`` (see the module's description) as a :class:`Segmentation` without a source file; ``label_table``
    names its labels as :func:`~segalign.load_segmentation`'s does. A label map has no overlapping segments, so
    ``overlap`` plays no part; it is taken for symmetry with the file readers."""
    from .registry import complete

    kind = _kind(value)
    if kind is None:
        raise SegAlignError(f"a segmentation must be a path, {IN_MEMORY}, or a Segmentation; got {type(value).__name__}")
    name = {"nibabel": "nibabel image", "sitk": "SimpleITK image", "array": "array"}[kind]
    path = Path(name)  # names it in messages only
    if kind == "nibabel":
        reading = _nibabel_reading(value, path)
    elif kind == "sitk":
        from .metaimage import reading_of_image

        reading = reading_of_image(value, path)
        reading.source = "SimpleITK"
    else:
        reading = _array_reading(value, path)
    user = read_label_file(label_table) if isinstance(label_table, (str, os.PathLike)) else dict(label_table or {})
    return complete(reading, path, user, allow_many_labels, description=name)


def _kind(value: object) -> str | None:
    module = type(value).__module__ or ""
    if module.startswith("nibabel") and hasattr(value, "affine") and hasattr(value, "dataobj"):
        return "nibabel"
    if module.startswith("SimpleITK") and hasattr(value, "GetDirection"):
        return "sitk"
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], np.ndarray):
        return "array"
    return None


def _nibabel_reading(image: Any, path: Path) -> Reading:
    import nibabel as nib

    from .nifti import resolve_affine, volume_data

    labels = integer_labels(volume_data(image, path), path)
    if isinstance(image, nib.Nifti1Image):  # Nifti2Image is a subclass
        affine, source, warnings = resolve_affine(image, path)
        table = embedded_label_table(image.header.extensions)
        return Reading(labels, affine, f"nibabel {source}", table, warnings)
    if image.affine is None:
        raise SegAlignError(f"the {type(image).__name__} has no affine, so its position in the patient is unknown")
    return Reading(labels, check_affine(image.affine, type(image).__name__), "nibabel")


def _array_reading(value: tuple[np.ndarray, Any], path: Path) -> Reading:
    array, affine = value
    if array.ndim != 3:
        raise SegAlignError(f"the labels array must be 3D (i, j, k), got shape {array.shape}")
    affine = np.asarray(affine, dtype=float) if affine is not None else None
    if affine is None or affine.shape != (4, 4):
        raise SegAlignError(f"the affine must be a 4 x 4 matrix (voxel index to RAS mm), got "
                            f"{'None' if affine is None else affine.shape}")
    labels = integer_labels(array, path)
    if labels is array:  # never keep (and so never let a later change reach) the caller's own array
        labels = labels.copy(order="K")
    return Reading(labels, check_affine(affine, "the affine"), "array (RAS)")
