"""Export a segmentation onto the frames of a DICOM series: the core that samples each frame once and hands its
labels to every writer of the export (see :mod:`segalign.writers`).

Layout of an export folder::

    labels/<index>_i<InstanceNumber>[_f<frame>].png   one label image per frame, Rows x Columns, like pixel_array
    masks/, images/, overlays/, index.html            what the options ask for (see :mod:`segalign.writers.png_folder`)
    seg.dcm                                           (options.dicom_seg) the DICOM SEG on the source frames
    rtstruct.dcm                                      (options.rtstruct) the RT Structure Set, pixel-edge contours
    labels.json                                       value, name, colour (and voxel and frame counts) per label
    export.json                                       provenance: inputs, options, affine used, outputs, warnings
    manifest.csv                                      one row per frame in export order

Everything is written into a hidden temporary folder beside the output and renamed into place at the end, so an
interrupted export never leaves a folder that looks complete; the next export into the same parent removes such
folders once it can prove the export that wrote them is dead. Only an earlier SegAlign export (export.json says so,
and the folder holds nothing but :data:`EXPORT_ENTRIES`) is ever replaced, and only with ``overwrite``; a lock file
beside the output (``.NAME.lock``) keeps two exports from writing into the same folder at once.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
from .version import __version__
from .diagnosis import diagnose
from .dicom import Frame, Series, position_along
from .errors import NoOverlapError, SegAlignError
from .geometry import LPS_TO_RAS, pixel_to_lps
from .options import ExportOptions
from .pixels import PixelReader
from .sampling import FrameSampler
from .segmentation import Segmentation
from .signals import Interrupted, signal_number, signals_held
from . import files
from .writers import Writer, writers_for
from .writers.base import ExportContext, ExportSummary, FrameLabels
from .writers.png_folder import (  # noqa: F401 (safe_name, write_png, image_values: used by the Slicer logic, tests)
    ENTRIES as PNG_ENTRIES,
    image_values,
    read_pixels,
    safe_name,
    write_png,
)
from .writers.dicom_seg import ENTRIES as DICOM_SEG_ENTRIES
from .writers.rtstruct import ENTRIES as RTSTRUCT_ENTRIES

#: Everything an export folder may hold: a name ending in "/" is a folder (of PNG images, or of folders of PNG
#: images: masks/<segment>/), any other name a file. A folder is taken for an earlier SegAlign export, which
#: ``overwrite`` may replace, only if its export.json says SegAlign wrote it and it holds nothing but these; a
#: writer adds the names it writes here (its ``ENTRIES``).
EXPORT_ENTRIES = frozenset({"export.json"}) | PNG_ENTRIES | DICOM_SEG_ENTRIES | RTSTRUCT_ENTRIES
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
    outputs: dict[str, str] = field(default_factory=dict)  #: besides the PNG folder: {"dicom_seg": "seg.dcm", ...}

    @property
    def manifest(self) -> Path:
        """The export's manifest.csv."""
        return self.output_dir / "manifest.csv"


def export_segmentation(
    series: Series,
    segmentation: Segmentation,
    output_dir: str | os.PathLike[str],
    options: ExportOptions | None = None,
    *,
    dicom_root: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    warnings: list[str] | None = None,
    progress: ProgressCallback | None = None,
    other_inputs: Sequence[str | os.PathLike[str]] = (),
    threads: int = 2,
    extra_provenance: Mapping[str, object] | None = None,
) -> ExportResult:
    """Sample ``segmentation`` on every frame of ``series`` and write the export folder that ``options`` describe
    (default :class:`~segalign.options.ExportOptions`: label images, manifest, label table).

    ``dicom_root`` is the folder ``source_file`` paths in the manifest are relative to (default: the deepest
    folder holding all the series' files). ``warnings`` are earlier messages (from the scan) to keep with the
    export. ``progress(done, total)`` is called after each frame, and again with ``done == total`` after
    each output that needs all frames (a DICOM SEG, an RTSTRUCT) is written; raising :class:`ExportCancelled` from
    it stops the export and removes everything it wrote. ``other_inputs`` (a label table...) are refused as output
    locations like the DICOM folder and the segmentation, so ``overwrite`` can never delete an input.
    ``threads`` is how many frames are sampled and written at once (1 inside a batch worker, which runs beside
    other workers); ``extra_provenance`` adds entries to export.json (a batch records its job and the fingerprint
    of the job's inputs under ``"batch"``).

    A Siemens mosaic frame gives a label mosaic laid out like its pixel array (each tile sampled on its own
    slice plane), and ``tiles.csv`` says where each tile lies; with ``options.split_mosaics`` every tile is an image
    of its own instead, with its own row (and geometry) in the manifest.

    A non-empty ``output_dir`` is replaced only if it is an earlier SegAlign export (see :func:`export_problem`) and
    ``overwrite`` is set; any other folder is refused, as is a second export into the same folder while one runs.
    The export's folders and files get the permissions the process's umask gives.
    """
    options = options if options is not None else ExportOptions()
    if not isinstance(options, ExportOptions):
        raise SegAlignError(f"options must be an ExportOptions, got {type(options).__name__}")
    if not isinstance(threads, int) or threads < 1:
        raise SegAlignError(f"threads must be a positive integer, got {threads!r}")
    output_dir = Path(output_dir).absolute()
    if series.problems:
        more = f" (and {len(series.problems) - 1} more problems)" if len(series.problems) > 1 else ""
        raise SegAlignError(series.problems[0] + more)
    frames = series.ordered(options.order)
    if not frames:
        raise SegAlignError(f"series {series.uid or '(no SeriesInstanceUID)'} has no frames")
    if options.split_mosaics and any(frame.tiles for frame in frames):
        frames = [tile for frame in frames for tile in frame.split_tiles()]
        if options.order == "position":  # tiles of one mosaic lie at many positions: order them along the normal
            frames = sorted(frames, key=lambda frame: position_along(frame, series.reference_normal))
    root = Path(dicom_root).absolute() if dicom_root is not None else Path(os.path.commonpath(series.files)).absolute()
    if root.is_file():
        root = root.parent
    inputs = [root, *([segmentation.source.absolute()] if segmentation.source else []), *(Path(p).absolute() for p in other_inputs)]
    _check_output_dir(output_dir, overwrite, protected=inputs)

    sampler = FrameSampler(segmentation.labels, segmentation.affine)
    if not any(sampler.may_overlap(frame) for frame in frames):
        raise _no_overlap(series, segmentation)
    writers = writers_for(options)
    for writer in writers:  # what a writer refuses (a SEG without frame of reference...), before anything is made
        check = getattr(writer, "check", None)
        if check is not None:
            check(series, frames, options)

    all_warnings = list(warnings or []) + diagnose(series).warnings() + list(segmentation.warnings)
    normal = series.reference_normal
    created_parents = _make_parents(output_dir)
    lock = _OutputLock(output_dir)
    temporary: Path | None = None
    published = False
    begun: list[Writer] = []
    notes: list[str] = []  # for the user, not for export.json
    try:
        lock.acquire()  # refuses when another export into output_dir is running
        removed = _remove_stale_partials(output_dir.parent)
        if removed:
            folders = "a temporary folder" if len(removed) == 1 else f"{len(removed)} temporary folders"
            notes.append(f"removed {folders} left by an interrupted export (e.g. {removed[0]})")
        _check_output_dir(output_dir, overwrite, protected=inputs)  # again, now that no other export can run
        temporary = _make_partial(output_dir)
        context = ExportContext(
            temporary, series, segmentation, tuple(frames), options, root, normal,
            resample=lambda index: sampler.sample_counted(frames[index])[0],
        )
        for writer in writers:
            writer.begin(context)
            begun.append(writer)
        frames_with_label: dict[int, int] = {}
        without_label = 0
        sampling = _FrameSampling(sampler, frames, writers, threads)
        with contextlib.closing(sampling.run()) as results:  # closing stops the worker threads on any exit
            for index, present in enumerate(results):
                for value in present:
                    frames_with_label[value] = frames_with_label.get(value, 0) + 1
                without_label += not present
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
        shared = _shared_colours(segmentation, sorted(frames_with_label))
        if shared:
            all_warnings.append(shared)
        coverage = _coverage(series, segmentation, sampling.outside, without_label)
        if coverage["frames_outside_extent"]:
            all_warnings.append(_partial_coverage_warning(coverage))
        provenance = _provenance(series, segmentation, root, options, all_warnings)
        provenance["coverage"] = coverage
        provenance.update(extra_provenance or {})
        summary = ExportSummary(frames_with_label, _label_entries(segmentation, frames_with_label), provenance)
        outputs: dict[str, str] = {}
        for writer in writers:
            outputs.update(writer.end(summary))
            if progress is not None:  # after each output too, so that a cancel can still stop a slow SEG or RTSTRUCT
                progress(len(frames), len(frames))
        begun.clear()
        all_warnings += summary.warnings  # the same list object export.json holds: written below
        provenance["outputs"] = outputs
        files.write_json(temporary / "export.json", provenance)  # last: what makes the folder an export
        with signals_held():  # a Ctrl-C now is delivered once the export is in place, not half way
            notes += _publish(temporary, output_dir, overwrite)
            published = True
    except BaseException as error:
        if published:  # a signal held back while publishing: the export is complete, the caller is told to stop
            if isinstance(error, KeyboardInterrupt):
                raise Interrupted(signal_number(error), output_dir) from error
            raise
        for writer in begun:
            with contextlib.suppress(Exception):
                writer.abort()
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
    return ExportResult(output_dir, len(frames), sorted(frames_with_label), all_warnings + notes, outputs)


class _FrameSampling:
    """Samples every frame once and gives its labels to every writer, ``threads`` frames at a time (default two).

    numpy's gather and zlib release the GIL, so two threads use both cores; at most a few frames are in flight,
    so memory stays flat in the number of frames. Results (the label values on each frame) come back in order.
    With one thread, frames are processed in the calling thread, one after the other.
    """

    IN_FLIGHT = 4

    def __init__(
        self, sampler: FrameSampler, frames: list[Frame], writers: Sequence[Writer], threads: int = 2
    ) -> None:
        self.sampler, self.frames, self.writers, self.threads = sampler, frames, writers, threads
        self.needs_pixels = any(writer.needs_pixels for writer in writers)
        self._local = threading.local()  # one PixelReader per thread (it caches a header)
        self.outside = [False] * len(frames)  #: per frame: no pixel inside the segmentation's extent

    def run(self) -> Iterator[list[int]]:
        """The label values present on each frame, frame by frame, in order."""
        if self.threads == 1:
            for index in range(len(self.frames)):
                yield self.process(index)
            return
        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            pending: deque = deque()
            try:
                for index in range(len(self.frames)):
                    pending.append(pool.submit(self.process, index))
                    if len(pending) >= self.IN_FLIGHT:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:  # stopped early (error, cancel): let running frames finish, drop the rest
                for future in pending:
                    future.cancel()

    def process(self, index: int) -> list[int]:
        frame = self.frames[index]
        labels, inside = self.sampler.sample_counted(frame)
        counts = label_counts(labels)
        present = [int(value) for value in np.flatnonzero(counts)]
        tiles_present = [[int(v) for v in np.flatnonzero(label_counts(labels[tile.region()]))] for tile in frame.tiles]
        pixels = None
        if self.needs_pixels:
            reader = getattr(self._local, "reader", None) or PixelReader()
            self._local.reader = reader
            pixels = read_pixels(reader, frame)
        item = FrameLabels(index, frame, labels, counts, present, tiles_present, pixels)
        for writer in self.writers:
            writer.add(item)
        self.outside[index] = inside == 0
        return present


def _shared_colours(segmentation: Segmentation, present: list[int]) -> str | None:
    """A warning naming the labels on the frames whose table gives them one colour (TotalSegmentator's own table
    colours both kidneys alike, and aorta and portal vein), which overlays and viewers cannot tell apart."""
    by_colour: dict[tuple[int, ...], list[int]] = {}
    for value in present:
        by_colour.setdefault(tuple(segmentation.label_table[value].color), []).append(value)
    groups = [values for values in by_colour.values() if len(values) > 1]
    if not groups:
        return None
    described = "; ".join(
        " and ".join(f"{v} {segmentation.label_table[v].name}" for v in values[:4])
        + (f" (and {len(values) - 4} more)" if len(values) > 4 else "")
        + f" are all rgb{tuple(segmentation.label_table[values[0]].color)}"
        for values in groups[:5]
    )
    more = f"; and {len(groups) - 5} more groups" if len(groups) > 5 else ""
    return (f"{sum(len(g) for g in groups)} labels on the frames share a colour with another, so overlays and "
            f"viewers cannot tell them apart: {described}{more}; give them colours with --labels")


def label_counts(labels: np.ndarray) -> np.ndarray:
    """Pixel count of every label value on a frame (index = value; background not counted)."""
    labelled = labels[labels != 0]
    return np.bincount(labelled) if labelled.size else np.zeros(1, dtype=np.int64)


def _coverage(series: Series, segmentation: Segmentation, outside: list[bool], without_label: int) -> dict:
    """How much of the series the segmentation covers: frames outside its extent, frames without a label, and
    both extents (RAS mm, as the segmentation's affine gives them)."""
    return {
        "frames": len(outside),
        "frames_outside_extent": sum(outside),
        "frames_without_label": without_label,
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
    series: Series, segmentation: Segmentation, root: Path, options: ExportOptions, warnings: list[str]
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
        "order": options.order,
        "masks": options.masks,
        "options": options.as_dict(),
        "warnings": warnings,
    }


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


#: What the folders of an export hold: PNG images, except the preview page's per-frame data scripts.
FOLDER_SUFFIXES: dict[str, tuple[str, ...]] = {"viewer/": (".js",)}


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
            inner = _foreign_image(Path(entry.path), depth=1, suffixes=FOLDER_SUFFIXES.get(f"{entry.name}/", (".png",)))
            if inner is not None:
                return f"{entry.name}/{inner}"
        elif entry.name not in allowed or not entry.is_file(follow_symlinks=False):
            return entry.name
    return None


def _foreign_image(folder: Path, depth: int, suffixes: tuple[str, ...] = (".png",)) -> str | None:
    """The first entry of an image folder that is not a PNG file (or one of ``suffixes``) or (``depth`` levels down)
    a folder of them."""
    for entry in _entries(folder):
        if _is_file_manager_metadata(entry):
            continue
        if entry.is_dir(follow_symlinks=False):
            inner = _foreign_image(Path(entry.path), depth - 1, suffixes) if depth > 0 else ""
            if inner is not None:
                return f"{entry.name}/{inner}"
        elif not (entry.name.lower().endswith(suffixes) and entry.is_file(follow_symlinks=False)):
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
                    _remove_images(Path(entry.path), depth=1, suffixes=FOLDER_SUFFIXES.get(f"{entry.name}/", (".png",)))
            elif (entry.name in allowed and entry.is_file(follow_symlinks=False)) or _is_file_manager_metadata(entry):
                os.unlink(entry.path)
        folder.rmdir()
    except OSError:
        return False
    return True


def _remove_images(folder: Path, depth: int, suffixes: tuple[str, ...] = (".png",)) -> None:
    for entry in _entries(folder):
        if entry.is_dir(follow_symlinks=False):
            if depth > 0:
                _remove_images(Path(entry.path), depth - 1, suffixes)
        elif (entry.name.lower().endswith(suffixes) and entry.is_file(follow_symlinks=False)) or (
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
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """Whether ``pid`` has ended and only waits to be reaped (Linux's /proc says so): in a container whose first
    process is not an init, killed processes stay zombies for good, and they write nothing any more."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stream:
            text = stream.read(512)
    except OSError:
        return False
    state = text[text.rfind(b")") + 1:].split()[:1]  # the name, in parentheses, may hold spaces
    return state in ([b"Z"], [b"X"])


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
            files.write_json(folder / PARTIAL_MARKER, _owner())
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
