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
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

import segalign
from segalign.check import TRANSFORMS, check_export
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
    for index, frame in enumerate(truth):  # the user's PNG as read back, undone
        assert np.array_equal(run_undo(line, image=read_png(export / f"{index:04d}.png"))["fixed"], frame)
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


# ---------------------------------------------------------------------------------------------------------------
# frame order
# ---------------------------------------------------------------------------------------------------------------

def test_reversed_instance_order_is_named_and_undone(tilted, tmp_path: Path) -> None:
    """The user sorted the files by InstanceNumber, descending; on this series that is also position order."""
    alignment = segalign.align(tilted["dicom"], tilted["seg"])
    by_number = sorted(alignment, key=lambda frame: frame.frame.instance_number, reverse=True)
    images = [frame.labels for frame in by_number]
    export = write_pngs(tmp_path / "pngs", images)
    code, result = check_json(tilted["dicom"], tilted["seg"], export)
    assert result["frame_of_image"] == list(range(11, -1, -1))
    assert result["in_plane"] == "identity" and result["residual_mismatched_pixels"] == 0
    line = finding(result, "reverse order", "sorted by position")
    images_back = run_undo(line, images=np.stack([read_png(export / name) for name in result["image_names"]]))
    assert np.array_equal(images_back["images"], tilted["truth"])
    assert [label["dice_after"] for label in result["labels"]] == [1.0, 1.0, 1.0]


def test_one_slice_off_is_named_and_the_frame_left_out_too(tilted, tmp_path: Path) -> None:
    truth = tilted["truth"]
    images = list(truth[1:]) + [np.zeros_like(truth[0])]  # z index off by one: the last slice falls off the volume
    export = write_pngs(tmp_path / "pngs", images)
    code, result = check_json(tilted["dicom"], tilted["seg"], export)
    assert result["frame_of_image"] == list(range(1, 12)) + [None]
    assert result["in_plane"] == "identity"
    assert result["residual_mismatched_pixels"] == int(np.count_nonzero(truth[0]))  # frame 0 is in no image
    line = finding(result, "1 slice after", "image i holds frame i + 1")
    fixed = run_undo(line, images=np.stack(images))["fixed"]
    assert np.array_equal(fixed[1:], truth[1:])
    finding(result, "frame is in no image: 0")
    finding(result, "without labels stands for no frame: 0011.png")


def test_one_slice_off_the_other_way(tilted, tmp_path: Path) -> None:
    truth = tilted["truth"]
    images = [np.zeros_like(truth[0])] + list(truth[:-1])
    code, result = check_json(tilted["dicom"], tilted["seg"], write_pngs(tmp_path / "pngs", images))
    assert result["frame_of_image"] == [None] + list(range(0, 11))
    line = finding(result, "1 slice before", "image i holds frame i - 1")
    fixed = run_undo(line, images=np.stack(images))["fixed"]
    assert np.array_equal(fixed[:-1], truth[:-1])


@pytest.fixture(scope="module")
def interleaved(tmp_path_factory) -> dict:
    """An axial 29 x 31 series acquired interleaved (InstanceNumbers 1-6 on the even positions, 7-12 on the odd
    ones), its files named by InstanceNumber (1.dcm ... 12.dcm)."""
    root = tmp_path_factory.mktemp("interleaved")
    positions = stack((-12.0, -11.0, 0.0), 12, (0.0, 0.0, 2.5), spacing=(0.9, 0.8), rows=29, columns=31)
    numbers = [p // 2 + 1 if p % 2 == 0 else 6 + p // 2 + 1 for p in range(12)]
    specs = [type(spec)(spec.position, spec.orientation, spec.spacing, spec.rows, spec.columns, number)
             for spec, number in zip(positions, numbers)]
    phantom = phantom_around(specs[6].pixel_centres()[14, 15] - np.array([0, 0, 1.25]), 14.0)
    write_series(root / "dicom", specs, phantom, file_names=[f"{n}.dcm" for n in numbers])
    affine, shape = las_affine((-20, -20, -5), (20, 20, 32), (0.73, 0.81, 0.93))
    write_nifti(root / "seg.nii.gz", rasterize(phantom, shape, affine), affine, label_table_xml=phantom.label_table_xml())
    alignment = segalign.align(root / "dicom", root / "seg.nii.gz")
    assert [frame.frame.instance_number for frame in alignment] == list(range(1, 13))
    assert all(frame.labels.any() for frame in alignment)
    return {"dicom": root / "dicom", "seg": root / "seg.nii.gz", "truth": alignment.labels,
            "alignment": alignment}


def test_sorted_by_position_instead_of_acquisition_order(interleaved, tmp_path: Path) -> None:
    alignment = interleaved["alignment"]
    by_position = sorted(range(12), key=lambda i: alignment[i].frame.position[2])
    assert by_position != list(range(12)) and by_position != list(range(11, -1, -1))
    images = [interleaved["truth"][i] for i in by_position]
    export = write_pngs(tmp_path / "pngs", images)
    code, result = check_json(interleaved["dicom"], interleaved["seg"], export)
    assert result["frame_of_image"] == by_position
    assert result["residual_mismatched_pixels"] == 0 and result["in_plane"] == "identity"
    line = finding(result, "sorted by position along the slice normal (instead of by InstanceNumber)")
    scope = run_undo(line, images=np.stack(images), frame_of_image=result["frame_of_image"],
                     fixed=np.zeros_like(interleaved["truth"]))
    assert np.array_equal(scope["fixed"], interleaved["truth"])


def test_dicom_files_sorted_by_name_as_plain_text(interleaved, tmp_path: Path) -> None:
    """files = sorted(glob('*.dcm')): 1.dcm, 10.dcm, 11.dcm, 12.dcm, 2.dcm ...; image k + 1 written for files[k]."""
    dicom = interleaved["dicom"]
    files = sorted(path.name for path in dicom.iterdir())
    assert files[:5] == ["1.dcm", "10.dcm", "11.dcm", "12.dcm", "2.dcm"]
    uid_to_frame = {frame.frame.sop_instance_uid: index for index, frame in enumerate(interleaved["alignment"])}
    held = [uid_to_frame[pydicom.dcmread(dicom / name, stop_before_pixels=True).SOPInstanceUID] for name in files]
    export = write_pngs(tmp_path / "pngs", [interleaved["truth"][f] for f in held],
                        [f"{k + 1}.png" for k in range(12)])
    code, result = check_json(dicom, interleaved["seg"], export)
    assert result["image_names"] == [f"{k + 1}.png" for k in range(12)]  # tied by the number, from 1
    assert result["frame_of_image"] == held
    finding(result, "the images hold the frames sorted by DICOM file name as plain text (1.dcm, 10.dcm, 11.dcm, 12.dcm ...)")
    finding(result, "tied to frames by the InstanceNumber in their names")  # here the same as the index from 1


def test_array_stacked_from_pngs_sorted_as_text(tilted, tmp_path: Path) -> None:
    """Right PNGs 1.png ... 12.png, stacked with np.stack([... for p in sorted(glob('*.png'))])."""
    folder = write_pngs(tmp_path / "pngs", list(tilted["truth"]), [f"{k + 1}.png" for k in range(12)])
    code, result = check_json(tilted["dicom"], tilted["seg"], folder)
    assert code == 0
    stacked = np.stack([read_png(path) for path in sorted(folder.glob("*.png"))])
    np.save(tmp_path / "stacked.npy", stacked)
    code, result = check_json(tilted["dicom"], tilted["seg"], tmp_path / "stacked.npy")
    assert result["frame_of_image"] == [int(path.stem) - 1 for path in sorted(folder.glob("*.png"))]
    assert result["residual_mismatched_pixels"] == 0
    finding(result, "the images hold the frames sorted by number from 1 as text (1, 10, 11, 12 ...)")


# ---------------------------------------------------------------------------------------------------------------
# label values
# ---------------------------------------------------------------------------------------------------------------

def test_label_table_shifted_by_one(tilted, tmp_path: Path) -> None:
    """Values written with a table one off: every label one higher (big=2, left_blob=3, tilted_rod=8)."""
    images = [np.where(frame > 0, frame + 1, 0).astype(np.uint8) for frame in tilted["truth"]]
    export = write_pngs(tmp_path / "pngs", images)
    code, result = check_json(tilted["dicom"], tilted["seg"], export)
    assert result["in_plane"] == "identity" and result["frame_of_image"] == list(range(12))
    assert result["residual_mismatched_pixels"] == 0
    line = finding(result, "renamed", "1 (big) as 2", "2 (left_blob) as 3", "7 (tilted_rod) as 8", "shifted by one")
    for image, frame in zip(images, tilted["truth"]):
        assert np.array_equal(run_undo(line, image=image)["fixed"], frame)
    assert [label["dice_after"] for label in result["labels"]] == [1.0, 1.0, 1.0]


def test_merged_and_dropped_labels(tilted, tmp_path: Path) -> None:
    truth = tilted["truth"]
    images = [np.where(frame == 2, 1, np.where(frame == 7, 0, frame)).astype(np.uint8) for frame in truth]
    code, result = check_json(tilted["dicom"], tilted["seg"], write_pngs(tmp_path / "pngs", images))
    finding(result, "labels 1 (big), 2 (left_blob) are merged into value 1")
    finding(result, "label 7 (tilted_rod) is missing from the export")
    dice = {label["value"]: label["dice_after"] for label in result["labels"]}
    assert dice[1] == dice[2] == 1.0 and dice[7] == 0.0


def test_masks_of_one_label_0_255(tilted, tmp_path: Path) -> None:
    """A one-label segmentation exported as 0/255 masks is exact; as 0/1 too."""
    root = tmp_path
    write_nifti(root / "one.nii.gz", (nib.load(tilted["seg"]).get_fdata() == 1).astype(np.uint8),
                nib.load(tilted["seg"]).affine)
    truth = segalign.align(tilted["dicom"], root / "one.nii.gz").labels
    for scale in (255, 1):
        export = write_pngs(root / f"masks{scale}", [(frame * scale).astype(np.uint8) for frame in truth])
        code, result = check_json(tilted["dicom"], root / "one.nii.gz", export)
        assert code == 0, result["findings"]


# ---------------------------------------------------------------------------------------------------------------
# nibabel: the seed thread's code, arrays not transposed to rows x columns
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def counting_down(tmp_path_factory) -> dict:
    """An axial 29 x 31 series whose InstanceNumbers count down along z (1 at the top), shuffled file names; the
    model's segmentation as a NIfTI on the series' own grid (voxel centres on pixel centres), k in InstanceNumber
    order: data[i, j, k] is column i, row j of the k-th file by InstanceNumber."""
    root = tmp_path_factory.mktemp("counting_down")
    specs = stack((-12.4, -11.2, 20.0), 10, (0.0, 0.0, -2.5), spacing=(0.9, 0.8), rows=29, columns=31)
    phantom = phantom_around(specs[5].pixel_centres()[14, 15] + np.array([0, 0, 1.25]), 12.0)
    names = [f"{n:x}.dcm" for n in random.Random(7).sample(range(4096, 8192), len(specs))]
    write_series(root / "dicom", specs, phantom, file_names=names)
    affine, shape = stack_affine(specs)
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    ras = np.stack([i, j, k], axis=-1) @ affine[:3, :3].T + affine[:3, 3]
    data = phantom.labels_at(ras * np.array([-1.0, -1.0, 1.0])).astype(np.uint8)
    write_nifti(root / "seg.nii.gz", data, affine, label_table_xml=phantom.label_table_xml())
    truth = segalign.align(root / "dicom", root / "seg.nii.gz").labels
    assert np.array_equal(truth, np.moveaxis(data, 2, 0).transpose(0, 2, 1)), "the grid is the series' own"
    return {"root": root, "dicom": root / "dicom", "seg": root / "seg.nii.gz", "truth": truth, "data": data}


def test_seed_thread_hand_built_affine_and_ornt_transform(counting_down, tmp_path: Path) -> None:
    """The forum thread's code: files sorted by InstanceNumber, an affine built by hand from the first file's
    ImagePositionPatient, ImageOrientationPatient and PixelSpacing (LPS numbers, taken for RAS), the model's
    output reoriented to 'DICOM orientation' with nibabel's ornt_transform, and each slice data[:, :, k] saved."""
    datasets = sorted((pydicom.dcmread(path) for path in counting_down["dicom"].iterdir()),
                      key=lambda ds: int(ds.InstanceNumber))
    first = datasets[0]
    iop = np.array(first.ImageOrientationPatient, dtype=float)
    spacing = np.array(first.PixelSpacing, dtype=float)
    affine = np.eye(4)
    affine[:3, 0] = iop[:3] * spacing[1]
    affine[:3, 1] = iop[3:] * spacing[0]
    affine[:3, 2] = np.array(datasets[1].ImagePositionPatient, float) - np.array(first.ImagePositionPatient, float)
    affine[:3, 3] = np.array(first.ImagePositionPatient, dtype=float)
    volume = np.stack([ds.pixel_array.T for ds in datasets], axis=-1)  # (columns, rows, slices): 'x, y, z'
    model_output = nib.Nifti1Image(counting_down["data"], affine)  # the model segments the volume it was given
    assert model_output.shape == volume.shape
    ornt = nib.orientations.ornt_transform(nib.orientations.io_orientation(model_output.affine),
                                           nib.orientations.axcodes2ornt(("L", "P", "S")))
    data = nib.orientations.apply_orientation(np.asarray(model_output.dataobj), ornt)
    export = write_pngs(tmp_path / "pngs", [data[:, :, k].astype(np.uint8) for k in range(data.shape[2])],
                        [f"slice_{k:03d}.png" for k in range(data.shape[2])])
    code, result = check_json(counting_down["dicom"], counting_down["seg"], export)
    assert result["in_plane"] == "transpose_rotate_180"
    assert result["frame_of_image"] == list(range(9, -1, -1))
    assert result["residual_mismatched_pixels"] == 0
    line = finding(result, "every image", "(transpose_rotate_180)")
    flipped = finding(result, "reverse order", "images = images[::-1]")
    images = np.stack([read_png(export / name) for name in result["image_names"]])
    restored = run_undo(flipped, images=images)["images"]
    assert np.array_equal(np.stack([run_undo(line, image=image)["fixed"] for image in restored]),
                          counting_down["truth"])


def test_nibabel_array_saved_without_transposing(counting_down, tmp_path: Path) -> None:
    """dcm2niix-style NIfTI (rows flipped to go up), slices saved as data[:, :, k] without .T: PROSTATEx's
    transposed masks; the NIfTI itself as the export: its frames on the last axis, transposed and mirrored."""
    specs_affine = nib.load(counting_down["seg"]).affine
    data = counting_down["data"][:, ::-1, :]  # rows flipped, as dcm2niix stores an axial series
    flipped = specs_affine.copy()
    flipped[:3, 3] = specs_affine[:3, :3] @ np.array([0, data.shape[1] - 1, 0]) + specs_affine[:3, 3]
    flipped[:3, 1] = -specs_affine[:3, 1]
    write_nifti(tmp_path / "dcm2niix.nii.gz", np.ascontiguousarray(data), flipped)
    loaded = nib.load(tmp_path / "dcm2niix.nii.gz").get_fdata()
    export = write_pngs(tmp_path / "pngs", [loaded[:, :, k].astype(np.uint8) for k in range(loaded.shape[2])])
    code, result = check_json(counting_down["dicom"], tmp_path / "dcm2niix.nii.gz", export)
    assert result["in_plane"] == "transpose_flip_columns" and result["frame_of_image"] == list(range(10))
    line = finding(result, "every image", "(transpose_flip_columns)", "fixed = image[:, ::-1].T")
    assert np.array_equal(run_undo(line, image=read_png(export / "0003.png"))["fixed"], counting_down["truth"][3])
    # the NIfTI file itself as the export, taken as stored
    code, result = check_json(counting_down["dicom"], tmp_path / "dcm2niix.nii.gz", tmp_path / "dcm2niix.nii.gz")
    assert result["in_plane"] == "transpose_flip_columns" and result["frame_of_image"] == list(range(10))
    finding(result, "last axis")
    line = finding(result, "every image", "np.moveaxis(array, 2, 0)")
    assert np.array_equal(run_undo(line, array=np.asarray(nib.load(tmp_path / "dcm2niix.nii.gz").dataobj))["images"],
                          counting_down["truth"])


# ---------------------------------------------------------------------------------------------------------------
# another rounding rule: differences on boundaries only
# ---------------------------------------------------------------------------------------------------------------

def test_np_round_half_even_resampling_differs_on_boundaries_only(tmp_path: Path) -> None:
    """A 2 mm segmentation on a 1 mm series: every other pixel centre is half-way between voxels. The user's own
    nearest-neighbour resampler rounds with np.round (halves to even), SegAlign rounds halves up."""
    specs = stack((-15.0, -14.0, 0.0), 8, (0.0, 0.0, 2.0), spacing=(1.0, 1.0), rows=29, columns=31)
    phantom = phantom_around((0.1, 0.3, 7.0), 8.0)
    write_series(tmp_path / "dicom", specs, phantom)
    origin_lps = np.array([-16.0, -16.0, -2.0])
    shape = (18, 17, 7)
    affine = np.diag([-2.0, -2.0, 2.0, 1.0])
    affine[:3, 3] = origin_lps * np.array([-1, -1, 1])
    voxels = rasterize(phantom, shape, affine)
    write_nifti(tmp_path / "seg.nii.gz", voxels, affine, label_table_xml=phantom.label_table_xml())

    inverse = np.linalg.inv(affine)  # the user's resampler, written as people write it
    images = []
    for spec in specs:
        ras = spec.pixel_centres() * np.array([-1.0, -1.0, 1.0])
        index = ras @ inverse[:3, :3].T + inverse[:3, 3]
        nearest = np.round(index).astype(int)
        inside = np.all((nearest >= 0) & (nearest < np.array(shape)), axis=-1)
        image = np.zeros(nearest.shape[:2], dtype=np.uint8)
        image[inside] = voxels[tuple(nearest[inside].T)]
        images.append(image)
    truth = segalign.align(tmp_path / "dicom", tmp_path / "seg.nii.gz").labels
    differing = sum(int(np.count_nonzero(i != t)) for i, t in zip(images, truth))
    assert differing > 50, "the case has half-way pixel centres on boundaries"
    export = write_pngs(tmp_path / "pngs", images)
    code, result = check_json(tmp_path / "dicom", tmp_path / "seg.nii.gz", export)
    assert code == 1
    assert result["frame_of_image"] == list(range(8)) and result["in_plane"] == "identity"
    assert result["mismatched_pixels"] == result["residual_mismatched_pixels"] == differing
    finding(result, f"{differing} pixels", "all of them on label boundaries", "np.round")
    assert not any("renamed" in line or "order" in line for line in result["findings"]), result["findings"]
    assert all(0.8 < label["dice_after"] < 1.0 for label in result["labels"])


# ---------------------------------------------------------------------------------------------------------------
# the report folder
# ---------------------------------------------------------------------------------------------------------------

def test_report_folder_pictures_the_frames_that_differ(tilted, tmp_path: Path) -> None:
    from segalign.check.report import ONLY_TRUTH, ONLY_USER, PANEL_SIZE

    truth = tilted["truth"]
    images = [frame if k != 4 else frame[::-1, :] for k, frame in enumerate(truth)]
    names = [f"{k:04d}{'<img src=x onerror=alert(1)>' if k == 4 else ''}.png" for k in range(12)]
    export = write_pngs(tmp_path / "pngs", images, names)
    before = snapshot(tilted["dicom"]), snapshot(export)
    report = tmp_path / "report"
    run = run_cli("check", tilted["dicom"], tilted["seg"], export, "--json", "-o", report)
    assert run.code == 1, run.stderr
    assert json.loads((report / "report.json").read_text()) == json.loads(run.stdout)
    assert sorted(p.name for p in (report / "frames").iterdir()) == ["frame_0004.png"]
    picture = read_png(report / "frames" / "frame_0004.png")
    scale = PANEL_SIZE // 31
    assert picture.shape == (29 * scale, 3 * 31 * scale + 16, 3)
    difference = picture[:, 2 * (31 * scale + 8):]
    user, true = images[4] != 0, truth[4] != 0
    r, c = np.argwhere(true & ~user)[0]
    assert tuple(difference[r * scale, c * scale]) == ONLY_TRUTH
    r, c = np.argwhere(user & ~true)[0]
    assert tuple(difference[r * scale, c * scale]) == ONLY_USER
    page = (report / "index.html").read_text()
    assert "frames/frame_0004.png" in page and "<img src=x" not in page and "&lt;img src=x onerror" in page
    assert "frames 0-3 as they are, 4 flip_rows, 5-11 as they are" in html_unescape(page)
    assert (snapshot(tilted["dicom"]), snapshot(export)) == before, "nothing is written into the inputs"
    # again into the same folder: an earlier report is replaced
    exact = run_cli("check", tilted["dicom"], tilted["seg"], tilted["export"], "-o", report)
    assert exact.code == 0 and not any((report / "frames").iterdir())
    assert json.loads((report / "report.json").read_text())["exact"] is True


def html_unescape(text: str) -> str:
    import html

    return html.unescape(text)


def test_report_folder_is_never_an_input_or_someone_elses(tilted, tmp_path: Path) -> None:
    export = write_pngs(tmp_path / "pngs", [frame[::-1, :] for frame in tilted["truth"]])
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    before = snapshot(tmp_path), snapshot(tilted["dicom"])
    for folder in (taken, export / "report", tilted["dicom"] / "report", export):
        run = run_cli("check", tilted["dicom"], tilted["seg"], export, "-o", folder)
        assert run.code == 2 and run.stdout == "" and run.stderr.count("\n") == 1, run.stderr
        assert "cannot compare" in run.stderr
    assert (snapshot(tmp_path), snapshot(tilted["dicom"])) == before


# ---------------------------------------------------------------------------------------------------------------
# a shift of whole pixels; more kinds of export; frames missing, extra, twice
# ---------------------------------------------------------------------------------------------------------------

def move(labels: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """Labels moved down and right (negative: up, left), written out here; background comes in."""
    result = np.zeros_like(labels)
    height, width = labels.shape
    for r in range(height):
        for c in range(width):
            if 0 <= r + rows < height and 0 <= c + columns < width:
                result[r + rows, c + columns] = labels[r, c]
    return result


def test_a_shift_of_whole_pixels_after_a_flip(tilted, tmp_path: Path) -> None:
    """A crop or pad one off: every image's labels two rows down and one column left, of a flipped frame."""
    truth = tilted["truth"]
    images = [move(frame[::-1, :], 2, -1) for frame in truth]
    export = write_pngs(tmp_path / "pngs", images)
    code, result = check_json(tilted["dicom"], tilted["seg"], export)
    assert result["in_plane"] == "flip_rows" and result["frame_of_image"] == list(range(12))
    lost = sum(int(np.count_nonzero(move(move(frame[::-1, :], 2, -1), -2, 1) != frame[::-1, :])) for frame in truth)
    assert lost and result["residual_mismatched_pixels"] == 0  # explained; what fell off the edge is said
    shift_line = finding(result, "moved 2 pixels down and 1 pixel left", f"{lost} labelled pixels fell off")
    assert not any("the export is exact" in line for line in result["findings"])
    flip_line = finding(result, "(flip_rows)")
    assert result["findings"].index(shift_line) < result["findings"].index(flip_line)  # undone first
    for image, frame in zip(images, truth):
        scope = run_undo(shift_line, image=image)
        fixed = run_undo(flip_line, image=scope["image"])["fixed"]
        kept = move(move(frame[::-1, :], 2, -1), -2, 1)[::-1, :] != 0
        assert np.array_equal(fixed[kept], frame[kept])


def test_tiff_16_bit_named_by_sop_instance_uid_and_npy_frames(tilted, tmp_path: Path) -> None:
    alignment = segalign.align(tilted["dicom"], tilted["seg"])
    folder = tmp_path / "tiff"
    folder.mkdir()
    for frame in alignment:
        Image.fromarray(frame.labels.astype(np.uint16)).save(folder / f"mask_{frame.frame.sop_instance_uid}.tif")
    assert Image.open(next(folder.iterdir())).mode.startswith("I;16")
    code, result = check_json(tilted["dicom"], tilted["seg"], folder)
    assert code == 0, result["findings"]
    finding(result, "SOPInstanceUID in their names")
    npy = tmp_path / "npy"
    npy.mkdir()
    for index, frame in enumerate(alignment):
        np.save(npy / f"slice_{index}.npy", frame.labels[:, ::-1].astype(np.int16))
    code, result = check_json(tilted["dicom"], tilted["seg"], npy)
    assert result["in_plane"] == "flip_columns" and result["frame_of_image"] == list(range(12))
    assert result["image_names"] == [f"slice_{index}.npy" for index in range(12)]


def test_one_folder_of_masks_per_label_value_all_transposed(tilted, tmp_path: Path) -> None:
    truth = tilted["truth"]
    for value in (1, 2, 7):
        write_pngs(tmp_path / "masks" / str(value), [((frame == value) * 255).astype(np.uint8).T for frame in truth])
    code, result = check_json(tilted["dicom"], tilted["seg"], tmp_path / "masks")
    assert result["in_plane"] == "transpose" and result["residual_mismatched_pixels"] == 0
    finding(result, "one folder of masks per label: 1 = 1, 2 = 2, 7 = 7")


def test_frames_missing_extra_and_twice(tilted, tmp_path: Path) -> None:
    """Named by InstanceNumber: frames 3 and 7 left out, and an image for InstanceNumber 8 (the series has none)
    that is a copy of the one for 10."""
    alignment = segalign.align(tilted["dicom"], tilted["seg"])
    numbers = [frame.frame.instance_number for frame in alignment]
    assert 8 not in numbers
    kept = [k for k in range(12) if k not in (3, 7)]
    twice = numbers.index(10)
    assert twice not in (3, 7)
    images = [tilted["truth"][k] for k in kept] + [tilted["truth"][twice]]
    names = [f"IN{numbers[k]}.png" for k in kept] + ["IN8.png"]
    code, result = check_json(tilted["dicom"], tilted["seg"], write_pngs(tmp_path / "pngs", images, names))
    assert result["image_names"] == [f"IN{numbers[k]}.png" for k in kept] + ["IN8.png"]
    assert result["frame_of_image"] == kept + [twice]
    finding(result, "2 frames are in no image: 3, 7 (2 of them with labels)")
    finding(result, f"1 frame is in more than one image: {twice}")
    missing = int(np.count_nonzero(tilted["truth"][3]) + np.count_nonzero(tilted["truth"][7]))
    assert result["residual_mismatched_pixels"] == missing
    assert result["mismatched_pixels"] == missing + int(np.count_nonzero(tilted["truth"][twice]))
    # the report pictures the frames without an image: SegAlign's labels beside an empty panel
    run = run_cli("check", tilted["dicom"], tilted["seg"], tmp_path / "pngs", "-o", tmp_path / "report")
    assert run.code == 1
    assert sorted(p.name for p in (tmp_path / "report" / "frames").iterdir()) == ["frame_0003.png", "frame_0007.png"]
    assert "no image is meant for this frame" in (tmp_path / "report" / "index.html").read_text()


def test_names_without_numbers_are_tied_by_their_sorted_order(tilted, tmp_path: Path) -> None:
    letters = [f"mask_{chr(ord('a') + k)}.png" for k in range(12)]
    export = write_pngs(tmp_path / "pngs", [frame[::-1, ::-1] for frame in tilted["truth"]], letters)
    code, result = check_json(tilted["dicom"], tilted["seg"], export)
    assert result["image_names"] == letters and result["in_plane"] == "rotate_180"
    finding(result, "sorted name order")


def test_enhanced_multiframe_export_and_pngs_named_by_uid_and_frame(tmp_path: Path) -> None:
    from segalign.synthetic import write_enhanced

    specs = stack((-12.4, -12.8, -10.1), 9, (0, 0, 2.3), spacing=(0.81, 0.79), rows=33, columns=30)
    phantom = phantom_around(specs[4].pixel_centres()[16, 15], 10.0)
    path = write_enhanced(tmp_path / "dicom" / "enhanced.dcm", specs, phantom)
    affine, shape = las_affine((-30, -30, -25), (30, 30, 25), (0.9, 0.9, 1.1))
    write_nifti(tmp_path / "seg.nii.gz", rasterize(phantom, shape, affine), affine)
    assert run_cli("export", tmp_path / "dicom", tmp_path / "seg.nii.gz", "-o", tmp_path / "out").code == 0
    code, result = check_json(tmp_path / "dicom", tmp_path / "seg.nii.gz", tmp_path / "out")
    assert code == 0
    uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
    truth = segalign.align(tmp_path / "dicom", tmp_path / "seg.nii.gz").labels
    order = [4, 0, 8, 2, 6, 1, 3, 5, 7]
    export = write_pngs(tmp_path / "pngs", [truth[k].T for k in order], [f"{uid}_{k + 1}.png" for k in order])
    code, result = check_json(tmp_path / "dicom", tmp_path / "seg.nii.gz", export)
    assert result["image_names"] == [f"{uid}_{k + 1}.png" for k in range(9)]
    assert result["frame_of_image"] == list(range(9)) and result["in_plane"] == "transpose"


def test_real_totalsegmentator_case_nibabel_slices_in_nifti_order(testdata: Path, tmp_path: Path) -> None:
    """TotalSegmentator's example CT (InstanceNumber against z) and its segmentation on the CT's own grid (LAS):
    PNGs written as seg[:, :, k] in the NIfTI's order, as notebooks do, are transposed, mirrored and reversed;
    SegAlign's export of it is exact."""
    from conftest import require

    base = require(testdata / "totalsegmentator_example")
    dicom, segmentation = require(base / "ct_dicom"), require(base / "segmentation_ml.nii.gz")
    assert run_cli("export", dicom, segmentation, "-o", tmp_path / "out").code == 0
    code, result = check_json(dicom, segmentation, tmp_path / "out")
    assert code == 0 and result["frames"] == 20
    image = nib.load(segmentation)
    assert nib.aff2axcodes(image.affine) == ("L", "A", "S")
    data = np.asarray(image.dataobj)
    export = write_pngs(tmp_path / "pngs", [data[:, :, k].astype(np.uint8) for k in range(data.shape[2])])
    code, result = check_json(dicom, segmentation, export)
    assert result["in_plane"] == "transpose_flip_columns"
    assert result["frame_of_image"] == list(range(19, -1, -1))
    assert result["residual_mismatched_pixels"] == 0
    finding(result, "reverse order")


def test_the_suite_can_check_every_export_it_makes(tilted, tmp_path: Path, monkeypatch) -> None:
    """SEGALIGN_CHECK_EXPORTS=1 makes every successful ``segalign export`` of the suite (through conftest.run_cli)
    also pass ``segalign check``; here it is shown to run, and to fail on a check that is not exact."""
    import segalign.check

    monkeypatch.setenv("SEGALIGN_CHECK_EXPORTS", "1")
    assert run_cli("export", tilted["dicom"], tilted["seg"], "-o", tmp_path / "a").code == 0
    calls = []

    class NotExact:
        exact, findings = False, ["made up"]

    monkeypatch.setattr(segalign.check, "check_export", lambda *args, **kwargs: calls.append(args) or NotExact())
    with pytest.raises(AssertionError, match="made up"):
        run_cli("export", tilted["dicom"], tilted["seg"], "-o", tmp_path / "b")
    assert len(calls) == 1 and str(calls[0][2]) == str(tmp_path / "b")


# ---------------------------------------------------------------------------------------------------------------
# DICOM SEG: judged frame by frame through its references
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def seg_case(tilted, tmp_path_factory) -> dict:
    """The tilted series copied (with the patient and study attributes highdicom needs), its truth, and its
    datasets in acquisition order and in file name order."""
    import shutil

    from seg_cases import highdicom_ready, need_highdicom

    need_highdicom()
    root = tmp_path_factory.mktemp("seg_case")
    shutil.copytree(tilted["dicom"], root / "dicom")
    datasets = highdicom_ready(sorted((root / "dicom").iterdir()))  # sorted by file name: not acquisition order
    alignment = segalign.align(root / "dicom", tilted["seg"])
    by_uid = {dataset.SOPInstanceUID: dataset for dataset in datasets}
    return {"root": root, "dicom": root / "dicom", "seg": tilted["seg"], "truth": alignment.labels,
            "by_name": datasets, "in_order": [by_uid[frame.frame.sop_instance_uid] for frame in alignment],
            "uids": [frame.frame.sop_instance_uid for frame in alignment]}


NAMES = {1: "big", 2: "left_blob", 7: "tilted_rod"}


def seg_references(path: Path) -> dict[str, str]:
    """``frame N`` -> the SOPInstanceUID SEG frame N references (read here with pydicom)."""
    dataset = pydicom.dcmread(path)
    return {f"frame {n + 1}": item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
            for n, item in enumerate(dataset.PerFrameFunctionalGroupsSequence)}


@pytest.mark.parametrize("kind", ["binary", "labelmap"])
def test_segalign_dicom_seg_is_exact(seg_case, tmp_path: Path, kind: str) -> None:
    run = run_cli("export", seg_case["dicom"], seg_case["seg"], "-o", tmp_path / "out", "--dicom-seg-type", kind)
    assert run.code == 0, run.stderr
    code, result = check_json(seg_case["dicom"], seg_case["seg"], tmp_path / "out" / "seg.dcm")
    assert code == 0, result["findings"]
    assert all(name.startswith("frame ") for name in result["image_names"])


@pytest.mark.parametrize("kind", ["binary", "labelmap"])
def test_highdicom_seg_of_masks_paired_with_files_sorted_by_name(seg_case, tmp_path: Path, kind: str) -> None:
    """The masks in acquisition order, the source datasets as sorted(glob(...)) gives them: every SEG frame
    references the file of that rank by name."""
    from seg_cases import highdicom_seg

    path = highdicom_seg(tmp_path / "seg.dcm", seg_case["by_name"], seg_case["truth"], NAMES, kind)
    code, result = check_json(seg_case["dicom"], seg_case["seg"], path)
    references = seg_references(path)
    rank_by_name = {dataset.SOPInstanceUID: rank for rank, dataset in enumerate(seg_case["by_name"])}
    assert result["frame_of_image"] == [rank_by_name[references[name]] for name in result["image_names"]]
    assert result["in_plane"] == "identity" and result["residual_mismatched_pixels"] == 0
    finding(result, "the SEG's frames hold the frames in acquisition order, but their names or references were given "
            "in the order of the frames sorted by DICOM file name as plain text", "give it the source datasets")


def test_highdicom_seg_with_frames_mirrored(seg_case, tmp_path: Path) -> None:
    """TotalSegmentator PR #598: a writer mirroring A/P (the rows of an axial-ish frame): on every frame, then on
    one frame only."""
    from seg_cases import highdicom_seg

    truth = seg_case["truth"]
    path = highdicom_seg(tmp_path / "all.dcm", seg_case["in_order"], truth[:, ::-1, :], NAMES, "binary")
    code, result = check_json(seg_case["dicom"], seg_case["seg"], path)
    assert result["in_plane"] == "flip_rows" and result["residual_mismatched_pixels"] == 0
    finding(result, "every frame of the SEG is its frame upside down", "give it mask[::-1, :] of each mask")
    one = truth.copy()
    one[6] = one[6][::-1, :]
    path = highdicom_seg(tmp_path / "one.dcm", seg_case["in_order"], one, NAMES, "binary")
    code, result = check_json(seg_case["dicom"], seg_case["seg"], path)
    assert result["in_plane"] is None and result["residual_mismatched_pixels"] == 0
    finding(result, "frames 0-5 as they are, 6 flip_rows, 7-11 as they are")


def test_seg_frames_referencing_the_wrong_image(seg_case, tmp_path: Path) -> None:
    """Two frames of a right SEG with their references (and plane positions) swapped."""
    from seg_cases import highdicom_seg

    path = highdicom_seg(tmp_path / "seg.dcm", seg_case["in_order"], seg_case["truth"], NAMES, "labelmap")
    dataset = pydicom.dcmread(path)
    items = dataset.PerFrameFunctionalGroupsSequence
    first, second = items[3], items[8]
    for keyword in ("DerivationImageSequence", "PlanePositionSequence"):
        a, b = getattr(first, keyword), getattr(second, keyword)
        setattr(first, keyword, b)
        setattr(second, keyword, a)
    dataset.save_as(path)
    code, result = check_json(seg_case["dicom"], seg_case["seg"], path)
    references = seg_references(path)
    meant = [seg_case["uids"].index(references[name]) for name in result["image_names"]]
    held = result["frame_of_image"]
    wrong = [i for i in range(len(held)) if held[i] != meant[i]]
    assert len(wrong) == 2 and held[wrong[0]] == meant[wrong[1]] and held[wrong[1]] == meant[wrong[0]]
    assert result["residual_mismatched_pixels"] == 0 and result["in_plane"] == "identity"
    finding(result, "2 images hold another frame than the one they reference",
            f"{result['image_names'][wrong[0]]} holds frame {held[wrong[0]]}, not {meant[wrong[0]]}")


# ---------------------------------------------------------------------------------------------------------------
# RTSTRUCT: contours filled on the frames they reference
# ---------------------------------------------------------------------------------------------------------------

def test_segalign_rtstruct_is_exact_and_contours_moved_off_their_plane_are_not(seg_case, tmp_path: Path) -> None:
    run = run_cli("export", seg_case["dicom"], seg_case["seg"], "-o", tmp_path / "out", "--rtstruct")
    assert run.code == 0, run.stderr
    path = tmp_path / "out" / "rtstruct.dcm"
    code, result = check_json(seg_case["dicom"], seg_case["seg"], path)
    assert code == 0, result["findings"]
    dataset = pydicom.dcmread(path)
    normal = np.cross(*np.reshape(np.asarray(pydicom.dcmread(next(seg_case["dicom"].iterdir()))
                                             .ImageOrientationPatient, float), (2, 3)))
    for roi in dataset.ROIContourSequence:
        for contour in roi.ContourSequence:
            points = np.asarray(contour.ContourData, float).reshape(-1, 3) + 0.4 * normal
            contour.ContourData = [f"{v:.4f}" for v in points.ravel()]
    moved = tmp_path / "moved.dcm"
    dataset.save_as(moved)
    code, result = check_json(seg_case["dicom"], seg_case["seg"], moved)
    assert code == 1 and result["residual_mismatched_pixels"] == 0 and result["frame_of_image"] == list(range(12))
    finding(result, "lie off the plane of the frame they are on, by up to 0.4 mm")


def test_rtutils_rtstruct_shrinks_every_structure_by_its_boundary(tmp_path: Path) -> None:
    """rt-utils as its users call it (SimpleITK resampling, add_roi per label) on a regular axial series with an
    LAS segmentation (no pixel centre half-way between voxels, so SimpleITK samples as SegAlign does) and pixels of
    0.9 x 0.8 mm: its contours are placed with the two spacings swapped, and OpenCV's contours run through the
    centres of the boundary pixels, so filled at the pixel centres every structure loses boundary pixels: every
    pixel that differs lies under a contour. (On a regular stack rt-utils' own stack geometry is the frames' own:
    nothing is said of it; tilted and gapped series are in test_check_realdata.py.)"""
    from rt_readers import rtutils_like_users
    from seg_cases import highdicom_ready

    pytest.importorskip("rt_utils")
    pytest.importorskip("SimpleITK")
    specs = stack((-12.4, -11.2, 0.0), 10, (0.0, 0.0, 2.5), spacing=(0.9, 0.8), rows=29, columns=31)
    phantom = phantom_around(specs[5].pixel_centres()[14, 15] - np.array([0, 0, 1.25]), 12.0)
    write_series(tmp_path / "dicom", specs, phantom)
    highdicom_ready(sorted((tmp_path / "dicom").iterdir()))
    affine, shape = las_affine((-30, -30, -15), (30, 30, 40), (0.71, 0.83, 0.97))
    write_nifti(tmp_path / "seg.nii.gz", rasterize(phantom, shape, affine), affine,
                label_table_xml=phantom.label_table_xml())
    path, _, _ = rtutils_like_users(tmp_path / "dicom", tmp_path / "seg.nii.gz", NAMES, tmp_path / "rtutils.dcm")
    code, result = check_json(tmp_path / "dicom", tmp_path / "seg.nii.gz", path)
    assert code == 1 and result["in_plane"] == "identity"
    assert result["frame_of_image"] == [int(name.split()[1]) for name in result["image_names"]]
    assert result["residual_mismatched_pixels"] == result["mismatched_pixels"] > 0
    finding(result, "all of them labelled by SegAlign only and each under a contour", "half a pixel", "rt-utils",
            "counted inside, the contours give SegAlign's labels")
    assert not any("stack of parallel planes" in line or "off the plane" in line for line in result["findings"])
    # rt-utils scales columns by PixelSpacing[0] and rows by PixelSpacing[1]: on these 0.9 x 0.8 mm pixels that
    # stretches every contour; the check names it and judges the rest with it undone
    finding(result, "PixelSpacing's two values swapped (0.9 mm between rows taken as the spacing of the columns")
    assert all(label["dice_after"] < 1.0 for label in result["labels"])


def test_labels_option_names_the_segments_in_findings(tilted, tmp_path: Path) -> None:
    (tmp_path / "table.csv").write_text("1,liver\n2,spleen\n7,aorta\n")
    images = [np.where(frame == 2, 0, frame).astype(np.uint8) for frame in tilted["truth"]]
    export = write_pngs(tmp_path / "pngs", images)
    code, result = check_json(tilted["dicom"], tilted["seg"], export, "--labels", tmp_path / "table.csv")
    assert [(label["value"], label["name"]) for label in result["labels"]] == [(1, "liver"), (2, "spleen"), (7, "aorta")]
    finding(result, "label 2 (spleen) is missing from the export")


# ---------------------------------------------------------------------------------------------------------------
# overlapping segments: every pixel compared as the set of segments on it, Dice per segment
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def overlapping(tmp_path_factory) -> dict:
    """A body around a liver around a tumour, as a folder of NIfTI masks (test_align's case, 33 x 35 frames), and
    SegAlign's export of it with every output that holds overlaps: labels/ + layers/<n>/, masks/, a BINARY SEG,
    an RTSTRUCT. ``masks``: each segment's truth on every frame, (frames, rows, columns) booleans."""
    root = tmp_path_factory.mktemp("overlapping")
    shapes = [Ellipsoid(1, "Body", (0.3, -0.2, 0.1), (16.1, 14.3, 15.2)),
              Ellipsoid(2, "liver", (-4.1, 2.2, 1.3), (6.3, 5.1, 5.9)),
              Ellipsoid(3, "tumour", (-2.9, 3.1, 2.2), (2.8, 2.4, 3.1))]
    specs = stack((-15.2, -14.9, -12.3), 12, (0, 0, 2.17), spacing=(0.97, 0.91), rows=33, columns=35)
    write_series(root / "dicom", specs, Phantom(shapes=shapes))
    affine, shape = las_affine((-20, -20, -20), (20, 20, 20), (0.77, 0.81, 0.93))
    for item in shapes:
        voxels = rasterize(Phantom(shapes=[item]), shape, affine) > 0
        write_nifti(root / "segmentation" / f"{item.name}.nii.gz", voxels.astype(np.uint8), affine)
    run = run_cli("export", root / "dicom", root / "segmentation", "-o", root / "export", "--masks", "--dicom-seg",
                  "--rtstruct")
    assert run.code == 0, run.stderr
    assert (root / "export" / "layers").is_dir(), "the segments overlap on the frames: SegAlign writes layers"
    alignment = segalign.align(root / "dicom", root / "segmentation")
    masks = {label.name: alignment.mask(label.value) for label in alignment.segments}
    shared = sum(int(np.count_nonzero(sum(m[k].astype(int) for m in masks.values()) > 1)) for k in range(12))
    assert shared and (masks["tumour"] & ~masks["liver"]).sum() < masks["tumour"].sum(), "they overlap"
    return {"dicom": root / "dicom", "seg": root / "segmentation", "export": root / "export", "masks": masks,
            "shared": shared}


def write_mask_folders(folder: Path, masks: dict, make=lambda mask: mask, leave_out=()) -> Path:
    """One folder of 0/255 PNG masks per segment, named by the segment, one image per frame in acquisition order."""
    for name, stacked in masks.items():
        if name not in leave_out:
            write_pngs(folder / name, [(make(mask) * 255).astype(np.uint8) for mask in stacked])
    return folder


def test_overlapping_segalign_exports_check_exact(overlapping) -> None:
    export = overlapping["export"]
    for path in (export, export / "labels", export / "masks", export / "seg.dcm", export / "rtstruct.dcm"):
        code, result = check_json(overlapping["dicom"], overlapping["seg"], path)
        assert code == 0, (path, result["findings"])
        assert [(label["name"], label["dice_before"]) for label in result["labels"]] == [
            ("Body", 1.0), ("liver", 1.0), ("tumour", 1.0)]
        finding(result, f"the segments overlap (SegAlign's labels have {overlapping['shared']} pixels in two segments "
                        "or more", "every segment whole")
    code, result = check_json(overlapping["dicom"], overlapping["seg"], export)
    finding(result, "the manifest's 3 label layers of every frame together (label_png, label_png_2, label_png_3)")


def test_overlapping_masks_transposed_are_named_and_undone(overlapping, tmp_path: Path) -> None:
    masks = overlapping["masks"]
    export = write_mask_folders(tmp_path / "masks", masks, make=lambda mask: mask.T)
    code, result = check_json(overlapping["dicom"], overlapping["seg"], export)
    assert code == 1 and result["in_plane"] == "transpose" and result["frame_of_image"] == list(range(12))
    assert result["residual_mismatched_pixels"] == 0
    line = finding(result, "every image", "(transpose)")
    for name in masks:  # the undo, run on each segment's own masks as read back
        back = np.stack([run_undo(line, image=read_png(export / name / f"{k:04d}.png"))["fixed"] for k in range(12)])
        assert np.array_equal(back != 0, masks[name]), name
    assert [(label["name"], label["dice_after"]) for label in result["labels"]] == [
        ("Body", 1.0), ("liver", 1.0), ("tumour", 1.0)]


def test_overlapping_masks_reversed_with_a_segment_left_out(overlapping, tmp_path: Path) -> None:
    """Masks written in reverse frame order, the tumour (wholly inside the liver and the body) not written: the
    order is named, the tumour is missing (its pixels are still in the other two segments, which is no sign of it),
    and Dice is per segment."""
    masks = overlapping["masks"]
    reversed_masks = {name: stacked[::-1] for name, stacked in masks.items()}
    export = write_mask_folders(tmp_path / "masks", reversed_masks, leave_out=("tumour",))
    code, result = check_json(overlapping["dicom"], overlapping["seg"], export)
    assert result["frame_of_image"] == list(range(11, -1, -1)) and result["in_plane"] == "identity"
    finding(result, "reverse order", "images = images[::-1]")
    finding(result, "label 3 (tumour) is missing from the export")
    dice = {label["name"]: (label["dice_before"], label["dice_after"]) for label in result["labels"]}
    assert dice["Body"][1] == dice["liver"][1] == 1.0 and dice["tumour"] == (0.0, 0.0)
    body = masks["Body"]
    both = int(np.count_nonzero(body & body[::-1]))  # Dice before: the reversed body over the true one
    assert dice["Body"][0] == round(2 * both / (2 * int(body.sum())), 6)
    assert result["residual_mismatched_pixels"] == 0


def test_one_label_per_pixel_cannot_hold_overlapping_segments(overlapping, tmp_path: Path) -> None:
    """The labels/ folder copied without the manifest (layer 1 only), and a later-wins label map: not exact, and
    said why."""
    alignment = segalign.align(overlapping["dicom"], overlapping["seg"])
    export = write_pngs(tmp_path / "layer1", list(alignment.layers[0]))
    code, result = check_json(overlapping["dicom"], overlapping["seg"], export)
    assert code == 1
    finding(result, "the export holds one label per pixel, so where the segments overlap it holds one of them at most")
    in_layer1 = set(np.unique(alignment.layers[0]).tolist()) - {0}
    elsewhere = [label for label in alignment.segments if label.value not in in_layer1]
    assert elsewhere, "some segment is in a further layer"
    finding(result, ", ".join(f"{label.value} ({label.name})" for label in elsewhere), "missing from the export")
    finding(result, "exact but for the labels missing or merged, which cannot be undone")
    masks = overlapping["masks"]
    flat = np.zeros(masks["Body"].shape, np.uint8)
    for value, name in enumerate(masks, start=1):
        flat[masks[name]] = value  # later wins
    np.save(tmp_path / "flat.npy", flat)
    code, result = check_json(overlapping["dicom"], overlapping["seg"], tmp_path / "flat.npy")
    assert code == 1 and result["frame_of_image"] == list(range(12))
    dice = {label["name"]: label["dice_after"] for label in result["labels"]}
    assert dice["tumour"] == 1.0 and dice["liver"] < 1.0 and dice["Body"] < 1.0  # what later-wins covered


def test_overlapping_report_pictures_compare_every_segment(overlapping, tmp_path: Path) -> None:
    """A frame whose liver alone is flipped: its picture is written, its difference marks the liver's pixels."""
    masks = overlapping["masks"]
    frame = next(k for k in range(12) if masks["tumour"][k].any())
    changed = {name: stacked.copy() for name, stacked in masks.items()}
    changed["liver"][frame] = changed["liver"][frame][::-1, :]
    export = write_mask_folders(tmp_path / "masks", changed)
    run = run_cli("check", overlapping["dicom"], overlapping["seg"], export, "-o", tmp_path / "report")
    assert run.code == 1, run.stderr
    assert sorted(p.name for p in (tmp_path / "report" / "frames").iterdir()) == [f"frame_{frame:04d}.png"]
    picture = read_png(tmp_path / "report" / "frames" / f"frame_{frame:04d}.png")
    assert picture.shape[2] == 3


def test_the_suite_checks_overlapping_exports_and_their_dicom_objects(overlapping, tmp_path: Path,
                                                                     monkeypatch) -> None:
    """SEGALIGN_CHECK_EXPORTS=1 also checks exports of overlapping segments (every layer); =all also the SEG and the
    RTSTRUCT an export wrote: each must be exact."""
    import segalign.check

    real = segalign.check.check_export
    checked = []

    def spy(*args, **kwargs):
        result = real(*args, **kwargs)
        checked.append((Path(args[2]).name, result.exact))
        return result

    monkeypatch.setattr(segalign.check, "check_export", spy)
    monkeypatch.setenv("SEGALIGN_CHECK_EXPORTS", "1")
    run = run_cli("export", overlapping["dicom"], overlapping["seg"], "-o", tmp_path / "one", "--dicom-seg",
                  "--rtstruct")
    assert run.code == 0, run.stderr
    assert checked == [("one", True)]
    monkeypatch.setenv("SEGALIGN_CHECK_EXPORTS", "all")
    run = run_cli("export", overlapping["dicom"], overlapping["seg"], "-o", tmp_path / "all", "--dicom-seg",
                  "--rtstruct")
    assert run.code == 0, run.stderr
    assert checked[1:] == [("all", True), ("seg.dcm", True), ("rtstruct.dcm", True)]
