"""The preview page (OUT_DIR/index.html of an --overlays export) in a real headless browser.

Debian's chromium is driven through the python ``playwright`` package (no browser download); the page is opened
from the file system. Expectations come from the export's own files (manifest.csv, labels.json, export.json, the
label PNGs) and from the synthetic series written here, never from the page's embedded data.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from conftest import read_manifest, read_png, run_cli
from preview_cases import (
    COLORS, COLUMNS, FRAMES, NAMES, OVERLAP_COLUMNS, OVERLAP_NAMES, OVERLAP_ROWS, ROWS, expected_overlay,
    pixel_centres_script, write_case, write_overlap_case,
)
from segalign.synthetic import grid_affine, stack, write_nifti, write_series

CHROMIUM = "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else shutil.which("chromium")
if not CHROMIUM:
    pytest.skip("no chromium browser (/usr/bin/chromium or chromium on PATH) for the preview page test",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the python playwright package is not installed")

LAUNCH_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]
@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    return write_case(tmp_path_factory.mktemp("preview"))


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


#: Chromium's advice when a canvas is read back often: these tests do that (the page itself never does).
TEST_READBACK = "Canvas2D: Multiple readback operations using getImageData"


def open_page(browser, path: Path, width: int = 1200, height: int = 900):
    """The page at ``path`` in a new context; ``page.requests`` collects every URL it asks for, ``page.errors``
    its uncaught exceptions and console errors and warnings."""
    context = browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(5000)  # everything is local: a wait this long means the page did not react
    page.requests = []  # type: ignore[attr-defined]
    page.errors = []  # type: ignore[attr-defined]
    page.on("request", lambda request: page.requests.append(request.url))
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.on("console", lambda message: page.errors.append(f"console {message.type}: {message.text}")
            if message.type in ("error", "warning") and not message.text.startswith(TEST_READBACK) else None)
    page.goto(path.as_uri())
    return page


@pytest.fixture
def page(browser, export: Path):
    page = open_page(browser, export / "index.html")
    yield page
    page.context.close()
    assert not page.errors, page.errors


def _shown(page, index: int | None = None) -> dict:
    """Wait until the canvas shows frame ``index`` (or any frame); its index and the status text."""
    condition = "true" if index is None else f"c.dataset.index === '{index}'"
    page.wait_for_function(f"() => {{ const c = document.getElementById('view'); return c.dataset.drawn && {condition}; }}")
    return page.evaluate(
        """() => ({index: Number(document.getElementById('view').dataset.index),
                   drawn: Number(document.getElementById('view').dataset.drawn),
                   status: document.getElementById('status').textContent})"""
    )


def _assert_on(page, rows: list[dict], index: int) -> None:
    shown = _shown(page, index)
    row = rows[index]
    assert shown["index"] == index
    assert f"Frame {index + 1} of {len(rows)}" in shown["status"]
    assert f"InstanceNumber {row['instance_number']}" in shown["status"], shown["status"]


def _at_pixel_centres(page, rows: int, columns: int) -> np.ndarray:
    """What the canvas shows at the centre of every frame pixel, through the page's own geometry (fit, zoom,
    pan), read from the canvas itself: ``(rows, columns, 3)``."""
    flat = page.evaluate(f"() => {{ {pixel_centres_script(rows, columns)} }}")
    return np.array(flat, dtype=np.uint8).reshape(rows, columns, 3)


def _redrawn(page, before: int) -> None:
    page.wait_for_function(f"() => Number(document.getElementById('view').dataset.drawn) > {before}")


def test_navigation(page, export: Path) -> None:
    rows = read_manifest(export)
    assert len(rows) == FRAMES and [int(r["instance_number"]) for r in rows] == list(range(101, 113))
    _assert_on(page, rows, 0)
    page.keyboard.press("ArrowDown")
    _assert_on(page, rows, 1)
    page.keyboard.press("ArrowRight")
    _assert_on(page, rows, 2)
    page.keyboard.press("ArrowUp")
    _assert_on(page, rows, 1)
    page.keyboard.press("End")
    _assert_on(page, rows, FRAMES - 1)
    page.keyboard.press("ArrowDown")  # stays on the last frame
    _assert_on(page, rows, FRAMES - 1)
    page.keyboard.press("Home")
    _assert_on(page, rows, 0)
    page.keyboard.press("PageDown")
    _assert_on(page, rows, 10)
    page.keyboard.press("PageDown")  # clamped
    _assert_on(page, rows, FRAMES - 1)
    page.keyboard.press("PageUp")
    _assert_on(page, rows, 1)
    box = page.locator("#view").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, 120)
    _assert_on(page, rows, 2)
    page.mouse.wheel(0, -120)
    _assert_on(page, rows, 1)
    assert not page.errors


def test_legend_and_provenance(page, export: Path) -> None:
    rows = read_manifest(export)
    labels = [read_png(export / row["label_png"]) for row in rows]
    table = json.loads((export / "labels.json").read_text(encoding="utf-8"))
    provenance = json.loads((export / "export.json").read_text(encoding="utf-8"))
    legend = page.evaluate(
        """() => [...document.querySelectorAll('#legend-rows tr')].map(r => ({
              value: Number(r.dataset.value), text: r.innerText, title: r.title,
              name: r.querySelector('.name').textContent,
              swatch: getComputedStyle(r.querySelector('.swatch')).backgroundColor}))"""
    )
    by_value = {entry["value"]: entry for entry in legend}
    on_frames = {entry["value"]: entry for entry in table if any(np.any(l == entry["value"]) for l in labels)}
    assert sorted(on_frames) == [1, 2, 3]
    assert set(on_frames) <= set(by_value), "every label that is on a frame is listed"
    for value, entry in on_frames.items():
        shown = by_value[value]
        assert entry["name"] == NAMES[value] and shown["name"] == entry["name"], "name as in labels.json, as text"
        assert tuple(entry["color"]) == COLORS[value]
        assert shown["swatch"] == "rgb({}, {}, {})".format(*entry["color"])
        frames = [i for i, l in enumerate(labels) if np.any(l == value)]
        assert f"{len(frames)} frames" in shown["text"], shown["text"]
        assert f"frames {frames[0] + 1}\u2013{frames[-1] + 1}" in shown["title"], shown["title"]
    assert "on no frame" in by_value[9]["text"], "a label with voxels but on no frame is listed as such"
    assert set(by_value) == {1, 2, 3, 9}

    # Clicking a legend row jumps to the frame where that label's area is largest (the first such frame).
    for value in (2, 1, 3):
        largest = int(np.argmax([int(np.count_nonzero(l == value)) for l in labels]))
        page.click(f"#legend-rows tr[data-value='{value}'] td.name")
        _assert_on(page, rows, largest)
        assert page.evaluate(f"() => document.querySelector(\"#legend-rows tr[data-value='{value}']\").classList.contains('here')")

    # Provenance: the series UID and every warning of export.json.
    section = page.inner_text("#provenance")
    assert provenance["series_instance_uid"] and provenance["series_instance_uid"] in section
    uid = str(pydicom.dcmread(next((export.parent / "dicom").glob("*.dcm")), stop_before_pixels=True).SeriesInstanceUID)
    assert uid in section
    warnings = page.evaluate("() => [...document.querySelectorAll('#warnings li')].map(li => li.textContent)")
    assert provenance["warnings"] and warnings == provenance["warnings"]
    assert any("outside_the_series" in warning for warning in warnings)
    assert not page.errors


def test_only_local_files_and_the_view_is_the_overlay(page, export: Path) -> None:
    """By default the canvas shows, at the centre of every frame pixel, exactly the overlay PNG the export wrote
    (the same window, blend and rounding, computed in the page from the frame's stored values and labels)."""
    rows = read_manifest(export)
    for index in (0, FRAMES - 1):
        page.keyboard.press("Home" if index == 0 else "End")
        _assert_on(page, rows, index)
        page.add_style_tag(content=".letter { visibility: hidden; }")
        sampled = _at_pixel_centres(page, ROWS, COLUMNS)
        expected = read_png(export / rows[index]["overlay_png"])
        assert np.array_equal(sampled, expected), rows[index]["overlay_png"]
        box = page.evaluate("() => geometry()")
        assert box["scale"] > 4, "a small image is enlarged to the space it has"
    assert page.requests, "the page's own loads are seen"
    assert all(url.startswith("file://") for url in page.requests), [u for u in page.requests if not u.startswith("file://")]
    assert any(url.endswith("viewer/00011.js") for url in page.requests)
    assert not page.errors


def _labels_and_grey(export: Path, index: int) -> tuple[np.ndarray, np.ndarray]:
    rows = read_manifest(export)
    return read_png(export / rows[index]["label_png"]), rows


def test_overlay_keys_and_label_visibility(page, export: Path) -> None:
    """o, [ ], l and the swatches change only what they should: inside label pixels, never outside."""
    rows = read_manifest(export)
    index = next(i for i, row in enumerate(rows) if {"1", "3"} <= set(row["labels_present"].split()))
    page.evaluate(f"show({index})")
    _assert_on(page, rows, index)
    labels = read_png(export / rows[index]["label_png"])
    shown = lambda: _at_pixel_centres(page, ROWS, COLUMNS).astype(int)  # noqa: E731
    default = shown()

    def press(key: str) -> np.ndarray:
        before = _shown(page)["drawn"]
        page.keyboard.press(key)
        _redrawn(page, before)
        return shown()

    plain = press("o")  # overlay off: the grey frame
    assert np.array_equal(plain[labels == 0], default[labels == 0])
    assert (np.abs(plain - default).sum(axis=-1)[labels != 0] > 0).all()
    assert (plain[..., 0] == plain[..., 1]).all() and (plain[..., 1] == plain[..., 2]).all(), "grey only"
    assert np.array_equal(press("o"), default)
    stronger = press("]")  # opacity 0.5: label pixels move towards their colour
    assert np.array_equal(stronger[labels == 0], default[labels == 0])
    assert (np.abs(stronger - default).sum(axis=-1)[labels != 0] > 0).any()
    assert np.array_equal(press("["), default)
    outline = press("l")  # outline: the inside of label 1's rectangle is grey, its border coloured
    inside = np.zeros_like(labels, bool)
    inside[1:-1, 1:-1] = (labels[1:-1, 1:-1] == 1) & (labels[:-2, 1:-1] == 1) & (labels[2:, 1:-1] == 1) \
        & (labels[1:-1, :-2] == 1) & (labels[1:-1, 2:] == 1)
    assert inside.any() and np.array_equal(outline[inside], plain[inside])
    assert np.array_equal(outline[labels == 0], default[labels == 0])
    press("l")
    before = _shown(page)["drawn"]
    page.click("#legend-rows tr[data-value='1'] .swatch")  # hide label 1 only
    _redrawn(page, before)
    hidden = shown()
    assert np.array_equal(hidden[labels == 1], plain[labels == 1])
    assert np.array_equal(hidden[labels != 1], default[labels != 1])
    assert _shown(page)["index"] == index, "the swatch does not change the frame"
    assert not page.errors


def test_window_level_keys_and_drag(page, export: Path) -> None:
    rows = read_manifest(export)
    _assert_on(page, rows, 0)
    labels = read_png(export / rows[0]["label_png"])
    background = labels == 0
    shown = lambda: _at_pixel_centres(page, ROWS, COLUMNS).astype(int)  # noqa: E731
    default = shown()
    before = _shown(page)["drawn"]
    page.keyboard.press("2")  # bone: 400 / 1800
    _redrawn(page, before)
    bone = shown()
    assert "window 400 / 1800" in page.inner_text("#status-view")
    assert (bone[background] != default[background]).any()
    # The grey at a background pixel follows DICOM's linear function of its modality value with the bone window.
    header = pydicom.dcmread(export.parent / "dicom" / rows[0]["source_file"])
    value = float(header.pixel_array[5, 30]) * float(getattr(header, "RescaleSlope", 1)) + \
        float(getattr(header, "RescaleIntercept", 0))
    expected = 0 if value <= 399.5 - 899.5 else 255 if value > 399.5 + 899.5 else \
        int(np.floor(((value - 399.5) / 1799 + 0.5) * 255 + 0.5 + 1e-9))
    assert labels[5, 30] == 0 and bone[5, 30, 0] == expected
    box = page.locator("#view").bounding_box()
    page.mouse.move(box["x"] + 100, box["y"] + 100)
    page.mouse.down(button="right")
    page.mouse.move(box["x"] + 180, box["y"] + 140, steps=4)  # wider and higher
    page.mouse.up(button="right")
    status = page.inner_text("#status-view")
    centre, width = (float(v) for v in status.split("window ")[1].split(" \u00b7")[0].split(" / "))
    assert width > 1800 and centre > 400, status
    before = _shown(page)["drawn"]
    page.keyboard.press("r")
    _redrawn(page, before)
    assert np.array_equal(shown(), default), "r returns to the frame's own window"
    assert not page.errors


def test_zoom_pan_and_fit(page, export: Path) -> None:
    rows = read_manifest(export)
    _assert_on(page, rows, 0)
    fit = page.evaluate("() => geometry()")
    box = page.locator("#view").bounding_box()
    x, y = box["x"] + fit["left"] + 10.5 * fit["scale"], box["y"] + fit["top"] + 6.5 * fit["scale"]
    page.mouse.move(x, y)
    page.keyboard.down("Control")
    page.mouse.wheel(0, -120)
    page.keyboard.up("Control")
    page.wait_for_function(f"() => geometry().scale > {fit['scale'] * 1.2}")
    zoomed = page.evaluate("() => geometry()")
    # zoomed about the cursor: the frame point under it stays under it
    assert abs((x - box["x"] - zoomed["left"]) / zoomed["scale"] - 10.5) < 0.05
    assert abs((y - box["y"] - zoomed["top"]) / zoomed["scale"] - 6.5) < 0.05
    assert _shown(page)["index"] == 0, "Ctrl+wheel zooms, it does not change the frame"
    page.mouse.down()
    page.mouse.move(x + 40, y + 25, steps=3)
    page.mouse.up()
    panned = page.evaluate("() => geometry()")
    assert (round(panned["left"] - zoomed["left"]), round(panned["top"] - zoomed["top"])) == (40, 25)
    page.keyboard.press("0")
    assert page.evaluate("() => geometry()") == fit
    page.keyboard.press("+")
    assert page.evaluate("() => geometry()")["scale"] > fit["scale"]
    page.keyboard.press("-")
    assert abs(page.evaluate("() => geometry()")["scale"] - fit["scale"]) < 1e-9
    assert not page.errors


def test_readout_shows_position_value_and_label(page, export: Path) -> None:
    rows = read_manifest(export)
    page.evaluate("show(3)")
    _assert_on(page, rows, 3)
    labels = read_png(export / rows[3]["label_png"])
    header = pydicom.dcmread(export.parent / "dicom" / rows[3]["source_file"])
    fit = page.evaluate("() => geometry()")
    box = page.locator("#view").bounding_box()
    for row, column in ((6, 10), (2, 2), (20, 38)):
        page.mouse.move(box["x"] + fit["left"] + (column + 0.5) * fit["scale"],
                        box["y"] + fit["top"] + (row + 0.5) * fit["scale"])
        text = page.inner_text("#readout")
        value = float(header.pixel_array[row, column]) * float(getattr(header, "RescaleSlope", 1)) + \
            float(getattr(header, "RescaleIntercept", 0))
        ipp, iop = np.array(header.ImagePositionPatient, float), np.array(header.ImageOrientationPatient, float)
        dr, dc = (float(v) for v in header.PixelSpacing)
        lps = ipp + iop[:3] * dc * column + iop[3:] * dr * row
        label = int(labels[row, column])
        assert text.startswith(f"row {row}, column {column} · LPS " + ", ".join(f"{v:.1f}" for v in lps)), text
        assert f"· {value:g} HU ·" in text, (text, value)
        assert text.endswith(NAMES[label] if label else "no label"), (text, label)
    # The next frame by key, the mouse still: the readout gives that frame's value and position, not the last one's.
    page.keyboard.press("ArrowDown")
    page.wait_for_function("() => document.getElementById('readout').dataset.index === '4'")
    header = pydicom.dcmread(export.parent / "dicom" / rows[4]["source_file"])
    value = float(header.pixel_array[20, 38]) * float(getattr(header, "RescaleSlope", 1)) + \
        float(getattr(header, "RescaleIntercept", 0))
    assert float(page.evaluate("() => document.getElementById('readout').dataset.value")) == value
    ipp = np.array(header.ImagePositionPatient, float)
    assert f"LPS {ipp[0] + 38 * float(header.PixelSpacing[1]):.1f}, " in page.inner_text("#readout")
    assert f", {ipp[2]:.1f} mm" in page.inner_text("#readout")
    assert not page.errors


def test_overlapping_segments_are_all_named_and_drawn(browser, tmp_path: Path) -> None:
    """Segments that overlap (three label layers): the readout names every segment under the cursor, layer by
    layer; the canvas shows at every pixel centre exactly the overlay computed here from the label layers (the first
    blended, the others outlined on top), which is the overlay PNG too; hiding a segment of a further layer takes
    its outline away and nothing else."""
    out = write_overlap_case(tmp_path)
    table = {entry["value"]: entry for entry in json.loads((out / "labels.json").read_text(encoding="utf-8"))}
    assert {value: (entry["name"], entry["layer"]) for value, entry in table.items()} == {
        value: (name, value) for value, name in OVERLAP_NAMES.items()}
    colors = {value: tuple(entry["color"]) for value, entry in table.items()}
    rows = read_manifest(out)
    index = 3  # a frame holding all three segments
    row = rows[index]
    layers = [read_png(out / row["label_png"]), read_png(out / row["label_png_2"]), read_png(out / row["label_png_3"])]
    stored = pydicom.dcmread(out.parent / "dicom" / row["source_file"]).pixel_array
    expected = expected_overlay(stored, layers, colors)
    assert np.array_equal(read_png(out / row["overlay_png"]), expected)
    page = open_page(browser, out / "index.html")
    page.evaluate(f"show({index})")
    _shown(page, index)
    page.add_style_tag(content=".letter { visibility: hidden; }")
    assert np.array_equal(_at_pixel_centres(page, OVERLAP_ROWS, OVERLAP_COLUMNS), expected)

    fit = page.evaluate("() => geometry()")
    box = page.locator("#view").bounding_box()
    seen = set()
    for r, c in ((10, 10), (14, 17), (5, 5), (15, 32), (28, 1)):
        page.mouse.move(box["x"] + fit["left"] + (c + 0.5) * fit["scale"], box["y"] + fit["top"] + (r + 0.5) * fit["scale"])
        page.wait_for_function(f"() => document.getElementById('readout').dataset.row === '{r}' && "
                               f"document.getElementById('readout').dataset.column === '{c}'")
        under = [int(layer[r, c]) for layer in layers if layer[r, c]]
        text = page.inner_text("#readout")
        assert text.endswith(" + ".join(OVERLAP_NAMES[v] for v in under) if under else "no label"), (r, c, text)
        assert page.evaluate("() => document.getElementById('readout').dataset.labels") == " ".join(map(str, under))
        seen.add(len(under))
    assert seen == {0, 1, 2, 3}, "pixels in none, one, two and three segments"

    before = _shown(page)["drawn"]
    page.click("#legend-rows tr[data-value='3'] .swatch")
    _redrawn(page, before)
    assert np.array_equal(_at_pixel_centres(page, OVERLAP_ROWS, OVERLAP_COLUMNS), expected_overlay(stored, layers[:2], colors))
    page.context.close()
    assert not page.errors, page.errors


def test_the_page_decodes_every_kind_of_stored_value(page) -> None:
    """The page's own decoder (base64, inflate, undoing the differences) gives back the stored values of every
    kind the export writes, extremes and an empty frame included, with the types the page computes with."""
    import re

    from segalign.writers.images.preview import frame_script

    rng = np.random.default_rng(11)
    cases = {"u2": rng.integers(0, 65536, (9, 13)), "i2": rng.integers(-32768, 32768, (9, 13)),
             "i4": rng.integers(-70000, 70000, (9, 13)), "empty": np.zeros((0, 13), np.int64)}
    cases["u2"].flat[:2], cases["i2"].flat[:2] = (0, 65535), (-32768, 32767)
    for name, stored in cases.items():
        script = frame_script(0, stored, np.zeros(stored.shape, np.uint8))
        _, kind, values, _, _ = re.fullmatch(r'segalignFrame\((\d+),"(\w+)","([^"]*)","(\w+)","([^"]*)"\);\n',
                                             script).groups()
        got = page.evaluate("async ([text, kind]) => { const a = await inflate(text, kind, true); "
                            "return [a.constructor.name, Array.from(a)]; }", [values, kind])
        assert got[0] == {"u2": "Uint16Array", "i2": "Int16Array", "i4": "Int32Array"}[kind], (name, got[0])
        assert got[1] == stored.ravel().tolist(), name


def test_layout_does_not_move_and_the_legend_filters(page, export: Path) -> None:
    rows = read_manifest(export)

    def boxes() -> dict:
        return page.evaluate(
            """() => Object.fromEntries(['view', 'side', 'legend', 'status', 'slider'].map(id => {
                   const r = document.getElementById(id).getBoundingClientRect();
                   return [id, [r.x, r.y, r.width, r.height]]; }))"""
        )

    _assert_on(page, rows, 0)
    first = boxes()
    for key in ("End", "ArrowUp", "Home"):
        page.keyboard.press(key)
        _shown(page, {"End": FRAMES - 1, "ArrowUp": FRAMES - 2, "Home": 0}[key])
        assert boxes() == first, key
    side = first["side"]
    assert side[0] + side[2] <= 1200 and first["view"][0] + first["view"][2] <= side[0] + 1, "side by side"
    assert first["legend"][1] + first["legend"][3] <= 900, "the legend is within the window (its own scroll)"
    page.fill("#filter", "liv")
    visible = page.evaluate("() => [...document.querySelectorAll('#legend-rows tr')].filter(r => !r.classList.contains('hidden'))"
                            ".map(r => r.querySelector('.name').textContent)")
    assert visible == [NAMES[1]], visible
    page.fill("#filter", "")
    assert page.evaluate("() => document.querySelectorAll('#legend-rows tr.hidden').length") == 0
    page.focus("#filter")
    page.keyboard.press("End")  # typing in the filter does not move through the frames
    assert page.evaluate("() => document.getElementById('view').dataset.index") == "0"
    assert not page.errors


ORIENTATIONS = {
    # IOP: expected letters at the (left, right, top, bottom) edges, as radiologists read them
    "axial": ((1, 0, 0, 0, 1, 0), ("R", "L", "A", "P")),
    "coronal": ((1, 0, 0, 0, 0, -1), ("R", "L", "S", "I")),
    "sagittal": ((0, 1, 0, 0, 0, -1), ("A", "P", "S", "I")),
    "oblique": ((0.8660254, 0.5, 0, 0, 0, -1), ("RA", "LP", "S", "I")),
    "prone": ((-1, 0, 0, 0, -1, 0), ("L", "R", "P", "A")),
}


@pytest.mark.parametrize("name", sorted(ORIENTATIONS))
def test_orientation_letters_and_readout(browser, tmp_path: Path, name: str) -> None:
    orientation, expected = ORIENTATIONS[name]
    normal = np.cross(orientation[:3], orientation[3:])
    specs = stack((-12.0, -9.0, -15.0), 3, tuple(2.0 * normal), orientation=orientation, spacing=(1.5, 1.0),
                  rows=20, columns=30)
    write_series(tmp_path / "dicom", specs)
    affine = grid_affine((-40.0, -40.0, -40.0), (2.0, 2.0, 2.0), [(1, 0, 0), (0, 1, 0), (0, 0, 1)])
    labels = np.zeros((40, 40, 40), np.uint8)
    labels[5:35, 5:35, 5:35] = 1
    write_nifti(tmp_path / "seg.nii.gz", labels, affine)
    assert run_cli("export", tmp_path / "dicom", tmp_path / "seg.nii.gz", "-o", tmp_path / "out", "--overlays",
                   "-q").code == 0
    page = open_page(browser, tmp_path / "out" / "index.html", 1000, 700)
    page.wait_for_function("() => document.getElementById('view').dataset.drawn")
    letters = page.evaluate("() => ['left', 'right', 'top', 'bottom'].map(id => { "
                            "const e = document.getElementById('letter-' + id); const r = e.getBoundingClientRect(); "
                            "return [e.textContent, r.x + r.width / 2, r.y + r.height / 2]; })")
    assert tuple(text for text, _, _ in letters) == expected
    box = page.locator("#view").bounding_box()
    fit = page.evaluate("() => geometry()")
    scale, left, top = fit["scale"], box["x"] + fit["left"], box["y"] + fit["top"]
    (_, lx, ly), (_, rx, ry), (_, tx, ty), (_, bx, by) = letters
    assert left <= lx < left + 0.2 * 30 * scale < rx <= left + 30 * scale, "left and right edges of the image"
    assert top <= ty < top + 0.2 * 20 * scale < by <= top + 20 * scale, "top and bottom edges"
    # The readout under the cursor: row, column and the LPS position from the frame's own tags.
    row, column = 7, 11
    page.mouse.move(left + (column + 0.5) * scale, top + (row + 0.5) * scale)
    readout = page.inner_text("#readout").split(" mm")[0] + " mm"
    header = pydicom.dcmread(sorted((tmp_path / "dicom").glob("*.dcm"))[0], stop_before_pixels=True)
    ipp, iop = np.array(header.ImagePositionPatient, float), np.array(header.ImageOrientationPatient, float)
    dr, dc = (float(v) for v in header.PixelSpacing)
    lps = ipp + iop[:3] * dc * column + iop[3:] * dr * row
    assert readout == f"row {row}, column {column} · LPS " + ", ".join(f"{v:.1f}" for v in lps) + " mm", readout
    page.context.close()
    assert not page.errors, page.errors


def test_a_1000_frame_page_opens_and_pages_quickly(browser, tmp_path_factory) -> None:
    """Measured, reported (``-s`` shows it), not asserted on timing: page open to first frame drawn, and the mean
    time to show a new frame (script load, inflate, render), over 1000 frames of 256 x 256."""
    import time

    root = tmp_path_factory.mktemp("thousand")
    specs = stack((-64.0, -64.0, 0.0), 1000, (0, 0, 0.5), rows=256, columns=256, spacing=(0.5, 0.5))
    write_series(root / "dicom", specs, pixel_function=lambda spec: np.full((256, 256), 1024 + int(spec.position[2]),
                                                                            np.uint16))
    labels = np.zeros((128, 128, 250), np.uint8)
    labels[20:100, 30:90, :] = 1
    labels[60:80, 60:70, 100:200] = 2
    write_nifti(root / "seg.nii.gz", labels, grid_affine((-64.0, -64.0, 0.0), (1.0, 1.0, 2.0)))
    started = time.monotonic()
    assert run_cli("export", root / "dicom", root / "seg.nii.gz", "-o", root / "out", "--overlays", "-q").code == 0
    exported = time.monotonic() - started
    page = open_page(browser, root / "out" / "index.html", 1400, 900)
    page.wait_for_function("() => document.getElementById('view').dataset.drawn")
    first = page.evaluate("() => performance.now()")  # since the navigation started (at most this: polling)
    timings = page.evaluate(
        """async () => { const times = [];
             for (let i = 1; i <= 60; i++) { const t = performance.now(); await show(i * 15); times.push(performance.now() - t); }
             return times; }"""
    )
    assert page.evaluate("() => document.getElementById('view').dataset.index") == "900"
    page.context.close()
    assert not page.errors and all(url.startswith("file://") for url in page.requests), page.errors
    print(f"\n1000-frame export {exported:.1f} s; page open to first frame {first:.0f} ms; new frame "
          f"{np.mean(timings):.1f} ms mean, {np.max(timings):.1f} ms max")


#: Real series of ../shared/testdata: the DICOM folder and a NIfTI on its grid. A reference volume is cut into
#: levels at its 50th, 80th and 95th percentiles (three labels that follow the anatomy); a segmentation is used as is.
REAL_SERIES = {
    "totalsegmentator_ct": ("totalsegmentator_example/ct_dicom", "totalsegmentator_example/segmentation_ml.nii.gz"),
    "ge_gantry_tilt": ("dcm_qa_ct_ge_tilt/dicom", "dcm_qa_ct_ge_tilt/ref_dcm2niix/_2_Tilt_Eq_1.nii.gz"),
    "decubitus_sagittal": ("dcm_qa_decubitus/HFDR", "dcm_qa_decubitus/ref_dcm2niix/HFDR/t1_fl2d_sag_2.nii.gz"),
    "canon_enhanced_oblique": ("dcm_qa_canon_sag_oblique/enhanced",
                               "dcm_qa_canon_sag_oblique/ref_dcm2niix/11000_SAG_DTI_PA-ALL_20d_enh.nii.gz"),
    "siemens_mosaic": ("dcm_qa_ts_mosaic/dicom_explicit", "dcm_qa_ts_mosaic/ref_dcm2niix/1.nii"),
}


def _levels_segmentation(reference: Path, path: Path) -> Path:
    import nibabel as nib

    image = nib.load(reference)
    values = np.asanyarray(image.dataobj)
    values = values[..., 0] if values.ndim == 4 else values
    labels = sum((values > threshold).astype(np.uint8) for threshold in np.quantile(values, [0.5, 0.8, 0.95]) + 0.5)
    nib.save(nib.Nifti1Image(np.asarray(labels, np.uint8), image.affine, header=image.header), path)
    return path


def _letters(vector: list[float]) -> str:
    """Patient directions of a unit vector, components of at least 0.1, largest first (the test's own)."""
    names = [("L", "R"), ("P", "A"), ("S", "I")]
    order = sorted(range(3), key=lambda axis: -abs(vector[axis]))
    return "".join(names[a][0 if vector[a] > 0 else 1] for a in order if abs(vector[a]) >= 0.1)


def _floats(text: str) -> np.ndarray:
    return np.array([float(v) for v in text.split()])


@pytest.mark.parametrize("case", sorted(REAL_SERIES))
def test_real_series_in_the_page(browser, testdata: Path, tmp_path: Path, case: str) -> None:
    """Each real series: the first, middle and last frames show exactly their overlay PNGs; the status names the
    InstanceNumber and, in a multi-frame file, the frame; the edge letters follow the frame's IOP; the readout gives
    the row and column, the LPS position through the frame's (or the mosaic tile's) own plane, the stored value as
    the modality value of the 16-bit image PNG, and the label of the label PNG."""
    from conftest import require

    dicom, nifti = (require(testdata / part) for part in REAL_SERIES[case])
    segmentation = nifti if case == "totalsegmentator_ct" else _levels_segmentation(nifti, tmp_path / "seg.nii.gz")
    out = tmp_path / "out"
    run = run_cli("export", dicom, segmentation, "-o", out, "--overlays", "--images", "-q")
    assert run.code == 0, run.stderr
    rows = read_manifest(out)
    tiles = {}
    if (out / "tiles.csv").exists():
        import csv

        with open(out / "tiles.csv", newline="") as handle:
            for tile in csv.DictReader(handle):
                tiles.setdefault(int(tile["index"]), []).append(tile)
    page = open_page(browser, out / "index.html", 1000, 700)
    page.wait_for_function("() => document.getElementById('view').dataset.drawn")
    page.add_style_tag(content=".letter { visibility: hidden; }")  # the letters' text, not their pixels, is checked
    for index in sorted({0, len(rows) // 2, len(rows) - 1}):
        row = rows[index]
        page.evaluate(f"() => show({index})")
        status = _shown(page, index)["status"]
        shape = int(row["rows"]), int(row["columns"])
        assert np.array_equal(_at_pixel_centres(page, *shape), read_png(out / row["overlay_png"])), row["overlay_png"]
        header = pydicom.dcmread(dicom / row["source_file"], stop_before_pixels=True)
        frame_text = f"InstanceNumber {row['instance_number']} \u00b7 frame {row['frame']}"
        if int(getattr(header, "NumberOfFrames", 1) or 1) > 1:
            assert frame_text in status, status
        else:
            assert f"InstanceNumber {row['instance_number']}" in status and frame_text not in status, status
        iop = _floats(row["image_orientation_patient"])
        shown = page.evaluate("() => ['right', 'bottom', 'left', 'top'].map(id => "
                              "document.getElementById('letter-' + id).textContent)")
        assert shown[:2] == [_letters(iop[:3]), _letters(iop[3:])], shown
        assert shown[2:] == [_letters(-iop[:3]), _letters(-iop[3:])], shown

        # The readout at a pixel inside the frame (inside the first tile of a mosaic).
        plane = tiles[index][0] if index in tiles else row
        top_left = (int(plane.get("tile_row_offset", 0)), int(plane.get("tile_column_offset", 0)))
        r, c = top_left[0] + int(plane["rows"]) // 3, top_left[1] + int(plane["columns"]) // 2
        box = page.locator("#view").bounding_box()
        fit = page.evaluate("() => geometry()")
        page.evaluate("() => { const d = document.getElementById('readout').dataset; for (const k in d) delete d[k]; }")
        page.mouse.move(box["x"] + fit["left"] + (c + 0.5) * fit["scale"], box["y"] + fit["top"] + (r + 0.5) * fit["scale"])
        page.wait_for_function(f"() => {{ const d = document.getElementById('readout').dataset; "
                               f"return d.index === '{index}' && d.row === '{r}' && d.column === '{c}'; }}")
        readout = page.evaluate("() => ({text: document.getElementById('readout').textContent, "
                                "...document.getElementById('readout').dataset})")
        ipp, orientation = _floats(plane["image_position_patient"]), _floats(plane["image_orientation_patient"])
        dr, dc = _floats(plane["pixel_spacing"])
        lps = ipp + orientation[:3] * dc * (c - top_left[1]) + orientation[3:] * dr * (r - top_left[0])
        assert "LPS " + ", ".join(f"{v:.1f}" for v in lps) + " mm" in readout["text"], (readout["text"], lps)
        if index in tiles:
            assert f"tile {plane['tile']} \u00b7 LPS" in readout["text"], readout["text"]
        stored = int(read_png(out / row["image_png"])[r, c])
        modality = stored * float(row["image_slope"]) + float(row["image_intercept"])
        assert float(readout["value"]) == pytest.approx(modality, abs=1e-6)
        assert int(readout["label"]) == int(read_png(out / row["label_png"])[r, c])
        if index in tiles:
            covered = np.zeros(shape, bool)  # a pixel between the tiles lies on no slice, and the readout says so
            for tile in tiles[index]:
                r0, c0 = int(tile["tile_row_offset"]), int(tile["tile_column_offset"])
                covered[r0:r0 + int(tile["rows"]), c0:c0 + int(tile["columns"])] = True
            assert not covered.all(), "the mosaic has an empty cell"
            r, c = (int(v) for v in np.argwhere(~covered)[0])
            page.mouse.move(box["x"] + fit["left"] + (c + 0.5) * fit["scale"],
                            box["y"] + fit["top"] + (r + 0.5) * fit["scale"])
            page.wait_for_function(f"() => document.getElementById('readout').dataset.row === '{r}' && "
                                   f"document.getElementById('readout').dataset.column === '{c}'")
            assert "no slice here" in page.inner_text("#readout") and "LPS" not in page.inner_text("#readout")
    page.context.close()
    assert not page.errors, page.errors
    assert all(url.startswith("file://") for url in page.requests)
