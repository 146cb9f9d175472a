"""``segalign check``: compare an export the user already made with the truth, and name what is wrong with it.

::

    from segalign.check import check_export

    result = check_export("ct_dicom/", "ct_seg.nii.gz", "my_pngs/")
    result.exact          # True when every frame's image is SegAlign's labels, pixel for pixel
    result.findings       # short sentences: the fault, and the code that undoes it
    result.as_dict()      # what `segalign check --json` prints
    result.write_report("check_report/")   # report.json, side-by-side pictures, index.html

The truth is :func:`segalign.align` of the same DICOM series and segmentation in acquisition order (what
``segalign export`` writes). The package: :mod:`.exports` (reading the user's export: image folders, folders per
label, arrays; which frame each image is meant for), :mod:`.diagnosis` (the search for the faults users make),
:mod:`.report` (:class:`CheckResult`, the text, the JSON and the report folder).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from ..errors import SegAlignError
from ..segmentation import Label
from .diagnosis import TRANSFORMS, Diagnosis, diagnose
from ..dicom.model import plural
from .exports import UserImages, read_export
from .report import CheckResult
from .sets import SegmentSets

__all__ = ["CheckResult", "TRANSFORMS", "check_export"]


def check_export(
    dicom: Any,
    segmentation: Any,
    export: str | os.PathLike[str],
    *,
    series: str | int | None = None,
    label_table: str | os.PathLike[str] | Mapping[int, Label] | None = None,
) -> CheckResult:
    """Compare ``export`` (a folder of images, one folder of masks per label, or a 3D array file; see
    :mod:`segalign.check.exports`) with the labels of ``segmentation`` on the frames of the DICOM series, in
    acquisition order, and explain every difference (:class:`CheckResult`).

    ``dicom``, ``segmentation``, ``series`` and ``label_table`` are :func:`segalign.align`'s. Raises
    :class:`SegAlignError` (one line) when the two cannot be compared at all.

    When the segments overlap, each pixel is compared as the set of segments on it (:mod:`.sets`): the export
    holds them where it can (SegAlign's ``labels/`` and ``layers/<n>/``, ``masks/``, a BINARY SEG, an RTSTRUCT),
    and ``labels`` gives Dice per segment.
    """
    from ..alignment import align

    alignment = align(dicom, segmentation, series=series, order="instance", label_table=label_table)
    frames = alignment.frames
    shapes = {(frame.rows, frame.columns) for frame in frames}
    sets = SegmentSets() if alignment.segmentation.overlapping else None
    if sets is None:
        truth = list(alignment.labels) if len(shapes) == 1 else [frame.labels for frame in alignment]
    else:  # each pixel as the set of segments on it: every segment whole
        layers = alignment.layers if len(shapes) == 1 else None
        truth = [sets.of_layers([layer[index] for layer in layers] if layers is not None else frame.layers)
                 for index, frame in enumerate(alignment)]
    segments = alignment.segments
    readings = read_export(Path(export), frames, segments, sets)
    usable = [reading for reading in readings if _fits_some_frame(reading, shapes)]
    if not usable:
        sizes = sorted({f"{i.shape[0]}x{i.shape[1]}" for reading in readings for i in reading.images})
        raise SegAlignError(f"no image of the export has the shape of a frame or of a transposed frame (the images: "
                            f"{', '.join(sizes[:4])}; the frames: {', '.join(f'{r}x{c}' for r, c in sorted(shapes))})")
    root = Path(dicom) if isinstance(dicom, (str, os.PathLike)) and Path(dicom).is_dir() else None
    best: tuple[tuple, Diagnosis, UserImages] | None = None
    for rank, reading in enumerate(usable):
        diagnosis = diagnose(truth, frames, reading, segments, root, sets)
        if diagnosis.exact:
            best = ((0,), diagnosis, reading)
            break
        moved = sum(1 for v in diagnosis.verdicts if v.frame != v.tied)
        key = (1, diagnosis.residual_mismatched_pixels, moved, diagnosis.mismatched_pixels, rank)
        if best is None or key < best[0]:
            best = (key, diagnosis, reading)
    assert best is not None
    _, diagnosis, reading = best
    overlap = []
    if sets is not None:
        shared = [sets.overlapping_pixels(labels) for labels in truth]
        overlap = [f"the segments overlap (SegAlign's labels have {sum(shared)} pixels in two segments or more, on "
                   f"{plural(sum(1 for n in shared if n), 'frame')}): every pixel is compared as the set of segments "
                   "on it, every segment whole"]
    diagnosis.findings[:0] = overlap + reading.notes
    dicom_path = Path(dicom) if isinstance(dicom, (str, os.PathLike)) else None
    return CheckResult(diagnosis, truth, reading, frames, segments, dicom_path, Path(export), sets)


def _fits_some_frame(reading: UserImages, shapes: set[tuple[int, int]]) -> bool:
    allowed = shapes | {(c, r) for r, c in shapes}
    return any(image.shape in allowed for image in reading.images)
