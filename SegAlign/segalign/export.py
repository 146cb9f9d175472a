"""Export a segmentation onto the frames of a DICOM series: label PNGs, masks, manifest, label table.

Layout of an export folder::

    labels/<index>_i<InstanceNumber>[_f<frame>].png   one label image per frame, Rows x Columns, like pixel_array
    masks/<segment>/<same name>.png                   (with masks=True) one 1-bit image per segment per frame
    labels.json                                       value, name, colour (and voxel and frame counts) per label
    export.json                                       provenance: inputs, affine used, order, warnings
    manifest.csv                                      one row per frame in export order; written last

Everything is written into a hidden temporary folder beside the output and renamed into place at the end, so an
interrupted export never leaves a folder that looks complete.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import re
import shutil
import tempfile
import threading
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from . import __version__
from .diagnosis import diagnose
from .dicom import Frame, Order, Series, position_along
from .errors import NoOverlapError, SegAlignError
from .geometry import LPS_TO_RAS, pixel_to_lps
from .pixels import FramePixels, PixelReader
from .png import write_gray
from .preview import write_preview
from .render import OverlayStyle, color_lookup, overlay
from .sampling import FrameSampler
from .segmentation import Segmentation

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
#: Columns added by the options that write them (--images, --overlays, --stats), and for Siemens mosaics: the
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

ProgressCallback = Callable[[int, int], None]


class ExportCancelled(SegAlignError):
    """The caller's progress callback asked to stop; nothing was left behind."""


@dataclass
class ExportResult:
    """What an export wrote and what the user should know about it."""

    output_dir: Path
    frames: int
    labels_found: list[int]  #: label values present on at least one frame
    warnings: list[str] = field(default_factory=list)

    @property
    def manifest(self) -> Path:
        """The export's manifest.csv."""
        return self.output_dir / "manifest.csv"


def export_segmentation(
    series: Series,
    segmentation: Segmentation,
    output_dir: str | os.PathLike[str],
    *,
    dicom_root: str | os.PathLike[str] | None = None,
    order: Order = "instance",
    masks: bool = False,
    overlays: bool = False,
    images: bool = False,
    stats: bool = False,
    style: OverlayStyle | None = None,
    overwrite: bool = False,
    warnings: list[str] | None = None,
    progress: ProgressCallback | None = None,
    other_inputs: Sequence[str | os.PathLike[str]] = (),
    split_mosaics: bool = False,
) -> ExportResult:
    """Sample ``segmentation`` on every frame of ``series`` and write the export folder.

    ``dicom_root`` is the folder ``source_file`` paths in the manifest are relative to (default: the deepest
    folder holding all the series' files). ``warnings`` are earlier messages (from the scan) to keep with the
    export. ``progress(done, total)`` is called after each frame; raising :class:`ExportCancelled` from it stops
    the export and removes everything it wrote. ``other_inputs`` (a label table...) are refused as output
    locations like the DICOM folder and the segmentation, so ``overwrite`` can never delete an input.

    Besides the label images: ``masks`` writes one 1-bit image per segment per frame; ``overlays`` the frame's
    pixels, windowed, with the labels drawn in their colours (``style``), plus the ``index.html`` preview page;
    ``images`` the frame's pixels as 16-bit PNGs; ``stats`` per-label pixel counts and areas in the manifest.

    A Siemens mosaic frame gives a label mosaic laid out like its pixel array (each tile sampled on its own
    slice plane), and ``tiles.csv`` says where each tile lies; with ``split_mosaics`` every tile is an image of
    its own instead, with its own row (and geometry) in the manifest.
    """
    output_dir = Path(output_dir).absolute()
    if series.problems:
        more = f" (and {len(series.problems) - 1} more problems)" if len(series.problems) > 1 else ""
        raise SegAlignError(series.problems[0] + more)
    frames = series.ordered(order)
    if not frames:
        raise SegAlignError(f"series {series.uid or '(no SeriesInstanceUID)'} has no frames")
    if split_mosaics and any(frame.tiles for frame in frames):
        frames = [tile for frame in frames for tile in frame.split_tiles()]
        if order == "position":  # tiles of one mosaic lie at many positions: order them all along the normal
            frames = sorted(frames, key=lambda frame: position_along(frame, series.reference_normal))
    root = Path(dicom_root).absolute() if dicom_root is not None else Path(os.path.commonpath(series.files)).absolute()
    if root.is_file():
        root = root.parent
    inputs = [root, *([segmentation.source.absolute()] if segmentation.source else []), *(Path(p).absolute() for p in other_inputs)]
    _check_output_dir(output_dir, overwrite, protected=inputs)

    sampler = FrameSampler(segmentation.labels, segmentation.affine)
    if not any(sampler.may_overlap(frame) for frame in frames):
        raise _no_overlap(series, segmentation)

    all_warnings = list(warnings or []) + diagnose(series).warnings() + list(segmentation.warnings)
    normal = series.reference_normal
    created_parents = _make_parents(output_dir)
    temporary = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.partial-", dir=output_dir.parent))
    try:
        writer = _FrameWriter(temporary, sampler, segmentation, frames, masks, overlays, images, stats, style or OverlayStyle())
        writer.make_folders()
        rows = []
        tile_rows: list[dict] = []
        frames_with_label: dict[int, int] = {}
        with contextlib.closing(writer.run()) as results:  # closing stops the worker threads on any exit
            for index, (frame, (columns, present, tiles_present)) in enumerate(zip(frames, results)):
                for value in present:
                    frames_with_label[value] = frames_with_label.get(value, 0) + 1
                rows.append({**_manifest_row(index, frame, writer.names[index], root, normal), **columns})
                tile_rows += _tile_rows(index, frame, writer.names[index], normal, tiles_present)
                if progress is not None:
                    progress(index + 1, len(frames))
        if sampler.pixels_inside == 0:
            raise _no_overlap(series, segmentation, boxes_meet=True)
        outside = [value for value in segmentation.values if value not in frames_with_label]
        if outside:
            described = ", ".join(f"{v} {segmentation.label_table[v].name}" for v in outside[:10])
            more = f" and {len(outside) - 10} more" if len(outside) > 10 else ""
            all_warnings.append(
                f"{len(outside)} labels of the segmentation fall on no frame (outside the series' field of view): "
                f"{described}{more}"
            )
        label_entries = _label_entries(segmentation, frames_with_label)
        provenance = _provenance(series, segmentation, root, order, masks, all_warnings)
        _write_json(temporary / "labels.json", label_entries)
        _write_json(temporary / "export.json", provenance)
        if overlays:
            write_preview(temporary / "index.html", writer.preview_frames(rows), label_entries, provenance)
        if tile_rows:
            _write_csv(temporary / "tiles.csv", TILE_COLUMNS, tile_rows)
        _write_manifest(temporary / "manifest.csv", rows)
        _publish(temporary, output_dir)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        for folder in created_parents:  # deepest first; only folders this export made, and only if still empty
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    return ExportResult(output_dir, len(frames), sorted(frames_with_label), all_warnings)


class _FrameWriter:
    """Samples and writes every frame, two frames at a time.

    numpy's gather and zlib release the GIL, so two threads use both cores; at most a few frames are in flight,
    so memory stays flat in the number of frames. Results come back in frame order.
    """

    THREADS = 2
    IN_FLIGHT = 4

    def __init__(
        self, root: Path, sampler: FrameSampler, segmentation: Segmentation, frames: list[Frame], masks: bool,
        overlays: bool, images: bool, stats: bool, style: OverlayStyle,
    ) -> None:
        self.root, self.sampler, self.frames = root, sampler, frames
        self.names = _frame_file_names(frames)
        self.segments = [segmentation.label_table[v] for v in segmentation.values if v in segmentation.label_table]
        self.mask_folders = _unique_safe_names([label.name for label in self.segments]) if masks else []
        self.overlays, self.images, self.stats, self.style = overlays, images, stats, style
        largest = max([*segmentation.label_table, *segmentation.values, 0])
        self.lookup = color_lookup(segmentation.label_table, largest) if overlays else None
        self._local = threading.local()  # one PixelReader per thread (it caches a header)

    def make_folders(self) -> None:
        (self.root / "labels").mkdir()
        for folder in self.mask_folders:
            (self.root / "masks" / folder).mkdir(parents=True)
        if self.overlays:
            (self.root / "overlays").mkdir()
        if self.images:
            (self.root / "images").mkdir()

    def run(self) -> Iterator[tuple[dict[str, object], list[int]]]:
        """Manifest columns and label values present, frame by frame, in order."""
        with ThreadPoolExecutor(max_workers=self.THREADS) as pool:
            pending: deque = deque()
            try:
                for index in range(len(self.frames)):
                    pending.append(pool.submit(self.write, index))
                    if len(pending) >= self.IN_FLIGHT:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:  # stopped early (error, cancel): let running frames finish, drop the rest
                for future in pending:
                    future.cancel()

    def write(self, index: int) -> tuple[dict[str, object], list[int], list[list[int]]]:
        frame, name, root = self.frames[index], self.names[index], self.root
        labels = self.sampler.sample(frame)
        counts = _label_counts(labels)
        present = [int(value) for value in np.flatnonzero(counts)]
        tiles_present = [[int(v) for v in np.flatnonzero(_label_counts(labels[tile.region()]))] for tile in frame.tiles]
        write_png(root / "labels" / name, labels)
        for label, folder in zip(self.segments, self.mask_folders):
            write_png(root / "masks" / folder / name, labels == label.value)
        columns: dict[str, object] = {"labels_present": " ".join(str(value) for value in present)}
        if self.overlays or self.images:
            reader = getattr(self._local, "reader", None) or PixelReader()
            self._local.reader = reader
            pixels = _read_pixels(reader, frame)
            if self.images:
                stored, slope, intercept = image_values(pixels, frame)
                write_png(root / "images" / name, stored)
                columns.update(image_png=f"images/{name}", image_slope=f"{slope:.10g}", image_intercept=f"{intercept:.10g}")
            if self.overlays:
                gray = pixels.display(self.style.window)
                write_png(root / "overlays" / name, overlay(gray, labels, self.lookup, self.style.alpha, self.style.outline))
                columns["overlay_png"] = f"overlays/{name}"
        if self.stats:
            area = frame.pixel_spacing[0] * frame.pixel_spacing[1]
            columns["label_pixels"] = " ".join(f"{v}:{int(counts[v])}" for v in present)
            columns["label_areas_mm2"] = " ".join(f"{v}:{counts[v] * area:.2f}" for v in present)
        if frame.tiles:
            columns["mosaic_tiles"] = len(frame.tiles)
        if frame.tile is not None:
            columns.update(
                tile=frame.tile.number, tile_row_offset=frame.tile.row_offset,
                tile_column_offset=frame.tile.column_offset,
            )
        return columns, present, tiles_present

    def preview_frames(self, rows: list[dict]) -> list[dict[str, object]]:
        return [
            {
                "image": row["overlay_png"],
                "label": row["label_png"],
                "instance": row["instance_number"],
                "position": row["slice_position"],
                "labels": [int(v) for v in str(row["labels_present"]).split()],
            }
            for row in rows
        ]


def _label_counts(labels: np.ndarray) -> np.ndarray:
    """Pixel count of every label value on a frame (index = value; background not counted)."""
    labelled = labels[labels != 0]
    return np.bincount(labelled) if labelled.size else np.zeros(1, dtype=np.int64)


def _read_pixels(reader: PixelReader, frame: Frame) -> FramePixels:
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


def _unique_safe_names(names: list[str]) -> list[str]:
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


def _frame_file_names(frames: list[Frame]) -> list[str]:
    width = max(4, len(str(len(frames) - 1)))
    names = []
    for index, frame in enumerate(frames):
        instance = f"i{frame.instance_number}" if frame.instance_number is not None else "noinstance"
        suffix = f"_f{frame.frame_number}" if frame.number_of_frames > 1 else ""
        if frame.tile is not None:
            suffix += f"_t{frame.tile.number:02d}"
        names.append(f"{index:0{width}d}_{safe_name(instance)}{suffix}.png")
    return names


def _manifest_row(index: int, frame: Frame, name: str, root: Path, normal: np.ndarray) -> dict:
    return {
        "index": index,
        "sop_instance_uid": frame.sop_instance_uid,
        "frame": frame.frame_number,
        "instance_number": "" if frame.instance_number is None else frame.instance_number,
        "source_file": Path(os.path.relpath(frame.source_file.absolute(), root)).as_posix(),
        "label_png": f"labels/{name}",
        "image_position_patient": " ".join(f"{v:.10g}" for v in frame.position),
        "image_orientation_patient": " ".join(f"{v:.10g}" for v in frame.orientation),
        "pixel_spacing": " ".join(f"{v:.10g}" for v in frame.pixel_spacing),
        "rows": frame.rows,
        "columns": frame.columns,
        "slice_position": f"{position_along(frame, normal):.4f}",
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
            "image_position_patient": " ".join(f"{v:.10g}" for v in tile.position),
            "image_orientation_patient": " ".join(f"{v:.10g}" for v in tile.orientation),
            "pixel_spacing": " ".join(f"{v:.10g}" for v in tile.pixel_spacing),
            "slice_position": f"{float(np.dot(tile.position, normal)):.4f}",
            "labels_present": " ".join(str(value) for value in values),
        }
        for tile, values in zip(frame.tiles, present)
    ]


def _label_entries(segmentation: Segmentation, frames_with_label: dict[int, int]) -> list[dict]:
    return [
        {
            **label.as_dict(),
            "voxels": segmentation.voxel_counts.get(value, 0),
            "frames": frames_with_label.get(value, 0),
        }
        for value, label in sorted(segmentation.label_table.items())
    ]


def _provenance(
    series: Series, segmentation: Segmentation, root: Path, order: Order, masks: bool, warnings: list[str]
) -> dict:
    return {
        "segalign_version": __version__,
        "dicom_dir": str(root),
        "series_instance_uid": series.uid,
        "series_description": series.description,
        "modality": series.modality,
        "segmentation": str(segmentation.source.absolute()) if segmentation.source else segmentation.description,
        "segmentation_shape": list(segmentation.labels.shape),
        "affine_source": segmentation.affine_source,
        "affine_ras": np.round(segmentation.affine, 6).tolist(),
        "order": order,
        "masks": masks,
        "warnings": warnings,
    }


def _write_json(path: Path, content: object) -> None:
    path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


def _write_manifest(path: Path, rows: list[dict]) -> None:
    present = {column for row in rows for column in row}
    optional = [column for column in OPTIONAL_COLUMNS if column in present]
    _write_csv(path, MANIFEST_COLUMNS + optional, rows)


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _check_output_dir(output_dir: Path, overwrite: bool, protected: list[Path]) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise SegAlignError(f"output {output_dir} exists and is not a folder")
    resolved = output_dir.resolve()
    for path in protected:
        path = path.resolve()
        if resolved == path or resolved in path.parents:
            raise SegAlignError(f"output folder {output_dir} would contain the input {path}; choose another folder")
    if output_dir.is_dir() and any(output_dir.iterdir()):
        if not overwrite:
            raise SegAlignError(f"output folder {output_dir} exists and is not empty; use --overwrite to replace it")
        if not (output_dir / "export.json").is_file():  # never replace a folder SegAlign did not write
            raise SegAlignError(
                f"output folder {output_dir} is not empty and is not a SegAlign export (no export.json); "
                "--overwrite only replaces an earlier export"
            )


def _make_parents(output_dir: Path) -> list[Path]:
    """Create the missing parents of ``output_dir``; returns those created, deepest first."""
    missing = [parent for parent in output_dir.parents if not parent.exists()]
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    return missing


def _publish(temporary: Path, output_dir: Path) -> None:
    """Move the finished export into place; an existing folder is replaced only after the new one is complete."""
    if not output_dir.exists():
        temporary.rename(output_dir)
        return
    old = output_dir.with_name(f".{output_dir.name}.old-{uuid.uuid4().hex[:8]}")
    output_dir.rename(old)
    try:
        temporary.rename(output_dir)
    except BaseException:
        old.rename(output_dir)  # put the previous export back rather than leave it hidden
        raise
    shutil.rmtree(old, ignore_errors=True)


def _no_overlap(series: Series, segmentation: Segmentation, boxes_meet: bool = False) -> NoOverlapError:
    what = (
        "no pixel of any frame falls inside it (their extents meet, but no frame crosses the volume)"
        if boxes_meet
        else "they do not overlap at all"
    )
    return NoOverlapError(
        f"segmentation {segmentation.name} does not cover series {series.uid or '(no SeriesInstanceUID)'}: "
        f"{what}; segmentation spans {_ras_box(segmentation)}, the series {_series_box(series)} "
        "(wrong series, or an LPS affine written as RAS?)"
    )


def _ras_box(segmentation: Segmentation) -> str:
    shape = np.array(segmentation.labels.shape) - 1
    corners = np.array([[i, j, k, 1] for i in (0, shape[0]) for j in (0, shape[1]) for k in (0, shape[2])], float)
    ras = (corners @ segmentation.affine.T)[:, :3]
    return _box_text(ras)


def _series_box(series: Series) -> str:
    points = [
        LPS_TO_RAS @ pixel_to_lps(plane.position, plane.orientation, plane.pixel_spacing, r, c)
        for frame in series.frames
        for plane in frame.planes()
        for r in (0, plane.rows - 1)
        for c in (0, plane.columns - 1)
    ]
    return _box_text(np.array(points))


def _box_text(ras: np.ndarray) -> str:
    low, high = ras.min(axis=0), ras.max(axis=0)
    return "RAS " + " ".join(f"{axis}[{a:.0f},{b:.0f}]" for axis, a, b in zip("RAS", low, high))
