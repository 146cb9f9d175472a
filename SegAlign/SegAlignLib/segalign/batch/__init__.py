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

The package, module by module: :mod:`.jobs` (jobs and jobs tables), :mod:`.discovery` (jobs from a folder of
studies), :mod:`.fingerprint` (what an export was made from, and whether it is complete), :mod:`.results` (job and
batch results, batch.csv and its lock), :mod:`.executors` (in process, the process pool, Dask) and :mod:`.run`
(:func:`run_job`, :func:`run_batch`).
"""

# The names other modules import from ``segalign.batch`` (the public API is __all__).
from .discovery import find_jobs
from .fingerprint import ADDED_OPTION_DEFAULTS, FINGERPRINT_VERSION, completed_frames, job_fingerprint  # noqa: F401
from .jobs import JOB_COLUMNS, Job, name_jobs, read_jobs, write_jobs  # noqa: F401
from .results import RESULT_COLUMNS, BatchProgress, BatchResult, JobResult  # noqa: F401
from .run import default_workers, run_batch, run_job  # noqa: F401

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
