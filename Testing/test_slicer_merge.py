"""Where Slicer merges the segments, the export still writes the values the segments were imported with.

A segmentation node's segments are merged into one label volume before the frames are sampled. Binary labelmap
layers on one grid are read directly; anything else (closed surfaces as the source representation, layers on
different grids) goes through Slicer's own merge, ``GenerateMergedLabelmapInReferenceGeometry``, given the label
values SegAlign means. Slicer's label-map *export* would choose the values itself (by terminology, then by name,
else past the end of its colour table: vtkSlicerSegmentationsModuleLogic.cxx:2536-2551), so a renamed segment
came out under a new value; and it left a colour table and a display node in the scene. These tests hold every
path to the imported values, check that the merge leaves the scene as it was, and that the reader's warnings
reach the export (real MRML on the slicer-core wheel).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from phantoms import small_phantom, stack_affine, write_segmentation
from segalign.synthetic import stack, write_series
from slicer_scene import file_lookup, headless_slicer, load_dicom_volume, slicer, vtk  # noqa: F401 (skips without it)
from test_slicer_logic import labels_by_file

from segalign.mrml import IMPORT_WARNINGS_ATTRIBUTE, SegAlignMRMLLogic, import_warnings  # noqa: E402

PHANTOM = small_phantom()
NAMES = "1,big\n2,left_blob\n7,tilted_rod\n"


class Case:
    """A series, its phantom segmentation imported as a node, and the export of the untouched node."""

    def __init__(self, root: Path) -> None:
        self.root = root
        specs = stack((-20.2, -19.6, -12.1), 14, (0, 0, 1.6), rows=40, columns=42)
        self.dicom = root / "dicom"
        files = write_series(self.dicom, specs)
        affine, shape = stack_affine(specs)
        self.segmentation = write_segmentation(root / "seg.nii.gz", PHANTOM, affine, shape)
        table = root / "names.csv"
        table.write_text(NAMES)
        self.app = headless_slicer()
        self.volume = load_dicom_volume(self.app, files)
        self.logic = SegAlignMRMLLogic(self.app.scene, file_for_instance=file_lookup(self.dicom))
        self.node = self.logic.import_segmentation(self.segmentation, self.volume, label_table=table)
        self.reference = self.export("reference")

    def export(self, name: str, merge: str = "auto") -> tuple[dict[str, np.ndarray], dict[int, str]]:
        """The labels of every frame and labels.json's value -> name."""
        out = self.root / name
        segmentation = self.logic.labels_from_segmentation(self.node, merge=merge)
        from segalign.export import export_segmentation

        series = self.logic.series_for_volume(self.volume)
        export_segmentation(series, segmentation, out)
        names = {entry["value"]: entry["name"] for entry in json.loads((out / "labels.json").read_text())}
        return labels_by_file(out), names

    def segment_id(self, name: str) -> str:
        return self.node.GetSegmentation().GetSegmentIdBySegmentName(name)

    def scene_nodes(self) -> list[str]:
        scene = self.app.scene
        return sorted(scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes()))


@pytest.fixture
def case(tmp_path: Path) -> Case:
    return Case(tmp_path)


def assert_same_labels(found: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert set(found) == set(expected)
    for key in expected:
        np.testing.assert_array_equal(found[key], expected[key], err_msg=key)


def test_slicers_merge_of_the_same_layers_is_voxel_identical_and_leaves_the_scene_alone(case: Case) -> None:
    labels, names = case.reference
    assert names == {1: "big", 2: "left_blob", 7: "tilted_rod"}
    assert sum(int((image == 7).any()) for image in labels.values()) >= 3
    before = case.scene_nodes()
    merged, merged_names = case.export("slicer", merge="slicer")
    assert case.scene_nodes() == before, "Slicer's merge must add no colour table, display or volume node"
    assert merged_names == names
    assert_same_labels(merged, labels)


@pytest.mark.parametrize("merge", ["auto", "slicer"])
def test_renamed_and_reordered_segments_keep_their_values(case: Case, merge: str) -> None:
    labels, _ = case.reference
    segmentation = case.node.GetSegmentation()
    segmentation.GetSegment(case.segment_id("left_blob")).SetName("Left kidney (edited name)")
    segmentation.SetSegmentIndex(case.segment_id("tilted_rod"), 0)  # last becomes first
    segmentation.GetSegment(case.segment_id("big")).SetName("tilted_rod")  # a name another value had
    found, names = case.export(f"renamed-{merge}", merge=merge)
    assert names == {1: "tilted_rod", 2: "Left kidney (edited name)", 7: "tilted_rod"}
    assert_same_labels(found, labels)


def test_closed_surface_source_keeps_the_imported_values(case: Case) -> None:
    """Closed surfaces as the source representation (as after smoothing or an STL import): Slicer merges them, and
    every label keeps its value; where the surface round trip moves a boundary the labels may differ, so each
    label is compared by its overlap with the untouched export. (Converted one by one, neighbouring surfaces may
    share a voxel: each segment is kept whole, so its pixels are taken from whichever layer holds it.)"""
    labels, _ = case.reference
    segmentation = case.node.GetSegmentation()
    assert segmentation.CreateRepresentation("Closed surface")
    segmentation.SetSourceRepresentationName("Closed surface")
    segmentation.GetSegment(case.segment_id("big")).SetName("Segment_8")  # renamed to what Slicer would invent
    before = case.scene_nodes()
    surfaces = case.logic.labels_from_segmentation(case.node)
    assert case.scene_nodes() == before
    assert {value: label.name for value, label in surfaces.label_table.items()} == {
        1: "Segment_8", 2: "left_blob", 7: "tilted_rod"}
    assert surfaces.values == [1, 2, 7]
    found = segment_masks(case, surfaces)
    for value in (1, 2, 7):
        mine = np.concatenate([found[key][value].ravel() for key in sorted(labels)])
        truth = np.concatenate([(labels[key] == value).ravel() for key in sorted(labels)])
        dice = 2 * (mine & truth).sum() / (mine.sum() + truth.sum())
        assert dice > 0.8, (value, dice)
    assert segmentation.GetSourceRepresentationName() == "Closed surface", "the user's node is left as it was"


def segment_masks(case: Case, segmentation) -> dict[str, dict[int, np.ndarray]]:
    """Each segment's pixels on each frame (every layer), keyed as the export's manifest names the frames."""
    from segalign.segmentation import SegmentationSampler

    sampler = SegmentationSampler(segmentation)
    masks = {}
    for frame in case.logic.series_for_volume(case.volume).frames:
        layers = sampler.sample(frame)
        masks[f"{Path(frame.source_file).relative_to(case.dicom)}#{frame.frame_number}"] = {
            value: layers[segmentation.layer_of(value)] == value for value in segmentation.values}
    return masks


@pytest.mark.parametrize("merge", ["auto", "slicer"])
def test_an_edited_segment_is_exported_as_edited(case: Case, merge: str) -> None:
    """Voxels of one segment erased in its labelmap (as the Erase effect does) are gone from the export, and only
    those: the same as the command line's export of the NIfTI edited the same way."""
    from vtk.util import numpy_support

    segmentation = case.node.GetSegmentation()
    segment = segmentation.GetSegment(case.segment_id("big"))
    image = segment.GetRepresentation("Binary labelmap")
    extent = image.GetExtent()
    voxels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(
        extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    cut = 6  # slices k < 6 of the labelmap lose "big"
    voxels[:cut][voxels[:cut] == segment.GetLabelValue()] = 0
    image.Modified()
    found, _ = case.export(f"edited-{merge}", merge=merge)

    nifti = nib.load(case.segmentation)
    edited = np.asarray(nifti.dataobj).copy()
    edited[:, :, :cut][edited[:, :, :cut] == 1] = 0
    path = case.root / "edited.nii.gz"
    nib.save(nib.Nifti1Image(edited, nifti.affine, nifti.header), path)
    from segalign.export import export_segmentation
    from segalign.readers import load_segmentation

    export_segmentation(case.logic.series_for_volume(case.volume), load_segmentation(path), case.root / "cli")
    expected = labels_by_file(case.root / "cli")
    assert_same_labels(found, expected)
    assert any((image == 1).any() for image in found.values())
    assert any(not np.array_equal(found[key], case.reference[0][key]) for key in found), "the edit shows"


def test_import_warnings_are_kept_on_the_node_and_reach_the_export(case: Case) -> None:
    """A NIfTI whose sform and qform disagree: the reader's warning is on the node (saved with the scene) and in
    the export's warnings and export.json."""
    nifti = nib.load(case.segmentation)
    shifted = nifti.affine.copy()
    shifted[:3, 3] += (0.0, 0.0, 3.0)
    image = nib.Nifti1Image(np.asarray(nifti.dataobj), nifti.affine)
    image.set_qform(shifted, code=1)
    image.set_sform(nifti.affine, code=2)
    path = case.root / "disagree.nii.gz"
    nib.save(image, path)
    node = case.logic.import_segmentation(path, case.volume)
    warnings = import_warnings(node)
    assert any("sform and qform disagree" in w for w in warnings), warnings
    assert json.loads(node.GetAttribute(IMPORT_WARNINGS_ATTRIBUTE)) == warnings
    result = case.logic.export(node, case.volume, case.root / "warned")
    assert [w for w in result.warnings if "sform and qform" in w] == [w for w in warnings if "sform and qform" in w]
    recorded = json.loads((case.root / "warned" / "export.json").read_text())["warnings"]
    assert any("sform and qform disagree" in w for w in recorded)
    assert import_warnings(case.node) == [], "a clean file leaves no warnings"
