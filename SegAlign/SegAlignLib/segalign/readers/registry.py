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

from ..dicom import Series
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
from . import dicom_seg, metaimage, nifti, nrrd, rtstruct
from .base import Reader, Reading
from .combine import Combination
from .mask_folder import load_mask_folder

#: The file readers, in the order they are asked: the first whose ``matches`` is true reads the file (an RT
#: Structure Set is DICOM too: its reader is asked before the DICOM SEG reader's, which takes any other DICOM file).
READERS: tuple[Reader, ...] = (nifti, nrrd, rtstruct, dicom_seg, metaimage)

#: What a SEGMENTATION may be, as the messages say it.
ACCEPTED = (
    "a NIfTI label map (.nii, .nii.gz), a Slicer segmentation (.seg.nrrd), a NRRD label map (.nrrd), an ITK "
    "label map (.mha, .mhd), a DICOM SEG or RT Structure Set (.dcm), or a folder of binary NIfTI masks"
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
    *,
    reference: Series | Sequence[Series] | None = None,
    skip_unplaced_contours: bool = False,
) -> Segmentation:
    """Several segmentation files (or folders of masks) given at once, as one segmentation whose segments may
    overlap (see :mod:`.combine`); one path is :func:`load_segmentation`. ``label_table`` names the first file's
    labels; the others keep their own names (prefixed where they would clash). ``reference`` and
    ``skip_unplaced_contours`` are :func:`load_segmentation`'s, for every file."""
    if not paths:
        raise SegAlignError("no segmentation given")
    more = {"reference": reference, "skip_unplaced_contours": skip_unplaced_contours}
    if len(paths) == 1:
        return load_segmentation(paths[0], label_table, overlap, allow_many_labels, **more)
    combination = Combination(overlap)
    for index, path in enumerate(paths):  # one file's full volume at a time: each is cropped as it is added
        combination.add(load_segmentation(path, label_table if index == 0 else None, overlap, allow_many_labels,
                                          **more))
    return combination.result()


def load_segmentation(
    path: str | os.PathLike[str],
    label_table: str | os.PathLike[str] | Mapping[int, Label] | None = None,
    overlap: Overlap = "keep",
    allow_many_labels: bool = False,
    *,
    reference: Series | Sequence[Series] | None = None,
    skip_unplaced_contours: bool = False,
) -> Segmentation:
    """Load a segmentation: a multilabel NIfTI, NRRD, Slicer ``.seg.nrrd``, ITK ``.mha``/``.mhd``, DICOM SEG or
    RT Structure Set file, or a folder of binary NIfTI masks (the format is chosen by content, see :func:`sniff`).

    An RT Structure Set has no pixel grid of its own: ``reference`` is the DICOM series it is placed on, or several
    series (a DICOM folder's) among which the one it references is taken (see :mod:`.rtstruct`); its contours that
    lie on no frame of that series are refused, unless ``skip_unplaced_contours`` leaves them out with a warning.
    Other formats place themselves and ignore both.

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
    reader = sniff(path)
    if reader.NEEDS_SERIES and reference is not None:
        reading = reader.read_on_series(path, overlap, reference, skip_unplaced_contours)
    else:
        reading = reader.read(path, overlap)  # a reader that needs a series and has none says so
    return complete(reading, path, user, allow_many_labels)


def structure_set_series(path: str | os.PathLike[str], candidates: Sequence[Series]) -> Series | None:
    """The series of ``candidates`` the segmentation at ``path`` was drawn on, when it is an RT Structure Set that
    references one of them (by the images its contours name, or its referenced series); None for anything else:
    what chooses the series of a DICOM folder when none is named."""
    path = Path(path)
    try:
        if not path.is_file() or sniff(path) is not rtstruct:
            return None
    except (SegAlignError, OSError):
        return None
    return rtstruct.referenced_series(path, candidates)


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
