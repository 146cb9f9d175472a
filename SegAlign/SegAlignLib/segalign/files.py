"""The file helpers every output uses: JSON and CSV tables, and file names made from untrusted text.

* :func:`write_json` (labels.json, export.json, the temporary folder's marker), :func:`write_csv` (manifest.csv,
  tiles.csv), :func:`has_csv_header` (whether a table is one SegAlign wrote and may rewrite).
* :func:`safe_name`, :func:`unique_safe_names`: file and folder names from label names, job names, series
  descriptions.

This module is the documented seam where tests inject disk faults (a full disk, a folder that cannot be written):
they patch its functions (``monkeypatch.setattr(segalign.files, "write_json", ...)``). So callers call them
module-qualified, ``files.write_json(...)`` after ``from .. import files``, never ``from .files import
write_json``: a caller that moves keeps reaching the patched function, and a test's fault cannot silently switch
off.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Sequence

from .errors import SegAlignError


def write_json(path: Path, content: object) -> None:
    """``content`` as indented JSON; refuses NaN and Infinity, which are not JSON."""
    try:  # allow_nan=False: inputs are checked finite, so this never refuses in practice
        text = json.dumps(content, indent=2, allow_nan=False)
    except ValueError as error:
        raise SegAlignError(f"{path.name} cannot be written: a value is not a finite number ({error})") from None
    path.write_text(text + "\n", encoding="utf-8")


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    """A CSV table (valid UTF-8) with a header of ``columns`` and a line per row (a column a row lacks is left
    empty); text holding a file name that is not valid UTF-8 is written as :func:`utf8_text` gives it."""
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns)
        writer.writeheader()
        writer.writerows({key: utf8_text(value) if isinstance(value, str) else value for key, value in row.items()}
                         for row in rows)


def utf8_text(text: str) -> str:
    """``text`` as valid UTF-8, a file name's bytes that are not UTF-8 (Python's surrogate escapes) written as
    ``\\xNN``: ``b"caf\\xe9.dcm"`` on disk is ``caf\\xe9.dcm`` in a table, which still names the file
    (``codecs.escape_decode(name.encode())[0]`` gives its bytes back, unless the name holds a backslash itself)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def has_csv_header(path: Path, columns: Sequence[str]) -> bool:
    """Whether the CSV file ``path`` starts with exactly the header ``columns`` (a table SegAlign wrote, which it may
    rewrite; any other file of that name is the user's)."""
    try:
        with path.open(encoding="utf-8", newline="") as stream:
            return next(csv.reader(stream), None) == list(columns)
    except (OSError, UnicodeDecodeError, csv.Error):
        return False


def safe_name(text: str, fallback: str = "unnamed") -> str:
    """A file or folder name made from untrusted text: letters, digits, ``._-`` only, no leading dot, <= 80 chars."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._ ")
    return cleaned[:80] or fallback


def unique_safe_names(names: list[str]) -> list[str]:
    """:func:`safe_name` of each name, made unique without regard to case (``liver``, ``liver_2``...)."""
    seen: dict[str, int] = {}
    result = []
    for name in names:
        base = safe_name(name)
        candidate = base
        while candidate.lower() in seen:
            seen[base.lower()] += 1
            candidate = f"{base}_{seen[base.lower()]}"
        seen[candidate.lower()] = 1
        result.append(candidate)
    return result
