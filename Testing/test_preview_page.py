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
from segalign.synthetic import SeriesIdentity, grid_affine, stack, write_nifti, write_series

CHROMIUM = "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else shutil.which("chromium")
if not CHROMIUM:
    pytest.skip("no chromium browser (/usr/bin/chromium or chromium on PATH) for the preview page test",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the python playwright package is not installed")

LAUNCH_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]
FRAMES, ROWS, COLUMNS = 12, 24, 40
ORIGIN_LPS = (10.0, 20.0, 30.0)
STEP = 2.0
#: names that would break naive HTML building
NAMES = {1: "liver <b>&amp;</b>", 2: "kidney_left", 3: "aorta", 9: "outside_the_series"}
COLORS = {1: (221, 130, 101), 2: (0, 128, 255), 3: (10, 200, 30), 9: (255, 255, 0)}


def _label_table_xml() -> str:
    entries = "".join(
        f'<Label Key="{v}" Red="{c[0] / 255}" Green="{c[1] / 255}" Blue="{c[2] / 255}" Alpha="1">'
        f"<![CDATA[{NAMES[v]}]]></Label>"
        for v, c in COLORS.items()
    )
    return f'<?xml version="1.0"?><CaretExtension><VolumeInformation Index="0"><LabelTable>{entries}' \
        "</LabelTable></VolumeInformation></CaretExtension>"


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """12 frames, InstanceNumber 101..112 counting against z, each frame's pixels distinct; labels 1 on slices
    2..5, 2 on 6..10, 3 on every slice, 9 only on a slice beyond the series (so it is on no frame: a warning)."""
    root = tmp_path_factory.mktemp("preview")
    specs = stack(
        ORIGIN_LPS, FRAMES, (0, 0, STEP), rows=ROWS, columns=COLUMNS,
        instance_numbers=[112 - k for k in range(FRAMES)],
    )

    def pixels(spec):
        k = round((spec.position[2] - ORIGIN_LPS[2]) / STEP)
        return (np.arange(ROWS * COLUMNS).reshape(ROWS, COLUMNS) * (k + 1) * 3) % 2000 + 500

    write_series(root / "dicom", specs, pixel_function=pixels, identity=SeriesIdentity(description="preview test"))
    volume = np.zeros((COLUMNS, ROWS, FRAMES + 1), np.uint8)
    volume[5:20, 3:12, 2:6] = 1
    volume[22:35, 10:20, 6:11] = 2
    volume[1:4, 1:4, :FRAMES] = 3
    volume[10:20, 5:10, FRAMES] = 9
    seg = write_nifti(
        root / "seg.nii.gz", volume, grid_affine(ORIGIN_LPS, (1.0, 1.0, STEP)), label_table_xml=_label_table_xml()
    )
    out = root / "out"
    run = run_cli("export", root / "dicom", seg, "-o", out, "-q", "--overlays")
    assert run.code == 0, run.stderr
    return out


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser, export: Path):
    context = browser.new_context(viewport={"width": 1200, "height": 900}, device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(5000)  # everything is local: a wait this long means the page did not react
    page.requests = []  # type: ignore[attr-defined]
    page.errors = []  # type: ignore[attr-defined]
    page.on("request", lambda request: page.requests.append(request.url))
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.goto((export / "index.html").as_uri())
    yield page
    context.close()


def _shown(page) -> dict:
    """Wait for the displayed image to finish loading; its src, size, index and the status text."""
    page.wait_for_function("() => { const i = document.getElementById('frame'); return i.complete && i.naturalWidth > 0; }")
    return page.evaluate(
        """() => { const i = document.getElementById('frame');
                   return {src: i.src, width: i.naturalWidth, height: i.naturalHeight, index: Number(i.dataset.index),
                           status: document.getElementById('status').textContent}; }"""
    )


def _assert_on(page, rows: list[dict], index: int) -> None:
    shown = _shown(page)
    row = rows[index]
    assert shown["src"].endswith("/" + row["overlay_png"]), (index, shown["src"])
    assert shown["index"] == index
    assert (shown["width"], shown["height"]) == (int(row["columns"]), int(row["rows"]))
    assert f"Frame {index + 1} of {len(rows)}" in shown["status"]
    assert f"InstanceNumber {row['instance_number']}" in shown["status"], shown["status"]


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
    box = page.locator("#frame").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, 120)
    page.wait_for_function("() => document.getElementById('frame').dataset.index === '2'")
    _assert_on(page, rows, 2)
    page.mouse.wheel(0, -120)
    page.wait_for_function("() => document.getElementById('frame').dataset.index === '1'")
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
        page.click(f"#legend-rows tr[data-value='{value}']")
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


def test_only_local_files_and_the_view_really_changes(page, export: Path, tmp_path: Path) -> None:
    rows = read_manifest(export)
    _assert_on(page, rows, 0)
    page.add_style_tag(content=".letter { visibility: hidden; }")  # the orientation letters are tested below
    box = page.locator("#frame").bounding_box()
    # The image's box, snapped to whole pixels the way the layout is painted (its top may be fractional).
    clip = {"x": round(box["x"]), "y": round(box["y"]), "width": round(box["width"]), "height": round(box["height"])}
    first = tmp_path / "frame_1.png"
    page.screenshot(path=str(first), clip=clip)
    page.keyboard.press("End")
    _assert_on(page, rows, FRAMES - 1)
    last = tmp_path / "frame_last.png"
    page.screenshot(path=str(last), clip=clip)
    shot_first, shot_last = read_png(first), read_png(last)
    assert shot_first.shape == shot_last.shape
    assert np.any(shot_first != shot_last), "the screenshots of two frames differ"
    # The image fills the stage (object-fit: contain), enlarged with nearest neighbour: at the centre of each
    # source pixel the screen shows that pixel of the overlay PNG.
    for shot, row in ((shot_first, rows[0]), (shot_last, rows[-1])):
        expected = read_png(export / row["overlay_png"])
        height, width = expected.shape[:2]
        scale = min(clip["width"] / width, clip["height"] / height)
        assert scale > 4, "a small image is enlarged to the space it has"
        top, left = (clip["height"] - height * scale) / 2, (clip["width"] - width * scale) / 2
        ys = np.floor(top + (np.arange(height) + 0.5) * scale).astype(int)
        xs = np.floor(left + (np.arange(width) + 0.5) * scale).astype(int)
        sampled = shot[ys][:, xs, :3].astype(int)
        assert np.abs(sampled - expected.astype(int)).max() <= 2, row["overlay_png"]
    assert page.requests, "the page's own loads are seen"
    assert all(url.startswith("file://") for url in page.requests), [u for u in page.requests if not u.startswith("file://")]
    assert any(url.endswith(rows[-1]["overlay_png"]) for url in page.requests)
    assert not page.errors


def test_layout_does_not_move_and_the_legend_filters(page, export: Path) -> None:
    rows = read_manifest(export)

    def boxes() -> dict:
        return page.evaluate(
            """() => Object.fromEntries(['frame', 'side', 'legend', 'status', 'slider'].map(id => {
                   const r = document.getElementById(id).getBoundingClientRect();
                   return [id, [r.x, r.y, r.width, r.height]]; }))"""
        )

    _assert_on(page, rows, 0)
    first = boxes()
    for key in ("End", "ArrowUp", "Home"):
        page.keyboard.press(key)
        page.wait_for_function("() => document.getElementById('frame').complete")
        assert boxes() == first, key
    side = first["side"]
    assert side[0] + side[2] <= 1200 and first["frame"][0] + first["frame"][2] <= side[0] + 1, "side by side"
    assert first["legend"][1] + first["legend"][3] <= 900, "the legend is within the window (its own scroll)"
    page.fill("#filter", "liv")
    visible = page.evaluate("() => [...document.querySelectorAll('#legend-rows tr')].filter(r => !r.classList.contains('hidden'))"
                            ".map(r => r.querySelector('.name').textContent)")
    assert visible == [NAMES[1]], visible
    page.fill("#filter", "")
    assert page.evaluate("() => document.querySelectorAll('#legend-rows tr.hidden').length") == 0
    page.focus("#filter")
    page.keyboard.press("End")  # typing in the filter does not move through the frames
    assert page.evaluate("() => document.getElementById('frame').dataset.index") == "0"
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
    context = browser.new_context(viewport={"width": 1000, "height": 700}, device_scale_factor=1)
    page = context.new_page()
    page.goto((tmp_path / "out" / "index.html").as_uri())
    page.wait_for_function("() => document.getElementById('frame').complete")
    letters = page.evaluate("() => ['left', 'right', 'top', 'bottom'].map(id => { "
                            "const e = document.getElementById('letter-' + id); const r = e.getBoundingClientRect(); "
                            "return [e.textContent, r.x + r.width / 2, r.y + r.height / 2]; })")
    assert tuple(text for text, _, _ in letters) == expected
    box = page.locator("#frame").bounding_box()
    scale = min(box["width"] / 30, box["height"] / 20)
    left, top = box["x"] + (box["width"] - 30 * scale) / 2, box["y"] + (box["height"] - 20 * scale) / 2
    (_, lx, ly), (_, rx, ry), (_, tx, ty), (_, bx, by) = letters
    assert left <= lx < left + 0.2 * 30 * scale < rx <= left + 30 * scale, "left and right edges of the image"
    assert top <= ty < top + 0.2 * 20 * scale < by <= top + 20 * scale, "top and bottom edges"
    # The readout under the cursor: row, column and the LPS position from the frame's own tags.
    row, column = 7, 11
    page.mouse.move(left + (column + 0.5) * scale, top + (row + 0.5) * scale)
    readout = page.inner_text("#readout")
    header = pydicom.dcmread(sorted((tmp_path / "dicom").glob("*.dcm"))[0], stop_before_pixels=True)
    ipp, iop = np.array(header.ImagePositionPatient, float), np.array(header.ImageOrientationPatient, float)
    dr, dc = (float(v) for v in header.PixelSpacing)
    lps = ipp + iop[:3] * dc * column + iop[3:] * dr * row
    assert readout == f"row {row}, column {column} · LPS " + ", ".join(f"{v:.1f}" for v in lps) + " mm", readout
    context.close()
