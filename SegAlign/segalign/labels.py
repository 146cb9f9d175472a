"""Label tables: the name and colour of every label value.

Sources, in the order SegAlign prefers them:

1. a user table (``--labels``): CSV ``value,name[,r,g,b]`` (r, g, b in 0..255, optional header row), or a Slicer
   color table (``value name r g b a`` per line, ``#`` comments);
2. the table embedded in the NIfTI header by TotalSegmentator: an extension with code 0 holding XML
   ``<CaretExtension>...<LabelTable><Label Key=".." Red=".." Green=".." Blue="..">name</Label>``, colours in 0..1;
3. ``Segment_<value>`` with a deterministic colour.
"""

from __future__ import annotations

import colorsys
import csv
import os
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from .errors import SegAlignError

Color = tuple[int, int, int]


@dataclass(frozen=True)
class Label:
    """One label value with its name and display colour (RGB, 0..255)."""

    value: int
    name: str
    color: Color

    def as_dict(self) -> dict[str, object]:
        """The JSON form used in labels.json: value, name, color."""
        return {"value": self.value, "name": self.name, "color": list(self.color)}


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
    """Labels from a TotalSegmentator/Caret ``LabelTable`` XML document (colours given in 0..1)."""
    try:
        root = ElementTree.fromstring(xml_text.strip() if isinstance(xml_text, (str, bytes)) else xml_text)
    except ElementTree.ParseError as error:
        raise SegAlignError(f"embedded label table is not valid XML: {error}") from None
    labels = {}
    for element in root.iter("Label"):
        try:
            value = int(element.attrib["Key"])
            color = tuple(
                max(0, min(255, round(float(element.attrib.get(channel, 0)) * 255)))
                for channel in ("Red", "Green", "Blue")
            )
        except (KeyError, ValueError):
            raise SegAlignError(f"embedded label table has a malformed Label element: {element.attrib}") from None
        name = (element.text or "").strip() or default_name(value)
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
    if not path.is_file():
        raise SegAlignError(f"label table not found: {path}")
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    rows = _csv_rows(text) if path.suffix.lower() == ".csv" or "," in text.split("\n", 1)[0] else _ctbl_rows(text)
    labels: dict[int, Label] = {}
    for line_number, fields in rows:
        where = f"{path} line {line_number}"
        try:
            value = int(fields[0])
        except ValueError:
            if line_number == rows[0][0] and not _is_number(fields[0]):  # a header row
                continue
            raise SegAlignError(f"{where}: label value {fields[0]!r} is not an integer") from None
        if not 0 <= value <= 65535:
            raise SegAlignError(f"{where}: label value {value} is outside 0..65535")
        if len(fields) < 2 or not fields[1].strip():
            raise SegAlignError(f"{where}: a name is needed after the value")
        color = default_color(value)
        if len(fields) >= 5:
            numbers = [float(v) if _is_number(v) else None for v in fields[2:5]]
            if any(n is None or not n.is_integer() for n in numbers):
                raise SegAlignError(f"{where}: colour {fields[2:5]} is not three integers")
            color = tuple(int(n) for n in numbers)  # type: ignore[arg-type, assignment]
            if not all(0 <= channel <= 255 for channel in color):
                raise SegAlignError(f"{where}: colour {color} is outside 0..255")
        elif len(fields) > 2:
            raise SegAlignError(f"{where}: expected value,name or value,name,r,g,b")
        labels[value] = Label(value, fields[1].strip(), color)
    if not labels:
        raise SegAlignError(f"label table {path} has no labels")
    return labels


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _csv_rows(text: str) -> list[tuple[int, list[str]]]:
    reader = csv.reader(text.splitlines())
    return [
        (number, row)
        for number, row in enumerate(reader, start=1)
        if row and row[0].strip() and not row[0].lstrip().startswith("#")
    ]


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
