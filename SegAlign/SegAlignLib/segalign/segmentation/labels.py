"""Label tables: the name and colour of every label value.

Sources, in the order SegAlign prefers them:

1. a user table (``--labels``): CSV ``value,name[,r,g,b]`` (r, g, b in 0..255, optional header row), or a Slicer
   color table (``value name r g b a`` per line, ``#`` comments);
2. the table embedded in the NIfTI header by TotalSegmentator: an extension with code 0 holding XML
   ``<CaretExtension>...<LabelTable><Label Key=".." Red=".." Green=".." Blue="..">name</Label>``, colours in 0..1;
3. ``Segment_<value>`` with a deterministic colour.

The tables SegAlign ships (TotalSegmentator's classes, and their SNOMED CT codes) are in ``data/`` beside this module.
"""

from __future__ import annotations

import codecs
import colorsys
import csv
import math
import os
import re
import stat
import unicodedata
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from ..errors import SegAlignError, describe, short, short_path

Color = tuple[int, int, int]

#: The largest label value a segmentation holds (label volumes are uint8 or uint16).
MAX_LABEL = 65535
#: Longest label name accepted: a longer one is not a name, and would fill every message and the preview page.
MAX_NAME_LENGTH = 1000
#: A label table file larger than this is refused unread (65,536 labels with long names fit in a few MB).
MAX_TABLE_FILE_BYTES = 64 << 20
#: An embedded label table longer than this (characters) is refused unparsed.
MAX_EMBEDDED_TABLE_CHARS = 16 << 20
#: A document type or entity declaration: never processed (entities can expand without bound, "billion laughs",
#: or name other files); the stdlib parser is safe once there are none.
_DECLARATION = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


@dataclass(frozen=True)
class Label:
    """One label value with its name and display colour (RGB, 0..255); a segment read from an RT Structure Set
    also keeps its ROI's number and RTROIInterpretedType (EXTERNAL, ORGAN, PTV...)."""

    value: int
    name: str
    color: Color
    roi_number: int | None = None  #: the ROINumber of the RT Structure Set ROI it was read from
    rt_roi_interpreted_type: str | None = None  #: that ROI's RTROIInterpretedType ("" where the file leaves it empty)

    def as_dict(self) -> dict[str, object]:
        """The JSON form used in labels.json: value, name, color, and for an ROI of an RT Structure Set its
        roi_number and rt_roi_interpreted_type."""
        entry: dict[str, object] = {"value": self.value, "name": self.name, "color": list(self.color)}
        if self.roi_number is not None:
            entry["roi_number"] = self.roi_number
        if self.rt_roi_interpreted_type is not None:
            entry["rt_roi_interpreted_type"] = self.rt_roi_interpreted_type
        return entry


def default_name(value: int) -> str:
    """The name Slicer gives an unnamed label: ``Segment_<value>``."""
    return f"Segment_{value}"


def default_color(value: int) -> Color:
    """A deterministic, well-spread colour for ``value`` (golden-angle hues)."""
    hue = (value * 0.618033988749895) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.65, 0.95)
    return (round(red * 255), round(green * 255), round(blue * 255))


def default_label(value: int) -> Label:
    """``Segment_<value>`` in its default colour."""
    return Label(value, default_name(value), default_color(value))


def parse_caret_label_table(xml_text: str | bytes) -> dict[int, Label]:
    """Labels from a TotalSegmentator/Caret ``LabelTable`` XML document (colours given in 0..1).

    Hostile documents are refused before parsing: one longer than :data:`MAX_EMBEDDED_TABLE_CHARS`, and one that
    declares a DOCTYPE or entities (never expanded or fetched). Names have their whitespace collapsed (a name
    never breaks a line of a message) and are at most :data:`MAX_NAME_LENGTH` characters.
    """
    text = xml_text.decode("utf-8", errors="replace") if isinstance(xml_text, bytes) else str(xml_text)
    if len(text) > MAX_EMBEDDED_TABLE_CHARS:
        raise SegAlignError(
            f"embedded label table is {len(text)} characters long, more than {MAX_EMBEDDED_TABLE_CHARS} "
            "(a table of 65535 labels is far shorter)"
        )
    if _DECLARATION.search(text):
        raise SegAlignError(
            "embedded label table declares a DOCTYPE or entities; SegAlign does not process them (they can expand "
            "without bound or read other files)"
        )
    try:
        root = ElementTree.fromstring(text.strip())
    except ElementTree.ParseError as error:
        raise SegAlignError(f"embedded label table is not valid XML: {short(error, 120)}") from None
    labels = {}
    for element in root.iter("Label"):
        try:
            value = int(element.attrib["Key"])
            channels = [float(element.attrib.get(channel, 0)) for channel in ("Red", "Green", "Blue")]
            if not all(math.isfinite(channel) for channel in channels):
                raise ValueError("colour is not finite")
        except (KeyError, ValueError, OverflowError):
            raise SegAlignError(
                f"embedded label table has a malformed Label element: {short(element.attrib, 120)}"
            ) from None
        color = tuple(round(min(max(channel, 0.0), 1.0) * 255) for channel in channels)
        name = "".join(
            "\ufffd" if unicodedata.category(character) == "Cc" else character  # never a terminal escape
            for character in " ".join((element.text or "").split())
        ) or default_name(value)
        if len(name) > MAX_NAME_LENGTH:
            raise SegAlignError(
                f"embedded label table: the name of label {short(value, 24)} is {len(name)} characters long "
                f"(at most {MAX_NAME_LENGTH})"
            )
        labels[value] = Label(value, name, color)  # type: ignore[arg-type]
    return labels


def embedded_label_table(extensions: Iterable[object]) -> dict[int, Label]:
    """The label table in a NIfTI header's extensions, or an empty dict when there is none.

    ``extensions`` is ``nibabel_image.header.extensions``; only XML with a ``LabelTable`` counts.
    """
    for extension in extensions:
        content = extension.get_content()  # type: ignore[attr-defined]
        if isinstance(content, bytes):
            content = content.decode("utf-8", errors="replace")
        if "<LabelTable" in str(content):
            return parse_caret_label_table(str(content).rstrip("\x00"))
    return {}


#: Label tables shipped with SegAlign, by the name ``--labels`` accepts.
BUILTIN_TABLES = {"totalsegmentator": "totalsegmentator_v2_total.csv"}
#: A segmentation without a table whose labels are all TotalSegmentator 'total' values, and at least this many of
#: them, is named with the built-in TotalSegmentator table (with a warning saying so).
TOTALSEGMENTATOR_MIN_LABELS = 20


def builtin_table(name: str) -> dict[int, Label]:
    """A label table shipped with SegAlign (see :data:`BUILTIN_TABLES`)."""
    from importlib import resources

    resource = resources.files(__package__).joinpath("data", BUILTIN_TABLES[name])
    with resources.as_file(resource) as path:
        return read_label_file(path)


def shipped_text(name: str) -> str:
    """The text of the file ``name`` shipped in ``data/`` beside this module (the label tables, TotalSegmentator's
    SNOMED CT mapping), found relative to this package so that it is the same inside Slicer (where the engine is
    ``SegAlignLib.segalign``) and outside."""
    from importlib import resources

    return resources.files(__package__).joinpath("data", name).read_text(encoding="utf-8")


def guess_totalsegmentator(values: Iterable[int]) -> dict[int, Label]:
    """The built-in TotalSegmentator v2 table if ``values`` look like its 'total' output, else an empty dict."""
    values = set(values) - {0}
    table = builtin_table("totalsegmentator")
    if len(values) >= TOTALSEGMENTATOR_MIN_LABELS and values <= set(table):
        return table
    return {}


def read_label_file(path: str | os.PathLike[str]) -> dict[int, Label]:
    """Read a user label table: CSV ``value,name[,r,g,b]`` or a Slicer color table (``value name r g b a``), or
    the name of a built-in table (``totalsegmentator``)."""
    if str(path).lower() in BUILTIN_TABLES and not Path(path).exists():
        return builtin_table(str(path).lower())
    path = Path(path)
    text = _read_table_text(path)
    where_file = short_path(path)
    rows = (
        _csv_rows(text, where_file) if path.suffix.lower() == ".csv" or "," in text.split("\n", 1)[0]
        else _ctbl_rows(text)
    )
    labels: dict[int, Label] = {}
    for line_number, fields in rows:
        where = f"{where_file} line {line_number}"
        try:
            value = int(fields[0])
        except ValueError:
            if line_number == rows[0][0] and not _is_number(fields[0]):  # a header row
                continue
            raise SegAlignError(f"{where}: label value '{short(fields[0])}' is not an integer") from None
        if not 0 <= value <= MAX_LABEL:
            raise SegAlignError(f"{where}: label value {short(value, 24)} is outside 0..{MAX_LABEL}")
        name = " ".join(fields[1].split()) if len(fields) >= 2 else ""
        if not name:
            raise SegAlignError(f"{where}: a name is needed after the value")
        if len(name) > MAX_NAME_LENGTH:
            raise SegAlignError(f"{where}: the name is {len(name)} characters long (at most {MAX_NAME_LENGTH})")
        if any(unicodedata.category(character) == "Cc" for character in name):
            escaped = name.encode("unicode_escape").decode("ascii")
            raise SegAlignError(f"{where}: the name '{short(escaped)}' holds control characters")
        color = default_color(value)
        if len(fields) >= 5:
            numbers = [float(v) if _is_number(v) else None for v in fields[2:5]]
            if any(n is None or not n.is_integer() for n in numbers):
                raise SegAlignError(f"{where}: colour '{short(','.join(fields[2:5]))}' is not three integers")
            color = tuple(int(n) for n in numbers)  # type: ignore[arg-type, assignment]
            if not all(0 <= channel <= 255 for channel in color):
                raise SegAlignError(f"{where}: colour {color} is outside 0..255")
        elif len(fields) > 2:
            raise SegAlignError(f"{where}: expected value,name or value,name,r,g,b")
        labels[value] = Label(value, name, color)
    if not labels:
        raise SegAlignError(f"label table {where_file} has no labels")
    return labels


def _read_table_text(path: Path) -> str:
    """The text of a label table file, refusing a path that is missing, not a file, unreadable or huge."""
    where = short_path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise SegAlignError(f"label table not found: {where}") from None
    except OSError as error:
        raise SegAlignError(f"label table {where} cannot be read: {describe(error)}") from None
    if stat.S_ISDIR(info.st_mode):
        raise SegAlignError(f"label table {where} is a folder, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise SegAlignError(f"label table {where} is not a regular file (a device or FIFO?)")
    if info.st_size > MAX_TABLE_FILE_BYTES:
        raise SegAlignError(
            f"label table {where} is {info.st_size} bytes, more than {MAX_TABLE_FILE_BYTES} (a table of 65535 "
            "labels is far smaller)"
        )
    try:
        data = path.read_bytes()
    except OSError as error:
        raise SegAlignError(f"label table {where} cannot be read: {describe(error)}") from None
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # a table saved as "Unicode" on Windows
        return data.decode("utf-16", errors="replace")
    return data.decode("utf-8-sig", errors="replace")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _csv_rows(text: str, where: str) -> list[tuple[int, list[str]]]:
    """The rows of a CSV table with the line each starts on; comments and blank lines left out.

    A quoted field may not run on past the end of its line: an unterminated quote would otherwise merge the rows
    after it into one name, silently. Malformed quoting and over-long fields are refused with the line number.
    """
    reader = csv.reader(text.splitlines(), strict=True)
    rows = []
    start = 1
    try:
        for row in reader:
            if reader.line_num > start:
                raise SegAlignError(
                    f"{where} line {start}: a quote opened on this line is not closed on it (the field runs on to "
                    f"line {reader.line_num}); a label name cannot span lines"
                )
            if row and row[0].strip() and not row[0].lstrip().startswith("#"):
                rows.append((start, row))
            start = reader.line_num + 1
    except csv.Error as error:
        if reader.line_num > start:
            reason = f"a quote opened on this line is never closed (the file ends at line {reader.line_num})"
        elif "unexpected end of data" in str(error):
            reason = "a quote opened on this line is never closed (the file ends on it)"
        elif "field larger than field limit" in str(error):
            reason = f"a field is longer than {csv.field_size_limit()} characters"
        else:
            reason = f"not valid CSV ({describe(error, 80)})"
        raise SegAlignError(f"{where} line {start}: {reason}") from None
    return rows


def _ctbl_rows(text: str) -> list[tuple[int, list[str]]]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) >= 6:
            fields = fields[:5]  # drop alpha
        rows.append((number, fields))
    return rows


def complete_table(values: Iterable[int], *tables: Mapping[int, Label]) -> dict[int, Label]:
    """A label for every value in ``values`` (0, background, excluded): first table that names it, else default.

    Labels named by the tables but absent from ``values`` are kept too, so a table's full vocabulary survives.
    """
    result: dict[int, Label] = {}
    for value in sorted(set(int(v) for v in values) | {v for table in tables for v in table}):
        if value == 0:
            continue
        result[value] = next((table[value] for table in tables if value in table), default_label(value))
    return result
