"""Reading and checking one DICOM file's header: the attributes SegAlign uses, never the pixels.

:func:`read_header` reads the attributes of :data:`HEADER_TAGS` and the header of the pixel data element
(``segalign.dicom.elements``) and returns them together as a :class:`Header`. :func:`check_image_header` refuses,
naming the file and the attribute, a header that cannot be trusted to size and place frames (the geometry of each
frame is read in ``segalign.dicom.frames``); :func:`non_image_reason` says why a file is not an image on a patient
grid (a SEG, an SR, a file without geometry) for the scan to skip it.

Tests may patch this module's functions: every header read opens its file through :func:`open_file`, and the
scan and :func:`segalign.dicom.scan.series_from_files` call ``headers.read_header(...)`` module-qualified.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterable

import pydicom
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement

from ..errors import SegAlignError, describe, quiet_warnings, short, short_path
from .elements import PixelDataElement, read_pixel_data_element
from .mosaic import MOSAIC_HEADER_TAGS
from .values import big_number, number_of_frames, optional_int, required_int, sequence_of, value_text


#: The only attributes SegAlign reads from each file (pixel data is never read for label export).
HEADER_TAGS = [
    "SOPClassUID",
    "SOPInstanceUID",
    "Modality",
    "SeriesInstanceUID",
    "SeriesNumber",
    "SeriesDescription",
    "PatientPosition",
    "FrameOfReferenceUID",
    "InstanceNumber",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "Rows",
    "Columns",
    "NumberOfFrames",
    # What the size of the pixel data is checked against (check_image_header): the pixels are never read.
    "SamplesPerPixel",
    "BitsAllocated",
    "PhotometricInterpretation",
    "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence",
    # Siemens mosaics (see segalign.dicom.mosaic): what marks them and what places their slices.
    "ImageType",
    "Manufacturer",
    "SpacingBetweenSlices",
    "SliceThickness",
]
#: Read again, with the Siemens private tags, only for the files whose ImageType says they are mosaics.
MOSAIC_TAGS = [*HEADER_TAGS, *MOSAIC_HEADER_TAGS]

#: Modalities that are never images on a patient grid of their own, even when they carry geometry.
NON_IMAGE_MODALITIES = frozenset({"SEG", "RTSTRUCT", "RTPLAN", "RTRECORD", "RTDOSE", "SR", "PR", "KO", "REG", "DOC"})

#: The attributes the scan reads from every file, parsed by :func:`read_header` (the others of HEADER_TAGS are read
#: for Siemens mosaics only, and parsed when they are: parsing every element of every header would cost 15 %).
SCAN_TAGS = tuple(
    tag_for_keyword(keyword)
    for keyword in (
        "SOPInstanceUID", "Modality", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "PatientPosition",
        "InstanceNumber", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns",
        "NumberOfFrames", "SamplesPerPixel", "BitsAllocated", "PhotometricInterpretation", "ImageType",
        "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence",
    )
)

#: Functional group macros whose attributes place frames: each must be a sequence of items where present. (The
#: rescale and window macros are read with the pixels, from a header read of its own: see segalign.dicom.pixels.)
FUNCTIONAL_MACROS = ("PlanePositionSequence", "PlaneOrientationSequence", "PixelMeasuresSequence")
MACRO_TAGS = tuple(tag_for_keyword(keyword) for keyword in FUNCTIONAL_MACROS)
FUNCTIONAL_GROUP_TAGS = frozenset(
    tag_for_keyword(keyword) for keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence")
)


@dataclass(frozen=True)
class Header:
    """One file's header as :func:`read_header` reads it: the attributes SegAlign uses, and its pixel data element."""

    dataset: pydicom.Dataset  #: the attributes of :data:`HEADER_TAGS` (never the pixel data)
    #: The pixel data element's tag and length, read without its value; None when it cannot be known without
    #: decompressing the file (a deflated transfer syntax).
    pixel_data: PixelDataElement | None

    def get(self, keyword: str, default: Any = None) -> Any:
        """The value of attribute ``keyword``, or ``default`` when the header does not hold it (``Dataset.get``)."""
        return self.dataset.get(keyword, default)


def open_file(path: Path) -> BinaryIO:
    """Open one file to read its header (the seam where tests count or break header reads)."""
    return open(path, "rb")


def read_header(path: Path) -> Header:
    """Read only the attributes SegAlign needs from one file (no pixel data).

    The pixel data element's header (its tag and length) is read too, without its value, so that
    :func:`check_image_header` can compare its size with Rows and Columns: :attr:`Header.pixel_data` holds it.
    The values the scan reads are parsed here (not later, on first use), so a corrupt value raises here, where the
    file is named, and pydicom's warnings about non-conforming values are silenced: the checks that use the values
    say what matters.
    """
    with quiet_warnings():
        with open_file(path) as stream:
            dataset = pydicom.dcmread(stream, stop_before_pixels=True, specific_tags=HEADER_TAGS)
            pixel_data = read_pixel_data_element(stream, dataset)
        parse_values(dataset, SCAN_TAGS)
    return Header(dataset, pixel_data)


def with_mosaic_tags(dataset: pydicom.Dataset, path: Path) -> pydicom.Dataset:
    """The header of a mosaic with the Siemens private tags that place its slices (the scan reads them only for
    mosaics, which keeps every other file's header read small)."""
    if (0x0029, 0x0010) in dataset or (0x0019, 0x0010) in dataset:
        return dataset  # read whole, or already with them
    try:
        with quiet_warnings():
            return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=MOSAIC_TAGS)
    except Exception as error:  # the file was readable a moment ago; say why it no longer is
        raise SegAlignError(f"{short_path(path)}: cannot read its Siemens mosaic header: {describe(error)}") from None


def parse_values(dataset: pydicom.Dataset, tags: Iterable[int] | None = None) -> None:
    """Parse the elements ``tags`` of ``dataset`` (all when None) now: pydicom parses values, and the items of
    sequences, on first use. In functional groups only the macros SegAlign reads are parsed (a Canon MR header
    has dozens of others, and parsing them all would make the scan twice as slow).

    A value pydicom cannot convert (an IS of ``inf``, or of 10,000 digits) is kept as its bytes, so the check that
    uses it says what is wrong with it; a sequence that cannot be parsed makes the file unreadable.
    """
    for tag in list(dataset.keys()) if tags is None else [tag for tag in tags if tag in dataset]:
        try:
            element = dataset[tag]
        except Exception as error:
            raw = dataset.get_item(tag)
            if raw is None or raw.VR == "SQ" or (raw.VR is None and _is_sequence_tag(tag)):
                raise ValueError(f"{_keyword(tag)} cannot be parsed: {describe(error)}") from None
            dataset[tag] = DataElement(tag, "OB", raw.value or b"")
            continue
        if element.VR == "SQ" and isinstance(element.value, pydicom.Sequence):
            inner = MACRO_TAGS if tag in FUNCTIONAL_GROUP_TAGS else None
            for item in element.value:
                parse_values(item, inner)


def _keyword(tag: int) -> str:
    """The keyword of a tag, or its number as (gggg,eeee)."""
    return keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _is_sequence_tag(tag: int) -> bool:
    try:
        return dictionary_VR(tag) == "SQ"
    except KeyError:
        return False


def non_image_reason(dataset: pydicom.Dataset) -> str:
    """Why a readable DICOM file is not an image on a patient grid (a SEG, an SR, a file without geometry), for
    the scan to skip it and say so; empty for an image, even one whose geometry turns out to be broken."""
    modality = str(dataset.get("Modality", "") or "").upper()
    if modality in NON_IMAGE_MODALITIES:
        return f"{modality} object"
    # An image with any plane attribute is meant to sit in the patient: if it cannot be placed (not even sized,
    # when Rows or Columns are missing), that is a problem of its series (reported by frames_of, naming the file
    # and the attribute), not a reason to skip it quietly.
    plane_attributes = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
    if any(keyword in dataset for keyword in plane_attributes) or "PerFrameFunctionalGroupsSequence" in dataset:
        return ""
    if "Rows" not in dataset or "Columns" not in dataset:
        return "no image (Rows/Columns missing)"
    shared = dataset.get("SharedFunctionalGroupsSequence")
    if (
        isinstance(shared, pydicom.Sequence) and shared
        and any(s in shared[0] for s in ("PlanePositionSequence", "PlaneOrientationSequence"))
    ):
        return ""
    return "no patient geometry (no ImagePositionPatient, ImageOrientationPatient or PixelSpacing)"


def check_image_header(header: Header, path: Path) -> None:
    """Refuse, naming the file and the attribute, an image header that cannot be trusted to place and size frames.

    Refused: functional group sequences that are not sequences of items; Rows, Columns or NumberOfFrames that are
    not positive integers; pixel data that the file cuts short, or whose size disagrees with Rows x Columns x
    NumberOfFrames x SamplesPerPixel x BitsAllocated, since a label image laid out by Rows and Columns would not
    line up with the frame's ``pixel_array``; and an image without pixel data. Only the pixel data element's
    header is looked at (:attr:`Header.pixel_data`), never the pixels; compressed (encapsulated) pixel data need only be
    there. Checking sizes first also means that a header claiming 65535 x 65535 pixels in a 64 x 64 file is
    refused before anything is allocated for it.
    """
    dataset = header.dataset
    for keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for number, item in enumerate(sequence_of(dataset, keyword, short_path(path)) or (), start=1):
            for macro in FUNCTIONAL_MACROS:
                sequence_of(item, macro, f"{short_path(path)} {keyword} item {number}")
    rows = required_int(dataset, "Rows", path)
    columns = required_int(dataset, "Columns", path)
    frames = number_of_frames(dataset, path)
    _check_pixel_data(header, path, rows, columns, frames)


def _check_pixel_data(header: Header, path: Path, rows: int, columns: int, frames: int) -> None:
    element = header.pixel_data
    if element is None:  # not known (deflated file)
        return
    where = short_path(path)
    if not element.keyword:
        raise SegAlignError(f"{where}: has no pixel data (does the file end early?)")
    if element.length is None:  # encapsulated: its size says nothing about Rows and Columns
        return
    expected, described = _expected_pixel_bytes(header.dataset, rows, columns, frames, element.keyword, where)
    if element.available is not None and element.available < min(element.length, expected):
        raise SegAlignError(
            f"{where}: the file ends {element.available} bytes into its {element.keyword}, which should hold "
            f"{big_number(expected)} bytes ({described}): the file is truncated"
        )
    if element.length not in (expected, expected + 1):  # + 1: the padding of an odd length to an even one
        raise SegAlignError(
            f"{where}: {element.keyword} holds {element.length} bytes, but {described} make {big_number(expected)}: "
            "the header disagrees with its pixel data, so label images would not line up with the frames' pixels"
        )


def _expected_pixel_bytes(
    dataset: pydicom.Dataset, rows: int, columns: int, frames: int, keyword: str, where: str
) -> tuple[int, str]:
    """Bytes of native pixel data the header describes, and how that number is made (for the message)."""
    raw_bits = dataset.get("BitsAllocated")
    bits = optional_int(raw_bits)
    if bits is None or not 1 <= bits <= 64:
        got = "it is missing" if raw_bits is None or raw_bits == "" else f"got '{short(value_text(raw_bits))}'"
        raise SegAlignError(f"{where}: BitsAllocated must be an integer from 1 to 64 ({got})")
    raw_samples = dataset.get("SamplesPerPixel")
    samples = 1 if raw_samples is None or raw_samples == "" else optional_int(raw_samples)
    if samples is None or not 1 <= samples <= 4:
        raise SegAlignError(f"{where}: SamplesPerPixel must be 1, 3 or 4, got '{short(value_text(raw_samples))}'")
    photometric = str(dataset.get("PhotometricInterpretation", "") or "").strip().upper()
    pixels = rows * columns * frames
    described = f"Rows {rows} x Columns {columns}"
    if frames != 1:
        described += f" x NumberOfFrames {big_number(frames)}"
    if samples != 1:
        described += f" x SamplesPerPixel {samples}"
    if bits == 1:
        return (pixels * samples + 7) // 8, described + " at BitsAllocated 1"
    per_sample = (bits + 7) // 8
    if samples == 3 and photometric in ("YBR_FULL_422", "YBR_PARTIAL_422"):  # two samples' worth per pixel
        return pixels * 2 * per_sample, described + f" (4:2:2) x {per_sample} bytes (BitsAllocated {bits})"
    return pixels * samples * per_sample, described + f" x {per_sample} bytes (BitsAllocated {bits})"
