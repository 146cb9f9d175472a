"""Direct, table-driven tests of the file helpers (:mod:`segalign.files`) and of the PNG folder's tables
(:mod:`segalign.writers.images.manifest`): names made from untrusted text, JSON and CSV files, manifest rows."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from segalign import files
from segalign.dicom import Frame, Tile
from segalign.errors import SegAlignError
from segalign.writers.images import manifest

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
NORMAL = np.array([0.0, 0.0, 1.0])


# --- names ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, fallback, expected",
    [
        ("liver", "unnamed", "liver"),
        ("kidney left", "unnamed", "kidney_left"),  # a run of other characters becomes one underscore
        ("a / b \\ c", "unnamed", "a_b_c"),
        ("../../etc/passwd", "unnamed", "etc_passwd"),  # no way out of the folder, no leading dot
        (".hidden", "unnamed", "hidden"),
        ("  spaced  ", "unnamed", "spaced"),
        ("name.", "unnamed", "name"),
        ("v1.2-final_B", "unnamed", "v1.2-final_B"),  # letters, digits and ._- are kept as they are
        ("Leber (groß)", "unnamed", "Leber_gro"),  # and no trailing underscore
        ("bad \udcff byte", "unnamed", "bad_byte"),  # a file name that was not UTF-8 (surrogate escape)
        ("x" * 100, "unnamed", "x" * 80),  # at most 80 characters
        ("", "unnamed", "unnamed"),
        ("///", "unnamed", "unnamed"),  # nothing left: the fallback
        ("ÄÖÜ", "job", "job"),
        ("..", "study", "study"),
    ],
)
def test_safe_name(text: str, fallback: str, expected: str) -> None:
    assert files.safe_name(text, fallback) == expected


@pytest.mark.parametrize(
    "names, expected",
    [
        ([], []),
        (["liver", "spleen"], ["liver", "spleen"]),
        (["liver", "liver"], ["liver", "liver_2"]),
        (["Liver", "liver", "LIVER"], ["Liver", "liver_2", "LIVER_3"]),  # unique without regard to case
        (["a b", "a_b", "a?b"], ["a_b", "a_b_2", "a_b_3"]),  # names that differ only in what safe_name replaces
        (["liver", "liver_2", "liver"], ["liver", "liver_2", "liver_3"]),  # a suffix never repeats a given name
        (["", "", "/"], ["unnamed", "unnamed_2", "unnamed_3"]),
    ],
)
def test_unique_safe_names(names: list[str], expected: list[str]) -> None:
    result = files.unique_safe_names(names)
    assert result == expected
    assert len({name.lower() for name in result}) == len(result)


# --- JSON and CSV --------------------------------------------------------------------------------------------------


def test_write_json_is_indented_and_refuses_what_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "labels.json"
    files.write_json(path, [{"value": 1, "name": "liver"}])
    assert path.read_text(encoding="utf-8") == '[\n  {\n    "value": 1,\n    "name": "liver"\n  }\n]\n'
    for bad in (float("nan"), float("inf")):
        with pytest.raises(SegAlignError, match="labels.json cannot be written: a value is not a finite number"):
            files.write_json(path, {"x": bad})


def test_write_csv_leaves_missing_columns_empty_and_escapes_undecodable_names(tmp_path: Path) -> None:
    """Valid UTF-8 whatever the names hold: a byte that was not UTF-8 (a surrogate escape) as \\xNN."""
    path = tmp_path / "table.csv"
    files.write_csv(path, ["a", "b"], [{"a": 1, "b": "x,y"}, {"a": "bad\udcff é"}])
    assert path.read_bytes() == b'a,b\r\n1,"x,y"\r\nbad\\xff \xc3\xa9,\r\n'
    path.read_bytes().decode("utf-8")


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"index,name\r\n0,x\r\n", True),
        (b"index,name\n", True),
        (b"index,name,extra\n", False),  # another table
        (b"name,index\n", False),
        (b"", False),
        (b"\xff\xfe not text", False),
    ],
)
def test_has_csv_header(tmp_path: Path, content: bytes, expected: bool) -> None:
    path = tmp_path / "table.csv"
    path.write_bytes(content)
    assert files.has_csv_header(path, ["index", "name"]) is expected


def test_has_csv_header_of_what_is_not_a_file(tmp_path: Path) -> None:
    assert not files.has_csv_header(tmp_path / "missing.csv", ["index"])
    assert not files.has_csv_header(tmp_path, ["index"])  # a folder


# --- manifest rows -------------------------------------------------------------------------------------------------


def _tile(number: int, row: int, column: int, z: float) -> Tile:
    return Tile(number, row, column, 2, 3, (0.0, 0.0, z), AXIAL, (0.5, 0.25), (4, 6))


def _frame(**changes) -> Frame:
    values = dict(
        source_file=Path("/data/dicom/study/IM0001.dcm"), frame_number=1, sop_instance_uid="1.2.3.1",
        instance_number=7, position=(1.5, -2.0, 30.25), orientation=AXIAL, pixel_spacing=(0.7, 0.75), rows=4,
        columns=6,
    )
    values.update(changes)
    return Frame(**values)


PLAIN = {
    "index": 3, "sop_instance_uid": "1.2.3.1", "frame": 1, "instance_number": 7, "source_file": "study/IM0001.dcm",
    "label_png": "labels/0003_i7.png", "image_position_patient": "1.5 -2 30.25",
    "image_orientation_patient": "1 0 0 0 1 0", "pixel_spacing": "0.7 0.75", "rows": 4, "columns": 6,
    "slice_position": "30.2500", "labels_present": "1 5",
}


@pytest.mark.parametrize(
    "frame, present, expected",
    [
        (_frame(), [1, 5], PLAIN),
        (_frame(instance_number=None), [1, 5], {**PLAIN, "instance_number": ""}),
        (_frame(), [], {**PLAIN, "labels_present": ""}),
        (_frame(frame_number=3, number_of_frames=5), [1, 5], {**PLAIN, "frame": 3}),
        (_frame(position=(0.1 + 0.2, 1e-7, -12.345678901234)), [1, 5],
         {**PLAIN, "image_position_patient": "0.3 1e-07 -12.3456789", "slice_position": "-12.3457"}),
        (_frame(source_file=Path("/data/dicom/other/IM2.dcm")), [1, 5], {**PLAIN, "source_file": "other/IM2.dcm"}),
        # a mosaic: how many tiles (each in tiles.csv), and its slice position is its first tile's
        (_frame(tiles=(_tile(1, 0, 0, -4.0), _tile(2, 0, 3, -2.0))), [1, 5],
         {**PLAIN, "slice_position": "-4.0000", "mosaic_tiles": 2}),
        # one tile of a split mosaic: which tile, and where it lies in its mosaic
        (_frame(tile=_tile(4, 2, 3, 8.0)), [1, 5],
         {**PLAIN, "tile": 4, "tile_row_offset": 2, "tile_column_offset": 3}),
    ],
    ids=["plain", "no-instance-number", "no-label", "multi-frame", "formatting", "other-folder", "mosaic", "tile"],
)
def test_manifest_row(frame: Frame, present: list[int], expected: dict) -> None:
    row = manifest.manifest_row(3, frame, "0003_i7.png", Path("/data/dicom"), NORMAL, present)
    assert row == expected
    assert set(row) <= set(manifest.MANIFEST_COLUMNS) | set(manifest.OPTIONAL_COLUMNS)


@pytest.mark.parametrize(
    "frames, expected",
    [
        ([_frame()], ["0000_i7.png"]),
        ([_frame(instance_number=None), _frame(instance_number=-2)], ["0000_noinstance.png", "0001_i-2.png"]),
        ([_frame(frame_number=12, number_of_frames=20)], ["0000_i7_f12.png"]),
        ([_frame(tile=_tile(3, 0, 0, 0.0))], ["0000_i7_t03.png"]),
        ([_frame()] * 10001, None),  # more than 10,000 frames: five digits
    ],
    ids=["plain", "instance-numbers", "multi-frame", "tile", "wide"],
)
def test_frame_file_names(frames: list[Frame], expected: list[str] | None) -> None:
    names = manifest.frame_file_names(frames)
    if expected is None:
        assert names[0] == "00000_i7.png" and names[-1] == "10000_i7.png"
    else:
        assert names == expected


def test_stats_and_tile_rows() -> None:
    counts = np.array([0, 3, 0, 0, 0, 10])
    assert manifest.stats_columns(_frame(), counts, [1, 5]) == {
        "label_pixels": "1:3 5:10", "label_areas_mm2": "1:1.57 5:5.25"}  # 0.7 x 0.75 mm pixels
    mosaic = _frame(tiles=(_tile(1, 0, 0, -4.0), _tile(2, 0, 3, -2.0)))
    rows = manifest.tile_rows(3, mosaic, "0003_i7.png", NORMAL, [[1], []])
    assert rows == [
        {"index": 3, "label_png": "labels/0003_i7.png", "tile": 1, "tile_row_offset": 0, "tile_column_offset": 0,
         "rows": 2, "columns": 3, "image_position_patient": "0 0 -4", "image_orientation_patient": "1 0 0 0 1 0",
         "pixel_spacing": "0.5 0.25", "slice_position": "-4.0000", "labels_present": "1"},
        {"index": 3, "label_png": "labels/0003_i7.png", "tile": 2, "tile_row_offset": 0, "tile_column_offset": 3,
         "rows": 2, "columns": 3, "image_position_patient": "0 0 -2", "image_orientation_patient": "1 0 0 0 1 0",
         "pixel_spacing": "0.5 0.25", "slice_position": "-2.0000", "labels_present": ""},
    ]
    assert manifest.tile_rows(3, _frame(), "0003_i7.png", NORMAL, []) == []
    assert set(rows[0]) == set(manifest.TILE_COLUMNS)


def test_manifest_has_the_optional_columns_a_row_has_in_their_order(tmp_path: Path) -> None:
    path = tmp_path / "manifest.csv"
    base = {column: "" for column in manifest.MANIFEST_COLUMNS}
    manifest.write_manifest(path, [{**base, "overlay_png": "o.png"}, {**base, "label_pixels": "1:2", "tile": 1}])
    with path.open(newline="") as stream:
        header = next(csv.reader(stream))
    assert header == manifest.MANIFEST_COLUMNS + ["overlay_png", "label_pixels", "tile"]
