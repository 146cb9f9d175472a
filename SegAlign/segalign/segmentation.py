"""Segmentations: a label volume, the affine that places it in the patient, and its label table.

Two inputs are read:

* a multilabel NIfTI (integer labels; stored as any integer or integral float type, values 0..65535);
* a folder of binary NIfTI masks, one structure per file (TotalSegmentator's default output): label values are
  1..N in file-name order and names come from the file names, unless a user label table names the files.

The affine is the one nibabel resolves: the sform when ``sform_code > 0``, else the qform. A NIfTI with neither
is refused, since its position in the patient is unknown.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import math
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Literal, Mapping

import numpy as np

from .errors import SegAlignError, describe, quiet_warnings, short, short_path
from .labels import (
    MAX_LABEL,
    Label,
    complete_table,
    default_color,
    embedded_label_table,
    guess_totalsegmentator,
    read_label_file,
)

if TYPE_CHECKING:  # nibabel is imported when a NIfTI is read, so the package imports without it
    import nibabel as nib

Overlap = Literal["error", "later-wins"]

#: sform and qform that differ by more than this anywhere in the volume are reported.
AFFINE_TOLERANCE_MM = 1e-3
NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: No affine entry may exceed this in magnitude (mm): beyond it positions lose the precision of a voxel.
MAX_AFFINE_ENTRY = 1e6
#: deflate cannot compress better than about 1032:1, so a .nii.gz of n bytes holds at most this many times n.
MAX_DEFLATE_RATIO = 1032
#: NIfTI header extensions (where the label table lives) larger than this are refused, not read.
MAX_EXTENSIONS_BYTES = 64 << 20


@dataclass
class Segmentation:
    """A label volume in patient space.

    ``labels[i, j, k]`` is the label of the voxel whose centre is ``affine @ (i, j, k, 1)`` in RAS millimetres.
    """

    labels: np.ndarray
    affine: np.ndarray
    label_table: dict[int, Label]
    source: Path | None  #: the file or folder it was read from (None for a Slicer segmentation node)
    affine_source: str = "sform"  #: "sform", "qform", or "slicer" for a segmentation node
    voxel_counts: dict[int, int] = field(default_factory=dict)  #: non-zero label value -> voxels
    warnings: list[str] = field(default_factory=list)
    description: str = "segmentation"  #: used in messages and provenance when there is no source file

    def __post_init__(self) -> None:
        if self.labels.ndim != 3:
            raise SegAlignError(f"{self.name}: a label volume must be 3D, got shape {self.labels.shape}")
        if self.labels.dtype not in (np.uint8, np.uint16):
            raise SegAlignError(f"{self.name}: labels must be uint8 or uint16, got {self.labels.dtype}")
        if not (self.labels.flags.c_contiguous or self.labels.flags.f_contiguous):
            self.labels = np.asfortranarray(self.labels)
        self.affine = check_affine(self.affine, self.name)
        if not self.voxel_counts:
            self.voxel_counts = count_labels(self.labels)
        outside = sorted(value for value in self.label_table if not 0 <= value <= MAX_LABEL)
        if outside:  # a label volume holds at most 65535: such entries name nothing, and would size lookups
            self.label_table = {v: label for v, label in self.label_table.items() if 0 <= v <= MAX_LABEL}
            self.warnings.append(
                f"{self.name}: the label table names {len(outside)} values outside 0..{MAX_LABEL} "
                f"(e.g. {short(outside[0], 24)}); a segmentation holds no such label, so they are ignored"
            )
        self.label_table = complete_table(self.voxel_counts, self.label_table)  # every value present has a label

    def __repr__(self) -> str:
        return (
            f"<Segmentation {self.name}: {'x'.join(map(str, self.labels.shape))} {self.labels.dtype}, "
            f"{len(self.voxel_counts)} labels, affine from {self.affine_source}>"
        )

    @property
    def name(self) -> str:
        """How to call it in messages: its file name, or the given description."""
        return self.source.name if self.source is not None else self.description

    @property
    def values(self) -> list[int]:
        """Non-zero label values present in the volume."""
        return sorted(self.voxel_counts)



def count_labels(labels: np.ndarray) -> dict[int, int]:
    """Voxel count of every non-zero label value.

    Counted in chunks of the non-zero voxels on two threads: ``np.bincount`` converts its input to 64-bit
    integers, which for a whole 512 x 512 x 300 volume would cost eight times its size in memory.
    """
    flat = labels.reshape(-1, order="F" if labels.flags.f_contiguous else "C")
    size = int(labels.max(initial=0)) + 1
    chunk = 1 << 21

    def count(start: int) -> np.ndarray:
        part = flat[start:start + chunk]
        return np.bincount(part[part != 0], minlength=size)

    with ThreadPoolExecutor(max_workers=2) as pool:
        counts = sum(pool.map(count, range(0, flat.size, chunk)), np.zeros(size, dtype=np.int64))
    return {int(value): int(counts[value]) for value in np.flatnonzero(counts) if value != 0}


def load_segmentation(
    path: str | os.PathLike[str],
    label_table: str | os.PathLike[str] | Mapping[int, Label] | None = None,
    overlap: Overlap = "error",
    allow_many_labels: bool = False,
) -> Segmentation:
    """Load a multilabel NIfTI file or a folder of binary NIfTI masks.

    ``label_table`` (a path or a ready mapping) names labels; it wins over a table embedded in the NIfTI.
    ``overlap`` decides what happens where masks of a folder overlap: ``"error"`` refuses, naming the files;
    ``"later-wins"`` gives the voxel to the mask that comes later in file-name order.

    A volume that looks like an intensity image rather than a label map (see :func:`looks_like_image`) is refused
    unless ``allow_many_labels`` is true.
    """
    path = Path(path)
    user = read_label_file(label_table) if isinstance(label_table, (str, os.PathLike)) else dict(label_table or {})
    try:
        is_dir, is_file, exists = path.is_dir(), path.is_file(), os.path.lexists(path)
    except OSError as error:  # a name too long for the file system, a permission problem on a parent...
        raise SegAlignError(f"segmentation {short_path(path)} cannot be opened: {describe(error)}") from None
    if is_dir:
        return _load_mask_folder(path, user, overlap)
    if not is_file:
        if exists:
            raise SegAlignError(f"segmentation {short_path(path)} is not a regular file or a folder of masks")
        raise SegAlignError(f"segmentation not found: {short_path(path)}")
    image = _load_nifti(path)
    labels = _integer_labels(_volume_data(image, path), path)
    affine, source, warnings = resolve_affine(image, path)
    counts = count_labels(labels)
    reason = looks_like_image(counts, labels)
    if reason and not allow_many_labels:
        raise SegAlignError(
            f"{path} looks like an intensity image, not a label map ({reason}); pass the segmentation, or "
            "allow_many_labels=True if this really is one",
            cli_message=f"{path} looks like an intensity image, not a label map ({reason}); give the segmentation, "
            "or --allow-many-labels if this really is one",
        )
    embedded = embedded_label_table(image.header.extensions)
    guessed = {} if user or embedded else guess_totalsegmentator(counts)
    if guessed:
        warnings.append(
            f"{path.name} has no label table; its {len(counts)} label values are all TotalSegmentator v2 'total' "
            "classes, so they are named after them (pass --labels to name them otherwise)"
        )
    table = complete_table(counts, user, embedded, guessed)
    return Segmentation(labels, affine, table, path, source, counts, warnings)


#: A label map with at least this many distinct values is examined for looking like an intensity image.
IMAGE_MIN_VALUES = 256


def looks_like_image(counts: Mapping[int, int], labels: np.ndarray | None = None) -> str:
    """Why a volume looks like an intensity image (CT, MR) rather than a label map, or ``""``.

    An image has many distinct values that fill most of their range, and a smooth histogram: neighbouring values
    have similar counts. Label maps with hundreds of labels (atlases) fill their range too, but each label's size
    usually has nothing to do with its neighbour's, so their histogram is rough. Smoothness is the median of
    ``|log(count[v + 1] / count[v])|`` over neighbouring values: about 0.1 for CT and MR, above 1 for atlases.

    Parcellations of similar-sized regions (a grid of ROIs, supervoxels) have a smooth histogram too, so when the
    voxels are given a third sign is required: in a label map neighbouring voxels mostly hold the same value
    (regions are piecewise constant), in an image (noise, gradients) they mostly differ. At most
    :data:`IMAGE_MAX_EQUAL_NEIGHBOURS` of the non-background neighbour pairs along the first axis may be equal.
    """
    values = sorted(counts)
    if len(values) < IMAGE_MIN_VALUES:
        return ""
    span = values[-1] - values[0] + 1
    density = len(values) / span
    neighbours = [(counts[v], counts[v + 1]) for v in values if v + 1 in counts]
    if density < 0.5 or len(neighbours) < IMAGE_MIN_VALUES // 2:
        return ""
    roughness = float(np.median([abs(np.log(b / a)) for a, b in neighbours]))
    if roughness > 0.5:
        return ""
    if labels is not None:
        equal = equal_neighbour_fraction(labels)
        if equal > IMAGE_MAX_EQUAL_NEIGHBOURS:
            return ""
    return (
        f"{len(values)} distinct values from {values[0]} to {values[-1]} with a smooth histogram "
        f"(median step {roughness:.2f})"
    )


#: A volume whose non-background neighbours are equal more often than this is piecewise constant: labels.
IMAGE_MAX_EQUAL_NEIGHBOURS = 0.5


def equal_neighbour_fraction(labels: np.ndarray, sample_planes: int = 16) -> float:
    """Of the pairs of neighbouring voxels along the first axis that are not both 0, the fraction that are equal,
    on up to ``sample_planes`` evenly spaced planes of the last axis (cheap on any volume)."""
    planes = np.unique(np.linspace(0, labels.shape[2] - 1, min(sample_planes, labels.shape[2])).astype(int))
    equal = pairs = 0
    for k in planes:
        plane = labels[:, :, k]
        a, b = plane[1:], plane[:-1]
        counted = (a != 0) | (b != 0)
        pairs += int(np.count_nonzero(counted))
        equal += int(np.count_nonzero((a == b) & counted))
    return equal / pairs if pairs else 1.0


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


def check_affine(affine: object, name: str) -> np.ndarray:
    """``affine`` as a float 4 x 4 array, or a :class:`SegAlignError`: it must be finite (an infinite entry would
    also end up as ``Infinity`` in export.json, which is not JSON), within :data:`MAX_AFFINE_ENTRY`, and
    invertible."""
    try:
        array = np.asarray(affine, dtype=float)
    except (TypeError, ValueError) as error:
        raise SegAlignError(f"{name}: the affine is not numeric ({describe(error)})") from None
    if array.shape != (4, 4):
        raise SegAlignError(f"{name}: the affine must be 4 x 4, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise SegAlignError(f"{name}: the affine holds non-finite values (NaN or infinity): {_affine_text(array)}")
    if np.max(np.abs(array)) > MAX_AFFINE_ENTRY:
        raise SegAlignError(
            f"{name}: the affine has entries beyond {MAX_AFFINE_ENTRY:g} mm in magnitude: {_affine_text(array)}"
        )
    if abs(np.linalg.det(array[:3, :3])) < 1e-12:
        raise SegAlignError(f"{name}: the affine is singular: {array.tolist()}")
    return array


def _affine_text(affine: np.ndarray) -> str:
    """The first three rows of an affine, for a message (short whatever they hold)."""
    return short("; ".join(" ".join(f"{value:.6g}" for value in row) for row in affine[:3]), 120)


def max_corner_difference(a: np.ndarray, b: np.ndarray, shape: tuple[int, ...]) -> float:
    """Largest distance (mm) between where two affines put the same voxel centre, over the whole volume."""
    corners = np.array(list(itertools.product(*[(0, max(n - 1, 0)) for n in shape[:3]])), dtype=float)
    corners = np.c_[corners, np.ones(len(corners))]
    return float(np.max(np.linalg.norm((corners @ (np.asarray(a) - np.asarray(b)).T)[:, :3], axis=1)))


def _load_nifti(path: Path) -> "nib.Nifti1Image":
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


def _volume_data(image: "nib.Nifti1Image", path: Path) -> np.ndarray:
    shape = image.shape
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 3:
        raise SegAlignError(f"{path}: a label map must have at most 3 dimensions, this one has shape {image.shape}")
    try:
        with _quiet_nibabel():
            data = _read_compressed(image, path) if path.name.endswith(".gz") else None
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


def _read_compressed(image: "nib.Nifti1Image", path: Path) -> np.ndarray | None:
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


def _integer_labels(data: np.ndarray, path: Path) -> np.ndarray:
    """The data as uint8 (largest value <= 255) or uint16, refusing anything that is not a label map."""
    if data.dtype.kind == "b":
        data = data.view(np.uint8)
    elif data.dtype.kind == "f":
        if not np.all(np.isfinite(data)):
            raise SegAlignError(f"{path}: contains NaN or infinite values; a label map holds integers")
        fractional = data != np.floor(data)
        if fractional.any():
            example = data[fractional].flat[0]
            raise SegAlignError(
                f"{path}: contains non-integer value {example:g}; a label map holds integers (is this an intensity "
                "image or a probability map rather than a segmentation?)"
            )
    elif data.dtype.kind not in "iu":
        raise SegAlignError(f"{path}: data type {data.dtype} is not a label map")
    if data.size == 0:
        raise SegAlignError(f"{path}: the volume is empty (shape {data.shape})")
    low, high = data.min(), data.max()
    if low < 0:
        raise SegAlignError(
            f"{path}: contains negative values (down to {low:g}), so it is not a label map (labels are 0..65535); "
            "it looks like an intensity image (CT in HU?) rather than its segmentation"
        )
    if high > 65535:
        raise SegAlignError(f"{path}: label {high:g} exceeds 65535")
    target = np.uint8 if high <= 255 else np.uint16
    order = "F" if data.flags.f_contiguous else "C"
    return data if data.dtype == target else data.astype(target, order=order)


def nifti_stem(path: Path) -> str:
    """A NIfTI file's name without .nii or .nii.gz (a mask's structure name)."""
    for suffix in (".nii.gz", ".nii"):
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def _load_mask_folder(folder: Path, user: Mapping[int, Label], overlap: Overlap) -> Segmentation:
    """The masks of a folder (every ``.nii``/``.nii.gz`` in it) as one label volume: a mask that is not a
    readable file (a broken link) is refused rather than left out, and so are more masks than labels can be."""
    try:
        files = sorted(path for path in folder.iterdir() if path.name.endswith(NIFTI_SUFFIXES))
    except OSError as error:
        raise SegAlignError(f"{short_path(folder)}: the folder cannot be read ({describe(error)})") from None
    not_files = [path for path in files if not path.is_file()]
    if not_files:
        raise SegAlignError(
            f"{short_path(folder)}: {short(not_files[0].name, 80)} is not a readable file (a broken link, or a "
            "folder?); every .nii or .nii.gz in a folder of masks is read as a mask"
        )
    if not files:
        raise SegAlignError(f"{folder}: the folder holds no .nii or .nii.gz masks")
    if len(files) > MAX_LABEL and not user:
        raise SegAlignError(f"{short_path(folder)}: {len(files)} masks, but a segmentation holds at most {MAX_LABEL}")
    by_name = {label.name: label for label in user.values()}
    if user:
        unnamed = [path.name for path in files if nifti_stem(path) not in by_name]
        if unnamed:
            raise SegAlignError(f"{folder}: the label table does not name {', '.join(unnamed[:5])}")
        labels_for_files = [by_name[nifti_stem(path)] for path in files]
        bad = [f"{path.name} -> {label.value}" for path, label in zip(files, labels_for_files) if label.value == 0]
        if bad:
            raise SegAlignError(f"{folder}: the label table gives value 0 (background) to {', '.join(bad)}")
    else:
        labels_for_files = [
            Label(value, nifti_stem(path), default_color(value)) for value, path in enumerate(files, start=1)
        ]
    largest = max(label.value for label in labels_for_files)
    combined: np.ndarray | None = None
    first_image: "nib.Nifti1Image | None" = None
    affine = np.eye(4)
    source = "sform"
    warnings: list[str] = []
    owner: dict[int, Path] = {}
    overlapping = 0
    for path, label in zip(files, labels_for_files):
        image = _load_nifti(path)
        mask = _volume_data(image, path) != 0
        if first_image is None:
            first_image = image
            affine, source, warnings = resolve_affine(image, path)
            combined = np.zeros(mask.shape, dtype=np.uint8 if largest <= 255 else np.uint16, order="F")
        else:
            this_affine, _, _ = resolve_affine(image, path)
            if mask.shape != combined.shape or max_corner_difference(affine, this_affine, mask.shape) > AFFINE_TOLERANCE_MM:
                raise SegAlignError(
                    f"{path.name} and {files[0].name} are on different grids "
                    f"(shape {mask.shape} vs {combined.shape} or different affines); masks of one folder must share a grid"
                )
        taken = combined[mask]
        clash = taken != 0
        if clash.any():
            if overlap != "later-wins":
                earlier = owner[int(taken[clash][0])]
                message = f"masks {earlier.name} and {path.name} overlap in {int(clash.sum())} voxels; "
                raise SegAlignError(
                    message + "pass overlap='later-wins' to let later files win",
                    cli_message=message + "use --overlap later-wins to let later files win",
                )
            overlapping += int(clash.sum())
        combined[mask] = label.value
        owner[label.value] = path
    if overlapping:
        warnings.append(f"{overlapping} voxels are in more than one mask; the later file in name order won")
    table = {label.value: label for label in labels_for_files}
    assert combined is not None
    return Segmentation(combined, affine, complete_table(table, table), folder, source, warnings=warnings)
