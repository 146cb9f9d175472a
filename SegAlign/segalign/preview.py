"""The preview page: ``OUT_DIR/index.html``, a self-contained viewer of the overlays in native order.

No network access and no server are needed: the page embeds its data as JSON and shows the overlay PNGs beside it by
relative path, so it opens from the file system in any browser. Arrow keys, PageUp/PageDown, Home/End, the mouse
wheel and the slider move through the frames; the legend lists every label with its colour and the frames it is
on (click a label to go to its first frame); the provenance section says what was exported from what.

Everything that comes from the input (label names, DICOM descriptions, paths, warnings) is inert in the page,
whatever it holds: text in the HTML is escaped, and the embedded JSON has ``<``, ``>``, ``&`` and U+2028/U+2029
written as ``\\u`` escapes, so no ``</script>``, ``<!--`` or line separator can end or change the script. File
names that are not valid UTF-8 (surrogate escapes) are shown with replacement characters.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any


def write_preview(path: Path, frames: list[dict[str, Any]], labels: list[dict[str, Any]], provenance: dict[str, Any]) -> None:
    """Write the page. ``frames``: per frame ``image`` (relative path), ``label`` (file name), ``instance``,
    ``position`` (text) and ``labels`` (values present), in display order. ``labels``: value, name, color, and
    optional voxel count. ``provenance``: the export's ``export.json`` content."""
    ranges: dict[int, list[int]] = {}
    for index, frame in enumerate(frames):
        for value in frame["labels"]:
            ranges.setdefault(value, []).append(index)
    legend = [
        {
            "value": entry["value"],
            "name": entry["name"],
            "color": "#%02x%02x%02x" % tuple(entry["color"]),
            "first": ranges[entry["value"]][0] if entry["value"] in ranges else None,
            "last": ranges[entry["value"]][-1] if entry["value"] in ranges else None,
            "frames": len(ranges.get(entry["value"], [])),
        }
        for entry in labels
        if entry["value"] in ranges or entry.get("voxels", 0)
    ]
    data = {"frames": frames, "legend": legend}
    payload = script_json(data)
    title = text(
        f"SegAlign: {provenance.get('series_description') or provenance.get('series_instance_uid') or 'export'}"
    )
    path.write_text(
        _PAGE.format(
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


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
  body {{ margin: 0; font: 14px/1.4 system-ui, sans-serif; background: #15181d; color: #e4e6ea; }}
  header, section#provenance {{ padding: 12px 20px; }}
  h1 {{ font-size: 18px; margin: 0 0 4px; }} h2 {{ font-size: 15px; margin: 0 0 8px; }} h3 {{ font-size: 14px; }}
  main {{ display: flex; gap: 20px; padding: 0 20px; align-items: flex-start; flex-wrap: wrap; }}
  #viewer {{ flex: 0 1 auto; }}
  #stage {{ background: #000; display: inline-block; line-height: 0; }}
  #frame {{ max-width: min(80vw, 800px); max-height: 80vh; image-rendering: pixelated; }}
  #slider {{ width: 100%; }}
  #status {{ font-variant-numeric: tabular-nums; margin-top: 4px; }}
  .help {{ color: #9aa0a8; font-size: 12px; }}
  #legend {{ flex: 1 1 280px; max-height: 85vh; overflow: auto; }}
  #legend table {{ border-collapse: collapse; width: 100%; }}
  #legend td {{ padding: 2px 6px; border-bottom: 1px solid #2a2e35; }}
  #legend tr {{ cursor: pointer; }} #legend tr.here {{ background: #2a3442; font-weight: 600; }}
  .swatch {{ display: inline-block; width: 14px; height: 14px; border-radius: 3px; vertical-align: middle; }}
  dl {{ display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; }} dt {{ color: #9aa0a8; }}
  dd {{ margin: 0; word-break: break-all; }}
</style>
</head>
<body>
<header><h1>{heading}</h1><div>{summary}</div></header>
<main>
  <section id="viewer">
    <div id="stage"><img id="frame" alt="frame"></div>
    <input id="slider" type="range" min="0" value="0" aria-label="frame">
    <div id="status"></div>
    <p class="help">Arrow keys, PageUp/PageDown, Home/End or the mouse wheel move through the frames.</p>
  </section>
  <aside id="legend"><h2>Labels</h2><table><tbody id="legend-rows"></tbody></table></aside>
</main>
<section id="provenance"><h2>Provenance</h2>{provenance}</section>
<script id="segalign-data" type="application/json">{payload}</script>
<script>
"use strict";
const data = JSON.parse(document.getElementById("segalign-data").textContent);
const frames = data.frames, legend = data.legend;
const image = document.getElementById("frame"), slider = document.getElementById("slider");
const status = document.getElementById("status"), rows = document.getElementById("legend-rows");
const names = new Map(legend.map(l => [l.value, l.name]));
let current = 0;
slider.max = Math.max(frames.length - 1, 0);
for (const entry of legend) {{
  const row = document.createElement("tr");
  row.dataset.value = entry.value;
  const range = entry.first === null ? "not on any frame"
    : `frames ${{entry.first + 1}}\u2013${{entry.last + 1}} (${{entry.frames}})`;
  row.innerHTML = `<td><span class="swatch"></span></td><td>${{entry.value}}</td><td class="name"></td><td>${{range}}</td>`;
  row.querySelector(".swatch").style.background = entry.color;
  row.querySelector(".name").textContent = entry.name;
  row.addEventListener("click", () => {{ if (entry.first !== null) show(entry.first); }});
  rows.appendChild(row);
}}
function show(index) {{
  if (!frames.length) {{ status.textContent = "no frames"; return; }}
  current = Math.max(0, Math.min(frames.length - 1, index));
  const frame = frames[current];
  image.src = frame.image;
  image.dataset.index = current;
  slider.value = current;
  const present = frame.labels.map(v => names.get(v) || v).join(", ") || "none";
  status.textContent = `Frame ${{current + 1}} of ${{frames.length}} \u00b7 InstanceNumber ${{frame.instance}}` +
    ` \u00b7 position ${{frame.position}} mm \u00b7 labels: ${{present}}`;
  for (const row of rows.children) row.classList.toggle("here", frame.labels.includes(Number(row.dataset.value)));
  for (const next of [current + 1, current - 1]) if (frames[next]) new Image().src = frames[next].image;
}}
document.addEventListener("keydown", event => {{
  const step = {{ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1, PageDown: 10, PageUp: -10}}[event.key];
  if (step !== undefined) {{ show(current + step); event.preventDefault(); }}
  else if (event.key === "Home") {{ show(0); event.preventDefault(); }}
  else if (event.key === "End") {{ show(frames.length - 1); event.preventDefault(); }}
}});
document.getElementById("stage").addEventListener("wheel", event => {{
  show(current + (event.deltaY > 0 ? 1 : -1)); event.preventDefault();
}}, {{passive: false}});
slider.addEventListener("input", () => show(Number(slider.value)));
show(0);
</script>
</body>
</html>
"""
