"""``rtstruct.dcm``: an RT Structure Set whose contours are exact on every source frame.

One ROI per label present on the frames (numbered from 1 in label order, named and coloured from the label table;
segments read from an RT Structure Set keep their ROI numbers, when they are distinct, and RTROIInterpretedType).
On each frame, each ROI's contours are the outlines of its labelled pixel squares (:mod:`.contours`),
placed in patient space from that frame's own ImagePositionPatient, ImageOrientationPatient and PixelSpacing, so
they lie in the frame's plane and reference that frame's SOP instance (and frame number for a multi-frame source).
Filled by the even-odd rule, as planning systems combine a ROI's contours on one plane, they give back the frame's
pixels exactly: tilted, unevenly spaced, left-handed, non-square, multi-frame and feet-first series included.
Where segments overlap (a segmentation of several label layers), each layer is traced on its own: within a layer
segments do not overlap, and a segment is in one layer only, so every ROI is traced from its own mask, whatever
other ROIs cover the same pixels (a BODY around every organ, a PTV around its CTV).

The file is written in Implicit VR Little Endian, where every element has a 4-byte length: a body outline's
ContourData can exceed the 64 KiB an explicit-VR DS element holds, and implicit VR is the transfer syntax every
DICOM application must accept. The contours are encoded as bytes on the export's threads and spooled to a file, so
memory does not grow with the series; the long sequences are written from the spool.
"""

from __future__ import annotations

import re
import struct
from typing import BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian

from ..dicom import position_along
from ..errors import quiet_warnings
from ..version import __version__
from .base import ExportContext, ExportSummary, FrameLabels
from .contours import trace_edges, vertices_to_patient
from .dicom_base import DicomWriter, Encoder, ds, limit, raw_sequence

FILE_NAME = "rtstruct.dcm"
#: The entries of an export folder this writer may write (see :data:`segalign.export.EXPORT_ENTRIES`).
ENTRIES = frozenset({FILE_NAME})

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
#: What RTReferencedStudySequence names as the study's SOP class (Detached Study Management, as every RT system
#: expects there).
STUDY_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"
#: Decimals of ContourData (mm): 1e-5 mm is far below any pixel, and "-12345.67890" fits DS's 16 characters.
DECIMALS = 5

_ENCODER = Encoder(implicit=True)
_text, _sq, _item = _ENCODER.text, _ENCODER.sq, _ENCODER.item
_CLOSED_PLANAR = _text(0x3006, 0x0042, b"CS", "CLOSED_PLANAR")


class RtStructWriter(DicomWriter):
    """Writes ``rtstruct.dcm`` (see the module documentation)."""

    FILE_NAME = FILE_NAME
    OUTPUT = "rtstruct"
    FLAG = "--rtstruct"
    PRODUCT = "an RTSTRUCT"
    NEEDS = "an RTSTRUCT needs at least one structure"
    SERIES_NUMBER_OFFSET = 2000
    #: Every ROI is traced from its own layer (see the module documentation).
    writes_overlaps = True

    # ------------------------------------------------------------------ protocol

    def begin(self, context: ExportContext) -> None:
        super().begin(context)
        self._contours: dict[int, dict[int, tuple[int, int]]] = {}  # label -> frame index -> (offset, length)

    def add(self, item: FrameLabels) -> None:
        if not item.present:
            return
        frame = item.frame
        reference = _ENCODER.frame_reference(frame)
        position = np.asarray(frame.position, dtype=np.float64)
        orientation = np.asarray(frame.orientation, dtype=np.float64)
        spacing = np.asarray(frame.pixel_spacing, dtype=np.float64)
        encoded = []
        traced = [pair for layer in item.layers for pair in trace_edges(layer).items()]  # a value in one layer only
        for value, polygons in traced:
            contours = []
            for polygon in polygons:
                data = contour_data(vertices_to_patient(polygon, position, orientation, spacing))
                contours.append(
                    _sq(0x3006, 0x0016, [reference])  # ContourImageSequence
                    + _CLOSED_PLANAR
                    + _text(0x3006, 0x0046, b"IS", str(len(polygon)))  # NumberOfContourPoints
                    + _text(0x3006, 0x0050, b"DS", data)  # ContourData
                )
            encoded.append((value, b"".join(_item(c) for c in contours)))
        places = [(value, self.spool.append(data)) for value, data in encoded]
        with self.lock:
            for value, place in places:
                self._contours.setdefault(value, {})[item.index] = place

    # ------------------------------------------------------------------ writing

    def write(self, stream: BinaryIO, values: list[int], summary: ExportSummary) -> None:
        """The dataset up to the ROI contours with pydicom, then the contours from the spool, then the ROI
        observations (the elements after them, in tag order)."""
        context = self.context
        frames, normal = context.frames, context.normal
        table = context.segmentation.label_table
        with quiet_warnings():
            pydicom.dcmwrite(stream, self._head(values), enforce_file_format=True)

        along = {index: position_along(frames[index], normal) for index in range(len(frames))}
        # ROIContourSequence (3006,0039): per ROI, its display colour, its contours frame by frame along the
        # normal, and its number. Lengths are known from the spool, so the items are streamed.
        rois = []
        for number, value in zip(roi_numbers(values, table), values):
            pieces = [self._contours[value][index] for index in sorted(self._contours.get(value, {}), key=lambda i: (along[i], i))]
            color = _text(0x3006, 0x002A, b"IS", "\\".join(str(int(c)) for c in table[value].color))
            body = sum(length for _, length in pieces)
            tail = _text(0x3006, 0x0084, b"IS", str(number))  # ReferencedROINumber
            contour_header = _ENCODER.header(0x3006, 0x0040, b"SQ", body)  # ContourSequence
            rois.append((color + contour_header, pieces, tail))
        total = sum(8 + len(head) + sum(length for _, length in pieces) + len(tail) for head, pieces, tail in rois)
        stream.write(_ENCODER.header(0x3006, 0x0039, b"SQ", total))
        for head, pieces, tail in rois:
            size = len(head) + sum(length for _, length in pieces) + len(tail)
            stream.write(struct.pack("<HHI", 0xFFFE, 0xE000, size))  # the ROI's item, of defined length
            stream.write(head)
            for offset, length in pieces:
                stream.write(self.spool.read(offset, length))
            stream.write(tail)
        observations = [
            _text(0x3006, 0x0082, b"IS", str(observation))  # ObservationNumber
            + _text(0x3006, 0x0084, b"IS", str(number))  # ReferencedROINumber
            + _text(0x3006, 0x00A4, b"CS", interpreted_type(table[value]))  # RTROIInterpretedType (Type 2)
            + _text(0x3006, 0x00A6, b"PN", "")  # ROIInterpreter (Type 2)
            for observation, (number, value) in enumerate(zip(roi_numbers(values, table), values), start=1)
        ]
        stream.write(_sq(0x3006, 0x0080, observations))  # RTROIObservationsSequence

    def _head(self, values: list[int]) -> Dataset:
        """Everything before the ROI contours: SOP common, patient, study, RT series, equipment, structure set."""
        context, source = self.context, self.source
        assert source is not None
        series = context.series
        dataset = self.new_dataset(RT_STRUCTURE_SET_STORAGE, ImplicitVRLittleEndian, "RTSTRUCT")
        dataset.StructureSetDate, dataset.StructureSetTime = dataset.InstanceCreationDate, dataset.InstanceCreationTime
        dataset.OperatorsName = ""
        dataset.StructureSetLabel = limit(self.options.structure_set_label, 16)
        dataset.StructureSetName = limit(context.segmentation.name, 64)
        dataset.StructureSetDescription = limit(
            f"{context.segmentation.name} on {series.description or source.series_uid}, by SegAlign {__version__}",
            1024,
        )
        images = [_ENCODER.reference(sop_class, uid) for uid, sop_class in source.instances.items()]
        series_item = _text(0x0020, 0x000E, b"UI", source.series_uid) + _sq(0x3006, 0x0016, images)
        study_item = (
            _ENCODER.reference(STUDY_SOP_CLASS, source.study_uid)
            + _sq(0x3006, 0x0014, [series_item])  # RTReferencedSeriesSequence
        )
        frame_of_reference = (
            _text(0x0020, 0x0052, b"UI", source.frame_of_reference_uid)
            + _sq(0x3006, 0x0012, [study_item])  # RTReferencedStudySequence
        )
        dataset[0x30060010] = raw_sequence(0x30060010, _ENCODER.items([frame_of_reference]), implicit=True)
        table = context.segmentation.label_table
        rois = [
            _text(0x3006, 0x0022, b"IS", str(number))  # ROINumber
            + _text(0x3006, 0x0024, b"UI", source.frame_of_reference_uid)  # ReferencedFrameOfReferenceUID
            + _text(0x3006, 0x0026, b"LO", limit(table[value].name, 64))  # ROIName
            + _text(0x3006, 0x0028, b"ST", f"label value {value}")  # ROIDescription
            + _text(0x3006, 0x0036, b"CS", "AUTOMATIC")  # ROIGenerationAlgorithm
            for number, value in zip(roi_numbers(values, table), values)
        ]
        dataset[0x30060020] = raw_sequence(0x30060020, _ENCODER.items(rois), implicit=True)  # StructureSetROISequence
        return dataset


def roi_numbers(values: list[int], table: dict) -> list[int]:
    """The ROINumber of each label value written: the ROI numbers of segments read from an RT Structure Set, when
    every one has one and they are distinct; else 1..N in label order."""
    kept = [table[value].roi_number for value in values]
    if all(number is not None and 1 <= number < 2 ** 31 for number in kept) and len(set(kept)) == len(kept):
        return [int(number) for number in kept]  # type: ignore[arg-type]
    return list(range(1, len(values) + 1))


#: What an RTROIInterpretedType (CS, 16 characters) may hold.
_CODE_STRING = re.compile(r"[A-Z0-9 _]{0,16}")


def interpreted_type(label: object) -> str:
    """A label's RTROIInterpretedType (EXTERNAL, ORGAN, PTV...) as read from an RT Structure Set, if it is a valid
    code string; else empty (the attribute is Type 2: SegAlign does not know it)."""
    value = str(getattr(label, "rt_roi_interpreted_type", None) or "").strip()
    return value if _CODE_STRING.fullmatch(value) else ""


def contour_data(points: np.ndarray) -> str:
    """ContourData text of ``(n, 3)`` LPS points: fixed :data:`DECIMALS` decimals, every value within DS's 16
    characters (beyond a million kilometres, which no patient is, as precise as 16 characters allow)."""
    values = points.ravel().tolist()
    if np.abs(points).max(initial=0.0) < 1e9:
        return "\\".join(f"{v:.{DECIMALS}f}" for v in values)
    return "\\".join(ds(v) for v in values)
