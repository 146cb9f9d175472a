"""Signals and interrupts, in one place: what a Ctrl-C, SIGTERM or SIGHUP does while SegAlign works.

- :func:`signals_as_interrupts`: while a command runs, SIGTERM and SIGHUP raise :class:`Signalled`, a
  ``KeyboardInterrupt``, so that whatever cleans up after Ctrl-C cleans up after them too.
- :func:`signals_held`: while an export is published (a few renames), signals wait and are delivered after it.
- :class:`Interrupted`: an interrupt that arrived once an export was complete says which folder holds it.
- :func:`reraise_interrupt`: a Ctrl-C that a library turned into another error (pydicom makes one that arrives
  while it reads a sequence an OSError) is raised as what it is.
- :func:`stop_on_terminate`: in a batch worker process, SIGTERM stops the job as Ctrl-C would; Ctrl-C itself is
  left to the batch.

Handlers can be changed only in the main thread; elsewhere these do nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path
from typing import Callable, Iterator

#: The signals that stop a command: Ctrl-C, a scheduler's timeout, a closed terminal.
STOPPING = ("SIGINT", "SIGTERM", "SIGHUP")


class Signalled(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class Interrupted(KeyboardInterrupt):
    """An interrupt (``signum``) that arrived after the export in ``written`` was complete and in place."""

    def __init__(self, signum: int, written: Path) -> None:
        super().__init__(signum)
        self.signum = signum
        self.written = written


def signal_number(interrupt: BaseException) -> int:
    """The signal behind an interrupt: its ``signum`` where it has one, else SIGINT (a plain Ctrl-C)."""
    return int(getattr(interrupt, "signum", signal.SIGINT)) if isinstance(interrupt, (Signalled, Interrupted)) \
        else int(signal.SIGINT)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGHUP raise :class:`Signalled`; a second one while cleaning up ends the
    process at once, as it would have.

    Only for signals left at their default action (``nohup``'s ignored SIGHUP stays ignored, an embedding
    application's handler stays); the previous handlers come back afterwards.
    """
    if not _in_main_thread():
        yield
        return
    received: list[int] = []

    def handler(signum: int, frame: object) -> None:
        if received:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        received.append(signum)
        raise Signalled(signum)

    previous = {}
    for name in ("SIGTERM", "SIGHUP"):
        number = getattr(signal, name, None)
        if number is not None and signal.getsignal(number) == signal.SIG_DFL:
            previous[number] = signal.signal(number, handler)
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold back SIGINT, SIGTERM and SIGHUP while the block runs, then deliver them to their handlers, once each,
    in order. For signals ignored or handled outside Python nothing changes."""
    if not _in_main_thread():
        yield
        return
    received: list[int] = []
    previous: dict[int, object] = {}
    for name in STOPPING:
        number = getattr(signal, name, None)
        handler = signal.getsignal(number) if number is not None else None
        if handler is None or handler == signal.SIG_IGN:
            continue
        previous[number] = signal.signal(number, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for number in dict.fromkeys(received):
            signal.raise_signal(number)


def reraise_interrupt(error: BaseException) -> None:
    """Raise the Ctrl-C (or SIGTERM) behind ``error``, if any (``error``'s context chain, 20 links at most)."""
    cause = error.__context__
    for _ in range(20):
        if cause is None:
            return
        if isinstance(cause, KeyboardInterrupt):
            raise cause
        cause = cause.__context__


def stop_on_terminate(in_job: Callable[[], bool]) -> None:
    """In a worker process: ignore Ctrl-C (the batch handles it and stops its workers with SIGTERM); the first
    SIGTERM raises ``KeyboardInterrupt`` while ``in_job()`` (so that the job's export cleans up), and otherwise ends
    the process at once; a second one is ignored."""

    def stop(signum: int, frame: object) -> None:
        signal.signal(signum, signal.SIG_IGN)  # once
        if not in_job():
            os._exit(128 + signum)
        raise KeyboardInterrupt(f"stopped by signal {signum}")

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, stop)


def terminate_self() -> None:
    """End this process as SIGTERM does (a worker whose batch is gone)."""
    os.kill(os.getpid(), signal.SIGTERM)
