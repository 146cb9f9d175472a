"""Cohorts: one export per job of a jobs table, on this machine or on a Dask cluster (``segalign batch``).

A job is a DICOM folder and a segmentation (and, when the folder holds several series, which one); its export goes to
``OUT_ROOT/<job name>/``, written by :func:`segalign.export_segmentation` exactly as ``segalign export`` writes it.
The jobs table (JOBS.csv) has a header naming ``dicom_dir`` and ``segmentation``, and optionally ``series`` and
``name``; relative paths are relative to the table's folder. :func:`find_jobs` builds the jobs from a folder laid
out one folder per study.

``OUT_ROOT/batch.csv`` gets one row per job as each finishes (``name,status,frames,seconds,error,...``; status
``ok``, ``failed`` or ``skipped``), and is rewritten in job order when the run ends. A failed job never stops the
others. Running the same batch again skips every job whose export is complete and whose inputs are unchanged: each
export's export.json records, under ``"batch"``, a fingerprint of what made it (the options, the label table, the
segmentation's bytes, and the names, sizes and modification times of the DICOM folder's files, as ``make`` and
``rsync`` compare them), so a changed job is exported again, a failed one retried, and an interrupted one, which
never published its folder, redone.

Where the jobs run:

* ``workers=1``: in this process, one after the other;
* ``workers=N``: in a pool of N worker processes on this machine (started once, with SegAlign already imported;
  each job single-threaded inside its worker);
* ``scheduler="tcp://host:port"``: on an existing Dask cluster (``pip install 'segalign[dask]'``), whose workers
  must see the inputs and OUT_ROOT at the same paths (a shared file system) and run the same SegAlign version.

``num_parts=K, part_id=I`` runs only jobs I, I+K, I+2K... (for job arrays); each part writes
``batch-part-I-of-K.csv``, and a final run without parts skips what the parts did and writes the whole batch.csv.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import os
import re
import signal
import sys
import threading
import time
import uuid
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

from .version import __version__
from .dicom import iter_files, scan_folder
from .errors import MESSAGE_LIMIT, SegAlignError, describe, one_line, short, short_path
from .export import (
    FILE_MANAGER_METADATA,
    PARTIAL_MARKER,
    OutputLock as _OutputLock,
    pid_running as _pid_running,
    read_owner as _read_owner,
    remove_stale_partials as _remove_stale_partials,
    export_problem,
    export_segmentation,
)
from .options import ExportOptions, ReadOptions
from .readers import load_segmentation
from .signals import stop_on_terminate, terminate_self
from .writers.png_folder import has_csv_header, safe_name

if TYPE_CHECKING:
    import multiprocessing.context

__all__ = [
    "BatchResult",
    "Job",
    "JobResult",
    "find_jobs",
    "job_fingerprint",
    "read_jobs",
    "run_batch",
    "run_job",
    "write_jobs",
]

#: The columns of a jobs table: the first two are required.
JOB_COLUMNS = ("dicom_dir", "segmentation", "series", "name")
#: The columns of batch.csv, one row per job.
RESULT_COLUMNS = ("name", "status", "frames", "seconds", "error", "warnings", "dicom_dir", "segmentation", "series")
#: Bumped when what the fingerprint covers changes, so that exports fingerprinted otherwise are redone.
FINGERPRINT_VERSION = 1
#: The longest error message kept in batch.csv (the same limit as the command line's).
#: The file names a segmentation may have, and those of the files in a folder of masks.
SEGMENTATION_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".seg.nrrd", ".mha", ".mhd")
MASK_SUFFIXES = (".nii", ".nii.gz")

#: What :func:`run_batch` calls after each job: (jobs done, jobs in this run, failed so far, the job's result).
BatchProgress = Callable[[int, int, int, "JobResult"], None]


@dataclass(frozen=True)
class Job:
    """One export of a batch: ``segmentation`` onto the series of ``dicom_dir`` (the ``series`` one when it holds
    several: a SeriesInstanceUID, SeriesNumber or index, as ``segalign export --series`` takes), written to
    ``OUT_ROOT/<name>/``."""

    name: str
    dicom_dir: Path
    segmentation: Path
    series: str | None = None


@dataclass(frozen=True)
class JobResult:
    """How a job ended: ``status`` is ``"ok"`` (exported), ``"skipped"`` (its export was complete and its inputs
    unchanged) or ``"failed"`` (``error`` says why, in the one line ``segalign export`` prints)."""

    name: str
    status: str
    frames: int | None = None
    seconds: float = 0.0
    error: str = ""
    warnings: int = 0

    def row(self, job: Job) -> dict[str, object]:
        """The job's row of batch.csv."""
        return {
            "name": self.name, "status": self.status, "frames": "" if self.frames is None else self.frames,
            "seconds": f"{self.seconds:.2f}", "error": self.error, "warnings": self.warnings,
            "dicom_dir": str(job.dicom_dir), "segmentation": str(job.segmentation), "series": job.series or "",
        }


@dataclass
class BatchResult:
    """What a batch run did: one result per job of the run, in job order (a part runs only its share)."""

    out_root: Path
    table: Path  #: batch.csv (or this part's batch-part-I-of-K.csv)
    results: list[JobResult]
    seconds: float
    notes: list[str] = field(default_factory=list)  #: temporary folders removed or left, for the user

    def count(self, status: str) -> int:
        """How many jobs ended with ``status``."""
        return sum(result.status == status for result in self.results)

    @property
    def failed(self) -> list[JobResult]:
        """The jobs that failed."""
        return [result for result in self.results if result.status == "failed"]

    def summary(self) -> str:
        """One line: how many jobs ended how, in how long, and where the table is."""
        return (
            f"{len(self.results)} jobs: {self.count('ok')} exported, {self.count('skipped')} skipped (complete), "
            f"{self.count('failed')} failed, in {self.seconds:.1f} s; table: {self.table}"
        )


# --- the jobs table ----------------------------------------------------------------------------------------------


def read_jobs(path: str | os.PathLike[str]) -> list[Job]:
    """The jobs of a jobs table (CSV, UTF-8, a header naming ``dicom_dir`` and ``segmentation``, optionally
    ``series`` and ``name``). Relative paths are relative to the table's folder; blank lines are ignored. Jobs
    without a name are named after their DICOM folder (see :func:`name_jobs`); given names are made file-name safe
    and must stay unique."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8-sig", newline="") as stream:  # -sig: Excel writes a byte order mark
            reader = csv.reader(stream)
            rows = [(reader.line_num, row) for row in reader]
    except FileNotFoundError:
        raise SegAlignError(f"jobs table not found: {short_path(path)}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise SegAlignError(f"jobs table {short_path(path)} cannot be read: {describe(error)}") from None
    rows = [(line, row) for line, row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise SegAlignError(f"jobs table {short_path(path)} is empty; its first line must be a header: "
                            f"{','.join(JOB_COLUMNS)}")
    header = [cell.strip().lower() for cell in rows[0][1]]
    missing = [column for column in JOB_COLUMNS[:2] if column not in header]
    unknown = [column for column in header if column not in JOB_COLUMNS]
    if missing or unknown or len(set(header)) < len(header):
        what = (f"it has no column {' or '.join(missing)}" if missing else
                f"column {short(unknown[0], 40)!r} is not one of {', '.join(JOB_COLUMNS)}" if unknown else
                "a column is named twice")
        raise SegAlignError(f"jobs table {short_path(path)}: {what} (the header must name dicom_dir and "
                            "segmentation, and may name series and name)")
    base = path.absolute().parent
    entries = []
    for line, row in rows[1:]:
        if len(row) > len(header):
            raise SegAlignError(f"jobs table {short_path(path)} line {line}: {len(row)} values, but the header "
                                f"names {len(header)} columns (quote values that hold commas)")
        values = dict(zip(header, (cell.strip() for cell in row)))
        for column in JOB_COLUMNS[:2]:
            if not values.get(column):
                raise SegAlignError(f"jobs table {short_path(path)} line {line}: {column} is empty")
        entries.append((
            line, base / Path(values["dicom_dir"]).expanduser(), base / Path(values["segmentation"]).expanduser(),
            values.get("series") or None, values.get("name") or None,
        ))
    if not entries:
        raise SegAlignError(f"jobs table {short_path(path)} has a header but no jobs")
    names = name_jobs([(dicom, series, name) for _, dicom, _, series, name in entries], base,
                      where=lambda index: f"jobs table {short_path(path)} line {entries[index][0]}")
    return [Job(name, dicom, segmentation, series)
            for name, (_, dicom, segmentation, series, _) in zip(names, entries)]


def name_jobs(
    jobs: Sequence[tuple[Path, str | None, str | None]],
    base: Path | None = None,
    where: Callable[[int], str] = lambda index: f"job {index + 1}",
) -> list[str]:
    """Unique, file-name safe names for jobs given as ``(dicom_dir, series, name or None)``.

    A given name is kept (made safe: letters, digits, ``._-``); two that are the same without regard to case are
    refused. A job without one is named after the last part of its DICOM folder's path, or as many last parts as
    make it unique (``case01_ct`` beside ``case02_ct``), then its series; what is still shared gets ``-2``,
    ``-3``... in table order. Names are a function of the table, so a rerun gives every job the same folder.
    """
    taken: dict[str, int] = {}
    names: list[str | None] = []
    for index, (_, _, name) in enumerate(jobs):
        if name is None:
            names.append(None)
            continue
        safe = _unreserved(safe_name(name))
        if safe.lower() in taken:
            raise SegAlignError(f"{where(index)}: name {short(name, 60)!r} is also the name of "
                                f"{where(taken[safe.lower()])} (names must differ, also in case)")
        taken[safe.lower()] = index
        names.append(safe)

    def parts(dicom_dir: Path) -> list[str]:
        try:
            relative = dicom_dir.relative_to(base) if base is not None else dicom_dir
        except ValueError:
            relative = dicom_dir
        return [part for part in relative.parts if part not in (relative.anchor, "", ".", "..")] or ["job"]

    unnamed = [index for index, name in enumerate(names) if name is None]
    depth = {index: 1 for index in unnamed}

    def candidate(index: int) -> str:
        dicom_dir, series, _ = jobs[index]
        text = "_".join(parts(dicom_dir)[-depth[index]:]) + (f"_series-{series}" if series else "")
        return _unreserved(safe_name(text, "job"))

    while True:  # deepen the names that collide, as long as their paths have more parts
        groups: dict[str, list[int]] = {}
        for index in unnamed:
            groups.setdefault(candidate(index).lower(), []).append(index)
        deeper = [index for group in groups.values() if len({tuple(parts(jobs[i][0])) for i in group}) > 1
                  for index in group if depth[index] < len(parts(jobs[index][0]))]
        if not deeper:
            break
        for index in deeper:
            depth[index] += 1
    for index in unnamed:
        stem = candidate(index)
        name, number = stem, 1
        while name.lower() in taken:
            number += 1
            name = f"{stem}-{number}"
        taken[name.lower()] = index
        names[index] = name
    return [name for name in names if name is not None]


def _unreserved(name: str) -> str:
    """A job name that cannot be mistaken for a batch table (batch.csv, batch-part-...csv)."""
    return f"{name}_job" if re.fullmatch(r"batch.*\.csv", name, re.IGNORECASE) else name


def write_jobs(jobs: Sequence[Job], path: str | os.PathLike[str]) -> None:
    """Write ``jobs`` as a jobs table (paths relative to the table's folder where they lie under it)."""
    path = Path(path)
    base = path.absolute().parent
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(JOB_COLUMNS)
        for job in jobs:
            writer.writerow([_relative(job.dicom_dir, base), _relative(job.segmentation, base), job.series or "",
                             job.name])


def _relative(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` when it lies under it, else absolute (read_jobs reads paths from the table's
    folder, not from the working folder)."""
    absolute = Path(path).absolute()
    try:
        return absolute.relative_to(base).as_posix()
    except ValueError:
        return str(absolute)


# --- jobs from a folder -----------------------------------------------------------------------------------------


def find_jobs(
    root: str | os.PathLike[str], dicom: str | None = None, segmentation: str | None = None
) -> tuple[list[Job], list[str]]:
    """The jobs of a folder of studies, and a note for each folder that is not one (or not only one) job.

    Layouts recognised, for each folder STUDY directly under ``root`` (or ``root`` itself, if it is one):

    * ``STUDY/`` holds a DICOM folder (any name, DICOM files at any depth below it) or DICOM files itself, and one
      segmentation: a file (``.nii``, ``.nii.gz``, ``.seg.nrrd``, ``.nrrd``, ``.mha``, ``.mhd``) or a folder of NIfTI
      masks (TotalSegmentator's ``segmentations/``);
    * ``STUDY/`` holds only DICOM, and its segmentation lies beside it: ``STUDY.nii.gz`` (or any suffix above),
      as model outputs are often written next to their inputs.

    ``dicom`` and ``segmentation`` are shell patterns (``"ct*"``, ``"*.nii.gz"``) that the names of a study's DICOM
    folder and segmentation must match, for studies that hold several. Each job is named after its study folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise SegAlignError(f"folder of studies not found: {short_path(root)}")
    jobs: list[Job] = []
    notes: list[str] = []
    own = _study_job(root, dicom, segmentation)
    if isinstance(own, Job):
        return [dataclasses.replace(own, name=safe_name(root.absolute().name, "study"))], []
    try:
        children = sorted(entry for entry in root.iterdir() if not entry.name.startswith("."))
    except OSError as error:
        raise SegAlignError(f"{short_path(root)}: the folder cannot be read ({describe(error)})") from None
    siblings = {entry.name.lower(): entry for entry in children if entry.is_file()}
    for study in children:
        if not study.is_dir():
            continue
        found = _study_job(study, dicom, segmentation)
        if isinstance(found, str) and _holds_dicom(study):  # a DICOM folder, its segmentation beside it?
            beside = [siblings[key] for key in (study.name.lower() + suffix for suffix in SEGMENTATION_SUFFIXES)
                      if key in siblings and (segmentation is None or fnmatch(siblings[key].name, segmentation))]
            if len(beside) == 1:
                found = Job(study.name, study, beside[0])
        if isinstance(found, Job):
            jobs.append(found)
        else:
            notes.append(f"{study}: {found}")
    if not jobs and not notes:
        notes.append(f"{root}: no study folders in it")
    names = name_jobs([(job.dicom_dir, None, job.name) for job in jobs])
    return [dataclasses.replace(job, name=name) for job, name in zip(jobs, names)], notes


def _study_job(study: Path, dicom: str | None, segmentation: str | None) -> Job | str:
    """The job of one study folder, or why it is not one."""
    try:
        entries = sorted(entry for entry in study.iterdir() if not entry.name.startswith("."))
    except OSError as error:
        return f"cannot be read ({describe(error)})"
    segmentations = [
        entry for entry in entries
        if (entry.is_file() and entry.name.lower().endswith(SEGMENTATION_SUFFIXES)
            or entry.is_dir() and _is_mask_folder(entry))
        and (segmentation is None or fnmatch(entry.name, segmentation))
    ]
    dicom_dirs = [entry for entry in entries if entry.is_dir() and entry not in segmentations
                  and (dicom is None or fnmatch(entry.name, dicom)) and _holds_dicom(entry)]
    if dicom is None and not dicom_dirs and _holds_dicom(study, depth=0):
        dicom_dirs = [study]  # the DICOM files lie in the study folder itself
    if not segmentations:
        return "no segmentation in it (a .nii/.nii.gz/.seg.nrrd/.nrrd/.mha file, or a folder of NIfTI masks)"
    if not dicom_dirs:
        return "no folder of DICOM files in it"
    for kind, found, option in (("segmentations", segmentations, "segmentation"), ("DICOM folders", dicom_dirs, "dicom")):
        if len(found) > 1:
            listed = ", ".join(entry.name for entry in found[:4]) + (", ..." if len(found) > 4 else "")
            return f"{len(found)} {kind} ({listed}): choose with --{option} PATTERN"
    return Job(study.name, dicom_dirs[0], segmentations[0])


def _is_mask_folder(folder: Path) -> bool:
    """A folder whose files are NIfTI masks (and nothing else but hidden files)."""
    try:
        names = [entry.name for entry in folder.iterdir() if not entry.name.startswith(".")]
    except OSError:
        return False
    return bool(names) and all(name.lower().endswith(MASK_SUFFIXES) for name in names)


def _holds_dicom(folder: Path, depth: int = 8, files: int = 64) -> bool:
    """Whether a DICOM file (``DICM`` after its 128-byte preamble) lies in ``folder``, at most ``depth`` folders
    down; at most ``files`` files are opened, so a folder of anything else is ruled out quickly."""
    opened = 0
    base = len(folder.parts)
    for directory, subdirectories, names in os.walk(folder):
        if len(Path(directory).parts) - base >= depth:
            subdirectories[:] = []
        subdirectories[:] = sorted(name for name in subdirectories if not name.startswith("."))
        for name in sorted(names):
            if name.lower().endswith(SEGMENTATION_SUFFIXES) or name.startswith("."):
                continue
            opened += 1
            with contextlib.suppress(OSError):
                with open(os.path.join(directory, name), "rb") as stream:
                    if stream.read(132)[128:] == b"DICM":
                        return True
            if opened >= files:
                return False
    return False


# --- one job -----------------------------------------------------------------------------------------------------


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
            if path.name.lower().endswith(MASK_SUFFIXES):
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


#: Export options added after the fingerprint was first written, with their defaults: at the default they are left
#: out of it, so that exports made before they existed (which behaved as the default does) stay complete.
ADDED_OPTION_DEFAULTS: dict[tuple[str, str], object] = {("overlays", "preview"): True}


def _fingerprinted_options(options: ExportOptions) -> dict:
    values = options.as_dict()
    for (group, name), default in ADDED_OPTION_DEFAULTS.items():
        if isinstance(values.get(group), dict) and values[group].get(name) == default:
            del values[group][name]
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


def run_job(
    job: Job, out_root: str | os.PathLike[str], options: ExportOptions, read_options: ReadOptions,
    redo: bool = False,
) -> JobResult:
    """Export one job into ``out_root/<job.name>/`` (or skip it: complete, inputs unchanged, not ``redo``).

    Never raises for a bad job: its result says ``failed`` with the one-line message ``segalign export`` gives.
    Only an interrupt (Ctrl-C, or SIGTERM in a worker) stops it, after the export has removed what it wrote.
    """
    start = time.monotonic()
    output = Path(out_root) / job.name

    def failed(message: str) -> JobResult:
        return JobResult(job.name, "failed", None, time.monotonic() - start, one_line(message, MESSAGE_LIMIT))

    try:
        fingerprint = job_fingerprint(job, options, read_options)
        frames = None if redo else completed_frames(output, fingerprint)
        if frames is not None:
            return JobResult(job.name, "skipped", frames, time.monotonic() - start)
        scan = scan_folder(job.dicom_dir)
        series = scan.select(job.series)
        segmentation = load_segmentation(
            job.segmentation, label_table=read_options.label_table, overlap=read_options.overlap,
            allow_many_labels=read_options.allow_many_labels,
        )
        result = export_segmentation(
            series, segmentation, output, options, dicom_root=job.dicom_dir, overwrite=True, warnings=scan.warnings,
            other_inputs=[read_options.label_file] if read_options.label_file else [], threads=1,
            extra_provenance={"batch": {"job": job.name, "fingerprint": fingerprint}},
        )
    except SegAlignError as error:
        return failed(error.cli_message)
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        return failed(f"{where}{error.strerror or describe(error)}")
    except Exception as error:  # a bug in SegAlign, or in a library, must not stop the other jobs
        return failed(f"unexpected {type(error).__name__}: {describe(error)} (please report it)")
    return JobResult(job.name, "ok", result.frames, time.monotonic() - start, "", len(result.warnings))


# --- the batch ---------------------------------------------------------------------------------------------------


def default_workers() -> int:
    """The number of cores this process may use."""
    counter = getattr(os, "process_cpu_count", None)  # Python 3.13
    if counter is not None:
        return counter() or 1
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def run_batch(
    jobs: Sequence[Job],
    out_root: str | os.PathLike[str],
    options: ExportOptions | None = None,
    read_options: ReadOptions | None = None,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    num_parts: int = 1,
    part_id: int = 0,
    redo: bool = False,
    progress: BatchProgress | None = None,
) -> BatchResult:
    """Export every job (or, with ``num_parts``, this part's share) into ``out_root``, and write batch.csv.

    ``workers`` processes run on this machine (default: one per core; 1 runs the jobs in this process), or, with
    ``scheduler`` (``"tcp://host:port"``), the workers of that Dask cluster. ``redo`` exports complete jobs again.
    ``progress(done, total, failed, result)`` is called as each job ends. An interrupt (Ctrl-C, SIGTERM) stops the
    workers, whose exports remove what they wrote; the table keeps the jobs that ended.
    """
    options = options if options is not None else ExportOptions()
    read_options = read_options if read_options is not None else ReadOptions()
    if not isinstance(options, ExportOptions) or not isinstance(read_options, ReadOptions):
        raise SegAlignError("options must be an ExportOptions and read_options a ReadOptions")
    if not isinstance(num_parts, int) or num_parts < 1:
        raise SegAlignError(f"num_parts must be a positive integer, got {num_parts!r}",
                            cli_message=f"--num-parts must be a positive integer, got {num_parts!r}")
    if not isinstance(part_id, int) or not 0 <= part_id < num_parts:
        raise SegAlignError(f"part_id must be 0..num_parts-1 (num_parts {num_parts!r}, part_id {part_id!r})",
                            cli_message=f"--part-id must be 0..{num_parts - 1} for --num-parts {num_parts}")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise SegAlignError(f"workers must be a positive integer, got {workers!r}",
                            cli_message=f"--workers must be a positive integer, got {workers!r}")
    if scheduler is not None and workers is not None:
        raise SegAlignError("give workers or scheduler, not both: a Dask cluster has its own workers",
                            cli_message="give --workers or --scheduler, not both: a Dask cluster has its own workers")
    jobs = list(jobs)
    seen: dict[str, str] = {}
    for job in jobs:
        if not isinstance(job, Job) or job.name != safe_name(job.name) or job.name.lower() in seen:
            raise SegAlignError(f"job name {short(getattr(job, 'name', job), 60)!r} is not a unique, file-name safe "
                                "name (see name_jobs)")
        seen[job.name.lower()] = job.name
    out_root = Path(out_root).absolute()
    if out_root.exists() and not out_root.is_dir():
        raise SegAlignError(f"output {out_root} exists and is not a folder")
    for job in jobs:  # exports inside a DICOM folder would change its fingerprint at every run
        dicom_dir = Path(job.dicom_dir).absolute()
        if out_root == dicom_dir or dicom_dir in out_root.parents:
            raise SegAlignError(f"output folder {out_root} lies inside the DICOM folder of job {job.name} "
                                f"({dicom_dir}); choose a folder outside the inputs")
    out_root.mkdir(parents=True, exist_ok=True)
    selected = jobs[part_id::num_parts]
    table = out_root / ("batch.csv" if num_parts == 1 else f"batch-part-{part_id}-of-{num_parts}.csv")
    start = time.monotonic()
    lock = _TableLock(table)
    lock.acquire()
    try:
        notes = []
        removed = _remove_stale_partials(out_root)
        if removed:
            notes.append(f"removed {len(removed)} temporary folders left by interrupted exports (e.g. {removed[0]})")
        results: dict[str, JobResult] = {}
        writer = _ResultTable(table)  # refuses a batch.csv that is not SegAlign's before any job runs
        if scheduler is not None:  # connects and checks the workers now: a cluster that cannot run leaves all as is
            runner = _run_on_dask(selected, out_root, options, read_options, redo, scheduler)
        elif (workers or default_workers()) == 1 or len(selected) <= 1:
            runner = _run_here(selected, out_root, options, read_options, redo)
        else:
            runner = _run_in_pool(selected, out_root, options, read_options, redo,
                                  min(workers or default_workers(), len(selected)))
        by_name = {job.name: job for job in selected}
        with contextlib.closing(runner), writer:
            try:
                for result in runner:
                    results[result.name] = result
                    writer.add(result.row(by_name[result.name]))
                    if progress is not None:
                        failed = sum(r.status == "failed" for r in results.values())
                        progress(len(results), len(selected), failed, result)
            finally:  # also when interrupted: the table, in job order, holds the jobs that ended
                writer.finish([results[job.name].row(job) for job in selected if job.name in results])
        notes += _left_partials(out_root)
    finally:
        lock.release()
    ordered = [results[job.name] for job in selected]
    return BatchResult(out_root, table, ordered, time.monotonic() - start, notes)


def _run_here(
    jobs: Sequence[Job], out_root: Path, options: ExportOptions, read_options: ReadOptions, redo: bool
) -> Iterator[JobResult]:
    for job in jobs:
        yield run_job(job, out_root, options, read_options, redo)


def _run_in_pool(
    jobs: Sequence[Job], out_root: Path, options: ExportOptions, read_options: ReadOptions, redo: bool, workers: int
) -> Iterator[JobResult]:
    """The jobs on a pool of ``workers`` processes, results as they end.

    The workers start with SegAlign imported (see :func:`_pool_context`) and end when the batch process does,
    however it ends. A worker that dies (killed, out of memory) breaks the pool: a new one runs the jobs that were
    in flight one at a time, so that only a job whose worker dies while it runs alone, :data:`WORKER_DEATHS` times,
    fails.
    Interrupted (or closed early), the workers get SIGTERM, which stops their export the way Ctrl-C stops
    ``segalign export``: what it wrote is removed.
    """
    from concurrent.futures.process import BrokenProcessPool

    context = _pool_context()
    queue = list(jobs)
    suspects: list[Job] = []  # in flight when a pool broke: run one at a time until each has run alone
    deaths: dict[str, int] = {}
    while queue or suspects:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_started,
                                   initargs=(os.getpid(),))
        pending: dict = {}

        def submit(job: Job) -> None:
            with warnings.catch_warnings():  # Python 3.12+ on fork with numpy's idle OpenBLAS threads
                warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
                pending[pool.submit(_pool_job, job, out_root, options, read_options, redo)] = job

        try:
            while queue or suspects or pending:
                if suspects:  # one at a time, so that a pool it breaks is its own doing
                    if not pending:
                        submit(suspects.pop(0))
                else:  # a few jobs queued ahead of the workers: an interrupt or a broken pool has little to redo
                    while queue and len(pending) < 2 * workers:
                        submit(queue.pop(0))
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                broken = [future for future in done if isinstance(future.exception(), BrokenProcessPool)]
                for future in done:
                    if future not in broken:
                        pending.pop(future)
                        yield future.result()
                if broken:
                    break
        except BaseException:
            for future in pending:
                future.cancel()
            _stop_workers(pool)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        for future, job in pending.items():  # the pool broke
            if future.done() and not future.cancelled() and future.exception() is None:
                yield future.result()
            elif len(pending) == 1:  # it ran alone: its worker died under it
                deaths[job.name] = deaths.get(job.name, 0) + 1
                if deaths[job.name] >= WORKER_DEATHS:
                    yield JobResult(job.name, "failed", None, 0.0, f"its worker process died {WORKER_DEATHS} "
                                    "times (killed, or out of memory?)")
                else:
                    suspects.append(job)
            else:  # one of them may have done it: each runs alone next
                suspects.append(job)


def _pool_context() -> "multiprocessing.context.BaseContext":
    """How pool workers start. On Linux, forked from this process when it runs no other Python thread: the workers
    start with SegAlign imported, at no cost (about 0.3 s per worker otherwise, which is two jobs' worth on a
    cohort of small exports); numpy's OpenBLAS threads are idle here, and OpenBLAS is fork-safe. Else (a notebook,
    an application with threads, macOS, Windows), from a fork server that imports SegAlign once, or spawned."""
    import multiprocessing

    if sys.platform.startswith("linux") and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["segalign.batch"])
        return context
    return multiprocessing.get_context("spawn")


#: How many times a job's worker may die while it runs alone before the job is failed.
WORKER_DEATHS = 3
#: In a pool worker: whether a job is running (SIGTERM then stops it; between jobs it ends the worker at once).
_in_job = False


def _pool_job(
    job: Job, out_root: Path, options: ExportOptions, read_options: ReadOptions, redo: bool
) -> JobResult:
    """:func:`run_job` in a pool worker: a SIGTERM during the job stops it (its export removes what it wrote),
    then ends the worker."""
    global _in_job
    _in_job = True
    try:
        return run_job(job, out_root, options, read_options, redo)
    except KeyboardInterrupt:
        os._exit(128 + signal.SIGTERM)
    finally:
        _in_job = False


def _stop_workers(pool: ProcessPoolExecutor, grace: float = 30.0) -> None:
    """SIGTERM every worker of ``pool`` (their exports clean up), then wait for them; SIGKILL what outlives
    ``grace`` seconds."""
    processes = list(getattr(pool, "_processes", {}).values())  # concurrent.futures keeps them there since 3.2
    for process in processes:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            process.terminate()
    deadline = time.monotonic() + grace
    for process in processes:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            process.join(max(deadline - time.monotonic(), 0.1))
            if process.is_alive():
                process.kill()


def _worker_started(batch_pid: int) -> None:
    """In each pool worker: Ctrl-C is the batch's to handle (it stops the workers with SIGTERM); SIGTERM stops the
    running job as Ctrl-C would, and ends the worker; and a watcher ends the worker the same way when the batch
    process is gone (killed with SIGKILL), since a pool worker would otherwise wait for work forever."""
    stop_on_terminate(lambda: _in_job)

    def watch() -> None:
        while _pid_running(batch_pid):
            time.sleep(PARENT_POLL)
        terminate_self()

    threading.Thread(target=watch, name="segalign-batch-watch", daemon=True).start()


#: How often (seconds) a pool worker checks that its batch is still running.
PARENT_POLL = 0.5


def _run_on_dask(
    jobs: Sequence[Job], out_root: Path, options: ExportOptions, read_options: ReadOptions, redo: bool,
    scheduler: str,
) -> Iterator[JobResult]:
    """The jobs on the Dask cluster at ``scheduler``, results as they end (connected, and its workers checked,
    before this returns). Interrupted, the jobs not yet running are cancelled (a running one ends on its worker:
    its export is complete, or removed)."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise SegAlignError(
            "running on a Dask cluster needs Dask's distributed package: pip install 'segalign[dask]'"
        ) from None
    try:
        client = Client(scheduler, timeout="30s", set_as_default=False)
    except Exception as error:
        raise SegAlignError(f"cannot connect to the Dask scheduler at {scheduler}: {describe(error)}") from None
    try:
        _check_dask_workers(client, scheduler)
    except BaseException:
        client.close()
        raise
    return _DaskRun(client, _dask_results(client, jobs, out_root, options, read_options, redo, as_completed))


class _DaskRun:
    """The results of a Dask run; closing it (even before the first result) cancels the jobs and closes the
    client."""

    def __init__(self, client: object, results: Iterator[JobResult]) -> None:
        self.client, self.results = client, results

    def __iter__(self) -> Iterator[JobResult]:
        return self.results

    def __next__(self) -> JobResult:
        return next(self.results)

    def close(self) -> None:
        try:
            self.results.close()  # type: ignore[attr-defined]
        finally:
            with contextlib.suppress(Exception):
                self.client.close()  # type: ignore[attr-defined]


def _dask_results(
    client: object, jobs: Sequence[Job], out_root: Path, options: ExportOptions, read_options: ReadOptions,
    redo: bool, as_completed: Callable,
) -> Iterator[JobResult]:
    futures = []
    try:
        token = uuid.uuid4().hex[:8]
        by_key = {}
        for job in jobs:
            future = client.submit(  # type: ignore[attr-defined]
                run_job, job, out_root, options, read_options, redo, pure=False, key=f"segalign-{job.name}-{token}"
            )
            futures.append(future)
            by_key[future.key] = job
        for future in as_completed(futures, loop=client.loop):  # type: ignore[attr-defined]
            job = by_key[future.key]
            try:
                yield future.result()
            except KeyboardInterrupt:
                raise
            except Exception as error:  # KilledWorker: the workers running it died, as many times as Dask allows
                yield JobResult(job.name, "failed", None, 0.0,
                                short(f"the Dask workers running it died ({describe(error)})", MESSAGE_LIMIT))
    finally:
        with contextlib.suppress(Exception):
            client.cancel(futures)  # type: ignore[attr-defined]
        with contextlib.suppress(Exception):
            client.close()  # type: ignore[attr-defined]


def _check_dask_workers(client: object, scheduler: str) -> None:
    """Refuse a cluster without workers, or whose workers cannot import SegAlign or run another version of it."""
    try:
        versions = client.run(_worker_version)  # type: ignore[attr-defined]
    except Exception as error:
        raise SegAlignError(
            f"the Dask workers of {scheduler} cannot run SegAlign ({describe(error)}); install segalign "
            f"{__version__} where they run"
        ) from None
    if not versions:
        raise SegAlignError(f"the Dask cluster at {scheduler} has no workers")
    other = {address: version for address, version in versions.items() if version != __version__}
    if other:
        address, version = next(iter(other.items()))
        raise SegAlignError(
            f"{len(other)} Dask workers run another SegAlign (e.g. {version} on {address}, here {__version__}); "
            "install the same version everywhere"
        )


def _worker_version() -> str:
    from segalign import __version__ as version

    return version


class _TableLock(_OutputLock):
    """One batch at a time writes a batch table (parts write their own)."""

    def _busy(self, owner: dict | None) -> SegAlignError:
        who = f" (pid {owner.get('pid')} on {owner.get('host')}, since {owner.get('started')})" if owner else ""
        return SegAlignError(
            f"another batch writing {self.output_dir} is running{who}; wait for it, or give another output folder "
            f"(if none is running, delete {self.path})"
        )


class _ResultTable:
    """batch.csv: rows appended (and flushed) as jobs end, then rewritten in job order, atomically, at the end.

    A batch.csv that SegAlign did not write (its header says so) is never replaced.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.is_symlink() or (path.exists() and not has_csv_header(path, RESULT_COLUMNS)):
            raise SegAlignError(f"{path} exists and is not a SegAlign batch table; it is never replaced: choose "
                                "another output folder")

    def __enter__(self) -> "_ResultTable":
        self.stream = self.path.open("w", encoding="utf-8", newline="")
        self.writer = csv.DictWriter(self.stream, RESULT_COLUMNS)
        self.writer.writeheader()
        self.stream.flush()
        return self

    def add(self, row: dict[str, object]) -> None:
        self.writer.writerow(row)
        self.stream.flush()

    def finish(self, rows: Iterable[dict[str, object]]) -> None:
        self.stream.close()
        temporary = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}")
        try:
            with temporary.open("w", encoding="utf-8", newline="") as stream:
                writer = csv.DictWriter(stream, RESULT_COLUMNS)
                writer.writeheader()
                writer.writerows(rows)
            os.replace(temporary, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()

    def __exit__(self, *exc: object) -> None:
        if not self.stream.closed:
            self.stream.close()


def _left_partials(out_root: Path) -> list[str]:
    """Notes on the temporary folders of exports still in ``out_root``: running, or left by a process of another
    host (or container) that SegAlign cannot prove is dead, so they are not removed."""
    left = []
    with contextlib.suppress(OSError):
        for entry in sorted(out_root.iterdir()):
            if re.fullmatch(r"\..+\.partial-\w+", entry.name) and entry.is_dir():
                owner = None
                with contextlib.suppress(OSError, UnicodeDecodeError):
                    owner = _read_owner((entry / PARTIAL_MARKER).read_text(encoding="utf-8"))
                who = f"pid {owner.get('pid')} on {owner.get('host')}" if owner else "an unknown process"
                left.append(f"temporary folder {entry} (written by {who}) was left in place: delete it once that "
                            "export is no longer running")
    return left
