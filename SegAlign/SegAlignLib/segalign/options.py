"""What an export writes, as one frozen value: :class:`ExportOptions`.

The command line builds it from its flags (:func:`segalign.cli.export_options`), the Slicer module from its
parameter node, a batch run ships it to its workers (it pickles), and export.json records it
(:meth:`ExportOptions.as_dict`), so every front end asks for the same export in the same words.

An optional output is ``None`` when off, and an object holding its settings when on::

    ExportOptions(masks=True, overlays=OverlayOptions(window="abdomen"), dicom_seg=DicomSegOptions("labelmap"),
                  rtstruct=RtStructOptions(), volume=VolumeOptions(masks=True))

Values that have a fixed set of choices accept their :class:`enum.Enum` member or its string value, as
highdicom's value objects do (``DicomSegOptions("labelmap")`` and ``DicomSegOptions(SegmentationType.LABELMAP)``
are equal).
"""

from __future__ import annotations

import dataclasses
import enum
import os
from dataclasses import dataclass
from typing import Any, get_args

from .dicom import Order, Window, parse_window
from .errors import SegAlignError
from .segmentation import OVERLAPS, Overlap

#: The export orders (``Order`` is defined with the frames it orders, in :mod:`segalign.dicom.model`).
ORDERS: tuple[str, ...] = get_args(Order)


class SegmentationType(str, enum.Enum):
    """How a DICOM SEG stores its segments (DICOM's SegmentationType)."""

    BINARY = "binary"  #: one 1-bit frame per segment per source frame: readable by every SEG reader
    LABELMAP = "labelmap"  #: one frame per source frame holding all segments (Label Map Segmentation Storage)


def _coerce(enum_type: type[enum.Enum], value: object, name: str) -> Any:
    """``value`` as a member of ``enum_type``: the member itself, or its value in any case."""
    if isinstance(value, enum_type):
        return value
    text = str(value.value if isinstance(value, enum.Enum) else value).lower()
    try:
        return enum_type(text)
    except ValueError:
        choices = ", ".join(repr(member.value) for member in enum_type)
        raise SegAlignError(f"{name} must be one of {choices}, got {value!r}") from None


@dataclass(frozen=True)
class OverlayOptions:
    """Overlays (``overlays/*.png``, the frame windowed with its labels drawn on it) and the index.html preview.

    ``window`` is ``(centre, width)``, a preset name (abdomen, bone, brain, lung, mediastinum) or ``"C,W"`` text,
    or None for each frame's own window; ``alpha`` the labels' opacity; ``outline`` draws outlines, not fills;
    ``preview`` writes the preview page (index.html and its per-frame data, viewer/, about twice the size of the
    overlay PNGs), False for the overlays alone.
    """

    window: Window | None = None
    alpha: float = 0.4
    outline: bool = False
    preview: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.window, str):
            object.__setattr__(self, "window", parse_window(self.window))
        elif self.window is not None:
            object.__setattr__(self, "window", parse_window(",".join(str(float(v)) for v in self.window)))
        if not isinstance(self.alpha, (int, float)) or not 0.0 <= float(self.alpha) <= 1.0:
            raise SegAlignError(
                f"overlay alpha must be between 0 and 1, got {self.alpha}",
                cli_message=f"--alpha must be between 0 and 1, got {self.alpha}",
            )
        object.__setattr__(self, "alpha", float(self.alpha))
        object.__setattr__(self, "outline", bool(self.outline))
        object.__setattr__(self, "preview", bool(self.preview))


def _check_series(options: Any) -> None:
    """The new series' description (text) and number (an integer 0..2^31-1, or None), checked when the options are
    made, not after every frame has been sampled."""
    if not isinstance(options.series_description, str):
        raise SegAlignError(f"series_description must be text, got {options.series_description!r}")
    number = options.series_number
    if number is not None:
        if isinstance(number, bool) or not isinstance(number, (int, str)) or not str(number).strip().isdigit():
            raise SegAlignError(f"series_number must be a whole number or None, got {number!r}")
        if not 0 <= int(number) < 2**31:
            raise SegAlignError(f"series_number must be between 0 and 2147483647, got {number}")
        object.__setattr__(options, "series_number", int(number))


@dataclass(frozen=True)
class DicomSegOptions:
    """A DICOM Segmentation object, ``seg.dcm``, on the source series' frames (see :mod:`segalign.writers.dicom_seg`).

    ``segmentation_type`` is BINARY (the default, readable everywhere) or LABELMAP (one RLE-compressed frame per
    source frame, much smaller). ``series_description`` and ``series_number`` describe the new series (the
    number defaults to the source's SeriesNumber + 1000, or 1000).
    """

    segmentation_type: SegmentationType | str = SegmentationType.BINARY
    series_description: str = "SegAlign segmentation"
    series_number: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "segmentation_type", _coerce(SegmentationType, self.segmentation_type, "segmentation_type")
        )
        _check_series(self)


@dataclass(frozen=True)
class RtStructOptions:
    """An RT Structure Set, ``rtstruct.dcm``, with contours along the pixel edges of every source frame (see
    :mod:`segalign.writers.rtstruct`). ``structure_set_label`` (at most 16 characters) is what planning systems
    list; ``series_description`` and ``series_number`` describe the new series (the number defaults to the
    source's SeriesNumber + 2000, or 2000)."""

    structure_set_label: str = "SegAlign"
    series_description: str = "SegAlign structures"
    series_number: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.structure_set_label, str) or not self.structure_set_label.strip():
            raise SegAlignError("structure_set_label must be text, not empty (planning systems list structure sets by it)")
        _check_series(self)


class VolumeFormat(str, enum.Enum):
    """The file format of the volumes (``--volume-format``)."""

    NIFTI = "nifti"  #: ``.nii.gz`` (nnU-Net, MONAI, dcm2niix's format)
    NRRD = "nrrd"  #: ``.nrrd``, gzip-compressed, in LPS (3D Slicer's own format)


@dataclass(frozen=True)
class VolumeOptions:
    """Volumes on the series' own grid (see :mod:`segalign.writers.volume`): ``image.nii.gz`` (the frames' pixel
    values in modality units) and ``labels.nii.gz`` (their labels on the same voxels; ``labels_layer2.nii.gz``...
    where segments overlap), with an affine that puts every voxel on its frame's pixel.

    ``format`` is NIFTI (the default) or NRRD; ``masks`` also writes one mask volume per segment in
    ``volume_masks/``; ``resample`` puts unevenly spaced frames (missing slices) onto a regular grid (nearest
    frame for the labels, linear between neighbouring frames for the image) instead of refusing them.
    """

    format: VolumeFormat | str = VolumeFormat.NIFTI
    masks: bool = False
    resample: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "format", _coerce(VolumeFormat, self.format, "volume format"))
        object.__setattr__(self, "masks", bool(self.masks))
        object.__setattr__(self, "resample", bool(self.resample))


@dataclass(frozen=True)
class ExportOptions:
    """Everything that decides what an export writes (not where, nor whether it may replace an earlier one).

    ``order``: ``"instance"`` (InstanceNumber then frame, the scanner's own order) or ``"position"`` (along the
    slice normal). ``masks``: one 1-bit PNG per segment per frame. ``images``: each frame's pixels as a 16-bit PNG.
    ``stats``: per-label pixel counts and areas in the manifest. ``split_mosaics``: one image per slice of a
    Siemens mosaic. ``overlays``: :class:`OverlayOptions`, or None for none. ``dicom_seg``:
    :class:`DicomSegOptions`, or None for no DICOM SEG. ``rtstruct``: :class:`RtStructOptions`, or None for no
    RT Structure Set. ``volume``: :class:`VolumeOptions` (``True`` for the defaults, ``"nrrd"`` for NRRD), or None
    for no volumes.
    """

    order: Order = "instance"
    masks: bool = False
    images: bool = False
    stats: bool = False
    split_mosaics: bool = False
    overlays: OverlayOptions | None = None
    dicom_seg: DicomSegOptions | None = None
    rtstruct: RtStructOptions | None = None
    volume: VolumeOptions | None = None

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise SegAlignError(f"order must be 'instance' or 'position', got {self.order!r}")
        for name in ("masks", "images", "stats", "split_mosaics"):
            object.__setattr__(self, name, bool(getattr(self, name)))
        if self.overlays is True:  # on, with the default look
            object.__setattr__(self, "overlays", OverlayOptions())
        elif self.overlays is False:
            object.__setattr__(self, "overlays", None)
        if self.dicom_seg is True:
            object.__setattr__(self, "dicom_seg", DicomSegOptions())
        elif self.dicom_seg is False:
            object.__setattr__(self, "dicom_seg", None)
        elif isinstance(self.dicom_seg, (str, SegmentationType)):
            object.__setattr__(self, "dicom_seg", DicomSegOptions(self.dicom_seg))
        if self.rtstruct is True:
            object.__setattr__(self, "rtstruct", RtStructOptions())
        elif self.rtstruct is False:
            object.__setattr__(self, "rtstruct", None)
        if self.volume is True:
            object.__setattr__(self, "volume", VolumeOptions())
        elif self.volume is False:
            object.__setattr__(self, "volume", None)
        elif isinstance(self.volume, (str, VolumeFormat)):  # a format: volumes in it
            object.__setattr__(self, "volume", VolumeOptions(self.volume))
        if self.volume is not None and not isinstance(self.volume, VolumeOptions):
            raise SegAlignError(f"volume must be VolumeOptions, True or None, got {self.volume!r}")
        if self.rtstruct is not None and not isinstance(self.rtstruct, RtStructOptions):
            raise SegAlignError(f"rtstruct must be RtStructOptions or None, got {self.rtstruct!r}")
        if self.overlays is not None and not isinstance(self.overlays, OverlayOptions):
            raise SegAlignError(f"overlays must be OverlayOptions or None, got {self.overlays!r}")
        if self.dicom_seg is not None and not isinstance(self.dicom_seg, DicomSegOptions):
            raise SegAlignError(f"dicom_seg must be DicomSegOptions or None, got {self.dicom_seg!r}")

    def replace(self, **changes: Any) -> "ExportOptions":
        """A copy with ``changes`` (the object itself never changes)."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The options as JSON values, as export.json records them (enums by their value, off outputs as null)."""

        def plain(value: Any) -> Any:
            if isinstance(value, enum.Enum):
                return value.value
            if isinstance(value, Window):  # as --window spells it: [centre, width]
                return [value.center, value.width]
            if isinstance(value, tuple):
                return [plain(v) for v in value]
            return value

        result: dict[str, Any] = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if dataclasses.is_dataclass(value):
                value = {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
            result[item.name] = plain(value)
        return result

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ExportOptions":
        """The options :meth:`as_dict` gave (unknown keys are refused, so a typo is never silently ignored)."""
        known = {item.name for item in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SegAlignError(f"unknown export options: {', '.join(unknown)}")
        try:
            return cls._from_dict(dict(values))
        except TypeError as error:  # an unknown or missing field of a nested option
            raise SegAlignError(f"export options cannot be read: {error}") from None

    @classmethod
    def _from_dict(cls, values: dict[str, Any]) -> "ExportOptions":
        if isinstance(values.get("overlays"), dict):
            overlay = dict(values["overlays"])
            if isinstance(overlay.get("window"), list):
                overlay["window"] = tuple(overlay["window"])
            values["overlays"] = OverlayOptions(**overlay)
        if isinstance(values.get("dicom_seg"), dict):
            values["dicom_seg"] = DicomSegOptions(**values["dicom_seg"])
        if isinstance(values.get("rtstruct"), dict):
            values["rtstruct"] = RtStructOptions(**values["rtstruct"])
        if isinstance(values.get("volume"), dict):
            values["volume"] = VolumeOptions(**values["volume"])
        return cls(**values)


@dataclass(frozen=True)
class ReadOptions:
    """How a segmentation is read: :func:`segalign.load_segmentation`'s arguments as one value, which a batch run
    ships to its workers with the :class:`ExportOptions`.

    ``label_table`` is a label file's path (kept absolute, so that workers with another working folder find it) or
    ``"totalsegmentator"``; ``overlap`` is what to do where segments overlap (``"keep"``,
    ``"later-wins"`` or ``"error"``, see :func:`segalign.load_segmentation`); ``allow_many_labels`` accepts a segmentation that looks like an intensity image.
    ``skip_unplaced_contours`` reads an RT Structure Set whose contours do not all lie on a frame of its series,
    leaving those out with a warning (see :mod:`segalign.readers.rtstruct`).
    """

    label_table: str | None = None
    overlap: Overlap = "keep"
    allow_many_labels: bool = False
    skip_unplaced_contours: bool = False

    def __post_init__(self) -> None:
        if self.overlap not in OVERLAPS:
            raise SegAlignError(f"overlap must be one of {', '.join(map(repr, OVERLAPS))}, got {self.overlap!r}")
        if self.label_table is not None:
            table = str(self.label_table)
            if table.lower() != "totalsegmentator" and not os.path.isabs(table):
                table = os.path.abspath(table)
            object.__setattr__(self, "label_table", table)

    @property
    def label_file(self) -> str | None:
        """The label table's file, if it is one (not the built-in ``totalsegmentator``)."""
        if self.label_table is None or self.label_table.lower() == "totalsegmentator":
            return None
        return self.label_table

    def as_dict(self) -> dict[str, Any]:
        """The options as JSON values."""
        return dataclasses.asdict(self)
