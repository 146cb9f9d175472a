"""Readers: every segmentation SegAlign takes, as a :class:`~segalign.segmentation.Segmentation`.

:func:`load_segmentation` chooses the reader as nibabel does, by looking at the file (its first bytes), not only
at its name (:mod:`.registry`): a folder is a folder of masks (:mod:`.mask_folder`); a file named ``.nii`` or
``.nii.gz`` a NIfTI label map (:mod:`.nifti`); ``NRRD000`` a NRRD label map, or a Slicer segmentation when its
header has ``Segment<i>_*`` keys (:mod:`.nrrd`); ``DICM`` an RT Structure Set (:mod:`.rtstruct`, placed on the
series it was drawn on, which the registry is given) or a DICOM SEG (:mod:`.dicom_seg`); a MetaImage text header
an ITK ``.mha``/``.mhd`` label map (:mod:`.metaimage`). Each file reader is a module that provides what the
:class:`~.base.Reader` protocol lists and returns one :class:`~.base.Reading` (labels, affine (RAS), the label
table the file holds, and the warnings the user should see), which the registry completes.
"""

from .base import Reader, Reading
from .combine import combine
from .registry import (
    ACCEPTED,
    READERS,
    SEGMENTATION_SUFFIXES,
    load_segmentation,
    load_segmentations,
    sniff,
    structure_set_series,
)

__all__ = ["load_segmentation", "load_segmentations", "combine", "sniff", "structure_set_series", "ACCEPTED",
           "SEGMENTATION_SUFFIXES", "READERS", "Reader", "Reading"]
