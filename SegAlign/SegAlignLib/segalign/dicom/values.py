"""Header values as numbers, or a refusal that quotes them: what every check of a DICOM header builds on.

A header may hold anything where a number belongs: ``inf``, ``12.5`` for a count, 10,000 digits, several values,
raw bytes pydicom could not convert. These functions turn a value into the integer SegAlign needs, or say what it
holds instead (quoted as DICOM writes it, cut short by :func:`segalign.errors.short`), naming the file.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.multival import MultiValue

from ..errors import SegAlignError, short, short_path


def value_text(value: Any) -> str:
    """A header value as DICOM writes it (several values joined by backslashes), for quoting in a message."""
    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(str(item) for item in value)
    if isinstance(value, (bytes, bytearray)):
        return value.decode("latin-1")
    return str(value)


def big_number(number: int) -> str:
    """A count for a message: as is up to 12 digits, else like ``1.00e308`` (a header may claim anything)."""
    text = str(number)
    return text if len(text) <= 12 else f"{text[0]}.{text[1:3]}e{len(text) - 1}"


def optional_int(value: Any) -> int | None:
    """``value`` as an int; None when absent or not one integer (garbled, fractional, infinite, several values)."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (str, bytes)):
        try:
            return int(value)
        except ValueError:  # "12.0", or more digits than int() converts: as a number, below
            pass
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return int(number) if math.isfinite(number) and number.is_integer() else None


def odd_int(value: Any) -> bool:
    """True for a value that is there but is not one integer (an InstanceNumber that cannot be used)."""
    return value is not None and value != "" and optional_int(value) is None


def required_int(dataset: pydicom.Dataset, keyword: str, path: Path) -> int:
    """A positive integer attribute (Rows, Columns), or a :class:`SegAlignError` saying what it holds instead."""
    raw = dataset.get(keyword)
    if raw is None or raw == "":
        raise SegAlignError(f"{short_path(path)}: {keyword} is missing")
    value = optional_int(raw)
    if value is None or value <= 0:
        raise SegAlignError(f"{short_path(path)}: {keyword} must be a positive integer, got '{short(value_text(raw))}'")
    return value


def number_of_frames(dataset: pydicom.Dataset, path: Path) -> int:
    """NumberOfFrames (1 when absent), refusing zero, negative and non-integer values: frames never vanish."""
    raw = dataset.get("NumberOfFrames")
    if raw is None or raw == "":
        return 1
    value = optional_int(raw)
    if value is None or value < 1:
        raise SegAlignError(
            f"{short_path(path)}: NumberOfFrames must be a positive integer, got '{short(value_text(raw))}'"
        )
    return value


def sequence_of(dataset: pydicom.Dataset, keyword: str, where: str) -> pydicom.Sequence | None:
    """The sequence ``keyword`` of ``dataset`` (None when absent), refusing a value that is not a sequence."""
    if keyword not in dataset:
        return None
    value = dataset[keyword].value
    if isinstance(value, pydicom.Sequence):
        return value
    raise SegAlignError(f"{where}: {keyword} is not a sequence of items (it holds '{short(value_text(value))}')")
