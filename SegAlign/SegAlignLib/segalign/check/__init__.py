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
from .exports import UserImages, read_export
from .report import CheckResult

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
    """
    from ..alignment import align

    alignment = align(dicom, segmentation, series=series, order="instance", label_table=label_table)
    if alignment.segmentation.overlapping:
        raise SegAlignError(f"segments of {alignment.segmentation.name} overlap, so one label per pixel cannot hold "
                            "them: a check compares label images")
    frames = alignment.frames
    shapes = {(frame.rows, frame.columns) for frame in frames}
    truth = list(alignment.labels) if len(shapes) == 1 else [frame.labels for frame in alignment]
    segments = alignment.segments
    readings = read_export(Path(export), frames, segments)
    usable = [reading for reading in readings if _fits_some_frame(reading, shapes)]
    if not usable:
        sizes = sorted({f"{i.shape[0]}x{i.shape[1]}" for reading in readings for i in reading.images})
        raise SegAlignError(f"no image of the export has the shape of a frame or of a transposed frame (the images: "
                            f"{', '.join(sizes[:4])}; the frames: {', '.join(f'{r}x{c}' for r, c in sorted(shapes))})")
    root = Path(dicom) if isinstance(dicom, (str, os.PathLike)) and Path(dicom).is_dir() else None
    best: tuple[tuple, Diagnosis, UserImages] | None = None
    for rank, reading in enumerate(usable):
        diagnosis = diagnose(truth, frames, reading, segments, root)
        if diagnosis.exact:
            best = ((0,), diagnosis, reading)
            break
        moved = sum(1 for v in diagnosis.verdicts if v.frame != v.tied)
        key = (1, diagnosis.residual_mismatched_pixels, moved, diagnosis.mismatched_pixels, rank)
        if best is None or key < best[0]:
            best = (key, diagnosis, reading)
    assert best is not None
    _, diagnosis, reading = best
    diagnosis.findings[:0] = reading.notes
    dicom_path = Path(dicom) if isinstance(dicom, (str, os.PathLike)) else None
    return CheckResult(diagnosis, truth, reading, frames, segments, dicom_path, Path(export))


def _fits_some_frame(reading: UserImages, shapes: set[tuple[int, int]]) -> bool:
    allowed = shapes | {(c, r) for r, c in shapes}
    return any(image.shape in allowed for image in reading.images)
