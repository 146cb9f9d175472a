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
            entry["letters"] = {"right": orientation_letters(iop[:3]), "bottom": orientation_letters(iop[3:])}
        shown.append(entry)
    data = {"frames": shown, "legend": legend}
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


#: A direction's component along a patient axis is named when at least this large: a frame tilted by less than
#: about 6 degrees is named by one axis alone, as OHIF and Slicer's slice views name it.
LETTER_THRESHOLD = 0.1


def orientation_letters(direction: list[float] | tuple[float, ...]) -> str:
    """The patient directions (LPS: L/R, P/A, S/I) a unit vector points to, largest component first: ``"L"`` for
    (1, 0, 0), ``"LP"`` for an oblique (0.8, 0.6, 0), ``"LPS"`` when all three matter."""
    letters = [("L", "R"), ("P", "A"), ("S", "I")]
    order = sorted(range(3), key=lambda axis: -abs(direction[axis]))
    return "".join(letters[axis][0 if direction[axis] > 0 else 1] for axis in order
                   if abs(direction[axis]) >= LETTER_THRESHOLD)


def opposite(letters: str) -> str:
    """The letters of the opposite direction (``"LP"`` -> ``"RA"``)."""
    return letters.translate(str.maketrans("LRPASI", "RLAPIS"))


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
  html, body {{ margin: 0; height: 100%; }}
  body {{ font: 14px/1.4 system-ui, sans-serif; background: #15181d; color: #e4e6ea; }}
  header {{ padding: 8px 16px; height: 44px; box-sizing: border-box; overflow: hidden; white-space: nowrap;
           text-overflow: ellipsis; }}
  header h1 {{ display: inline; font-size: 16px; margin: 0 12px 0 0; }}
  h2 {{ font-size: 14px; margin: 0 0 6px; }} h3 {{ font-size: 14px; }}
  /* The image fills what the fixed side panel leaves; nothing in the layout depends on the frame shown. */
  main {{ display: grid; grid-template-columns: minmax(0, 1fr) 340px; height: calc(100vh - 44px); }}
  #viewer {{ display: grid; grid-template-rows: minmax(0, 1fr) auto; min-width: 0; min-height: 0; }}
  #stage {{ position: relative; background: #000; min-height: 0; overflow: hidden; }}
  #frame {{ position: absolute; inset: 0; width: 100%; height: 100%; object-fit: contain;
           image-rendering: pixelated; image-rendering: crisp-edges; }}
  .letter {{ position: absolute; color: #ffd54a; font: 600 15px/1 system-ui, sans-serif; text-shadow: 0 0 3px #000;
             pointer-events: none; }}
  #controls {{ padding: 4px 12px 8px; }}
  #slider {{ width: 100%; }}
  #side {{ display: flex; flex-direction: column; min-height: 0; border-left: 1px solid #2a2e35; padding: 8px 10px; }}
  #status {{ font-variant-numeric: tabular-nums; }}
  #status div {{ white-space: nowrap; overflow: hidden; text-overflow: ellipsis; height: 1.4em; }}
  .help {{ color: #9aa0a8; font-size: 12px; margin: 4px 0; }}
  #filter {{ width: 100%; box-sizing: border-box; margin: 6px 0; background: #0e1014; color: inherit;
            border: 1px solid #2a2e35; padding: 3px 6px; }}
  #legend {{ flex: 1 1 auto; min-height: 0; overflow: auto; }}
  #legend table {{ border-collapse: collapse; width: 100%; }}
  #legend td {{ padding: 2px 6px; border-bottom: 1px solid #2a2e35; white-space: nowrap; }}
  #legend td.name {{ white-space: normal; word-break: break-word; }}
  #legend tr {{ cursor: pointer; }} #legend tr.here {{ background: #2a3442; font-weight: 600; }}
  #legend tr.hidden {{ display: none; }}
  .swatch {{ display: inline-block; width: 14px; height: 14px; border-radius: 3px; vertical-align: middle; }}
  section#provenance {{ padding: 12px 16px; }}
  dl {{ display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; }} dt {{ color: #9aa0a8; }}
  dd {{ margin: 0; word-break: break-all; }}
</style>
</head>
<body>
<header><h1>{heading}</h1><span>{summary}</span></header>
<main>
  <section id="viewer">
    <div id="stage"><img id="frame" alt="frame"><div class="letter" id="letter-left"></div>
      <div class="letter" id="letter-right"></div><div class="letter" id="letter-top"></div>
      <div class="letter" id="letter-bottom"></div></div>
    <div id="controls"><input id="slider" type="range" min="0" value="0" aria-label="frame"></div>
  </section>
  <aside id="side">
    <div id="status"><div id="status-frame"></div><div id="status-instance"></div><div id="status-position"></div>
      <div id="status-labels"></div><div id="readout"></div></div>
    <p class="help">Arrow keys, PageUp/PageDown, Home/End or the mouse wheel move through the frames; click a label
      to go to the frame where it is largest. Provenance and warnings are below the viewer.</p>
    <h2>Labels</h2>
    <input id="filter" type="search" placeholder="filter labels" aria-label="filter labels">
    <div id="legend"><table><tbody id="legend-rows"></tbody></table></div>
  </aside>
</main>
<section id="provenance"><h2>Provenance</h2>{provenance}</section>
<script id="segalign-data" type="application/json">{payload}</script>
<script>
"use strict";
const data = JSON.parse(document.getElementById("segalign-data").textContent);
const frames = data.frames, legend = data.legend;
const image = document.getElementById("frame"), slider = document.getElementById("slider");
const rows = document.getElementById("legend-rows"), filter = document.getElementById("filter");
const line = name => document.getElementById("status-" + name);
const names = new Map(legend.map(l => [l.value, l.name]));
let current = 0;
slider.max = Math.max(frames.length - 1, 0);
for (const entry of legend) {{
  const row = document.createElement("tr");
  row.dataset.value = entry.value;
  const count = entry.first === null ? "on no frame" : `${{entry.frames}} frames`;
  row.innerHTML = `<td><span class="swatch"></span></td><td>${{entry.value}}</td><td class="name"></td>` +
    `<td class="count">${{count}}</td>`;
  row.querySelector(".swatch").style.background = entry.color;
  row.querySelector(".name").textContent = entry.name;
  row.title = entry.first === null ? "" : `frames ${{entry.first + 1}}\u2013${{entry.last + 1}}; largest on frame ` +
    `${{entry.largest + 1}}`;
  row.addEventListener("click", () => {{ if (entry.largest !== null) show(entry.largest); }});
  rows.appendChild(row);
}}
filter.addEventListener("input", () => {{
  const wanted = filter.value.trim().toLowerCase();
  for (const row of rows.children) {{
    const text = (row.querySelector(".name").textContent + " " + row.dataset.value).toLowerCase();
    row.classList.toggle("hidden", wanted !== "" && !text.includes(wanted));
  }}
}});
function show(index) {{
  if (!frames.length) {{ line("frame").textContent = "no frames"; return; }}
  current = Math.max(0, Math.min(frames.length - 1, index));
  const frame = frames[current];
  image.src = frame.image;
  image.dataset.index = current;
  slider.value = current;
  line("frame").textContent = `Frame ${{current + 1}} of ${{frames.length}}`;
  line("instance").textContent = `InstanceNumber ${{frame.instance}}` +
    (frame.multiframe ? ` \u00b7 frame ${{frame.frame}}` : "");
  line("position").textContent = `Slice position ${{frame.position}} mm`;
  const present = frame.labels.map(v => names.get(v) || v);
  line("labels").textContent = `${{present.length}} labels: ${{present.join(", ") || "none"}}`;
  line("labels").title = present.join(", ");
  for (const row of rows.children) row.classList.toggle("here", frame.labels.includes(Number(row.dataset.value)));
  for (const next of [current + 1, current - 1]) if (frames[next]) new Image().src = frames[next].image;
  placeLetters();
}}
const opposite = letters => letters.replace(/[LRPASI]/g, c => ({{L: "R", R: "L", P: "A", A: "P", S: "I", I: "S"}})[c]);
function contentBox() {{  // where object-fit: contain puts the image in the stage
  const stage = document.getElementById("stage").getBoundingClientRect();
  const frame = frames[current], columns = image.naturalWidth || 1, rowsOf = image.naturalHeight || 1;
  const scale = Math.min(stage.width / columns, stage.height / rowsOf);
  return {{stage, scale, left: (stage.width - columns * scale) / 2, top: (stage.height - rowsOf * scale) / 2,
           width: columns * scale, height: rowsOf * scale, frame}};
}}
function placeLetters() {{
  const frame = frames[current], letters = frame.letters || {{right: "", bottom: ""}};
  const box = contentBox(), pad = 6;
  const set = (id, text, x, y) => {{
    const element = document.getElementById("letter-" + id);
    element.textContent = text;
    element.style.left = x + "px"; element.style.top = y + "px";
  }};
  set("right", letters.right, box.left + box.width - pad - 10 * letters.right.length, box.top + box.height / 2);
  set("left", opposite(letters.right), box.left + pad, box.top + box.height / 2);
  set("bottom", letters.bottom, box.left + box.width / 2, box.top + box.height - pad - 15);
  set("top", opposite(letters.bottom), box.left + box.width / 2, box.top + pad);
}}
image.addEventListener("load", placeLetters);
window.addEventListener("resize", placeLetters);
document.getElementById("stage").addEventListener("mousemove", event => {{
  const box = contentBox(), frame = box.frame;
  const column = Math.floor((event.clientX - box.stage.left - box.left) / box.scale);
  const row = Math.floor((event.clientY - box.stage.top - box.top) / box.scale);
  const readout = document.getElementById("readout");
  if (!frame.ipp || row < 0 || column < 0 || row >= image.naturalHeight || column >= image.naturalWidth) {{
    readout.textContent = ""; return;
  }}
  const [dr, dc] = frame.spacing, p = frame.ipp, o = frame.iop;  // DICOM C.7.6.2.1.1
  const lps = [0, 1, 2].map(k => p[k] + o[k] * dc * column + o[3 + k] * dr * row);
  readout.textContent = `row ${{row}}, column ${{column}} \u00b7 LPS ` + lps.map(v => v.toFixed(1)).join(", ") + " mm";
  readout.dataset.row = row; readout.dataset.column = column;
}});
document.addEventListener("keydown", event => {{
  if (event.target === filter) return;
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
