"""Segmentations: a label volume, the affine that places it in the patient, and its label table.

Two inputs are read:

* a multilabel NIfTI (integer labels; stored as any integer or integral float type, values 0..65535);
* a folder of binary NIfTI masks, one structure per file (TotalSegmentator's default output): label values are
  1..N in file-name order and names come from the file names, unless a user label table names the files.

The affine is the one nibabel resolves: the sform when ``sform_code > 0``, else the qform. A NIfTI with neither
is refused, since its position in the patient is unknown.
"""

from __future__ import annotations

import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Mapping

import numpy as np

from .errors import SegAlignError
from .labels import Label, complete_table, default_color, embedded_label_table, guess_totalsegmentator, read_label_file

if TYPE_CHECKING:  # nibabel is imported when a NIfTI is read, so the package imports without it
    import nibabel as nib

Overlap = Literal["error", "later-wins"]

#: sform and qform that differ by more than this anywhere in the volume are reported.
AFFINE_TOLERANCE_MM = 1e-3
NIFTI_SUFFIXES = (".nii", ".nii.gz")


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
        self.affine = np.asarray(self.affine, dtype=float)
        if abs(np.linalg.det(self.affine[:3, :3])) < 1e-12:
            raise SegAlignError(f"{self.name}: the affine is singular: {self.affine.tolist()}")
        if not self.voxel_counts:
            self.voxel_counts = count_labels(self.labels)
        self.label_table = complete_table(self.voxel_counts, self.label_table)  # every value present has a label

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
) -> Segmentation:
    """Load a multilabel NIfTI file or a folder of binary NIfTI masks.

    ``label_table`` (a path or a ready mapping) names labels; it wins over a table embedded in the NIfTI.
    ``overlap`` decides what happens where masks of a folder overlap: ``"error"`` refuses, naming the files;
    ``"later-wins"`` gives the voxel to the mask that comes later in file-name order.
    """
    path = Path(path)
    user = read_label_file(label_table) if isinstance(label_table, (str, os.PathLike)) else dict(label_table or {})
    if path.is_dir():
        return _load_mask_folder(path, user, overlap)
    if not path.is_file():
        raise SegAlignError(f"segmentation not found: {path}")
    image = _load_nifti(path)
    labels = _integer_labels(_volume_data(image, path), path)
    affine, source, warnings = resolve_affine(image, path)
    counts = count_labels(labels)
    embedded = embedded_label_table(image.header.extensions)
    guessed = {} if user or embedded else guess_totalsegmentator(counts)
    if guessed:
        warnings.append(
            f"{path.name} has no label table; its {len(counts)} label values are all TotalSegmentator v2 'total' "
            "classes, so they are named after them (pass --labels to name them otherwise)"
        )
    table = complete_table(counts, user, embedded, guessed)
    return Segmentation(labels, affine, table, path, source, counts, warnings)


def resolve_affine(image: "nib.Nifti1Image", path: Path) -> tuple[np.ndarray, str, list[str]]:
    """The voxel-to-RAS affine as nibabel resolves it, which form it came from, and warnings."""
    header = image.header
    sform, sform_code = header.get_sform(coded=True)
    qform, qform_code = header.get_qform(coded=True)
    if sform_code and sform_code > 0:
        warnings = []
        if qform_code and qform_code > 0:
            difference = max_corner_difference(sform, qform, image.shape[:3])
            if difference > AFFINE_TOLERANCE_MM:
                warnings.append(
                    f"{path.name}: sform and qform disagree by up to {difference:.3f} mm; "
                    "using the sform (sform_code > 0), as nibabel does"
                )
        return np.asarray(sform, dtype=float), "sform", warnings
    if qform_code and qform_code > 0:
        return np.asarray(qform, dtype=float), "qform", []
    raise SegAlignError(
        f"{path}: neither sform_code nor qform_code is set, so the segmentation's position in the patient is unknown"
    )


def max_corner_difference(a: np.ndarray, b: np.ndarray, shape: tuple[int, ...]) -> float:
    """Largest distance (mm) between where two affines put the same voxel centre, over the whole volume."""
    corners = np.array(list(itertools.product(*[(0, max(n - 1, 0)) for n in shape[:3]])), dtype=float)
    corners = np.c_[corners, np.ones(len(corners))]
    return float(np.max(np.linalg.norm((corners @ (np.asarray(a) - np.asarray(b)).T)[:, :3], axis=1)))


def _load_nifti(path: Path) -> "nib.Nifti1Image":
    import nibabel as nib

    if not path.name.endswith(NIFTI_SUFFIXES):
        raise SegAlignError(f"{path}: not a NIfTI file (expected .nii or .nii.gz)")
    try:
        image = nib.load(str(path))
    except Exception as error:
        raise SegAlignError(f"{path}: cannot be read as NIfTI ({type(error).__name__}: {error})") from None
    if not isinstance(image, nib.Nifti1Image):  # Nifti2Image is a subclass
        raise SegAlignError(f"{path}: not a NIfTI-1 or NIfTI-2 image")
    return image


def _volume_data(image: "nib.Nifti1Image", path: Path) -> np.ndarray:
    shape = image.shape
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 3:
        raise SegAlignError(f"{path}: a label map must have at most 3 dimensions, this one has shape {image.shape}")
    try:
        data = _read_compressed(image, path) if path.name.endswith(".gz") else None
        if data is None:
            data = np.asanyarray(image.dataobj)
    except SegAlignError:
        raise
    except Exception as error:
        raise SegAlignError(f"{path}: cannot read the voxel data ({type(error).__name__}: {error})") from None
    return data.reshape(shape + (1,) * (3 - len(shape)), order="A")


def _read_compressed(image: "nib.Nifti1Image", path: Path) -> np.ndarray | None:
    """Decompress the voxels of an unscaled .nii.gz straight into their array.

    nibabel reads a compressed file into a bytes object and then copies it into the array, so loading peaks at
    twice the volume; reading into the array itself keeps the peak at the volume. Scaled data (scl_slope/inter)
    is left to nibabel (None is returned).
    """
    import gzip

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
            raise SegAlignError(f"{path}: contains non-integer value {example:g}; a label map holds integers")
    elif data.dtype.kind not in "iu":
        raise SegAlignError(f"{path}: data type {data.dtype} is not a label map")
    if data.size == 0:
        raise SegAlignError(f"{path}: the volume is empty (shape {data.shape})")
    low, high = data.min(), data.max()
    if low < 0:
        raise SegAlignError(f"{path}: contains negative label {low:g}")
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
    files = sorted(path for path in folder.iterdir() if path.is_file() and path.name.endswith(NIFTI_SUFFIXES))
    if not files:
        raise SegAlignError(f"{folder}: the folder holds no .nii or .nii.gz masks")
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
                raise SegAlignError(
                    f"masks {earlier.name} and {path.name} overlap in {int(clash.sum())} voxels; "
                    "use --overlap later-wins to let later files win"
                )
            overlapping += int(clash.sum())
        combined[mask] = label.value
        owner[label.value] = path
    if overlapping:
        warnings.append(f"{overlapping} voxels are in more than one mask; the later file in name order won")
    table = {label.value: label for label in labels_for_files}
    assert combined is not None
    return Segmentation(combined, affine, complete_table(table, table), folder, source, warnings=warnings)
