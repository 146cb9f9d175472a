"""The preview page in Firefox (Debian's firefox-esr, driven through Marionette, its own remote protocol, with
Mozilla's ``marionette_driver``; no geckodriver and no download), opened from the file system.

The same case as the Chromium tests (preview_cases.py). Firefox decodes, blends and scales with its own engine, so
these tests check that what it shows at every pixel centre is the export's overlay PNG, that keys change what they
should, and that the page logs no error.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from conftest import read_manifest, read_png
from preview_cases import (
    COLUMNS, FRAMES, OVERLAP_COLUMNS, OVERLAP_NAMES, OVERLAP_ROWS, ROWS, expected_overlay, pixel_centres_script,
    write_case, write_overlap_case,
)

FIREFOX = shutil.which("firefox-esr") or shutil.which("firefox")
if not FIREFOX:
    pytest.skip("no Firefox (firefox-esr or firefox on PATH) for the preview page's Firefox test",
                allow_module_level=True)
marionette = pytest.importorskip("marionette_driver.marionette",
                                 reason="the python marionette_driver package is not installed")
from marionette_driver.keys import Keys  # noqa: E402

#: Content console messages go to Firefox's own output (the gecko log), where the test reads them.
PREFS = {"devtools.console.stdout.content": True, "browser.shell.checkDefaultBrowser": False}


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    return write_case(tmp_path_factory.mktemp("preview-firefox"))


@pytest.fixture(scope="module")
def firefox(tmp_path_factory):
    """A headless Firefox with Marionette on a free port of 127.0.0.1, quit however the tests end."""
    log = tmp_path_factory.mktemp("gecko") / "gecko.log"
    client = marionette.Marionette(bin=FIREFOX, headless=True, port=0, gecko_log=str(log), prefs=PREFS,
                                   startup_timeout=60, socket_timeout=60)
    try:
        client.start_session()
        client.set_window_rect(width=1200, height=900)
        client.timeout.script = 10
        client.log_path = log  # type: ignore[attr-defined]
        yield client
    finally:
        client.cleanup()  # ends the session and quits Firefox


@pytest.fixture
def opened(firefox, export: Path):
    """The page opened in Firefox; afterwards, nothing Firefox printed while the test ran is an error or warning
    (content console messages, uncaught exceptions)."""
    offset = Path(firefox.log_path).stat().st_size
    _open(firefox, export)
    yield firefox
    _assert_quiet(firefox, offset)


def _assert_quiet(firefox, offset: int) -> None:
    """Nothing Firefox printed after ``offset`` of its log is an error or warning."""
    time.sleep(0.5)  # Firefox's output reaches the log through a thread of mozrunner's
    with open(firefox.log_path, "rb") as log:
        log.seek(offset)
        printed = log.read().decode(errors="replace").splitlines()
    problems = ("console.error", "console.warn", "JavaScript error", "JavaScript warning")
    assert not [line for line in printed if line.startswith(problems)], printed


def _js(firefox, script: str):
    """Run ``script`` in the page's own scope (not Marionette's sandbox), where the page's functions are."""
    return firefox.execute_script(script, sandbox=None)


def _open(firefox, export: Path) -> None:
    firefox.navigate((export / "index.html").as_uri())
    _wait(firefox, "return document.getElementById('view').dataset.drawn")


def _wait(firefox, script: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = _js(firefox, script)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"the page did not get there in {timeout} s: {script}")


def _press(firefox, *keys: str) -> int:
    """Press ``keys`` one after the other; returns the draw count from before."""
    before = int(_js(firefox, "return Number(document.getElementById('view').dataset.drawn)"))
    sequence = firefox.actions.sequence("key", "keyboard")
    for key in keys:
        sequence.key_down(key).key_up(key)
    sequence.perform()
    return before


def _redrawn_on(firefox, before: int, index: int) -> None:
    _wait(firefox, f"const c = document.getElementById('view'); "
                   f"return Number(c.dataset.drawn) > {before} && c.dataset.index === '{index}'")


def _centres(firefox) -> np.ndarray:
    flat = _js(firefox, pixel_centres_script(ROWS, COLUMNS))
    return np.array(flat, dtype=np.uint8).reshape(ROWS, COLUMNS, 3)


def test_firefox_shows_the_overlays_and_follows_the_keys(opened, export: Path) -> None:
    firefox, rows = opened, read_manifest(export)
    assert _js(firefox, "return typeof DecompressionStream") == "function"
    for index, key in ((FRAMES - 1, Keys.END), (0, Keys.HOME), (1, Keys.DOWN)):
        _redrawn_on(firefox, _press(firefox, key), index)
        assert np.array_equal(_centres(firefox), read_png(export / rows[index]["overlay_png"])), index
        status = _js(firefox, "return document.getElementById('status').textContent")
        assert f"Frame {index + 1} of {FRAMES}" in status and f"InstanceNumber {rows[index]['instance_number']}" in status

    labels = read_png(export / rows[1]["label_png"])
    shown = _centres(firefox)
    _redrawn_on(firefox, _press(firefox, "o"), 1)  # overlay off: labelled pixels turn grey, nothing else changes
    off = _centres(firefox)
    assert np.array_equal(off[labels == 0], shown[labels == 0])
    inside = off[labels != 0]
    assert (inside[:, 0] == inside[:, 1]).all() and (inside[:, 1] == inside[:, 2]).all()
    assert np.any(inside != shown[labels != 0])
    _redrawn_on(firefox, _press(firefox, "o"), 1)
    assert np.array_equal(_centres(firefox), shown)
    _redrawn_on(firefox, _press(firefox, "2"), 1)  # the bone window: other grey values outside the labels
    assert np.any(_centres(firefox)[labels == 0] != shown[labels == 0])
    assert "window 400 / 1800" in _js(firefox, "return document.getElementById('status-view').textContent")
    _redrawn_on(firefox, _press(firefox, "r"), 1)
    assert np.array_equal(_centres(firefox), shown)
    fitted = _js(firefox, "return geometry().scale")
    _redrawn_on(firefox, _press(firefox, "+"), 1)
    assert _js(firefox, "return geometry().scale") == pytest.approx(fitted * 1.25)
    _redrawn_on(firefox, _press(firefox, "0"), 1)
    assert _js(firefox, "return geometry().scale") == pytest.approx(fitted)


def test_firefox_readout_outline_and_last_frame(opened, export: Path) -> None:
    firefox, rows = opened, read_manifest(export)
    box = _js(firefox, "const r = document.getElementById('view').getBoundingClientRect(), g = geometry();"
                                 "return [r.x + g.left, r.y + g.top, g.scale]")
    left, top, scale = box
    row, column = 4, 7
    pointer = firefox.actions.sequence("pointer", "mouse", pointer_params={"pointerType": "mouse"})
    pointer.pointer_move(int(left + (column + 0.5) * scale), int(top + (row + 0.5) * scale)).perform()
    readout = _wait(firefox, "const e = document.getElementById('readout'); return e.textContent && e.dataset")
    assert (int(readout["row"]), int(readout["column"])) == (row, column)
    label = read_png(export / rows[0]["label_png"])[row, column]
    assert int(readout["label"]) == int(label)
    _redrawn_on(firefox, _press(firefox, Keys.END), FRAMES - 1)  # the readout follows the frame under the mouse
    _wait(firefox, f"return document.getElementById('readout').dataset.index === '{FRAMES - 1}'")
    assert int(_js(firefox, "return Number(document.getElementById('readout').dataset.label)")) == \
        int(read_png(export / rows[FRAMES - 1]["label_png"])[row, column])
    last_labels = read_png(export / rows[FRAMES - 1]["label_png"])
    filled = _centres(firefox)
    _redrawn_on(firefox, _press(firefox, "l"), FRAMES - 1)  # outline: label interiors turn grey, edges keep colour
    lines = _centres(firefox)
    assert np.array_equal(lines[last_labels == 0], filled[last_labels == 0])
    assert np.any(lines[last_labels != 0] != filled[last_labels != 0])


def test_firefox_draws_and_names_overlapping_segments(firefox, tmp_path: Path) -> None:
    """Segments that overlap (three label layers): what Firefox shows at every pixel centre is the overlay computed
    here (the first layer blended, the others outlined on top), and the readout at a pixel inside all three names
    them all, layer by layer."""
    out = write_overlap_case(tmp_path)
    offset = Path(firefox.log_path).stat().st_size
    _open(firefox, out)
    colors = {entry["value"]: tuple(entry["color"])
              for entry in json.loads((out / "labels.json").read_text(encoding="utf-8"))}
    row = read_manifest(out)[3]
    layers = [read_png(out / row[column]) for column in ("label_png", "label_png_2", "label_png_3")]
    stored = pydicom.dcmread(out.parent / "dicom" / row["source_file"]).pixel_array
    _js(firefox, "show(3)")
    _wait(firefox, "return document.getElementById('view').dataset.index === '3'")
    _js(firefox, "document.querySelectorAll('.letter').forEach(e => e.style.visibility = 'hidden')")
    flat = _js(firefox, pixel_centres_script(OVERLAP_ROWS, OVERLAP_COLUMNS))
    shown = np.array(flat, dtype=np.uint8).reshape(OVERLAP_ROWS, OVERLAP_COLUMNS, 3)
    assert np.array_equal(shown, expected_overlay(stored, layers, colors))
    left, top, scale = _js(firefox, "const r = document.getElementById('view').getBoundingClientRect(), "
                                    "g = geometry(); return [r.x + g.left, r.y + g.top, g.scale]")
    r, c = 14, 17
    assert all(layer[r, c] for layer in layers), "a pixel inside all three segments"
    pointer = firefox.actions.sequence("pointer", "mouse", pointer_params={"pointerType": "mouse"})
    pointer.pointer_move(int(left + (c + 0.5) * scale), int(top + (r + 0.5) * scale)).perform()
    readout = _wait(firefox, "const e = document.getElementById('readout'); "
                             "return e.dataset.row && {text: e.textContent, ...e.dataset}")
    assert (int(readout["row"]), int(readout["column"])) == (r, c)
    assert readout["text"].endswith(" + ".join(OVERLAP_NAMES[v] for v in (1, 2, 3))), readout["text"]
    _assert_quiet(firefox, offset)
