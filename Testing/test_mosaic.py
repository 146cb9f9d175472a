"""Siemens mosaics: one DICOM frame holding 35 slices, each on its own plane (../shared/testdata/dcm_qa_ts_mosaic).

Three independent truths, none of which is SegAlign's (nor nibabel's, which SegAlign uses to place the tiles):

* the scanner's own protocol: the Siemens MrPhoenixProtocol lists every slice's centre (``sSliceArray``);
* dcm2niix's de-mosaicked volume (``ref_dcm2niix/1.nii``): its affine places every slice, and its voxels let each
  tile be matched to its slice by content;
* threshold consistency: a segmentation made by thresholding dcm2niix's volume must give back, on every tile of
  the label mosaic, exactly the thresholded pixels of that tile; and SimpleITK resampling onto each tile's plane.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from conftest import read_manifest, read_png, require, run_cli
from segalign import scan_folder
from segalign.synthetic import AXIAL, stack, write_series

ENCODINGS = ["dicom_explicit", "dicom_implicit", "dicom_rle"]
THRESHOLD = 400  # MR signal: brain and scalp above it, background below


@pytest.fixture
def mosaic(testdata: Path) -> Path:
    return require(testdata / "dcm_qa_ts_mosaic")


@pytest.fixture
def threshold_segmentation(mosaic: Path, tmp_path: Path) -> Path:
    """dcm2niix's volume thresholded: label 1 where the MR signal exceeds THRESHOLD, on dcm2niix's grid."""
    reference = nib.load(mosaic / "ref_dcm2niix" / "1.nii")
    labels = (np.asanyarray(reference.dataobj) > THRESHOLD).astype(np.uint8)
    image = nib.Nifti1Image(labels, reference.affine)
    image.set_sform(reference.affine, 1)
    image.set_qform(reference.affine, 1)
    path = tmp_path / "threshold.nii.gz"
    nib.save(image, path)
    return path


def dicom_file(mosaic: Path, encoding: str) -> Path:
    return next((mosaic / encoding).glob("*.dcm"))


def protocol_slice_centres(path: Path) -> np.ndarray:
    """Slice centres (LPS mm) from the scanner's protocol (MrPhoenixProtocol, in the CSA series header), read with
    a regular expression written here: ``sSliceArray.asSlice[i].sPosition.dSag/dCor/dTra`` (absent = 0)."""
    from nibabel.nicom import csareader

    dataset = pydicom.dcmread(path)
    protocol = csareader.get_csa_header(dataset, "series")["tags"]["MrPhoenixProtocol"]["items"][0]
    count = int(re.search(r"sSliceArray\.lSize\s*=\s*(\d+)", protocol).group(1))
    centres = np.zeros((count, 3))
    for match in re.finditer(r"sSliceArray\.asSlice\[(\d+)\]\.sPosition\.d(Sag|Cor|Tra)\s*=\s*(\S+)", protocol):
        centres[int(match.group(1)), "Sag Cor Tra".split().index(match.group(2))] = float(match.group(3))
    return centres


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_tiles_lie_where_the_scanner_protocol_puts_its_slices(mosaic: Path, encoding: str) -> None:
    path = dicom_file(mosaic, encoding)
    (frame,) = scan_folder(mosaic / encoding).select().frames
    centres = protocol_slice_centres(path)
    assert frame.is_mosaic and len(frame.tiles) == len(centres) == 35
    for tile, centre in zip(frame.tiles, centres):
        row, column = np.asarray(tile.orientation[3:]), np.asarray(tile.orientation[:3])
        # Siemens' slice position is the centre of pixel (rows/2, columns/2) of the slice.
        ours = (np.asarray(tile.position) + tile.rows / 2 * tile.pixel_spacing[0] * row
                + tile.columns / 2 * tile.pixel_spacing[1] * column)
        np.testing.assert_allclose(ours, centre, atol=1e-3, err_msg=f"tile {tile.number}")
    assert (frame.tiles[0].row_offset, frame.tiles[0].column_offset) == (0, 0)
    assert (frame.tiles[7].row_offset, frame.tiles[7].column_offset) == (64, 64)  # 6 tiles a row
    assert (frame.tiles[34].row_offset, frame.tiles[34].column_offset) == (320, 256)


def test_tiles_lie_on_dcm2niix_slices(mosaic: Path) -> None:
    """Every tile pixel centre is a voxel centre of dcm2niix's volume, on the slice of the tile's number."""
    (frame,) = scan_folder(mosaic / "dicom_explicit").select().frames
    reference = nib.load(mosaic / "ref_dcm2niix" / "1.nii")
    to_index = np.linalg.inv(reference.affine)
    for tile in frame.tiles:
        r, c = np.meshgrid([0, tile.rows - 1], [0, tile.columns - 1], indexing="ij")
        lps = (np.asarray(tile.position)[:, None] + np.outer(tile.orientation[:3], c.ravel()) * tile.pixel_spacing[1]
               + np.outer(tile.orientation[3:], r.ravel()) * tile.pixel_spacing[0])
        ras = np.diag([-1.0, -1.0, 1.0]) @ lps
        index = to_index[:3, :3] @ ras + to_index[:3, 3:4]
        np.testing.assert_allclose(index, np.round(index), atol=1e-3)
        np.testing.assert_allclose(index[2], tile.number - 1, atol=1e-3)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_label_mosaic_equals_each_tiles_thresholded_pixels(
    mosaic: Path, threshold_segmentation: Path, tmp_path: Path, encoding: str
) -> None:
    out = tmp_path / "out"
    run = run_cli("export", mosaic / encoding, threshold_segmentation, "-o", out, "-q")
    assert run.code == 0, run.stderr
    (row,) = read_manifest(out)
    assert row["mosaic_tiles"] == "35" and (row["rows"], row["columns"]) == ("384", "384")
    labels = read_png(out / row["label_png"])
    pixels = pydicom.dcmread(dicom_file(mosaic, encoding)).pixel_array
    assert labels.shape == pixels.shape == (384, 384)
    np.testing.assert_array_equal(labels, (pixels > THRESHOLD).astype(np.uint8))
    assert labels[320:, 320:].max() == 0  # the 36th, empty tile
    # Matched by content: tile t shows dcm2niix's slice t - 1 (dcm2niix stores rows bottom-up), so its label
    # tile is that slice thresholded.
    reference = np.asanyarray(nib.load(mosaic / "ref_dcm2niix" / "1.nii").dataobj)
    tiles = list(csv_rows(out / "tiles.csv"))
    assert len(tiles) == 35
    for tile in tiles:
        top, left = int(tile["tile_row_offset"]), int(tile["tile_column_offset"])
        shown = pixels[top:top + 64, left:left + 64]
        matches = [k for k in range(35) if np.array_equal(reference[:, ::-1, k].T, shown)]
        assert matches == [int(tile["tile"]) - 1], f"tile {tile['tile']} shows slices {matches}"
        np.testing.assert_array_equal(labels[top:top + 64, left:left + 64], reference[:, ::-1, matches[0]].T > THRESHOLD)
        assert (tile["labels_present"] == "1") == bool(shown.max() > THRESHOLD)


def csv_rows(path: Path):
    import csv

    with path.open(newline="", encoding="utf-8") as stream:
        yield from csv.DictReader(stream)


def test_label_tiles_match_simpleitk_on_each_tiles_plane(mosaic: Path, threshold_segmentation: Path, tmp_path: Path) -> None:
    sitk = pytest.importorskip("SimpleITK", reason="SimpleITK is the independent oracle")
    from test_simpleitk_oracle import itk_segmentation

    out = tmp_path / "out"
    assert run_cli("export", mosaic / "dicom_explicit", threshold_segmentation, "-o", out, "-q").code == 0
    labels = read_png(out / "labels" / "0000_i1.png")
    segmentation = itk_segmentation(threshold_segmentation)
    compared = 0
    for tile in csv_rows(out / "tiles.csv"):
        orientation = np.array(tile["image_orientation_patient"].split(), float)
        normal = np.cross(orientation[:3], orientation[3:])
        reference = sitk.Image(64, 64, 1, sitk.sitkUInt8)
        reference.SetOrigin([float(v) for v in tile["image_position_patient"].split()])
        row_spacing, column_spacing = (float(v) for v in tile["pixel_spacing"].split())
        reference.SetSpacing([column_spacing, row_spacing, 1.0])
        reference.SetDirection(np.column_stack([orientation[:3], orientation[3:], normal]).ravel().tolist())
        theirs = sitk.GetArrayFromImage(
            sitk.Resample(segmentation, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        )[0]
        top, left = int(tile["tile_row_offset"]), int(tile["tile_column_offset"])
        np.testing.assert_array_equal(labels[top:top + 64, left:left + 64], theirs, err_msg=f"tile {tile['tile']}")
        compared += int(theirs.any())
    assert compared >= 25


def test_split_mosaics_writes_one_image_per_tile_with_its_geometry(
    mosaic: Path, threshold_segmentation: Path, tmp_path: Path
) -> None:
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert run_cli("export", mosaic / "dicom_rle", threshold_segmentation, "-o", whole, "-q").code == 0
    run = run_cli("export", mosaic / "dicom_rle", threshold_segmentation, "-o", split, "-q", "--split-mosaics",
                  "--images")
    assert run.code == 0, run.stderr
    label_mosaic = read_png(whole / "labels" / "0000_i1.png")
    pixels = pydicom.dcmread(dicom_file(mosaic, "dicom_rle")).pixel_array
    rows = read_manifest(split)
    tiles = list(csv_rows(whole / "tiles.csv"))
    assert [row["tile"] for row in rows] == [str(n) for n in range(1, 36)]
    assert not (split / "tiles.csv").exists()
    for row, tile in zip(rows, tiles):
        top, left = int(row["tile_row_offset"]), int(row["tile_column_offset"])
        assert (row["rows"], row["columns"]) == ("64", "64")
        for key in ("image_position_patient", "image_orientation_patient", "pixel_spacing", "slice_position"):
            assert row[key] == tile[key]
        assert row["label_png"].endswith(f"_t{int(row['tile']):02d}.png")
        np.testing.assert_array_equal(read_png(split / row["label_png"]), label_mosaic[top:top + 64, left:left + 64])
        np.testing.assert_array_equal(read_png(split / row["image_png"]), pixels[top:top + 64, left:left + 64])


def test_position_order_sorts_split_tiles_along_the_normal(mosaic: Path, threshold_segmentation: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_cli("export", mosaic / "dicom_explicit", threshold_segmentation, "-o", out, "-q", "--split-mosaics",
                   "--order", "position").code == 0
    positions = [float(row["slice_position"]) for row in read_manifest(out)]
    assert positions == sorted(positions) and len(set(positions)) == 35


def test_info_reports_the_mosaic(mosaic: Path) -> None:
    text = run_cli("info", mosaic / "dicom_implicit")
    assert text.code == 0
    assert "mosaic           35 slices of 64x64 in a 6x6 grid, slices towards SP (3.6 mm apart, CSA order)" in text.stdout
    assert "35 distinct positions, no duplicates" in text.stdout  # the tiles' planes, not the one frame
    assert "slice gaps       3.600 to 3.600 mm (uniform)" in text.stdout
    report = json.loads(run_cli("info", mosaic / "dicom_implicit", "--json").stdout)
    assert report["series"][0]["mosaic"].startswith("35 slices of 64x64 in a 6x6 grid")


def test_mosaic_without_its_csa_header_is_refused(mosaic: Path, threshold_segmentation: Path, tmp_path: Path) -> None:
    dataset = pydicom.dcmread(dicom_file(mosaic, "dicom_explicit"))
    for element in list(dataset):
        if element.tag.group == 0x0029:
            del dataset[element.tag]
    folder = tmp_path / "anonymised"
    folder.mkdir()
    dataset.save_as(folder / "1.dcm")
    run = run_cli("export", folder, threshold_segmentation, "-o", tmp_path / "out")
    assert run.code == 1 and not (tmp_path / "out").exists()
    assert run.stderr.count("\n") == 1 and "1.dcm" in run.stderr and "no Siemens CSA image header" in run.stderr


def test_mosaic_whose_csa_normal_disagrees_with_its_orientation_is_refused(
    mosaic: Path, threshold_segmentation: Path, tmp_path: Path
) -> None:
    dataset = pydicom.dcmread(dicom_file(mosaic, "dicom_explicit"))
    dataset.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]  # a sagittal plane; the CSA says nearly axial
    folder = tmp_path / "turned"
    folder.mkdir()
    dataset.save_as(folder / "1.dcm")
    run = run_cli("export", folder, threshold_segmentation, "-o", tmp_path / "out")
    assert run.code == 1 and "SliceNormalVector" in run.stderr and run.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "image_type, manufacturer, expected",
    [
        (["ORIGINAL", "PRIMARY", "DIFFUSION", "VFRAME"], "UIH", "private sequence"),
        (["ORIGINAL", "PRIMARY", "M", "MOSAIC"], "UIH", "private sequence"),
        (["ORIGINAL", "PRIMARY", "M", "MOSAIC"], "SIEMENS", "no Siemens CSA image header"),
    ],
)
def test_other_multi_slice_layouts_are_refused_never_guessed(
    tmp_path: Path, image_type: list[str], manufacturer: str, expected: str
) -> None:
    specs = stack((0, 0, 0), 3, (0, 0, 2.0), orientation=AXIAL, spacing=(1.0, 1.0), rows=16, columns=16)
    dicom = tmp_path / "dicom"
    write_series(dicom, specs)
    for path in sorted(dicom.iterdir()):
        dataset = pydicom.dcmread(path)
        dataset.ImageType = image_type
        dataset.Manufacturer = manufacturer
        dataset.save_as(path)
    segmentation = tmp_path / "seg.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.uint8), np.eye(4)), segmentation)
    run = run_cli("export", dicom, segmentation, "-o", tmp_path / "out")
    assert run.code == 1 and not (tmp_path / "out").exists()
    assert run.stderr.count("\n") == 1 and expected in run.stderr and "ImageType" in run.stderr
    info = run_cli("info", dicom)
    assert expected in info.stdout  # info shows the problem instead of describing a plausible series
