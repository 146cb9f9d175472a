"""The PNG folder writer (:class:`PngFolderWriter`): per frame the label image, and what the options ask for
(masks, images, overlays with the preview page); at the end labels.json, tiles.csv and manifest.csv (the layout is
in :mod:`segalign.writers.images`). Also the two pixel helpers of frames' own images: :func:`read_pixels` (a mosaic
tile's part of its frame) and :func:`image_values` (stored values as a 16-bit PNG holds them).

Everything is written through the documented seams, module-qualified: :mod:`.png` (images), :mod:`.manifest`
(the tables), :mod:`.preview` (the page and its frame scripts) and :mod:`segalign.files` (labels.json).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ... import files
from ...dicom import Frame
from ...errors import SegAlignError
from ...dicom import FramePixels, PixelReader
from ..base import ExportContext, ExportSummary, FrameLabels, Writer
from . import manifest, png, preview
from .render import color_lookup, overlay

#: The entries of an export folder this writer may write (see :data:`segalign.export.EXPORT_ENTRIES`).
ENTRIES = frozenset({
    "labels/", "layers/", "masks/", "overlays/", "images/", "viewer/", "index.html", "manifest.csv", "labels.json",
    "tiles.csv",
})


class PngFolderWriter(Writer):
    """Writes the PNG folder (always part of an export: the label images and the manifest are its core)."""

    #: Every label layer has its images (``labels/``, ``layers/<n>/``); masks, overlays and the page see them all.
    writes_overlaps = True

    def __init__(self) -> None:
        self.context: ExportContext | None = None

    @property
    def needs_pixels(self) -> bool:
        options = self.context.options if self.context is not None else None
        return bool(options is not None and (options.overlays is not None or options.images))

    def begin(self, context: ExportContext) -> None:
        self.context = context
        options, segmentation = context.options, context.segmentation
        self.names = manifest.frame_file_names(list(context.frames))
        #: Where segments overlap, the folders of the layers after the first: ``layers/2``, ``layers/3``...
        self.layer_folders = [f"layers/{number}" for number in range(2, len(segmentation.layers) + 1)]
        self.segments = [segmentation.label_table[v] for v in segmentation.values if v in segmentation.label_table]
        self.mask_folders = files.unique_safe_names([label.name for label in self.segments]) if options.masks else []
        overlays = options.overlays
        self.style = overlays  #: how overlays look (OverlayOptions), or None for no overlays
        self.preview = overlays is not None and overlays.preview  #: index.html and viewer/ are written
        largest = max([*segmentation.label_table, *segmentation.values, 0])
        self.lookup = color_lookup(segmentation.label_table, largest) if overlays else None
        self.rows: list[dict | None] = [None] * len(context.frames)
        self.tile_rows: list[list[dict]] = [[] for _ in context.frames]
        self.pages: list[dict[str, Any]] = [{} for _ in context.frames]  #: the preview page's data of each frame
        root = context.folder
        (root / "labels").mkdir()
        for folder in self.layer_folders:
            (root / folder).mkdir(parents=True)
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
        png.write_png(root / "labels" / name, item.labels)
        for folder, layer in zip(self.layer_folders, item.layers[1:]):
            png.write_png(root / folder / name, layer)
        for label, folder in zip(self.segments, self.mask_folders):
            png.write_png(root / "masks" / folder / name, item.mask(label.value))
        row = manifest.manifest_row(item.index, frame, name, context.dicom_root, context.normal, item.present)
        row.update(manifest.layer_columns(self.layer_folders, name))
        if item.pixels is not None:
            if options.images:
                stored, slope, intercept = image_values(item.pixels, frame)
                png.write_png(root / "images" / name, stored)
                row.update(image_png=f"images/{name}", image_slope=f"{slope:.10g}", image_intercept=f"{intercept:.10g}")
            if self.style is not None:
                gray = item.pixels.display(self.style.window)
                picture = overlay(gray, item.labels, self.lookup, self.style.alpha, self.style.outline,
                                  more=item.layers[1:])
                png.write_png(root / "overlays" / name, picture)
                row["overlay_png"] = f"overlays/{name}"
            if self.preview:
                self.pages[item.index] = preview.write_frame(
                    root, item.index, frame, item.pixels, item.layers, item.counts, item.present
                )
        if options.stats:
            row.update(manifest.stats_columns(frame, item.counts, item.present))
        self.rows[item.index] = row
        self.tile_rows[item.index] = [
            {**tile, **manifest.layer_columns(self.layer_folders, name)}
            for tile in manifest.tile_rows(item.index, frame, name, context.normal, item.tiles_present)
        ]

    def end(self, summary: ExportSummary) -> dict[str, str]:
        context = self.context
        assert context is not None
        root = context.folder
        rows = [row for row in self.rows if row is not None]
        files.write_json(root / "labels.json", summary.label_entries)
        if self.preview:
            window = self.style.window
            style = {"alpha": self.style.alpha, "outline": self.style.outline,
                     "window": [window.center, window.width] if window else None}
            frames = preview.page_frames(rows, self.pages)
            preview.write_preview(root / "index.html", frames, summary.label_entries, summary.provenance, style=style)
        tile_rows = [row for rows_of_frame in self.tile_rows for row in rows_of_frame]
        if tile_rows:
            manifest.write_tiles(root / "tiles.csv", tile_rows)
        manifest.write_manifest(root / "manifest.csv", rows)
        return {}


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
