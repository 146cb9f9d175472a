"""Where a batch's jobs run, each an iterator of results as jobs end (closing it stops what still runs):

* :func:`run_here`: in this process, one after the other;
* :func:`run_in_pool`: in a pool of worker processes on this machine, with the workers' lifecycle (how they start,
  what SIGTERM does in them, how they end when the batch process is gone, and a worker that dies);
* :func:`run_on_dask`: on an existing Dask cluster.

Each runs ``work(job)`` for every job, ``work`` being a picklable function of one :class:`~segalign.batch.Job`
(:func:`~segalign.batch.run_batch` gives :func:`~segalign.batch.run_job` with the batch's options): the executors
know nothing of exports.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import uuid
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from ..errors import MESSAGE_LIMIT, SegAlignError, describe, short
from ..export import locks
from ..signals import stop_on_terminate, terminate_self
from ..version import __version__
from .jobs import Job
from .results import JobResult

if TYPE_CHECKING:
    import multiprocessing.context

#: What an executor runs for each job (picklable: it travels to worker processes and Dask workers).
Work = Callable[[Job], JobResult]


def run_here(jobs: Sequence[Job], work: Work) -> Iterator[JobResult]:
    """The jobs in this process, one after the other."""
    for job in jobs:
        yield work(job)


def run_in_pool(jobs: Sequence[Job], work: Work, workers: int) -> Iterator[JobResult]:
    """The jobs on a pool of ``workers`` processes, results as they end.

    The workers start with SegAlign imported (see :func:`pool_context`) and end when the batch process does,
    however it ends. A worker that dies (killed, out of memory) breaks the pool: a new one runs the jobs that were
    in flight one at a time, so that only a job whose worker dies while it runs alone, :data:`WORKER_DEATHS` times,
    fails.
    Interrupted (or closed early), the workers get SIGTERM, which stops their export the way Ctrl-C stops
    ``segalign export``: what it wrote is removed.
    """
    from concurrent.futures.process import BrokenProcessPool

    context = pool_context()
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
                pending[pool.submit(_pool_job, work, job)] = job

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


def pool_context() -> "multiprocessing.context.BaseContext":
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


def _pool_job(work: Work, job: Job) -> JobResult:
    """``work(job)`` in a pool worker: a SIGTERM during the job stops it (its export removes what it wrote), then
    ends the worker."""
    global _in_job
    _in_job = True
    try:
        return work(job)
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
        while locks.pid_running(batch_pid):
            time.sleep(PARENT_POLL)
        terminate_self()

    threading.Thread(target=watch, name="segalign-batch-watch", daemon=True).start()


#: How often (seconds) a pool worker checks that its batch is still running.
PARENT_POLL = 0.5


def run_on_dask(jobs: Sequence[Job], work: Work, scheduler: str) -> Iterator[JobResult]:
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
    return _DaskRun(client, _dask_results(client, jobs, work, as_completed))


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


def _dask_results(client: object, jobs: Sequence[Job], work: Work, as_completed: Callable) -> Iterator[JobResult]:
    futures = []
    try:
        token = uuid.uuid4().hex[:8]
        by_key = {}
        for job in jobs:
            future = client.submit(work, job, pure=False, key=f"segalign-{job.name}-{token}")  # type: ignore[attr-defined]
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
