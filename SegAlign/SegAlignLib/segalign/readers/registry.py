"""The registry of readers: which reader takes a file (:func:`sniff`), and :func:`load_segmentation`.

A folder is a folder of masks (:mod:`.mask_folder`). A file is given to the first reader of :data:`READERS` whose
``matches`` says it is its kind, from its name (NIfTI) or its first bytes, decompressed if gzip (NRRD, DICOM,
MetaImage), as nibabel's ``loadsave`` chooses an image class. The reader returns one
:class:`~segalign.readers.base.Reading`, which :func:`load_segmentation` completes into a
:class:`~segalign.segmentation.Segmentation`: the user's label table, the voxel counts, the refusal of what looks
like an intensity image, TotalSegmentator's names where nothing names the labels.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Mapping, Sequence

from ..errors import SegAlignError, describe, short_path
from ..segmentation import (
    Label,
    Overlap,
    Segmentation,
    complete_table,
    count_labels,
    guess_totalsegmentator,
    looks_like_image,
    read_label_file,
)
from . import dicom_seg, metaimage, nifti, nrrd
from .base import Reader, Reading
from .combine import Combination
from .mask_folder import load_mask_folder

#: The file readers, in the order they are asked: the first whose ``matches`` is true reads the file.
READERS: tuple[Reader, ...] = (nifti, nrrd, dicom_seg, metaimage)

#: What a SEGMENTATION may be, as the messages say it.
ACCEPTED = (
    "a NIfTI label map (.nii, .nii.gz), a Slicer segmentation (.seg.nrrd), a NRRD label map (.nrrd), an ITK "
    "label map (.mha, .mhd), a DICOM SEG (.dcm), or a folder of binary NIfTI masks"
)
#: The file names segmentations have (for messages and for telling them from DICOM folders).
SEGMENTATION_SUFFIXES = (".nii", ".nii.gz", ".seg.nrrd", ".nrrd", ".mha", ".mhd", ".dcm")
#: How many first bytes of a file the readers look at: a NIfTI-1 header and its magic (at offset 344).
HEAD_BYTES = 352
GZIP_MAGIC = b"\x1f\x8b"


def read_head(path: Path) -> bytes:
    """The first :data:`HEAD_BYTES` bytes of the file ``path``, decompressed if it is gzip-compressed (OSError,
    EOFError and zlib.error where it cannot be read)."""
    with path.open("rb") as stream:
        head = stream.read(HEAD_BYTES)
    if head.startswith(GZIP_MAGIC):
        with gzip.open(path, "rb") as stream:
            head = stream.read(HEAD_BYTES)
    return head


def sniff(path: Path) -> Reader:
    """The reader for the file ``path``; a :class:`SegAlignError` saying why there is none.

    A file named ``.nii``/``.nii.gz`` goes to the NIfTI reader whatever it holds, so that its own checks say
    precisely what is wrong with it; any other file is recognised by its first bytes (decompressed if gzip)."""
    try:
        head, unreadable = read_head(path), None
    except (OSError, EOFError, zlib.error) as error:
        head, unreadable = b"", error  # a reader that knows the file by its name still takes it
    for reader in READERS:
        if reader.matches(path, head):
            return reader
    if unreadable is not None:
        raise SegAlignError(f"segmentation {short_path(path)} cannot be read: {describe(unreadable)}")
    raise SegAlignError(f"segmentation {short_path(path)} is not a format SegAlign reads; give {ACCEPTED}")


def load_segmentations(
    paths: Sequence[str | os.PathLike[str]],
    label_table: str | os.PathLike[str] | Mapping[int, Label] | None = None,
    overlap: Overlap = "keep",
    allow_many_labels: bool = False,
) -> Segmentation:
    """Several segmentation files (or folders of masks) given at once, as one segmentation whose segments may
    overlap (see :mod:`.combine`); one path is :func:`load_segmentation`. ``label_table`` names the first file's
    labels; the others keep their own names (prefixed where they would clash)."""
    if not paths:
        raise SegAlignError("no segmentation given")
    if len(paths) == 1:
        return load_segmentation(paths[0], label_table, overlap, allow_many_labels)
    combination = Combination(overlap)
    for index, path in enumerate(paths):  # one file's full volume at a time: each is cropped as it is added
        combination.add(load_segmentation(path, label_table if index == 0 else None, overlap, allow_many_labels))
    return combination.result()


def load_segmentation(
    path: str | os.PathLike[str],
    label_table: str | os.PathLike[str] | Mapping[int, Label] | None = None,
    overlap: Overlap = "keep",
    allow_many_labels: bool = False,
) -> Segmentation:
    """Load a segmentation: a multilabel NIfTI, NRRD, Slicer ``.seg.nrrd``, ITK ``.mha``/``.mhd`` or DICOM SEG
    file, or a folder of binary NIfTI masks (the format is chosen by content, see :func:`sniff`).

    ``label_table`` (a path or a ready mapping) names labels; it wins over a table embedded in the NIfTI.
    ``overlap`` decides what happens where masks of a folder (or segments of a multi-layer ``.seg.nrrd`` or of a
    DICOM SEG) overlap: ``"keep"`` keeps every segment whole, in as few layers as the overlaps need (see
    :mod:`segalign.segmentation.layers`); ``"later-wins"`` flattens them to one label map, giving the voxel to the
    mask that comes later in file-name order (the later segment of the file, the higher segment number);
    ``"error"`` refuses, naming two of them.

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
    return complete(sniff(path).read(path, overlap), path, user, allow_many_labels)


def complete(
    reading: Reading,
    path: Path,
    user: Mapping[int, Label],
    allow_many_labels: bool,
    description: str | None = None,
) -> Segmentation:
    """A reader's :class:`~.base.Reading` of ``path`` as a :class:`Segmentation`: the voxels counted, a volume
    that looks like an intensity image refused (unless ``allow_many_labels``), and the label table completed from
    the ``user``'s, the file's, or TotalSegmentator's names. ``description`` names a segmentation that was never a
    file (then ``path`` only names it in messages, and the segmentation has no source)."""
    counts = count_labels(reading.labels)
    for layer in reading.more_layers:
        counts.update(count_labels(layer.labels))
    reason = looks_like_image(counts, reading.labels)
    if reason and not allow_many_labels:
        raise SegAlignError(
            f"{path} looks like an intensity image, not a label map ({reason}); pass the segmentation, or "
            "allow_many_labels=True if this really is one",
            cli_message=f"{path} looks like an intensity image, not a label map ({reason}); give the segmentation, "
            "or --allow-many-labels if this really is one",
        )
    warnings = reading.warnings
    guessed = {} if user or reading.label_table else guess_totalsegmentator(counts)
    if guessed:
        warnings.append(
            f"{path.name} has no label table; its {len(counts)} label values are all TotalSegmentator v2 'total' "
            "classes, so they are named after them (pass --labels to name them otherwise)"
        )
    table = complete_table(counts, user, reading.label_table, guessed)
    return Segmentation(reading.labels, reading.affine, table, None if description else path, reading.source, counts,
                        warnings, description=description or "segmentation",
                        frame_of_reference_uid=reading.frame_of_reference_uid, more_layers=reading.more_layers)
