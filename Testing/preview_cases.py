"""The preview page's test cases, shared by the Chromium (test_preview_page.py) and Firefox tests, and the overlay
as documented, computed exactly here (:func:`expected_overlay`, also for test_overlap_outputs.py)."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np

from conftest import run_cli
from segalign.synthetic import SeriesIdentity, grid_affine, stack, write_nifti, write_series

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


def write_case(root: Path) -> Path:
    """An --overlays export under ``root``, returned: 12 frames, InstanceNumber 101..112 counting against z, each
    frame's pixels distinct; labels 1 on slices 2..5, 2 on 6..10, 3 on every slice, 9 only on a slice beyond the
    series (so it is on no frame: a warning)."""
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



#: The overlapping case: a folder of masks (values 1, 2, 3 in file-name order) on a 6-frame series.
OVERLAP_FRAMES, OVERLAP_ROWS, OVERLAP_COLUMNS = 6, 30, 36
OVERLAP_NAMES = {1: "a_body", 2: "b_organ", 3: "c_cross"}


def write_overlap_case(root: Path) -> Path:
    """An --overlays export under ``root`` of a segmentation whose segments overlap, returned: a body around an
    organ, and a bar crossing both and leaving the body (three label layers). The frames' pixels are a ramp, so the
    blend differs from pixel to pixel."""
    specs = stack(ORIGIN_LPS, OVERLAP_FRAMES, (0, 0, STEP), rows=OVERLAP_ROWS, columns=OVERLAP_COLUMNS)

    def pixels(spec):
        k = round((spec.position[2] - ORIGIN_LPS[2]) / STEP)
        return (np.arange(OVERLAP_ROWS * OVERLAP_COLUMNS).reshape(OVERLAP_ROWS, OVERLAP_COLUMNS) + 900 + 7 * k) % 1400

    write_series(root / "dicom", specs, pixel_function=pixels, identity=SeriesIdentity(description="overlaps"))
    shape = (OVERLAP_COLUMNS, OVERLAP_ROWS, OVERLAP_FRAMES)  # [column, row, frame]
    boxes = {1: np.s_[3:30, 2:26, :], 2: np.s_[8:20, 6:18, 1:5], 3: np.s_[15:34, 12:22, 2:6]}
    for value, box in boxes.items():
        mask = np.zeros(shape, np.uint8)
        mask[box] = 1
        write_nifti(root / "masks" / f"{OVERLAP_NAMES[value]}.nii.gz", mask, grid_affine(ORIGIN_LPS, (1.0, 1.0, STEP)))
    out = root / "out"
    run = run_cli("export", root / "dicom", root / "masks", "-o", out, "-q", "--overlays")
    assert run.code == 0, run.stderr
    return out


def pixel_centres_script(rows: int, columns: int) -> str:
    """A script returning, as a flat RGB list, what the canvas shows at the centre of every frame pixel through
    the page's own geometry (fit, zoom, pan), read from the canvas itself."""
    return f"""const c = document.getElementById('view'), box = geometry();
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data, out = [];
      for (let r = 0; r < {rows}; r++) for (let k = 0; k < {columns}; k++) {{
        const y = Math.floor(box.top + (r + 0.5) * box.scale), x = Math.floor(box.left + (k + 0.5) * box.scale);
        const i = 4 * (y * c.width + x); out.push(d[i], d[i + 1], d[i + 2]); }}
      return out;"""


HALF = Fraction(1, 2)


def expected_overlay(stored: np.ndarray, layers: list[np.ndarray], colors: dict[int, tuple], alpha: str = "0.4",
                     window: tuple[int, int] = (40, 400), intercept: int = -1024) -> np.ndarray:
    """The overlay as documented, computed exactly here: the frame through the DICOM linear window onto 0..255
    (halves up), layer 1 blended ``floor((1 - alpha) g + alpha C + 1/2)``, then every further layer's boundary
    pixels (a labelled pixel with a 4-neighbour of another value inside the image) in their colours."""
    c, w, a = Fraction(window[0]), Fraction(window[1]), Fraction(alpha)

    def grey(value: int) -> int:
        x = Fraction(int(value) + intercept)
        if x <= c - HALF - (w - 1) / 2:
            return 0
        if x > c - HALF + (w - 1) / 2:
            return 255
        return math.floor(((x - (c - HALF)) / (w - 1) + HALF) * 255 + HALF)

    gray = np.vectorize(grey)(stored).astype(np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    for (r, col), value in np.ndenumerate(layers[0]):
        if value:
            rgb[r, col] = [math.floor((1 - a) * int(gray[r, col]) + a * channel + HALF) for channel in colors[value]]
    for layer in layers[1:]:
        rows, columns = layer.shape
        for (r, col), value in np.ndenumerate(layer):
            if value and any(0 <= r + dr < rows and 0 <= col + dc < columns and layer[r + dr, col + dc] != value
                             for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1))):
                rgb[r, col] = colors[value]
    return rgb
