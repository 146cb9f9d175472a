"""Export a segmentation onto the frames of a DICOM series.

* :mod:`.core`: :func:`export_segmentation`, the frame loop that samples each frame once and hands its labels to
  every writer of the export (see :mod:`segalign.writers`);
* :mod:`.report`: what the export tells the user and records (labels.json's entries, coverage, warnings,
  export.json's provenance, the no-overlap errors);
* :mod:`.folders` and :mod:`.locks`: output-folder safety (what SegAlign may replace: only what it can prove it
  wrote; temporary folders, the lock, publishing), public so that batches use it too;
* :mod:`.all_series`: one segmentation onto every series of a study (``segalign export --all-series``).

Layout of an export folder::

    labels/<index>_i<InstanceNumber>[_f<frame>].png   one label image per frame, Rows x Columns, like pixel_array
    masks/, images/, overlays/, index.html            what the options ask for (see :mod:`segalign.writers.images`)
    seg.dcm                                           (options.dicom_seg) the DICOM SEG on the source frames
    rtstruct.dcm                                      (options.rtstruct) the RT Structure Set, pixel-edge contours
    image.nii.gz, labels.nii.gz, volume_masks/        (options.volume) the frames and labels as volumes on the
                                                      series' own grid (see :mod:`segalign.writers.volume`)
    labels.json                                       value, name, colour (and voxel and frame counts) per label
    export.json                                       provenance: inputs, options, affine used, outputs, warnings
    manifest.csv                                      one row per frame in export order

Everything is written into a hidden temporary folder beside the output and renamed into place at the end, so an
interrupted export never leaves a folder that looks complete; the next export into the same parent removes such
folders once it can prove the export that wrote them is dead. Only an earlier SegAlign export (export.json says so,
and the folder holds nothing but :data:`EXPORT_ENTRIES`) is ever replaced, and only with ``overwrite``; a lock file
beside the output (``.NAME.lock``) keeps two exports from writing into the same folder at once.
"""

from __future__ import annotations


from .all_series import SERIES_COLUMNS, SeriesOutcome, export_all_series, series_folders
from .core import ExportCancelled, ExportResult, ProgressCallback, export_segmentation, label_counts
from .folders import (
    EXPORT_ENTRIES,
    FILE_MANAGER_METADATA,
    FOLDER_SUFFIXES,
    PARTIAL_MARKER,
    WRITTEN_BY,
    export_problem,
    remove_stale_partials,
)
from .locks import OutputLock, pid_running, read_owner

# What other modules import from here (batches use the folder safety); tests patch the seams where they live, in
# .folders and .locks, not here.
__all__ = [
    "EXPORT_ENTRIES", "FILE_MANAGER_METADATA", "FOLDER_SUFFIXES", "PARTIAL_MARKER", "SERIES_COLUMNS", "WRITTEN_BY",
    "ExportCancelled", "ExportResult", "OutputLock", "ProgressCallback", "SeriesOutcome", "export_all_series",
    "export_problem", "export_segmentation", "label_counts", "pid_running", "read_owner", "remove_stale_partials",
    "series_folders",
]
