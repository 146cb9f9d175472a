"""The ``segalign`` command line: ``export``, ``batch``, ``jobs``, ``info``, ``check`` and ``demo``.

User errors print one line (``segalign: error: ...``, then any details indented on the lines after it) and exit
with status 1; an export interrupted by Ctrl-C, SIGTERM or SIGHUP exits with 128 + the signal's number (130 for
Ctrl-C) and leaves nothing behind.

The package: :mod:`.parser` (the arguments, and the option objects they give), :mod:`.commands` (one function per
command), :mod:`.progress` (the progress bar), :mod:`.output` (errors, interrupts, warnings and notes); :func:`main`
runs them.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from ..errors import SegAlignError
from ..signals import signals_as_interrupts
from . import commands
from .output import interrupt_line, print_error, write_line
from .parser import add_export_options, build_parser, export_options, parse_arguments, read_options  # noqa: F401

__all__ = ["main", "build_parser", "export_options", "read_options"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    Errors print one line (then their details), exit 1. Ctrl-C, SIGTERM and SIGHUP stop the command as Ctrl-C
    does, with one line and exit status 128 + the signal's number (130 for Ctrl-C).
    """
    args = parse_arguments(sys.argv[1:] if argv is None else argv)
    with signals_as_interrupts():
        try:
            return int(command(args.command)(args) or 0)
        except SegAlignError as error:
            print_error(error.cli_message, error.details)
            return 1
        except OSError as error:  # the file system said no (permissions, a file where a folder should be...)
            where = f"{error.filename}: " if error.filename else ""
            print_error(f"{where}{error.strerror or error}")
            return 1
        except KeyboardInterrupt as interrupt:
            number, line = interrupt_line(interrupt)
            write_line(sys.stderr, line)
            return 128 + number


def command(name: str) -> Callable[[argparse.Namespace], int]:
    """The function that runs the command ``name``, looked up in :mod:`.commands` now (tests may replace one
    there)."""
    return {
        "export": commands.run_export,
        "batch": commands.run_batch_command,
        "jobs": commands.run_jobs,
        "info": commands.run_info,
        "check": commands.run_check,
        "demo": commands.run_demo,
    }[name]
