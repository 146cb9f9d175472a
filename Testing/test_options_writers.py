"""The export core's parts: ExportOptions (one frozen value for every front end), the writer protocol, and the
DICOM SEG writer's own encoders (RLE, CIELab, segment codes), each against an independent truth."""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import numpy as np
import pydicom
import pytest

from conftest import leftovers, read_manifest, run_cli
from phantoms import small_phantom, stack_affine, write_segmentation
from segalign import export_segmentation, scan_folder
from segalign.cli import build_parser, export_options
from segalign.errors import SegAlignError
from segalign.options import DicomSegOptions, ExportOptions, OverlayOptions, SegmentationType
from segalign.segmentation import Segmentation
from segalign.dicom import Window
from segalign.readers import load_segmentation, sniff
from segalign.synthetic import stack, write_series
from segalign.writers import PngFolderWriter, writers_for
from segalign.writers import rle
from segalign.writers.dicom_seg import DicomSegWriter
from segalign.writers.segment_codes import GENERIC, codes_for, rgb_to_dicom_lab, totalsegmentator_codes


# ------------------------------------------------------------------------------------------ ExportOptions


def test_options_are_frozen_and_pickle():
    options = ExportOptions(masks=True, overlays=OverlayOptions("abdomen", 0.6, True), dicom_seg=DicomSegOptions("labelmap"))
    with pytest.raises(AttributeError):
        options.masks = False  # type: ignore[misc]
    copy = pickle.loads(pickle.dumps(options))
    assert copy == options and hash(copy) == hash(options)
    assert copy.overlays.window == Window(40.0, 400.0)


def test_options_round_trip_through_json():
    options = ExportOptions(
        order="position", stats=True, overlays=OverlayOptions((-600, 1500)), dicom_seg=DicomSegOptions("binary", "mine", 7)
    )
    recorded = json.loads(json.dumps(options.as_dict()))
    assert recorded["dicom_seg"] == {"segmentation_type": "binary", "series_description": "mine", "series_number": 7}
    assert recorded["overlays"]["window"] == [-600.0, 1500.0]
    assert ExportOptions.from_dict(recorded) == options
    with pytest.raises(SegAlignError, match="unknown export options: colour"):
        ExportOptions.from_dict({**recorded, "colour": 1})


def test_enum_values_are_taken_as_strings_or_members():
    assert DicomSegOptions("LABELMAP") == DicomSegOptions(SegmentationType.LABELMAP)
    assert ExportOptions(dicom_seg="labelmap").dicom_seg == DicomSegOptions("labelmap")
    assert ExportOptions(overlays=True).overlays == OverlayOptions()
    assert ExportOptions(dicom_seg=False).dicom_seg is None
    with pytest.raises(SegAlignError, match="segmentation_type must be one of 'binary', 'labelmap'"):
        DicomSegOptions("fractional")
    with pytest.raises(SegAlignError, match="order must be"):
        ExportOptions(order="random")
    with pytest.raises(SegAlignError, match="alpha must be between 0 and 1"):
        OverlayOptions(alpha=1.5)


def test_the_cli_flags_give_the_options():
    args = build_parser().parse_args([
        "export", "d", "s", "-o", "o", "--masks", "--overlays", "--window", "lung", "--alpha", "0.25", "--outline",
        "--images", "--dicom-seg", "--dicom-seg-type", "labelmap", "--order", "position",
    ])
    from_cli = export_options(args)
    assert from_cli == ExportOptions(
        order="position", masks=True, images=True, overlays=OverlayOptions("lung", 0.25, True),
        dicom_seg=DicomSegOptions("labelmap"),
    )
    defaults = export_options(build_parser().parse_args(["export", "d", "s", "-o", "o"]))
    assert defaults == ExportOptions()




def test_writers_follow_the_options():
    assert [type(w) for w in writers_for(ExportOptions())] == [PngFolderWriter]
    assert [type(w) for w in writers_for(ExportOptions(dicom_seg=DicomSegOptions()))] == [PngFolderWriter, DicomSegWriter]


def test_export_json_records_options_and_outputs(tmp_path: Path):
    dicom, seg = _small_case(tmp_path)
    options = ExportOptions(masks=True, dicom_seg=DicomSegOptions("labelmap"))
    result = export_segmentation(scan_folder(dicom).select(), load_segmentation(seg), tmp_path / "out", options)
    provenance = json.loads((tmp_path / "out" / "export.json").read_text())
    assert provenance["outputs"] == {"dicom_seg": "seg.dcm"} == result.outputs
    assert ExportOptions.from_dict(provenance["options"]) == options
    plain = export_segmentation(scan_folder(dicom).select(), load_segmentation(seg), tmp_path / "plain")
    assert plain.outputs == {} and json.loads((tmp_path / "plain" / "export.json").read_text())["outputs"] == {}


# ------------------------------------------------------------------------------------------ readers


def test_a_nifti_under_another_name_is_recognised_and_explained(tmp_path: Path):
    dicom, seg = _small_case(tmp_path)
    renamed = tmp_path / "segmentation.data"
    renamed.write_bytes(seg.read_bytes())
    with pytest.raises(SegAlignError, match="holds a NIfTI image, but its name does not end in .nii or .nii.gz"):
        sniff(renamed)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(SegAlignError, match="not a format SegAlign reads; give a NIfTI label map"):
        load_segmentation(text)


# ------------------------------------------------------------------------------------------ RLE


def _decode(fragment: bytes, frame: np.ndarray) -> np.ndarray:
    """pydicom's own RLE decoder (independent of SegAlign's encoder), as little-endian pixels."""
    from pydicom.pixels.decoders.rle import _rle_decode_frame

    data = _rle_decode_frame(fragment, frame.shape[0], frame.shape[1], 1, frame.dtype.itemsize * 8)
    return np.frombuffer(data, "<u2" if frame.dtype.itemsize == 2 else np.uint8).reshape(frame.shape)


@pytest.mark.parametrize("seed", range(4))
def test_rle_round_trips_through_pydicoms_decoder(seed: int):
    rng = np.random.default_rng(seed)
    for trial in range(150):
        rows, columns = rng.integers(1, 300 if trial % 10 == 0 else 40, 2)
        kind = trial % 4
        if kind == 0:  # noise of few values: many literals and short runs
            frame = rng.integers(0, 3, (rows, columns)).astype(np.uint8)
        elif kind == 1:  # rows of one value: long runs, cut at 128 and at the row end
            frame = np.repeat(rng.integers(0, 256, (rows, 1)), columns, axis=1).astype(np.uint8)
        elif kind == 2:  # 16-bit values: two byte planes
            frame = rng.integers(0, 700, (rows, columns)).astype(np.uint16)
        else:  # blobs, as label maps are
            frame = np.zeros((rows, columns), np.uint8)
            frame[rows // 4: rows // 2 + 1, columns // 3: columns - 1] = rng.integers(1, 255)
        fragment = rle.encode_frame(frame)
        assert len(fragment) % 2 == 0
        np.testing.assert_array_equal(_decode(fragment, frame), frame)


def test_rle_packet_boundaries():
    for frame in (
        np.array([[5] * 129 + [6] * 257 + [7]], np.uint8),  # runs of 129 and 257: pieces of 128 and a single one
        np.array([[1, 2] * 200], np.uint8),  # 400 literals: pieces of 128
        np.zeros((3, 1), np.uint8),
        np.array([[255, 255], [255, 0]], np.uint8),
    ):
        np.testing.assert_array_equal(_decode(rle.encode_frame(frame), frame), frame)


def test_rle_is_compact_for_label_maps():
    frame = np.zeros((512, 512), np.uint8)
    frame[100:300, 50:400] = 3
    assert len(rle.encode_frame(frame)) < 512 * 12  # a few packets per row


# ------------------------------------------------------------------------------------------ segment semantics


def test_cielab_matches_published_values():
    # sRGB -> CIELab (D65): white (100, 0, 0), red (53.24, 80.09, 67.20), mid grey 119 (50.0, 0, 0).
    def expected(l_star: float, a: float, b: float) -> tuple[int, int, int]:
        return round(l_star * 65535 / 100), round((a + 128) * 65535 / 255), round((b + 128) * 65535 / 255)

    for rgb, lab in [((255, 255, 255), (100, 0, 0)), ((255, 0, 0), (53.24, 80.09, 67.20)), ((119, 119, 119), (50.03, 0, 0))]:
        got = rgb_to_dicom_lab(rgb)
        assert all(abs(g - e) <= 40 for g, e in zip(got, expected(*lab))), (rgb, got, expected(*lab))
    assert rgb_to_dicom_lab((0, 0, 0)) == (0, 32896, 32896)


def test_totalsegmentator_classes_have_snomed_codes():
    table = totalsegmentator_codes()
    from segalign.segmentation import builtin_table

    names = [label.name for label in builtin_table("totalsegmentator").values()]
    assert len(names) == 117 and all(name in table for name in names)
    left = codes_for("kidney_left")
    assert (left.type.value, left.type.meaning, left.modifier.meaning) == ("64033007", "Kidney", "Left")
    assert codes_for("liver").category.meaning == "Anatomical Structure"
    assert codes_for("my own structure") == GENERIC
    assert all(len(code.meaning) <= 64 for codes in table.values() for code in (codes.category, codes.type))


# ------------------------------------------------------------------------------------------ DICOM SEG edge cases


def _small_case(tmp_path: Path, rows: int = 40, columns: int = 40, slices: int = 6, **series):
    """A small axial series and the small phantom's segmentation on a grid like it."""
    dicom = tmp_path / "dicom"
    phantom = small_phantom()
    specs = stack((-rows / 2, -columns / 2, -slices), slices, (0.0, 0.0, 2.0), rows=rows, columns=columns)
    write_series(dicom, specs, phantom, **series)
    affine, shape = stack_affine(specs)
    seg = write_segmentation(tmp_path / "seg.nii.gz", phantom, affine, shape)
    return dicom, seg


def _seg_labels_by_frame(path: Path, table: dict[str, int]) -> dict[str, np.ndarray]:
    """Rebuild every referenced frame's label image from a SEG with pydicom alone."""
    seg = pydicom.dcmread(path)
    pixels = seg.pixel_array.reshape(int(seg.NumberOfFrames), seg.Rows, seg.Columns)
    value_of = {int(s.SegmentNumber): table[s.SegmentLabel] for s in seg.SegmentSequence if int(s.SegmentNumber)}
    rebuilt: dict[str, np.ndarray] = {}
    for frame, item in zip(pixels, seg.PerFrameFunctionalGroupsSequence):
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        labels = rebuilt.setdefault(uid, np.zeros((seg.Rows, seg.Columns), np.uint16))
        if seg.SegmentationType == "BINARY":
            number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
            labels[frame.astype(bool)] = value_of[number]
        else:
            for number, value in value_of.items():
                labels[frame == number] = value
    return rebuilt


@pytest.mark.parametrize("kind", ["binary", "labelmap"])
def test_frames_whose_bits_do_not_fill_bytes(tmp_path: Path, kind: str):
    """5 x 7 frames: 35 bits each, so BINARY frames start mid-byte and the packed bits must run on."""
    dicom, seg = _small_case(tmp_path, rows=5, columns=7, slices=5)
    out = tmp_path / "out"
    result = run_cli("export", dicom, seg, "-o", out, "--dicom-seg", "--dicom-seg-type", kind, "-q")
    assert result.code == 0, result.stderr
    table = {e["name"]: e["value"] for e in json.loads((out / "labels.json").read_text())}
    rebuilt = _seg_labels_by_frame(out / "seg.dcm", table)
    rows = read_manifest(out)
    from conftest import read_png

    assert any(read_png(out / row["label_png"]).any() for row in rows)
    for row in rows:
        expected = read_png(out / row["label_png"])
        got = rebuilt.get(row["sop_instance_uid"], np.zeros_like(expected))
        np.testing.assert_array_equal(got, expected)


def test_labels_on_no_frame_get_no_segment(tmp_path: Path):
    """A label outside the series' field of view has no segment, and the LABELMAP is numbered without it."""
    dicom, seg = _small_case(tmp_path, slices=4)
    segmentation = load_segmentation(seg)
    # One more slice of the grid, beyond the last frame (the grid's third axis is the frames'), holding label 200.
    labels = np.concatenate([segmentation.labels, np.zeros_like(segmentation.labels[..., :1])], axis=2)
    labels[3, 3, -1] = 200
    import nibabel as nib

    nib.save(nib.Nifti1Image(labels, segmentation.affine), tmp_path / "far.nii.gz")
    out = tmp_path / "out"
    result = export_segmentation(
        scan_folder(dicom).select(), load_segmentation(tmp_path / "far.nii.gz"), out,
        ExportOptions(dicom_seg=DicomSegOptions("labelmap")),
    )
    assert 200 in load_segmentation(tmp_path / "far.nii.gz").values and 200 not in result.labels_found
    seg_file = pydicom.dcmread(out / "seg.dcm")
    assert [int(s.SegmentNumber) for s in seg_file.SegmentSequence] == list(range(0, len(result.labels_found) + 1))
    table = {e["name"]: e["value"] for e in json.loads((out / "labels.json").read_text())}
    rebuilt = _seg_labels_by_frame(out / "seg.dcm", table)
    from conftest import read_png

    for row in read_manifest(out):
        expected = read_png(out / row["label_png"])
        np.testing.assert_array_equal(rebuilt.get(row["sop_instance_uid"], np.zeros_like(expected)), expected)


def test_a_mosaic_is_refused_for_a_seg_before_anything_is_written(testdata: Path, tmp_path: Path):
    from conftest import require

    mosaic = require(testdata / "dcm_qa_ts_mosaic")
    files = sorted(p for p in mosaic.rglob("*") if p.is_file() and p.suffix.lower() in (".dcm", ".ima", ""))
    if not files:
        pytest.skip(f"no DICOM files under {mosaic}")
    series = scan_folder(mosaic).series
    mosaics = [s for s in series if any(f.tiles for f in s.frames)]
    if not mosaics:
        pytest.skip(f"no Siemens mosaic series found under {mosaic}")
    writer = DicomSegWriter(DicomSegOptions())
    with pytest.raises(SegAlignError, match="Siemens mosaic"):
        writer.check(mosaics[0], mosaics[0].frames, ExportOptions(),
                     Segmentation(np.ones((2, 2, 2), np.uint8), np.eye(4), {}, None))


def test_repeated_sop_instance_uids_are_refused_for_a_seg(tmp_path: Path):
    dicom, seg = _small_case(tmp_path, slices=3)
    files = sorted(dicom.iterdir())
    first = pydicom.dcmread(files[0])
    second = pydicom.dcmread(files[1])
    second.SOPInstanceUID = first.SOPInstanceUID
    second.file_meta.MediaStorageSOPInstanceUID = first.SOPInstanceUID
    second.save_as(files[1])
    out = tmp_path / "out"
    result = run_cli("export", dicom, seg, "-o", out, "--dicom-seg")
    assert result.code == 1 and "belongs to 2 files" in result.stderr and "DICOM SEG" in result.stderr
    assert not out.exists() and leftovers(tmp_path) == []


def test_the_seg_writer_needs_no_highdicom():
    """The SEG writer needs pydicom and numpy only: it imports without highdicom."""
    import subprocess
    import sys

    code = (
        "import sys\nclass B:\n  def find_spec(self, n, p=None, t=None):\n"
        "    if n.split('.')[0] == 'highdicom': raise ImportError(n)\nsys.meta_path.insert(0, B())\n"
        "import segalign.writers.dicom_seg\nprint('ok')\n"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "ok"


def test_parser_accepts_only_known_seg_types():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["export", "d", "s", "-o", "o", "--dicom-seg-type", "fractional"])
    assert isinstance(build_parser(), argparse.ArgumentParser)


def test_rtstruct_option_from_every_front_end():
    from segalign.options import RtStructOptions
    from segalign.writers import RtStructWriter

    args = build_parser().parse_args(["export", "d", "s", "-o", "o", "--rtstruct"])
    assert export_options(args).rtstruct == RtStructOptions()
    options = ExportOptions(rtstruct=True)
    assert ExportOptions.from_dict(json.loads(json.dumps(options.as_dict()))) == options
    assert [type(w) for w in writers_for(options)] == [PngFolderWriter, RtStructWriter]
    with pytest.raises(SegAlignError, match="structure_set_label must be text, not empty"):
        RtStructOptions(structure_set_label=" ")


def test_option_values_are_checked_when_made():
    assert DicomSegOptions(series_number="7").series_number == 7
    for bad in ("abc", True, -1, 2**31, 1.5):
        with pytest.raises(SegAlignError, match="series_number"):
            DicomSegOptions(series_number=bad)
    with pytest.raises(SegAlignError, match="series_description must be text"):
        DicomSegOptions(series_description=5)
    with pytest.raises(SegAlignError, match="export options cannot be read"):
        ExportOptions.from_dict({"dicom_seg": {"segmentation_type": "binary", "colour": 1}})
    args = build_parser().parse_args(["export", "d", "s", "-o", "o", "--dicom-seg-type", "labelmap"])
    assert export_options(args).dicom_seg == DicomSegOptions("labelmap")  # the type implies the SEG


def test_names_with_backslashes_and_long_multibyte_text_stay_one_valid_value():
    from segalign.writers.dicom_base import limit

    assert limit("kidney\\left", 64) == "kidney/left"
    long = "Ä" * 40 + "x" * 30
    cut = limit(long, 64)
    assert len(cut.encode("utf-8")) <= 64 and long.startswith(cut)


def _strip(folder: Path, change) -> None:
    """Rewrite every file of ``folder`` after ``change(dataset, index)``."""
    for index, path in enumerate(sorted(folder.iterdir())):
        dataset = pydicom.dcmread(path)
        change(dataset, index)
        dataset.save_as(path)


@pytest.mark.parametrize("variant", ["uneven-no-thickness", "spacing-per-frame", "one-slice-no-thickness"])
def test_every_seg_has_the_slice_thickness_readers_need(tmp_path: Path, variant: str):
    """SliceThickness (Type 1C in the pixel measures, required by highdicom and dcmqi) is written even when the
    source has none or the pixel spacing differs between frames; where SegAlign had to choose it, it says so."""
    highdicom = pytest.importorskip("highdicom", reason="highdicom reads the SEG back")
    dicom, seg = _small_case(tmp_path, slices=1 if variant.startswith("one") else 5)

    def change(dataset, index):
        if variant != "spacing-per-frame":
            del dataset.SliceThickness
        if variant == "uneven-no-thickness" and index >= 3:  # gaps 2, 2, 2, 4 mm
            position = [float(v) for v in dataset.ImagePositionPatient]
            dataset.ImagePositionPatient = [position[0], position[1], position[2] + 2.0]
        if variant == "spacing-per-frame" and index == 2:
            dataset.PixelSpacing = [1.0, 1.0 + 1e-3]

    _strip(dicom, change)
    out = tmp_path / "out"
    result = run_cli("export", dicom, seg, "-o", out, "--dicom-seg")
    assert result.code == 0, result.stderr
    dataset = pydicom.dcmread(out / "seg.dcm")
    measures = [item.PixelMeasuresSequence[0] for item in dataset.PerFrameFunctionalGroupsSequence
                if "PixelMeasuresSequence" in item]
    measures += [dataset.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]] if not measures else []
    assert measures and all(float(m.SliceThickness) > 0 for m in measures)
    highdicom.seg.segread(out / "seg.dcm")  # refuses pixel measures without SliceThickness
    warnings = json.loads((out / "export.json").read_text())["warnings"]
    if variant != "spacing-per-frame":
        assert any("no SliceThickness" in w for w in warnings), warnings


def test_a_backslash_in_a_name_does_not_split_the_value(tmp_path: Path):
    dicom, seg = _small_case(tmp_path, slices=4)
    table = tmp_path / "labels.csv"
    table.write_text("value,name\n1,kidney\\left\n2,liver\n7,Leber – Ä\n", encoding="utf-8")
    out = tmp_path / "out"
    result = run_cli("export", dicom, seg, "-o", out, "--dicom-seg", "--rtstruct", "--labels", table)
    assert result.code == 0, result.stderr
    seg_file = pydicom.dcmread(out / "seg.dcm")
    assert {str(s.SegmentLabel) for s in seg_file.SegmentSequence} >= {"kidney/left", "Leber – Ä"}
    rt = pydicom.dcmread(out / "rtstruct.dcm")
    assert {str(r.ROIName) for r in rt.StructureSetROISequence} >= {"kidney/left", "Leber – Ä"}
