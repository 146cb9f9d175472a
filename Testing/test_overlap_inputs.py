"""Segments that overlap, read exactly from every input that holds them.

The phantom (phantoms.nested_phantom) has nine structures that overlap the way real ones do: a BODY around every
organ, a tumour inside the liver inside the BODY (nested three deep), a ring crossing a tube, a one-voxel dot
inside the kidney, and two slabs that overlap on one frame only. On every geometry of the suite (axial, gantry
tilt, a missing slice, a left-handed stack, double oblique, an enhanced multi-frame file, feet-first; the Siemens
mosaic for a folder of masks) each structure is written as each input would hold it: a folder of masks, a
multi-layer ``.seg.nrrd`` (slicerio's add_segment, which stores segments as Slicer does), a BINARY DICOM SEG made by
highdicom from per-segment masks on the series' own frames, and several files at once. Then on every frame of the
series, ``SegmentationSampler(segmentation).sample(frame)[segmentation.layer_of(value)] == value`` must be that
structure's mask at the frame's pixel centres, computed here from the frame's own DICOM tags (and for the mosaic
from the scanner's protocol). The segmentation grids' voxel centres are the pixel centres (as when a model segments
the series' own volume), so every pixel must be exact.

Also: the layers are as few as the overlaps need (the overlap graph's chromatic number), ``later-wins`` still
flattens to one label map (the later segment winning), ``error`` still refuses in one line naming two segments
that overlap, several files get unique values and names, and segmentations of different frames of reference are
refused. dcmqi's real partial_overlaps.dcm is checked against the three label maps it was made from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import pydicom
import pytest

from conftest import TESTDATA, require
from phantoms import (
    NESTED_NAMES,
    NESTED_OVERLAPS,
    RAS_FROM_LPS,
    fewest_layers,
    masks_here,
    nested_phantom,
    nested_phantom_on,
    pixel_centres_from_file,
    rotated_orientation,
    stack_affine,
)
from seg_cases import highdicom_ready, need_highdicom
from segalign import SegAlignError, load_segmentation, load_segmentations, scan_folder
from segalign.segmentation import Segmentation, SegmentationSampler
from segalign.synthetic import AXIAL, Phantom, SeriesIdentity, stack, write_enhanced, write_nifti, write_series

LPS_FROM_RAS_4 = np.diag([-1.0, -1.0, 1.0, 1.0])


# ---------------------------------------------------------------------------------------------------------------
# Geometries: the suite's (test_phantoms, seg_cases, test_rtstruct), each a stack and its coincident grid
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Geometry:
    name: str
    dicom: Path
    files: list[Path]  #: the series' files, in stack order (one file for the enhanced case)
    affine: np.ndarray  #: the segmentation grid (voxel to RAS): its voxel centres are the pixel centres
    shape: tuple[int, int, int]
    phantom: Phantom
    #: (stack index of each frame written, the grid axis that follows the stack, whether it runs backwards)
    frame_planes: list[int]


def _geometry_specs(name: str):
    """(specs of the full stack, permutation, flips, index left out or None, enhanced, patient position)."""
    if name == "axial":
        return stack((-18, -18, -14), 20, (0, 0, 1.5), spacing=(0.9, 0.9), rows=40, columns=40), (0, 1, 2), \
            (False, True, False), None, False, "HFS"
    if name == "tilt":
        tilt = np.radians(17.0)
        orientation = (1.0, 0.0, 0.0, 0.0, np.cos(tilt), -np.sin(tilt))
        return stack((-18, -16, -15), 22, (0, 0, 1.4), orientation=orientation, spacing=(0.9, 0.9), rows=40,
                     columns=40), (0, 1, 2), (False, True, False), None, False, "HFS"
    if name == "missing_slice":
        return stack((-20, -20, -14), 20, (0, 0, 1.5), rows=40, columns=40), (0, 1, 2), (False, False, False), 9, \
            False, "HFS"
    if name == "left_handed":
        return stack((-20, -20, 14), 20, (0, 0, -1.5), rows=40, columns=40), (0, 1, 2), (False, False, False), \
            None, False, "HFS"
    if name == "double_oblique":
        orientation = rotated_orientation(0.35, -0.5, 0.2)
        return _centred(orientation, (0.85, 0.85), 40, 40, 24, 1.4), (1, 0, 2), (False, False, False), None, \
            False, "HFS"
    if name == "enhanced":
        orientation = rotated_orientation(0.2, 0.1)
        return _centred(orientation, (1.0, 1.0), 40, 40, 18, 1.1), (2, 1, 0), (False, False, False), None, True, \
            "HFS"
    if name == "feet_first":
        orientation = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
        specs = stack((18, -18, 14), 20, (0, 0, -1.5), orientation=orientation, spacing=(0.9, 0.9), rows=40,
                      columns=40)
        return specs, (0, 1, 2), (True, False, True), None, False, "FFS"
    raise KeyError(name)


def _centred(orientation, spacing, rows, columns, count, gap):
    normal = np.cross(orientation[:3], orientation[3:])
    step = gap * normal
    middle = spacing[1] * columns / 2 * np.asarray(orientation[:3]) + spacing[0] * rows / 2 * np.asarray(orientation[3:])
    return stack(-middle - count // 2 * step, count, step, orientation=orientation, spacing=spacing, rows=rows,
                 columns=columns)


GEOMETRIES = ["axial", "tilt", "missing_slice", "left_handed", "double_oblique", "enhanced", "feet_first"]


@lru_cache(maxsize=None)
def _geometry_in(root: Path, name: str) -> Geometry:
    specs, permutation, flips, missing, enhanced, position = _geometry_specs(name)
    affine, shape = stack_affine(specs, permutation, flips)  # made before any slice went missing
    phantom = nested_phantom_on(specs, affine)
    written = [index for index in range(len(specs)) if index != missing]
    dicom = root / name / "dicom"
    identity = SeriesIdentity(description=name)
    if enhanced:
        files = [write_enhanced(dicom / "multi.dcm", [specs[i] for i in written], identity=identity)]
    else:
        files = write_series(dicom, [specs[i] for i in written], identity=identity)
    for path in files:
        dataset = pydicom.dcmread(path)
        dataset.PatientPosition = position
        dataset.save_as(path)
    highdicom_ready(files)  # the type 2 patient and study attributes highdicom copies
    return Geometry(name, dicom, files, affine, shape, phantom, written)


@pytest.fixture(scope="module")
def geometries(tmp_path_factory) -> Callable[[str], Geometry]:
    root = tmp_path_factory.mktemp("geometries")
    return lambda name: _geometry_in(root, name)


# ---------------------------------------------------------------------------------------------------------------
# The check: every segment on every frame
# ---------------------------------------------------------------------------------------------------------------


def truth_on_frames(dicom: Path, phantom: Phantom) -> list[tuple[object, dict[int, np.ndarray]]]:
    """Every frame of the series in ``dicom``, with each structure's mask at its pixel centres, computed from the
    frame's own tags (phantoms.pixel_centres_from_file)."""
    series = scan_folder(dicom).select()
    return [(frame, phantom.masks_at(pixel_centres_from_file(frame.source_file, frame.frame_number - 1)))
            for frame in series.frames]


def assert_segments_exact(segmentation: Segmentation, frames, structure_of: dict[int, int]) -> dict[int, int]:
    """Every segment (``structure_of``: its label value -> the phantom structure it is) equals its truth on every
    frame. Returns the pixels each structure covers over all frames."""
    sampler = SegmentationSampler(segmentation)
    assert set(structure_of) == set(segmentation.values), (sorted(structure_of), segmentation.values)
    for value in segmentation.values:  # each value in its layer only, with the voxels the segmentation counted
        layers = segmentation.layers
        assert int((layers[segmentation.layer_of(value)].labels == value).sum()) == segmentation.voxel_counts[value]
        assert not any((layer.labels == value).any() for n, layer in enumerate(layers)
                       if n != segmentation.layer_of(value))
    covered = {structure: 0 for structure in structure_of.values()}
    for frame, truth in frames:
        layers = sampler.sample(frame)
        assert len(layers) == len(segmentation.layers)
        for value, structure in structure_of.items():
            got = layers[segmentation.layer_of(value)] == value
            assert got.shape == truth[structure].shape
            if not np.array_equal(got, truth[structure]):
                raise AssertionError(
                    f"segment {value} ({NESTED_NAMES[structure]}) on frame {frame.source_file.name}#"
                    f"{frame.frame_number}: {int((got & ~truth[structure]).sum())} pixels too many, "
                    f"{int((truth[structure] & ~got).sum())} missing"
                )
            covered[structure] += int(truth[structure].sum())
    return covered


def assert_phantom_as_designed(frames, values=tuple(NESTED_NAMES)) -> None:
    """The truth itself: every structure is on some frame, the dot on one pixel of one frame, the slabs share one
    frame only, and the structures that overlap on the frames are those NESTED_OVERLAPS lists."""
    seen = {value: 0 for value in values}
    pairs: set[tuple[int, int]] = set()
    slab_frames = 0
    for _, truth in frames:
        for value in values:
            seen[value] += int(truth[value].sum())
        for a in values:
            for b in values:
                if a < b and (truth[a] & truth[b]).any():
                    pairs.add((a, b))
        slab_frames += int((truth[8] & truth[9]).any())
    assert all(seen.values()), seen
    assert seen[7] == 1, "the dot must be one voxel, on one frame"
    assert slab_frames == 1, "the slabs must overlap on one frame only"
    assert pairs == {pair for pair in NESTED_OVERLAPS if set(pair) <= set(values)}, pairs


def one_line(error: SegAlignError) -> str:
    for text in (str(error), error.cli_message):
        assert "\n" not in text and text.strip(), repr(text)
    return str(error)


def structures_named(message: str) -> set[int]:
    """The phantom structures a message names, quoted ('body') or as mask files (body.nii.gz)."""
    named = set(re.findall(r"'([^']+)'", message)) | set(re.findall(r"(\w+)\.nii\.gz", message))
    return {value for value, name in NESTED_NAMES.items() if name in named}


def painted(truth: dict[int, np.ndarray], order: list[int], value_of: dict[int, int]) -> np.ndarray:
    """One label image, the structures painted in ``order`` (later wins), each with its label value."""
    labels = np.zeros(next(iter(truth.values())).shape, dtype=np.uint16)
    for structure in order:
        labels[truth[structure]] = value_of[structure]
    return labels


def assert_flattened(segmentation: Segmentation, frames, order: list[int], value_of: dict[int, int]) -> None:
    assert len(segmentation.layers) == 1 and not segmentation.overlapping
    sampler = SegmentationSampler(segmentation)
    for frame, truth in frames:
        (labels,) = sampler.sample(frame)
        np.testing.assert_array_equal(labels, painted(truth, order, value_of),
                                      err_msg=f"{frame.source_file.name}#{frame.frame_number}")


# ---------------------------------------------------------------------------------------------------------------
# The inputs, written from the phantom on a geometry's grid
# ---------------------------------------------------------------------------------------------------------------


def write_mask_folder(folder: Path, masks: dict[int, np.ndarray], affine: np.ndarray) -> Path:
    """One binary NIfTI per structure, named after it (TotalSegmentator's layout)."""
    folder.mkdir(parents=True, exist_ok=True)
    for value, mask in masks.items():
        write_nifti(folder / f"{NESTED_NAMES[value]}.nii.gz", mask.astype(np.uint8), affine)
    return folder


def write_layered_seg_nrrd(path: Path, masks: dict[int, np.ndarray], affine: np.ndarray) -> tuple[Path, dict]:
    """A ``.seg.nrrd`` made with slicerio.add_segment (segments in the first layer where they overlap nothing, label
    values counting from 1 in each layer, as Slicer stores them); returns the path and slicerio's segments."""
    slicerio = pytest.importorskip("slicerio")
    segmentation = slicerio.create_segmentation(next(iter(masks.values())).shape, LPS_FROM_RAS_4 @ affine)
    for value, mask in masks.items():
        colour = [((value * 37) % 255) / 255, ((value * 91) % 255) / 255, ((value * 53) % 255) / 255]
        slicerio.add_segment(segmentation, mask, {"id": f"Segment_{value}", "name": NESTED_NAMES[value],
                                                  "color": colour})
    slicerio.write_segmentation(str(path), segmentation)
    return path, segmentation


def write_binary_seg(path: Path, geometry: Geometry, frames, values: list[int], omit_empty_frames: bool = True) -> Path:
    """A BINARY SEG made by highdicom's Segmentation from each structure's mask on the series' own frames (a
    ``(frames, rows, columns, segments)`` array: segments may overlap), segment i being the i-th of ``values``;
    highdicom leaves out the frames of empty source images unless ``omit_empty_frames`` is false."""
    hd = need_highdicom()
    sources = [pydicom.dcmread(p) for p in geometry.files]
    by_key = {(frame.source_file.name, frame.frame_number): truth for frame, truth in frames}
    if len(sources) == 1 and int(sources[0].get("NumberOfFrames", 1)) > 1:
        keys = [(geometry.files[0].name, n) for n in range(1, int(sources[0].NumberOfFrames) + 1)]
    else:
        keys = [(p.name, 1) for p in geometry.files]
    pixels = np.stack([np.stack([by_key[key][value] for value in values], axis=-1) for key in keys])
    algorithm = hd.AlgorithmIdentificationSequence(
        name="overlap test", version="1", family=hd.sr.CodedConcept("123109", "DCM", "Manual Processing"))
    tissue = hd.sr.CodedConcept("85756007", "SCT", "Tissue")
    descriptions = [
        hd.seg.SegmentDescription(segment_number=number, segment_label=NESTED_NAMES[value],
                                  segmented_property_category=tissue, segmented_property_type=tissue,
                                  algorithm_type="AUTOMATIC", algorithm_identification=algorithm)
        for number, value in enumerate(values, start=1)
    ]
    seg = hd.seg.Segmentation(
        sources, pixels, hd.seg.SegmentationTypeValues.BINARY, descriptions, hd.UID(), 2, hd.UID(), 1, "test",
        "test", "1", "0", omit_empty_frames=omit_empty_frames,
    )
    seg.save_as(path)
    return path


def grid_masks(geometry: Geometry) -> dict[int, np.ndarray]:
    masks = masks_here(geometry.phantom, geometry.shape, geometry.affine)
    assert masks[7].sum() == 1, "the dot is one voxel"
    return masks


def by_name(segmentation: Segmentation) -> dict[int, int]:
    """label value -> phantom structure, through the segments' names (every segment of the label table, even one
    a flattening left without voxels)."""
    values = {name: value for value, name in NESTED_NAMES.items()}
    return {value: values[label.name] for value, label in segmentation.label_table.items()}


# ---------------------------------------------------------------------------------------------------------------
# Each input, each geometry: exact, as few layers as needed, later-wins, error
# ---------------------------------------------------------------------------------------------------------------

KINDS = ["mask_folder", "seg_nrrd", "binary_seg"]


def _input(kind: str, geometry: Geometry, frames, root: Path) -> Path:
    if kind == "mask_folder":
        return write_mask_folder(root / "masks", grid_masks(geometry), geometry.affine)
    if kind == "seg_nrrd":
        return write_layered_seg_nrrd(root / "layers.seg.nrrd", grid_masks(geometry), geometry.affine)[0]
    # Where the series is no regular volume for highdicom (tilted, a slice missing) it gives no SpacingBetweenSlices,
    # and a SEG that then leaves out empty source images cannot be placed (test_seg_leaving_out_frames_of_a_tilted_
    # series_is_refused): keep every frame there.
    omit = geometry.name not in ("tilt", "missing_slice")
    return write_binary_seg(root / "seg.dcm", geometry, frames, list(NESTED_NAMES), omit_empty_frames=omit)


#: Which segment gets a pixel two share when flattened: the later file by name, the later segment of the file, the
#: higher segment number.
LATER_WINS_ORDER = {
    "mask_folder": sorted(NESTED_NAMES, key=lambda value: NESTED_NAMES[value]),
    "seg_nrrd": list(NESTED_NAMES),
    "binary_seg": list(NESTED_NAMES),
}


@pytest.mark.parametrize("geometry_name", GEOMETRIES)
@pytest.mark.parametrize("kind", KINDS)
def test_every_segment_exact_on_every_frame(geometries, tmp_path: Path, kind: str, geometry_name: str) -> None:
    geometry = geometries(geometry_name)
    frames = truth_on_frames(geometry.dicom, geometry.phantom)
    assert_phantom_as_designed(frames)
    path = _input(kind, geometry, frames, tmp_path)

    segmentation = load_segmentation(path)
    structure_of = by_name(segmentation)
    assert sorted(structure_of.values()) == sorted(NESTED_NAMES)
    if kind == "binary_seg" and geometry_name == "tilt":  # read plane by plane (dicom_seg.stacked_frames): the
        axes = segmentation.affine[:3, :3]  # volume's step is off the normal, so its affine is sheared
        assert abs(np.dot(axes[:, 0], axes[:, 1]) / np.linalg.norm(axes[:, 0]) / np.linalg.norm(axes[:, 1])) > 0.1
    covered = assert_segments_exact(segmentation, frames, structure_of)
    assert covered[7] == 1 and all(covered.values())
    # As few layers as the overlaps need (never one per segment): the overlap graph's chromatic number.
    assert segmentation.overlapping
    assert len(segmentation.layers) == fewest_layers(NESTED_OVERLAPS, NESTED_NAMES) == 3
    assert all(layer.labels.dtype == np.uint8 for layer in segmentation.layers)
    assert sum(layer.labels.size for layer in segmentation.layers[1:]) < 2 * segmentation.labels.size, \
        "layers after the first are cropped to their segments"

    flat = load_segmentation(path, overlap="later-wins")
    value_of = {structure: value for value, structure in by_name(flat).items()}
    assert sorted(value_of) == sorted(NESTED_NAMES)
    assert_flattened(flat, frames, LATER_WINS_ORDER[kind], value_of)

    with pytest.raises(SegAlignError) as refused:
        load_segmentation(path, overlap="error")
    message = one_line(refused.value)
    named = structures_named(message)
    assert len(named) == 2 and tuple(sorted(named)) in NESTED_OVERLAPS, message
    assert "later-wins" in message and "--overlap later-wins" in refused.value.cli_message


def test_mask_folder_on_a_mosaic(testdata: Path, tmp_path: Path) -> None:
    """A Siemens mosaic (one frame, 35 tiles on their own planes): masks made on dcm2niix's de-mosaicked grid give,
    on each tile of the label mosaic, each structure at that tile's pixel centres, placed here from the scanner's
    protocol (the slice centres of MrPhoenixProtocol) and the header's orientation and spacing."""
    from test_mosaic import protocol_slice_centres

    mosaic = require(testdata / "dcm_qa_ts_mosaic")
    dicom = mosaic / "dicom_explicit"
    reference = nib.load(require(mosaic / "ref_dcm2niix" / "1.nii"))
    affine, shape = reference.affine, reference.shape[:3]
    (frame,) = scan_folder(dicom).select().frames
    path = next(dicom.glob("*.dcm"))
    header = pydicom.dcmread(path, stop_before_pixels=True)
    orientation = [float(v) for v in header.ImageOrientationPatient]
    row_spacing, column_spacing = (float(v) for v in header.PixelSpacing)
    u, v = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    centres = protocol_slice_centres(path)  # centre of pixel (rows / 2, columns / 2) of each slice
    tile = 64
    r, c = np.mgrid[0:tile, 0:tile]
    tile_points = [centre + ((c - tile / 2) * column_spacing)[..., None] * u + ((r - tile / 2) * row_spacing)[..., None] * v
                   for centre in centres]
    depths = (centres - centres.mean(axis=0)) @ np.cross(u, v)
    phantom = nested_phantom(centres.mean(axis=0), orientation, 100.0, depths, affine)
    masks = masks_here(phantom, shape, affine)
    assert masks[7].sum() == 1
    folder = write_mask_folder(tmp_path / "masks", masks, affine)

    segmentation = load_segmentation(folder)
    structure_of = by_name(segmentation)
    sampler = SegmentationSampler(segmentation)
    layers = sampler.sample(frame)
    assert all(layer.shape == (384, 384) for layer in layers)
    assert len(segmentation.layers) == 3
    covered = {value: 0 for value in NESTED_NAMES}
    slab_tiles = 0
    for index, (tile_plane, points) in enumerate(zip(frame.tiles, tile_points)):
        region = tile_plane.region()
        truth = phantom.masks_at(points)
        for value, structure in structure_of.items():
            got = layers[segmentation.layer_of(value)][region] == value
            np.testing.assert_array_equal(got, truth[structure], err_msg=f"{NESTED_NAMES[structure]} tile {index + 1}")
            covered[structure] += int(truth[structure].sum())
        slab_tiles += int((truth[8] & truth[9]).any())
    assert covered[7] == 1 and all(covered.values()) and slab_tiles == 1, covered
    outside = np.ones((384, 384), dtype=bool)
    for tile_plane in frame.tiles:
        outside[tile_plane.region()] = False
    assert not any(layer[outside].any() for layer in layers), "pixels outside every tile are 0"


def test_dcmqi_partial_overlaps_against_its_label_maps(testdata: Path) -> None:
    """dcmqi's partial_overlaps.dcm (a BINARY SEG of ct-3slice, feet-first, five segments that overlap) against the
    three label maps it was made from (partial_overlaps-1/2/3.nrrd), sampled with SimpleITK at every pixel centre
    computed from each frame's tags: every segment exact on every frame, in as few layers as its overlaps need."""
    sitk = pytest.importorskip("SimpleITK")
    pytest.importorskip("highdicom")
    import seg_readers

    base = require(testdata / "dcmqi_segmentations")
    seg = require(base / "partial_overlaps.dcm")
    volumes = [sitk.ReadImage(str(require(base / f"partial_overlaps-{n}.nrrd"))) for n in (1, 2, 3)]
    segmentation = load_segmentation(seg)
    assert segmentation.values == [1, 2, 3, 4, 5] and segmentation.overlapping
    sampler = SegmentationSampler(segmentation)
    pairs: set[tuple[int, int]] = set()
    labelled = 0
    for frame in scan_folder(require(base / "ct-3slice")).select().frames:
        centres = pixel_centres_from_file(frame.source_file, frame.frame_number - 1)
        sampled = [seg_readers.sample_nearest(volume, centres)[0] for volume in volumes]
        layers = sampler.sample(frame)
        truth = {n: np.any([values == n for values in sampled], axis=0) for n in range(1, 6)}
        for number in range(1, 6):
            got = layers[segmentation.layer_of(number)] == number
            np.testing.assert_array_equal(got, truth[number], err_msg=f"segment {number}, {frame.source_file.name}")
            labelled += int(truth[number].any())
        pairs |= {(a, b) for a in truth for b in truth if a < b and (truth[a] & truth[b]).any()}
    assert labelled == 7 and pairs
    assert len(segmentation.layers) == fewest_layers(pairs, range(1, 6)) < 5

    flat = load_segmentation(seg, overlap="later-wins")  # the higher segment number wins
    assert len(flat.layers) == 1
    with pytest.raises(SegAlignError) as refused:
        load_segmentation(seg, overlap="error")
    message = one_line(refused.value)
    numbers = {int(n) for n in re.findall(r"segments? (\d+)", message) + re.findall(r"and (\d+)", message)}
    assert len(numbers) == 2 and tuple(sorted(numbers)) in pairs, message


# ---------------------------------------------------------------------------------------------------------------
# Several files at once
# ---------------------------------------------------------------------------------------------------------------

#: The files a user combines, each with the structures it holds (label value in the file -> structure) and the
#: label table embedded in it (None: no table, so its label is unnamed): a total-like label map, a BODY mask, a
#: lesion model's label map (values that total's take), and a second liver model (a name total's takes).
COMBINED_FILES = {
    "total": ({1: 2, 2: 3, 3: 5, 4: 8}, True),
    "body": ({1: 1}, False),
    "lesions": ({1: 4, 2: 6, 3: 7, 4: 9}, True),
    "liver_model": ({1: 2}, True),
}
#: The values and names the combined segmentation must have: the first file keeps its own, a later file's value
#: taken is given the next free one, a name taken is prefixed with the file's name, and the one label of a mask no
#: table names is named after its file.
COMBINED_EXPECTED = {
    1: ("liver", 2), 2: ("kidney", 3), 3: ("tube", 5), 4: ("slab_lower", 8), 5: ("body", 1), 6: ("tumour", 4),
    7: ("ring", 6), 8: ("dot", 7), 9: ("slab_upper", 9), 10: ("liver_model: liver", 2),
}


def write_combined_files(root: Path, geometry: Geometry) -> list[Path]:
    masks = grid_masks(geometry)
    paths = []
    for name, (structures, named) in COMBINED_FILES.items():
        labels = np.zeros(geometry.shape, dtype=np.uint8)
        for value, structure in structures.items():
            assert not labels[masks[structure]].any(), "one file's structures do not overlap"
            labels[masks[structure]] = value
        table = Phantom([_named(value, NESTED_NAMES[structure]) for value, structure in structures.items()])
        paths.append(write_nifti(root / f"{name}.nii.gz", labels, geometry.affine,
                                 label_table_xml=table.label_table_xml() if named else None))
    return paths


def _named(value: int, name: str):
    from segalign.synthetic import Ellipsoid

    return Ellipsoid(value, name, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


@pytest.mark.parametrize("geometry_name", GEOMETRIES)
def test_several_files_at_once(geometries, tmp_path: Path, geometry_name: str) -> None:
    geometry = geometries(geometry_name)
    frames = truth_on_frames(geometry.dicom, geometry.phantom)
    paths = write_combined_files(tmp_path, geometry)

    segmentation = load_segmentations(paths)
    names = {value: label.name for value, label in segmentation.label_table.items()}
    assert {value: names[value] for value in segmentation.values} == \
        {value: name for value, (name, _) in COMBINED_EXPECTED.items()}
    assert len(set(names.values())) == len(names), "names are unique"
    assert segmentation.source == paths[0] and segmentation.also_from == paths[1:]
    assert any("lesions: 4 label values were taken" in warning for warning in segmentation.warnings), \
        segmentation.warnings
    covered = assert_segments_exact(segmentation, frames,
                                    {value: structure for value, (_, structure) in COMBINED_EXPECTED.items()})
    assert covered[7] == 1
    overlaps = {(a, b) for a in COMBINED_EXPECTED for b in COMBINED_EXPECTED if a < b and
                (tuple(sorted((COMBINED_EXPECTED[a][1], COMBINED_EXPECTED[b][1]))) in NESTED_OVERLAPS
                 or COMBINED_EXPECTED[a][1] == COMBINED_EXPECTED[b][1])}
    assert len(segmentation.layers) == fewest_layers(overlaps, COMBINED_EXPECTED) == 4

    flat = load_segmentations(paths, overlap="later-wins")  # a later file's voxel wins
    order = [COMBINED_EXPECTED[value][1] for value in sorted(COMBINED_EXPECTED)]
    value_of = {structure: value for value, (_, structure) in COMBINED_EXPECTED.items()}  # liver: 10, the later
    assert_flattened(flat, frames, order, value_of)

    with pytest.raises(SegAlignError) as refused:
        load_segmentations(paths, overlap="error")
    message = one_line(refused.value)
    quoted = re.match(r"segments '([^']+)'.* and '([^']+)'", message).groups()
    assert "--overlap later-wins" in refused.value.cli_message, message
    pair = tuple(sorted({value for value, (name, _) in COMBINED_EXPECTED.items() if name in quoted}))
    assert pair in overlaps, message


def test_several_files_share_layers_where_they_do_not_meet(geometries, tmp_path: Path) -> None:
    """total + BODY + two lesion masks that overlap only the BODY: the two lesions (cropped each to itself when read)
    go in one layer, so three layers, not four."""
    geometry = geometries("axial")
    frames = truth_on_frames(geometry.dicom, geometry.phantom)
    masks = grid_masks(geometry)
    total = np.zeros(geometry.shape, dtype=np.uint8)
    total[masks[2]], total[masks[3]] = 1, 2
    paths = [write_nifti(tmp_path / "total.nii.gz", total, geometry.affine)]
    for name, structure in (("body", 1), ("ring", 6), ("slab", 9)):
        paths.append(write_nifti(tmp_path / f"{name}.nii.gz", masks[structure].astype(np.uint8), geometry.affine))
    segmentation = load_segmentations(paths)
    expected = {1: 2, 2: 3, 3: 1, 4: 6, 5: 9}
    assert segmentation.values == sorted(expected)
    assert [segmentation.label_table[value].name for value in sorted(expected)] == \
        ["Segment_1", "Segment_2", "body", "ring", "slab"], "masks are named after their files, label maps are not"
    assert_segments_exact(segmentation, frames, expected)
    assert len(segmentation.layers) == 2, [layer.labels.shape for layer in segmentation.layers]


def test_combining_refuses_segmentations_of_different_frames_of_reference(geometries, tmp_path: Path) -> None:
    first, second = geometries("axial"), geometries("feet_first")
    segs = []
    for geometry in (first, second):
        frames = truth_on_frames(geometry.dicom, geometry.phantom)
        segs.append(write_binary_seg(tmp_path / f"{geometry.name}.dcm", geometry, frames, [2, 3]))
    assert pydicom.dcmread(segs[0]).FrameOfReferenceUID != pydicom.dcmread(segs[1]).FrameOfReferenceUID
    with pytest.raises(SegAlignError) as refused:
        load_segmentations(segs)
    message = one_line(refused.value)
    assert "axial.dcm and feet_first.dcm lie in different frames of reference" in message, message


def test_seg_leaving_out_frames_of_a_tilted_series_is_refused(geometries, tmp_path: Path) -> None:
    """highdicom's SEG of a tilted series leaves out the empty source images and gives no SpacingBetweenSlices:
    where its empty planes lie between its frames cannot be known, so it is refused in one line, overlaps or not."""
    geometry = geometries("tilt")
    frames = truth_on_frames(geometry.dicom, geometry.phantom)
    seg = write_binary_seg(tmp_path / "seg.dcm", geometry, frames, list(NESTED_NAMES))
    for overlap in ("keep", "later-wins", "error"):
        with pytest.raises(SegAlignError) as refused:
            load_segmentation(seg, overlap=overlap)
        assert "gives no SpacingBetweenSlices" in one_line(refused.value)


def test_fractional_seg_with_overlapping_segments(geometries, tmp_path: Path) -> None:
    """A FRACTIONAL SEG (highdicom, the masks as 0.0/1.0) is thresholded at 0.5 per segment: overlaps kept."""
    hd = need_highdicom()
    geometry = geometries("axial")
    frames = truth_on_frames(geometry.dicom, geometry.phantom)
    sources = [pydicom.dcmread(p) for p in geometry.files]
    by_file = {frame.source_file.name: truth for frame, truth in frames}
    values = list(NESTED_NAMES)
    pixels = np.stack([np.stack([by_file[p.name][v] for v in values], axis=-1) for p in geometry.files])
    algorithm = hd.AlgorithmIdentificationSequence(
        name="overlap test", version="1", family=hd.sr.CodedConcept("123109", "DCM", "Manual Processing"))
    tissue = hd.sr.CodedConcept("85756007", "SCT", "Tissue")
    descriptions = [hd.seg.SegmentDescription(n, NESTED_NAMES[v], tissue, tissue, "AUTOMATIC", algorithm)
                    for n, v in enumerate(values, start=1)]
    seg = hd.seg.Segmentation(sources, pixels.astype(np.float32), hd.seg.SegmentationTypeValues.FRACTIONAL,
                              descriptions, hd.UID(), 2, hd.UID(), 1, "test", "test", "1", "0",
                              max_fractional_value=255)
    path = tmp_path / "fractional.dcm"
    seg.save_as(path)
    segmentation = load_segmentation(path)
    assert_segments_exact(segmentation, frames, by_name(segmentation))
    assert len(segmentation.layers) == 3
    with pytest.raises(SegAlignError) as refused:
        load_segmentation(path, overlap="error")
    named = structures_named(one_line(refused.value))
    assert len(named) == 2 and tuple(sorted(named)) in NESTED_OVERLAPS, str(refused.value)


def test_command_line_refusals_are_one_line(geometries, tmp_path: Path) -> None:
    """Through `segalign export DICOM SEG1 SEG2 ...`: overlaps refused with --overlap error (two segments named,
    nothing written), segmentations of two frames of reference refused, and --overlap later-wins exported."""
    from conftest import run_cli

    geometry = geometries("axial")
    frames = truth_on_frames(geometry.dicom, geometry.phantom)
    paths = write_combined_files(tmp_path / "files", geometry)
    run = run_cli("export", geometry.dicom, *paths, "-o", tmp_path / "refused", "--overlap", "error")
    assert run.code == 1 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "--overlap later-wins" in run.stderr and "of total.nii.gz" in run.stderr
    assert not (tmp_path / "refused").exists()
    seg = write_binary_seg(tmp_path / "seg.dcm", geometry, frames, list(NESTED_NAMES))
    run = run_cli("export", geometry.dicom, seg, "-o", tmp_path / "refused", "--overlap", "error")
    assert run.code == 1 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert len(structures_named(run.stderr)) == 2
    other = geometries("feet_first")
    other_seg = write_binary_seg(tmp_path / "other.dcm", other, truth_on_frames(other.dicom, other.phantom), [2])
    run = run_cli("export", geometry.dicom, seg, other_seg, "-o", tmp_path / "refused")
    assert run.code == 1 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "different frames of reference" in run.stderr and not (tmp_path / "refused").exists()
    run = run_cli("export", geometry.dicom, *paths, "-o", tmp_path / "flat", "--overlap", "later-wins", "-q")
    assert run.code == 0, run.stderr
