"""What a batch run gives back and leaves on disk: :class:`JobResult` (how each job ended), :class:`BatchResult`
(the whole run), batch.csv (:class:`ResultTable`: a row per job as it ends, rewritten in job order at the end),
the lock that lets one batch at a time write it (:class:`TableLock`), and the notes on temporary folders left
(:func:`left_partials`)."""

from __future__ import annotations

import contextlib
import csv
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from ..errors import SegAlignError
from ..export import PARTIAL_MARKER, locks
from ..files import has_csv_header
from .jobs import Job

#: The columns of batch.csv, one row per job.
RESULT_COLUMNS = ("name", "status", "frames", "seconds", "error", "warnings", "dicom_dir", "segmentation", "series")

#: What :func:`~segalign.batch.run_batch` calls after each job: (jobs done, jobs in this run, failed so far, the
#: job's result).
BatchProgress = Callable[[int, int, int, "JobResult"], None]


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
        """One line: how many jobs ended how, how many exported with warnings, in how long, and where the table
        (with each job's warnings counted) is."""
        warned = sum(1 for result in self.results if result.status == "ok" and result.warnings)
        with_warnings = f" ({warned} with warnings: see the warnings column)" if warned else ""
        return (
            f"{len(self.results)} jobs: {self.count('ok')} exported{with_warnings}, {self.count('skipped')} skipped "
            f"(complete), {self.count('failed')} failed, in {self.seconds:.1f} s; table: {self.table}"
        )



class TableLock(locks.OutputLock):
    """One batch at a time writes a batch table (parts write their own)."""

    def busy_error(self, owner: dict | None) -> SegAlignError:
        who = f" (pid {owner.get('pid')} on {owner.get('host')}, since {owner.get('started')})" if owner else ""
        return SegAlignError(
            f"another batch writing {self.output_dir} is running{who}; wait for it, or give another output folder "
            f"(if none is running, delete {self.path})"
        )


class ResultTable:
    """batch.csv: rows appended (and flushed) as jobs end, then rewritten in job order, atomically, at the end.

    A batch.csv that SegAlign did not write (its header says so) is never replaced.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.is_symlink() or (path.exists() and not has_csv_header(path, RESULT_COLUMNS)):
            raise SegAlignError(f"{path} exists and is not a SegAlign batch table; it is never replaced: choose "
                                "another output folder")

    def __enter__(self) -> "ResultTable":
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


def left_partials(out_root: Path) -> list[str]:
    """Notes on the temporary folders of exports still in ``out_root``: running, or left by a process of another
    host (or container) that SegAlign cannot prove is dead, so they are not removed."""
    left = []
    with contextlib.suppress(OSError):
        for entry in sorted(out_root.iterdir()):
            if re.fullmatch(r"\..+\.partial-\w+", entry.name) and entry.is_dir():
                owner = None
                with contextlib.suppress(OSError, UnicodeDecodeError):
                    owner = locks.read_owner((entry / PARTIAL_MARKER).read_text(encoding="utf-8"))
                who = f"pid {owner.get('pid')} on {owner.get('host')}" if owner else "an unknown process"
                left.append(f"temporary folder {entry} (written by {who}) was left in place: delete it once that "
                            "export is no longer running")
    return left
