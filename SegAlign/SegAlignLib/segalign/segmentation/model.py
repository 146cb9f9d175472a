"""The segmentation model: a label volume, the affine that places it in the patient, and its label table.

:class:`Segmentation` is what every reader gives (see :mod:`segalign.readers`) and what every export samples; the
checks that hold whatever the file format (an affine that places the volume, a label map rather than an image)
live here with it.
"""

from __future__ import annotations

import itertools
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping

import numpy as np

from ..errors import SegAlignError, describe, short
from .labels import MAX_LABEL, Label, complete_table
from .layers import Layer

#: What a reader does where segments overlap: ``"keep"`` them (in layers, see :mod:`.layers`), ``"later-wins"``
#: (flatten to one label map, the later segment getting the voxel) or ``"error"`` (refuse, naming two of them).
Overlap = Literal["keep", "later-wins", "error"]
OVERLAPS: tuple[str, ...] = ("keep", "later-wins", "error")

#: Two affines (sform and qform, or two masks of a folder) that differ by more than this anywhere in the volume
#: are reported.
AFFINE_TOLERANCE_MM = 1e-3
#: No affine entry may exceed this in magnitude (mm): beyond it positions lose the precision of a voxel.
MAX_AFFINE_ENTRY = 1e6


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
    frame_of_reference_uid: str | None = None  #: a DICOM SEG's FrameOfReferenceUID (other formats have none)
    #: Where segments overlap, the layers after the first (``labels`` and ``affine``): each a label volume of its
    #: own whose segments overlap segments of earlier layers. A label value is in one layer only. Empty for a
    #: segmentation whose segments do not overlap (a label map file), which is then exactly one label volume.
    more_layers: list[Layer] = field(default_factory=list)
    #: The other files it was combined from, when several were given at once (``source`` is the first).
    also_from: list[Path] = field(default_factory=list)
    #: With :attr:`more_layers`, a reader that knows them gives each value's layer (index in :attr:`layers`) with
    #: :attr:`voxel_counts`, so that the layers are not counted again; left empty, they are counted.
    value_layers: dict[int, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.labels = self._checked_labels(self.labels)
        self.affine = check_affine(self.affine, self.name)
        self.more_layers = [Layer(self._checked_labels(layer.labels), check_affine(layer.affine, self.name))
                            for layer in self.more_layers]
        if self.more_layers and self.voxel_counts and set(self.value_layers) == set(self.voxel_counts) and all(
                0 <= index <= len(self.more_layers) for index in self.value_layers.values()):
            counts: list[dict[int, int]] = [{} for _ in self.layers]
            for value, index in self.value_layers.items():
                counts[index][value] = self.voxel_counts[value]
        elif self.more_layers or not self.voxel_counts:
            counts = [count_labels(layer.labels) for layer in self.layers]
        else:
            counts = [self.voxel_counts]
        self._layer_of = {value: index for index, layer_counts in enumerate(counts) for value in layer_counts}
        if len(self._layer_of) != sum(len(layer_counts) for layer_counts in counts):
            seen = Counter(value for layer_counts in counts for value in layer_counts)
            twice = min(value for value, times in seen.items() if times > 1)
            raise SegAlignError(f"{self.name}: label value {twice} is in two layers; each segment has a value of its own")
        if not self.voxel_counts or self.more_layers:
            self.voxel_counts = {value: n for layer_counts in counts for value, n in layer_counts.items()}
        outside = sorted(value for value in self.label_table if not 0 <= value <= MAX_LABEL)
        if outside:  # a label volume holds at most 65535: such entries name nothing, and would size lookups
            self.label_table = {v: label for v, label in self.label_table.items() if 0 <= v <= MAX_LABEL}
            self.warnings.append(
                f"{self.name}: the label table names {len(outside)} values outside 0..{MAX_LABEL} "
                f"(e.g. {short(outside[0], 24)}); a segmentation holds no such label, so they are ignored"
            )
        self.label_table = complete_table(self.voxel_counts, self.label_table)  # every value present has a label

    def __repr__(self) -> str:
        layers = f", {len(self.layers)} layers (segments overlap)" if self.more_layers else ""
        return (
            f"<Segmentation {self.name}: {'x'.join(map(str, self.labels.shape))} {self.labels.dtype}, "
            f"{len(self.voxel_counts)} labels{layers}, affine from {self.affine_source}>"
        )

    @property
    def name(self) -> str:
        """How to call it in messages: its file name, or the given description."""
        return self.source.name if self.source is not None else self.description

    @property
    def values(self) -> list[int]:
        """Non-zero label values present in the volume."""
        return sorted(self.voxel_counts)

    @property
    def layers(self) -> list[Layer]:
        """Every label volume: the first (``labels``, ``affine``), then :attr:`more_layers`."""
        return [Layer(self.labels, self.affine), *self.more_layers]

    @property
    def overlapping(self) -> bool:
        """Whether segments may overlap (the segmentation has more than one layer)."""
        return bool(self.more_layers)

    def layer_of(self, value: int) -> int:
        """The index in :attr:`layers` of the layer holding label ``value`` (0 for a value not present)."""
        return self._layer_of.get(value, 0)

    def _checked_labels(self, labels: np.ndarray) -> np.ndarray:
        if labels.ndim != 3:
            raise SegAlignError(f"{self.name}: a label volume must be 3D, got shape {labels.shape}")
        if labels.dtype not in (np.uint8, np.uint16):
            raise SegAlignError(f"{self.name}: labels must be uint8 or uint16, got {labels.dtype}")
        if not (labels.flags.c_contiguous or labels.flags.f_contiguous):
            labels = np.asfortranarray(labels)
        return labels



def count_labels(labels: np.ndarray) -> dict[int, int]:
    """Voxel count of every non-zero label value.

    A mask (values 0 and 1) is counted with one count of its non-zero voxels. Anything else is counted in chunks of
    the non-zero voxels on two threads: ``np.bincount`` converts its input to 64-bit integers, which for a whole
    512 x 512 x 300 volume would cost eight times its size in memory.
    """
    flat = labels.reshape(-1, order="F" if labels.flags.f_contiguous else "C")
    size = int(labels.max(initial=0)) + 1
    if size <= 2:  # a mask: counting its voxels is enough
        voxels = int(np.count_nonzero(flat))
        return {1: voxels} if voxels else {}
    chunk = 1 << 21

    def count(start: int) -> np.ndarray:
        part = flat[start:start + chunk]
        return np.bincount(part[part != 0], minlength=size)

    with ThreadPoolExecutor(max_workers=2) as pool:
        counts = sum(pool.map(count, range(0, flat.size, chunk)), np.zeros(size, dtype=np.int64))
    return {int(value): int(counts[value]) for value in np.flatnonzero(counts) if value != 0}


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


