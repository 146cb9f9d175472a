"""The preview page's HTML, style and script: :data:`PAGE`, which :func:`.preview.write_preview` fills in.

It is a :meth:`str.format` template: ``{title}``, ``{heading}``, ``{summary}``, ``{provenance}`` (escaped HTML) and
``{payload}`` (the frames, legend and style as inert JSON, see :func:`.preview.script_json`) are filled in; every
other brace of the style and script is doubled. The script draws each frame from ``viewer/NNNNN.js`` (see
:func:`.preview.frame_script`), with the same windowing and blending as the overlay PNGs (:mod:`.render`): where
segments overlap, the first label layer blended (or outlined), the further layers outlined on top; the readout
names every segment under the cursor.
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
  html, body {{ margin: 0; height: 100%; }}
  html {{ color-scheme: dark; scrollbar-color: #3a4048 #0e1014; }}  /* dark scroll bars, slider and filter box */
  body {{ font: 14px/1.4 system-ui, sans-serif; background: #15181d; color: #e4e6ea; }}
  header {{ padding: 8px 16px; height: 44px; box-sizing: border-box; overflow: hidden; white-space: nowrap;
           text-overflow: ellipsis; }}
  header h1 {{ display: inline; font-size: 16px; margin: 0 12px 0 0; }}
  h2 {{ font-size: 14px; margin: 0 0 6px; }} h3 {{ font-size: 14px; }}
  /* The image fills what the fixed side panel leaves; nothing in the layout depends on the frame shown. */
  main {{ display: grid; grid-template-columns: minmax(0, 1fr) 340px; height: calc(100vh - 44px); }}
  #viewer {{ display: grid; grid-template-rows: minmax(0, 1fr) auto; min-width: 0; min-height: 0; }}
  #stage {{ position: relative; background: #000; min-height: 0; overflow: hidden; cursor: crosshair; }}
  #view {{ position: absolute; inset: 0; width: 100%; height: 100%; }}
  .letter {{ position: absolute; color: #ffd54a; font: 600 15px/1 system-ui, sans-serif; text-shadow: 0 0 3px #000;
             pointer-events: none; }}
  #controls {{ padding: 4px 12px 8px; }}
  #slider {{ width: 100%; }}
  #side {{ display: flex; flex-direction: column; min-height: 0; border-left: 1px solid #2a2e35; padding: 8px 10px; }}
  #status {{ font-variant-numeric: tabular-nums; }}
  #status div {{ white-space: nowrap; overflow: hidden; text-overflow: ellipsis; height: 1.4em; }}
  #status div#readout {{ white-space: normal; height: 2.8em; }}  /* two lines, always: position, value and label */
  .help {{ color: #9aa0a8; font-size: 12px; margin: 4px 0; }}
  #filter {{ width: 100%; box-sizing: border-box; margin: 6px 0; background: #0e1014; color: inherit;
            border: 1px solid #2a2e35; padding: 3px 6px; }}
  #legend {{ flex: 1 1 auto; min-height: 0; overflow: auto; }}
  #legend table {{ border-collapse: collapse; width: 100%; }}
  #legend td {{ padding: 2px 6px; border-bottom: 1px solid #2a2e35; white-space: nowrap; }}
  #legend td.name {{ white-space: normal; overflow-wrap: break-word; }}
  #legend tr {{ cursor: pointer; }} #legend tr.here {{ background: #2a3442; font-weight: 600; }}
  #legend tr.hidden {{ display: none; }} #legend tr.off .swatch {{ opacity: 0.2; outline: 1px solid #9aa0a8; }}
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
    <div id="stage"><canvas id="view"></canvas><div class="letter" id="letter-left"></div>
      <div class="letter" id="letter-right"></div><div class="letter" id="letter-top"></div>
      <div class="letter" id="letter-bottom"></div></div>
    <div id="controls"><input id="slider" type="range" min="0" value="0" aria-label="frame"></div>
  </section>
  <aside id="side">
    <div id="status"><div id="status-frame"></div><div id="status-instance"></div><div id="status-position"></div>
      <div id="status-labels"></div><div id="status-view"></div><div id="readout"></div></div>
    <p class="help">Wheel, arrows, PageUp/PageDown, Home/End: frames. Ctrl+wheel or +/-: zoom, drag: pan, 0: fit.
      Right-drag: window (width, level), 1-5: abdomen, bone, brain, lung, mediastinum, r: the frame's own.
      o: overlay, [ ]: opacity, l: outline. Click a swatch to hide a label, a name to go where it is largest.</p>
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
const canvas = document.getElementById("view"), context = canvas.getContext("2d");
const stage = document.getElementById("stage"), slider = document.getElementById("slider");
const rows = document.getElementById("legend-rows"), filter = document.getElementById("filter");
const line = name => document.getElementById("status-" + name);
const names = new Map(legend.map(l => [l.value, l.name]));
const PRESETS = [["abdomen", 40, 400], ["bone", 400, 1800], ["brain", 40, 80], ["lung", -600, 1500],
                 ["mediastinum", 50, 350]];
const HALF = 1e-9;  // halves round up whatever the float error, as the overlays are computed
const lookup = new Uint8Array(65536 * 3);  // label value -> colour
for (const entry of legend) {{
  const hex = entry.color.slice(1);
  for (let k = 0; k < 3; k++) lookup[entry.value * 3 + k] = parseInt(hex.slice(2 * k, 2 * k + 2), 16);
}}
const view = {{overlay: true, alpha: data.style.alpha, outline: data.style.outline, hidden: new Set(),
               window: data.style.window ? {{c: data.style.window[0], w: data.style.window[1]}} : null,
               zoom: 1, panX: 0, panY: 0}};
let current = 0, decoded = null, decodedIndex = -1, token = 0;  // decoded: the data of frame decodedIndex
slider.max = Math.max(frames.length - 1, 0);

// ---------------------------------------------------------------- frame data: one script file per frame
const cache = new Map(), waiting = new Map();
window.segalignFrame = (index, kind, values, labelKind, labels, more) => {{  // more: further layers' [kind, data]
  const resolve = waiting.get(index);
  if (resolve) {{ waiting.delete(index); resolve({{kind, values, labelKind, labels, more: more || []}}); }}
}};
const fromBase64 = Uint8Array.fromBase64 ? text => Uint8Array.fromBase64(text) : text => {{  // older browsers
  const binary = atob(text), bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}};
async function inflate(text, kind, filtered) {{
  const bytes = fromBase64(text);
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  const buffer = await new Response(stream).arrayBuffer();
  if (kind === "u1") return new Uint8Array(buffer);
  if (kind === "i4") return new Int32Array(buffer);
  if (kind === "u2" && !filtered) return new Uint16Array(buffer);
  // stored values (see frame_script): zigzag-coded differences, low bytes then high bytes
  const planes = new Uint8Array(buffer), count = planes.length / 2;
  const out = kind === "u2" ? new Uint16Array(count) : new Int16Array(count);
  for (let i = 0, previous = 0; i < count; i++) {{
    const zigzag = planes[i] | (planes[count + i] << 8);
    previous = (previous + ((zigzag >>> 1) ^ -(zigzag & 1))) & 0xFFFF;
    out[i] = previous;
  }}
  return out;
}}
function load(index) {{
  if (cache.has(index)) return cache.get(index);
  const promise = new Promise((resolve, reject) => {{
    waiting.set(index, resolve);
    const script = document.createElement("script");
    script.src = frames[index].data;
    script.onload = () => script.remove();
    script.onerror = () => {{ script.remove(); reject(new Error("cannot load " + frames[index].data)); }};
    document.head.appendChild(script);
  }}).then(async raw => {{
    const labels = await inflate(raw.labels, raw.labelKind, false);
    const more = await Promise.all(raw.more.map(([kind, text]) => inflate(text, kind, false)));
    return {{values: await inflate(raw.values, raw.kind, true), labels, layers: [labels, ...more]}};
  }});
  cache.set(index, promise);
  if (cache.size > 32) cache.delete(cache.keys().next().value);
  return promise;
}}

// ---------------------------------------------------------------- drawing
const picture = document.createElement("canvas"), pictureContext = picture.getContext("2d");
function frameWindow(frame) {{ return view.window || {{c: frame.window[0], w: frame.window[1]}}; }}
function edge(layer, i, columns, rows) {{  // a labelled pixel with a 4-neighbour of another label (not the image edge)
  const label = layer[i], x = i % columns, y = (i - x) / columns;
  return (x > 0 && layer[i - 1] !== label) || (x < columns - 1 && layer[i + 1] !== label)
    || (y > 0 && layer[i - columns] !== label) || (y < rows - 1 && layer[i + columns] !== label);
}}
function render() {{  // the frame at its own size: windowed grey, labels blended (or outlined) in their colours,
                      // further layers (overlapping segments) outlined on top
  const frame = frames[current];
  if (!decoded) return;
  const columns = frame.columns, count = frame.rows * frame.columns;
  picture.width = columns; picture.height = frame.rows;
  const image = pictureContext.createImageData(columns, frame.rows), out = image.data;
  const values = decoded.values, labels = decoded.labels, slope = frame.slope, intercept = frame.intercept;
  const {{c, w}} = frameWindow(frame), low = c - 0.5 - (w - 1) / 2, high = c - 0.5 + (w - 1) / 2;
  const alpha = view.alpha, hidden = view.hidden, outline = view.outline, overlay = view.overlay;
  for (let i = 0; i < count; i++) {{
    const value = values[i] * slope + intercept;
    let grey = w === 1 ? (value > c - 0.5 ? 255 : 0)
      : value <= low ? 0 : value > high ? 255 : Math.floor(((value - (c - 0.5)) / (w - 1) + 0.5) * 255 + 0.5 + HALF);
    grey = Math.min(255, Math.max(0, grey));
    if (frame.monochrome1) grey = 255 - grey;
    let r = grey, g = grey, b = grey;
    const label = labels[i];
    if (overlay && label !== 0 && !hidden.has(label)) {{
      const k = label * 3;
      if (outline) {{
        if (edge(labels, i, columns, frame.rows)) {{ r = lookup[k]; g = lookup[k + 1]; b = lookup[k + 2]; }}
      }} else {{
        r = Math.floor((1 - alpha) * grey + alpha * lookup[k] + 0.5 + HALF);
        g = Math.floor((1 - alpha) * grey + alpha * lookup[k + 1] + 0.5 + HALF);
        b = Math.floor((1 - alpha) * grey + alpha * lookup[k + 2] + 0.5 + HALF);
      }}
    }}
    out[4 * i] = r; out[4 * i + 1] = g; out[4 * i + 2] = b; out[4 * i + 3] = 255;
  }}
  for (let n = 1; overlay && n < decoded.layers.length; n++) {{
    const layer = decoded.layers[n];
    for (let i = 0; i < count; i++) {{
      const label = layer[i];
      if (label === 0 || hidden.has(label) || !edge(layer, i, columns, frame.rows)) continue;
      out[4 * i] = lookup[label * 3]; out[4 * i + 1] = lookup[label * 3 + 1]; out[4 * i + 2] = lookup[label * 3 + 2];
    }}
  }}
  pictureContext.putImageData(image, 0, 0);
  draw();
  if (pointer) readout(pointer);  // the values under the cursor are those of the frame now drawn
}}
function geometry() {{  // where the frame is drawn in the stage: fitted, then zoomed and panned
  const frame = frames[current], width = stage.clientWidth, height = stage.clientHeight;
  const fit = Math.min(width / frame.columns, height / frame.rows), scale = fit * view.zoom;
  return {{scale, left: (width - frame.columns * scale) / 2 + view.panX, top: (height - frame.rows * scale) / 2 + view.panY,
           width: frame.columns * scale, height: frame.rows * scale}};
}}
function draw() {{
  if (canvas.width !== stage.clientWidth || canvas.height !== stage.clientHeight) {{
    canvas.width = stage.clientWidth; canvas.height = stage.clientHeight;
  }}
  context.fillStyle = "#000"; context.fillRect(0, 0, canvas.width, canvas.height);
  if (!decoded) return;
  const box = geometry();
  context.imageSmoothingEnabled = false;
  context.drawImage(picture, box.left, box.top, box.width, box.height);
  placeLetters(box);
  const {{c, w}} = frameWindow(frames[current]);
  line("view").textContent = `window ${{+c.toFixed(1)}} / ${{+w.toFixed(1)}} \\u00b7 zoom ${{view.zoom.toFixed(2)}}` +
    ` \\u00b7 overlay ${{view.overlay ? (view.outline ? "outline" : Math.round(view.alpha * 100) + " %") : "off"}}`;
  canvas.dataset.index = current;
  if (!canvas.dataset.drawn) performance.mark("segalign-first-frame");  // the time to the first frame, for benchmarks
  canvas.dataset.drawn = String(Number(canvas.dataset.drawn || 0) + 1);
}}
const opposite = letters => letters.replace(/[LRPASI]/g, c => ({{L: "R", R: "L", P: "A", A: "P", S: "I", I: "S"}})[c]);
function placeLetters(box) {{
  const letters = frames[current].letters || {{right: "", bottom: ""}}, pad = 6;
  const width = stage.clientWidth, height = stage.clientHeight;
  const clamp = (v, low, high) => Math.max(low, Math.min(high, v));
  const set = (id, text, x, y) => {{
    const element = document.getElementById("letter-" + id);
    element.textContent = text;
    element.style.left = clamp(x, pad, width - pad - 12 * text.length) + "px";
    element.style.top = clamp(y, pad, height - pad - 16) + "px";
  }};
  const middleY = box.top + box.height / 2, middleX = box.left + box.width / 2;
  set("right", letters.right, box.left + box.width - pad - 10 * letters.right.length, middleY);
  set("left", opposite(letters.right), box.left + pad, middleY);
  set("bottom", letters.bottom, middleX, box.top + box.height - pad - 15);
  set("top", opposite(letters.bottom), middleX, box.top + pad);
}}

// ---------------------------------------------------------------- legend
for (const entry of legend) {{
  const row = document.createElement("tr");
  row.dataset.value = entry.value;
  const count = entry.first === null ? "on no frame" : `${{entry.frames}} frames`;
  row.innerHTML = `<td><span class="swatch"></span></td><td>${{entry.value}}</td><td class="name"></td>` +
    `<td class="count">${{count}}</td>`;
  row.querySelector(".swatch").style.background = entry.color;
  const nameCell = row.querySelector(".name");  // long names break after their underscores, not mid-word
  entry.name.split(/(?<=_)/).forEach((part, k) => {{
    if (k) nameCell.appendChild(document.createElement("wbr"));
    nameCell.appendChild(document.createTextNode(part));
  }});
  row.title = entry.first === null ? "" : `frames ${{entry.first + 1}}\\u2013${{entry.last + 1}}; largest on frame ` +
    `${{entry.largest + 1}}`;
  row.addEventListener("click", event => {{
    if (event.target.classList.contains("swatch")) {{  // the swatch: show or hide this label
      if (view.hidden.has(entry.value)) view.hidden.delete(entry.value); else view.hidden.add(entry.value);
      row.classList.toggle("off", view.hidden.has(entry.value));
      render();
    }} else if (entry.largest !== null) show(entry.largest);
  }});
  rows.appendChild(row);
}}
filter.addEventListener("input", () => {{
  const wanted = filter.value.trim().toLowerCase();
  for (const row of rows.children) {{
    const text = (row.querySelector(".name").textContent + " " + row.dataset.value).toLowerCase();
    row.classList.toggle("hidden", wanted !== "" && !text.includes(wanted));
  }}
}});

// ---------------------------------------------------------------- frames
async function show(index) {{
  if (!frames.length) {{ line("frame").textContent = "no frames"; return; }}
  current = Math.max(0, Math.min(frames.length - 1, index));
  const frame = frames[current], mine = ++token;
  slider.value = current;
  line("frame").textContent = `Frame ${{current + 1}} of ${{frames.length}}`;
  line("instance").textContent = `InstanceNumber ${{frame.instance}}` +
    (frame.multiframe ? ` \\u00b7 frame ${{frame.frame}}` : "");
  line("position").textContent = `Slice position ${{frame.position}} mm`;
  const present = frame.labels.map(v => names.get(v) || v);
  line("labels").textContent = `${{present.length}} labels: ${{present.join(", ") || "none"}}`;
  line("labels").title = present.join(", ");
  for (const row of rows.children) row.classList.toggle("here", frame.labels.includes(Number(row.dataset.value)));
  const loaded = await load(current);
  if (mine !== token) return;  // another frame was asked for meanwhile
  decoded = loaded; decodedIndex = current;
  render();
  for (const next of [current + 1, current - 1]) if (frames[next]) load(next);
}}

// ---------------------------------------------------------------- input
function zoomAbout(factor, x, y) {{
  const before = geometry(), u = (x - before.left) / before.scale, v = (y - before.top) / before.scale;
  view.zoom = Math.max(0.25, Math.min(40, view.zoom * factor));
  const after = geometry();
  view.panX += x - (after.left + u * after.scale); view.panY += y - (after.top + v * after.scale);
  draw();
}}
document.addEventListener("keydown", event => {{
  if (event.target === filter) return;
  const step = {{ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1, PageDown: 10, PageUp: -10}}[event.key];
  const frame = frames[current];
  if (step !== undefined) show(current + step);
  else if (event.key === "Home") show(0);
  else if (event.key === "End") show(frames.length - 1);
  else if (event.key === "o") {{ view.overlay = !view.overlay; render(); }}
  else if (event.key === "l") {{ view.outline = !view.outline; render(); }}
  else if (event.key === "[" || event.key === "]") {{
    view.alpha = Math.round(Math.max(0, Math.min(1, view.alpha + (event.key === "]" ? 0.1 : -0.1))) * 10) / 10;
    render();
  }} else if (event.key >= "1" && event.key <= "5") {{
    const [, c, w] = PRESETS[Number(event.key) - 1]; view.window = {{c, w}}; render();
  }} else if (event.key === "r") {{ view.window = null; render(); }}
  else if (event.key === "0") {{ view.zoom = 1; view.panX = view.panY = 0; draw(); }}
  else if (event.key === "+" || event.key === "=" || event.key === "-") {{
    zoomAbout(event.key === "-" ? 1 / 1.25 : 1.25, stage.clientWidth / 2, stage.clientHeight / 2);
  }} else return;
  event.preventDefault();
}});
stage.addEventListener("wheel", event => {{
  event.preventDefault();
  if (event.ctrlKey) {{
    const rect = stage.getBoundingClientRect();
    zoomAbout(event.deltaY < 0 ? 1.25 : 1 / 1.25, event.clientX - rect.left, event.clientY - rect.top);
  }} else show(current + (event.deltaY > 0 ? 1 : -1));
}}, {{passive: false}});
let drag = null;
stage.addEventListener("contextmenu", event => event.preventDefault());
stage.addEventListener("mousedown", event => {{
  const frame = frames[current], {{c, w}} = frameWindow(frame);
  drag = {{button: event.button, x: event.clientX, y: event.clientY, panX: view.panX, panY: view.panY, c, w}};
  event.preventDefault();
}});
window.addEventListener("mouseup", () => {{ drag = null; }});
window.addEventListener("mousemove", event => {{
  if (drag) {{
    const dx = event.clientX - drag.x, dy = event.clientY - drag.y;
    if (drag.button === 2) {{  // as in Slicer and OHIF: horizontal is width, vertical is level
      const sensitivity = Math.max(drag.w, 1) / 256;
      view.window = {{c: drag.c + dy * sensitivity, w: Math.max(1, drag.w + dx * sensitivity)}};
      render();
    }} else if (drag.button === 0) {{ view.panX = drag.panX + dx; view.panY = drag.panY + dy; draw(); }}
  }}
  readout(event);
}});
let pointer = null;  // the last mouse position: the readout follows the frame shown, not only the mouse
function readout(event) {{
  pointer = {{clientX: event.clientX, clientY: event.clientY}};
  const element = document.getElementById("readout"), frame = frames[decodedIndex];  // the frame drawn
  const rect = stage.getBoundingClientRect(), box = geometry();
  const column = Math.floor((event.clientX - rect.left - box.left) / box.scale);
  const row = Math.floor((event.clientY - rect.top - box.top) / box.scale);
  if (!decoded || !frame.ipp || row < 0 || column < 0 || row >= frame.rows || column >= frame.columns ||
      event.clientX < rect.left || event.clientX >= rect.right || event.clientY < rect.top || event.clientY >= rect.bottom) {{
    element.textContent = ""; return;
  }}
  // The pixel's plane: the frame's own, or in a mosaic the plane of the tile that holds the pixel.
  const tile = frame.tiles ? frame.tiles.find(t => row >= t.row && row < t.row + t.rows && column >= t.column &&
                                                   column < t.column + t.columns) : null;
  const plane = tile ? {{ipp: tile.ipp, iop: tile.iop, spacing: tile.spacing, row: row - tile.row,
                         column: column - tile.column}}
    : frame.tiles ? null : {{ipp: frame.ipp, iop: frame.iop, spacing: frame.spacing, row, column}};
  let where = "no slice here (between the mosaic's tiles)";
  if (plane) {{
    const [dr, dc] = plane.spacing, p = plane.ipp, o = plane.iop;  // DICOM C.7.6.2.1.1
    const lps = [0, 1, 2].map(k => p[k] + o[k] * dc * plane.column + o[3 + k] * dr * plane.row);
    where = (tile ? `tile ${{tile.number}} \\u00b7 ` : "") + "LPS " + lps.map(v => v.toFixed(1)).join(", ") + " mm";
  }}
  const i = row * frame.columns + column, value = decoded.values[i] * frame.slope + frame.intercept;
  const label = decoded.labels[i], unit = data.modality === "CT" ? " HU" : "";
  const under = decoded.layers.map(layer => layer[i]).filter(v => v !== 0);  // every segment here, layer by layer
  element.textContent = `row ${{row}}, column ${{column}} \\u00b7 ${{where}}` +
    ` \\u00b7 ${{+value.toFixed(2)}}${{unit}} \\u00b7 ${{under.length ? under.map(v => names.get(v) || v).join(" + ") : "no label"}}`;
  element.dataset.index = decodedIndex; element.dataset.row = row; element.dataset.column = column;
  element.dataset.value = value;
  element.dataset.label = label;
  element.dataset.labels = under.join(" ");
}}
slider.addEventListener("input", () => show(Number(slider.value)));
window.addEventListener("resize", draw);
show(0);
</script>
</body>
</html>
"""
