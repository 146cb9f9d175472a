"""``segalign.align``, the notebook API: every kind of DICOM and segmentation argument gives the labels
``segalign export`` writes, in its order, and what a notebook user does with them (masks, pixels, headers,
export, the Jupyter display) is right.

Every successful ``segalign export`` of the whole suite is also compared with ``align`` (see
``conftest.assert_align_matches_export``); here the arguments ``align`` alone takes are checked: lists of files,
Datasets in memory, nibabel and SimpleITK images, ``(array, affine)`` pairs, loaded scans, series and
segmentations. Truth is the export's PNGs, and, for overlapping segments, nearest-neighbour sampling written out
here from the DICOM tags.
"""

from __future__ import annotations

import gc
import html
import random
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

import segalign
from segalign import SegAlignError, align, load_segmentation, scan_folder
from segalign.synthetic import Ellipsoid, Phantom, SeriesIdentity, las_affine, rasterize, stack, write_enhanced
from segalign.synthetic import write_metaimage, write_nifti, write_series

from conftest import exported_labels, read_manifest, read_png, run_cli
from phantoms import pixel_centres_from_file, rotated_orientation, small_phantom

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _phantom() -> Phantom:
    phantom = small_phantom()
    phantom.shapes[0] = Ellipsoid(1, "big", (-2.3, 1.1, 0.7), (11.3, 8.7, 9.9), hu=60)
    return phantom


@pytest.fixture(scope="module")
def tilted(tmp_path_factory) -> dict[str, Path]:
    """A tilted, double-oblique stack with a gap, InstanceNumbers counting down, shuffled file names; its
    segmentation on an LAS grid as NIfTI and as MetaImage."""
    root = tmp_path_factory.mktemp("tilted")
    phantom = _phantom()
    specs = stack((-14.3, -13.1, -11.7), 13, (0.0, 0.9, 2.1), orientation=rotated_orientation(0.2, 0.15, 0.1),
                  spacing=(0.93, 0.87), rows=29, columns=31, instance_numbers=range(13, 0, -1))
    del specs[5]  # a missing slice
    names = [f"IMG{n:03d}" for n in random.Random(3).sample(range(100), len(specs))]
    write_series(root / "dicom", specs, phantom, file_names=names)
    affine, shape = las_affine((-20, -20, -20), (20, 20, 20), (0.71, 0.83, 0.97))
    labels = rasterize(phantom, shape, affine)
    write_nifti(root / "seg.nii.gz", labels, affine)
    write_metaimage(root / "seg.mha", labels, affine)
    run = run_cli("export", root / "dicom", root / "seg.nii.gz", "-o", root / "export")
    assert run.code == 0, run.stderr
    return {"root": root, "dicom": root / "dicom", "nifti": root / "seg.nii.gz", "mha": root / "seg.mha",
            "export": root / "export"}


def _truth(case: dict[str, Path]) -> np.ndarray:
    return np.stack(exported_labels(case["export"]))


def _dicom_argument(kind: str, folder: Path):
    files = sorted(folder.iterdir())
    random.Random(5).shuffle(files)
    if kind == "folder":
        return folder
    if kind == "folder-text":
        return str(folder)
    if kind == "files":
        return files
    if kind == "file-names":
        return [str(path) for path in files]
    if kind == "datasets":
        return [pydicom.dcmread(path) for path in files]
    if kind == "scan":
        return scan_folder(folder)
    if kind == "series":
        return scan_folder(folder).select()
    raise AssertionError(kind)


def _segmentation_argument(kind: str, case: dict[str, Path]):
    if kind == "nifti-path":
        return case["nifti"]
    if kind == "mha-path":
        return str(case["mha"])
    if kind == "nibabel":
        return nib.load(case["nifti"])
    if kind == "simpleitk":
        import SimpleITK as sitk

        return sitk.ReadImage(str(case["mha"]))
    if kind == "array-affine":
        image = nib.load(case["nifti"])
        return (np.asarray(image.dataobj), image.affine)
    if kind == "segmentation":
        return load_segmentation(case["nifti"])
    raise AssertionError(kind)


DICOM_KINDS = ["folder", "folder-text", "files", "file-names", "datasets", "scan", "series"]
SEGMENTATION_KINDS = ["nifti-path", "mha-path", "nibabel", "simpleitk", "array-affine", "segmentation"]


@pytest.mark.parametrize("dicom_kind", DICOM_KINDS)
def test_every_kind_of_dicom_argument_gives_the_exports_labels(tilted, dicom_kind: str) -> None:
    alignment = align(_dicom_argument(dicom_kind, tilted["dicom"]), tilted["nifti"])
    assert np.array_equal(alignment.labels, _truth(tilted))
    rows = read_manifest(tilted["export"])
    assert [frame.frame.sop_instance_uid for frame in alignment] == [row["sop_instance_uid"] for row in rows]
    assert [frame.frame.instance_number for frame in alignment] == [int(row["instance_number"]) for row in rows]


@pytest.mark.parametrize("segmentation_kind", SEGMENTATION_KINDS)
def test_every_kind_of_segmentation_argument_gives_the_exports_labels(tilted, segmentation_kind: str) -> None:
    alignment = align(tilted["dicom"], _segmentation_argument(segmentation_kind, tilted))
    assert np.array_equal(alignment.labels, _truth(tilted))
    assert [label.value for label in alignment.segments] == [1, 2, 7]


def test_frames_come_one_by_one_as_in_the_whole_array_and_in_position_order_reversed(tilted) -> None:
    alignment = align(tilted["dicom"], tilted["nifti"])
    one_by_one = np.stack([frame.labels for frame in alignment])  # sampled frame by frame (nothing cached yet)
    assert np.array_equal(one_by_one, alignment.labels)
    assert np.array_equal(alignment[-1].labels, alignment.labels[-1])
    assert [f.index for f in alignment[2:5]] == [2, 3, 4]
    by_position = align(tilted["dicom"], tilted["nifti"], order="position")
    # InstanceNumber counts down as the stack goes up: position order is instance order reversed
    assert np.array_equal(by_position.labels, alignment.labels[::-1])
    with pytest.raises(IndexError):
        alignment[len(alignment)]


def test_the_array_affine_pair_is_taken_as_ras(tilted) -> None:
    """nibabel's convention: an affine meant as LPS (the other common one) gives other labels, not the same."""
    image = nib.load(tilted["nifti"])
    data = np.asarray(image.dataobj)
    as_ras = align(tilted["dicom"], (data, image.affine)).labels
    assert np.array_equal(as_ras, _truth(tilted))
    mirrored = align(tilted["dicom"], (data, LPS_TO_RAS @ image.affine)).labels  # the phantom mirrored in x and y
    assert mirrored.any() and not np.array_equal(mirrored, as_ras)


def test_frame_pixels_and_dataset_are_those_of_the_file(tilted) -> None:
    alignment = align(tilted["dicom"], tilted["nifti"])
    frame = alignment[4]
    dataset = pydicom.dcmread(frame.frame.source_file)
    expected = dataset.pixel_array * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)
    assert np.array_equal(frame.pixels(), expected)
    assert frame.pixels().shape == frame.labels.shape
    assert frame.dataset.SOPInstanceUID == frame.frame.sop_instance_uid
    assert "PixelData" not in frame.dataset  # the header only


def test_datasets_in_memory_are_given_back_as_they_are_and_their_files_go_with_the_alignment(tilted) -> None:
    datasets = [pydicom.dcmread(path) for path in sorted(tilted["dicom"].iterdir())]
    for dataset in datasets:  # as a PACS client may give them: no file meta
        del dataset.file_meta
    alignment = align(datasets, tilted["nifti"])
    assert np.array_equal(alignment.labels, _truth(tilted))
    by_uid = {dataset.SOPInstanceUID: dataset for dataset in datasets}
    assert all(frame.dataset is by_uid[frame.frame.sop_instance_uid] for frame in alignment)
    folder = alignment[0].frame.source_file.parent
    assert folder.is_dir() and tilted["root"] not in folder.parents
    del alignment
    gc.collect()
    assert not folder.exists(), "the temporary copy of the datasets is removed with the alignment"


def test_enhanced_multiframe_file_alone_or_in_a_folder(tmp_path: Path) -> None:
    phantom = _phantom()
    specs = stack((-12.4, -12.8, -10.1), 9, (0, 0, 2.3), spacing=(0.81, 0.79), rows=33, columns=30)
    path = write_enhanced(tmp_path / "dicom" / "enhanced.dcm", specs, phantom)
    affine, shape = las_affine((-20, -20, -20), (20, 20, 20), (0.9, 0.9, 1.1))
    write_nifti(tmp_path / "seg.nii.gz", rasterize(phantom, shape, affine), affine)
    assert run_cli("export", tmp_path / "dicom", tmp_path / "seg.nii.gz", "-o", tmp_path / "out").code == 0
    truth = np.stack(exported_labels(tmp_path / "out"))
    for dicom in (path, [path], tmp_path / "dicom"):
        alignment = align(dicom, tmp_path / "seg.nii.gz")
        assert np.array_equal(alignment.labels, truth)
        assert [frame.frame.frame_number for frame in alignment] == list(range(1, 10))


# ------------------------------------------------------------------------------------------------ overlaps


def _sample_here(mask: np.ndarray, affine: np.ndarray, path: Path) -> np.ndarray:
    """Nearest neighbour (ties up) of a voxel mask at a file's pixel centres, from its tags (written out here)."""
    centres = pixel_centres_from_file(path)
    ras = centres @ LPS_TO_RAS[:3, :3].T
    index = (ras - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T
    nearest = np.floor(index + 0.5).astype(int)
    inside = np.all((nearest >= 0) & (nearest < np.array(mask.shape)), axis=-1)
    result = np.zeros(centres.shape[:2], dtype=bool)
    result[inside] = mask[tuple(nearest[inside].T)]
    return result


@pytest.fixture(scope="module")
def overlapping(tmp_path_factory) -> dict:
    """Three masks that overlap (a body and two organs inside it) as a folder of NIfTI masks."""
    root = tmp_path_factory.mktemp("overlap")
    shapes = [Ellipsoid(1, "Body", (0.3, -0.2, 0.1), (16.1, 14.3, 15.2)),
              Ellipsoid(2, "liver", (-4.1, 2.2, 1.3), (6.3, 5.1, 5.9)),
              Ellipsoid(3, "tumour", (-2.9, 3.1, 2.2), (2.8, 2.4, 3.1))]
    specs = stack((-15.2, -14.9, -12.3), 12, (0, 0, 2.17), spacing=(0.97, 0.91), rows=33, columns=35)
    write_series(root / "dicom", specs, Phantom(shapes=shapes))
    affine, shape = las_affine((-20, -20, -20), (20, 20, 20), (0.77, 0.81, 0.93))
    masks = {}
    for item in shapes:
        masks[item.name] = rasterize(Phantom(shapes=[item]), shape, affine) > 0
        write_nifti(root / "masks" / f"{item.name}.nii.gz", masks[item.name].astype(np.uint8), affine)
    return {"root": root, "dicom": root / "dicom", "masks": masks, "affine": affine}


def test_overlapping_segments_are_each_whole_in_masks_and_labels_refuse(overlapping) -> None:
    alignment = align(overlapping["dicom"], overlapping["root"] / "masks")
    assert len(alignment.layers) > 1
    with pytest.raises(SegAlignError, match=r"overlap.*\.layers.*\.mask\(name\).*later-wins"):
        alignment.labels
    with pytest.raises(SegAlignError, match="overlap"):
        alignment[0].labels
    for name, voxels in overlapping["masks"].items():
        truth = np.stack([_sample_here(voxels, overlapping["affine"], frame.frame.source_file) for frame in alignment])
        assert truth.any()
        assert np.array_equal(alignment.mask(name), truth), name
        assert np.array_equal(np.stack([frame.mask(name) for frame in alignment]), truth), name
    assert (alignment.mask("Body") & alignment.mask("liver")).any(), "the overlap itself is there"
    flat = align(overlapping["dicom"], overlapping["root"] / "masks", overlap="later-wins")
    assert len(flat.layers) == 1 and flat.labels.shape == alignment.layers[0].shape


def test_segments_by_name_ignoring_case_and_unknown_ones_said(overlapping) -> None:
    alignment = align(overlapping["dicom"], overlapping["root"] / "masks")
    assert np.array_equal(alignment.mask("LIVER"), alignment.mask("liver"))
    value = alignment.value_of("tumour")
    assert np.array_equal(alignment.mask(value), alignment.mask("tumour"))
    with pytest.raises(SegAlignError, match=r"no segment named spleen .*Body, liver, tumour"):
        alignment.mask("spleen")
    with pytest.raises(SegAlignError, match="no segment with value 99"):
        alignment.mask(99)
    with pytest.raises(TypeError):
        alignment.mask(1.5)


# ------------------------------------------------------------------------------------------------ export


def test_export_writes_what_the_command_writes(tilted, tmp_path: Path) -> None:
    alignment = align(tilted["dicom"], tilted["nifti"])
    result = alignment.export(tmp_path / "api", masks=True, overlays=True, dicom_seg=True, rtstruct=True)
    assert run_cli("export", tilted["dicom"], tilted["nifti"], "-o", tmp_path / "cli", "--masks", "--overlays",
                   "--dicom-seg", "--rtstruct").code == 0
    api = sorted(p.relative_to(tmp_path / "api").as_posix() for p in (tmp_path / "api").rglob("*"))
    cli = sorted(p.relative_to(tmp_path / "cli").as_posix() for p in (tmp_path / "cli").rglob("*"))
    assert api == cli
    assert result.outputs == {"dicom_seg": "seg.dcm", "rtstruct": "rtstruct.dcm"}
    for name in api:
        if name.endswith(".png") and "/" in name and not name.startswith(("overlays", "viewer")):
            assert read_png(tmp_path / "api" / name).tobytes() == read_png(tmp_path / "cli" / name).tobytes(), name
    assert read_manifest(tmp_path / "api") == read_manifest(tmp_path / "cli")
    seg_api = pydicom.dcmread(tmp_path / "api" / "seg.dcm")
    seg_cli = pydicom.dcmread(tmp_path / "cli" / "seg.dcm")
    assert np.array_equal(seg_api.pixel_array, seg_cli.pixel_array)


def test_export_takes_the_alignments_order_and_refuses_unknown_choices(tilted, tmp_path: Path) -> None:
    alignment = align(tilted["dicom"], tilted["nifti"], order="position")
    alignment.export(tmp_path / "out")
    assert np.array_equal(np.stack(exported_labels(tmp_path / "out")), alignment.labels)
    with pytest.raises(SegAlignError, match="unknown export choice overlay"):
        alignment.export(tmp_path / "other", overlay=True)
    assert not (tmp_path / "other").exists()


def test_export_of_datasets_in_memory(tilted, tmp_path: Path) -> None:
    datasets = [pydicom.dcmread(path) for path in tilted["dicom"].iterdir()]
    alignment = align(datasets, tilted["nifti"])
    alignment.export(tmp_path / "out", dicom_seg=True)
    assert np.array_equal(np.stack(exported_labels(tmp_path / "out")), _truth(tilted))
    seg = pydicom.dcmread(tmp_path / "out" / "seg.dcm")
    assert seg.StudyInstanceUID == datasets[0].StudyInstanceUID


# ------------------------------------------------------------------------------------------------ refusals


def test_wrong_arguments_are_refused_in_one_line(tilted, tmp_path: Path) -> None:
    cases = [
        (lambda: align(42, tilted["nifti"]), "dicom must be a folder"),
        (lambda: align(tilted["dicom"], 42), "segmentation must be a path"),
        (lambda: align(tilted["dicom"], tilted["nifti"], order="z"), "order must be 'instance' or 'position'"),
        (lambda: align(sorted(tilted["dicom"].iterdir()), tilted["nifti"], series=1), "series= chooses"),
        (lambda: align([], tilted["nifti"]), "no DICOM files"),
        (lambda: align(tilted["dicom"], (np.zeros((4, 4)), np.eye(4))), "must be 3D"),
        (lambda: align(tilted["dicom"], (np.ones((4, 4, 4), np.uint8), np.eye(3))), "4 x 4"),
        (lambda: align(tilted["dicom"], (np.full((4, 4, 4), 0.5), np.eye(4))), "non-integer value"),
        (lambda: align(tmp_path / "nowhere", tilted["nifti"]), "DICOM folder not found"),
    ]
    for call, message in cases:
        with pytest.raises(SegAlignError) as raised:
            call()
        assert message in str(raised.value) and "\n" not in str(raised.value)


def test_a_segmentation_off_the_series_is_refused_with_the_numbers(tilted) -> None:
    labels = np.ones((5, 5, 5), np.uint8)
    far = np.diag([1.0, 1.0, 1.0, 1.0])
    far[:3, 3] = 1000.0
    with pytest.raises(segalign.NoOverlapError):
        align(tilted["dicom"], (labels, far))


def test_frames_of_different_shapes_do_not_stack_but_each_frame_does(tmp_path: Path) -> None:
    phantom = _phantom()
    specs = stack((-12.4, -12.8, -4.1), 3, (0, 0, 2.3), rows=30, columns=30) + \
        stack((-12.4, -12.8, 3.0), 2, (0, 0, 2.3), rows=20, columns=24, instance_numbers=[4, 5])
    write_series(tmp_path / "dicom", specs, phantom)
    affine, shape = las_affine((-20, -20, -20), (20, 20, 20), (0.9, 0.9, 1.1))
    write_nifti(tmp_path / "seg.nii.gz", rasterize(phantom, shape, affine), affine)
    alignment = align(tmp_path / "dicom", tmp_path / "seg.nii.gz")
    with pytest.raises(SegAlignError, match=r"differ in shape \(30x30 \(3 frames\), 20x24 \(2 frames\)\)"):
        alignment.labels
    assert [frame.labels.shape for frame in alignment] == [(30, 30)] * 3 + [(20, 24)] * 2


# ------------------------------------------------------------------------------------------------ display


def test_jupyter_display_shows_series_segments_and_thumbnails_with_input_text_inert(tmp_path: Path) -> None:
    phantom = Phantom(shapes=[Ellipsoid(1, "a", (0, 0, 0), (8.1, 7.3, 9.2)),
                              Ellipsoid(2, "b", (3, 2, 1), (3.1, 2.7, 2.2))])
    specs = stack((-12.4, -12.8, -10.1), 9, (0, 0, 2.3), rows=30, columns=30)
    hostile = "<script>alert(1)</script>"
    write_series(tmp_path / "dicom", specs, phantom, identity=SeriesIdentity(description=hostile))
    affine, shape = las_affine((-20, -20, -20), (20, 20, 20), (0.9, 0.9, 1.1))
    write_nifti(tmp_path / "seg.nii.gz", rasterize(phantom, shape, affine), affine)
    (tmp_path / "labels.csv").write_text("1,<img src=x onerror=alert(2)>\n2,kidney & <b>ureter</b>\n")
    alignment = align(tmp_path / "dicom", tmp_path / "seg.nii.gz", label_table=tmp_path / "labels.csv")
    page = alignment._repr_html_()
    assert "<script" not in page and "<img src=x" not in page and "<b>ureter" not in page
    assert html.escape(hostile) in page and "kidney &amp; &lt;b&gt;ureter&lt;/b&gt;" in page
    thumbnails = re.findall(r"<img src='data:image/png;base64,", page)
    assert len(thumbnails) == 4
    assert "9 frames" in page and "2 segments" in page
    frame_page = alignment[4]._repr_html_()
    assert frame_page.count("data:image/png;base64,") == 1 and "InstanceNumber 5" in frame_page
    assert "<img src=x" not in frame_page
    assert "Alignment of seg.nii.gz (2 segments) on 9 frames" in repr(alignment)


def test_help_of_the_package_names_align_first() -> None:
    assert "segalign.align(" in segalign.__doc__.split("building blocks")[0]
    assert "align" in segalign.__all__ and "align" in dir(segalign)
    assert segalign.align is align and segalign.Alignment.__doc__


def test_importing_the_module_leaves_the_function_in_place() -> None:
    """``import segalign.alignment`` (as a type hint needs it) must not replace ``segalign.align``, the function."""
    import importlib
    import subprocess
    import sys

    code = ("import segalign.alignment, segalign; from segalign.alignment import Alignment; "
            "assert callable(segalign.align) and segalign.align is segalign.alignment.align")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert importlib.import_module("segalign.alignment").align is align
