"""``seg.dcm``: a DICOM Segmentation whose every frame lies on one source frame, built from SegAlign's own labels.

Each SEG frame is one source frame's labels (one segment's mask for BINARY, all segments for LABELMAP), with that
frame's ImagePositionPatient and ImageOrientationPatient, and references that frame's SOP instance (and frame
number, for a multi-frame source). So oblique, tilted, unevenly spaced, left-handed, feet-first and enhanced
multi-frame series are exact, and repeated positions (4D series) are no problem. Empty frames are omitted
when SpacingBetweenSlices is written (an evenly spaced series), so a reader can place them; else they are written.

The object is written with pydicom, not highdicom (see docs/architecture.md: highdicom builds one functional-group
dataset per frame, which for 4,000 frames of 117 labels takes several seconds and holds the whole pixel data): the
top-level dataset is an ordinary pydicom dataset; the per-frame functional groups, identical in structure from
frame to frame, are encoded directly as explicit VR little endian bytes; and the pixel data is streamed to the
file from a spool of each frame's packed bits (BINARY) or RLE fragment (LABELMAP), so memory does not grow with
the number of frames. The result is read back by highdicom, pydicom and dcmqi in the tests.

* BINARY: Segmentation Storage, 1 bit per pixel, frames ordered by segment, then by position along the slice
  normal; uncompressed (explicit VR little endian), as every SEG reader reads. Each segment's frames are its own
  mask (:meth:`~.base.FrameLabels.mask`), so where segments overlap (a segmentation of several layers) a pixel is
  in every segment that holds it, and SegmentsOverlap says whether any written pixel is in two segments ("YES")
  or none is ("NO").
* LABELMAP: Label Map Segmentation Storage (2024), one frame per source frame with a label, pixel value = segment
  number (8-bit, or 16-bit beyond 255 segments), RLE Lossless (see :mod:`.rle`). One value per pixel cannot hold
  overlapping segments: a segmentation whose segments meet on some frame is refused before anything is written
  (:func:`first_shared_pixel`), one whose layers never meet on the frames is written as one label map.

Where the frames lie and what each frame's functional groups say is :mod:`.seg_frames`; what this writer shares with
the RTSTRUCT writer, :mod:`.dicom_base`.
"""

from __future__ import annotations

import struct
from typing import BinaryIO, Iterable, Sequence

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from ..dicom import Frame, Series, position_along
from ..errors import MESSAGE_LIMIT, SegAlignError, one_line, quiet_warnings, short_path
from ..segmentation import Label, Segmentation, SegmentationSampler, first_overlap
from ..options import DicomSegOptions, ExportOptions, SegmentationType
from ..version import __version__
from . import rle
from .base import ExportContext, ExportSummary, FrameLabels
from .dicom_base import DicomWriter, dataset_item, limit, raw_sequence
from .seg_frames import (
    ENCODER,
    POSITION_TOLERANCE_MM,
    derivation,
    even_spacing,
    plane,
    position_indices,
    shared_groups,
    slice_thickness,
)
from .segment_codes import Code, codes_for, rgb_to_dicom_lab

FILE_NAME = "seg.dcm"
#: The entries of an export folder this writer may write (see :data:`segalign.export.EXPORT_ENTRIES`).
ENTRIES = frozenset({FILE_NAME})

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
LABEL_MAP_SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"
ALGORITHM_FAMILY = Code("123110", "DCM", "Artificial Intelligence")


class DicomSegWriter(DicomWriter):
    """Writes ``seg.dcm`` (see the module documentation); ``options`` say BINARY or LABELMAP."""

    FILE_NAME = FILE_NAME
    OUTPUT = "dicom_seg"
    FLAG = "--dicom-seg"
    PRODUCT = "a DICOM SEG"
    NEEDS = "a DICOM SEG needs at least one segment"
    SERIES_NUMBER_OFFSET = 1000
    #: BINARY writes each segment's own mask; LABELMAP refuses segments that meet on a frame, in ``check``.
    writes_overlaps = True

    def __init__(self, options: DicomSegOptions) -> None:
        super().__init__(options)
        self.labelmap = options.segmentation_type is SegmentationType.LABELMAP

    # ------------------------------------------------------------------ protocol

    def check(self, series: Series, frames: Sequence[Frame], options: ExportOptions,
              segmentation: Segmentation) -> None:
        """Refuse, before anything is written, a series a SEG cannot be written on: no frame of reference, no SOP
        instance or class UIDs, mosaic frames, or frames of different sizes; and for a LABELMAP, segments that
        share a pixel of some frame (naming the first two and the frame)."""
        super().check(series, frames, options, segmentation)
        sizes = sorted({(f.rows, f.columns) for f in frames})
        if len(sizes) > 1:
            raise SegAlignError(
                f"series {series.uid or '(no SeriesInstanceUID)'} has frames of {len(sizes)} sizes ({sizes[0][0]}x{sizes[0][1]}, "
                f"{sizes[1][0]}x{sizes[1][1]}...); the frames of a DICOM SEG share one size"
            )
        if self.labelmap and segmentation.overlapping:
            shared = first_shared_pixel(segmentation, frames)
            if shared is not None:
                raise overlap_error(segmentation, *shared)

    def begin(self, context: ExportContext) -> None:
        super().begin(context)
        values = context.segmentation.values
        # LABELMAP frames are encoded as they come, with segment numbers for every label of the volume; if some
        # label falls on no frame, end() numbers the segments again and encodes those frames anew.
        self._provisional = values
        self._lut = _lookup(values)
        self._binary: dict[int, dict[int, tuple[int, int]]] = {}  # label -> frame index -> (offset, length)
        self._labelmap: dict[int, tuple[int, int]] = {}  # frame index -> (offset, length)
        self._empty: set[int] = set()  # frames with no label: left out when SpacingBetweenSlices can place them
        self._overlap = False  # whether a pixel of some frame is in two segments (SegmentsOverlap)

    def add(self, item: FrameLabels) -> None:
        if not item.present:
            with self.lock:
                self._empty.add(item.index)
            return
        if self.labelmap:
            labels = one_label_map(item.layers, item.frame)
            fragment = rle.encode_frame(_segment_numbers(labels, self._lut, len(self._provisional)))
            with self.lock:
                self._labelmap[item.index] = self._append(fragment)
            return
        overlap = len(item.layers) > 1 and first_overlap(item.layers) is not None
        packed = [(value, np.packbits(item.mask(value), axis=None, bitorder="little").tobytes()) for value in item.present]
        with self.lock:
            self._overlap |= overlap
            for value, bits in packed:
                self._binary.setdefault(value, {})[item.index] = self._append(bits)

    # ------------------------------------------------------------------ writing

    def _append(self, data: bytes) -> tuple[int, int]:
        assert self.spool is not None
        return self.spool.append(data)

    def _read(self, offset: int, length: int) -> bytes:
        assert self.spool is not None
        return self.spool.read(offset, length)

    def write(self, stream: BinaryIO, values: list[int], summary: ExportSummary) -> None:
        context = self.context
        frames = context.frames
        normal = context.normal
        segment_of = {value: number for number, value in enumerate(values, start=1)}
        along = {index: position_along(frames[index], normal) for index in range(len(frames))}
        position_index = position_indices(along.values())

        def spatial(indices: Iterable[int]) -> list[int]:
            return sorted(indices, key=lambda index: (along[index], index))

        if self._empty and even_spacing(list(along.values()), frames) is None:
            self._keep_empty_frames(values)

        if self.labelmap:
            frame_list = [(0, index) for index in spatial(self._labelmap)]
        else:
            frame_list = [(segment_of[v], index) for v in values for index in spatial(self._binary.get(v, {}))]
        written = [frames[index] for _, index in frame_list]
        shared_orientation = len({f.orientation for f in written}) == 1
        shared_spacing = len({f.pixel_spacing for f in written}) == 1
        self._thickness = self._slice_thickness(list(along.values()), summary)

        dataset = self._dataset(values, len(frame_list), written, shared_orientation, shared_spacing, along)
        with quiet_warnings():
            pydicom.dcmwrite(stream, dataset, enforce_file_format=True)

        # The per-frame functional groups, encoded directly (see the module documentation).
        references = {index: derivation(frames[index]) for _, index in frame_list}
        planes = {
            index: plane(frames[index], not shared_orientation, not shared_spacing, self._thickness)
            for _, index in frame_list
        }
        items = []
        for segment, index in frame_list:
            position = position_index[round(along[index] / POSITION_TOLERANCE_MM)]
            dimension = [position] if self.labelmap else [segment, position]
            content = (
                references[index]
                + _sq(0x0020, 0x9111, [_ul(0x0020, 0x9157, dimension)])  # FrameContentSequence
                + planes[index]
            )
            if not self.labelmap:
                content += _sq(0x0062, 0x000A, [_us(0x0062, 0x000B, [segment])])  # SegmentIdentificationSequence
            items.append(content)
        stream.write(_sq(0x5200, 0x9230, items))  # PerFrameFunctionalGroupsSequence
        del items, references, planes

        if self.labelmap:
            self._write_labelmap(stream, values, frame_list)
        else:
            self._write_binary(stream, values, frame_list)

    def _keep_empty_frames(self, values: list[int]) -> None:
        """Without SpacingBetweenSlices (a series with a missing slice, uneven gaps or repeated positions) a reader
        cannot tell where the planes of left-out frames lie, so every empty frame is written: in a LABELMAP as a
        frame of zeros, in a BINARY SEG as an empty frame of the first segment."""
        frames = self.context.frames
        for index in sorted(self._empty):
            shape = (frames[index].rows, frames[index].columns)
            if self.labelmap:
                zeros = _segment_numbers(np.zeros(shape, np.uint16), self._lut, len(self._provisional))
                self._labelmap[index] = self._append(rle.encode_frame(zeros))
            else:
                bits = np.packbits(np.zeros(shape, bool), axis=None, bitorder="little").tobytes()
                self._binary.setdefault(values[0], {})[index] = self._append(bits)
        self._empty = set()

    def _write_binary(self, stream: BinaryIO, values: list[int], frame_list: list[tuple[int, int]]) -> None:
        frames = self.context.frames
        rows, columns = frames[0].rows, frames[0].columns
        pixels = rows * columns
        total_bits = pixels * len(frame_list)
        length = (total_bits + 7) // 8
        if length >= 0xFFFFFFFF:  # a 32-bit value length: DICOM's limit for uncompressed pixel data
            raise SegAlignError(
                f"a BINARY DICOM SEG of {len(frame_list)} frames of {rows}x{columns} holds {length / 2**30:.1f} GiB of "
                "pixel data, more than one DICOM object can (4 GiB); write it as a label map",
            )
        stream.write(_header(0x7FE0, 0x0010, b"OB", length + (length & 1)))
        carry = np.zeros(0, dtype=np.uint8)
        for segment, index in frame_list:
            data = self._read(*self._binary[values[segment - 1]][index])
            if pixels % 8 == 0:  # every frame starts on a byte: its packed bits are written as they are
                stream.write(data)
                continue
            bits = np.concatenate([carry, np.unpackbits(np.frombuffer(data, np.uint8), count=pixels, bitorder="little")])
            whole = bits.size - bits.size % 8
            stream.write(np.packbits(bits[:whole], bitorder="little").tobytes())
            carry = bits[whole:]
        if carry.size:
            stream.write(np.packbits(carry, bitorder="little").tobytes())
        if length & 1:
            stream.write(b"\0")

    def _write_labelmap(self, stream: BinaryIO, values: list[int], frame_list: list[tuple[int, int]]) -> None:
        context = self.context
        if values == self._provisional:
            fragments = [self._labelmap[index] for _, index in frame_list]
            read = self._read
        else:  # some label fell on no frame: number the segments again, encode the frames anew
            lut = _lookup(values)
            renumbered: dict[int, tuple[int, int]] = {}
            with self.lock:
                for _, index in frame_list:
                    labels = one_label_map(context.resample(index), context.frames[index])
                    renumbered[index] = self._append(rle.encode_frame(_segment_numbers(labels, lut, len(values))))
            fragments = [renumbered[index] for _, index in frame_list]
            read = self._read
        offsets, position = [], 0
        for _, length in fragments:
            offsets.append(position)
            position += 8 + length
        stream.write(_header(0x7FE0, 0x0010, b"OB", 0xFFFFFFFF))
        stream.write(_item(struct.pack(f"<{len(offsets)}I", *offsets)))  # the Basic Offset Table
        for offset, length in fragments:
            stream.write(_item(read(offset, length)))
        stream.write(struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))  # Sequence Delimitation Item

    def _dataset(
        self, values: list[int], number_of_frames: int, written: list[Frame], shared_orientation: bool,
        shared_spacing: bool, along: dict[int, float],
    ) -> Dataset:
        """The top-level dataset: everything but the per-frame functional groups and the pixel data."""
        context, source = self.context, self.source
        assert source is not None
        frames, series = context.frames, context.series
        labelmap = self.labelmap
        sop_class = LABEL_MAP_SEGMENTATION_STORAGE if labelmap else SEGMENTATION_STORAGE
        syntax = RLELossless if labelmap else ExplicitVRLittleEndian
        dataset = self.new_dataset(sop_class, syntax, "SEG")
        dataset.ContentDate, dataset.ContentTime = dataset.InstanceCreationDate, dataset.InstanceCreationTime
        dataset.DeviceSerialNumber = "0"
        dataset.ImageType = ["DERIVED", "PRIMARY"]
        dataset.ContentLabel = "SEGALIGN"
        described = f"{context.segmentation.name} on {series.description or source.series_uid}"
        dataset.ContentDescription = limit(described, 64)
        dataset.ContentCreatorName = ""
        dataset.SegmentationType = "LABELMAP" if labelmap else "BINARY"
        dataset.LossyImageCompression = "00"
        # A LABELMAP holds one segment per pixel; a BINARY SEG's segments overlap where some written pixel is in two
        # of them (known exactly: every frame was seen), which readers must then not flatten into one label map.
        dataset.SegmentsOverlap = "YES" if self._overlap and not labelmap else "NO"
        dataset.SamplesPerPixel = 1
        dataset.PhotometricInterpretation = "MONOCHROME2"
        dataset.Rows, dataset.Columns = frames[0].rows, frames[0].columns
        bits = (8 if len(values) <= 255 else 16) if labelmap else 1
        dataset.BitsAllocated = dataset.BitsStored = bits
        dataset.HighBit = bits - 1
        dataset.PixelRepresentation = 0
        dataset.NumberOfFrames = number_of_frames
        # The two long sequences (a segment per label, an instance per source file) are encoded here directly:
        # pydicom's writer takes about a millisecond per nested dataset, and these hold a thousand.
        segments = [self._segment(number, value) for number, value in enumerate(values, 1)]
        if labelmap:  # every pixel value a LABELMAP holds is described (PS3.3 C.8.20.2.3): 0 is the background
            segments.insert(0, _background_segment())
            dataset.PixelPaddingValue = 0
        dataset[0x00620002] = _raw_sequence(0x00620002, segments)
        spacing = even_spacing(list(along.values()), frames)
        dataset.SharedFunctionalGroupsSequence = DicomSequence(
            [shared_groups(written[0], shared_orientation, shared_spacing, self._thickness, spacing)]
        )
        organisation = generate_uid()
        dataset.DimensionOrganizationSequence = DicomSequence([dataset_item(DimensionOrganizationUID=organisation)])
        dimensions = []
        if not labelmap:
            dimensions.append(dataset_item(
                DimensionOrganizationUID=organisation, DimensionIndexPointer=0x0062000B,
                FunctionalGroupPointer=0x0062000A, DimensionDescriptionLabel="Segment Number",
            ))
        dimensions.append(dataset_item(
            DimensionOrganizationUID=organisation, DimensionIndexPointer=0x00200032,
            FunctionalGroupPointer=0x00209113, DimensionDescriptionLabel="Image Position Patient",
        ))
        dataset.DimensionIndexSequence = DicomSequence(dimensions)
        referenced = [ENCODER.reference(sop_class_uid, uid) for uid, sop_class_uid in source.instances.items()]
        dataset[0x00081115] = _raw_sequence(0x00081115, [  # ReferencedSeriesSequence > ReferencedInstanceSequence
            _sq(0x0008, 0x114A, referenced) + _text(0x0020, 0x000E, b"UI", source.series_uid)
        ])
        return dataset

    def _segment(self, number: int, value: int) -> bytes:
        """One item of the SegmentSequence, encoded (elements in tag order)."""
        label: Label = self.context.segmentation.label_table[value]
        codes = codes_for(label.name)
        algorithm = (
            _sq(0x0066, 0x002F, [_code_bytes(ALGORITHM_FAMILY)])  # AlgorithmFamilyCodeSequence
            + _text(0x0066, 0x0031, b"LO", __version__)  # AlgorithmVersion
            + _text(0x0066, 0x0032, b"LT", f"segmentation={self.context.segmentation.name}; label value={value}")
            + _text(0x0066, 0x0036, b"LO", "SegAlign")  # AlgorithmName
        )
        type_code = _code_bytes(codes.type)
        if codes.modifier is not None:  # SegmentedPropertyTypeModifierCodeSequence
            type_code += _sq(0x0062, 0x0011, [_code_bytes(codes.modifier)])
        return (
            _sq(0x0062, 0x0003, [_code_bytes(codes.category)])  # SegmentedPropertyCategoryCodeSequence
            + _us(0x0062, 0x0004, [number])  # SegmentNumber
            + _text(0x0062, 0x0005, b"LO", limit(label.name, 64))  # SegmentLabel
            + _text(0x0062, 0x0006, b"ST", f"label value {value}")  # SegmentDescription
            + _sq(0x0062, 0x0007, [algorithm])  # SegmentationAlgorithmIdentificationSequence
            + _text(0x0062, 0x0008, b"CS", "AUTOMATIC")  # SegmentAlgorithmType
            + _text(0x0062, 0x0009, b"LO", "SegAlign")  # SegmentAlgorithmName
            + _us(0x0062, 0x000D, list(rgb_to_dicom_lab(label.color)))  # RecommendedDisplayCIELabValue
            + _sq(0x0062, 0x000F, [type_code])  # SegmentedPropertyTypeCodeSequence
        )

    def _slice_thickness(self, positions: list[float], summary: ExportSummary) -> float:
        """SliceThickness for the pixel measures (see :func:`.seg_frames.slice_thickness`), with a warning when the
        series has none and it is not the even spacing between slices."""
        thickness, why = slice_thickness(self.source.header, positions, self.context.frames)
        if why is not None:
            summary.warnings.append(
                f"the series has no SliceThickness; {FILE_NAME} gives {thickness:.4g} mm ({why}), which readers need"
            )
        return thickness


# ---------------------------------------------------------------------- helpers


def first_shared_pixel(segmentation: Segmentation, frames: Sequence[Frame]) -> tuple[int, int, int, Frame] | None:
    """The first frame (in export order) on which two segments of a layered segmentation share a pixel: the two
    label values, how many pixels they share there, and the frame; None when no two segments meet on any frame
    (a frame outside all but one layer's volume is not sampled)."""
    sampler = SegmentationSampler(segmentation)
    for frame in frames:
        if sum(one.may_overlap(frame) for one in sampler.samplers) < 2:
            continue
        shared = first_overlap(sampler.sample(frame))
        if shared is not None:
            return (*shared, frame)
    return None


def overlap_error(segmentation: Segmentation, first: int, second: int, pixels: int, frame: Frame) -> SegAlignError:
    """The refusal of a LABELMAP SEG for segments ``first`` and ``second`` that share ``pixels`` on ``frame``: one
    line, the names and the frame's file cut only as far as the command line's limit needs."""
    table = segmentation.label_table
    instance = "no InstanceNumber" if frame.instance_number is None else f"InstanceNumber {frame.instance_number}"
    number = f" frame {frame.frame_number}" if frame.number_of_frames > 1 else ""

    def messages(limit: int) -> tuple[str, str]:
        def named(value: int) -> str:
            return f"{value} ({one_line(table[value].name, limit)})" if value in table else str(value)

        where = f"{instance} ({one_line(frame.source_file.name, limit + 16)}{number})"
        message = (f"segments {named(first)} and {named(second)} of {one_line(segmentation.name, limit)} share "
                   f"{pixels} pixels on {where}; a LABELMAP DICOM SEG holds one segment per pixel: ")
        return (message + "write a BINARY one or pass overlap='later-wins'",
                message + "use --dicom-seg-type binary or --overlap later-wins")

    for limit in (64, 48, 32, 24, 16):
        library, cli = messages(limit)
        if len(cli) <= MESSAGE_LIMIT and len(library) <= MESSAGE_LIMIT:
            break
    return SegAlignError(library, cli_message=cli)


def one_label_map(layers: Sequence[np.ndarray], frame: Frame) -> np.ndarray:
    """A frame's layers as one label image, for a LABELMAP: the first layer itself when it is the only one, else
    every layer's labels together (:meth:`DicomSegWriter.check` refused segments that meet on a frame; a pixel in two
    segments here is an error, not a choice)."""
    if len(layers) == 1:
        return layers[0]
    if first_overlap(layers) is not None:
        raise SegAlignError(f"{short_path(frame.source_file)}: segments overlap on this frame, which a LABELMAP SEG "
                            "cannot hold")
    combined = np.zeros(layers[0].shape, dtype=np.result_type(*layers))
    for layer in layers:
        np.copyto(combined, layer, where=layer != 0)
    return combined


BACKGROUND = Code("125040", "DCM", "Background")


def _background_segment() -> bytes:
    """Segment 0 of a LABELMAP: the background (as highdicom writes it, and dcmqi and Slicer recognise it)."""
    return (
        _sq(0x0062, 0x0003, [_code_bytes(BACKGROUND)])  # SegmentedPropertyCategoryCodeSequence
        + _us(0x0062, 0x0004, [0])  # SegmentNumber
        + _text(0x0062, 0x0005, b"LO", "Background")  # SegmentLabel
        + _text(0x0062, 0x0008, b"CS", "MANUAL")  # SegmentAlgorithmType: no algorithm decides the background
        + _us(0x0062, 0x000D, [0, 32896, 32896])  # RecommendedDisplayCIELabValue: black
        + _sq(0x0062, 0x000F, [_code_bytes(BACKGROUND)])  # SegmentedPropertyTypeCodeSequence
    )


def _lookup(values: list[int]) -> np.ndarray | None:
    """Label value -> segment number (1.. in ascending value; 0 for background and values with no segment), or
    None when every value is its own segment number (labels 1..n, as TotalSegmentator's are)."""
    if values == list(range(1, len(values) + 1)):
        return None
    lut = np.zeros(max(values, default=0) + 1, dtype=np.uint8 if len(values) <= 255 else np.uint16)
    lut[np.array(values, dtype=np.int64)] = np.arange(1, len(values) + 1)
    return lut


def _segment_numbers(labels: np.ndarray, lut: np.ndarray | None, segments: int) -> np.ndarray:
    """A frame's label values as segment numbers, in the LABELMAP's pixel type (uint8 up to 255 segments, else
    uint16). The frame holds only values of the segmentation, so ``lut`` (sized to the largest) covers it."""
    if lut is None:
        return labels.astype(np.uint8 if segments <= 255 else np.uint16, copy=False)
    return np.take(lut, labels)


# Explicit VR little endian encoding of the long sequences and the per-frame functional groups (a few element
# kinds, written directly).

_header, _text, _us, _ul, _item, _sq, _code_bytes = (
    ENCODER.header, ENCODER.text, ENCODER.us, ENCODER.ul, ENCODER.item, ENCODER.sq, ENCODER.code,
)


def _raw_sequence(tag: int, items: Sequence[bytes]) -> RawDataElement:
    return raw_sequence(tag, ENCODER.items(items), implicit=False)
