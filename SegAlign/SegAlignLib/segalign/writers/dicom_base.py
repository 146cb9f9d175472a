"""What SegAlign's DICOM writers (SEG, RTSTRUCT) share: :class:`DicomWriter`, their base (the source check, the
spool of encoded frames, the end that writes the file, the attributes every such object starts with), the checks a
source series must pass, the patient and study attributes they copy, value formatting within VR limits, and a small
encoder of little endian elements.

The encoder exists because these objects hold thousands of small, identical-in-shape items (a functional-groups
item per SEG frame, a contour per RTSTRUCT plane): pydicom writes one nested Dataset in about a millisecond, the
encoder in microseconds. Everything else is built with pydicom, and every file is read back by pydicom, highdicom,
dcmqi or dicompyler-core in the tests.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import re
import struct
import tempfile
import threading
from abc import abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, ClassVar, Sequence

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import generate_uid

from ..dicom import Frame, Series
from ..errors import SegAlignError, describe, quiet_warnings, short, short_path
from ..options import DicomSegOptions, ExportOptions, RtStructOptions
from ..segmentation import Segmentation
from ..version import __version__
from .base import ExportContext, ExportSummary, InventedUids, Writer
from .segment_codes import Code

#: Copied from the first source instance; written empty when the source lacks them (Type 2), as anonymised
#: sources often do.
PATIENT_STUDY_TYPE2 = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
    "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
)
#: Copied when the source has them.
PATIENT_STUDY_OPTIONAL = (
    "IssuerOfPatientID", "PatientAge", "PatientSize", "PatientWeight", "StudyDescription",
    "PatientIdentityRemoved", "DeidentificationMethod",
)


@dataclass
class SourceSeries:
    """The source series as a DICOM object derived from it must reference it."""

    header: Dataset  #: the first source file's attributes (no pixel data)
    study_uid: str  #: blank until :func:`with_invented_uids` if the source has none
    series_uid: str  #: likewise
    frame_of_reference_uid: str
    instances: dict[str, str]  #: SOPInstanceUID -> SOPClassUID of every source instance, in export order
    notes: list[str] = field(default_factory=list)  #: warnings for the user (UIDs SegAlign had to make up)


class DicomWriter(Writer):
    """A writer of one DICOM object on the source frames (:class:`~.dicom_seg.DicomSegWriter`,
    :class:`~.rtstruct.RtStructWriter`): ``check`` refuses a series it cannot reference (:func:`check_source`),
    ``begin`` opens the :class:`Spool` that ``add`` puts each frame's encoded content in, ``end`` refuses an object
    without a label and writes the file with :meth:`write`, ``abort`` closes the spool. The class attributes say
    what the object is called."""

    FILE_NAME: ClassVar[str]  #: the file in the export folder (``"seg.dcm"``)
    OUTPUT: ClassVar[str]  #: its key in export.json's outputs, and the library's option (``"dicom_seg"``)
    FLAG: ClassVar[str]  #: the command line's option (``"--dicom-seg"``)
    PRODUCT: ClassVar[str]  #: the object in a message (``"a DICOM SEG"``)
    NEEDS: ClassVar[str]  #: why no label on any frame is refused (``"a DICOM SEG needs at least one segment"``)
    SERIES_NUMBER_OFFSET: ClassVar[int]  #: the default SeriesNumber is the source's plus this

    def __init__(self, options: DicomSegOptions | RtStructOptions) -> None:
        self.options = options
        self.lock = threading.Lock()  #: guards what ``add`` keeps (it is called from several threads)
        self.spool: Spool | None = None
        self.source: SourceSeries | None = None
        self.context: ExportContext | None = None

    def check(self, series: Series, frames: Sequence[Frame], options: ExportOptions,
              segmentation: Segmentation) -> None:
        """Refuse, before anything is written, a series the object cannot reference exactly."""
        self.source = check_source(series, frames, self.PRODUCT, self.FILE_NAME)

    def begin(self, context: ExportContext) -> None:
        self.context = context
        if self.source is None:  # the core calls check() first; a writer used on its own checks here
            self.check(context.series, context.frames, context.options, context.segmentation)
        self.source = with_invented_uids(self.source, context.uids, self.FILE_NAME)
        self.spool = Spool(context.folder)

    def end(self, summary: ExportSummary) -> dict[str, str]:
        context = self.context
        values = sorted(summary.frames_with_label)
        if not values:
            raise no_label_error(context.segmentation.name, context.series.uid, self.NEEDS, self.OUTPUT, self.FLAG)
        summary.warnings.extend(self.source.notes)
        try:
            with (context.folder / self.FILE_NAME).open("wb") as stream:
                self.write(stream, values, summary)
        finally:
            self.abort()
        return {self.OUTPUT: self.FILE_NAME}

    def abort(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None

    @abstractmethod
    def write(self, stream: BinaryIO, values: list[int], summary: ExportSummary) -> None:
        """Write the object, with a segment or ROI for each of ``values`` (the labels on some frame), to
        ``stream``."""

    def new_dataset(self, sop_class: str, transfer_syntax: str, modality: str) -> Dataset:
        """A new object's dataset with what every SegAlign DICOM object holds: file meta, SOP common (a new SOP
        instance, created now), the source's patient and study, a new series, its frame of reference, and the
        equipment (SegAlign)."""
        source = self.source
        assert source is not None
        now = datetime.datetime.now()
        sop_instance = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = sop_instance
        meta.TransferSyntaxUID = transfer_syntax
        meta.ImplementationVersionName = f"SEGALIGN_{__version__}"[:16]
        dataset = Dataset()
        dataset.file_meta = meta
        dataset.SpecificCharacterSet = "ISO_IR 192"
        dataset.SOPClassUID = sop_class
        dataset.SOPInstanceUID = sop_instance
        dataset.InstanceCreationDate = dataset.SeriesDate = now.strftime("%Y%m%d")
        dataset.InstanceCreationTime = dataset.SeriesTime = now.strftime("%H%M%S")
        copy_patient_study(dataset, source)
        dataset.Modality = modality
        dataset.SeriesInstanceUID = generate_uid()
        dataset.SeriesNumber = self.series_number(self.context.series)
        dataset.SeriesDescription = limit(self.options.series_description, 64)
        dataset.InstanceNumber = 1
        dataset.FrameOfReferenceUID = source.frame_of_reference_uid  # the Frame of Reference module
        dataset.PositionReferenceIndicator = source.header.get("PositionReferenceIndicator", "") or ""
        dataset.Manufacturer = "SegAlign"
        dataset.ManufacturerModelName = "SegAlign"
        dataset.SoftwareVersions = __version__
        return dataset

    def series_number(self, series: Series) -> int:
        """The option's SeriesNumber, else the source's plus :attr:`SERIES_NUMBER_OFFSET` (the offset alone when
        that does not fit IS)."""
        if self.options.series_number is not None:
            return int(self.options.series_number)
        number = (series.series_number or 0) + self.SERIES_NUMBER_OFFSET
        return number if number < 2**31 else self.SERIES_NUMBER_OFFSET


def check_source(series: Series, frames: Sequence[Frame], product: str, file_name: str) -> SourceSeries:
    """Refuse a series that ``product`` (``"a DICOM SEG"``, ``"an RTSTRUCT"``) cannot reference exactly, before
    anything is written: missing or invalid SOP instance, SOP class or frame of reference UIDs, one SOP instance in
    several files, several frames of reference, Siemens mosaics. A blank study or series UID is left blank here:
    :func:`with_invented_uids` makes it up once the export's writers begin."""
    for keyword, attribute, why in (
        ("SOPInstanceUID", "sop_instance_uid", f"which {product} references"),
        ("SOPClassUID", "sop_class_uid", f"which {product} references"),
        ("FrameOfReferenceUID", "frame_of_reference_uid", f"in which {product} places its content"),
    ):
        missing = [f for f in frames if not getattr(f, attribute)]
        if missing:
            raise SegAlignError(
                f"{short_path(missing[0].source_file)} has no {keyword}, {why} ({len(missing)} frames lack one); "
                f"{file_name} cannot be written"
            )
        invalid = next((f for f in frames if not valid_uid(getattr(f, attribute))), None)
        if invalid is not None:
            raise SegAlignError(
                f"{short_path(invalid.source_file)}: {keyword} {short(getattr(invalid, attribute))!r} is not a "
                f"valid UID (digits and dots, at most 64 characters); {file_name} cannot be written"
            )
    counts = Counter((f.sop_instance_uid, f.frame_number) for f in frames)
    repeated = next((key for key, count in counts.items() if count > 1), None)
    if repeated is not None:
        files = sorted(str(f.source_file.name) for f in frames if (f.sop_instance_uid, f.frame_number) == repeated)
        raise SegAlignError(
            f"SOPInstanceUID {repeated[0]} belongs to {counts[repeated]} files ({', '.join(files[:3])}); {product} "
            f"names its source images by it, so {file_name} cannot be written"
        )
    references = sorted({f.frame_of_reference_uid for f in frames})
    if len(references) > 1:
        raise SegAlignError(
            f"series {series.uid or '(no SeriesInstanceUID)'} spans {len(references)} frames of reference ({references[0]}, {references[1]}"
            f"{', ...' if len(references) > 2 else ''}); {product} has one, so {file_name} cannot be written"
        )
    mosaic = next((f for f in frames if f.tiles or f.tile is not None), None)
    if mosaic is not None:
        raise SegAlignError(
            f"{short_path(mosaic.source_file)} is a Siemens mosaic (one frame holding many slices): {product} "
            f"references whole source images, so SegAlign does not write {file_name} for mosaics"
        )
    header = read_source_header(frames[0].source_file)
    study_uid = str(header.get("StudyInstanceUID", "") or "").strip()
    series_uid = series.uid
    for keyword, current in (("StudyInstanceUID", study_uid), ("SeriesInstanceUID", series_uid)):
        if current and not valid_uid(current):
            raise SegAlignError(
                f"{short_path(frames[0].source_file)}: {keyword} {short(current)!r} is not a valid UID; "
                f"{file_name} cannot be written"
            )
    instances: dict[str, str] = {}
    for frame in frames:
        instances.setdefault(frame.sop_instance_uid, frame.sop_class_uid)
    return SourceSeries(header, study_uid, series_uid, frames[0].frame_of_reference_uid, instances)


def with_invented_uids(source: SourceSeries, uids: InventedUids, file_name: str) -> SourceSeries:
    """``source`` with the study and series UIDs it lacks, as this export makes them up (``uids``, shared by all
    its writers, so every object of one export is in the same new study and references the source series by the
    same UID), and a note for each saying so.

    A source without study or series UID (some anonymisers blank them) still gets its object, which references
    the source instances all the same; the UIDs it must carry are new, and the user is told."""
    key = next(iter(source.instances))  # the first source instance: the same for every writer of the export
    study_uid, series_uid, notes = source.study_uid, source.series_uid, []
    if not study_uid:
        study_uid = uids.get("StudyInstanceUID", key)
        notes.append(
            f"the series has no StudyInstanceUID, so {file_name} is in a new study ({study_uid}): a PACS will not "
            "file it with its source; it still references the source instances"
        )
    if not series_uid:
        series_uid = uids.get("SeriesInstanceUID", key)
        notes.append(f"the series has no SeriesInstanceUID; {file_name} references it as {series_uid}")
    return dataclasses.replace(source, study_uid=study_uid, series_uid=series_uid, notes=source.notes + notes)


class Spool:
    """Bytes kept on disk until the end of an export: an unlinked temporary file in the export's folder (nothing
    is left behind on a crash), appended to from several threads, read back by offset."""

    def __init__(self, folder: Path) -> None:
        self._file = tempfile.TemporaryFile(dir=folder)
        self._lock = threading.Lock()

    def append(self, data: bytes) -> tuple[int, int]:
        """Put ``data`` at the end; returns its offset and length."""
        with self._lock:
            offset = self._file.seek(0, os.SEEK_END)
            self._file.write(data)
        return offset, len(data)

    def read(self, offset: int, length: int) -> bytes:
        with self._lock:
            self._file.seek(offset)
            return self._file.read(length)

    def close(self) -> None:
        self._file.close()


def no_label_error(segmentation_name: str, series_uid: str, product: str, option: str, flag: str) -> SegAlignError:
    """The refusal when no label lies on any frame, for an output that needs one (a SEG segment, a ROI)."""

    def message(how: str) -> str:
        return (
            f"no label of {segmentation_name} lies on any frame of series {series_uid or '(no SeriesInstanceUID)'}, "
            f"and {product}: nothing was written (export {how} for the label images alone)"
        )

    return SegAlignError(message(f"with {option}=None"), cli_message=message(f"without {flag}"))


def read_source_header(path: Path) -> Dataset:
    """The patient, study and frame-of-reference attributes of a source file (never its pixel data)."""
    try:
        with quiet_warnings():
            return pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception as error:  # noqa: BLE001 (the scan read this file; any failure now is an input error)
        raise SegAlignError(f"{short_path(path)} cannot be read again: {describe(error)}") from None


def copy_patient_study(dataset: Dataset, source: SourceSeries) -> None:
    """The Patient and General Study attributes of ``source`` (Type 2 ones empty when missing)."""
    header = source.header
    for keyword in PATIENT_STUDY_TYPE2:
        setattr(dataset, keyword, header.get(keyword, "") or "")
    for keyword in PATIENT_STUDY_OPTIONAL:
        if keyword in header and header[keyword].value not in (None, ""):
            setattr(dataset, keyword, header[keyword].value)
    dataset.StudyInstanceUID = source.study_uid


def valid_uid(uid: str) -> bool:
    """A DICOM UID: dot-separated numbers without leading zeros, at most 64 characters (PS3.5 9.1)."""
    return len(uid) <= 64 and re.fullmatch(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*", uid) is not None


def ds(value: float) -> str:
    """A DS value of at most 16 characters, as precise as that allows."""
    value = float(value)
    if value == 0:
        return "0"
    for digits in range(15, 5, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    return f"{value:.6g}"


def limit(text: str, characters: int) -> str:
    """``text`` as one value of a text VR that holds ``characters`` (LO: 64, SH: 16): a backslash (the value
    separator) becomes ``/``, and the text is cut, without a trailing space, to that many characters and at most
    that many UTF-8 bytes (validators count bytes)."""
    text = str(text).replace("\\", "/")[:characters].rstrip()
    while len(text.encode("utf-8")) > characters:
        text = text[:-1].rstrip()
    return text


def dataset_item(**elements: object) -> Dataset:
    """A dataset of these elements (keyword=value), for a sequence written by pydicom."""
    item = Dataset()
    for keyword, value in elements.items():
        setattr(item, keyword, value)
    return item


def raw_sequence(tag: int, body: bytes, implicit: bool) -> RawDataElement:
    """A sequence whose items are already encoded (``Encoder.items``), for pydicom to write as it is."""
    return RawDataElement(Tag(tag), "SQ", len(body), body, 0, implicit, True)


#: The VRs whose explicit-VR length field has 4 bytes.
LONG_VRS = {b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV", b"SV", b"UV"}


class Encoder:
    """Little endian data elements, explicit or implicit VR, as bytes (sequences and items of defined length).

    Text is UTF-8, as the datasets' SpecificCharacterSet (ISO_IR 192) says; UI values are padded with NUL, other
    text with a space, to even lengths.
    """

    def __init__(self, implicit: bool) -> None:
        self.implicit = implicit

    def header(self, group: int, element: int, vr: bytes, length: int) -> bytes:
        if self.implicit:
            return struct.pack("<HHI", group, element, length)
        if vr in LONG_VRS:
            return struct.pack("<HH2sHI", group, element, vr, 0, length)
        if length > 0xFFFF:
            raise ValueError(f"({group:04X},{element:04X}) holds {length} bytes, more than explicit VR {vr!r} allows")
        return struct.pack("<HH2sH", group, element, vr, length)

    def text(self, group: int, element: int, vr: bytes, text: str) -> bytes:
        data = text.encode("utf-8")
        if len(data) & 1:
            data += b"\0" if vr == b"UI" else b" "
        return self.header(group, element, vr, len(data)) + data

    def us(self, group: int, element: int, values: Sequence[int]) -> bytes:
        return self.header(group, element, b"US", 2 * len(values)) + struct.pack(f"<{len(values)}H", *values)

    def ul(self, group: int, element: int, values: Sequence[int]) -> bytes:
        return self.header(group, element, b"UL", 4 * len(values)) + struct.pack(f"<{len(values)}I", *values)

    @staticmethod
    def item(content: bytes) -> bytes:
        return struct.pack("<HHI", 0xFFFE, 0xE000, len(content)) + content

    def items(self, contents: Sequence[bytes]) -> bytes:
        return b"".join(self.item(content) for content in contents)

    def sq(self, group: int, element: int, contents: Sequence[bytes]) -> bytes:
        body = self.items(contents)
        return self.header(group, element, b"SQ", len(body)) + body

    def reference(self, sop_class: str, sop_instance: str, frame_number: int | None = None) -> bytes:
        """An image reference: ReferencedSOPClassUID, ReferencedSOPInstanceUID (and ReferencedFrameNumber)."""
        data = self.text(0x0008, 0x1150, b"UI", sop_class) + self.text(0x0008, 0x1155, b"UI", sop_instance)
        if frame_number is not None:
            data += self.text(0x0008, 0x1160, b"IS", str(frame_number))
        return data

    def frame_reference(self, frame: Frame) -> bytes:
        """The reference of a source frame: its SOP instance, and its frame number for a multi-frame source."""
        number = frame.frame_number if frame.number_of_frames > 1 else None
        return self.reference(frame.sop_class_uid, frame.sop_instance_uid, number)

    def code(self, code: Code) -> bytes:
        """The Code Sequence Macro's three elements (value, scheme, meaning)."""
        return (
            self.text(0x0008, 0x0100, b"SH", code.value)
            + self.text(0x0008, 0x0102, b"SH", code.scheme)
            + self.text(0x0008, 0x0104, b"LO", limit(code.meaning, 64))
        )
