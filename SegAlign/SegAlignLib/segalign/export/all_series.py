"""One segmentation onto every series of a study (``segalign export --all-series``).

A study holds the axial acquisition, thin and thick reconstructions, coronal and sagittal reformats, all in one frame
of reference. :func:`export_all_series` exports the segmentation onto each series it belongs to, into
``OUT_DIR/<series folder>/`` (each a complete export, written as :func:`~segalign.export_segmentation` writes one),
and lists every series in ``OUT_DIR/series.csv`` with what happened to it:

* ``exported``;
* ``other frame of reference``: the segmentation is a DICOM SEG of another frame of reference (formats without
  one, such as NIfTI, are tried on every series);
* ``not overlapping``: no pixel of the series lies inside the segmentation;
* ``localizer``: a scout image (ImageType LOCALIZER) is a projection, not a slice, so labels are never put on it;
* ``failed``: the series cannot be exported (the reason is the line ``segalign export`` gives).

Only ``failed`` is a failure; the others are listed, so nobody wonders where a series went.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..dicom import DicomScan, Series
from ..errors import MESSAGE_LIMIT, NoOverlapError, SegAlignError, short
from ..options import ExportOptions
from ..segmentation import Segmentation, SegmentationSampler
from ..files import has_csv_header, unique_safe_names
from . import folders
from .core import ExportResult, export_inputs, export_segmentation

#: The columns of series.csv.
SERIES_COLUMNS = ("folder", "status", "frames", "series_number", "modality", "description", "series_instance_uid",
                  "detail")


@dataclass
class SeriesOutcome:
    """What :func:`export_all_series` did with one series."""

    series: Series
    folder: str  #: its folder under OUT_DIR (also for series not exported: the name it would have)
    status: str  #: exported, other frame of reference, not overlapping, localizer, failed
    detail: str = ""
    result: ExportResult | None = None

    def row(self) -> dict[str, object]:
        return {
            "folder": self.folder if self.status == "exported" else "", "status": self.status,
            "frames": len(self.series.frames), "series_number": "" if self.series.series_number is None
            else self.series.series_number, "modality": self.series.modality, "description": self.series.description,
            "series_instance_uid": self.series.uid, "detail": self.detail,
        }


def series_folders(series: Sequence[Series]) -> list[str]:
    """File-name safe, unique folder names: ``<SeriesNumber>_<SeriesDescription>`` (``series<index>`` without a
    number)."""
    names = []
    for index, item in enumerate(series, start=1):
        number = f"{item.series_number:03d}" if item.series_number is not None else f"series{index}"
        names.append(f"{number}_{item.description or item.modality or 'series'}")
    return unique_safe_names(names)


def export_all_series(
    scan: DicomScan,
    segmentation: Segmentation,
    output_dir: str | os.PathLike[str],
    options: ExportOptions | None = None,
    *,
    overwrite: bool = False,
    other_inputs: Sequence[str | os.PathLike[str]] = (),
    progress: Callable[[int, int, SeriesOutcome], None] | None = None,
) -> list[SeriesOutcome]:
    """Export ``segmentation`` onto every series of ``scan`` it belongs to (see the module), into
    ``output_dir/<series folder>/``, and write ``output_dir/series.csv``; returns one outcome per series, in the
    scan's order. ``progress(done, total, outcome)`` is called after each series."""
    output_dir = Path(output_dir).absolute()
    if not scan.series:
        scan.select()  # raises: no series, saying what was skipped
    # Up front, not once per series: an output inside the DICOM folder would be scanned with it next time.
    folders.check_nesting(output_dir, export_inputs(Path(scan.root), segmentation, other_inputs), holds=False)
    if (output_dir / "export.json").exists():
        raise SegAlignError(f"output folder {output_dir} holds a single export; give another folder for all series")
    table = output_dir / "series.csv"
    if table.is_symlink() or (table.exists() and not has_csv_header(table, SERIES_COLUMNS)):
        raise SegAlignError(f"{table} exists and was not written by SegAlign; choose another output folder")
    sampler = SegmentationSampler(segmentation)
    outcomes: list[SeriesOutcome] = []
    for index, (series, folder) in enumerate(zip(scan.series, series_folders(scan.series))):
        outcome = _one(scan, series, folder, segmentation, sampler, output_dir, options, overwrite, other_inputs)
        outcomes.append(outcome)
        if progress is not None:
            progress(index + 1, len(scan.series), outcome)
    output_dir.mkdir(parents=True, exist_ok=True)
    temporary = table.with_name(f".{table.name}.partial")
    with temporary.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.DictWriter(stream, SERIES_COLUMNS)
        writer.writeheader()
        writer.writerows(outcome.row() for outcome in outcomes)
    os.replace(temporary, table)
    return outcomes


def _one(
    scan: DicomScan, series: Series, folder: str, segmentation: Segmentation, sampler: SegmentationSampler,
    output_dir: Path, options: ExportOptions | None, overwrite: bool, other_inputs: Sequence,
) -> SeriesOutcome:
    if "LOCALIZER" in series.image_type:
        return SeriesOutcome(series, folder, "localizer", "a projection image (ImageType LOCALIZER), not a slice")
    wanted = segmentation.frame_of_reference_uid
    theirs = {frame.frame_of_reference_uid for frame in series.frames}
    if wanted and wanted not in theirs:
        return SeriesOutcome(series, folder, "other frame of reference",
                             f"FrameOfReferenceUID {short(sorted(theirs)[0] if theirs else '(none)', 64)}, the "
                             f"segmentation's is {short(wanted, 64)}")
    if not series.problems and not any(sampler.may_overlap(frame) for frame in series.frames):
        return SeriesOutcome(series, folder, "not overlapping", "the segmentation covers none of its frames")
    try:
        result = export_segmentation(series, segmentation, output_dir / folder, options, dicom_root=scan.root,
                                     overwrite=overwrite, warnings=list(scan.warnings), other_inputs=other_inputs)
    except NoOverlapError:
        return SeriesOutcome(series, folder, "not overlapping", "the segmentation covers no pixel of its frames")
    except SegAlignError as error:
        return SeriesOutcome(series, folder, "failed", short(error.cli_message, MESSAGE_LIMIT))
    return SeriesOutcome(series, folder, "exported", f"{len(result.labels_found)} labels on the frames", result)

