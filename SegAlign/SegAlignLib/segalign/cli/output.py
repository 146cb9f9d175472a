"""What the command line prints besides its results: errors on one line (``segalign: error: ...``, then any details
indented, :data:`DETAIL_LIMIT` lines at most), the line an interrupt gets, warnings (a line, then any details
indented) and notes (silenced by ``--quiet``), and :func:`write_line`, which prints anything (a path of undecodable bytes) without failing."""

from __future__ import annotations

import signal
import sys
from typing import Sequence, TextIO

from ..errors import cli_text, one_line
from ..signals import Interrupted, signal_number

#: The most detail lines printed after an error's line: a listing of 5,000 series never floods the terminal (the
#: line itself is cut at :data:`~segalign.errors.MESSAGE_LIMIT` characters).
DETAIL_LIMIT = 20


def write_line(stream: TextIO, line: str) -> None:
    """Write a line that may hold anything (a path of undecodable bytes, characters the terminal cannot show):
    what the stream's encoding cannot represent is written as backslash escapes rather than failing."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        line = line.encode(encoding, "backslashreplace").decode(encoding, "replace")
    except LookupError:
        line = line.encode("ascii", "backslashreplace").decode("ascii")
    stream.write(line + "\n")
    stream.flush()


def print_error(message: str, details: Sequence[str] = ()) -> None:
    """``segalign: error: MESSAGE`` on one line, then each detail indented on its own line (at most
    :data:`DETAIL_LIMIT`)."""
    write_line(sys.stderr, f"segalign: error: {one_line(message)}")
    shown = details if len(details) <= DETAIL_LIMIT else details[:DETAIL_LIMIT - 1]
    for detail in shown:
        write_line(sys.stderr, f"  {one_line(detail)}")
    if len(shown) < len(details):
        write_line(sys.stderr, f"  ... and {len(details) - len(shown)} more")


class CommandInterrupted(KeyboardInterrupt):
    """An interrupt (``signum``) that stopped a command once it had done something the user should know of:
    ``outcome`` says what (``the batch stopped; run the same command again ...``). A command raises it from its own
    ``except KeyboardInterrupt``; :func:`interrupt_line` prints it."""

    def __init__(self, signum: int, outcome: str) -> None:
        super().__init__(signum)
        self.signum = signum
        self.outcome = outcome


def interrupt_line(interrupt: KeyboardInterrupt) -> tuple[int, str]:
    """The signal behind ``interrupt`` and the one line the command line prints for it: what the command said it
    leaves (:class:`CommandInterrupted`), the export an interrupt found complete
    (:class:`~segalign.signals.Interrupted`), or that nothing was written."""
    if isinstance(interrupt, CommandInterrupted):
        number, outcome = interrupt.signum, interrupt.outcome
    elif isinstance(interrupt, Interrupted):
        number, outcome = interrupt.signum, f"the export in {interrupt.written} is complete"
    else:
        number, outcome = signal_number(interrupt), "nothing was written"
    by = "" if number == signal.SIGINT else f" by {signal.Signals(number).name}"
    return int(number), f"segalign: interrupted{by}; {outcome}"


class Reporter:
    """A command's warnings and notes (on ``stream``, stderr by default) and its summary (on stdout), all silenced
    by ``--quiet``."""

    def __init__(self, quiet: bool, stream: TextIO | None = None) -> None:
        self.quiet = quiet
        self.stream = stream or sys.stderr

    def warn(self, message: str) -> None:
        """``segalign: warning: ...``, in the command line's wording (:func:`~segalign.errors.cli_text`); the
        lines after a warning's first are printed indented below it."""
        if not self.quiet:
            first, *more = cli_text(message).split("\n")
            write_line(self.stream, f"segalign: warning: {first}")
            for line in more:
                write_line(self.stream, f"  {line}")

    def note(self, message: str) -> None:
        if not self.quiet:
            write_line(self.stream, f"segalign: note: {message}")

    def say(self, message: str) -> None:
        if not self.quiet:
            write_line(sys.stdout, message)
