"""Errors raised by SegAlign for bad input.

Every :class:`SegAlignError` carries a one-line, user-facing message that names the offending file or DICOM
attribute. The command line prints it as is and exits non-zero; the Slicer module shows it in a dialog.

Library callers and command-line users are told different things about the same choice: the library message
names the Python argument (``pass overwrite=True``), the command line names the flag (``use --overwrite``). An
error that mentions an option gives both: ``str(error)`` is the library's wording, :attr:`SegAlignError.cli_message`
the command line's. Long lists (every series in a folder, every problem of a series) go into
:attr:`SegAlignError.details`, printed on the lines after the one-line message, never into the line itself.
"""

from __future__ import annotations

import os
import re
import sys
import contextlib
import threading
import warnings
from typing import Iterator, Sequence


class SegAlignError(ValueError):
    """Bad input or an impossible request, explained in one line for the user.

    It is a :class:`ValueError`, so code that already handles bad values catches it.
    """

    def __init__(self, message: str = "", *, cli_message: str | None = None, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.cli_message: str = cli_message if cli_message is not None else message
        """The same message for the command line (naming flags instead of Python arguments)."""
        self.details: list[str] = list(details)
        """Lines that explain the message further (listings), shown after it."""


class WarningText(str):
    """A warning for the user that names an option, so the library and the command line word it differently:
    the string itself is the library's wording (what export.json and :attr:`ExportResult.warnings` hold),
    :attr:`cli_message` the command line's. Either may go on over several lines: the first says what is wrong and
    what to do, in a short line; the lines after it list what it is about (printed indented after the first).

    It is a :class:`str`, so lists of warnings stay lists of strings; only the command line looks for
    :attr:`cli_message` (:func:`cli_text`)."""

    cli_message: str

    def __new__(cls, message: str, cli_message: str | None = None) -> "WarningText":
        text = super().__new__(cls, message)
        text.cli_message = cli_message if cli_message is not None else message
        return text


def cli_text(warning: str) -> str:
    """A warning as the command line words it (:attr:`WarningText.cli_message`, else the warning itself)."""
    return getattr(warning, "cli_message", warning)


class NoOverlapError(SegAlignError):
    """The segmentation does not cover any pixel of the DICOM series."""


def short(value: object, limit: int = 60) -> str:
    """``value`` as text for quoting in a one-line message: whitespace collapsed, cut to ``limit`` characters.

    A header value may hold 10,000 digits; a message quotes its start and says how long it was, so the line stays
    short whatever the input holds.
    """
    text = " ".join(str(value).split())
    if len(text) <= limit:
        return text
    return f"{text[:max(limit - 1, 1)]}… ({len(text)} characters)"


#: The longest one-line message the command line prints, batch.csv records and series.csv keeps (characters).
MESSAGE_LIMIT = 300


def one_line(text: object, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` on one line (whitespace collapsed), cut to ``limit`` characters with an ellipsis: how the command
    line prints a message."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit - 1] + "…"


def short_path(path: object, limit: int = 160) -> str:
    """A path for a one-line message: whole when short, else its last ``limit`` characters after ``…``."""
    text = str(path)
    return text if len(text) <= limit else "…" + text[-(limit - 1):]


def describe(error: BaseException, limit: int = 200) -> str:
    """What went wrong, in words, for a user message: the operating system's reason for an :class:`OSError`
    (``Permission denied``), else the exception's own text, without its class name (``HeaderDataError``)."""
    if isinstance(error, OSError) and error.strerror:
        text = error.strerror
    elif isinstance(error, MemoryError):
        text = "not enough memory"
    elif isinstance(error, RecursionError):
        text = "nested too deeply"
    else:
        text = str(error) or _words(type(error).__name__)
    return short(text, limit)


def _words(class_name: str) -> str:
    """``UnexpectedEOFError`` as ``unexpected eof``: a class name in words, for exceptions that say nothing else."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", class_name.removesuffix("Error").removesuffix("Exception"))
    return words.lower() or "unknown error"


#: warnings.catch_warnings changes process-wide state, and frames are read on several threads: the blocks that
#: silence warnings take turns, so that none of them restores the filters another one set. Reentrant: blocks nest.
_WARNINGS_LOCK = threading.RLock()


@contextlib.contextmanager
def quiet_warnings() -> Iterator[None]:
    """Silence Python warnings (pydicom's about non-conforming values, numpy's, nibabel's) inside the block: the
    values SegAlign uses are checked, and what matters is said in SegAlign's own words."""
    with _WARNINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


#: One thread at a time silences the process's standard error (a file descriptor, shared by every thread).
_STDERR_LOCK = threading.Lock()


@contextlib.contextmanager
def quiet_decoders() -> Iterator[None]:
    """Silence what compiled decoders (OpenJPEG, libjpeg, GDCM) print on the process's standard error inside the
    block: they write to file descriptor 2 directly, past Python, before SegAlign says in one line what failed.
    Standard error is sent to the null device for the block; Python code writing to it meanwhile (another thread)
    is silenced too, so the block holds only the decoding call."""
    try:
        target = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        yield
        return
    with _STDERR_LOCK:
        try:
            sys.stderr.flush()
        except (AttributeError, ValueError, OSError):
            pass
        saved = os.dup(2)
        try:
            os.dup2(target, 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(target)
