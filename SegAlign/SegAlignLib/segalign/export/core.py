"""The export core: :func:`export_segmentation` samples a segmentation on each frame of a series once and hands the
frame's labels to every writer of the export (see :mod:`segalign.writers`).

An export goes in steps, each a function or method here: checking the inputs (:func:`_check_inputs`), preparing
the writers in a temporary folder (:meth:`_Export.prepare`), the frame loop (:class:`_FrameSampling`), the report
(:meth:`_Export.finish`, with :mod:`.report`) and publishing (:func:`.folders.publish`). Until the export is
published, a failure or a cancel removes everything it wrote (:meth:`_Export.abort`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from ..dicom import diagnose
from ..dicom import Frame, Series, position_along
from ..errors import SegAlignError
from ..options import ExportOptions
from ..dicom import PixelReader
from ..segmentation import Segmentation, SegmentationSampler
from ..signals import Interrupted, signal_number, signals_held
from .. import files
from ..writers import Writer, writers_for
from ..writers.images.folder import read_pixels
from ..writers.base import ExportContext, FrameLabels, InventedUids
from . import folders, locks, report

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

    A non-empty ``output_dir`` is replaced only if it is an earlier SegAlign export (see
    :func:`~segalign.export.folders.export_problem`) and ``overwrite`` is set; any other folder is refused, as is a
    second export into the same folder while one runs. The export's folders and files get the permissions the
    process's umask gives.
    """
    plan = _check_inputs(series, segmentation, output_dir, options, threads, dicom_root, other_inputs, overwrite)
    all_warnings = list(warnings or []) + diagnose(series).warnings() + list(segmentation.warnings)
    return _Export(plan, overwrite, progress, threads).run(all_warnings, extra_provenance)


@dataclass(frozen=True)
class _Plan:
    """An export whose inputs are checked: what is sampled onto which frames, where it goes, who writes it."""

    series: Series
    segmentation: Segmentation
    options: ExportOptions
    output_dir: Path  #: absolute
    frames: list[Frame]  #: in export order (with ``split_mosaics``, a mosaic's tiles)
    root: Path  #: the folder source files are named relative to
    inputs: list[folders.Input]  #: never an output location, nor around one: the DICOM folder, the segmentation...
    sampler: SegmentationSampler  #: every layer of the segmentation
    writers: list[Writer]


def _check_inputs(
    series: Series,
    segmentation: Segmentation,
    output_dir: str | os.PathLike[str],
    options: ExportOptions | None,
    threads: int,
    dicom_root: str | os.PathLike[str] | None,
    other_inputs: Sequence[str | os.PathLike[str]],
    overwrite: bool,
) -> _Plan:
    """Refuse, before anything is made, what cannot be exported: bad arguments, a series with problems or without
    frames, an output location that may not be written, a segmentation that misses the series, and what a writer
    refuses (a SEG without frame of reference...)."""
    options = options if options is not None else ExportOptions()
    if not isinstance(options, ExportOptions):
        raise SegAlignError(f"options must be an ExportOptions, got {type(options).__name__}")
    if not isinstance(threads, int) or threads < 1:
        raise SegAlignError(f"threads must be a positive integer, got {threads!r}")
    output_dir = Path(output_dir).absolute()
    if series.problems:
        more = f" (and {len(series.problems) - 1} more problems)" if len(series.problems) > 1 else ""
        raise SegAlignError(series.problems[0] + more)
    frames = _frames_in_export_order(series, options)
    given = Path(dicom_root).absolute() if dicom_root is not None else Path(os.path.commonpath(series.files)).absolute()
    root = given.parent if given.is_file() else given
    inputs = export_inputs(given, segmentation, other_inputs)
    folders.check_output_dir(output_dir, overwrite, protected=inputs)

    sampler = SegmentationSampler(segmentation)
    if not any(sampler.may_overlap(frame) for frame in frames):
        raise report.no_overlap_error(series, segmentation)
    writers = writers_for(options)
    for writer in writers:
        if segmentation.overlapping and not writer.writes_overlaps:
            raise SegAlignError(
                f"segments of {segmentation.name} overlap, and the {type(writer).__name__} output cannot hold them; "
                "pass overlap='later-wins' to flatten them", cli_message=f"segments of {segmentation.name} overlap, "
                f"and the {type(writer).__name__} output cannot hold them; use --overlap later-wins to flatten them")
        writer.check(series, frames, options, segmentation)
    return _Plan(series, segmentation, options, output_dir, frames, root, inputs, sampler, writers)


def export_inputs(
    dicom: Path, segmentation: Segmentation, other_inputs: Sequence[str | os.PathLike[str]] = ()
) -> list[folders.Input]:
    """The inputs of an export, which its output may neither be, hold nor lie inside (if a folder): the DICOM folder
    (or file), the segmentation's files or folder of masks, and ``other_inputs`` (a label table...). A file's
    folder is not among them: an output beside the segmentation file is fine."""
    sources = ([segmentation.source] if segmentation.source else []) + list(segmentation.also_from)
    return [
        folders.Input(dicom.absolute(), "DICOM folder" if dicom.is_dir() else "DICOM file"),
        *(folders.Input(path.absolute(), "folder of masks" if path.is_dir() else "segmentation") for path in sources),
        *(folders.Input(Path(path).absolute()) for path in other_inputs),
    ]


def _frames_in_export_order(series: Series, options: ExportOptions) -> list[Frame]:
    """The frames an export writes, in its order; with ``split_mosaics``, each tile of a mosaic is a frame."""
    frames = series.ordered(options.order)
    if not frames:
        raise SegAlignError(f"series {series.uid or '(no SeriesInstanceUID)'} has no frames")
    if options.split_mosaics and any(frame.tiles for frame in frames):
        frames = [tile for frame in frames for tile in frame.split_tiles()]
        if options.order == "position":  # tiles of one mosaic lie at many positions: order them along the normal
            frames = sorted(frames, key=lambda frame: position_along(frame, series.reference_normal))
    return frames


class _Export:
    """One export after its inputs are checked: its steps in order, and what to undo if one fails. Every step
    writes into the temporary folder only, until publishing renames it into place."""

    def __init__(self, plan: _Plan, overwrite: bool, progress: ProgressCallback | None, threads: int) -> None:
        self.plan, self.overwrite, self.progress, self.threads = plan, overwrite, progress, threads
        self.lock = locks.OutputLock(plan.output_dir)
        self.temporary: Path | None = None
        self.begun: list[Writer] = []  #: writers begun and not ended: aborted if the export fails
        self.notes: list[str] = []  #: for the user, not for export.json

    def run(self, warnings: list[str], extra_provenance: Mapping[str, object] | None) -> ExportResult:
        """Prepare, sample every frame, report, publish; ``warnings`` get the export's own."""
        plan = self.plan
        normal = plan.series.reference_normal
        created_parents = folders.make_parents(plan.output_dir)
        published = False
        try:
            self.prepare(normal)
            sampling = self.sample_frames()
            outputs = self.finish(sampling, warnings, extra_provenance)
            with signals_held():  # a Ctrl-C now is delivered once the export is in place, not half way
                self.notes += folders.publish(self.temporary, plan.output_dir, self.overwrite)
                published = True
        except BaseException as error:
            if published:  # a signal held back while publishing: the export is complete, the caller is told to stop
                if isinstance(error, KeyboardInterrupt):
                    raise Interrupted(signal_number(error), plan.output_dir) from error
                raise
            self.abort(created_parents)
            raise
        finally:
            self.lock.release()
        labels_found = sorted(sampling.frames_with_label)
        return ExportResult(plan.output_dir, len(plan.frames), labels_found, warnings + self.notes, outputs)

    def prepare(self, normal: np.ndarray) -> None:
        """Take the output's lock, remove what killed exports left beside it, check the output again (no other
        export can change it now), and begin every writer in a new temporary folder."""
        plan = self.plan
        self.lock.acquire()  # refuses when another export into output_dir is running
        removed = folders.remove_stale_partials(plan.output_dir.parent)
        if removed:
            what = "a temporary folder" if len(removed) == 1 else f"{len(removed)} temporary folders"
            self.notes.append(f"removed {what} left by an interrupted export (e.g. {removed[0]})")
        folders.check_output_dir(plan.output_dir, self.overwrite, protected=plan.inputs)
        self.temporary = folders.make_partial(plan.output_dir)
        context = ExportContext(
            self.temporary, plan.series, plan.segmentation, tuple(plan.frames), plan.options, plan.root, normal,
            resample=lambda index: plan.sampler.sample_counted(plan.frames[index])[0],
            uids=InventedUids(),  # one set for the export: its SEG and RTSTRUCT share what they make up
        )
        for writer in plan.writers:
            writer.begin(context)
            self.begun.append(writer)

    def sample_frames(self) -> _FrameSampling:
        """The frame loop: every frame sampled once and handed to every writer, with progress after each."""
        plan = self.plan
        sampling = _FrameSampling(plan.sampler, plan.frames, plan.writers, self.threads, plan.segmentation.layer_of)
        with contextlib.closing(sampling.run()) as results:  # closing stops the worker threads on any exit
            for done, _ in enumerate(results, start=1):
                if self.progress is not None:
                    self.progress(done, len(plan.frames))
        if plan.sampler.pixels_inside == 0:
            raise report.no_overlap_error(plan.series, plan.segmentation, boxes_meet=True)
        return sampling

    def finish(
        self, sampling: _FrameSampling, warnings: list[str], extra_provenance: Mapping[str, object] | None
    ) -> dict[str, str]:
        """The report: the warnings and export.json's content, every writer's end, then export.json (last: it is
        what makes the folder an export). Returns the outputs the writers recorded."""
        plan = self.plan
        summary = report.summarise(
            plan.series, plan.segmentation, plan.root, plan.options, sampling.frames_with_label,
            sampling.frames_without_label, sampling.outside, warnings, extra_provenance,
        )
        outputs: dict[str, str] = {}
        for writer in plan.writers:
            outputs.update(writer.end(summary))
            if self.progress is not None:  # after each output too: a cancel can still stop a slow SEG or RTSTRUCT
                self.progress(len(plan.frames), len(plan.frames))
        self.begun.clear()
        warnings += summary.warnings  # the same list object export.json holds: written below
        summary.provenance["outputs"] = outputs
        files.write_json(self.temporary / "export.json", summary.provenance)
        return outputs

    def abort(self, created_parents: list[Path]) -> None:
        """Undo an export that failed or was cancelled before it was published: abort the writers, remove the
        temporary folder, release the lock and remove the parent folders this export made (if still empty)."""
        for writer in self.begun:
            with contextlib.suppress(Exception):
                writer.abort()
        if self.temporary is not None:
            shutil.rmtree(self.temporary, ignore_errors=True)
        self.lock.release()
        folders.remove_parents(created_parents)


class _FrameSampling:
    """Samples every frame once and gives its labels to every writer, ``threads`` frames at a time (default two).

    numpy's gather and zlib release the GIL, so two threads use both cores; at most a few frames are in flight,
    so memory stays flat in the number of frames. Results (the label values on each frame) come back in order, and
    are counted as they do (:attr:`frames_with_label`, :attr:`frames_without_label`, :attr:`outside`).
    With one thread, frames are processed in the calling thread, one after the other.
    """

    IN_FLIGHT = 4

    def __init__(
        self, sampler: SegmentationSampler, frames: list[Frame], writers: Sequence[Writer], threads: int = 2,
        layer_of: Callable[[int], int] = lambda value: 0,
    ) -> None:
        self.sampler, self.frames, self.writers, self.threads = sampler, frames, writers, threads
        self.layer_of = layer_of
        self.needs_pixels = any(writer.needs_pixels for writer in writers)
        self._local = threading.local()  # one PixelReader per thread (it caches a header)
        self.outside = [False] * len(frames)  #: per frame: no pixel inside the segmentation's extent
        self.frames_with_label: dict[int, int] = {}  #: label value -> frames it is on, of the frames done
        self.frames_without_label = 0  #: of the frames done

    def run(self) -> Iterator[list[int]]:
        """The label values present on each frame, frame by frame, in order (each counted before it is given)."""
        with contextlib.closing(self._in_order()) as results:  # closed with this one: stops the worker threads
            for present in results:
                for value in present:
                    self.frames_with_label[value] = self.frames_with_label.get(value, 0) + 1
                self.frames_without_label += not present
                yield present

    def _in_order(self) -> Iterator[list[int]]:
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
        """Sample frame ``index``, give its labels to every writer; returns the label values on it."""
        frame = self.frames[index]
        layers, inside = self.sampler.sample_counted(frame)
        values = self.sampler.layer_values
        counts = layer_counts(layers, values)
        present = [int(value) for value in np.flatnonzero(counts)]
        tiles_present = [[int(v) for v in np.flatnonzero(layer_counts([layer[tile.region()] for layer in layers],
                                                                       values))]
                         for tile in frame.tiles]
        pixels = None
        if self.needs_pixels:
            reader = getattr(self._local, "reader", None) or PixelReader()
            self._local.reader = reader
            pixels = read_pixels(reader, frame)
        item = FrameLabels(index, frame, layers[0], counts, present, tiles_present, pixels, layers, self.layer_of)
        for writer in self.writers:
            writer.add(item)
        self.outside[index] = inside == 0
        return present


def label_counts(labels: np.ndarray) -> np.ndarray:
    """Pixel count of every label value on a frame (index = value; background not counted)."""
    labelled = labels[labels != 0]
    return np.bincount(labelled) if labelled.size else np.zeros(1, dtype=np.int64)


#: A layer after the first holding at most this many values is counted value by value (a BODY layer: one value,
#: half the frame), not by gathering its labelled pixels.
FEW_VALUES = 4


def layer_counts(layers: Sequence[np.ndarray], layer_values: Sequence[Sequence[int]] = ()) -> np.ndarray:
    """:func:`label_counts` of a frame's layers together (a value is in one layer only). ``layer_values`` (the values
    each layer holds, :attr:`SegmentationSampler.layer_values`) lets a layer of a few values be counted value by
    value, and one of a single value with one count of its non-zero pixels."""
    if len(layers) == 1:
        return label_counts(layers[0])
    counts = [label_counts(layers[0])]
    for index, layer in enumerate(layers[1:], start=1):
        values = layer_values[index] if index < len(layer_values) else None
        if not layer.any():  # a layer of a few small segments is empty on most frames
            continue
        if values is not None and 0 < len(values) <= FEW_VALUES:
            part = np.zeros(max(values) + 1, dtype=np.int64)
            if len(values) == 1:
                part[values[0]] = np.count_nonzero(layer)
            else:
                for value in values:
                    part[value] = np.count_nonzero(layer == value)
            counts.append(part)
        else:
            counts.append(label_counts(layer))
    total = np.zeros(max(len(c) for c in counts), dtype=np.int64)
    for c in counts:
        total[:len(c)] += c
    return total
