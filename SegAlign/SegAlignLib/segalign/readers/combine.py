"""Several segmentation files given at once (``segalign export DICOM total.nii.gz body.nii.gz tumour.nii.gz``) as
one segmentation whose segments may overlap.

Each file's labels become segments. The first file keeps its label values; a later file's value already taken is
given the next free value, and a name already taken is prefixed with its file's name (``body: body``), so every
segment stays told apart in labels.json and every output. A file that holds one label no table names (a mask,
``body.nii.gz``) names it after the file (``body``), as a folder of masks does. Each file's layers are kept on their own grids (nothing
is resampled), cropped to their segments as soon as the file is read, so that reading many files costs little
more memory than the first; layers whose labelled voxels never meet are then merged when they lie on one lattice
(the same grid, or boxes cropped from one grid), so that total, body and tumour models on the CT's grid are as few
label volumes as their overlaps need. The first file's first layer stays whole: it is the segmentation's grid.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import SegAlignError, short
from ..segmentation import (
    AFFINE_TOLERANCE_MM,
    MAX_LABEL,
    Label,
    Layer,
    LayerMerger,
    Overlap,
    Segmentation,
    crop,
    default_name,
    first_overlap,
    label_dtype,
    max_corner_difference,
)
from .nifti import nifti_stem


def combine(segmentations: Sequence[Segmentation], overlap: Overlap = "keep") -> Segmentation:
    """The segmentations as one (see the module's documentation). ``overlap`` ``"later-wins"`` flattens them into
    one label map (they must then share a grid), ``"error"`` refuses voxels in segments of two files, naming them.
    The segmentations given are not changed."""
    if len(segmentations) == 1:
        return segmentations[0]
    combination = Combination(overlap)
    for segmentation in segmentations:
        combination.add(segmentation)
    return combination.result()


class Combination:
    """Segmentations added one at a time (:meth:`add`) and combined into one (:meth:`result`). Only what the result
    needs is kept of each (its layers cropped and relabelled), so a caller that reads the files one by one and
    drops each after adding it holds one file's full volume at a time."""

    def __init__(self, overlap: Overlap = "keep") -> None:
        self.overlap = overlap
        self.table: dict[int, Label] = {}
        self.file_of: dict[int, str] = {}  #: label value -> the name of the file it comes from
        self.layers: list[Layer] = []  # overlap "keep": merged as they come; else every layer, flattened at the end
        self.voxel_counts: dict[int, int] = {}  # overlap "keep": every value's voxels (flattening may change them)
        self.value_layers: dict[int, int] = {}  # overlap "keep": every value's layer in the result
        self.merger = LayerMerger(keep_first=True)
        self.warnings: list[str] = []
        self.names: list[str] = []
        self.sources: list[Path] = []
        self.first: Segmentation | None = None
        self.frame_of_reference: tuple[str, str] | None = None  # (FrameOfReferenceUID, the first file that has it)

    def add(self, segmentation: Segmentation) -> None:
        """Take in one more segmentation: its values and names made unique, its layers cropped and kept."""
        uid = segmentation.frame_of_reference_uid
        if uid and self.frame_of_reference is None:
            self.frame_of_reference = (uid, segmentation.name)
        elif uid and uid != self.frame_of_reference[0]:  # type: ignore[index]
            raise SegAlignError(
                f"{short(self.frame_of_reference[1], 60)} and {short(segmentation.name, 60)} lie in different frames "  # type: ignore[index]
                "of reference (DICOM SEGs of different series); give segmentations of one series"
            )
        first = self.first is None
        if first:
            self.first = segmentation
        stem = _stem(segmentation)
        remap: dict[int, int] = {}
        taken = {label.name for label in self.table.values()}
        mask = len(segmentation.label_table) == 1 and segmentation.source is not None
        for value in sorted(segmentation.label_table):
            label = segmentation.label_table[value]
            if mask and label.name == default_name(value):
                label = dataclasses.replace(label, name=stem)
            new = value if value not in self.table else _next_free(self.table)
            name = label.name if label.name not in taken else f"{stem}: {label.name}"
            self.table[new] = dataclasses.replace(label, value=new, name=name)  # an ROI keeps its number and type
            self.file_of[new] = segmentation.name
            taken.add(name)
            remap[value] = new
        changed = {old: new for old, new in remap.items() if old != new}
        if changed:
            self.warnings.append(
                f"{stem}: {len(changed)} label values were taken by an earlier segmentation and are renumbered (e.g. "
                f"{next(iter(changed))} -> {next(iter(changed.values()))}); labels.json lists them"
            )
        went_to = []  # the index in the result of each of the segmentation's layers
        for index, layer in enumerate(segmentation.layers):
            kept = layer if first and index == 0 else crop(layer)
            relabelled = Layer(relabel(kept.labels, remap), kept.affine)
            if self.overlap == "keep":
                went_to.append(self.merger.add(relabelled))
            else:
                self.layers.append(relabelled)
        if self.overlap == "keep":  # the voxels of each value, and its layer: the result need not count them again
            for value, voxels in segmentation.voxel_counts.items():
                self.voxel_counts[remap.get(value, value)] = voxels
                self.value_layers[remap.get(value, value)] = went_to[segmentation.layer_of(value)]
        self.warnings += [f"{stem}: {warning}" for warning in segmentation.warnings]
        self.names.append(segmentation.name)
        if segmentation.source is not None:
            self.sources.append(segmentation.source)

    def result(self) -> Segmentation:
        """The segmentations added, as one."""
        if self.first is None:
            raise SegAlignError("no segmentation given")
        keep = self.overlap == "keep"
        layers = self.merger.layers if keep else [self._flattened()]
        base = layers[0]
        return Segmentation(
            base.labels, base.affine, self.table, self.first.source, self.first.affine_source,
            self.voxel_counts if keep else {}, warnings=self.warnings,
            description=" + ".join(self.names),
            frame_of_reference_uid=self.frame_of_reference[0] if self.frame_of_reference else None,
            more_layers=layers[1:], also_from=self.sources[1:] if self.first.source is not None else self.sources,
            value_layers=self.value_layers if keep else {},
        )

    def _flattened(self) -> Layer:
        """Every layer in one label map on the first layer's grid (``later-wins``: a later layer's voxel wins;
        ``error``: a voxel in two is refused). Layers cropped from the same grid are put back in place."""
        base = self.layers[0]
        flat = base.labels.astype(label_dtype(max(self.table, default=0)), order="F")
        for layer in self.layers[1:]:
            offset = _offset_on(base, layer)
            target = flat[tuple(slice(o, o + n) for o, n in zip(offset, layer.labels.shape))]
            if self.overlap == "error":
                pair = first_overlap([target, layer.labels])
                if pair is not None:
                    raise self._overlap_error(*pair)
            labelled = layer.labels != 0
            target[labelled] = layer.labels[labelled]
        return Layer(flat, base.affine)

    def _overlap_error(self, first: int, second: int, shared: int) -> SegAlignError:
        def segment(value: int) -> str:
            return f"{short(self.table[value].name, 60)!r} of {short(self.file_of[value], 60)}"

        what = f"segments {segment(first)} and {segment(second)} overlap ({shared} voxel{'s' if shared != 1 else ''})"
        return SegAlignError(
            f"{what}; pass overlap='keep' to keep both, or 'later-wins' to flatten them",
            cli_message=f"{what}; use --overlap keep to keep both, or --overlap later-wins to flatten them",
        )


def _next_free(table: dict[int, Label]) -> int:
    value = max(table) + 1
    if value > MAX_LABEL:
        raise SegAlignError(f"the segmentations hold more than {MAX_LABEL} labels together")
    return value


def _stem(segmentation: Segmentation) -> str:
    return nifti_stem(segmentation.source) if segmentation.source is not None else segmentation.name


#: Voxels relabelled at a time: numpy's take makes its indices 64-bit integers, eight bytes for each of them.
RELABEL_CHUNK = 1 << 20


def relabel(labels: np.ndarray, remap: dict[int, int]) -> np.ndarray:
    """``labels`` with each value ``v`` replaced by ``remap[v]`` (other values kept): the same array where nothing
    changes, else a new one in the same memory order, of the smallest label type that holds the result, made through
    a lookup table of that type a chunk at a time (no temporary of the volume's size)."""
    if all(old == new for old, new in remap.items()) and max(remap.values(), default=0) <= np.iinfo(labels.dtype).max:
        return labels
    lookup = np.arange(max(int(labels.max(initial=0)), max(remap, default=0)) + 1, dtype=np.int64)
    for old, new in remap.items():
        lookup[old] = new
    lookup = lookup.astype(label_dtype(int(lookup.max(initial=0))))
    fortran = labels.flags.f_contiguous and not labels.flags.c_contiguous
    if not (labels.flags.c_contiguous or labels.flags.f_contiguous):
        labels, fortran = np.asfortranarray(labels), True
    result = np.empty(labels.shape, dtype=lookup.dtype, order="F" if fortran else "C")
    source, target = labels.ravel(order="K"), result.ravel(order="K")  # views, in the same (memory) order
    for start in range(0, source.size, RELABEL_CHUNK):
        np.take(lookup, source[start:start + RELABEL_CHUNK], out=target[start:start + RELABEL_CHUNK], mode="clip")
    return result


def _offset_on(base: Layer, layer: Layer) -> tuple[int, int, int]:
    """Where ``layer`` lies on ``base``'s grid, in whole voxels; refused where it is on another grid."""
    index = np.linalg.solve(base.affine, layer.affine)
    offset = np.round(index[:3, 3]).astype(int)
    same_axes = np.allclose(index[:3, :3], np.eye(3), atol=1e-6)
    corners = max_corner_difference(base.affine @ _translation(offset), layer.affine, layer.labels.shape)
    if not same_axes or corners > AFFINE_TOLERANCE_MM or np.any(offset < 0) or np.any(
            offset + np.array(layer.labels.shape) > np.array(base.labels.shape)):
        raise SegAlignError(
            "the segmentations are on different grids, so they cannot be flattened into one label map; keep their "
            f"overlaps (overlap='keep') or resample them onto one grid first (the first is {base.labels.shape})"
        )
    return int(offset[0]), int(offset[1]), int(offset[2])


def _translation(offset: np.ndarray) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, 3] = offset
    return matrix
