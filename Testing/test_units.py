"""Unit tests of the small pure pieces: orientation names, label tables, tie rounding, affine resolution."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from segalign.dicom import Frame
from segalign.geometry import direction_letters, plane_orientation, tilt_degrees
from segalign.segmentation import (
    FrameSampler,
    complete_table,
    default_name,
    parse_caret_label_table,
    read_label_file,
)
from segalign.readers import load_segmentation
from segalign.synthetic import write_nifti


@pytest.mark.parametrize(
    "iop, name, nearest",
    [
        ((1, 0, 0, 0, 1, 0), "AXIAL", "AXIAL"),
        ((0, 1, 0, 0, 0, -1), "SAGITTAL", "SAGITTAL"),
        ((1, 0, 0, 0, 0, -1), "CORONAL", "CORONAL"),
        ((1, 0, 0, 0, 0.9483237, -0.3173047), "OBLIQUE", "AXIAL"),  # the GE tilt series: 18.5 deg
    ],
)
def test_plane_orientation(iop: tuple, name: str, nearest: str) -> None:
    orientation = plane_orientation(np.array(iop, dtype=float))
    assert (orientation.name, orientation.nearest) == (name, nearest)


def test_oblique_angle_and_letters() -> None:
    assert plane_orientation(np.array([1, 0, 0, 0, 0.9483237, -0.3173047])).degrees_off == pytest.approx(18.5, abs=0.01)
    assert direction_letters(np.array([0, 0, 1.0])) == "S"
    assert direction_letters(np.array([-0.1, 0.2, -0.9])) == "IPR"
    assert tilt_degrees(np.array([0, 0, 5.0]), np.array([0, np.sin(0.3), np.cos(0.3)])) == pytest.approx(np.degrees(0.3))


def frame(position, rows=1, columns=4, spacing=(1.0, 1.0), orientation=(1, 0, 0, 0, 1, 0)) -> Frame:
    return Frame(Path("x"), 1, "1.2", 1, tuple(position), tuple(float(v) for v in orientation), spacing, rows, columns)


def test_ties_round_up_like_itk() -> None:
    """Pixel centres exactly halfway between two voxel centres take the upper voxel: floor(x + 0.5)."""
    labels = np.arange(1, 9, dtype=np.uint8).reshape(8, 1, 1)
    affine = np.diag([-2.0, -1.0, 1.0, 1.0])  # voxel i at LPS x = 2 i
    sampler = FrameSampler(labels, affine)
    result = sampler.sample(frame((1.0, 0, 0)))  # LPS x = 1, 2, 3, 4 -> continuous i = 0.5, 1, 1.5, 2
    assert result.tolist() == [[2, 2, 3, 3]]


def test_outside_the_volume_is_zero_and_counted() -> None:
    labels = np.full((3, 3, 3), 5, dtype=np.uint8)
    sampler = FrameSampler(labels, np.diag([-1.0, -1.0, 1.0, 1.0]))
    assert sampler.sample(frame((-2.0, 1, 1), columns=6)).tolist() == [[0, 0, 5, 5, 5, 0]]
    assert sampler.pixels_inside == 3
    assert not sampler.sample(frame((0, 0, 7))).any()
    assert not sampler.may_overlap(frame((0, 0, 7)))
    assert sampler.may_overlap(frame((-2.0, 1, 1), columns=6))


CARET = """<?xml version="1.0" encoding="UTF-8"?> <CaretExtension><VolumeInformation Index="0"><LabelTable>
<Label Key="1" Red="0.0" Green="1.0" Blue="0.0" Alpha="1"><![CDATA[spleen]]></Label>
<Label Key="5" Red="0.0" Green="0.5019607843137255" Blue="1.0" Alpha="1"><![CDATA[liver]]></Label>
</LabelTable></VolumeInformation></CaretExtension>"""


def test_caret_label_table() -> None:
    table = parse_caret_label_table(CARET)
    assert {v: (label.name, label.color) for v, label in table.items()} == {1: ("spleen", (0, 255, 0)), 5: ("liver", (0, 128, 255))}


def test_embedded_table_is_read_and_user_table_wins(tmp_path: Path) -> None:
    labels = np.zeros((4, 4, 4), dtype=np.uint8)
    labels[0, 0, 0], labels[1, 1, 1], labels[2, 2, 2] = 1, 5, 9
    path = write_nifti(tmp_path / "seg.nii.gz", labels, np.eye(4), label_table_xml=CARET)
    segmentation = load_segmentation(path)
    assert {v: label.name for v, label in segmentation.label_table.items()} == {1: "spleen", 5: "liver", 9: default_name(9)}
    user = tmp_path / "names.csv"
    user.write_text("value,name,r,g,b\n5,Liver (user),10,20,30\n")
    segmentation = load_segmentation(path, label_table=user)
    assert segmentation.label_table[5].name == "Liver (user)" and segmentation.label_table[5].color == (10, 20, 30)
    assert segmentation.label_table[1].name == "spleen"


def test_slicer_color_table(tmp_path: Path) -> None:
    path = tmp_path / "colors.ctbl"
    path.write_text("# Color table file\n# 2 values\n0 Background 0 0 0 0\n3 right_kidney 185 102 83 255\n")
    table = read_label_file(path)
    assert table[3].name == "right_kidney" and table[3].color == (185, 102, 83)
    assert set(complete_table([3, 4], table)) == {3, 4}


def test_integral_float_and_trailing_singleton_are_accepted(tmp_path: Path) -> None:
    labels = np.zeros((4, 5, 6, 1), dtype=np.float32)
    labels[1, 2, 3, 0] = 300.0
    image = nib.Nifti1Image(labels, np.eye(4))
    image.set_sform(np.eye(4), code=1)
    nib.save(image, tmp_path / "seg.nii")
    segmentation = load_segmentation(tmp_path / "seg.nii")
    assert segmentation.labels.shape == (4, 5, 6) and segmentation.labels.dtype == np.uint16
    assert segmentation.voxel_counts == {300: 1}


def test_exact_ties_do_not_depend_on_where_the_grid_is_stored() -> None:
    """A 1.5 mm grid on 0.78125 mm pixels puts whole rows exactly halfway between voxels. The same labels stored
    with another origin (cropped by whole voxels, as Slicer's merge does) must give the same frames: ties are
    decided by the rule (round up), not by floating-point error."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=(267, 267, 40)).astype(np.uint8)
    first = np.array([-200 + 0.78125 / 2, -200 + 0.78125 / 2, 0.0])
    high_y = first[1] + 511 * 0.78125
    affine = np.array([[-1.5, 0, 0, -(first[0] - 0.37)], [0, 1.5, 0, -high_y], [0, 0, 1.5, -0.37], [0, 0, 0, 1]])
    crop = np.array([25, 63, 2])
    cropped = np.asfortranarray(labels[25:, 63:, 2:])
    shifted = affine.copy()
    shifted[:3, 3] = affine[:3, :3] @ crop + affine[:3, 3]
    whole, part = FrameSampler(labels, affine), FrameSampler(cropped, shifted)
    tie_rows = 0
    for k in range(0, 30, 3):
        f = frame((first[0], first[1], 1.6 * k), rows=512, columns=512, spacing=(0.78125, 0.78125))
        a, b = whole.sample(f), part.sample(f)
        np.testing.assert_array_equal(a[b != 0], b[b != 0])
        j = (high_y - (first[1] + 0.78125 * np.arange(512))) / 1.5
        tie_rows = int(np.sum(np.isclose(j - np.floor(j), 0.5)))
    assert tie_rows >= 5, "the geometry must contain exact ties, or the test proves nothing"


@pytest.mark.parametrize("dtype", ["uint8", ">i2", "<u2", "float32"])
def test_compressed_voxels_read_in_place_equal_nibabel(tmp_path: Path, dtype: str) -> None:
    """Reading .nii.gz voxels straight into the array (to halve the loading peak) gives nibabel's values, for any
    byte order and with a header extension shifting the data offset; scaled data is left to nibabel."""
    from segalign.readers.nifti import read_compressed

    rng = np.random.default_rng(1)
    data = rng.integers(0, 200, size=(7, 9, 5)).astype(dtype)
    image = nib.Nifti1Image(data, np.eye(4))
    image.header.extensions.append(nib.nifti1.Nifti1Extension(0, b"<LabelTable>" + b"x" * 1000 + b"</LabelTable>"))
    nib.save(image, tmp_path / "seg.nii.gz")
    loaded = nib.load(tmp_path / "seg.nii.gz")
    np.testing.assert_array_equal(read_compressed(loaded, tmp_path / "seg.nii.gz"), np.asanyarray(loaded.dataobj))
    scaled = nib.Nifti1Image(data.astype(np.int16), np.eye(4))
    scaled.header.set_slope_inter(2.0, 1.0)
    nib.save(scaled, tmp_path / "scaled.nii.gz")
    assert read_compressed(nib.load(tmp_path / "scaled.nii.gz"), tmp_path / "scaled.nii.gz") is None


@pytest.mark.parametrize("dtype", ["bool", "uint8", "uint16"])
def test_png_writer_round_trips_through_pillow(tmp_path: Path, dtype: str) -> None:
    """The fast grayscale PNG writer: Pillow reads back exactly the array, for odd widths and 1-bit packing."""
    from PIL import Image

    from segalign.writers.images.png import write_gray

    rng = np.random.default_rng(3)
    pixels = (rng.integers(0, 2, (13, 21)) > 0) if dtype == "bool" else rng.integers(0, np.iinfo(dtype).max, (13, 21)).astype(dtype)
    write_gray(tmp_path / "x.png", pixels)
    with Image.open(tmp_path / "x.png") as image:
        assert image.mode == {"bool": "1", "uint8": "L", "uint16": "I;16"}[dtype]
        np.testing.assert_array_equal(np.array(image), pixels)


def _read_frame_script(script: str) -> tuple[np.ndarray, np.ndarray]:
    """The stored values and labels of a preview frame script, decoded independently of the page: the values'
    differences are undone with a cumulative sum modulo 2**16."""
    import base64
    import re
    import zlib

    _, kind, values, label_kind, labels = re.fullmatch(
        r'segalignFrame\((\d+),"(\w+)","([^"]*)","(\w+)","([^"]*)"\);\n', script).groups()
    raw = zlib.decompress(base64.b64decode(values))
    if kind == "i4":
        stored = np.frombuffer(raw, "<i4")
    else:
        planes = np.frombuffer(raw, np.uint8).astype(np.int64)
        zigzag = planes[: planes.size // 2] | (planes[planes.size // 2:] << 8)
        delta = (zigzag >> 1) ^ -(zigzag & 1)
        stored = (np.cumsum(delta) & 0xFFFF).astype(np.uint16)
        stored = stored if kind == "u2" else stored.view(np.int16)
    return stored, np.frombuffer(zlib.decompress(base64.b64decode(labels)), "<" + label_kind)


@pytest.mark.parametrize("low, high, kind", [(0, 65536, "u2"), (-32768, 32768, "i2"), (-2048, 3000, "i2"),
                                             (-70000, 70000, "i4")])
def test_preview_frame_scripts_keep_every_stored_value(low: int, high: int, kind: str) -> None:
    """The page's frame data gives back every stored value, including the extremes and jumps across the whole
    16-bit range (the differences wrap), and the label image."""
    from segalign.writers.images.preview import frame_script

    rng = np.random.default_rng(7)
    stored = rng.integers(low, high, size=(37, 53))
    stored.flat[:4] = [low, high - 1, low, high - 1]
    labels = rng.integers(0, 300, size=stored.shape).astype(np.uint16)
    script = frame_script(3, stored, labels)
    assert f'segalignFrame(3,"{kind}"' in script
    values, decoded = _read_frame_script(script)
    np.testing.assert_array_equal(values.reshape(stored.shape), stored)
    np.testing.assert_array_equal(decoded.reshape(stored.shape), labels)
    values, decoded = _read_frame_script(frame_script(0, stored[:0], labels[:0].astype(np.uint8)))
    assert values.size == 0 and decoded.size == 0 and decoded.dtype == np.uint8


def test_direction_letters_threshold() -> None:
    """The preview's edge letters name only components of at least 0.1: an oblique frame gets two letters, a
    nearly axial one (3 degrees) one."""
    from segalign.writers.images.preview import LETTER_THRESHOLD

    assert direction_letters(np.array([0.8660254, 0.5, 0]), LETTER_THRESHOLD) == "LP"
    assert direction_letters(np.array([0.9986, 0.0523, 0]), LETTER_THRESHOLD) == "L"
    assert direction_letters(np.array([0.9986, 0.0523, 0])) == "LP"
    assert direction_letters(np.array([0, -0.6, -0.8]), LETTER_THRESHOLD) == "IA"
