"""The reader registry, directly: which reader says a file is its kind, what :func:`sniff` gives, and the one record
(:class:`~segalign.readers.Reading`) each reader returns.

Each reader's ``matches`` is asked about a table of files (their first bytes as the registry reads them,
decompressed if gzip): NIfTI-1 and NIfTI-2, plain and gzip-compressed, NRRD, a Slicer ``.seg.nrrd``, MetaImage,
DICOM, and files that are none of them. Exactly one reader claims each segmentation file, the NIfTI reader by its
name (so its own checks explain a broken one) and the others by content.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import numpy as np
import pytest
from segalign.errors import SegAlignError, short_path
from segalign.readers import (
    ACCEPTED,
    READERS,
    Reading,
    dicom_seg,
    load_segmentation,
    metaimage,
    nifti,
    nrrd,
    rtstruct,
    sniff,
)
from segalign.readers.registry import HEAD_BYTES, read_head


def _nifti(version: int = 1) -> bytes:
    image_class = nib.Nifti1Image if version == 1 else nib.Nifti2Image
    image = image_class(np.arange(24, dtype=np.uint8).reshape(2, 3, 4), np.diag([2.0, 2.0, 3.0, 1.0]))
    image.header.set_sform(image.affine, code=1)
    return image.to_bytes()


NRRD_LABELS = (b"NRRD0004\n# Complete NRRD file format specification at:\ntype: unsigned char\ndimension: 3\n"
               b"space: left-posterior-superior\nsizes: 2 2 2\nspace directions: (1,0,0) (0,1,0) (0,0,1)\n"
               b"kinds: domain domain domain\nencoding: raw\nspace origin: (0,0,0)\n\n" + bytes(8))
SEG_NRRD = NRRD_LABELS.replace(b"\n\n", b"\nSegment0_ID:=Segment_1\nSegment0_LabelValue:=1\nSegment0_Layer:=0\n"
                               b"Segment0_Name:=liver\n\n")
METAIMAGE = (b"ObjectType = Image\nNDims = 3\nBinaryData = True\nDimSize = 2 2 2\nElementType = MET_UCHAR\n"
             b"ElementDataFile = LOCAL\n" + bytes(8))
DICOM = bytes(128) + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00" + bytes(300)


def _meta(sop_class: bytes) -> bytes:
    """A DICOM file's first bytes: preamble, DICM, and file meta information naming ``sop_class``."""
    uid = sop_class + b"\x00" * (len(sop_class) % 2)
    return (bytes(128) + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00" + (32).to_bytes(4, "little")
            + b"\x02\x00\x01\x00OB\x00\x00\x02\x00\x00\x00\x00\x01"
            + b"\x02\x00\x02\x00UI" + len(uid).to_bytes(2, "little") + uid + bytes(200))


RTSTRUCT = _meta(b"1.2.840.10008.5.1.4.1.1.481.3")
SEG = _meta(b"1.2.840.10008.5.1.4.1.1.66.4")

class Refused(NamedTuple):
    """A file whose reader says it is its kind, but refuses it as it is named."""

    reader: str
    message: str


#: name: (file name, contents, the reader that claims it: its NAME, None for none, or how it refuses the file).
FILES: dict[str, tuple[str, bytes, str | Refused | None]] = {
    "nifti1": ("labels.nii", _nifti(1), "nifti"),
    "nifti1 gzip": ("labels.nii.gz", gzip.compress(_nifti(1)), "nifti"),
    "nifti2": ("labels.nii", _nifti(2), "nifti"),
    "nifti2 gzip": ("labels.nii.gz", gzip.compress(_nifti(2)), "nifti"),
    "nifti named in capitals": ("LABELS.NII.GZ", gzip.compress(_nifti(1)), "nifti"),
    "garbage named .nii": ("broken.nii", b"not a NIfTI at all", "nifti"),
    "corrupt gzip named .nii.gz": ("broken.nii.gz", b"\x1f\x8b\x08\x00garbage", "nifti"),
    "nifti1 misnamed": ("labels.data", _nifti(1), Refused("nifti", "holds a NIfTI image, but its name does not end")),
    "nifti2 gzip misnamed": ("labels.gz", gzip.compress(_nifti(2)), Refused("nifti", "holds a NIfTI image, but its")),
    "nrrd": ("labels.nrrd", NRRD_LABELS, "nrrd"),
    "nrrd gzip": ("labels.nrrd", gzip.compress(NRRD_LABELS), "nrrd"),
    "seg.nrrd": ("labels.seg.nrrd", SEG_NRRD, "nrrd"),
    "nrrd misnamed": ("labels.data", NRRD_LABELS, "nrrd"),
    "metaimage .mha": ("labels.mha", METAIMAGE, "metaimage"),
    "metaimage .mhd, indented, NDims first": ("labels.mhd", b"\n  NDims = 3\nDimSize = 2 2 2\n", "metaimage"),
    "dicom": ("seg.dcm", DICOM, "dicom"),
    "dicom without a suffix": ("1.2.840.1234", DICOM, "dicom"),
    "dicom seg": ("seg.dcm", SEG, "dicom"),
    "rt structure set": ("rtss.dcm", RTSTRUCT, "rtstruct"),
    "rt structure set without a suffix": ("RS.1.2.3", RTSTRUCT, "rtstruct"),
    "another sop class starting alike": ("x.dcm", _meta(b"1.2.840.10008.5.1.4.1.1.481.30"), "dicom"),
    "DICM in the wrong place": ("seg.dcm", b"DICM" + bytes(400), None),
    "garbage": ("labels.bin", bytes(range(256)) * 2, None),
    "text": ("notes.txt", b"hello", None),
    "empty": ("labels.dcm", b"", None),
    "corrupt gzip": ("labels.gz", b"\x1f\x8b\x08\x00garbage", None),
}
#: How sniff refuses a file no reader claims: it cannot be read, or it is no format SegAlign reads.
UNREADABLE = {"corrupt gzip"}


@pytest.fixture
def written(tmp_path: Path):
    def write(case: str) -> tuple[Path, bytes, str | Refused | None]:
        name, contents, expected = FILES[case]
        path = tmp_path / name
        path.write_bytes(contents)
        try:
            head = read_head(path)
        except (OSError, EOFError, zlib.error):  # as sniff does: the readers see no bytes
            head = b""
        return path, head, expected

    return write


def test_the_registry_asks_the_readers_in_order_and_each_follows_the_protocol() -> None:
    assert READERS == (nifti, nrrd, rtstruct, dicom_seg, metaimage)
    assert [reader.NAME for reader in READERS] == ["nifti", "nrrd", "rtstruct", "dicom", "metaimage"]
    for reader in READERS:
        assert callable(reader.matches) and callable(reader.read)
        assert reader.NEEDS_SERIES is (reader is rtstruct)
        assert not reader.NEEDS_SERIES or callable(reader.read_on_series)


@pytest.mark.parametrize("case", sorted(FILES))
def test_each_reader_matches_only_its_own_files(written, case: str) -> None:
    path, head, expected = written(case)
    for reader in READERS:
        if isinstance(expected, Refused) and reader.NAME == expected.reader:
            with pytest.raises(SegAlignError, match=expected.message):
                reader.matches(path, head)
        else:
            assert reader.matches(path, head) is (reader.NAME == expected), reader.NAME


@pytest.mark.parametrize("case", sorted(FILES))
def test_sniff_gives_the_reader_or_raises_why_there_is_none(written, case: str) -> None:
    path, _, expected = written(case)
    if isinstance(expected, str):
        assert sniff(path).NAME == expected
    elif isinstance(expected, Refused):
        with pytest.raises(SegAlignError, match=rf"^segmentation .*{path.name} {expected.message}"):
            sniff(path)
    else:
        with pytest.raises(SegAlignError) as refused:
            sniff(path)
        why = "cannot be read: " if case in UNREADABLE else f"is not a format SegAlign reads; give {ACCEPTED}"
        assert str(refused.value).startswith(f"segmentation {short_path(path)} {why}")


def test_the_head_is_decompressed_and_at_most_the_nifti_header(tmp_path: Path) -> None:
    plain, packed = tmp_path / "a.nii", tmp_path / "a.nii.gz"
    plain.write_bytes(_nifti(1))
    packed.write_bytes(gzip.compress(_nifti(1)))
    assert read_head(plain) == read_head(packed) == _nifti(1)[:HEAD_BYTES]
    assert HEAD_BYTES >= 348  # the NIfTI-1 magic ends at byte 348


def test_an_unreadable_file_is_left_to_the_reader_that_knows_it_by_name(tmp_path: Path) -> None:
    """A .nii the registry cannot open still goes to the NIfTI reader (whose checks name the problem); any other
    unreadable file is refused by the registry."""
    missing = tmp_path / "gone.nii.gz"
    assert sniff(missing) is nifti
    with pytest.raises(SegAlignError, match=r"gone\.nrrd cannot be read: "):
        sniff(tmp_path / "gone.nrrd")


def test_each_reader_returns_one_record_that_the_registry_completes(tmp_path: Path) -> None:
    """The readers' records (labels, affine, where the affine came from, the file's own table) for small files of
    each format, and the Segmentation load_segmentation makes of each."""
    labels = np.zeros((3, 4, 5), dtype=np.uint8)
    labels[1, 1:3, 2:4] = 7
    affine = np.diag([0.5, 0.75, 2.0, 1.0])
    affine[:3, 3] = (10, -20, 30)
    image = nib.Nifti1Image(labels, affine)
    image.header.set_sform(affine, code=1)
    nib.save(image, tmp_path / "labels.nii.gz")
    pynrrd = pytest.importorskip("nrrd")
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    header = {"space": "left-posterior-superior", "space directions": lps[:3, :3].T, "space origin": lps[:3, 3]}
    pynrrd.write(str(tmp_path / "labels.nrrd"), labels, header, index_order="F")
    pynrrd.write(str(tmp_path / "labels.seg.nrrd"), labels, {**header, "Segment0_ID": "Segment_7",
                 "Segment0_Name": "liver", "Segment0_LabelValue": "7", "Segment0_Layer": "0"}, index_order="F")
    sitk = pytest.importorskip("SimpleITK")
    mha = sitk.GetImageFromArray(np.ascontiguousarray(labels.transpose(2, 1, 0)))
    mha.SetSpacing([0.5, 0.75, 2.0])
    mha.SetOrigin([-10.0, 20.0, 30.0])
    mha.SetDirection([-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0])
    sitk.WriteImage(mha, str(tmp_path / "labels.mha"))
    expected = {"labels.nii.gz": ("sform", {}), "labels.nrrd": ("nrrd", {}), "labels.mha": ("metaimage", {}),
                "labels.seg.nrrd": ("seg.nrrd", {7: "liver"})}
    for name, (source, table) in expected.items():
        path = tmp_path / name
        reading = sniff(path).read(path, "error")
        assert isinstance(reading, Reading)
        np.testing.assert_array_equal(reading.labels, labels, err_msg=name)
        np.testing.assert_allclose(reading.affine, affine, err_msg=name)
        assert (reading.source, {v: label.name for v, label in reading.label_table.items()}) == (source, table)
        assert reading.frame_of_reference_uid is None
        segmentation = load_segmentation(path)
        assert segmentation.affine_source == source and segmentation.voxel_counts == {7: 4}
        assert segmentation.label_table[7].name == table.get(7, "Segment_7")
