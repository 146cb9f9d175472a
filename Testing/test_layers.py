"""segmentation/layers.py's pure functions, case by case: LayerPacker (first fit), crop, merge_layers and
LayerMerger (layers on one lattice whose labelled voxels never meet), lattice_offset, first_overlap; and
readers.combine.relabel. Every case is small enough to state its answer in full."""

from __future__ import annotations

import numpy as np
import pytest

from segalign.readers.combine import relabel
from segalign.segmentation import (
    Layer,
    LayerMerger,
    LayerPacker,
    bounding_box,
    crop,
    first_overlap,
    label_dtype,
    lattice_offset,
    merge_layers,
)

SHAPE = (6, 5, 4)
AFFINE = np.array([[-1.5, 0, 0, 10.0], [0, 1.25, 0, -3.0], [0, 0, 2.0, 7.5], [0, 0, 0, 1]])


def box(low, high, shape=SHAPE) -> np.ndarray:
    """A mask of ``shape``, true on ``low <= index < high``."""
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(a, b) for a, b in zip(low, high))] = True
    return mask


def shifted(affine: np.ndarray, offset) -> np.ndarray:
    moved = np.array(affine, dtype=float)
    moved[:3, 3] = affine[:3, :3] @ np.asarray(offset, dtype=float) + affine[:3, 3]
    return moved


def layer(labels: dict[int, np.ndarray], shape=SHAPE, offset=(0, 0, 0), affine=AFFINE, dtype=np.uint8) -> Layer:
    """A layer on ``affine``'s lattice moved by ``offset`` voxels, each value painted on its mask."""
    array = np.zeros(shape, dtype=dtype, order="F")
    for value, mask in labels.items():
        array[mask] = value
    return Layer(array, shifted(affine, offset))


# ---------------------------------------------------------------------------------------------------------------
# LayerPacker: each segment in the first layer where it overlaps nothing
# ---------------------------------------------------------------------------------------------------------------

PACKER_CASES = {
    # name: (segments given in order: (value, low, high)), the layer each goes to, the layers made
    "none overlap: one layer": ([(1, (0, 0, 0), (2, 2, 2)), (2, (3, 3, 2), (5, 5, 4)), (3, (0, 3, 0), (1, 5, 1))],
                                [0, 0, 0], 1),
    "nested three deep": ([(1, (0, 0, 0), (6, 5, 4)), (2, (1, 1, 1), (5, 4, 3)), (3, (2, 2, 1), (3, 3, 2))],
                          [0, 1, 2], 3),
    "body then two organs apart": ([(1, (0, 0, 0), (6, 5, 4)), (2, (0, 0, 0), (2, 2, 2)), (3, (4, 3, 2), (6, 5, 4))],
                                   [0, 1, 1], 2),
    "a later segment fits the first layer again": ([(1, (0, 0, 0), (3, 5, 4)), (2, (2, 0, 0), (4, 5, 4)),
                                                    (3, (4, 0, 0), (6, 5, 4))], [0, 1, 0], 2),
    "all overlap all: one layer each": ([(1, (0, 0, 0), (3, 3, 3)), (2, (1, 1, 1), (4, 4, 4)),
                                         (3, (2, 2, 2), (5, 5, 4))], [0, 1, 2], 3),
    "touching is not overlapping": ([(1, (0, 0, 0), (3, 5, 4)), (2, (3, 0, 0), (6, 5, 4))], [0, 0], 1),
    "one voxel inside another": ([(5, (0, 0, 0), (6, 5, 4)), (9, (2, 2, 2), (3, 3, 3))], [0, 1], 2),
    "an empty segment goes in the first layer": ([(1, (0, 0, 0), (6, 5, 4)), (2, (0, 0, 0), (0, 0, 0))], [0, 0], 1),
    "overlap on one plane only": ([(1, (0, 0, 0), (6, 5, 2)), (2, (0, 0, 1), (6, 5, 4)), (3, (0, 0, 2), (6, 5, 4))],
                                  [0, 1, 0], 2),
}


@pytest.mark.parametrize("case", sorted(PACKER_CASES))
def test_layer_packer(case: str) -> None:
    segments, expected_layers, count = PACKER_CASES[case]
    packer = LayerPacker(SHAPE, largest=max(value for value, _, _ in segments))
    got = [packer.add(value, box(low, high)) for value, low, high in segments]
    assert got == expected_layers
    assert len(packer.layers) == count
    for (value, low, high), index in zip(segments, got):  # every segment whole, in its layer only
        np.testing.assert_array_equal(packer.layers[index] == value, box(low, high))
        voxels = int(box(low, high).sum())
        assert packer.voxels.get(value, 0) == voxels and packer.layer_of.get(value, index if voxels else None) == \
            (index if voxels else None)
        assert not any((other == value).any() for n, other in enumerate(packer.layers) if n != index)
    assert all(layer.flags.f_contiguous and layer.dtype == np.uint8 for layer in packer.layers)


@pytest.mark.parametrize("largest, dtype", [(1, np.uint8), (255, np.uint8), (256, np.uint16), (65535, np.uint16)])
def test_layer_packer_label_type(largest: int, dtype: type) -> None:
    packer = LayerPacker((2, 2, 2), largest)
    packer.add(largest, box((0, 0, 0), (1, 1, 1), (2, 2, 2)))
    assert packer.layers[0].dtype == dtype == label_dtype(largest)
    assert packer.layers[0][0, 0, 0] == largest


# ---------------------------------------------------------------------------------------------------------------
# bounding_box: the slices around the non-zero voxels, whatever the memory order
# ---------------------------------------------------------------------------------------------------------------

BOX_CASES = {
    # name: non-zero voxels, expected box (low, high) or None
    "one voxel": ([(2, 3, 1)], ((2, 3, 1), (3, 4, 2))),
    "two corners": ([(0, 0, 0), (5, 4, 3)], ((0, 0, 0), (6, 5, 4))),
    "a line along the last axis": ([(1, 1, 0), (1, 1, 3)], ((1, 1, 0), (2, 2, 4))),
    "scattered": ([(4, 0, 2), (1, 3, 2), (2, 2, 1)], ((1, 0, 1), (5, 4, 3))),
    "empty": ([], None),
}


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", [bool, np.uint8, np.uint16])
@pytest.mark.parametrize("case", sorted(BOX_CASES))
def test_bounding_box(case: str, dtype: type, order: str) -> None:
    voxels, expected = BOX_CASES[case]
    array = np.zeros(SHAPE, dtype=dtype, order=order)
    for voxel in voxels:
        array[voxel] = 1
    got = bounding_box(array)
    if expected is None:
        assert got is None
    else:
        assert got == tuple(slice(a, b) for a, b in zip(*expected))


@pytest.mark.parametrize("order", ["C", "F"])
def test_layer_packer_takes_masks_of_either_order(order: str) -> None:
    packer = LayerPacker(SHAPE, 3)
    masks = {1: box((0, 0, 0), (4, 5, 4)), 2: box((3, 1, 1), (6, 3, 2)), 3: box((5, 0, 0), (6, 5, 4))}
    assert [packer.add(value, np.asarray(mask, order=order)) for value, mask in masks.items()] == [0, 1, 0]
    for value, mask in masks.items():
        assert sum(int((layer == value).sum()) for layer in packer.layers) == int(mask.sum())
        assert any(np.array_equal(layer == value, mask) for layer in packer.layers)


# ---------------------------------------------------------------------------------------------------------------
# crop: the box around the labelled voxels, the affine moved with it
# ---------------------------------------------------------------------------------------------------------------

CROP_CASES = {
    # name: (labelled box low, high), expected shape, expected offset (None: the same layer back)
    "inner box": (((1, 2, 1), (4, 4, 3)), (3, 2, 2), (1, 2, 1)),
    "one voxel": (((5, 0, 3), (6, 1, 4)), (1, 1, 1), (5, 0, 3)),
    "touches the far corner": (((2, 1, 1), (6, 5, 4)), (4, 4, 3), (2, 1, 1)),
    "whole volume: unchanged": (((0, 0, 0), (6, 5, 4)), SHAPE, None),
    "spans every axis from corner to corner": (None, SHAPE, None),
    "empty: one voxel": (((0, 0, 0), (0, 0, 0)), (1, 1, 1), (0, 0, 0)),
}


@pytest.mark.parametrize("case", sorted(CROP_CASES))
def test_crop(case: str) -> None:
    labelled, shape, offset = CROP_CASES[case]
    if labelled is None:  # two voxels at opposite corners: the box is the whole volume
        mask = np.zeros(SHAPE, dtype=bool)
        mask[0, 0, 0] = mask[-1, -1, -1] = True
    else:
        mask = box(*labelled)
    original = layer({7: mask})
    cropped = crop(original)
    assert cropped.labels.shape == shape
    if offset is None:
        assert cropped is original
        return
    assert cropped.labels.flags.f_contiguous
    np.testing.assert_allclose(cropped.affine, shifted(AFFINE, offset))
    # Every voxel keeps its label at its place in the patient.
    index = np.argwhere(cropped.labels >= 0)
    for i, j, k in index:
        assert cropped.labels[i, j, k] == original.labels[i + offset[0], j + offset[1], k + offset[2]]
    assert int((cropped.labels == 7).sum()) == int(mask.sum())


# ---------------------------------------------------------------------------------------------------------------
# lattice_offset: one lattice, or not
# ---------------------------------------------------------------------------------------------------------------

LATTICE_CASES = {
    # name: (the second layer's affine, its shape), expected offset (None: another lattice)
    "same grid": ((AFFINE, SHAPE), (0, 0, 0)),
    "cropped box": ((shifted(AFFINE, (2, 1, 3)), (2, 2, 1)), (2, 1, 3)),
    "outside, before the origin": ((shifted(AFFINE, (-3, 0, -1)), (2, 2, 2)), (-3, 0, -1)),
    "half a voxel off": ((shifted(AFFINE, (0.5, 0, 0)), (2, 2, 2)), None),
    "a hundredth of a voxel off": ((shifted(AFFINE, (0, 0.01, 0)), (2, 2, 2)), None),
    "rounding error only": ((shifted(AFFINE, (1 + 1e-9, 2 - 1e-9, 0)), (2, 2, 2)), (1, 2, 0)),
    "other spacing": ((AFFINE @ np.diag([1.0, 1.0, 0.5, 1.0]), SHAPE), None),
    "axes swapped": ((AFFINE @ np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]), SHAPE), None),
    "rotated a little": ((np.array([[np.cos(0.01), -np.sin(0.01), 0, 0], [np.sin(0.01), np.cos(0.01), 0, 0],
                                    [0, 0, 1, 0], [0, 0, 0, 1]]) @ AFFINE, SHAPE), None),
}


@pytest.mark.parametrize("case", sorted(LATTICE_CASES))
def test_lattice_offset(case: str) -> None:
    (affine, shape), expected = LATTICE_CASES[case]
    got = lattice_offset(Layer(np.zeros(SHAPE, np.uint8), AFFINE), Layer(np.zeros(shape, np.uint8), affine))
    if expected is None:
        assert got is None
    else:
        assert got is not None and tuple(int(v) for v in got) == expected


# ---------------------------------------------------------------------------------------------------------------
# merge_layers: layers that never meet become one; the segments, in the patient, unchanged
# ---------------------------------------------------------------------------------------------------------------


def voxels_in_patient(layers: list[Layer]) -> dict[int, set[tuple[float, float, float]]]:
    """Every label value's voxel centres (RAS, rounded), whatever layer and box holds them."""
    result: dict[int, set] = {}
    for one in layers:
        for index in np.argwhere(one.labels != 0):
            value = int(one.labels[tuple(index)])
            centre = tuple(np.round(one.affine[:3, :3] @ index + one.affine[:3, 3], 6))
            result.setdefault(value, set()).add(centre)
    return result


MERGE_CASES = {
    # name: (layers: (labels {value: (low, high)}, shape, offset)), keep_first, expected layers (count, shapes)
    "same grid, apart": ([({1: ((0, 0, 0), (2, 2, 2))}, SHAPE, (0, 0, 0)), ({2: ((3, 3, 2), (6, 5, 4))}, SHAPE, (0, 0, 0))],
                         False, [SHAPE]),
    "same grid, meeting": ([({1: ((0, 0, 0), (3, 3, 3))}, SHAPE, (0, 0, 0)), ({2: ((2, 2, 2), (6, 5, 4))}, SHAPE, (0, 0, 0))],
                           False, [SHAPE, SHAPE]),
    "boxes overlap, voxels apart": ([({1: ((0, 0, 0), (1, 1, 1))}, (3, 3, 3), (0, 0, 0)),
                                     ({2: ((1, 1, 1), (2, 2, 2))}, (3, 3, 3), (1, 1, 1))], False, [(4, 4, 4)]),
    "cropped boxes far apart: the box around both": ([({1: ((0, 0, 0), (1, 1, 1))}, (1, 1, 1), (0, 0, 0)),
                                                      ({2: ((0, 0, 0), (2, 1, 1))}, (2, 1, 1), (4, 3, 2))],
                                                     False, [(6, 4, 3)]),
    "a box before the first": ([({1: ((0, 0, 0), (2, 2, 2))}, (2, 2, 2), (2, 2, 2)),
                                ({2: ((0, 0, 0), (1, 1, 1))}, (1, 1, 1), (-1, 0, 0))], False, [(5, 4, 4)]),
    "keep_first: inside the first goes in": ([({1: ((0, 0, 0), (2, 2, 2))}, SHAPE, (0, 0, 0)),
                                              ({2: ((0, 0, 0), (2, 1, 1))}, (2, 1, 1), (3, 3, 2))], True, [SHAPE]),
    "keep_first: sticking out of the first stays apart": (
        [({1: ((0, 0, 0), (2, 2, 2))}, SHAPE, (0, 0, 0)), ({2: ((0, 0, 0), (2, 1, 1))}, (2, 1, 1), (5, 3, 2))],
        True, [SHAPE, (2, 1, 1)]),
    "keep_first: later layers still grow together": (
        [({1: ((0, 0, 0), (6, 5, 4))}, SHAPE, (0, 0, 0)), ({2: ((0, 0, 0), (1, 1, 1))}, (1, 1, 1), (1, 1, 1)),
         ({3: ((0, 0, 0), (1, 1, 1))}, (1, 1, 1), (4, 3, 2))], True, [SHAPE, (4, 3, 2)]),
    "first fit, order kept": ([({1: ((0, 0, 0), (6, 5, 4))}, SHAPE, (0, 0, 0)),
                               ({2: ((0, 0, 0), (3, 5, 4))}, SHAPE, (0, 0, 0)),
                               ({3: ((1, 1, 1), (2, 2, 2))}, SHAPE, (0, 0, 0)),
                               ({4: ((4, 0, 0), (6, 5, 4))}, SHAPE, (0, 0, 0))], False, [SHAPE, SHAPE, SHAPE]),
    "three deep": ([({1: ((0, 0, 0), (6, 5, 4))}, SHAPE, (0, 0, 0)), ({2: ((1, 1, 1), (5, 4, 3))}, SHAPE, (0, 0, 0)),
                    ({3: ((2, 2, 1), (3, 3, 2))}, SHAPE, (0, 0, 0))], False, [SHAPE, SHAPE, SHAPE]),
}


@pytest.mark.parametrize("case", sorted(MERGE_CASES))
def test_merge_layers(case: str) -> None:
    given, keep_first, expected_shapes = MERGE_CASES[case]
    layers = [layer({value: box(low, high, shape) for value, (low, high) in labels.items()}, shape, offset)
              for labels, shape, offset in given]
    before = [one.labels.copy() for one in layers]
    merged = merge_layers(layers, keep_first=keep_first)
    assert [one.labels.shape for one in merged] == expected_shapes
    assert voxels_in_patient(merged) == voxels_in_patient(layers), "every segment's voxels, where they were"
    for one, original in zip(layers, before):
        np.testing.assert_array_equal(one.labels, original)  # the layers given are not changed
    if keep_first:
        np.testing.assert_array_equal(merged[0].affine, layers[0].affine)
    for one in merged:  # within a layer, no voxel is claimed twice: each value's voxels are disjoint by construction
        assert one.labels.flags.f_contiguous or one.labels.ndim == 3


def test_merge_layers_on_other_lattices_stay_apart() -> None:
    first = layer({1: box((0, 0, 0), (1, 1, 1))})
    other = Layer(np.ones((2, 2, 2), np.uint8) * 2, shifted(AFFINE, (0.5, 0, 0)))
    assert len(merge_layers([first, other])) == 2


def test_merge_layers_promotes_the_label_type() -> None:
    small = layer({3: box((0, 0, 0), (1, 1, 1))})
    wide = layer({300: box((2, 2, 2), (3, 3, 3))}, dtype=np.uint16)
    (merged,) = merge_layers([small, wide])
    assert merged.labels.dtype == np.uint16
    assert merged.labels[0, 0, 0] == 3 and merged.labels[2, 2, 2] == 300


def test_layer_merger_copies_once_then_fills_in_place() -> None:
    merger = LayerMerger(keep_first=True)
    base = layer({1: box((0, 0, 0), (2, 2, 2))})
    assert merger.add(base) == 0
    assert merger.add(layer({2: box((0, 0, 0), (1, 1, 1), (1, 1, 1))}, (1, 1, 1), (4, 4, 3))) == 0
    made = merger.layers[0].labels
    assert made is not base.labels and base.labels[4, 4, 3] == 0
    assert merger.add(layer({3: box((0, 0, 0), (1, 1, 1), (1, 1, 1))}, (1, 1, 1), (5, 0, 0))) == 0
    assert merger.layers[0].labels is made and made[5, 0, 0] == 3 and made[4, 4, 3] == 2
    assert merger.add(layer({4: box((0, 0, 0), (1, 1, 1), (1, 1, 1))}, (1, 1, 1), (0, 0, 0))) == 1  # meets 1


# ---------------------------------------------------------------------------------------------------------------
# first_overlap: two values that share a pixel on a frame, and how many pixels they share
# ---------------------------------------------------------------------------------------------------------------


def plane(*rows: str) -> np.ndarray:
    """A frame's layer written as rows of digits (label values)."""
    return np.array([[int(c) for c in row] for row in rows], dtype=np.uint8)


FIRST_OVERLAP_CASES = {
    "one layer": ([plane("1100", "0220")], None),
    "no pixel in two": ([plane("1100", "0000"), plane("0011", "0033")], None),
    "two share two pixels": ([plane("1110", "0000"), plane("0033", "0000")], (1, 3, 1)),
    "the first pair in layer order": ([plane("1100", "2200"), plane("0000", "0550"), plane("7000", "0000")], (2, 5, 1)),
    "shared count is of that pair only": ([plane("1122", "1122"), plane("3333", "0000")], (1, 3, 2)),
    "third layer meets the first": ([plane("1000", "0000"), plane("0200", "0000"), plane("4000", "0000")], (1, 4, 1)),
    "empty layers": ([plane("0000"), plane("0000")], None),
}


@pytest.mark.parametrize("case", sorted(FIRST_OVERLAP_CASES))
def test_first_overlap(case: str) -> None:
    layers, expected = FIRST_OVERLAP_CASES[case]
    assert first_overlap(layers) == expected


# ---------------------------------------------------------------------------------------------------------------
# relabel (readers.combine): values renumbered through a lookup of the result's own type
# ---------------------------------------------------------------------------------------------------------------

RELABEL_CASES = {
    # name: (dtype, values, remap, expected values, expected dtype, same array back)
    "nothing changes": (np.uint8, [0, 1, 2], {1: 1, 2: 2}, [0, 1, 2], np.uint8, True),
    "renumbered": (np.uint8, [0, 1, 2], {1: 5, 2: 6}, [0, 5, 6], np.uint8, False),
    "beyond 255: wider": (np.uint8, [0, 1, 2], {1: 300, 2: 2}, [0, 300, 2], np.uint16, False),
    "values not in the table kept": (np.uint8, [0, 1, 9], {1: 4}, [0, 4, 9], np.uint8, False),
    # The values below the largest not in the table are kept, so they might be there: the type holds 999
    "16-bit stays 16-bit": (np.uint16, [0, 1000, 7], {1000: 3, 7: 7}, [0, 3, 7], np.uint16, False),
    "16-bit down to 8-bit": (np.uint16, [0, 255, 7], {255: 3, 7: 7}, [0, 3, 7], np.uint8, False),
}


def test_relabel_in_chunks(monkeypatch) -> None:
    import sys

    monkeypatch.setattr(sys.modules["segalign.readers.combine"], "RELABEL_CHUNK", 7)
    labels = np.asfortranarray(np.arange(60, dtype=np.uint8).reshape(3, 4, 5) % 4)
    np.testing.assert_array_equal(relabel(labels, {1: 10, 2: 20, 3: 3}), np.array([0, 10, 20, 3])[labels])
    view = labels[:, 1:3, :]  # neither C nor Fortran contiguous
    np.testing.assert_array_equal(relabel(view, {1: 10, 2: 20, 3: 3}), np.array([0, 10, 20, 3])[view])


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("case", sorted(RELABEL_CASES))
def test_relabel(case: str, order: str) -> None:
    dtype, values, remap, expected, expected_dtype, same = RELABEL_CASES[case]
    labels = np.array(values * 8, dtype=dtype)[:24].reshape((2, 3, 4), order=order)
    got = relabel(labels, remap)
    assert (got is labels) == same
    assert got.dtype == expected_dtype
    lookup = dict(zip(values, expected))
    np.testing.assert_array_equal(got, np.vectorize(lookup.get)(labels))
    if not same:  # in the same memory order
        assert got.flags.f_contiguous if order == "F" else got.flags.c_contiguous


# ---------------------------------------------------------------------------------------------------------------
# export.core.layer_counts: a frame's layers counted together, a layer of few values value by value
# ---------------------------------------------------------------------------------------------------------------

LAYER_COUNT_CASES = {
    # name: the frame's layers (rows of digits), the values each layer holds
    "one layer": ([plane("1102", "0220")], [[1, 2]]),
    "a body layer, one value": ([plane("1102", "0220"), plane("5555", "5500")], [[1, 2], [5]]),
    "an empty later layer": ([plane("1100", "0000"), plane("0000", "0000")], [[1], [7]]),
    "few values": ([plane("1000", "0000"), plane("3400", "0043"), plane("0009", "0000")], [[1], [3, 4], [9]]),
    "values absent from the frame": ([plane("1000", "0000"), plane("0600", "0000")], [[1, 2], [6, 8]]),
    "many values": ([plane("1000", "0000"), plane("2345", "6789")], [[1], [2, 3, 4, 5, 6, 7, 8, 9]]),
}


@pytest.mark.parametrize("case", sorted(LAYER_COUNT_CASES))
def test_layer_counts(case: str) -> None:
    from segalign.export.core import layer_counts

    layers, values = LAYER_COUNT_CASES[case]
    expected: dict[int, int] = {}
    for layer in layers:
        for value in np.unique(layer[layer != 0]):
            expected[int(value)] = int((layer == value).sum())
    for given in (values, ()):  # with the layers' values, and without (counted from the pixels)
        counts = layer_counts(layers, given)
        assert {int(v): int(counts[v]) for v in np.flatnonzero(counts)} == expected
