"""What a job's export was made from, as one digest (:func:`job_fingerprint`), recorded under ``"batch"`` in its
export.json; and whether an export in place is complete and made from the same inputs (:func:`completed_frames`),
which is how a rerun of a batch knows which jobs to skip."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..dicom import iter_files
from ..errors import describe
from ..export import FILE_MANAGER_METADATA, export_problem
from ..options import ExportOptions, ReadOptions
from ..readers.nifti import NIFTI_SUFFIXES
from .jobs import Job

#: Bumped when what the fingerprint covers changes, so that exports fingerprinted otherwise are redone.
FINGERPRINT_VERSION = 1


def job_fingerprint(job: Job, options: ExportOptions, read_options: ReadOptions) -> str:
    """What an export of ``job`` depends on, as a hex digest: the series chosen, the export and read options, the
    label table's bytes, the segmentation's bytes, and every file under the DICOM folder by relative name, size
    and modification time (DICOM files are not read: a cohort's DICOM is large, and is rarely rewritten in place
    with the same size and time). The SegAlign version is not part of it: upgrading does not redo a finished
    cohort (``redo`` does)."""
    digest = hashlib.sha256()

    def add(*items: object) -> None:
        digest.update(json.dumps(items, default=str).encode("utf-8") + b"\n")

    reading = read_options.as_dict()
    if reading.get("overlap") == "keep":  # the default before overlaps were kept was "error": an export it made
        reading["overlap"] = "error"  # had no overlap, so "keep" makes it again the same; it is not redone
    if not reading.get("skip_unplaced_contours"):  # added later: at its default, exports made before stay complete
        reading.pop("skip_unplaced_contours", None)
    if read_options.label_file is not None:  # by its bytes, not where it lies (hosts mount it in other places)
        reading["label_table"] = _file_digest(Path(read_options.label_file))
    add("segalign-batch", FINGERPRINT_VERSION, job.series, _fingerprinted_options(options), reading)
    segmentation = Path(job.segmentation)
    if segmentation.is_dir():
        try:
            masks = sorted(segmentation.iterdir())
        except OSError as error:  # the reader says so in its own words
            masks = []
            add("unreadable", describe(error))
        for path in masks:
            if path.name.lower().endswith(NIFTI_SUFFIXES):
                add("mask", path.name, _file_digest(path))
    else:
        add("segmentation", _file_digest(segmentation))
    root = Path(job.dicom_dir)
    for path in iter_files(root):
        if path.name.lower() in FILE_MANAGER_METADATA:  # .DS_Store appears when a folder is looked at
            continue
        status = path.stat()
        add("dicom", path.relative_to(root).as_posix(), status.st_size, status.st_mtime_ns)
    return digest.hexdigest()


#: Export options added after the fingerprint was first written, with their defaults, by their path in
#: ``ExportOptions.as_dict()`` (a field, or a group and its field): at the default they are left out of it, so that
#: exports made before they existed (which behaved as the default does) stay complete.
ADDED_OPTION_DEFAULTS: dict[tuple[str, ...], object] = {("overlays", "preview"): True, ("volume",): None}


def _fingerprinted_options(options: ExportOptions) -> dict:
    values = options.as_dict()
    for (*groups, name), default in ADDED_OPTION_DEFAULTS.items():
        holder: object = values
        for group in groups:
            holder = holder.get(group) if isinstance(holder, dict) else None
        if isinstance(holder, dict) and name in holder and holder[name] == default:
            del holder[name]
    return values


def _file_digest(path: Path) -> str:
    """The SHA-256 of a file's bytes; for a file that cannot be read, why (the export that follows says so in its
    own words, as ``segalign export`` would)."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    except OSError as error:
        return f"unreadable: {describe(error)}"
    return digest.hexdigest()


def completed_frames(output_dir: Path, fingerprint: str) -> int | None:
    """The number of frames of the export in ``output_dir`` if it is a complete SegAlign export made from inputs
    with ``fingerprint``; None if it must be (re)made."""
    if not output_dir.is_dir() or export_problem(output_dir) is not None:
        return None
    try:
        provenance = json.loads((output_dir / "export.json").read_text(encoding="utf-8"))
        if provenance["batch"]["fingerprint"] != fingerprint:
            return None
        return int(provenance["coverage"]["frames"])
    except (OSError, ValueError, KeyError, TypeError):
        return None

