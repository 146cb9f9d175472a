"""The notebook API: :func:`align` puts a segmentation on a DICOM series in memory, frame by frame, as arrays.

::

    import segalign

    a = segalign.align("ct_dicom/", "ct_seg.nii.gz")
    a.labels            # (frames, rows, columns), frame i lined up with the pixel_array of a[i].frame
    a.mask("liver")     # the same as booleans
    a[0].pixels()       # that frame's modality values (HU for CT)
    a.export("out/", overlays=True)   # what `segalign export` writes

The labels are exactly those ``segalign export`` writes as PNGs (the same sampler, in the same order): every frame's
pixel centres from its own ImagePositionPatient, ImageOrientationPatient and PixelSpacing, nearest neighbour with
ties rounded up. Nothing is written to disk, except for DICOM given as pydicom Datasets (see :func:`align`).
"""

from __future__ import annotations

import base64
import copy
import html
import io
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence, overload

import numpy as np

from .dicom import DicomScan, Frame, Series, diagnose, scan_folder
from .dicom.model import Order, plural
from .dicom.scan import series_from_files
from .errors import SegAlignError, short
from .options import ExportOptions
from .segmentation import Label, Overlap, Segmentation, SegmentationSampler

__all__ = ["AlignedFrame", "Alignment", "align"]

#: A DICOM argument: a folder, one file or a list of files, a list of pydicom Datasets, a scan or a series.
DicomInput = Any
#: A segmentation argument: a path, a nibabel or SimpleITK image, ``(array, RAS affine)``, or a Segmentation.
SegmentationInput = Any

#: Frames shown as thumbnails when an alignment displays itself in Jupyter, and their size (pixels, longest side).
THUMBNAILS = 4
THUMBNAIL_SIZE = 160
#: Labels listed when an alignment displays itself (the rest are counted).
LISTED_LABELS = 40


def align(
    dicom: DicomInput,
    segmentation: SegmentationInput,
    *,
    series: str | int | None = None,
    order: Order = "instance",
    label_table: str | os.PathLike[str] | Mapping[int, Label] | None = None,
    overlap: Overlap = "keep",
    allow_many_labels: bool = False,
    skip_unplaced_contours: bool = False,
) -> "Alignment":
    """The segmentation on every frame of the series, in memory: an :class:`Alignment` (``len``, ``a[i]``,
    ``a.labels``, ``a.mask(name)``, ``a.export(out)``). Frames are sampled when their labels are first asked for.

    ``dicom`` is a folder (scanned recursively; ``series`` chooses one when it holds several, by
    SeriesInstanceUID, SeriesNumber or index as ``segalign info`` lists them), a DICOM file or a list of files of
    one series, a list of pydicom ``Dataset`` objects of one series already in memory (from a PACS client; they
    are written once to a private temporary folder, removed with the alignment, so that every frame is read as a
    file would be), a :class:`DicomScan` or a :class:`Series`.

    ``segmentation`` is a path in any format :func:`~segalign.load_segmentation` reads, a nibabel image, a
    SimpleITK image, an ``(array, affine)`` pair whose affine takes ``(i, j, k, 1)`` to **RAS** millimetres
    (nibabel's convention), or a loaded :class:`Segmentation`. ``label_table``, ``overlap``, ``allow_many_labels``
    and ``skip_unplaced_contours`` are :func:`~segalign.load_segmentation`'s, for a segmentation not loaded yet.

    An RT Structure Set (``align(dicom, "rtss.dcm")``) is placed on the series it was drawn on: of a folder, the one
    it references (also when ``series`` chooses another, onto which it is then sampled); of a folder of several
    series with no ``series`` given, the export is onto that one.

    ``order`` is ``"instance"`` (InstanceNumber, then frame number: the scanner's order, the default) or
    ``"position"`` (along the slice normal).

    Raises :class:`SegAlignError` (one line saying why) for a series with frames that cannot be placed, and for
    a segmentation that lies on none of its frames.
    """
    if order not in ("instance", "position"):
        raise SegAlignError(f"order must be 'instance' or 'position', got {short(order)}")
    warnings: list[str] = []
    keep: list[Any] = []  # what must live as long as the alignment (a temporary folder of Datasets)
    chosen, root, datasets, candidates = _series_of(dicom, series, warnings, keep, segmentation)
    loaded = _segmentation_of(segmentation, label_table, overlap, allow_many_labels, candidates,
                              skip_unplaced_contours)
    return Alignment(chosen, loaded, order, root=root, warnings=warnings, _datasets=datasets, _keep=keep)


class Alignment(Sequence["AlignedFrame"]):
    """A segmentation sampled on the frames of a DICOM series, in the order asked for (see :func:`align`).

    ``len(a)`` is the number of frames; ``a[i]`` (and iteration) gives an :class:`AlignedFrame`. The arrays of
    the whole series (:attr:`labels`, :attr:`layers`, :meth:`mask`) are computed once, when first asked for, and
    kept; a single frame's labels are sampled on their own until then.
    """

    def __init__(
        self, series: Series, segmentation: Segmentation, order: Order = "instance", *, root: Path | None = None,
        warnings: Sequence[str] = (), _datasets: Mapping[Path, Any] | None = None, _keep: Sequence[Any] = (),
    ) -> None:
        if series.problems:
            more = f" (and {len(series.problems) - 1} more problems)" if len(series.problems) > 1 else ""
            raise SegAlignError(series.problems[0] + more)
        self.series = series  #: the DICOM series
        self.segmentation = segmentation  #: the segmentation, as read
        self.order: Order = order  #: the order of the frames: "instance" or "position"
        self.frames: list[Frame] = series.ordered(order)  #: the frames, in :attr:`order`
        if not self.frames:
            raise SegAlignError(f"series {series.uid or '(no SeriesInstanceUID)'} has no frames")
        #: What the user should know: the scan's, the series' and the segmentation's warnings.
        self.warnings: list[str] = list(warnings) + diagnose(series).warnings() + list(segmentation.warnings)
        self._scan_warnings = list(warnings)
        self._root = root
        self._datasets = dict(_datasets or {})
        self._keep = list(_keep)
        self._sampler = SegmentationSampler(segmentation)
        if not any(self._sampler.may_overlap(frame) for frame in self.frames):
            from .export.report import no_overlap_error

            raise no_overlap_error(series, segmentation)
        self._layers: list[np.ndarray] | None = None

    # ------------------------------------------------------------------------------------------ frames
    def __len__(self) -> int:
        return len(self.frames)

    @overload
    def __getitem__(self, index: int) -> "AlignedFrame": ...

    @overload
    def __getitem__(self, index: slice) -> list["AlignedFrame"]: ...

    def __getitem__(self, index: int | slice) -> "AlignedFrame | list[AlignedFrame]":
        if isinstance(index, slice):
            return [AlignedFrame(self, i) for i in range(*index.indices(len(self)))]
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"frames are indexed by integers or slices, not {type(index).__name__}")
        position = int(index) + len(self) if index < 0 else int(index)
        if not 0 <= position < len(self):
            raise IndexError(f"frame {index} out of range: the alignment has {plural(len(self), 'frame')}")
        return AlignedFrame(self, position)

    def __iter__(self) -> Iterator["AlignedFrame"]:
        return (AlignedFrame(self, index) for index in range(len(self)))

    # ------------------------------------------------------------------------------------------ arrays
    @property
    def labels(self) -> np.ndarray:
        """Every frame's labels as one ``(frames, rows, columns)`` array (uint8, or uint16 for values over 255);
        ``labels[i]`` is lined up with the ``pixel_array`` of frame ``i``. Refused when frames differ in shape,
        and when segments overlap (one label per pixel cannot hold them: use :attr:`layers` or :meth:`mask`)."""
        self._refuse_overlaps("labels")
        return self._all_layers()[0]

    @property
    def layers(self) -> list[np.ndarray]:
        """One ``(frames, rows, columns)`` label array per layer of the segmentation: a single one unless
        segments overlap, when each segment is whole in the layer that holds it (see :meth:`layer_of`)."""
        return list(self._all_layers())

    def mask(self, segment: str | int) -> np.ndarray:
        """Where a segment is, on every frame: ``(frames, rows, columns)`` booleans. ``segment`` is a label
        value or a name (exact, else ignoring case); overlapping segments are each whole."""
        value = self.value_of(segment)
        return self._all_layers()[self.segmentation.layer_of(value)] == value

    @property
    def segments(self) -> list[Label]:
        """The segments of the segmentation, by value: each a :class:`Label` (``value``, ``name``, ``color``)."""
        table = self.segmentation.label_table
        return [table[value] for value in self.segmentation.values]

    def value_of(self, segment: str | int) -> int:
        """The label value of a segment given by value or by name (exact, else ignoring case)."""
        values = self.segmentation.values
        table = self.segmentation.label_table
        if isinstance(segment, (int, np.integer)) and not isinstance(segment, (bool, np.bool_)):
            if int(segment) not in values:
                raise SegAlignError(f"no segment with value {int(segment)} in {self.segmentation.name} "
                                    f"(its values: {_some(values)})")
            return int(segment)
        if not isinstance(segment, str):
            raise TypeError(f"a segment is a name or a label value, not {type(segment).__name__}")
        for matches in ([v for v in values if table[v].name == segment],
                        [v for v in values if table[v].name.casefold() == segment.casefold()]):
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise SegAlignError(f"{len(matches)} segments are named {short(segment)} (values "
                                    f"{_some(matches)}): give the value")
        raise SegAlignError(f"no segment named {short(segment)} in {self.segmentation.name} (its segments: "
                            f"{_some([table[v].name for v in values])})")

    def layer_of(self, segment: str | int) -> int:
        """The index in :attr:`layers` of the layer holding a segment (always 0 unless segments overlap)."""
        return self.segmentation.layer_of(self.value_of(segment))

    def _refuse_overlaps(self, what: str) -> None:
        if self.segmentation.overlapping:
            raise SegAlignError(
                f"segments of {self.segmentation.name} overlap, so one label per pixel cannot hold them: use "
                f".layers (one label array per layer) or .mask(name), or align(..., overlap='later-wins') to "
                f"flatten them (asked for .{what})")

    def _same_shape(self) -> tuple[int, int]:
        shapes: dict[tuple[int, int], int] = {}
        for frame in self.frames:
            shapes[(frame.rows, frame.columns)] = shapes.get((frame.rows, frame.columns), 0) + 1
        if len(shapes) > 1:
            listed = ", ".join(f"{r}x{c} ({plural(n, 'frame')})" for (r, c), n in
                               sorted(shapes.items(), key=lambda item: -item[1]))
            raise SegAlignError(f"the frames differ in shape ({listed}), so they do not stack into one array: "
                                "take a[i].labels frame by frame")
        return next(iter(shapes))

    def _all_layers(self) -> list[np.ndarray]:
        """Every layer on every frame, sampled once (two frames at a time: numpy's gather releases the GIL)."""
        if self._layers is None:
            rows, columns = self._same_shape()
            samplers = self._sampler.samplers
            layers = [np.zeros((len(self.frames), rows, columns), dtype=s.labels.dtype) for s in samplers]

            def sample(index: int) -> None:
                for layer, sampler in zip(layers, samplers):
                    layer[index] = sampler.sample(self.frames[index])

            with ThreadPoolExecutor(max_workers=2) as pool:
                for _ in pool.map(sample, range(len(self.frames))):
                    pass
            self._layers = layers
        return self._layers

    def _frame_layers(self, index: int) -> list[np.ndarray]:
        if self._layers is not None:
            return [layer[index] for layer in self._layers]
        return [sampler.sample(self.frames[index]) for sampler in self._sampler.samplers]

    # ------------------------------------------------------------------------------------------ export
    def export(
        self,
        output_dir: str | os.PathLike[str],
        *,
        options: ExportOptions | None = None,
        overwrite: bool = False,
        progress: Any = None,
        threads: int = 2,
        **choices: Any,
    ):
        """Write what ``segalign export`` writes for this series and segmentation into ``output_dir``, and return
        its :class:`~segalign.ExportResult`.

        ``choices`` are :class:`~segalign.options.ExportOptions`' fields, named as the command line's flags:
        ``masks=True``, ``overlays=True`` (or an ``OverlayOptions``), ``images=True``, ``stats=True``,
        ``split_mosaics=True``, ``dicom_seg=True`` (or ``"LABELMAP"``, or a ``DicomSegOptions``), ``rtstruct=True``;
        ``order`` defaults to this alignment's. Or pass ``options`` whole. ``overwrite``, ``progress`` and
        ``threads`` are :func:`~segalign.export_segmentation`'s.
        """
        from .export import export_segmentation

        if options is not None and choices:
            raise SegAlignError(f"give options= or the choices ({', '.join(sorted(choices))}), not both")
        if options is None:
            try:
                options = ExportOptions(**{"order": self.order, **choices})
            except TypeError:
                known = sorted(ExportOptions.__dataclass_fields__)
                unknown = sorted(set(choices) - set(known))
                raise SegAlignError(f"unknown export choice {', '.join(unknown)}: choose from {', '.join(known)}") from None
        return export_segmentation(
            self.series, self.segmentation, output_dir, options, dicom_root=self._root, overwrite=overwrite,
            warnings=self._scan_warnings, progress=progress, threads=threads,
        )

    # ------------------------------------------------------------------------------------------ showing itself
    def __repr__(self) -> str:
        layers = f", {len(self.segmentation.layers)} layers" if self.segmentation.overlapping else ""
        return (f"<Alignment of {self.segmentation.name} ({len(self.segmentation.values)} segments{layers}) on "
                f"{plural(len(self), 'frame')} of series {self.series.uid or '(no SeriesInstanceUID)'}, "
                f"{self.order} order>")

    def _repr_html_(self) -> str:
        """What Jupyter shows: the series and segmentation, the segments with their colours, a few frames with
        their labels drawn on them. All text from the inputs is escaped."""
        series, seg = self.series, self.segmentation
        lines = [
            f"<b>SegAlign alignment</b>: {_e(seg.name)} on {plural(len(self), 'frame')}, {_e(self.order)} order",
            f"series {_e(series.uid or '(no SeriesInstanceUID)')} (#{_e(series.series_number or '-')}, "
            f"{_e(series.modality or '?')}, '{_e(series.description or 'no description')}')",
            f"segmentation {_e(seg.name)}: {'x'.join(map(str, seg.labels.shape))}, affine from "
            f"{_e(seg.affine_source)}, {plural(len(seg.values), 'segment')}"
            + (f" in {len(seg.layers)} layers (they overlap)" if seg.overlapping else ""),
        ]
        if self.warnings:
            lines.append(f"{plural(len(self.warnings), 'warning')}: {_e(short(self.warnings[0], 200))}")
        chosen = _spread(self._frames_with_labels(), THUMBNAILS)
        thumbnails = "".join(_thumbnail(AlignedFrame(self, index)) for index in chosen)
        return (f"<div class='segalign-alignment'>{'<br>'.join(lines)}"
                f"<div>{thumbnails}</div>{_segment_table(self.segments)}</div>")

    def _frames_with_labels(self) -> list[int]:
        """Frames holding a label (all frames when none does; every frame sampled once for this)."""
        found = [index for index in range(len(self)) if any(layer.any() for layer in self._frame_layers(index))]
        return found or list(range(len(self)))


class AlignedFrame:
    """One frame of an :class:`Alignment`: its labels, and the DICOM frame they lie on."""

    def __init__(self, alignment: Alignment, index: int) -> None:
        self.alignment = alignment
        self.index = index  #: the frame's index in the alignment's order
        self.frame: Frame = alignment.frames[index]  #: SOPInstanceUID, InstanceNumber, frame number, file, geometry

    @property
    def labels(self) -> np.ndarray:
        """The frame's labels, ``(rows, columns)``, laid out like its ``pixel_array`` (a mosaic's, tile by tile).
        Refused where segments overlap (use :attr:`layers` or :meth:`mask`)."""
        self.alignment._refuse_overlaps("labels")
        return self.alignment._frame_layers(self.index)[0]

    @property
    def layers(self) -> list[np.ndarray]:
        """The frame's labels in every layer of the segmentation (one unless segments overlap)."""
        return self.alignment._frame_layers(self.index)

    def mask(self, segment: str | int) -> np.ndarray:
        """Where a segment (name or value) is on this frame: ``(rows, columns)`` booleans."""
        value = self.alignment.value_of(segment)
        return self.layers[self.alignment.segmentation.layer_of(value)] == value

    @property
    def dataset(self) -> Any:
        """The frame's DICOM header (pydicom, without pixel data), read when first asked for; the Dataset itself
        when the alignment was made from Datasets."""
        given = self.alignment._datasets.get(self.frame.source_file)
        if given is not None:
            return given
        import pydicom

        return pydicom.dcmread(self.frame.source_file, stop_before_pixels=True)

    def pixels(self) -> np.ndarray:
        """The frame's modality values (stored values through RescaleSlope and RescaleIntercept: HU for CT) as
        float64 ``(rows, columns)``, decoded now."""
        from .dicom import PixelReader

        return PixelReader().read(self.frame).values

    def __repr__(self) -> str:
        frame = self.frame
        number = f", frame {frame.frame_number}" if frame.number_of_frames > 1 else ""
        return (f"<AlignedFrame {self.index} of {len(self.alignment)}: InstanceNumber {frame.instance_number}{number}, "
                f"{frame.rows}x{frame.columns}, {frame.source_file.name}>")

    def _repr_html_(self) -> str:
        frame = self.frame
        facts = (f"<b>frame {self.index}</b> of {len(self.alignment)}: InstanceNumber {_e(frame.instance_number)}, "
                 f"frame {frame.frame_number} of {frame.number_of_frames}, {frame.rows}x{frame.columns}<br>"
                 f"SOPInstanceUID {_e(frame.sop_instance_uid)}<br>file {_e(frame.source_file)}<br>"
                 f"position {_e(', '.join(f'{v:g}' for v in frame.position))} mm")
        present = sorted({int(v) for layer in self.layers for v in np.unique(layer) if v})
        table = self.alignment.segmentation.label_table
        return (f"<div class='segalign-frame'>{facts}<div>{_thumbnail(self, size=320)}</div>"
                f"{_segment_table([table[v] for v in present])}</div>")


# ---------------------------------------------------------------------------------------------- arguments

def _series_of(
    dicom: DicomInput, series: str | int | None, warnings: list[str], keep: list[Any],
    segmentation: SegmentationInput = None,
) -> tuple[Series, Path | None, dict[Path, Any], list[Series]]:
    """The series of a DICOM argument, the folder its files are named relative to, the Datasets it was given as (by
    the file each was written to), and every series it holds (what an RT Structure Set may have been drawn on)."""
    if isinstance(dicom, Series):
        _no_series_choice(series, "a Series")
        return dicom, None, {}, [dicom]
    if isinstance(dicom, DicomScan):
        warnings.extend(dicom.warnings)
        return _select(dicom, series, segmentation), dicom.root, {}, list(dicom.series)
    if isinstance(dicom, (str, os.PathLike)):
        path = Path(dicom)
        if path.is_file():
            _no_series_choice(series, "a file")
            chosen = series_from_files([path])
            return chosen, path.parent, {}, [chosen]
        scan = scan_folder(path)
        warnings.extend(scan.warnings)
        return _select(scan, series, segmentation), path, {}, list(scan.series)
    if isinstance(dicom, Iterable) and not isinstance(dicom, (bytes, Mapping)):
        items = list(dicom)
        if not items:
            raise SegAlignError("no DICOM files or datasets given")
        if all(isinstance(item, (str, os.PathLike)) for item in items):
            _no_series_choice(series, "a list of files")
            chosen = series_from_files(items)
            return chosen, None, {}, [chosen]
        import pydicom

        if all(isinstance(item, pydicom.Dataset) for item in items):
            _no_series_choice(series, "a list of Datasets")
            chosen, root, by_path = _series_of_datasets(items, keep)
            return chosen, root, by_path, [chosen]
    raise SegAlignError(
        "dicom must be a folder, a DICOM file, a list of files or of pydicom Datasets, a DicomScan or a Series; "
        f"got {type(dicom).__name__}")


def _select(scan: DicomScan, series: str | int | None, segmentation: SegmentationInput) -> Series:
    """The series ``series`` names; of several with none named, the one an RT Structure Set given as the
    segmentation was drawn on (as ``segalign export`` chooses it); else the only one."""
    if series is None and len(scan.series) > 1 and isinstance(segmentation, (str, os.PathLike)):
        from .readers import structure_set_series

        drawn_on = structure_set_series(segmentation, scan.series)
        if drawn_on is not None:
            return drawn_on
    return scan.select(series)


def _no_series_choice(series: object, given: str) -> None:
    if series is not None:
        raise SegAlignError(f"series= chooses among the series of a folder; {given} is one series already")


def _series_of_datasets(datasets: list[Any], keep: list[Any]) -> tuple[Series, Path, dict[Path, Any]]:
    """Datasets written as files into a private temporary folder (removed when the alignment is), each as it is
    (a shallow copy gets file meta information where it has none: the transfer syntax it was decoded from)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    folder = tempfile.TemporaryDirectory(prefix="segalign-datasets-")
    keep.append(folder)
    root = Path(folder.name)
    by_path: dict[Path, Any] = {}
    for index, dataset in enumerate(datasets):
        path = root / f"dataset-{index:05d}.dcm"
        written = copy.copy(dataset)
        meta = FileMetaDataset(getattr(dataset, "file_meta", None) or FileMetaDataset())
        if "TransferSyntaxUID" not in meta:
            meta.TransferSyntaxUID = ExplicitVRLittleEndian  # a Dataset built or decoded in memory: native pixels
        for keyword, tag in (("MediaStorageSOPClassUID", "SOPClassUID"),
                             ("MediaStorageSOPInstanceUID", "SOPInstanceUID")):
            if keyword not in meta and tag in dataset:
                setattr(meta, keyword, getattr(dataset, tag))
        written.file_meta = meta
        try:
            pydicom.dcmwrite(path, written, enforce_file_format=False)
        except Exception as error:
            raise SegAlignError(f"dataset {index} of the list cannot be written as DICOM: "
                                f"{type(error).__name__}: {short(error, 160)}") from None
        by_path[path] = dataset
    return series_from_files(list(by_path)), root, by_path


def _segmentation_of(
    segmentation: SegmentationInput, label_table: Any, overlap: Overlap, allow_many_labels: bool,
    candidates: Sequence[Series] = (), skip_unplaced_contours: bool = False,
) -> Segmentation:
    from .readers import load_segmentation
    from .readers.memory import IN_MEMORY, is_in_memory, segmentation_in_memory

    if isinstance(segmentation, Segmentation):
        if label_table is not None:
            raise SegAlignError("label_table= names the labels of a segmentation being read; this one is loaded")
        return segmentation
    if isinstance(segmentation, (str, os.PathLike)):
        return load_segmentation(segmentation, label_table, overlap, allow_many_labels, reference=candidates,
                                 skip_unplaced_contours=skip_unplaced_contours)
    if is_in_memory(segmentation):
        return segmentation_in_memory(segmentation, label_table, overlap, allow_many_labels)
    raise SegAlignError(f"segmentation must be a path, {IN_MEMORY}, or a Segmentation; got "
                        f"{type(segmentation).__name__}")


# ---------------------------------------------------------------------------------------------- display

def _e(value: object) -> str:
    """Text from the inputs, inert in HTML."""
    return html.escape(str(value), quote=True)


def _some(items: Sequence[object], limit: int = 8) -> str:
    shown = ", ".join(short(item, 40) for item in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "") if items else "none"


def _spread(indices: list[int], count: int) -> list[int]:
    """``count`` of ``indices`` spread evenly (all of them when there are fewer)."""
    if len(indices) <= count:
        return indices
    return [indices[round(i * (len(indices) - 1) / (count - 1))] for i in range(count)]


def _segment_table(labels: Sequence[Label]) -> str:
    rows = "".join(
        f"<tr><td style='text-align:right'>{label.value}</td><td><span style='display:inline-block;width:1em;"
        f"height:1em;background:rgb{tuple(int(c) for c in label.color)}'></span></td><td>{_e(label.name)}</td></tr>"
        for label in labels[:LISTED_LABELS])
    more = f"<tr><td colspan=3>and {len(labels) - LISTED_LABELS} more</td></tr>" if len(labels) > LISTED_LABELS else ""
    return f"<table><tr><th>value</th><th></th><th>segment</th></tr>{rows}{more}</table>" if labels else ""


def _thumbnail(frame: AlignedFrame, size: int = THUMBNAIL_SIZE) -> str:
    """The frame (its own window) with its labels drawn on it, as an inline PNG; without pixels when they cannot
    be decoded (said in the title)."""
    from PIL import Image

    from .writers.images.render import color_lookup, overlay

    layers = frame.layers
    table = frame.alignment.segmentation.label_table
    lookup = color_lookup(table, max([int(layer.max()) for layer in layers] + [1]))
    note = ""
    try:
        from .dicom import PixelReader

        gray = PixelReader().read(frame.frame).display()
    except SegAlignError as error:
        gray, note = np.zeros(layers[0].shape, dtype=np.uint8), f" (pixels not shown: {error})"
    rgb = overlay(gray, layers[0], lookup, 0.4, more=layers[1:])
    image = Image.fromarray(rgb)
    image.thumbnail((size, size), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    title = _e(f"frame {frame.index}: InstanceNumber {frame.frame.instance_number}{note}")
    return (f"<figure style='display:inline-block;margin:2px'><img src='data:image/png;base64,{data}' "
            f"title='{title}' alt='{title}'><figcaption style='font-size:small'>{title}</figcaption></figure>")
