"""The Slicer logic on real MRML (the slicer-core wheel): import, export, and three-way agreement.

For each series, three exports must give the same per-frame labels:

1. SegAlign's Slicer logic: NIfTI imported as a segmentation node, exported per original DICOM frame;
2. SegAlign's command line on the same files;
3. Slicer's own ``ExportSegmentsToLabelmapNode`` with the DICOM volume (loaded as the DICOM plugin loads it)
   as reference, slice k matched to its file through ``DICOM.instanceUIDs``.

Pixels whose centre falls exactly halfway between two voxel centres may legitimately differ between
implementations; they are counted and reported, and must be rare.
"""

from __future__ import annotations

import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from conftest import read_manifest, read_png, require, run_cli
from phantoms import rotated_orientation, small_phantom, stack_affine, write_segmentation
from segalign.errors import SegAlignError
from segalign.synthetic import grid_affine, shuffled_names, stack, write_nifti, write_series
from slicer_scene import file_lookup, headless_slicer, load_dicom_volume, slicer, vtk

from segalign.mrml import SegAlignMRMLLogic, split_affine  # noqa: E402  (needs slicer-core)

PHANTOM = small_phantom()


def cli_export(tmp_path: Path, dicom: Path, segmentation: Path) -> dict[str, np.ndarray]:
    out = tmp_path / "cli"
    run = run_cli("export", dicom, segmentation, "-o", out, "-q")
    assert run.code == 0, run.stderr
    return labels_by_file(out, dicom)


def labels_by_file(out: Path, dicom: Path | None = None) -> dict[str, np.ndarray]:
    """Exported labels keyed by the absolute source file (and frame)."""
    result = {}
    for row in read_manifest(out):
        source = Path(row["source_file"])
        key = str((dicom / source).resolve()) if dicom is not None else str(source)
        result[f"{key}#{row['frame']}"] = read_png(out / row["label_png"])
    return result


def slicer_reference_export(app, logic: SegAlignMRMLLogic, segmentation_node, volume, lookup) -> dict[str, np.ndarray]:
    """Slicer's own resampling onto the reference volume, slice k keyed by the file of DICOM.instanceUIDs[k]."""
    from slicer import vtkSlicerSegmentationsModuleLogic

    labelmap = app.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "reference export")
    ids = vtk.vtkStringArray()
    segmentation_node.GetSegmentation().GetSegmentIDs(ids)
    assert vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
        segmentation_node, ids, labelmap, volume, 0, segmentation_node.GetLabelmapConversionColorTableNode()
    )
    array = slicer.util.arrayFromVolume(labelmap)  # [k, j, i] = [slice, row, column]
    uids = volume.GetAttribute("DICOM.instanceUIDs").split()
    assert array.shape[0] == len(uids)
    return {f"{Path(lookup(uid)).resolve()}#1": array[k] for k, uid in enumerate(uids)}


def halfway_pixels(segmentation: Path, dicom_file: Path) -> np.ndarray:
    """Pixels whose centre is (to 1e-6 voxel) halfway between two voxel centres along some axis."""
    header = pydicom.dcmread(dicom_file, stop_before_pixels=True)
    ipp = np.array(header.ImagePositionPatient, float)
    iop = np.array(header.ImageOrientationPatient, float)
    spacing = np.array(header.PixelSpacing, float)
    r, c = np.mgrid[0:header.Rows, 0:header.Columns]
    lps = ipp + c[..., None] * spacing[1] * iop[:3] + r[..., None] * spacing[0] * iop[3:]
    ras = lps * np.array([-1, -1, 1])
    index = (ras - nib.load(segmentation).affine[:3, 3]) @ np.linalg.inv(nib.load(segmentation).affine[:3, :3]).T
    fraction = index - np.floor(index)
    return np.any(np.abs(fraction - 0.5) < 1e-6, axis=-1)


def assert_three_way(tmp_path: Path, dicom: Path, segmentation: Path, files: list[Path] | None = None) -> dict:
    app = headless_slicer()
    lookup = file_lookup(dicom)
    files = files or sorted(p for p in dicom.rglob("*") if p.is_file())
    volume = load_dicom_volume(app, files)
    logic = SegAlignMRMLLogic(app.scene, file_for_instance=lookup)
    node = logic.import_segmentation(segmentation, volume)
    out = tmp_path / "slicer_logic"
    result = logic.export(node, volume, out)
    ours = labels_by_file(out, dicom)
    cli = cli_export(tmp_path, dicom, segmentation)
    reference = slicer_reference_export(app, logic, node, volume, lookup)
    assert set(ours) == set(cli) == set(reference)
    assert len(ours) == len(files)
    ties = labelled = 0
    for key in ours:
        np.testing.assert_array_equal(ours[key], cli[key], err_msg=key)
        differ = ours[key] != reference[key]
        halfway = halfway_pixels(segmentation, Path(key.split("#")[0]))
        assert not (differ & ~halfway).any(), f"{key}: {int((differ & ~halfway).sum())} pixels differ away from ties"
        ties += int((differ & halfway).sum())
        labelled += int(ours[key].any())
    assert labelled >= 3
    total = sum(image.size for image in ours.values())
    print(f"three-way: {len(ours)} frames agree; {ties} of {total} pixels differ only at exact halfway ties")
    assert ties <= 0.01 * total
    return {"result": result, "ties": ties}


def test_three_way_reversed_instance_numbers(tmp_path: Path) -> None:
    specs = stack((-20.1, -19.7, -12.3), 18, (0, 0, 1.4), rows=40, columns=44, spacing=(0.95, 0.9),
                  instance_numbers=range(18, 0, -1))
    dicom = tmp_path / "dicom"
    write_series(dicom, specs, file_names=shuffled_names(18, seed=2))
    affine = grid_affine((21.3, -18.7, -13.9), (1.3, 1.1, 1.7), [(-1, 0, 0), (0, 1, 0), (0, 0, 1)])  # RAS-like order
    segmentation = write_segmentation(tmp_path / "seg.nii.gz", PHANTOM, affine, (34, 38, 16))
    outcome = assert_three_way(tmp_path, dicom, segmentation)
    assert [int(r["instance_number"]) for r in read_manifest(tmp_path / "slicer_logic")] == list(range(1, 19))
    assert outcome["result"].labels_found == [1, 2, 7]


def test_three_way_double_oblique(tmp_path: Path) -> None:
    orientation = rotated_orientation(0.31, -0.42, 0.17)
    normal = np.cross(orientation[:3], orientation[3:])
    centre = 0.9 * 20 * (np.asarray(orientation[:3]) + np.asarray(orientation[3:]))
    specs = stack(-centre - 9 * 1.3 * normal, 18, 1.3 * normal, orientation=orientation, spacing=(0.9, 0.9), rows=40, columns=40)
    dicom = tmp_path / "dicom"
    write_series(dicom, specs)
    affine = grid_affine((-19.3, -20.9, -18.1), (1.1, 1.2, 1.3))
    segmentation = write_segmentation(tmp_path / "seg.nii.gz", PHANTOM, affine, (36, 34, 30))
    assert_three_way(tmp_path, dicom, segmentation)


def add_acquisition_transform(app, volume, files: list[Path]):
    """A grid transform as Slicer's DICOM plugin adds for irregular geometry: for each slice, the displacement
    from where the regular volume puts its corners to where the DICOM headers put them."""
    from slicer import vtkOrientedGridTransform

    columns, rows, slices = volume.GetImageData().GetDimensions()
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(ijk_to_ras)
    matrix = np.array([[ijk_to_ras.GetElement(r, c) for c in range(4)] for r in range(4)])
    uids = volume.GetAttribute("DICOM.instanceUIDs").split()
    by_uid = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID: f for f in files}
    grid = vtk.vtkImageData()
    grid.SetOrigin(*volume.GetOrigin())
    grid.SetDimensions(2, 2, slices)
    spacing = volume.GetSpacing()
    grid.SetSpacing(spacing[0] * (columns - 1), spacing[1] * (rows - 1), spacing[2])
    grid.AllocateScalars(vtk.VTK_DOUBLE, 3)
    transform = vtkOrientedGridTransform()
    direction = vtk.vtkMatrix4x4()
    volume.GetIJKToRASDirectionMatrix(direction)
    transform.SetGridDirectionMatrix(direction)
    transform.SetDisplacementGridData(grid)
    node = app.scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "acquisition transform")
    node.SetAndObserveTransformToParent(transform)
    volume.SetAndObserveTransformNodeID(node.GetID())
    displacements = slicer.util.arrayFromGridTransform(node)  # [k, row, column, xyz]
    for k, uid in enumerate(uids):
        header = pydicom.dcmread(by_uid[uid], stop_before_pixels=True)
        ipp = np.array(header.ImagePositionPatient, float)
        iop = np.array(header.ImageOrientationPatient, float)
        ps = np.array(header.PixelSpacing, float)
        for row in range(2):
            for column in range(2):
                target = (ipp + column * (columns - 1) * ps[1] * iop[:3] + row * (rows - 1) * ps[0] * iop[3:]) * [-1, -1, 1]
                source = (matrix @ [column * (columns - 1), row * (rows - 1), k, 1])[:3]
                displacements[k, row, column] = target - source
    slicer.util.arrayFromGridTransformModified(node)
    return node


def test_tilted_series_under_acquisition_transform(tmp_path: Path) -> None:
    """Gantry tilt: the volume gets a grid transform; the logic still samples each file's own plane."""
    tilt = np.radians(15.0)
    orientation = (1.0, 0.0, 0.0, 0.0, np.cos(tilt), -np.sin(tilt))
    specs = stack((-18, -16, -13), 20, (0, 0, 1.4), orientation=orientation, spacing=(0.9, 0.9), rows=40, columns=40)
    dicom = tmp_path / "dicom"
    files = write_series(dicom, specs)
    sheared, shape = stack_affine(specs, flips=(False, True, False))
    segmentation = write_segmentation(tmp_path / "seg.nii.gz", PHANTOM, sheared, shape)
    app = headless_slicer()
    volume = load_dicom_volume(app, files)
    transform = add_acquisition_transform(app, volume, files)
    assert volume.GetParentTransformNode() is transform and not transform.IsTransformToWorldLinear()
    logic = SegAlignMRMLLogic(app.scene, file_for_instance=file_lookup(dicom))
    node = logic.import_segmentation(segmentation, volume)
    assert node.GetParentTransformNode() is not None, "a sheared affine is carried by a linear transform"
    result = logic.export(node, volume, tmp_path / "slicer_logic")
    assert any("parent transform" in w for w in result.warnings)
    assert any("15.00 deg off their normal" in w for w in result.warnings)
    ours = labels_by_file(tmp_path / "slicer_logic", dicom)
    cli = cli_export(tmp_path, dicom, segmentation)
    assert set(ours) == set(cli)
    for key, labels in ours.items():
        np.testing.assert_array_equal(labels, cli[key])
        header_file = Path(key.split("#")[0])
        truth = PHANTOM.labels_at(_pixel_centres(header_file))
        np.testing.assert_array_equal(labels, truth)


def _pixel_centres(path: Path) -> np.ndarray:
    from phantoms import pixel_centres_from_file

    return pixel_centres_from_file(path)


def test_segment_edits_and_renames_are_exported(tmp_path: Path) -> None:
    specs = stack((-20, -20, -10), 12, (0, 0, 1.7), rows=40, columns=40)
    dicom = tmp_path / "dicom"
    files = write_series(dicom, specs)
    affine, shape = stack_affine(specs, flips=(True, True, False))
    segmentation = write_segmentation(tmp_path / "seg.nii.gz", PHANTOM, affine, shape, label_table_xml=PHANTOM.label_table_xml())
    app = headless_slicer()
    volume = load_dicom_volume(app, files)
    logic = SegAlignMRMLLogic(app.scene, file_for_instance=file_lookup(dicom))
    node = logic.import_segmentation(segmentation, volume)
    segmentation_object = node.GetSegmentation()
    big = segmentation_object.GetSegmentIdBySegmentName("big")
    segmentation_object.RemoveSegment(segmentation_object.GetSegmentIdBySegmentName("left_blob"))
    segmentation_object.GetSegment(big).SetName("renamed big")
    result = logic.export(node, volume, tmp_path / "out")
    labels = np.stack(list(labels_by_file(tmp_path / "out").values()))
    assert 2 not in labels, "a removed segment must not be exported"
    assert 7 in labels, "untouched segments keep their original label value"
    assert 1 in labels, "a renamed segment keeps the label value it was imported with"
    import json

    names = {entry["value"]: entry["name"] for entry in json.loads((tmp_path / "out" / "labels.json").read_text())}
    assert names[1] == "renamed big" and names[7] == "tilted_rod"
    assert result.labels_found == [1, 7]


def test_segments_keep_their_values_whatever_their_names(tmp_path: Path) -> None:
    """Two segments named alike, one named Background, a copy, and one drawn in Slicer: each its own value."""
    specs = stack((-20, -20, -10), 12, (0, 0, 1.7), rows=40, columns=40)
    dicom = tmp_path / "dicom"
    files = write_series(dicom, specs)
    affine, shape = stack_affine(specs, flips=(True, True, False))
    segmentation = write_segmentation(tmp_path / "seg.nii.gz", PHANTOM, affine, shape)
    table = tmp_path / "labels.csv"
    table.write_text("1,kidney\n2,kidney\n7,Background\n")
    app = headless_slicer()
    volume = load_dicom_volume(app, files)
    logic = SegAlignMRMLLogic(app.scene, file_for_instance=file_lookup(dicom))
    node = logic.import_segmentation(segmentation, volume, label_table=table)
    result = logic.export(node, volume, tmp_path / "out")
    assert result.labels_found == [1, 2, 7]
    cli = cli_export(tmp_path, dicom, segmentation)
    ours = labels_by_file(tmp_path / "out", dicom)
    for key in ours:
        np.testing.assert_array_equal(ours[key], cli[key], err_msg=key)
    # A copy of a segment (its tag copied too) and a new segment get values of their own.
    from slicer import vtkSegment

    segmentation_object = node.GetSegmentation()
    copy = vtkSegment()
    copy.DeepCopy(segmentation_object.GetNthSegment(0))
    copy.SetName("kidney copy")
    segmentation_object.AddSegment(copy, "copy")
    # The copy lies on the original: both are kept whole (the copy on a labelmap layer of its own), and the copy
    # has a value of its own.
    again = logic.labels_from_segmentation(node)
    assert again.values == [1, 2, 7, 8] and again.layer_of(8) == 1
    assert again.voxel_counts[8] == again.voxel_counts[1]
    assert any("label value of another segment" in warning for warning in again.warnings)


def test_parent_transforms(tmp_path: Path) -> None:
    """A linear parent transform is applied; a non-linear one is refused with a clear message."""
    specs = stack((-20, -20, -10), 12, (0, 0, 1.7), rows=40, columns=40)
    dicom = tmp_path / "dicom"
    files = write_series(dicom, specs)
    affine, shape = stack_affine(specs)
    labels = np.asarray(nib.load(write_segmentation(tmp_path / "seg.nii.gz", PHANTOM, affine, shape)).dataobj)
    shift = np.eye(4)
    shift[:3, 3] = (3.0, -2.0, 1.7)  # RAS mm
    moved = write_nifti(tmp_path / "moved.nii.gz", labels, shift @ affine)
    app = headless_slicer()
    volume = load_dicom_volume(app, files)
    logic = SegAlignMRMLLogic(app.scene, file_for_instance=file_lookup(dicom))
    node = logic.import_segmentation(tmp_path / "seg.nii.gz", volume)
    transform = app.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, shift[r, c])
    transform.SetMatrixTransformToParent(matrix)
    node.SetAndObserveTransformNodeID(transform.GetID())
    logic.export(node, volume, tmp_path / "transformed")
    ours = labels_by_file(tmp_path / "transformed", dicom)
    expected = cli_export(tmp_path, dicom, moved)
    assert any(image.any() for image in ours.values())
    for key in ours:
        np.testing.assert_array_equal(ours[key], expected[key])

    grid_node = app.scene.AddNewNodeByClass("vtkMRMLGridTransformNode")
    from slicer import vtkOrientedGridTransform

    grid = vtk.vtkImageData()
    grid.SetDimensions(2, 2, 2)
    grid.AllocateScalars(vtk.VTK_DOUBLE, 3)
    grid_transform = vtkOrientedGridTransform()
    grid_transform.SetDisplacementGridData(grid)
    grid_node.SetAndObserveTransformToParent(grid_transform)
    node.SetAndObserveTransformNodeID(grid_node.GetID())
    with pytest.raises(SegAlignError, match="non-linear transform"):
        logic.export(node, volume, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def test_split_affine_keeps_the_mapping() -> None:
    tilt = np.radians(18.5)
    sheared = np.array([[-0.5, 0, 0, 120], [0, 0.47, 1.3 * np.sin(tilt), -20], [0, -0.16, 1.3 * np.cos(tilt), 40], [0, 0, 0, 1]])
    geometry, residual = split_affine(sheared)
    columns = geometry[:3, :3] / np.linalg.norm(geometry[:3, :3], axis=0)
    np.testing.assert_allclose(columns.T @ columns, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(residual @ geometry, sheared, atol=1e-9)
    plain = np.diag([-0.8, 0.8, 2.0, 1.0])
    assert split_affine(plain)[1] is None


def test_real_totalsegmentator_three_way(tmp_path: Path, testdata: Path) -> None:
    """The real TotalSegmentator CT (blank SOPInstanceUIDs, InstanceNumber against position) and its 31-label
    segmentation: the three exports agree on every pixel of every frame."""
    folder = require(testdata / "totalsegmentator_example")
    dicom = folder / "ct_dicom"
    files = sorted(dicom.iterdir())
    started = time.perf_counter()
    outcome = assert_three_way(tmp_path, dicom, folder / "segmentation_ml.nii.gz", files)
    print(f"real TotalSegmentator three-way in {time.perf_counter() - started:.1f} s")
    assert len(outcome["result"].labels_found) >= 10


def _imported_phantom(tmp_path: Path):
    """A 10-frame axial series (every pixel 1024) in a scene, and the phantom with its label table imported as a
    segmentation node onto it: (logic, segmentation node, volume node)."""
    specs = stack((-20, -20, -10), 10, (0, 0, 1.7), rows=40, columns=40)
    dicom = tmp_path / "dicom"
    files = write_series(dicom, specs, pixel_function=lambda spec: np.full((spec.rows, spec.columns), 1024, np.uint16))
    affine, shape = stack_affine(specs)
    segmentation = write_segmentation(tmp_path / "seg.nii.gz", PHANTOM, affine, shape,
                                      label_table_xml=PHANTOM.label_table_xml())
    app = headless_slicer()
    volume = load_dicom_volume(app, files)
    logic = SegAlignMRMLLogic(app.scene, file_for_instance=file_lookup(dicom))
    return logic, logic.import_segmentation(segmentation, volume), volume


def test_overlays_use_the_segments_current_colours(tmp_path: Path) -> None:
    """Names and colours reach the segment list on import; overlays use the colours the user set in Slicer."""
    logic, node, volume = _imported_phantom(tmp_path)
    segment = node.GetSegmentation().GetSegment(node.GetSegmentation().GetSegmentIdBySegmentName("big"))
    assert segment is not None and tuple(round(c * 255) for c in segment.GetColor()) == (200, 80, 80)
    segment.SetColor(0.0, 1.0, 0.0)
    from segalign.options import ExportOptions, OverlayOptions

    logic.export(node, volume, tmp_path / "out", ExportOptions(overlays=OverlayOptions(alpha=1.0)))
    import json

    entries = {e["name"]: e for e in json.loads((tmp_path / "out" / "labels.json").read_text())}
    assert entries["big"]["color"] == [0, 255, 0]
    for row in read_manifest(tmp_path / "out"):
        labels = read_png(tmp_path / "out" / row["label_png"])
        rgb = read_png(tmp_path / "out" / row["overlay_png"])
        big = labels == entries["big"]["value"]
        assert (rgb[big] == [0, 255, 0]).all()
        assert (rgb[labels == 0] == rgb[labels == 0][:, :1]).all(), "unlabelled pixels stay gray"
    assert (tmp_path / "out" / "index.html").is_file()


def test_dicom_seg_from_the_segmentation_node_uses_its_current_names_and_colours(tmp_path: Path) -> None:
    """The panel's DICOM SEG option: a segment renamed and recoloured in Slicer reaches seg.dcm so, and the SEG's
    frames (rebuilt through their references with pydicom) equal the label images."""
    import json

    import pydicom
    from segalign.options import DicomSegOptions, ExportOptions
    from segalign.writers.segment_codes import rgb_to_dicom_lab

    logic, node, volume = _imported_phantom(tmp_path)
    segment = node.GetSegmentation().GetSegment(node.GetSegmentation().GetSegmentIdBySegmentName("big"))
    segment.SetName("spleen")
    segment.SetColor(0.0, 1.0, 0.0)
    result = logic.export(node, volume, tmp_path / "out", ExportOptions(dicom_seg=DicomSegOptions("labelmap")))
    assert result.outputs == {"dicom_seg": "seg.dcm"}
    seg = pydicom.dcmread(tmp_path / "out" / "seg.dcm")
    segments = {item.SegmentLabel: item for item in seg.SegmentSequence}
    assert "spleen" in segments and "big" not in segments
    assert tuple(segments["spleen"].RecommendedDisplayCIELabValue) == rgb_to_dicom_lab((0, 255, 0))
    assert segments["spleen"].SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Spleen"
    value_of = {e["name"]: e["value"] for e in json.loads((tmp_path / "out" / "labels.json").read_text())}
    number_to_value = {int(item.SegmentNumber): value_of[name] for name, item in segments.items() if name != "Background"}
    frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), seg.Rows, seg.Columns)
    rebuilt = {}
    for frame, groups in zip(frames, seg.PerFrameFunctionalGroupsSequence):
        uid = groups.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        labels = np.zeros(frame.shape, np.uint16)
        for number, value in number_to_value.items():
            labels[frame == number] = value
        rebuilt[uid] = labels
    rows = read_manifest(tmp_path / "out")
    assert any(read_png(tmp_path / "out" / row["label_png"]).any() for row in rows)
    for row in rows:
        expected = read_png(tmp_path / "out" / row["label_png"])
        np.testing.assert_array_equal(rebuilt.get(row["sop_instance_uid"], np.zeros_like(expected)), expected)


def test_fast_layer_merge_matches_slicers_own_merge(tmp_path: Path) -> None:
    """Segments on two labelmap layers that overlap, flattened on request (``overlap="later-wins"``: the later
    segment wins): reading the layers directly gives the same export as Slicer's own merge
    (``labels_from_segmentation(node, merge="slicer")``). Test_slicer_overlaps compares them keeping overlaps."""
    from vtk.util import numpy_support

    from segalign.export import export_segmentation
    from slicer import vtkOrientedImageData, vtkSegment

    specs = stack((-20, -20, -10), 12, (0, 0, 1.7), rows=40, columns=40)
    dicom = tmp_path / "dicom"
    files = write_series(dicom, specs)
    affine, shape = stack_affine(specs, flips=(True, False, False))
    segmentation = write_segmentation(tmp_path / "seg.nii.gz", PHANTOM, affine, shape, label_table_xml=PHANTOM.label_table_xml())
    app = headless_slicer()
    volume = load_dicom_volume(app, files)
    logic = SegAlignMRMLLogic(app.scene, file_for_instance=file_lookup(dicom))
    node = logic.import_segmentation(segmentation, volume)
    seg = node.GetSegmentation()
    first_layer = seg.GetNthSegment(0).GetRepresentation("Binary labelmap")
    extent = (5, 30, 8, 25, 2, 9)  # a box overlapping "big" and "left_blob", on the same grid
    box = vtkOrientedImageData()
    box.SetExtent(*extent)
    box.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(box.GetPointData().GetScalars())[:] = 1
    matrix = vtk.vtkMatrix4x4()
    first_layer.GetImageToWorldMatrix(matrix)
    box.SetImageToWorldMatrix(matrix)
    segment = vtkSegment()
    segment.SetName("box")
    segment.SetColor(0.1, 0.2, 0.9)
    segment.AddRepresentation("Binary labelmap", box)
    seg.AddSegment(segment, "box")
    assert seg.GetNumberOfLayers() == 2
    logic.export(node, volume, tmp_path / "fast", overlap="later-wins")
    export_segmentation(logic.series_for_volume(volume),
                        logic.labels_from_segmentation(node, merge="slicer", overlap="later-wins"), tmp_path / "slicer")
    fast, slow = labels_by_file(tmp_path / "fast", dicom), labels_by_file(tmp_path / "slicer", dicom)
    box_value = {e["name"]: e["value"] for e in __import__("json").loads((tmp_path / "fast" / "labels.json").read_text())}["box"]
    assert any((image == box_value).any() for image in fast.values())
    for key in fast:
        np.testing.assert_array_equal(fast[key], slow[key], err_msg=key)


@pytest.mark.parametrize("name", ["seg_nrrd", "mha", "dicom_seg"])
def test_logic_imports_every_format_like_the_cli(tmp_path: Path, name: str) -> None:
    """The panel's import takes the library's formats: a .seg.nrrd, an MHA, a DICOM SEG export from the Slicer
    logic exactly as the CLI exports their NIfTI twin (names mapped for the SEG, which numbers segments 1..N)."""
    from test_formats import NAMES, by_name, exported, write_every_format

    dicom, files = write_every_format(tmp_path / "case", "axial_las")
    app = headless_slicer()
    volume = load_dicom_volume(app, sorted(p for p in dicom.rglob("*") if p.is_file()))
    logic = SegAlignMRMLLogic(app.scene, file_for_instance=file_lookup(dicom))
    node = logic.import_segmentation(files[name], volume)
    if name == "seg_nrrd":  # read by Slicer's own reader, not the library's
        assert node.GetStorageNode().GetClassName() == "vtkMRMLSegmentationStorageNode"
        assert node.GetStorageNode().GetFileName() == str(files[name])
    logic.export(node, volume, tmp_path / "slicer")
    assert run_cli("export", dicom, files["nifti"], "-o", tmp_path / "twin", "-q").code == 0
    images, table = exported(tmp_path / "slicer")
    assert {entry["name"] for entry in table.values()} >= (set(NAMES.values()) if name != "mha" else set())
    if name == "dicom_seg":
        images = by_name(images, table)
    twin, _ = exported(tmp_path / "twin")
    assert len(images) == len(twin)
    for mine, theirs in zip(images, twin):
        np.testing.assert_array_equal(mine, theirs)


def test_totalsegmentator_segments_get_standard_terminology(tmp_path: Path) -> None:
    """Segments named after TotalSegmentator classes carry the codes the DICOM SEG writer uses, in Slicer's
    terminology entry format (parsed back with slicerio, Slicer's own Python reader of it); others keep Slicer's
    default."""
    parse_entry = pytest.importorskip("slicerio.segmentation").terminology_entry_from_string
    from segalign.writers.segment_codes import codes_for

    specs = stack((-20, -20, -10), 12, (0, 0, 1.7), rows=40, columns=40)
    files = write_series(tmp_path / "dicom", specs)
    affine, shape = stack_affine(specs)
    segmentation = write_segmentation(tmp_path / "seg.nii.gz", PHANTOM, affine, shape)
    table = tmp_path / "labels.csv"
    table.write_text("1,liver\n2,kidney_left\n7,my_own_structure\n")
    app = headless_slicer()
    volume = load_dicom_volume(app, files)
    node = SegAlignMRMLLogic(app.scene).import_segmentation(segmentation, volume, label_table=table)
    segments = node.GetSegmentation()
    found = {}
    for index in range(segments.GetNumberOfSegments()):
        segment = segments.GetNthSegment(index)
        text = vtk.reference("")
        found[segment.GetName()] = str(text) if segment.GetTag(segment.GetTerminologyEntryTagName(), text) else None
    own = found["my_own_structure"]  # left to Slicer: its default entry, generic "Tissue"
    assert own is None or parse_entry(own)["type"][1] == "85756007"
    for name in ("liver", "kidney_left"):
        entry = parse_entry(found[name])
        codes = codes_for(name)
        assert entry["category"] == [codes.category.scheme, codes.category.value, codes.category.meaning]
        assert entry["type"] == [codes.type.scheme, codes.type.value, codes.type.meaning]
    assert codes_for("liver").type.value == "10200004"  # SNOMED CT Liver
    kidney = parse_entry(found["kidney_left"])
    assert kidney["typeModifier"] == [codes_for("kidney_left").modifier.scheme, codes_for("kidney_left").modifier.value,
                                      codes_for("kidney_left").modifier.meaning]


def test_written_dicom_seg_loads_back_and_lines_up(tmp_path: Path) -> None:
    """The SEG the logic writes, loaded back into the scene as a segmentation (as the panel's button does), exports
    the same labels on every frame as the segmentation it was written from."""
    pytest.importorskip("highdicom")
    from segalign.options import DicomSegOptions, ExportOptions

    specs = stack((-20.1, -19.7, -12.3), 18, (0, 0, 1.4), rows=40, columns=44, spacing=(0.95, 0.9),
                  instance_numbers=range(18, 0, -1))
    files = write_series(tmp_path / "dicom", specs, file_names=shuffled_names(18, seed=3))
    affine = grid_affine((21.3, -18.7, -13.9), (1.3, 1.1, 1.7), [(-1, 0, 0), (0, 1, 0), (0, 0, 1)])
    segmentation = write_segmentation(tmp_path / "seg.nii.gz", PHANTOM, affine, (34, 38, 16))
    app = headless_slicer()
    volume = load_dicom_volume(app, files)
    logic = SegAlignMRMLLogic(app.scene, file_for_instance=file_lookup(tmp_path / "dicom"))
    node = logic.import_segmentation(segmentation, volume)
    first = logic.export(node, volume, tmp_path / "first", ExportOptions(dicom_seg=DicomSegOptions()))
    loaded = logic.import_segmentation(first.output_dir / first.outputs["dicom_seg"], volume, name="SEG back")
    assert loaded.GetSegmentation().GetNumberOfSegments() == 3
    again = logic.export(loaded, volume, tmp_path / "again")
    assert len(again.labels_found) == 3
    import json

    def names(folder: Path) -> dict[int, str]:
        return {entry["value"]: entry["name"] for entry in json.loads((folder / "labels.json").read_text())}

    # The SEG numbers its segments 1..N; they come back under the same names.
    to_first = {value: {n: v for v, n in names(tmp_path / "first").items()}[name]
                for value, name in names(tmp_path / "again").items()}
    assert sorted(to_first.values()) == first.labels_found == [1, 2, 7]
    lookup = np.zeros(256, dtype=np.uint8)
    for value, original in to_first.items():
        lookup[value] = original
    a, b = labels_by_file(tmp_path / "first", tmp_path / "dicom"), labels_by_file(tmp_path / "again", tmp_path / "dicom")
    assert set(a) == set(b) and len(a) == 18
    for key in a:
        np.testing.assert_array_equal(a[key], lookup[b[key]], err_msg=key)
