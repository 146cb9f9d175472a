"""The PNG folder's tables: ``manifest.csv`` (one row per frame, in export order) and ``tiles.csv`` (one row per tile
of every Siemens mosaic frame), their columns, and the file names of the frames' images that the rows point at.

The rows are built here from a frame alone (:func:`manifest_row`, :func:`stats_columns`, :func:`tile_rows`); the
PNG folder writer adds the columns of the images it wrote (``image_png``, ``overlay_png``...). A documented seam:
tests inject disk faults by patching :func:`write_manifest`, which the writer calls module-qualified
(``manifest.write_manifest(...)``); both tables are written with :func:`segalign.files.write_csv`.

Where segments overlap, the segmentation has several label layers (see :mod:`segalign.writers.images`): the
``label_png`` column is layer 1's image, and a column ``label_png_<n>`` per further layer (:func:`layer_columns`)
comes after every other column, in both tables.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ... import files
from ...dicom import Frame, position_along
from ...dicom import Tile

MANIFEST_COLUMNS = [
    "index",
    "sop_instance_uid",
    "frame",
    "instance_number",
    "source_file",
    "label_png",
    "image_position_patient",
    "image_orientation_patient",
    "pixel_spacing",
    "rows",
    "columns",
    "slice_position",
    "labels_present",
]
#: Columns added by the options that write them (images, overlays, stats), and for Siemens mosaics: the
#: number of tiles of a label mosaic (their geometry is in tiles.csv), or which tile an image is (split_mosaics).
OPTIONAL_COLUMNS = [
    "image_png", "image_slope", "image_intercept", "overlay_png", "label_pixels", "label_areas_mm2",
    "mosaic_tiles", "tile", "tile_row_offset", "tile_column_offset",
]
#: tiles.csv: one row per tile of every mosaic frame, in export order, with the tile's own plane.
TILE_COLUMNS = [
    "index", "label_png", "tile", "tile_row_offset", "tile_column_offset", "rows", "columns",
    "image_position_patient", "image_orientation_patient", "pixel_spacing", "slice_position", "labels_present",
]


def frame_file_names(frames: list[Frame]) -> list[str]:
    """``<index>_i<InstanceNumber>[_f<frame>][_t<tile>].png`` for every frame, in export order."""
    width = max(4, len(str(len(frames) - 1)))
    names = []
    for index, frame in enumerate(frames):
        instance = f"i{frame.instance_number}" if frame.instance_number is not None else "noinstance"
        suffix = f"_f{frame.frame_number}" if frame.number_of_frames > 1 else ""
        if frame.tile is not None:
            suffix += f"_t{frame.tile.number:02d}"
        names.append(f"{index:0{width}d}_{files.safe_name(instance)}{suffix}.png")
    return names


def manifest_row(
    index: int, frame: Frame, name: str, root: Path, normal: np.ndarray, present: Sequence[int]
) -> dict[str, object]:
    """The manifest columns of frame ``index`` that depend on the frame alone: its source (``source_file``
    relative to ``root``), its label image ``labels/<name>``, its plane, its position along ``normal``, the
    ``present`` label values, and for a Siemens mosaic its number of tiles, or for one tile its place."""
    row: dict[str, object] = {
        "index": index,
        "sop_instance_uid": frame.sop_instance_uid,
        "frame": frame.frame_number,
        "instance_number": "" if frame.instance_number is None else frame.instance_number,
        "source_file": Path(os.path.relpath(frame.source_file.absolute(), root)).as_posix(),
        "label_png": f"labels/{name}",
        **plane_columns(frame),
        "rows": frame.rows,
        "columns": frame.columns,
        "slice_position": f"{position_along(frame, normal):.4f}",
        "labels_present": values_text(present),
    }
    if frame.tiles:
        row["mosaic_tiles"] = len(frame.tiles)
    if frame.tile is not None:
        row.update(tile=frame.tile.number, tile_row_offset=frame.tile.row_offset,
                   tile_column_offset=frame.tile.column_offset)
    return row


def stats_columns(frame: Frame, counts: np.ndarray, present: Sequence[int]) -> dict[str, str]:
    """``label_pixels`` and ``label_areas_mm2`` (``value:count`` pairs) of a frame's ``present`` labels, from their
    pixel ``counts`` (indexed by value) and the frame's pixel spacing."""
    area = frame.pixel_spacing[0] * frame.pixel_spacing[1]
    return {
        "label_pixels": " ".join(f"{v}:{int(counts[v])}" for v in present),
        "label_areas_mm2": " ".join(f"{v}:{counts[v] * area:.2f}" for v in present),
    }


def plane_columns(plane: Frame | Tile) -> dict[str, str]:
    """The manifest's (and tiles.csv's) geometry columns of a frame or tile, as its DICOM tags would spell them."""
    return {
        "image_position_patient": " ".join(f"{v:.10g}" for v in plane.position),
        "image_orientation_patient": " ".join(f"{v:.10g}" for v in plane.orientation),
        "pixel_spacing": " ".join(f"{v:.10g}" for v in plane.pixel_spacing),
    }


def tile_rows(index: int, frame: Frame, name: str, normal: np.ndarray, present: list[list[int]]) -> list[dict]:
    """The rows of tiles.csv for one mosaic frame (none for an ordinary frame); ``present``: each tile's labels."""
    return [
        {
            "index": index,
            "label_png": f"labels/{name}",
            "tile": tile.number,
            "tile_row_offset": tile.row_offset,
            "tile_column_offset": tile.column_offset,
            "rows": tile.rows,
            "columns": tile.columns,
            **plane_columns(tile),
            "slice_position": f"{float(np.dot(tile.position, normal)):.4f}",
            "labels_present": values_text(values),
        }
        for tile, values in zip(frame.tiles, present)
    ]


def layer_columns(folders: Sequence[str], name: str) -> dict[str, str]:
    """``label_png_<n>``: the label image of layer ``n`` (2, 3...) of a frame, from the layers' folders
    (``layers/<n>``) and the frame's file name; none for a segmentation of one layer."""
    return {f"label_png_{number}": f"{folder}/{name}" for number, folder in enumerate(folders, start=2)}


def extra_layer_columns(rows: Sequence[dict]) -> list[str]:
    """The ``label_png_<n>`` columns the rows have, by layer number."""
    present = {column for row in rows for column in row if column.startswith("label_png_")}
    return sorted(present, key=lambda column: int(column.rsplit("_", 1)[1]))


def values_text(values: Sequence[int]) -> str:
    """Label values as the tables spell them: ascending as given, separated by spaces (``"1 4 17"``)."""
    return " ".join(str(value) for value in values)


def write_manifest(path: Path, rows: list[dict]) -> None:
    """manifest.csv: the fixed columns, then the optional ones any row has, then the further layers' label images."""
    present = {column for row in rows for column in row}
    optional = [column for column in OPTIONAL_COLUMNS if column in present]
    files.write_csv(path, MANIFEST_COLUMNS + optional + extra_layer_columns(rows), rows)


def write_tiles(path: Path, rows: list[dict]) -> None:
    """tiles.csv, from the :func:`tile_rows` of every mosaic frame in export order (with the further layers' label
    images, where segments overlap)."""
    files.write_csv(path, TILE_COLUMNS + extra_layer_columns(rows), rows)
