"""Segments that overlap, through the Slicer bridge (real MRML on the slicer-core wheel).

Slicer keeps segments that overlap in labelmap layers of their own; SegAlign keeps them in label layers
(``Segmentation.layers``). An import makes each of SegAlign's layers one shared labelmap layer of the node, every
segment whole; an export (``labels_from_segmentation``) reads each labelmap layer into the first of SegAlign's
layers it does not meet, directly or through Slicer's merge (closed surfaces, layers on different grids), and
never flattens them. The truth is analytic: the series' pixel centres are voxel centres of the segmentation's
grid, so each segment's mask on each frame is the phantom's shape at the pixel centres.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import read_manifest, read_png, require, run_cli
from phantoms import pixel_centres_from_file, rasterize_here, small_phantom, stack_affine, write_segmentation
from segalign.errors import SegAlignError
from segalign.segmentation import Segmentation, SegmentationSampler
from segalign.synthetic import Ellipsoid, Phantom, stack, write_nifti, write_series
from slicer_scene import file_lookup, headless_slicer, load_dicom_volume, slicer, vtk  # noqa: F401 (skips without it)

from segalign.mrml import LABEL_VALUE_TAG, SegAlignMRMLLogic, labelmap_layer_count  # noqa: E402
from segalign.mrml.matrices import array_to_matrix, matrix_to_array, oriented_image_array, shifted  # noqa: E402

PHANTOM = small_phantom()
#: A BODY around most of the phantom's organs: it overlaps every one of them.
BODY = Ellipsoid(9, "body", (-0.7, 0.4, -1.3), (17.3, 15.1, 12.7))
ORGANS = {1: "big", 2: "left_blob", 7: "tilted_rod"}
NAMES = {**ORGANS, 9: "body"}
NAMES_TO_VALUES = {name: value for value, name in NAMES.items()}

Masks = dict[str, dict[str, np.ndarray]]  # frame key -> segment name -> pixels


class Case:
    """A series whose pixel centres are the voxel centres of the segmentations' grid, the phantom's organs as a
    label map and the BODY, as a folder of masks, and the organs imported as a node (one layer)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        specs = stack((-20.2, -19.6, -12.1), 14, (0, 0, 1.6), rows=40, columns=42)
        self.dicom = root / "dicom"
        files = write_series(self.dicom, specs)
        self.affine, self.shape = stack_affine(specs, flips=(True, False, False))
        self.organs = write_segmentation(root / "organs.nii.gz", PHANTOM, self.affine, self.shape)
        organ_labels = np.asarray(nib.load(self.organs).dataobj)
        self.body = rasterize_here(Phantom([BODY]), self.shape, self.affine) != 0
        self.masks = root / "masks"
        for value, name in ORGANS.items():
            write_nifti(self.masks / f"{name}.nii.gz", (organ_labels == value).astype(np.uint8), self.affine)
        write_nifti(self.masks / "body.nii.gz", self.body.astype(np.uint8), self.affine)
        self.table = root / "names.csv"
        self.table.write_text("".join(f"{value},{name}\n" for value, name in NAMES.items()))
        self.app = headless_slicer()
        self.volume = load_dicom_volume(self.app, files)
        self.logic = SegAlignMRMLLogic(self.app.scene, file_for_instance=file_lookup(self.dicom))
        self.series = self.logic.series_for_volume(self.volume)
        self.truth: Masks = {}
        for frame in self.series.frames:
            centres = pixel_centres_from_file(frame.source_file)
            labels = PHANTOM.labels_at(centres)
            self.truth[key(frame)] = {**{name: labels == value for value, name in ORGANS.items()},
                                      "body": BODY.contains(centres)}

    def organs_node(self):
        return self.logic.import_segmentation(self.organs, self.volume, label_table=self.table)

    def scene_nodes(self) -> list[str]:
        scene = self.app.scene
        return sorted(scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes()))


@pytest.fixture
def case(tmp_path: Path) -> Case:
    return Case(tmp_path)


def key(frame) -> str:
    return f"{Path(frame.source_file).resolve()}#{frame.frame_number}"


def sampled(segmentation: Segmentation, series) -> Masks:
    """Each segment's pixels on each frame, sampled by the engine the export uses (every layer)."""
    sampler = SegmentationSampler(segmentation)
    found: Masks = {}
    for frame in series.frames:
        layers = sampler.sample(frame)
        found[key(frame)] = {segmentation.label_table[value].name: layers[segmentation.layer_of(value)] == value
                             for value in segmentation.values}
    return found


def assert_same_masks(found: Masks, expected: Masks) -> None:
    assert set(found) == set(expected)
    for frame_key, masks in expected.items():
        names = {name for name, mask in masks.items() if mask.any()}
        assert {name for name, mask in found[frame_key].items() if mask.any()} == names, frame_key
        for name in names:
            np.testing.assert_array_equal(found[frame_key][name], masks[name], err_msg=f"{name} on {frame_key}")


def add_segment(node, name: str, mask: np.ndarray, own_origin: bool = False) -> None:
    """A segment on a labelmap layer of its own, on the grid of the node's first layer (as a tool that keeps
    overlaps adds it): ``mask[i, j, k]`` over that layer's extent. ``own_origin``: cropped to the mask, its index 0
    at the mask's first voxel (the same voxel centres, but another image-to-world matrix: another grid to Slicer)."""
    from slicer import vtkOrientedImageData, vtkSegment
    from vtk.util import numpy_support

    segmentation = node.GetSegmentation()
    first = segmentation.GetNthSegment(0).GetRepresentation("Binary labelmap")
    matrix = vtk.vtkMatrix4x4()
    first.GetImageToWorldMatrix(matrix)
    extent = first.GetExtent()
    if own_origin:
        low = np.argwhere(mask).min(axis=0)
        mask = mask[tuple(slice(a, b + 1) for a, b in zip(low, np.argwhere(mask).max(axis=0)))]
        matrix = array_to_matrix(shifted(matrix_to_array(matrix), np.array(extent[0::2]) + low))
        extent = (0, mask.shape[0] - 1, 0, mask.shape[1] - 1, 0, mask.shape[2] - 1)
    image = vtkOrientedImageData()
    image.SetExtent(extent)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = mask.transpose(2, 1, 0).ravel()
    image.SetImageToWorldMatrix(matrix)
    segment = vtkSegment()
    segment.SetName(name)
    segment.SetColor(0.9, 0.8, 0.6)
    segment.AddRepresentation("Binary labelmap", image)
    segmentation.AddSegment(segment, name)


def body_node(case: Case):
    """The organs imported (one layer) and the BODY added on a layer of its own: two layers that overlap."""
    node = case.organs_node()
    add_segment(node, "body", case.body)
    assert node.GetSegmentation().GetNumberOfLayers() == 2
    return node


def voxel_indices(points: np.ndarray, affine: np.ndarray) -> set[tuple[int, int, int]]:
    """RAS points as whole voxel indices of the grid ``affine`` (each must be a voxel centre of it)."""
    index = (points - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T
    assert np.allclose(index, np.round(index), atol=1e-4), "not on the file's grid"
    return {tuple(int(v) for v in row) for row in np.round(index).astype(int)}


def assert_segments_equal_the_file(node, segmentation: Segmentation) -> None:
    """Each segment of the node, read from its own labelmap layer, covers exactly the voxels of the segment of
    the same name in the file (in patient space, through the node's parent transform)."""
    segments = node.GetSegmentation()
    transform = node.GetParentTransformNode()
    to_world = np.eye(4)
    if transform is not None:
        matrix = vtk.vtkMatrix4x4()
        transform.GetMatrixTransformToWorld(matrix)
        to_world = matrix_to_array(matrix)
    assert segments.GetNumberOfSegments() == len(segmentation.values)
    for value in segmentation.values:
        name = segmentation.label_table[value].name
        segment = segments.GetSegment(segments.GetSegmentIdBySegmentName(name))
        assert segment is not None, name
        voxels, matrix = oriented_image_array(segment.GetRepresentation("Binary labelmap"))
        points = np.argwhere(voxels == segment.GetLabelValue()) @ (to_world @ matrix)[:3, :3].T + (to_world @ matrix)[:3, 3]
        layer = segmentation.layers[segmentation.layer_of(value)]
        expected = np.argwhere(layer.labels == value)
        assert len(points) == len(expected) > 0, name
        assert voxel_indices(points, layer.affine) == {tuple(row) for row in expected.tolist()}, name


# ------------------------------------------------------------------------------------------------------ export


@pytest.mark.parametrize("merge", ["auto", "slicer"])
def test_a_node_with_two_overlapping_layers_keeps_every_segment_whole(case: Case, merge: str) -> None:
    """The organs on one labelmap layer and the BODY on its own: two label layers, every segment's pixels on every
    frame those of the phantom (directly and through Slicer's merge alike), and the scene left as it was."""
    node = body_node(case)
    before = case.scene_nodes()
    segmentation = case.logic.labels_from_segmentation(node, merge=merge)
    assert case.scene_nodes() == before, "nothing is added to the scene"
    assert segmentation.overlapping and len(segmentation.layers) == 2
    names = {label.name: value for value, label in segmentation.label_table.items()}
    assert names == NAMES_TO_VALUES, "the BODY drawn in Slicer takes its value from the node's colour table"
    assert [segmentation.layer_of(value) for value in (1, 2, 7, 9)] == [0, 0, 0, 1]
    assert_same_masks(sampled(segmentation, case.series), case.truth)
    assert not any("Slicer merged" in warning for warning in segmentation.warnings)


def test_a_layer_on_another_grid_is_merged_by_slicer_and_kept_whole(case: Case) -> None:
    """The BODY's layer cropped with its own origin (another image-to-world matrix): Slicer merges each layer onto
    the reference geometry (whose voxel centres are the same), a warning says so, and every segment stays whole."""
    node = case.organs_node()
    add_segment(node, "body", case.body, own_origin=True)
    before = case.scene_nodes()
    segmentation = case.logic.labels_from_segmentation(node)
    assert case.scene_nodes() == before
    assert any("Slicer merged them" in warning for warning in segmentation.warnings)
    assert segmentation.overlapping and len(segmentation.layers) == 2
    assert_same_masks(sampled(segmentation, case.series), case.truth)


def test_the_two_merges_agree_layer_for_layer(case: Case) -> None:
    """Where both apply (labelmap layers on the reference grid), reading the layers directly and Slicer's merge
    give the same layers, voxel for voxel, with the same values."""
    node = body_node(case)
    direct = case.logic.labels_from_segmentation(node)
    merged = case.logic.labels_from_segmentation(node, merge="slicer")
    assert len(direct.layers) == len(merged.layers) == 2
    assert direct.label_table == merged.label_table
    for mine, slicers in zip(direct.layers, merged.layers):
        for value in np.unique(mine.labels[mine.labels != 0]):
            ras_mine = np.argwhere(mine.labels == value) @ mine.affine[:3, :3].T + mine.affine[:3, 3]
            assert voxel_indices(ras_mine, slicers.affine) == {
                tuple(row) for row in np.argwhere(slicers.labels == value).tolist()}, value


def test_flattened_and_refused_on_request(case: Case) -> None:
    """``overlap="later-wins"`` is the one label volume of before (the later segment, the BODY, wins);
    ``overlap="error"`` refuses, naming two segments that overlap."""
    node = body_node(case)
    flat = case.logic.labels_from_segmentation(node, overlap="later-wins")
    assert not flat.overlapping and flat.values == [7, 9], "the BODY covers the other two wholly"
    expected = {frame_key: {"body": masks["body"],
                            **{name: masks[name] & ~masks["body"] for name in ORGANS.values()}}
                for frame_key, masks in case.truth.items()}
    assert_same_masks(sampled(flat, case.series), expected)
    with pytest.raises(SegAlignError, match=r"segments '(big|left_blob|tilted_rod)' and 'body' of organs overlap"):
        case.logic.labels_from_segmentation(node, overlap="error")
    with pytest.raises(SegAlignError, match="overlap must be one of"):
        case.logic.labels_from_segmentation(node, overlap="first-wins")  # type: ignore[arg-type]


def test_layers_whose_segments_never_meet_share_one_label_volume(case: Case) -> None:
    """A segment on a labelmap layer of its own that meets no other segment: one label volume, the very array (type,
    box and affine) the flattening merge gives, as before overlaps were kept; so is an untouched import."""
    node = case.organs_node()
    untouched = case.logic.labels_from_segmentation(node)
    flat = case.logic.labels_from_segmentation(node, overlap="later-wins")
    assert not untouched.overlapping
    assert untouched.labels.dtype == flat.labels.dtype and np.array_equal(untouched.affine, flat.affine)
    np.testing.assert_array_equal(untouched.labels, flat.labels)
    corner = np.zeros(case.shape, dtype=bool)
    corner[:3, :3, :2] = True
    assert not (corner & (np.asarray(nib.load(case.organs).dataobj) != 0)).any()
    add_segment(node, "corner", corner)
    assert node.GetSegmentation().GetNumberOfLayers() == 2
    for merge in ("auto", "slicer"):
        kept = case.logic.labels_from_segmentation(node, merge=merge)
        flat = case.logic.labels_from_segmentation(node, merge=merge, overlap="later-wins")
        assert not kept.overlapping and kept.values == [1, 2, 7, 10], "a segment not in the colour table: the next value"
        assert kept.labels.dtype == flat.labels.dtype and np.array_equal(kept.affine, flat.affine)
        np.testing.assert_array_equal(kept.labels, flat.labels)


def test_closed_surfaces_that_overlap_keep_both_segments(case: Case) -> None:
    """Closed surfaces as the source (as after smoothing or an STL import): Slicer converts them on a copy outside
    the scene and every segment is kept whole; each is close to its labelmap-source export (Dice > 0.8)."""
    node = body_node(case)
    labelmaps = sampled(case.logic.labels_from_segmentation(node), case.series)
    segmentation = node.GetSegmentation()
    assert segmentation.CreateRepresentation("Closed surface")
    segmentation.SetSourceRepresentationName("Closed surface")
    before = case.scene_nodes()
    surfaces = case.logic.labels_from_segmentation(node)
    assert case.scene_nodes() == before
    assert segmentation.GetSourceRepresentationName() == "Closed surface", "the user's node is left as it was"
    assert surfaces.overlapping and surfaces.values == [1, 2, 7, 9]
    assert any("Slicer merged them" in warning for warning in surfaces.warnings)
    found = sampled(surfaces, case.series)
    frames = sorted(labelmaps)
    for name in NAMES.values():
        mine = np.concatenate([found[f].get(name, np.zeros((40, 42), bool)).ravel() for f in frames])
        truth = np.concatenate([labelmaps[f][name].ravel() for f in frames])
        dice = 2 * (mine & truth).sum() / (mine.sum() + truth.sum())
        assert dice > 0.8, (name, dice)
    body_and_big = sum(int((found[f]["body"] & found[f]["big"]).sum()) for f in frames)
    assert body_and_big > 100, "where the BODY holds an organ, both keep the pixels"


def test_export_writes_each_segments_own_masks(case: Case) -> None:
    """The export of the node with the BODY on its own layer: each segment's mask images on every frame are the
    phantom's, and the same as the command line's export of the same masks as a folder."""
    from segalign.options import ExportOptions

    node = body_node(case)
    result = case.logic.export(node, case.volume, case.root / "slicer", ExportOptions(masks=True))
    assert result.labels_found == [1, 2, 7, 9]
    layers = {entry["name"]: entry["layer"] for entry in json.loads((case.root / "slicer" / "labels.json").read_text())}
    assert layers == {"big": 1, "left_blob": 1, "tilted_rod": 1, "body": 2}
    assert run_cli("export", case.dicom, case.masks, "--labels", case.table, "--masks", "-o", case.root / "cli",
                   "-q").code == 0
    for folder in ("slicer", "cli"):
        found: Masks = {}
        for row in read_manifest(case.root / folder):
            name = Path(row["label_png"]).name
            frame_key = f"{(case.dicom / row['source_file']).resolve()}#{row['frame']}"
            found[frame_key] = {segment: read_png(case.root / folder / "masks" / segment / name).astype(bool)
                                for segment in NAMES.values()}
        assert_same_masks(found, case.truth)


# ------------------------------------------------------------------------------------------------------ import


def test_a_folder_of_overlapping_masks_imports_as_layers(case: Case) -> None:
    """A folder of masks that overlap: the node has a labelmap layer for each of SegAlign's layers, every segment
    whole under its file's value, and exports the folder's own segments (as the command line reads them)."""
    from segalign.readers import load_segmentation

    before = len(case.scene_nodes())
    node = case.logic.import_segmentation(case.masks, case.volume, label_table=case.table)
    folder = load_segmentation(case.masks, case.table)
    assert folder.overlapping and len(folder.layers) == 2
    assert labelmap_layer_count(node) == 2
    assert len(case.scene_nodes()) == before + 3, "the node, its display node and its colour table"
    assert_segments_equal_the_file(node, folder)
    tags = {}
    for index in range(node.GetSegmentation().GetNumberOfSegments()):
        segment = node.GetSegmentation().GetNthSegment(index)
        text = vtk.reference("")
        assert segment.GetTag(LABEL_VALUE_TAG, text)
        tags[segment.GetName()] = int(str(text))
    assert tags == {name: value for value, name in NAMES.items()}
    exported = case.logic.labels_from_segmentation(node)
    assert not any("Slicer merged" in warning for warning in exported.warnings), "a cropped layer is read directly"
    assert exported.label_table.keys() == folder.label_table.keys()
    assert_same_masks(sampled(exported, case.series), sampled(folder, case.series))
    assert_same_masks(sampled(exported, case.series), case.truth)


def test_a_seg_nrrd_saved_with_layers_is_read_by_slicer_and_keeps_them(case: Case) -> None:
    """The node with the BODY on its own layer saved as a .seg.nrrd by Slicer: imported back through Slicer's
    own storage node it keeps its two layers, and exports every segment whole."""
    from slicer import vtkMRMLSegmentationStorageNode

    path = case.root / "layered.seg.nrrd"
    storage = vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    assert storage.WriteData(body_node(case))
    node = case.logic.import_segmentation(path, case.volume)
    assert node.GetStorageNode().GetClassName() == "vtkMRMLSegmentationStorageNode"
    assert labelmap_layer_count(node) == 2
    exported = case.logic.labels_from_segmentation(node)
    assert exported.overlapping
    assert sorted(label.name for label in exported.label_table.values()) == sorted(NAMES.values())
    assert_same_masks(sampled(exported, case.series), case.truth)


def test_dcmqi_partial_overlaps_imports_each_segment_whole(tmp_path: Path, testdata: Path) -> None:
    """dcmqi's partial_overlaps.dcm (a BINARY SEG of five segments that overlap, on the three slices of ct-3slice):
    each segment of the node is the file's segment, and the node exports each segment's own pixels on every frame,
    as the file read by SegAlign gives them."""
    from segalign.readers import load_segmentation

    base = testdata / "dcmqi_segmentations"
    seg = require(base / "partial_overlaps.dcm")
    files = sorted(require(base / "ct-3slice").iterdir())
    app = headless_slicer()
    volume = load_dicom_volume(app, files)
    logic = SegAlignMRMLLogic(app.scene, file_for_instance=file_lookup(base / "ct-3slice"))
    node = logic.import_segmentation(seg, volume)
    from_file = load_segmentation(seg)
    assert len(from_file.layers) == 3
    assert labelmap_layer_count(node) == 3
    assert_segments_equal_the_file(node, from_file)
    series = logic.series_for_volume(volume)
    exported = logic.labels_from_segmentation(node)
    assert exported.values == from_file.values == [1, 2, 3, 4, 5]
    expected = sampled(from_file, series)
    assert_same_masks(sampled(exported, series), expected)
    assert sum(int(mask.any()) for masks in expected.values() for mask in masks.values()) == 7
