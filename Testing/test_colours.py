"""Label colours a reader can tell apart: the built-in palette keeps neighbouring values distinct, and labels a
table gives one colour are named in the export's warnings (the overlays and the preview show them alike)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from conftest import run_cli
from phantoms import small_phantom, stack_affine, write_segmentation
from segalign.segmentation import default_color
from segalign.synthetic import stack, write_series


def _lab(rgb) -> np.ndarray:
    """sRGB (0..255) to CIELab (D65), written out here from the CIE formulas."""
    c = np.asarray(rgb, float) / 255.0
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ c
    xyz /= np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_builtin_palette_keeps_neighbouring_values_distinct() -> None:
    """Delta E 1976 between the colours of values v and v+1 is large (>= 60; 2.3 is a just-noticeable difference),
    and of values up to 4 apart clearly visible (>= 30), for every value up to 1000: organs numbered next to each
    other, which usually lie next to each other, never look alike."""
    labs = [_lab(default_color(value)) for value in range(1, 1001)]
    for gap, least in ((1, 60), (2, 30), (3, 30), (4, 30)):
        closest = min(float(np.linalg.norm(labs[i] - labs[i + gap])) for i in range(len(labs) - gap))
        assert closest >= least, (gap, closest)


def test_labels_sharing_a_colour_are_named_in_the_warnings(tmp_path: Path) -> None:
    specs = stack((-20, -20, -10), 12, (0, 0, 1.7), rows=40, columns=40)
    write_series(tmp_path / "dicom", specs)
    affine, shape = stack_affine(specs)
    segmentation = write_segmentation(tmp_path / "seg.nii.gz", small_phantom(), affine, shape)
    table = tmp_path / "labels.csv"
    table.write_text("1,kidney_right,200,80,80\n2,kidney_left,200,80,80\n7,aorta,10,10,250\n")
    run = run_cli("export", tmp_path / "dicom", segmentation, "-o", tmp_path / "out", "--labels", table, "--overlays")
    assert run.code == 0, run.stderr
    warnings = json.loads((tmp_path / "out" / "export.json").read_text())["warnings"]
    shared = [w for w in warnings if "share a colour" in w]
    assert len(shared) == 1 and "rgb(200, 80, 80): 1 kidney_right, 2 kidney_left" in shared[0], shared
    assert "aorta" not in shared[0] and "label_table=TABLE" in shared[0]  # not TotalSegmentator's labels
    assert "--labels TABLE" in run.stderr
    assert "share a colour" in run.stderr  # said on the terminal too
    assert "share a colour" in (tmp_path / "out" / "index.html").read_text()  # and in the preview's warnings
    table.write_text("1,kidney_right,200,80,80\n2,kidney_left,80,80,200\n7,aorta,10,10,250\n")
    run = run_cli("export", tmp_path / "dicom", segmentation, "-o", tmp_path / "out", "--labels", table, "--overwrite", "-q")
    assert run.code == 0
    assert not any("share a colour" in w for w in json.loads((tmp_path / "out" / "export.json").read_text())["warnings"])
