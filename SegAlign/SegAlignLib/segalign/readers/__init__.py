"""Readers: every segmentation SegAlign takes, as a :class:`~segalign.segmentation.Segmentation`.

:func:`load_segmentation` chooses the reader as nibabel does, by looking at the file (its first bytes), not only
at its name: a folder is a folder of masks (:mod:`.mask_folder`); a file that holds a NIfTI header (plain or
gzip-compressed) a NIfTI label map (:mod:`.nifti`); ``NRRD000`` a NRRD label map, or a Slicer segmentation when its
header has ``Segment<i>_*`` keys (:mod:`.nrrd`); a MetaImage text header an ITK ``.mha``/``.mhd`` label map
(:mod:`.metaimage`); ``DICM`` a DICOM SEG (:mod:`.dicom_seg`). Each reader gives the same thing: labels, affine
(RAS), label table, and the warnings the user should see.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Mapping

from ..errors import SegAlignError, describe, short_path
from ..segmentation import Label, complete_table, embedded_label_table, guess_totalsegmentator, read_label_file
from ..segmentation import Overlap, Segmentation, count_labels, looks_like_image
from .dicom_seg import load_dicom_seg
from .mask_folder import load_mask_folder
from .metaimage import load_metaimage, looks_like_metaimage
from .nrrd import NRRD_MAGIC, is_slicer_segmentation, load_nrrd, load_slicer_segmentation
from .nrrd import read_header as read_nrrd_header
from .nifti import (
    GZIP_MAGIC,
    NIFTI_SUFFIXES,
    _integer_labels,
    _load_nifti,
    _volume_data,
    looks_like_nifti,
    resolve_affine,
)

__all__ = ["load_segmentation", "sniff", "ACCEPTED", "SEGMENTATION_SUFFIXES"]

#: What a SEGMENTATION may be, as the messages say it.
ACCEPTED = (
    "a NIfTI label map (.nii, .nii.gz), a Slicer segmentation (.seg.nrrd), a NRRD label map (.nrrd), an ITK "
    "label map (.mha, .mhd), a DICOM SEG (.dcm), or a folder of binary NIfTI masks"
)
#: The file names segmentations have (for messages and for telling them from DICOM folders).
SEGMENTATION_SUFFIXES = (".nii", ".nii.gz", ".seg.nrrd", ".nrrd", ".mha", ".mhd", ".dcm")


def sniff(path: Path) -> str:
    """The reader for the file ``path`` (``"nifti"``, ``"nrrd"``, ``"metaimage"``, ``"dicom"``), or a one-line
    message saying why there is none.

    A file named ``.nii``/``.nii.gz`` goes to the NIfTI reader whatever it holds, so that its own checks say
    precisely what is wrong with it; any other file is recognised by its first bytes (decompressed if gzip)."""
    if path.name.lower().endswith(NIFTI_SUFFIXES):
        return "nifti"
    try:
        with path.open("rb") as stream:
            head = stream.read(352)
        if head.startswith(GZIP_MAGIC):
            with gzip.open(path, "rb") as stream:
                head = stream.read(352)
    except (OSError, EOFError, zlib.error) as error:
        return f"segmentation {short_path(path)} cannot be read: {describe(error)}"
    if looks_like_nifti(head):
        return (
            f"segmentation {short_path(path)} holds a NIfTI image, but its name does not end in .nii or .nii.gz "
            "(nibabel reads it by its name): rename it"
        )
    if head.startswith(NRRD_MAGIC):
        return "nrrd"
    if head[128:132] == b"DICM":
        return "dicom"
    if looks_like_metaimage(head):
        return "metaimage"
    return f"segmentation {short_path(path)} is not a format SegAlign reads; give {ACCEPTED}"


def load_segmentation(
    path: str | os.PathLike[str],
    label_table: str | os.PathLike[str] | Mapping[int, Label] | None = None,
    overlap: Overlap = "error",
    allow_many_labels: bool = False,
) -> Segmentation:
    """Load a segmentation: a multilabel NIfTI, NRRD, Slicer ``.seg.nrrd``, ITK ``.mha``/``.mhd`` or DICOM SEG
    file, or a folder of binary NIfTI masks (the format is chosen by content, see :func:`sniff`).

    ``label_table`` (a path or a ready mapping) names labels; it wins over a table embedded in the NIfTI.
    ``overlap`` decides what happens where masks of a folder (or segments of a multi-layer ``.seg.nrrd`` or of a
    DICOM SEG) overlap: ``"error"`` refuses, naming them; ``"later-wins"`` gives the voxel to the mask that comes
    later in file-name order (the later segment of the file, the higher segment number).

    A volume that looks like an intensity image rather than a label map (see :func:`looks_like_image`) is refused
    unless ``allow_many_labels`` is true.
    """
    path = Path(path)
    user = read_label_file(label_table) if isinstance(label_table, (str, os.PathLike)) else dict(label_table or {})
    try:
        is_dir, is_file, exists = path.is_dir(), path.is_file(), os.path.lexists(path)
    except OSError as error:  # a name too long for the file system, a permission problem on a parent...
        raise SegAlignError(f"segmentation {short_path(path)} cannot be opened: {describe(error)}") from None
    if is_dir:
        return load_mask_folder(path, user, overlap)
    if not is_file:
        if exists:
            raise SegAlignError(f"segmentation {short_path(path)} is not a regular file or a folder of masks")
        raise SegAlignError(f"segmentation not found: {short_path(path)}")
    reader = sniff(path)
    if reader not in ("nifti", "nrrd", "metaimage", "dicom"):
        raise SegAlignError(reader)
    frame_of_reference = None
    embedded: Mapping[int, Label] = {}
    if reader == "nifti":
        image = _load_nifti(path)
        labels = _integer_labels(_volume_data(image, path), path)
        affine, source, warnings = resolve_affine(image, path)
        embedded = embedded_label_table(image.header.extensions)
    elif reader == "nrrd":
        header = read_nrrd_header(path)
        if is_slicer_segmentation(header):
            labels, affine, embedded, warnings = load_slicer_segmentation(path, overlap)
            source = "seg.nrrd"
        else:
            labels, affine, warnings = load_nrrd(path)
            source = "nrrd"
    elif reader == "metaimage":
        labels, affine, warnings = load_metaimage(path)
        source = "metaimage"
    else:
        labels, affine, embedded, warnings, frame_of_reference = load_dicom_seg(path, overlap)
        source = "dicom-seg"
    counts = count_labels(labels)
    reason = looks_like_image(counts, labels)
    if reason and not allow_many_labels:
        raise SegAlignError(
            f"{path} looks like an intensity image, not a label map ({reason}); pass the segmentation, or "
            "allow_many_labels=True if this really is one",
            cli_message=f"{path} looks like an intensity image, not a label map ({reason}); give the segmentation, "
            "or --allow-many-labels if this really is one",
        )
    guessed = {} if user or embedded else guess_totalsegmentator(counts)
    if guessed:
        warnings.append(
            f"{path.name} has no label table; its {len(counts)} label values are all TotalSegmentator v2 'total' "
            "classes, so they are named after them (pass --labels to name them otherwise)"
        )
    table = complete_table(counts, user, embedded, guessed)
    return Segmentation(labels, affine, table, path, source, counts, warnings,
                        frame_of_reference_uid=frame_of_reference)


