"""The ``segalign`` command's entry point: the command line, and a Ctrl-C while it is still starting.

The command line imports NumPy, pydicom and nibabel before it can handle an interrupt; a Ctrl-C in that first
fraction of a second gets the same one line and exit status (130) as a Ctrl-C later, not a traceback.
"""

from __future__ import annotations

import sys


def run() -> int:
    """Run ``segalign`` with ``sys.argv``; returns the exit status."""
    try:
        from .cli import main

        return main()  # interrupts once the command runs are its own; this catches those before (imports, parsing)
    except KeyboardInterrupt:
        sys.stderr.write("segalign: interrupted; nothing was written\n")
        return 130
