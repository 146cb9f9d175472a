"""The protocol every output of an export follows, and what the export core hands to it.

The core (:func:`segalign.export.export_segmentation`) samples the segmentation on each frame once and gives the
frame's labels to every writer; a writer never samples, never resamples and never sees a whole volume:

0. ``check(series, frames, options, segmentation)``: before anything is written, refuse (raise
   :class:`~segalign.errors.SegAlignError`) a series, or a segmentation, the writer cannot write.
1. ``begin(context)``: once, before any frame, with the export's :class:`ExportContext`.
2. ``add(frame)``: once per frame, with its :class:`FrameLabels`. Calls come from several threads at once, for
   different frames, in any order: a writer keeps what it needs by ``frame.index``, thread-safely.
3. ``end(summary)``: once, after the last frame, with the :class:`ExportSummary`. Writes what needs all frames
   (a manifest, a DICOM SEG) and returns the outputs to record in export.json (``{"dicom_seg": "seg.dcm"}``).

``abort()`` is called instead of ``end`` when the export fails or is cancelled: close what is open (the core
deletes the temporary folder the writer wrote into). Everything a writer writes goes under ``context.folder``, and
every name it writes there must be one of :data:`segalign.export.EXPORT_ENTRIES`.

Every writer derives from :class:`Writer`, whose ``check`` and ``abort`` do nothing: the core calls all five
methods of every writer.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from pydicom.uid import generate_uid

from ..dicom import Frame, Series
from ..options import ExportOptions
from ..dicom import FramePixels
from ..segmentation import Segmentation


class InventedUids:
    """The UIDs one export makes up where its source has none (a StudyInstanceUID, a SeriesInstanceUID blanked by an
    anonymiser), shared by every writer of the export: the SEG and the RTSTRUCT of one export are in the same
    study and reference the source series by the same UID. Thread-safe; a UID is made the first time it is asked
    for and the same one is given after."""

    def __init__(self) -> None:
        self._uids: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def get(self, role: str, source: str) -> str:
        """The UID this export uses as ``role`` (a keyword: ``"StudyInstanceUID"``) of ``source`` (what identifies
        the source: its first SOPInstanceUID)."""
        with self._lock:
            uid = self._uids.get((role, source))
            if uid is None:
                uid = self._uids[(role, source)] = generate_uid()
            return uid

    def made(self) -> dict[tuple[str, str], str]:
        """Every UID made so far, by (role, source)."""
        with self._lock:
            return dict(self._uids)


@dataclass(frozen=True)
class ExportContext:
    """What every writer may know about the export before the first frame."""

    folder: Path  #: where the writer writes (the export's temporary folder, renamed into place at the end)
    series: Series
    segmentation: Segmentation
    frames: Sequence[Frame]  #: in export order; ``FrameLabels.index`` indexes this
    options: ExportOptions
    dicom_root: Path  #: the folder source files are named relative to
    normal: np.ndarray  #: the series' reference slice normal (LPS), along which slice positions are measured
    #: The labels of frame ``index`` sampled again, one array per layer (for a writer that learns only at the end
    #: what it must write).
    resample: Callable[[int], list[np.ndarray]]
    #: The UIDs the export makes up where the source has none, one set for every writer (made once per export).
    uids: InventedUids = field(default_factory=InventedUids)


@dataclass
class FrameLabels:
    """One frame's labels, as the core sampled them, with what writers commonly need from them.

    Where segments overlap, the segmentation has several layers (see :mod:`segalign.segmentation.layers`) and
    so does the frame: ``layers[n]`` is layer ``n`` sampled on it, ``labels`` the first. A writer that writes
    segments one by one takes each one's pixels with :meth:`mask`, which is right whatever the layers.
    """

    index: int  #: position in export order
    frame: Frame
    labels: np.ndarray  #: ``(rows, columns)`` uint8/uint16 label values, laid out like the frame's pixel_array
    counts: np.ndarray  #: pixel count per label value (index = value; background not counted; every layer)
    present: list[int]  #: label values on the frame, ascending (every layer)
    tiles_present: list[list[int]]  #: for a mosaic frame, the label values on each tile
    pixels: FramePixels | None = None  #: the frame's pixel data, read only when a writer says it needs it
    layers: list[np.ndarray] = field(default_factory=list)  #: every layer on the frame (``[labels]`` when one)
    layer_of: Callable[[int], int] = lambda value: 0  #: the layer holding a label value

    def __post_init__(self) -> None:
        if not self.layers:
            self.layers = [self.labels]

    def mask(self, value: int) -> np.ndarray:
        """The pixels of segment ``value`` on the frame (booleans, ``(rows, columns)``)."""
        return self.layers[self.layer_of(value)] == value


@dataclass
class ExportSummary:
    """What the core knows once every frame is done, for the writers' ``end``."""

    frames_with_label: dict[int, int]  #: label value -> number of frames it is on
    label_entries: list[dict]  #: labels.json's entries: value, name, colour, voxels, frames
    provenance: dict  #: export.json's content so far (inputs, options, coverage, warnings)
    warnings: list[str] = field(default_factory=list)  #: for the user; a writer may append its own


class Writer(ABC):
    """An output of an export (see the module documentation for the call order): a writer implements ``begin``,
    ``add`` and ``end``, and ``check`` and ``abort`` where it has something to refuse or to close."""

    #: Whether ``add`` needs the frame's pixel data (``FrameLabels.pixels``): reading it costs more than sampling.
    needs_pixels: bool = False
    #: Whether the writer writes every segment of a segmentation whose segments overlap (several layers): the core
    #: refuses such a segmentation for a writer that does not, rather than let it write the first layer only.
    writes_overlaps: bool = False

    def check(self, series: Series, frames: Sequence[Frame], options: ExportOptions,
              segmentation: Segmentation) -> None:
        """Refuse (raise :class:`~segalign.errors.SegAlignError`), before anything is written, a series or a
        segmentation this writer cannot write; the default refuses nothing."""

    @abstractmethod
    def begin(self, context: ExportContext) -> None: ...

    @abstractmethod
    def add(self, frame: FrameLabels) -> None: ...

    @abstractmethod
    def end(self, summary: ExportSummary) -> dict[str, str]: ...

    def abort(self) -> None:
        """Close what is open after a failed or cancelled export; the default has nothing open."""
