"""The command line's one progress bar (:class:`ProgressBar`), for the frames of an export, the series of
``export --all-series``, the demo and the jobs of a batch (:func:`job_progress` puts a batch's failures, rate and
time left on it).

Tests may patch :meth:`ProgressBar.update`: the commands give the bar's ``update`` to the library as its progress
callback, so a patched one runs at every frame (and can stop the export there).
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Callable, TextIO

from .output import write_line

if TYPE_CHECKING:
    from ..batch import BatchProgress, JobResult


class ProgressBar:
    """``[##########....................] 12/36 frames`` on one line of a terminal, redrawn in place.

    Drawn only when ``stream`` (stderr by default) is a terminal and not ``quiet``. ``update`` redraws at most once
    every ``interval`` seconds, but always for the last step (``done == total``) and for the first after a
    :meth:`message`. :meth:`message` prints a line of its own (when not ``quiet``, terminal or not), ending the
    bar's line first; :meth:`finish` ends the bar's line. ``clock`` is where the time comes from (tests give their
    own).
    """

    WIDTH = 30  #: characters between the brackets

    def __init__(
        self, unit: str, *, quiet: bool = False, stream: TextIO | None = None, interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.unit = unit
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.enabled = not quiet and self.stream.isatty()
        self.interval = interval
        self.clock = clock
        self.start = clock()  #: when the bar was made (for rates)
        self._last = float("-inf")
        self._shown = False

    def update(self, done: int, total: int, detail: str = "") -> None:
        """Show ``done`` of ``total`` (``detail`` follows the count)."""
        if not self.enabled:
            return
        now = self.clock()
        if done < total and now - self._last < self.interval:
            return
        self._last = now
        filled = self.WIDTH * done // max(total, 1)
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{total} {self.unit}{detail}")
        self.stream.flush()
        self._shown = True

    def message(self, line: str) -> None:
        """``line`` on a line of its own, below the bar."""
        if self.quiet:
            return
        self.finish()
        write_line(self.stream, line)

    def finish(self) -> None:
        """End the bar's line (if it is shown): what is written next starts on a line of its own."""
        if self._shown:
            self.stream.write("\n")
            self._shown = False
            self._last = float("-inf")


def job_progress(bar: ProgressBar) -> BatchProgress:
    """:func:`~segalign.batch.run_batch`'s progress callback on ``bar`` (its unit ``jobs``): each failed job's line
    (``segalign: job NAME failed: ERROR``), then jobs done, failed so far, the rate and the time left."""

    def update(done: int, total: int, failed: int, result: JobResult) -> None:
        if result.status == "failed":
            bar.message(f"segalign: job {result.name} failed: {result.error}")
        elapsed = max(bar.clock() - bar.start, 1e-6)
        rate = done / elapsed
        left = (total - done) / rate if rate > 0 else 0.0
        bar.update(done, total, f", {failed} failed, {rate * 60:.1f} jobs/min, {duration(left)} left ")

    return update


def duration(seconds: float) -> str:
    """``1:02:03`` or ``2:03``."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
