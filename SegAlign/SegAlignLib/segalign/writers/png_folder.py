"""The PNG folder: label images, masks, images and overlays per frame, manifest.csv, tiles.csv, labels.json, and
the index.html preview page.

Layout (see :mod:`segalign.export` for the whole export folder)::

    labels/<index>_i<InstanceNumber>[_f<frame>].png   one label image per frame, Rows x Columns, like pixel_array
    masks/<segment>/<same name>.png                   (options.masks) one 1-bit image per segment per frame
    images/<same name>.png                            (options.images) the frame's stored values, 16-bit
    overlays/<same name>.png                          (options.overlays) the frame windowed, labels drawn on it
    labels.json                                       value, name, colour (and voxel and frame counts) per label
    tiles.csv                                         for Siemens mosaics: where each tile of a label mosaic lies
    manifest.csv                                      one row per frame in export order; written last
    index.html                                        (options.overlays) the preview page
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from ..dicom import Frame, Series, position_along
from ..errors import SegAlignError
from ..dicom import FramePixels, PixelReader, Tile, range_window
from ..options import ExportOptions
from ..png import write_gray
from ..preview import frame_script, write_preview
from ..render import color_lookup, overlay
from .base import ExportContext, ExportSummary, FrameLabels

#: zlib level for the RGB overlays (written by Pillow): a low level is much faster and nearly as small.
PNG_COMPRESS_LEVEL = 1

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
#: The entries of an export folder this writer may write (see :data:`segalign.export.EXPORT_ENTRIES`).
ENTRIES = frozenset({
    "labels/", "masks/", "overlays/", "images/", "viewer/", "index.html", "manifest.csv", "labels.json", "tiles.csv",
})


class PngFolderWriter:
    """Writes the PNG folder (always part of an export: the label images and the manifest are its core)."""

    def __init__(self) -> None:
        self.context: ExportContext | None = None

    @property
    def needs_pixels(self) -> bool:
        options = self.context.options if self.context is not None else None
        return bool(options is not None and (options.overlays is not None or options.images))

    def check(self, series: Series, frames: Sequence[Frame], options: ExportOptions) -> None:
        """Every series can be written as PNGs: nothing to refuse."""

    def begin(self, context: ExportContext) -> None:
        self.context = context
        options, segmentation = context.options, context.segmentation
        self.names = frame_file_names(list(context.frames))
        self.segments = [segmentation.label_table[v] for v in segmentation.values if v in segmentation.label_table]
        self.mask_folders = unique_safe_names([label.name for label in self.segments]) if options.masks else []
        overlays = options.overlays
        self.style = overlays  #: how overlays look (OverlayOptions), or None for no overlays
        self.preview = overlays is not None and overlays.preview  #: index.html and viewer/ are written
        largest = max([*segmentation.label_table, *segmentation.values, 0])
        self.lookup = color_lookup(segmentation.label_table, largest) if overlays else None
        self.rows: list[dict | None] = [None] * len(context.frames)
        self.tile_rows: list[list[dict]] = [[] for _ in context.frames]
        self.areas: list[dict[int, int] | None] = [None] * len(context.frames)  #: label -> pixels, per frame
        self.multiframe: list[bool] = [False] * len(context.frames)
        self.viewer: list[dict | None] = [None] * len(context.frames)  #: the page's data of each frame
        root = context.folder
        (root / "labels").mkdir()
        for folder in self.mask_folders:
            (root / "masks" / folder).mkdir(parents=True)
        if overlays:
            (root / "overlays").mkdir()
        if self.preview:
            (root / "viewer").mkdir()
        if options.images:
            (root / "images").mkdir()

    def add(self, item: FrameLabels) -> None:
        context = self.context
        assert context is not None
        options, root, name, frame = context.options, context.folder, self.names[item.index], item.frame
        write_png(root / "labels" / name, item.labels)
        for label, folder in zip(self.segments, self.mask_folders):
            write_png(root / "masks" / folder / name, item.labels == label.value)
        columns: dict[str, object] = {"labels_present": " ".join(str(value) for value in item.present)}
        if item.pixels is not None:
            if options.images:
                stored, slope, intercept = image_values(item.pixels, frame)
                write_png(root / "images" / name, stored)
                columns.update(image_png=f"images/{name}", image_slope=f"{slope:.10g}", image_intercept=f"{intercept:.10g}")
            if self.style is not None:
                gray = item.pixels.display(self.style.window)
                picture = overlay(gray, item.labels, self.lookup, self.style.alpha, self.style.outline)
                write_png(root / "overlays" / name, picture)
                columns["overlay_png"] = f"overlays/{name}"
            if self.preview:
                script = f"viewer/{item.index:05d}.js"
                (root / script).write_text(frame_script(item.index, item.pixels.stored, item.labels), encoding="ascii")
                own = item.pixels.window or range_window(item.pixels.values)
                self.viewer[item.index] = {
                    "data": script, "rows": int(frame.rows), "columns": int(frame.columns),
                    "slope": item.pixels.slope, "intercept": item.pixels.intercept,
                    "window": [own.center, own.width], "monochrome1": bool(item.pixels.monochrome1),
                }
                if frame.tiles:  # a mosaic: the readout places each pixel through its own tile's plane
                    self.viewer[item.index]["tiles"] = [
                        {"number": tile.number, "row": tile.row_offset, "column": tile.column_offset,
                         "rows": tile.rows, "columns": tile.columns, "ipp": list(tile.position),
                         "iop": list(tile.orientation), "spacing": list(tile.pixel_spacing)}
                        for tile in frame.tiles
                    ]
        if options.stats:
            area = frame.pixel_spacing[0] * frame.pixel_spacing[1]
            columns["label_pixels"] = " ".join(f"{v}:{int(item.counts[v])}" for v in item.present)
            columns["label_areas_mm2"] = " ".join(f"{v}:{item.counts[v] * area:.2f}" for v in item.present)
        if frame.tiles:
            columns["mosaic_tiles"] = len(frame.tiles)
        if frame.tile is not None:
            columns.update(
                tile=frame.tile.number, tile_row_offset=frame.tile.row_offset,
                tile_column_offset=frame.tile.column_offset,
            )
        self.rows[item.index] = {**manifest_row(item.index, frame, name, context.dicom_root, context.normal), **columns}
        if self.preview:  # for the preview: each label's pixels here (its legend jumps to the largest)
            self.areas[item.index] = {value: int(item.counts[value]) for value in item.present}
            self.multiframe[item.index] = frame.number_of_frames > 1
        self.tile_rows[item.index] = _tile_rows(item.index, frame, name, context.normal, item.tiles_present)

    def end(self, summary: ExportSummary) -> dict[str, str]:
        context = self.context
        assert context is not None
        root = context.folder
        rows = [row for row in self.rows if row is not None]
        write_json(root / "labels.json", summary.label_entries)
        if self.preview:
            frames = preview_frames(rows)
            for entry, areas, multiframe, viewer in zip(frames, self.areas, self.multiframe, self.viewer):
                entry["areas"] = areas or {}
                entry["multiframe"] = bool(multiframe)
                entry.update(viewer or {})
            write_preview(root / "index.html", frames, summary.label_entries, summary.provenance,
                          style={"alpha": self.style.alpha, "outline": self.style.outline,
                                 "window": [self.style.window.center, self.style.window.width] if self.style.window else None})
        tile_rows = [row for rows_of_frame in self.tile_rows for row in rows_of_frame]
        if tile_rows:
            write_csv(root / "tiles.csv", TILE_COLUMNS, tile_rows)
        write_manifest(root / "manifest.csv", rows)
        return {}

    def abort(self) -> None:
        pass


def preview_frames(rows: list[dict]) -> list[dict[str, object]]:
    """The preview page's frame list, from the manifest rows."""
    return [
        {
            "image": row["overlay_png"],
            "label": row["label_png"],
            "instance": row["instance_number"],
            "frame": row["frame"],
            "position": row["slice_position"],
            "ipp": [float(v) for v in str(row["image_position_patient"]).split()],
            "iop": [float(v) for v in str(row["image_orientation_patient"]).split()],
            "spacing": [float(v) for v in str(row["pixel_spacing"]).split()],
            "labels": [int(v) for v in str(row["labels_present"]).split()],
        }
        for row in rows
    ]


def read_pixels(reader: PixelReader, frame: Frame) -> FramePixels:
    """A frame's pixels; for one tile of a mosaic, the tile's part of its frame's pixel array."""
    if frame.tile is None:
        return reader.read(frame)
    rows, columns = frame.tile.frame_shape
    pixels = reader.read(dataclasses.replace(frame, rows=rows, columns=columns, tile=None))
    return dataclasses.replace(pixels, stored=np.ascontiguousarray(pixels.stored[frame.tile.region()]))


def image_values(pixels: FramePixels, frame: Frame) -> tuple[np.ndarray, float, float]:
    """Stored values as uint16 for a 16-bit PNG, and the slope and intercept that give modality values from it.

    Unsigned stored values are written as they are; signed ones shifted by 32768 (the intercept says so).
    """
    stored = pixels.stored
    if stored.dtype.kind == "u" and stored.dtype.itemsize <= 2:
        return stored.astype(np.uint16, copy=False), pixels.slope, pixels.intercept
    if stored.dtype.kind == "i" and stored.dtype.itemsize <= 2:
        shifted = (stored.astype(np.int32) + 32768).astype(np.uint16)
        return shifted, pixels.slope, pixels.intercept - 32768 * pixels.slope
    raise SegAlignError(
        f"{frame.source_file}: {stored.dtype} pixel data does not fit a 16-bit PNG; use labels or overlays only"
    )


def write_png(path: Path, pixels: np.ndarray) -> None:
    """Write an array as a PNG exactly as laid out (row 0 at the top): bool as 1-bit, uint8, uint16 as 16-bit
    grayscale (with :mod:`segalign.png`, fast for label images), ``(rows, columns, 3)`` uint8 as RGB (Pillow)."""
    if pixels.ndim == 2 and pixels.dtype in (np.bool_, np.uint8, np.uint16):
        write_gray(path, pixels)
        return
    if pixels.dtype != np.uint8 or pixels.shape[2:] != (3,):
        raise TypeError(f"cannot write a {pixels.dtype} array of shape {pixels.shape} as a PNG")
    from PIL import Image  # imported here so the package imports without Pillow (Slicer installs it on first use)

    Image.fromarray(pixels).save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)


def safe_name(text: str, fallback: str = "unnamed") -> str:
    """A file or folder name made from untrusted text: letters, digits, ``._-`` only, no leading dot, <= 80 chars."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._ ")
    return cleaned[:80] or fallback


def unique_safe_names(names: list[str]) -> list[str]:
    """:func:`safe_name` of each name, made unique without regard to case (``liver``, ``liver_2``...)."""
    seen: dict[str, int] = {}
    result = []
    for name in names:
        base = safe_name(name)
        candidate = base
        while candidate.lower() in seen:
            seen[base.lower()] += 1
            candidate = f"{base}_{seen[base.lower()]}"
        seen[candidate.lower()] = 1
        result.append(candidate)
    return result


def frame_file_names(frames: list[Frame]) -> list[str]:
    """``<index>_i<InstanceNumber>[_f<frame>][_t<tile>].png`` for every frame, in export order."""
    width = max(4, len(str(len(frames) - 1)))
    names = []
    for index, frame in enumerate(frames):
        instance = f"i{frame.instance_number}" if frame.instance_number is not None else "noinstance"
        suffix = f"_f{frame.frame_number}" if frame.number_of_frames > 1 else ""
        if frame.tile is not None:
            suffix += f"_t{frame.tile.number:02d}"
        names.append(f"{index:0{width}d}_{safe_name(instance)}{suffix}.png")
    return names


def manifest_row(index: int, frame: Frame, name: str, root: Path, normal: np.ndarray) -> dict:
    """The manifest columns every frame has (those of the options are added by :meth:`PngFolderWriter.add`)."""
    return {
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
    }


def plane_columns(plane: Frame | Tile) -> dict[str, str]:
    """The manifest's (and tiles.csv's) geometry columns of a frame or tile, as its DICOM tags would spell them."""
    return {
        "image_position_patient": " ".join(f"{v:.10g}" for v in plane.position),
        "image_orientation_patient": " ".join(f"{v:.10g}" for v in plane.orientation),
        "pixel_spacing": " ".join(f"{v:.10g}" for v in plane.pixel_spacing),
    }


def _tile_rows(index: int, frame: Frame, name: str, normal: np.ndarray, present: list[list[int]]) -> list[dict]:
    """The rows of tiles.csv for one mosaic frame (none for an ordinary frame)."""
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
            "labels_present": " ".join(str(value) for value in values),
        }
        for tile, values in zip(frame.tiles, present)
    ]


def write_json(path: Path, content: object) -> None:
    """``content`` as indented JSON; refuses NaN and Infinity, which are not JSON."""
    try:  # allow_nan=False: inputs are checked finite, so this never refuses in practice
        text = json.dumps(content, indent=2, allow_nan=False)
    except ValueError as error:
        raise SegAlignError(f"{path.name} cannot be written: a value is not a finite number ({error})") from None
    path.write_text(text + "\n", encoding="utf-8")


def write_manifest(path: Path, rows: list[dict]) -> None:
    """manifest.csv: the fixed columns, then the optional ones any row has."""
    present = {column for row in rows for column in row}
    optional = [column for column in OPTIONAL_COLUMNS if column in present]
    write_csv(path, MANIFEST_COLUMNS + optional, rows)


def has_csv_header(path: Path, columns: Sequence[str]) -> bool:
    """Whether the CSV file ``path`` starts with exactly the header ``columns`` (a table SegAlign wrote, which it may
    rewrite; any other file of that name is the user's)."""
    try:
        with path.open(encoding="utf-8", newline="") as stream:
            return next(csv.reader(stream), None) == list(columns)
    except (OSError, UnicodeDecodeError, csv.Error):
        return False


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    # surrogateescape: a file name that is not valid UTF-8 is written as the bytes it has on disk
    with path.open("w", newline="", encoding="utf-8", errors="surrogateescape") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
