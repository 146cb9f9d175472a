"""The preview page: ``OUT_DIR/index.html``, a small review viewer of one series in native order.

No network access and no server are needed: the page opens from the file system in any current browser. It embeds
the frames' geometry and the legend as JSON and loads each frame's stored values and label image from
``viewer/NNNNN.js`` (see :func:`frame_script`), then draws the frame itself: windowed grey with the labels blended
or outlined, scaled to the space beside a fixed side panel, zoomed and panned, with the patient's directions at the
edges and a readout (row, column, LPS position, value, label) under the cursor. Every control is described in the
page's own help line.

Where segments overlap, each frame's data holds every label layer; the page draws the first as above and the
others as outlines on top (as the overlay PNGs are drawn, :mod:`.render`), and the readout names every segment
under the cursor.

Everything that comes from the input (label names, DICOM descriptions, paths, warnings) is inert in the page,
whatever it holds: text in the HTML is escaped, and the embedded JSON has ``<``, ``>``, ``&`` and U+2028/U+2029
written as ``\\u`` escapes, so no ``</script>``, ``<!--`` or line separator can end or change the script. File
names that are not valid UTF-8 (surrogate escapes) are shown with replacement characters.

The page itself (HTML, style, script) is :data:`.page.PAGE`. A documented seam: tests inject disk faults by patching
:func:`write_preview`, which the PNG folder writer calls module-qualified (``preview.write_preview(...)``).
"""

from __future__ import annotations

import base64
import html
import json
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...dicom import Frame
from ...geometry import direction_letters
from ...dicom import FramePixels, range_window
from .page import PAGE


def frame_script(index: int, stored: np.ndarray, labels: np.ndarray, more: Sequence[np.ndarray] = ()) -> str:
    """The page's data of one frame, as a script file (a page opened from the file system may load scripts, but
    may neither fetch files nor read the pixels of its images): a call ``segalignFrame(index, kind, values,
    labelKind, labels)``, and where segments overlap ``segalignFrame(index, kind, values, labelKind, labels,
    [[labelKind, labels], ...])`` with the further layers ``more`` (see :mod:`segalign.writers.images`).

    ``values`` are the frame's stored values. 16-bit ones (``kind`` ``"u2"`` or ``"i2"``) are filtered as image
    codecs do before they are compressed: each value minus the one before it (row-major, modulo 2**16), zigzag
    coded (0, -1, 1, -2 ... as 0, 1, 2, 3 ...), low bytes then high bytes. On CT this makes the data about a quarter
    smaller than zlib alone, and smaller than a 16-bit PNG. Wider values (``"i4"``) are stored as they are, little
    endian. ``labels`` is the label image (of the first layer), ``"u1"`` or ``"u2"`` little endian, and so is each
    further layer's. All are zlib-compressed (the page inflates them with the browser's DecompressionStream) and
    base64-encoded."""
    stored = np.asarray(stored)
    low, high = (int(stored.min()), int(stored.max())) if stored.size else (0, 0)
    kind = "u2" if low >= 0 and high <= 0xFFFF else "i2" if -0x8000 <= low and high <= 0x7FFF else "i4"
    if kind == "i4":
        values = np.ascontiguousarray(stored, dtype="<i4").tobytes()
    else:
        wrapped = stored.ravel().astype(np.int64) & 0xFFFF
        delta = (np.diff(wrapped, prepend=0) & 0xFFFF).astype(np.uint16).view(np.int16).astype(np.int32)
        zigzag = ((delta << 1) ^ (delta >> 15)) & 0xFFFF
        values = np.concatenate([zigzag & 0xFF, zigzag >> 8]).astype(np.uint8).tobytes()

    def packed(raw: bytes) -> str:
        return base64.b64encode(zlib.compress(raw, 6)).decode("ascii")

    def packed_labels(layer: np.ndarray) -> tuple[str, str]:
        layer_kind = "u1" if layer.dtype == np.uint8 else "u2"
        return layer_kind, packed(np.ascontiguousarray(layer, dtype=np.dtype(layer_kind).newbyteorder("<")).tobytes())

    label_kind, label_data = packed_labels(labels)
    layers = "".join(',["%s","%s"]' % packed_labels(layer) for layer in more)
    further = f",[{layers[1:]}]" if more else ""
    return f'segalignFrame({int(index)},"{kind}","{packed(values)}","{label_kind}","{label_data}"{further});\n'


def write_frame(
    folder: Path, index: int, frame: Frame, pixels: FramePixels, layers: Sequence[np.ndarray], counts: np.ndarray,
    present: Sequence[int],
) -> dict[str, Any]:
    """Write ``viewer/NNNNN.js`` (see :func:`frame_script`) of frame ``index`` into the export ``folder``, with
    every label layer of the frame (``layers``, one where no segments overlap), and
    return what the page needs of the frame beyond its manifest row (:func:`page_frames`): each present label's
    pixels here (its legend entry jumps to the frame where it is largest), whether its file is multi-frame, the
    script, the frame's size, rescale and own window, and for a mosaic each tile's plane (the readout places a
    pixel through its own tile)."""
    script = f"viewer/{index:05d}.js"
    (folder / script).write_text(frame_script(index, pixels.stored, layers[0], layers[1:]), encoding="ascii")
    own = pixels.window or range_window(pixels.values)
    entry: dict[str, Any] = {
        "areas": {value: int(counts[value]) for value in present},
        "multiframe": frame.number_of_frames > 1,
        "data": script, "rows": int(frame.rows), "columns": int(frame.columns),
        "slope": pixels.slope, "intercept": pixels.intercept,
        "window": [own.center, own.width], "monochrome1": bool(pixels.monochrome1),
    }
    if frame.tiles:
        entry["tiles"] = [
            {"number": tile.number, "row": tile.row_offset, "column": tile.column_offset,
             "rows": tile.rows, "columns": tile.columns, "ipp": list(tile.position),
             "iop": list(tile.orientation), "spacing": list(tile.pixel_spacing)}
            for tile in frame.tiles
        ]
    return entry


def page_frames(rows: list[dict], entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The page's frame list (what :func:`write_preview` takes): each frame's manifest row, as the page reads it,
    with its :func:`write_frame` entry."""
    return [
        {
            "image": row["overlay_png"],
            "label": row["label_png"],
            "instance": row["instance_number"],
            "frame": row["frame"],
            "position": row["slice_position"],
            "ipp": [float(v) for v in str(row["image_position_patient"]).split()],
            "iop": [float(v) for v in str(row["image_orientation_patient"]).split()],
            "spacing": [float(v) for v in str(row["pixel_spacing"]).split()],
            "labels": [int(v) for v in str(row["labels_present"]).split()],
            **entry,
        }
        for row, entry in zip(rows, entries)
    ]


def write_preview(
    path: Path, frames: list[dict[str, Any]], labels: list[dict[str, Any]], provenance: dict[str, Any],
    style: dict[str, Any] | None = None,
) -> None:
    """Write the page. ``frames``: per frame ``image`` (relative path), ``label`` (file name), ``instance``,
    ``frame`` (its number in a multi-frame file) and ``multiframe``, ``position`` (text), ``labels`` (values present)
    and ``areas`` (value -> pixels; a legend entry jumps to the frame where its label is largest), in display order. ``labels``: value, name, color, and
    optional voxel count. ``provenance``: the export's ``export.json`` content."""
    ranges: dict[int, list[int]] = {}
    largest: dict[int, tuple[int, int]] = {}  # value -> (pixels, frame index) of its largest area
    for index, frame in enumerate(frames):
        for value in frame["labels"]:
            ranges.setdefault(value, []).append(index)
            pixels = int(frame.get("areas", {}).get(value, 0))
            if value not in largest or pixels > largest[value][0]:
                largest[value] = (pixels, index)
    legend = [
        {
            "value": entry["value"],
            "name": entry["name"],
            "color": "#%02x%02x%02x" % tuple(entry["color"]),
            "first": ranges[entry["value"]][0] if entry["value"] in ranges else None,
            "last": ranges[entry["value"]][-1] if entry["value"] in ranges else None,
            "frames": len(ranges.get(entry["value"], [])),
            "largest": largest[entry["value"]][1] if entry["value"] in largest else None,
        }
        for entry in labels
        if entry["value"] in ranges or entry.get("voxels", 0)
    ]
    shown = []
    for frame in frames:
        entry = {key: value for key, value in frame.items() if key != "areas"}
        iop = frame.get("iop") or []
        if len(iop) == 6:  # the letters at the right and bottom edges; the left and top ones are their opposites
            entry["letters"] = {"right": direction_letters(iop[:3], LETTER_THRESHOLD),
                                "bottom": direction_letters(iop[3:], LETTER_THRESHOLD)}
        shown.append(entry)
    data = {"frames": shown, "legend": legend, "style": style or {"alpha": 0.4, "outline": False, "window": None},
            "modality": str(provenance.get("modality") or "")}
    payload = script_json(data)
    title = text(
        f"SegAlign: {provenance.get('series_description') or provenance.get('series_instance_uid') or 'export'}"
    )
    path.write_text(
        PAGE.format(
            title=html.escape(title),
            heading=html.escape(title),
            summary=html.escape(
                f"{len(frames)} frames in {'acquisition' if provenance.get('order') == 'instance' else 'spatial'} order"
                f" · {len(legend)} labels"
            ),
            provenance=_provenance_html(provenance),
            payload=payload,
        ),
        encoding="utf-8",
        errors="replace",  # text() leaves no surrogate behind; this is a last guard, never a UnicodeEncodeError
    )


#: A direction's component along a patient axis is named at the image edges when at least this large (a unit
#: vector): a frame tilted by less than about 6 degrees is named by one axis alone, as OHIF and Slicer name it.
LETTER_THRESHOLD = 0.1


#: Characters that are escaped in JSON embedded in a <script> element: none of them can then end the element,
#: open a comment, or (U+2028, U+2029) end a line in older JavaScript parsers.
_SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def script_json(data: Any) -> str:
    """``data`` as JSON that is inert inside a ``<script>`` element, whatever its strings hold (non-finite
    numbers are refused: they are not JSON)."""
    encoded = json.dumps(data, separators=(",", ":"), allow_nan=False)  # ensure_ascii: surrogates become \udcxx
    for character, escape in _SCRIPT_ESCAPES.items():
        encoded = encoded.replace(character, escape)
    return encoded


def text(value: Any) -> str:
    """``value`` as text that can be written as UTF-8: a file name that is not valid UTF-8 (decoded with
    surrogate escapes) gets its bytes decoded again, with replacement characters where they are not UTF-8."""
    string = str(value)
    return string.encode("utf-8", "surrogateescape").decode("utf-8", "replace") if _has_surrogates(string) else string


def _has_surrogates(string: str) -> bool:
    try:
        string.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _provenance_html(provenance: dict[str, Any]) -> str:
    fields = [
        ("DICOM folder", provenance.get("dicom_dir")),
        ("SeriesInstanceUID", provenance.get("series_instance_uid") or "(none)"),
        ("Series", f"{provenance.get('series_description') or '-'} ({provenance.get('modality') or '?'})"),
        ("Segmentation", provenance.get("segmentation")),
        ("Segmentation grid", " x ".join(str(n) for n in provenance.get("segmentation_shape", []))),
        ("Affine used", f"{provenance.get('affine_source')}: {provenance.get('affine_ras')}"),
        ("Order", provenance.get("order")),
        ("SegAlign", provenance.get("segalign_version")),
    ]
    rows = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(text(v))}</dd>" for k, v in fields)
    warnings = provenance.get("warnings") or []
    items = "".join(f"<li>{html.escape(text(w))}</li>" for w in warnings) or "<li>none</li>"
    return f"<dl>{rows}</dl><h3>Warnings</h3><ul id=\"warnings\">{items}</ul>"
