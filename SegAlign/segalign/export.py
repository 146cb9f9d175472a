"""Export a segmentation onto the frames of a DICOM series: label PNGs, masks, manifest, label table.

Layout of an export folder::

    labels/<index>_i<InstanceNumber>[_f<frame>].png   one label image per frame, Rows x Columns, like pixel_array
    masks/<segment>/<same name>.png                   (with masks=True) one 1-bit image per segment per frame
    labels.json                                       value, name, colour (and voxel and frame counts) per label
    export.json                                       provenance: inputs, affine used, order, warnings
    manifest.csv                                      one row per frame in export order; written last

Everything is written into a hidden temporary folder beside the output and renamed into place at the end, so an
interrupted export never leaves a folder that looks complete; the next export into the same parent removes such
folders once it can prove the export that wrote them is dead. Only an earlier SegAlign export (export.json says so,
and the folder holds nothing but :data:`EXPORT_ENTRIES`) is ever replaced, and only with ``overwrite``; a lock file
beside the output (``.NAME.lock``) keeps two exports from writing into the same folder at once.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import json
import os
import re
import shutil
import signal
import socket
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from .version import __version__
from .diagnosis import diagnose
from .dicom import Frame, Order, Series, position_along
from .mosaic import Tile
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

#: Everything an export folder may hold: a name ending in "/" is a folder (of PNG images, or of folders of PNG
#: images: masks/<segment>/), any other name a file. A folder is taken for an earlier SegAlign export, which
#: ``overwrite`` may replace, only if its export.json says SegAlign wrote it and it holds nothing but these; add
#: the name here when an export starts writing a new file or folder.
EXPORT_ENTRIES = frozenset({
    "labels/", "masks/", "overlays/", "images/",
    "index.html", "manifest.csv", "labels.json", "export.json", "tiles.csv",
})
#: The ``written_by`` value of export.json that marks a folder as written by SegAlign.
WRITTEN_BY = "SegAlign"
#: Inside the hidden temporary folder of an export being written: who writes it (pid, host, start time), so a
#: later export can tell a folder left by a killed one (removed) from one still being written (left alone).
PARTIAL_MARKER = ".segalign-partial.json"
#: A larger export.json is not SegAlign's (whose are a few kB); it is not read whole to find out.
_EXPORT_JSON_LIMIT = 16 << 20

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

    A non-empty ``output_dir`` is replaced only if it is an earlier SegAlign export (see :func:`export_problem`) and
    ``overwrite`` is set; any other folder is refused, as is a second export into the same folder while one runs.
    The export's folders and files get the permissions the process's umask gives.
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
    lock = _OutputLock(output_dir)
    temporary: Path | None = None
    published = False
    notes: list[str] = []  # for the user, not for export.json
    try:
        lock.acquire()  # refuses when another export into output_dir is running
        removed = _remove_stale_partials(output_dir.parent)
        if removed:
            folders = "a temporary folder" if len(removed) == 1 else f"{len(removed)} temporary folders"
            notes.append(f"removed {folders} left by an interrupted export (e.g. {removed[0]})")
        _check_output_dir(output_dir, overwrite, protected=inputs)  # again, now that no other export can run
        temporary = _make_partial(output_dir)
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
        coverage = _coverage(series, segmentation, writer.outside, rows)
        if coverage["frames_outside_extent"]:
            all_warnings.append(_partial_coverage_warning(coverage))
        label_entries = _label_entries(segmentation, frames_with_label)
        provenance = _provenance(series, segmentation, root, order, masks, all_warnings)
        provenance["coverage"] = coverage
        _write_json(temporary / "labels.json", label_entries)
        _write_json(temporary / "export.json", provenance)
        if overlays:
            write_preview(temporary / "index.html", writer.preview_frames(rows), label_entries, provenance)
        if tile_rows:
            _write_csv(temporary / "tiles.csv", TILE_COLUMNS, tile_rows)
        _write_manifest(temporary / "manifest.csv", rows)
        with _signals_held():  # a Ctrl-C now is delivered once the export is in place, not half way
            notes += _publish(temporary, output_dir, overwrite)
            published = True
    except BaseException as error:
        if published:  # a signal held back while publishing: the export is complete, the caller is told to stop
            error.segalign_written = output_dir  # type: ignore[attr-defined]
            raise
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
        lock.release()
        for folder in created_parents:  # deepest first; only folders this export made, and only if still empty
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    finally:
        lock.release()
    return ExportResult(output_dir, len(frames), sorted(frames_with_label), all_warnings + notes)


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
        self.outside = [False] * len(frames)  #: per frame: no pixel inside the segmentation's extent

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
        labels, inside = self.sampler.sample_counted(frame)
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
        self.outside[index] = inside == 0
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
        **_plane_columns(frame),
        "rows": frame.rows,
        "columns": frame.columns,
        "slice_position": f"{position_along(frame, normal):.4f}",
    }


def _plane_columns(plane: Frame | Tile) -> dict[str, str]:
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
            **_plane_columns(tile),
            "slice_position": f"{float(np.dot(tile.position, normal)):.4f}",
            "labels_present": " ".join(str(value) for value in values),
        }
        for tile, values in zip(frame.tiles, present)
    ]


def _coverage(series: Series, segmentation: Segmentation, outside: list[bool], rows: list[dict]) -> dict:
    """How much of the series the segmentation covers: frames outside its extent, frames without a label, and
    both extents (RAS mm, as the segmentation's affine gives them)."""
    return {
        "frames": len(rows),
        "frames_outside_extent": sum(outside),
        "frames_without_label": sum(1 for row in rows if not row["labels_present"]),
        "outside_extent_indices": _index_ranges([index for index, out in enumerate(outside) if out]),
        "segmentation_extent": _ras_box(segmentation),
        "series_extent": _series_box(series),
    }


def _partial_coverage_warning(coverage: dict) -> str:
    return (
        f"the segmentation covers only part of the series: {coverage['frames_outside_extent']} of "
        f"{coverage['frames']} frames lie outside its extent (export indices {coverage['outside_extent_indices']}) "
        f"and {coverage['frames_without_label']} frames have no label; the segmentation spans "
        f"{coverage['segmentation_extent']}, the series {coverage['series_extent']} (cropped, or another region?)"
    )


def _index_ranges(indices: list[int], limit: int = 6) -> str:
    """``0-19, 100-119``: runs of consecutive indices, at most ``limit`` of them."""
    runs: list[list[int]] = []
    for index in indices:
        if runs and index == runs[-1][1] + 1:
            runs[-1][1] = index
        else:
            runs.append([index, index])
    text = ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in runs[:limit])
    return text + (f" and {len(runs) - limit} more runs" if len(runs) > limit else "")


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
        "written_by": WRITTEN_BY,  # what marks the folder as an export that overwrite may replace
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
    try:  # allow_nan=False: NaN and Infinity are not JSON (inputs are checked finite, so this never refuses)
        text = json.dumps(content, indent=2, allow_nan=False)
    except ValueError as error:
        raise SegAlignError(f"{path.name} cannot be written: a value is not a finite number ({error})") from None
    path.write_text(text + "\n", encoding="utf-8")


def _write_manifest(path: Path, rows: list[dict]) -> None:
    present = {column for row in rows for column in row}
    optional = [column for column in OPTIONAL_COLUMNS if column in present]
    _write_csv(path, MANIFEST_COLUMNS + optional, rows)


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    # surrogateescape: a file name that is not valid UTF-8 is written as the bytes it has on disk
    with path.open("w", newline="", encoding="utf-8", errors="surrogateescape") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _check_output_dir(output_dir: Path, overwrite: bool, protected: list[Path]) -> None:
    """Refuse an output location that is not a folder, holds an input, or is a non-empty folder that may not be
    replaced: one that is not an earlier SegAlign export (never), or one that is, without ``overwrite``."""
    if output_dir.is_symlink():  # replacing a link would delete or hide what it points to, not the link
        raise SegAlignError(
            f"output {output_dir} is a symbolic link (to {os.readlink(output_dir)}); give the folder itself"
        )
    if output_dir.exists() and not output_dir.is_dir():
        raise SegAlignError(f"output {output_dir} exists and is not a folder")
    resolved = output_dir.resolve()
    for path in protected:
        path = path.resolve()
        if resolved == path or resolved in path.parents:
            raise SegAlignError(f"output folder {output_dir} would contain the input {path}; choose another folder")
    if output_dir.is_dir() and any(output_dir.iterdir()):
        problem = export_problem(output_dir)
        if problem is not None:  # never replaced, whatever the options: say so now, not after --overwrite
            def foreign(option: str) -> str:
                return (
                    f"output folder {output_dir} is not empty and is not a SegAlign export ({problem}); "
                    f"it is never replaced, even with {option}: choose another folder"
                )

            raise SegAlignError(foreign("overwrite=True"), cli_message=foreign("--overwrite"))
        if not overwrite:
            def earlier(option: str) -> str:
                return f"output folder {output_dir} holds an earlier SegAlign export; {option} to replace it"

            raise SegAlignError(earlier("pass overwrite=True"), cli_message=earlier("use --overwrite"))


def export_problem(folder: str | os.PathLike[str]) -> str | None:
    """Why ``folder`` is not an export SegAlign wrote (``"it holds notes.txt, which an export does not write"``), or
    None if it is one: its export.json says SegAlign wrote it and it holds nothing else than :data:`EXPORT_ENTRIES`.

    Only such a folder is ever replaced (``overwrite``) or deleted by SegAlign.
    """
    folder = Path(folder)
    export_json = folder / "export.json"
    if not export_json.is_file() or export_json.is_symlink():
        return "it has no export.json"
    foreign = _foreign_entry(folder, EXPORT_ENTRIES)
    if foreign is not None:
        return f"it holds {foreign}, which an export does not write"
    try:
        with export_json.open(encoding="utf-8") as stream:
            text = stream.read(_EXPORT_JSON_LIMIT + 1)
        provenance = json.loads(text) if len(text) <= _EXPORT_JSON_LIMIT else None
    except (OSError, ValueError):  # unreadable, not UTF-8, not JSON
        provenance = None
    # Exports written before "written_by" existed are known by their "segalign_version".
    if not isinstance(provenance, dict) or not (
        provenance.get("written_by") == WRITTEN_BY or isinstance(provenance.get("segalign_version"), str)
    ):
        return "its export.json was not written by SegAlign"
    return None


#: Files that file managers drop into any folder they show (Finder, Explorer): not the user's data, so an export that
#: holds them is still an export, and they are deleted with it.
FILE_MANAGER_METADATA = frozenset({".ds_store", "thumbs.db", "desktop.ini", ".directory"})


def _is_file_manager_metadata(entry: os.DirEntry) -> bool:
    name = entry.name.lower()
    return (name in FILE_MANAGER_METADATA or name.startswith("._")) and entry.is_file(follow_symlinks=False)


def _foreign_entry(folder: Path, allowed: frozenset[str]) -> str | None:
    """The first entry of ``folder`` (in name order) that is not one of ``allowed`` (names as in
    :data:`EXPORT_ENTRIES`) or, inside an allowed folder, not a PNG image or a folder of them; None if there is none.
    Links and special files are always foreign: an export writes none."""
    for entry in _entries(folder):
        if _is_file_manager_metadata(entry):
            continue
        if entry.is_dir(follow_symlinks=False):
            if f"{entry.name}/" not in allowed:
                return f"{entry.name}/"
            inner = _foreign_image(Path(entry.path), depth=1)
            if inner is not None:
                return f"{entry.name}/{inner}"
        elif entry.name not in allowed or not entry.is_file(follow_symlinks=False):
            return entry.name
    return None


def _foreign_image(folder: Path, depth: int) -> str | None:
    """The first entry of an image folder that is not a PNG file or (``depth`` levels down) a folder of them."""
    for entry in _entries(folder):
        if _is_file_manager_metadata(entry):
            continue
        if entry.is_dir(follow_symlinks=False):
            inner = _foreign_image(Path(entry.path), depth - 1) if depth > 0 else ""
            if inner is not None:
                return f"{entry.name}/{inner}"
        elif not (entry.name.lower().endswith(".png") and entry.is_file(follow_symlinks=False)):
            return entry.name
    return None


def _entries(folder: Path) -> list[os.DirEntry]:
    with os.scandir(folder) as entries:
        return sorted(entries, key=lambda entry: entry.name)


def _remove_export(folder: Path, extra: frozenset[str] = frozenset()) -> bool:
    """Delete an export folder entry by entry, only what an export writes (:data:`EXPORT_ENTRIES` and ``extra``;
    PNGs in its image folders), so nothing else is deleted even if it appeared after the folder was checked; such
    an entry stays, and so does the folder. True if the folder is gone."""
    allowed = EXPORT_ENTRIES | extra
    try:
        for entry in _entries(folder):
            if entry.is_dir(follow_symlinks=False):
                if f"{entry.name}/" in allowed:
                    _remove_images(Path(entry.path), depth=1)
            elif (entry.name in allowed and entry.is_file(follow_symlinks=False)) or _is_file_manager_metadata(entry):
                os.unlink(entry.path)
        folder.rmdir()
    except OSError:
        return False
    return True


def _remove_images(folder: Path, depth: int) -> None:
    for entry in _entries(folder):
        if entry.is_dir(follow_symlinks=False):
            if depth > 0:
                _remove_images(Path(entry.path), depth - 1)
        elif (entry.name.lower().endswith(".png") and entry.is_file(follow_symlinks=False)) or (
            _is_file_manager_metadata(entry)
        ):
            os.unlink(entry.path)
    with contextlib.suppress(OSError):  # not empty: something else was put there; the parent's rmdir fails too
        folder.rmdir()


def _make_parents(output_dir: Path) -> list[Path]:
    """Create the missing parents of ``output_dir``; returns those created, deepest first."""
    missing = [parent for parent in output_dir.parents if not parent.exists()]
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    return missing


def _owner() -> dict[str, object]:
    """Who is writing: this process, on this host, since now (for lock files and partial-folder markers)."""
    return {
        "written_by": WRITTEN_BY,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "pid_namespace": _pid_namespace(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _pid_namespace() -> str:
    """What makes a pid mean one process: this boot and this pid namespace (containers that share a host name do
    not share pids). Empty where the system does not say (then a host name and pid are all there is)."""
    parts = []
    for source in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        try:
            parts.append(os.readlink(source) if source.endswith("/pid") else Path(source).read_text().strip())
        except OSError:
            return ""
    return " ".join(parts)


def _read_owner(text: str) -> dict | None:
    try:
        owner = json.loads(text)
    except ValueError:
        return None
    return owner if isinstance(owner, dict) and owner.get("written_by") == WRITTEN_BY else None


def _owner_is_gone(owner: dict | None) -> bool:
    """True only when ``owner`` is provably no longer running: a process of this host that has ended."""
    if owner is None or owner.get("host") != socket.gethostname():
        return False
    if owner.get("pid_namespace", "") != _pid_namespace():  # another container, or another boot: cannot tell
        return False
    pid = owner.get("pid")
    return isinstance(pid, int) and not isinstance(pid, bool) and pid != os.getpid() and not _pid_running(pid)


def _pid_running(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (when in doubt: yes)."""
    if pid <= 0:
        return True
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows: ask for its exit code instead
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return kernel32.GetLastError() == 5  # access denied: it exists; invalid parameter: it does not
        try:
            code = ctypes.c_ulong()
            return not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)) or code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, it is someone else's
        return True
    return True


class _OutputLock:
    """At most one export into an output folder at a time: the lock file ``.NAME.lock`` beside it.

    Where fcntl exists (Linux, macOS, the BSDs) the lock is an ``flock`` on that file, which the kernel releases
    however the holder ends (SIGKILL, power cut), so a left-over file is simply locked again. Where it does not
    (Windows), or the file system refuses flock, the lock is the file itself, created with O_CREAT | O_EXCL; a
    file whose process is no longer running on this host is stale and taken over. The file says who holds it
    (pid, host, start time) for the message that refuses a second export.
    """

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = output_dir
        self.path = output_dir.with_name(f".{output_dir.name}.lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`SegAlignError` naming the export that holds it."""
        for _ in range(20):
            created = True
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                created = False
                try:
                    fd = os.open(self.path, os.O_RDWR)
                except FileNotFoundError:  # released meanwhile: try again
                    continue
            locked = _try_flock(fd)
            if locked is False or (locked is None and not created):
                owner = _read_owner(_read_fd(fd))
                os.close(fd)
                if locked is None and _owner_is_gone(owner):  # no flock here: a file left by a dead export
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.path)
                    continue
                raise self._busy(owner)
            if not _same_file(fd, self.path):  # its holder removed it after we opened it: lock the new one
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(_owner()) + "\n").encode("utf-8"))
            self._fd = fd
            return
        raise SegAlignError(f"could not lock {self.path}: it keeps changing")

    def release(self) -> None:
        """Remove the lock file and let go of it (nothing if not held)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if os.name != "nt" and _same_file(fd, self.path):  # removed while held, so no one locks a dead file
                os.unlink(self.path)
        finally:
            os.close(fd)  # releases the flock
        if os.name == "nt":  # an open file cannot be removed there
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    def _busy(self, owner: dict | None) -> SegAlignError:
        who = f" (pid {owner.get('pid')} on {owner.get('host')}, since {owner.get('started')})" if owner else ""
        return SegAlignError(
            f"another export into {self.output_dir} is running{who}; wait for it to finish, or choose another "
            f"folder (if no export is running, delete {self.path})"
        )


def _try_flock(fd: int) -> bool | None:
    """flock ``fd`` without waiting: True if locked, False if another holds it, None if flock is not available."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
            return False
        return None  # ENOLCK, EOPNOTSUPP...: this file system has no locks
    return True


def _read_fd(fd: int) -> str:
    with contextlib.suppress(OSError, UnicodeDecodeError):
        return os.pread(fd, 4096, 0).decode("utf-8") if hasattr(os, "pread") else os.read(fd, 4096).decode("utf-8")
    return ""


def _same_file(fd: int, path: Path) -> bool:
    try:
        mine, theirs = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)


def _make_partial(output_dir: Path) -> Path:
    """Create the hidden folder ``.NAME.partial-XXXXXXXX`` beside ``output_dir`` that the export is written into,
    with its marker. It is made like any folder (unlike tempfile.mkdtemp's 0700), so the published export has the
    permissions the user's umask gives."""
    for _ in range(100):
        folder = output_dir.with_name(f".{output_dir.name}.partial-{uuid.uuid4().hex[:8]}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        try:
            _write_json(folder / PARTIAL_MARKER, _owner())
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return folder
    raise FileExistsError(errno.EEXIST, "could not create a temporary folder", str(output_dir.parent))


def _remove_stale_partials(parent: Path) -> list[Path]:
    """Remove the temporary folders that killed exports left in ``parent``; returns those removed.

    Only a folder that provably is one is removed: named ``.NAME.partial-...``, with a marker saying SegAlign
    wrote it from a process of this host that is no longer running, and holding nothing but export entries.
    """
    removed = []
    try:
        entries = _entries(parent)
    except OSError:
        return []
    for entry in entries:
        if not re.fullmatch(r"\..+\.partial-\w+", entry.name) or not entry.is_dir(follow_symlinks=False):
            continue
        folder = Path(entry.path)
        try:
            marker = folder / PARTIAL_MARKER
            owner = _read_owner(marker.read_text(encoding="utf-8")) if not marker.is_symlink() else None
            if not _owner_is_gone(owner) or _foreign_entry(folder, EXPORT_ENTRIES | {PARTIAL_MARKER}) is not None:
                continue
        except (OSError, UnicodeDecodeError):
            continue
        if _remove_export(folder, extra=frozenset({PARTIAL_MARKER})):
            removed.append(folder)
    return removed


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold back SIGINT (Ctrl-C), SIGTERM and SIGHUP while the block runs, then deliver them to their handlers.

    Publishing is a few renames; a signal between two of them would leave the output folder missing and the
    previous export hidden. Handlers can be changed only in the main thread; elsewhere, and for signals ignored
    or handled outside Python, nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous: dict[int, object] = {}
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        number = getattr(signal, name, None)
        handler = signal.getsignal(number) if number is not None else None
        if handler is None or handler == signal.SIG_IGN:
            continue
        previous[number] = signal.signal(number, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for number in dict.fromkeys(received):  # once each, in order
            signal.raise_signal(number)


def _publish(temporary: Path, output_dir: Path, overwrite: bool) -> list[str]:
    """Move the finished export into place, replacing an earlier export only; returns warnings for the user.

    The output folder is checked again here, at the rename, since it may have been created, filled or changed
    while the export ran. An earlier export is renamed aside, the new one moved in (a rename onto a folder that
    is not empty fails), and the old one deleted only if it still is purely an export; if not, it is kept aside
    and a warning says where. Nothing but export entries is ever deleted.
    """
    (temporary / PARTIAL_MARKER).unlink()
    _check_output_dir(output_dir, overwrite, protected=[])
    if not output_dir.exists() or not any(output_dir.iterdir()):
        try:
            with contextlib.suppress(FileNotFoundError):
                output_dir.rmdir()  # empty (fails if it was filled just now); Windows cannot rename onto it
            temporary.rename(output_dir)  # fails if a folder with something in it appeared meanwhile
        except OSError as error:
            if output_dir.exists():
                raise SegAlignError(
                    f"output folder {output_dir} was created or filled while the export ran; the export was not "
                    "written"
                ) from error
            raise
        return []
    old = output_dir.with_name(f".{output_dir.name}.old-{uuid.uuid4().hex[:8]}")
    output_dir.rename(old)
    try:
        temporary.rename(output_dir)
    except OSError as error:
        try:
            old.rename(output_dir)  # put the previous export back rather than leave it hidden
        except OSError:
            raise SegAlignError(
                f"output folder {output_dir} was created again while the export was moved into place; the export "
                f"was not written, and the previous export is now in {old}"
            ) from error
        raise
    problem = export_problem(old)
    if problem is None and _remove_export(old):
        return []
    why = f"it is no longer only a SegAlign export: {problem}" if problem else "it holds something an export does not"
    return [f"the previous contents of {output_dir} changed during the export ({why}); they were kept in {old}"]


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
