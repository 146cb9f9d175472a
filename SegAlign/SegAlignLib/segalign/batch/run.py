"""Running jobs: :func:`run_job` (one export, or a skip when it is complete and its inputs unchanged, never an
exception for a bad job) and :func:`run_batch` (every job of a batch on one of the :mod:`.executors`, batch.csv
written as they end).

Tests may patch :func:`run_job` here: :func:`run_batch` looks it up in this module each time it runs, and hands it
to the executor (forked pool workers inherit the patch).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import time
from pathlib import Path
from typing import Sequence

from ..dicom import scan_folder
from ..errors import MESSAGE_LIMIT, SegAlignError, describe, one_line, short
from ..export import export_segmentation, folders
from ..options import ExportOptions, ReadOptions, VolumeFormat, VolumeOptions
from ..readers import load_segmentation, structure_set_series
from ..files import safe_name
from . import executors
from .fingerprint import completed_frames, job_fingerprint
from .jobs import Job
from .nnunet import build_dataset, check_dataset_folder, check_dataset_name
from .results import BatchProgress, BatchResult, JobResult, ResultTable, TableLock, left_partials


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
        drawn_on = structure_set_series(job.segmentation, scan.series) \
            if job.series is None and len(scan.series) > 1 else None  # an RT Structure Set's own series
        series = drawn_on or scan.select(job.series)
        segmentation = load_segmentation(
            job.segmentation, label_table=read_options.label_table, overlap=read_options.overlap,
            allow_many_labels=read_options.allow_many_labels, reference=scan.series,
            skip_unplaced_contours=read_options.skip_unplaced_contours,
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
    studies: str | os.PathLike[str] | None = None,
    nnunet: str | None = None,
) -> BatchResult:
    """Export every job (or, with ``num_parts``, this part's share) into ``out_root``, and write batch.csv.

    ``workers`` processes run on this machine (default: one per core; 1 runs the jobs in this process), or, with
    ``scheduler`` (``"tcp://host:port"``), the workers of that Dask cluster. ``redo`` exports complete jobs again.
    ``progress(done, total, failed, result)`` is called as each job ends. ``studies`` is the folder of studies the
    jobs were found in (:func:`~segalign.batch.find_jobs`): ``out_root`` may not lie inside it, nor inside a job's
    DICOM folder or folder of masks. An interrupt (Ctrl-C, SIGTERM) stops the workers, whose exports remove what
    they wrote; the table keeps the jobs that ended. ``nnunet`` (``"Dataset042_Name"``) exports volumes and makes
    an nnU-Net v2 raw dataset of them in ``out_root/<nnunet>/`` (see :mod:`.nnunet`); a job it leaves out fails.
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
    if nnunet is not None:
        check_dataset_name(nnunet)
        check_dataset_folder(Path(out_root) / nnunet)
        if options.volume is None:  # the dataset is made of the jobs' volumes
            options = dataclasses.replace(options, volume=VolumeOptions())
        elif options.volume.format is not VolumeFormat.NIFTI:
            raise SegAlignError("an nnU-Net dataset is made of NIfTI volumes: leave out --volume-format nrrd")
    jobs = list(jobs)
    seen: dict[str, str] = {}
    for job in jobs:
        if not isinstance(job, Job) or job.name != safe_name(job.name) or job.name.lower() in seen:
            raise SegAlignError(f"job name {short(getattr(job, 'name', job), 60)!r} is not a unique, file-name safe "
                                "name (see name_jobs)")
        seen[job.name.lower()] = job.name
    if nnunet is not None and nnunet.lower() in seen:
        raise SegAlignError(f"job {seen[nnunet.lower()]} has the nnU-Net dataset's name: its folders would be one")
    out_root = Path(out_root).absolute()
    if out_root.exists() and not out_root.is_dir():
        raise SegAlignError(f"output {out_root} exists and is not a folder")
    # Up front, in one line: exports inside an input folder would be scanned with it (and change its fingerprint)
    # at every run, and exports inside the folder of studies would be taken for studies.
    if studies is not None:
        folders.check_nesting(out_root, [folders.Input(Path(studies).absolute(), "folder of studies")], holds=False)
    label_file = read_options.label_file
    label_file = [folders.Input(Path(label_file).absolute(), "label table")] if label_file else []
    for job in jobs:
        segmentation = Path(job.segmentation).absolute()
        what = "folder of masks" if segmentation.is_dir() else "segmentation"
        inputs = [folders.Input(Path(job.dicom_dir).absolute(), "DICOM folder", f"of job {job.name}"),
                  folders.Input(segmentation, what, f"of job {job.name}"), *label_file]
        folders.check_nesting(out_root, inputs, holds=False)
    out_root.mkdir(parents=True, exist_ok=True)
    selected = jobs[part_id::num_parts]
    table = out_root / ("batch.csv" if num_parts == 1 else f"batch-part-{part_id}-of-{num_parts}.csv")
    start = time.monotonic()
    lock = TableLock(table)
    lock.acquire()
    try:
        notes = []
        removed = folders.remove_stale_partials(out_root)
        if removed:
            notes.append(f"removed {len(removed)} temporary folders left by interrupted exports (e.g. {removed[0]})")
        results: dict[str, JobResult] = {}
        writer = ResultTable(table)  # refuses a batch.csv that is not SegAlign's before any job runs
        work = functools.partial(run_job, out_root=out_root, options=options, read_options=read_options, redo=redo)
        if scheduler is not None:  # connects and checks the workers now: a cluster that cannot run leaves all as is
            runner = executors.run_on_dask(selected, work, scheduler)
        elif (workers or default_workers()) == 1 or len(selected) <= 1:
            runner = executors.run_here(selected, work)
        else:
            runner = executors.run_in_pool(selected, work, min(workers or default_workers(), len(selected)))
        by_name = {job.name: job for job in selected}
        with contextlib.closing(runner), writer:
            try:
                for result in runner:
                    results[result.name] = result
                    writer.add(result.row(by_name[result.name]))
                    if progress is not None:
                        failed = sum(r.status == "failed" for r in results.values())
                        progress(len(results), len(selected), failed, result)
                if nnunet is not None and num_parts == 1:  # the whole cohort's dataset, from the jobs complete now
                    _, refused = build_dataset(out_root, nnunet, selected, results, read_options.label_table)
                    for name, reason in refused.items():
                        results[name] = dataclasses.replace(results[name], status="failed", error=one_line(
                            reason, MESSAGE_LIMIT))
                        notes.append(f"{name}: {results[name].error}")
            finally:  # also when interrupted: the table, in job order, holds the jobs that ended
                writer.finish([results[job.name].row(job) for job in selected if job.name in results])
        notes += left_partials(out_root)
    finally:
        lock.release()
    ordered = [results[job.name] for job in selected]
    return BatchResult(out_root, table, ordered, time.monotonic() - start, notes)

