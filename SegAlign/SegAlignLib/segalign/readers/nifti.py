"""The NIfTI reader: label maps (``.nii``, ``.nii.gz``), read with nibabel after checking the header ourselves.

A file is taken as NIfTI by its name, as nibabel takes it (:func:`matches`); a file that holds a NIfTI header under
another name is refused, asking to rename it. The affine is the one nibabel resolves: the sform when
``sform_code > 0``, else the qform. A NIfTI with neither is refused, since its position in the patient is unknown.
Labels are integers (stored as any integer or integral float type), values 0..65535. The folder reader
(:mod:`.mask_folder`) reads each mask with :func:`load_image` and :func:`volume_data`.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from ..errors import SegAlignError, describe, quiet_warnings, short, short_path
from ..segmentation import AFFINE_TOLERANCE_MM, Overlap, check_affine, embedded_label_table, max_corner_difference
from .base import Reading, integer_labels

if TYPE_CHECKING:  # nibabel is imported when a NIfTI is read, so the package imports without it
    import nibabel as nib

NAME = "nifti"
NEEDS_SERIES = False  #: the file places itself
NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: deflate cannot compress better than about 1032:1, so a .nii.gz of n bytes holds at most this many times n.
MAX_DEFLATE_RATIO = 1032
#: NIfTI header extensions (where the label table lives) larger than this are refused, not read.
MAX_EXTENSIONS_BYTES = 64 << 20
#: The magic of a NIfTI-1 header (at offset 344) and of a NIfTI-2 header (at offset 4): how one is recognised.
NIFTI1_MAGICS = (b"n+1\0", b"ni1\0")
NIFTI2_MAGICS = (b"n+2\0", b"ni2\0")


def looks_like_nifti(head: bytes) -> bool:
    """Whether the first 348 (or more) bytes of a file, decompressed if it was gzip, are a NIfTI header."""
    return head[344:348] in NIFTI1_MAGICS or head[4:8] in NIFTI2_MAGICS


def matches(path: Path, head: bytes) -> bool:
    """A file named ``.nii``/``.nii.gz`` (in any case) is the NIfTI reader's whatever it holds, so that its own
    checks say precisely what is wrong with it. A NIfTI header under another name is refused: nibabel reads a
    file by its name."""
    if path.name.lower().endswith(NIFTI_SUFFIXES):
        return True
    if looks_like_nifti(head):
        raise SegAlignError(
            f"segmentation {short_path(path)} holds a NIfTI image, but its name does not end in .nii or .nii.gz "
            "(nibabel reads it by its name): rename it"
        )
    return False


def read(path: Path, overlap: Overlap) -> Reading:
    """A NIfTI label map: its labels, the affine nibabel resolves, and the label table TotalSegmentator embeds.
    (A label map has no overlapping segments: ``overlap`` plays no part.)"""
    image = load_image(path)
    labels = integer_labels(volume_data(image, path), path)
    affine, source, warnings = resolve_affine(image, path)
    return Reading(labels, affine, source, embedded_label_table(image.header.extensions), warnings)


def resolve_affine(image: "nib.Nifti1Image", path: Path) -> tuple[np.ndarray, str, list[str]]:
    """The voxel-to-RAS affine as nibabel resolves it, which form it came from, and warnings.

    The affine used must be finite, within :data:`MAX_AFFINE_ENTRY` and invertible (:func:`check_affine`); a
    qform that is not, beside a usable sform, is only mentioned.
    """
    header = image.header
    sform, sform_code = _coded_form(header, "sform", path)
    qform, qform_code = _coded_form(header, "qform", path) if sform_code <= 0 else (None, 0)
    if sform_code > 0:
        affine = check_affine(sform, f"{path.name} (sform)")
        warnings = []
        try:
            qform, qform_code = _coded_form(header, "qform", path)
            usable = qform_code > 0 and qform is not None and np.all(np.isfinite(qform))
        except SegAlignError:
            usable = False
            warnings.append(f"{path.name}: the qform cannot be read; using the sform (sform_code > 0)")
        if usable:
            difference = max_corner_difference(affine, qform, image.shape[:3])
            if difference > AFFINE_TOLERANCE_MM:
                warnings.append(
                    f"{path.name}: sform and qform disagree by up to {difference:.3f} mm; "
                    "using the sform (sform_code > 0), as nibabel does"
                )
        elif qform_code > 0 and not warnings:
            warnings.append(f"{path.name}: the qform holds non-finite values; using the sform (sform_code > 0)")
        return affine, "sform", warnings
    if qform_code > 0 and qform is not None:
        return check_affine(qform, f"{path.name} (qform)"), "qform", []
    raise SegAlignError(
        f"{path}: neither sform_code nor qform_code is set, so the segmentation's position in the patient is unknown"
    )


def _coded_form(header: "nib.Nifti1Header", form: str, path: Path) -> tuple[np.ndarray | None, int]:
    """The header's sform or qform and its code (0 when not set), refusing one nibabel cannot build."""
    try:
        with quiet_warnings():  # numpy's invalid-value warnings: check_affine says it in words
            affine, code = getattr(header, f"get_{form}")(coded=True)
    except Exception as error:
        raise SegAlignError(f"{path.name}: the {form} cannot be read ({describe(error)})") from None
    return (None if affine is None else np.asarray(affine, dtype=float)), int(code or 0)


def load_image(path: Path) -> "nib.Nifti1Image":
    """The NIfTI image at ``path`` (header and extensions read, voxels not yet), refusing what cannot be one.

    Before nibabel reads anything, the header is checked against the bytes actually present
    (:func:`check_nifti_header`), so a header that claims 2000^3 voxels in a 1 kB file is refused without
    allocating them. nibabel's warnings and log lines about the header (which it prints itself) are silenced:
    what matters is checked here and said in SegAlign's words. The embedded label table is checked here too, so
    that a hostile one is refused with the file's name.
    """
    import nibabel as nib

    if not path.name.endswith(NIFTI_SUFFIXES):
        raise SegAlignError(f"{short_path(path)}: not a NIfTI file (expected .nii or .nii.gz)")
    check_nifti_header(path)
    try:
        with _quiet_nibabel():
            image = nib.load(str(path))
    except Exception as error:
        raise SegAlignError(f"{short_path(path)}: cannot be read as NIfTI ({describe(error)})") from None
    if not isinstance(image, nib.Nifti1Image):  # Nifti2Image is a subclass
        raise SegAlignError(f"{short_path(path)}: not a NIfTI-1 or NIfTI-2 image")
    try:
        embedded_label_table(image.header.extensions)
    except SegAlignError as error:
        raise SegAlignError(f"{short_path(path)}: {error}") from None
    return image


@contextlib.contextmanager
def _quiet_nibabel() -> Iterator[None]:
    """Silence nibabel's warnings and the log lines it prints to stderr about headers it fixes.

    (nibabel's own LoggingOutputSuppressor removes the logger's handler for good, after which Python's last-resort
    handler prints the same lines; disabling the logger for the while is what works.)
    """
    import nibabel as nib

    logger = nib.imageglobals.logger
    disabled = logger.disabled
    logger.disabled = True
    try:
        with quiet_warnings(), np.errstate(all="ignore"):
            yield
    finally:
        logger.disabled = disabled


def check_nifti_header(path: Path) -> None:
    """Refuse a NIfTI file whose header cannot be right, before nibabel reads it, naming the file and the field.

    Checked: a NIfTI-1 or NIfTI-2 header (by ``sizeof_hdr``, either byte order); 1 to 7 dimensions, each at least
    1; a known data type; a voxel offset that is a finite number; extensions of at most
    :data:`MAX_EXTENSIONS_BYTES`; and voxel data of the claimed size actually present: in a .nii the bytes after
    the offset, in a .nii.gz at most :data:`MAX_DEFLATE_RATIO` times the compressed size (deflate cannot do better).
    A qform-only file must have positive, finite voxel sizes (nibabel would quietly take 1 mm for a 0).
    """
    import nibabel as nib

    where = short_path(path)
    compressed = path.name.endswith(".gz")
    try:
        size = path.stat().st_size
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as stream:
            block = stream.read(540)
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        what = "not a valid gzip file" if compressed and not isinstance(error, PermissionError) else "cannot be read"
        raise SegAlignError(f"{where}: {what} ({describe(error)})") from None
    header = _raw_header(block, nib)
    if header is None:
        raise SegAlignError(
            f"{where}: not a NIfTI file (its first {min(len(block), 540)} bytes are not a NIfTI-1 or NIfTI-2 header)"
        )
    dims = [int(n) for n in header["dim"]]
    if not 1 <= dims[0] <= 7:
        raise SegAlignError(f"{where}: the header's dim[0] is {dims[0]}; a NIfTI image has 1 to 7 dimensions")
    shape = dims[1:dims[0] + 1]
    if any(n < 1 for n in shape):
        raise SegAlignError(f"{where}: the header gives shape {tuple(shape)}; every dimension must be at least 1")
    code = int(header["datatype"])
    if code not in nib.nifti1.data_type_codes.value_set():
        raise SegAlignError(f"{where}: the header's datatype {code} is not a NIfTI data type")
    itemsize = nib.nifti1.data_type_codes.dtype[code].itemsize
    sizeof = header.dtype.itemsize  # 348 or 540 (what sizeof_hdr should say)
    offset = float(header["vox_offset"])
    if not math.isfinite(offset) or offset < 0:
        raise SegAlignError(f"{where}: the header's vox_offset {offset:g} is not a byte position")
    if not compressed and offset > size:
        raise SegAlignError(
            f"{where}: the header's vox_offset {offset:.0f} lies beyond the end of the file ({size} bytes)"
        )
    offset = max(int(offset), sizeof + 4)  # nibabel takes 0 (and anything below the header) as sizeof_hdr + 4
    if offset - sizeof - 4 > MAX_EXTENSIONS_BYTES:
        raise SegAlignError(
            f"{where}: the header's extensions take {_bytes(offset - sizeof - 4)}; more than "
            f"{_bytes(MAX_EXTENSIONS_BYTES)} is not a label table"
        )
    claimed = math.prod(shape) * itemsize
    kind = nib.nifti1.data_type_codes.label[code]
    what = f"the header claims {' x '.join(map(str, shape))} voxels of {kind} ({_bytes(claimed)})"
    if not compressed and size - offset < claimed:
        raise SegAlignError(
            f"{where}: {what}, but the file holds {_bytes(max(size - offset, 0))} after the header: "
            "it is truncated, or the header is wrong"
        )
    if compressed and offset + claimed > size * MAX_DEFLATE_RATIO:
        raise SegAlignError(
            f"{where}: {what}, more than a compressed file of {_bytes(size)} can hold "
            f"(at most {_bytes(size * MAX_DEFLATE_RATIO)}): the header is wrong"
        )
    sform_code, qform_code = int(header["sform_code"]), int(header["qform_code"])
    if qform_code > 0 and sform_code <= 0:
        zooms = [float(z) for z in header["pixdim"][1:4]]
        if not all(math.isfinite(z) and z > 0 for z in zooms):
            raise SegAlignError(
                f"{where}: the qform's voxel sizes (pixdim[1..3]) must be positive numbers, got "
                f"{short(' '.join(f'{z:g}' for z in zooms))}"
            )


def _raw_header(block: bytes, nib) -> np.ndarray | None:
    """The NIfTI-1 or NIfTI-2 header at the start of ``block`` as a numpy record in its own byte order, or None.

    The version and byte order come from ``sizeof_hdr`` (348 or 540); a header whose ``sizeof_hdr`` is wrong but
    whose magic is right is taken in the byte order that gives 1 to 7 dimensions, as nibabel does.
    """
    versions = [(nib.nifti1.header_dtype, (b"n+1", b"ni1")), (nib.nifti2.header_dtype, (b"n+2", b"ni2"))]
    for dtype, magics in versions:
        if len(block) < dtype.itemsize:
            continue
        headers = [np.frombuffer(block[:dtype.itemsize], dtype=dtype.newbyteorder(o), count=1)[0] for o in "<>"]
        for header in headers:
            if int(header["sizeof_hdr"]) == dtype.itemsize:
                return header
        if bytes(headers[0]["magic"])[:3] in magics:
            return next((h for h in headers if 1 <= int(h["dim"][0]) <= 7), headers[0])
    return None


def _bytes(count: int) -> str:
    """A byte count for people: ``768 bytes``, ``7.5 GB``, ``32 TB``."""
    if count < 1000:
        return f"{count} bytes"
    amount = float(count)
    for unit in ("kB", "MB", "GB", "TB", "PB"):
        amount /= 1000
        if amount < 999.5:
            return f"{amount:.3g} {unit}"
    return f"{amount / 1000:.3g} EB"


def volume_data(image: "nib.Nifti1Image", path: Path) -> np.ndarray:
    shape = image.shape
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 3:
        raise SegAlignError(f"{path}: a label map must have at most 3 dimensions, this one has shape {image.shape}")
    try:
        with _quiet_nibabel():
            data = read_compressed(image, path) if path.name.endswith(".gz") else None
            if data is None:
                data = np.asanyarray(image.dataobj)
    except SegAlignError:
        raise
    except MemoryError:
        raise SegAlignError(
            f"{short_path(path)}: not enough memory for its {' x '.join(map(str, image.shape))} voxels"
        ) from None
    except Exception as error:
        raise SegAlignError(f"{short_path(path)}: cannot read the voxel data ({describe(error)})") from None
    return data.reshape(shape + (1,) * (3 - len(shape)), order="A")


def read_compressed(image: "nib.Nifti1Image", path: Path) -> np.ndarray | None:
    """Decompress the voxels of an unscaled .nii.gz straight into their array.

    nibabel reads a compressed file into a bytes object and then copies it into the array, so loading peaks at
    twice the volume; reading into the array itself keeps the peak at the volume. Scaled data (scl_slope/inter)
    is left to nibabel (None is returned).
    """
    proxy = image.dataobj  # nibabel's ArrayProxy knows where the voxels are and how they are laid out
    slope, intercept = getattr(proxy, "slope", 1.0), getattr(proxy, "inter", 0.0)
    if slope != 1.0 or intercept != 0.0 or getattr(proxy, "order", "F") != "F" or not hasattr(proxy, "offset"):
        return None
    count = int(np.prod(proxy.shape))
    flat = np.empty(count, dtype=proxy.dtype)
    target = memoryview(flat).cast("B")
    with gzip.open(path, "rb") as stream:
        stream.seek(int(proxy.offset))
        filled = 0
        while filled < len(target):  # in pieces: GzipFile.readinto of the whole view would allocate it again
            read = stream.readinto(target[filled:filled + (1 << 22)])
            if not read:
                raise SegAlignError(f"{path}: the file ends {len(target) - filled} bytes before its voxel data does")
            filled += read
        stream.read(1)  # at the end of the stream, this checks its CRC: corrupt voxels are refused, not exported
    return flat.reshape(proxy.shape, order="F")


def nifti_stem(path: Path) -> str:
    """A NIfTI file's name without .nii or .nii.gz (a mask's structure name)."""
    for suffix in (".nii.gz", ".nii"):
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


