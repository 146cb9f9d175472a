"""Errors raised by SegAlign for bad input.

Every :class:`SegAlignError` carries a one-line, user-facing message that names the offending file or DICOM
attribute. The command line prints it as is and exits non-zero; the Slicer module shows it in a dialog.
"""

from __future__ import annotations


class SegAlignError(Exception):
    """Bad input or an impossible request, explained in one line for the user."""


class NoOverlapError(SegAlignError):
    """The segmentation does not cover any pixel of the DICOM series."""
