"""``segalign check``: wrong exports built the ways people make them, on phantoms, each named exactly.

Every case writes the user's export as the user's own code would (PNG folders, .npy stacks, NIfTI from nibabel),
runs ``segalign check ... --json`` in process and requires the JSON fields and the finding that names the fault;
where a finding prints code that undoes the fault, that code is run on the user's images and must give the truth
back. The truth is ``segalign.align`` in acquisition order (held to ``segalign export`` by the rest of the suite).

Series are small and non-square (29 x 31) so that a transpose changes the shape.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

import segalign
from segalign.check import TRANSFORMS, check_export
from segalign.check.diagnosis import transformed
from segalign.synthetic import Ellipsoid, Phantom, las_affine, rasterize, stack, write_nifti, write_series

from conftest import read_png, run_cli, snapshot
from phantoms import rotated_orientation, stack_affine

JSON_KEYS = {"exact", "frames", "images", "image_names", "mismatched_pixels", "frame_of_image", "in_plane",
             "residual_mismatched_pixels", "findings", "labels"}
LABEL_KEYS = {"value", "name", "frames", "dice_before", "dice_after"}


def phantom_around(centre, reach: float) -> Phantom:
    """Three labels that cover most of a stack around ``centre`` (LPS), sizes chosen so no pixel centre sits on a
    boundary; ``reach`` is about half the stack's extent along its normal."""
    cx, cy, cz = centre
    return Phantom(shapes=[
        Ellipsoid(1, "big", (cx - 2.3, cy + 1.1, cz + 0.7), (11.3, 8.7, reach * 1.07), hu=60, color=(200, 90, 80)),
        Ellipsoid(2, "left_blob", (cx + 7.1, cy - 3.3, cz - 0.4 * reach), (4.1, 6.3, reach * 0.63), hu=30,
                  color=(80, 200, 90)),
        Ellipsoid(7, "tilted_rod", (cx - 4.2, cy + 4.4, cz + 1.3), (2.7, 3.3, reach * 1.31), hu=150,
                  color=(90, 80, 220)),
    ])


def check_json(dicom: Path, segmentation: Path, export: Path, *more: object) -> tuple[int, dict]:
    run = run_cli("check", dicom, segmentation, export, "--json", *more)
    assert run.code in (0, 1), run.stderr
    result = json.loads(run.stdout)
    assert set(result) == JSON_KEYS
    assert all(set(label) == LABEL_KEYS for label in result["labels"])
    assert result["images"] == len(result["image_names"]) == len(result["frame_of_image"])
    assert run.code == (0 if result["exact"] else 1)
    return run.code, result


def write_pngs(folder: Path, images, names=None) -> Path:
    folder.mkdir(parents=True)
    for index, image in enumerate(images):
        name = names[index] if names is not None else f"{index:04d}.png"
        Image.fromarray(np.ascontiguousarray(image)).save(folder / name)
    return folder


def finding(result: dict, *words: str) -> str:
    """The one finding holding every word (fails listing the findings)."""
    found = [line for line in result["findings"] if all(word in line for word in words)]
    assert len(found) == 1, f"no single finding with {words}: {result['findings']}"
    return found[0]


def undo_code(line: str) -> str:
    return line.split("undo: ", 1)[1]


def run_undo(line: str, **names) -> dict:
    """Run the code a finding prints, with ``names`` (and numpy as np) in scope; returns the scope."""
    scope = {"np": np, **names}
    exec(undo_code(line), scope)  # the code a user would paste
    return scope


# ---------------------------------------------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tilted(tmp_path_factory) -> dict:
    """A tilted, double-oblique 29 x 31 stack with a gap, InstanceNumbers counting down, shuffled file names; its
    segmentation on an LAS grid (NIfTI with its label table); SegAlign's own export of it (with masks)."""
    root = tmp_path_factory.mktemp("tilted")
    specs = stack((-14.3, -13.1, -11.7), 13, (0.0, 0.9, 2.1), orientation=rotated_orientation(0.2, 0.15, 0.1),
                  spacing=(0.93, 0.87), rows=29, columns=31, instance_numbers=range(13, 0, -1))
    phantom = phantom_around(specs[6].pixel_centres()[14, 15], 13.0)
    del specs[5]  # a missing slice
    names = [f"IMG{n:03d}" for n in random.Random(3).sample(range(100), len(specs))]
    write_series(root / "dicom", specs, phantom, file_names=names)
    affine, shape = las_affine((-40, -30, -30), (20, 30, 30), (0.71, 0.83, 0.97))
    write_nifti(root / "seg.nii.gz", rasterize(phantom, shape, affine), affine, label_table_xml=phantom.label_table_xml())
    run = run_cli("export", root / "dicom", root / "seg.nii.gz", "-o", root / "export", "--masks")
    assert run.code == 0, run.stderr
    truth = segalign.align(root / "dicom", root / "seg.nii.gz").labels
    assert truth.shape == (12, 29, 31)
    assert sum(1 for frame in truth if len(np.unique(frame)) == 4) >= 6, "most frames hold all three labels"
    return {"root": root, "dicom": root / "dicom", "seg": root / "seg.nii.gz", "export": root / "export",
            "truth": truth}


# ---------------------------------------------------------------------------------------------------------------
# exports that are right
# ---------------------------------------------------------------------------------------------------------------

def test_segalign_export_checks_exact(tilted) -> None:
    for export in (tilted["export"], tilted["export"] / "labels"):
        code, result = check_json(tilted["dicom"], tilted["seg"], export)
        assert code == 0 and result["exact"] is True
        assert result["mismatched_pixels"] == result["residual_mismatched_pixels"] == 0
        assert result["frame_of_image"] == list(range(12)) and result["in_plane"] == "identity"
        assert result["frames"] == result["images"] == 12
        assert [label["dice_before"] for label in result["labels"]] == [1.0, 1.0, 1.0]
        assert [(label["value"], label["name"]) for label in result["labels"]] == [
            (1, "big"), (2, "left_blob"), (7, "tilted_rod")]
        finding(result, "exact")


def test_mask_folders_of_a_segalign_export_check_exact(tilted) -> None:
    """masks/<segment>/: one folder of 1-bit masks per label, named by the label's name."""
    code, result = check_json(tilted["dicom"], tilted["seg"], tilted["export"] / "masks")
    assert code == 0 and result["exact"], result["findings"]


def test_png_folder_named_by_instance_number_checks_exact(tilted, tmp_path: Path) -> None:
    alignment = segalign.align(tilted["dicom"], tilted["seg"])
    names = [f"slice_IN{frame.frame.instance_number}.png" for frame in alignment]
    order = random.Random(1).sample(range(12), 12)  # written in any order: the names say which frame
    export = write_pngs(tmp_path / "pngs", [tilted["truth"][i] for i in order], [names[i] for i in order])
    code, result = check_json(tilted["dicom"], tilted["seg"], export)
    assert code == 0 and result["exact"]
    assert result["image_names"] == names  # reported in frame order
    finding(result, "InstanceNumber in their names")


def test_array_files_in_dicom_order_check_exact(tilted, tmp_path: Path) -> None:
    truth = tilted["truth"]
    np.save(tmp_path / "labels.npy", truth)
    code, result = check_json(tilted["dicom"], tilted["seg"], tmp_path / "labels.npy")
    assert code == 0 and result["image_names"] == [f"frame {k}" for k in range(12)]
    # (rows, columns, frames) is the other layout: taken as stored, the frames on the last axis
    nib.save(nib.Nifti1Image(np.ascontiguousarray(np.moveaxis(truth, 0, 2)), np.eye(4)), tmp_path / "labels.nii.gz")
    code, result = check_json(tilted["dicom"], tilted["seg"], tmp_path / "labels.nii.gz")
    assert code == 0, result["findings"]
    finding(result, "last axis")


# ---------------------------------------------------------------------------------------------------------------
# in-plane transforms
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", TRANSFORMS[1:])
def test_each_in_plane_transform_is_named_and_undone(tilted, tmp_path: Path, name: str) -> None:
    truth = tilted["truth"]
    made = {  # the definitions, written out here
        "flip_rows": lambda a: a[::-1, :], "flip_columns": lambda a: a[:, ::-1], "rotate_180": lambda a: a[::-1, ::-1],
        "transpose": lambda a: a.T, "transpose_flip_rows": lambda a: a.T[::-1, :],
        "transpose_flip_columns": lambda a: a.T[:, ::-1], "transpose_rotate_180": lambda a: a.T[::-1, ::-1],
    }[name]
    images = [made(frame) for frame in truth]
    export = write_pngs(tmp_path / "pngs", images)
    code, result = check_json(tilted["dicom"], tilted["seg"], export)
    assert code == 1 and result["exact"] is False
    assert result["in_plane"] == name
    assert result["frame_of_image"] == list(range(12))
    assert result["residual_mismatched_pixels"] == 0
    assert result["mismatched_pixels"] == sum(
        int(np.count_nonzero(i != t)) if i.shape == t.shape else int(np.count_nonzero(i) + np.count_nonzero(t))
        for i, t in zip(images, truth))
    line = finding(result, f"({name})", "every image")
    for image, frame in zip(images, truth):
        assert np.array_equal(run_undo(line, image=read_png(export / f"{truth.tolist().index(frame.tolist()):04d}.png"))
                              ["fixed"], frame)
    assert [label["dice_after"] for label in result["labels"]] == [1.0, 1.0, 1.0]
    assert all(label["dice_before"] < 1.0 for label in result["labels"])


def test_transforms_that_differ_between_frames_are_grouped(tilted, tmp_path: Path) -> None:
    truth = tilted["truth"]
    images = [frame if k < 7 else frame[::-1, :] for k, frame in enumerate(truth)]
    code, result = check_json(tilted["dicom"], tilted["seg"], write_pngs(tmp_path / "pngs", images))
    assert result["in_plane"] is None and result["residual_mismatched_pixels"] == 0
    finding(result, "frames 0-6 as they are, 7-11 flip_rows", "fixed = image[::-1, :]")


# ---------------------------------------------------------------------------------------------------------------
# what cannot be compared, and the command line
# ---------------------------------------------------------------------------------------------------------------

def test_cannot_compare_exits_2_with_one_line(tilted, tmp_path: Path) -> None:
    run = run_cli("check", tilted["dicom"], tilted["seg"], tmp_path / "missing")
    assert run.code == 2 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("segalign: error: cannot compare: ")
    wrong = write_pngs(tmp_path / "wrong", [np.zeros((20, 20), np.uint8)] * 3)
    run = run_cli("check", tilted["dicom"], tilted["seg"], wrong)
    assert run.code == 2 and "29x31" in run.stderr and run.stderr.count("\n") == 1
    colour = tmp_path / "colour"
    colour.mkdir()
    Image.fromarray(np.dstack([tilted["truth"][3] * 30, tilted["truth"][3], tilted["truth"][3]])).save(colour / "0.png")
    run = run_cli("check", tilted["dicom"], tilted["seg"], colour)
    assert run.code == 2 and "colour image" in run.stderr


def test_text_output_and_the_python_function_agree(tilted, tmp_path: Path) -> None:
    export = write_pngs(tmp_path / "pngs", [frame[:, ::-1] for frame in tilted["truth"]])
    run = run_cli("check", tilted["dicom"], tilted["seg"], export)
    assert run.code == 1
    assert run.stdout.startswith("not exact: ") and "(flip_columns)" in run.stdout
    result = check_export(tilted["dicom"], tilted["seg"], export)
    assert result.exact is False and result.in_plane == "flip_columns"
    assert run.stdout.strip() == result.to_text()
    assert segalign.check_export is check_export
