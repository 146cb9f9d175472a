"""Several segmentation files given at once (``segalign export DICOM total.nii.gz body.nii.gz tumour.nii.gz``) as
one segmentation whose segments may overlap.

Each file's labels become segments. The first file keeps its label values; a later file's value already taken is
given the next free value, and a name already taken is prefixed with its file's name (``body: body``), so every
segment stays told apart in labels.json and every output. Each file's layers are kept as they are, on their own
grids (nothing is resampled); layers on one grid whose labelled voxels never meet are then merged, so that total,
body and a tumour model on the CT's grid are as few label volumes as their overlaps need.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import SegAlignError
from ..segmentation import (
    AFFINE_TOLERANCE_MM,
    MAX_LABEL,
    Label,
    Layer,
    Overlap,
    Segmentation,
    crop,
    first_overlap,
    label_dtype,
    max_corner_difference,
    merge_layers,
)
from .nifti import nifti_stem


def combine(segmentations: Sequence[Segmentation], overlap: Overlap = "keep") -> Segmentation:
    """The segmentations as one (see the module's documentation). ``overlap`` ``"later-wins"`` flattens them into
    one label map (they must then share a grid), ``"error"`` refuses voxels in segments of two files, naming them."""
    if len(segmentations) == 1:
        return segmentations[0]
    first = segmentations[0]
    frames_of_reference = {s.frame_of_reference_uid for s in segmentations if s.frame_of_reference_uid}
    if len(frames_of_reference) > 1:
        raise SegAlignError(f"the segmentations lie in {len(frames_of_reference)} frames of reference (DICOM SEGs of "
                            "different series); give segmentations of one series")
    table: dict[int, Label] = {}
    names: set[str] = set()
    layers: list[Layer] = []
    warnings: list[str] = []
    for index, segmentation in enumerate(segmentations):
        remap: dict[int, int] = {}
        for value in sorted(segmentation.label_table):
            label = segmentation.label_table[value]
            new = value if value not in table else _next_free(table)
            name = label.name if label.name not in names else f"{_stem(segmentation)}: {label.name}"
            table[new] = Label(new, name, label.color)
            names.add(name)
            remap[value] = new
        changed = {old: new for old, new in remap.items() if old != new}
        if changed:
            warnings.append(
                f"{_stem(segmentation)}: {len(changed)} label values were taken by an earlier segmentation and are "
                f"renumbered (e.g. {next(iter(changed))} -> {next(iter(changed.values()))}); labels.json lists them"
            )
        for layer_index, layer in enumerate(segmentation.layers):
            relabelled = Layer(_relabel(layer.labels, remap), layer.affine)
            layers.append(relabelled if index == 0 and layer_index == 0 else crop(relabelled))
        warnings += [f"{_stem(segmentation)}: {warning}" for warning in segmentation.warnings]
    if overlap == "keep":
        layers = [layers[0], *merge_layers(layers[1:])]
        layers = merge_layers(layers)  # a later layer may fit into the first too
    else:
        layers = [_flattened(layers, table, overlap)]
    base = layers[0]
    return Segmentation(
        base.labels, base.affine, table, first.source, first.affine_source, warnings=warnings,
        description=" + ".join(s.name for s in segmentations),
        frame_of_reference_uid=next(iter(frames_of_reference), None), more_layers=layers[1:],
        also_from=[s.source for s in segmentations[1:] if s.source is not None],
    )


def _next_free(table: dict[int, Label]) -> int:
    value = max(table) + 1
    if value > MAX_LABEL:
        raise SegAlignError(f"the segmentations hold more than {MAX_LABEL} labels together")
    return value


def _stem(segmentation: Segmentation) -> str:
    return nifti_stem(segmentation.source) if segmentation.source is not None else segmentation.name


def _relabel(labels: np.ndarray, remap: dict[int, int]) -> np.ndarray:
    """``labels`` with each value ``v`` replaced by ``remap[v]`` (the same array where nothing changes)."""
    if all(old == new for old, new in remap.items()) and max(remap.values(), default=0) <= np.iinfo(labels.dtype).max:
        return labels
    lookup = np.arange(max(int(labels.max(initial=0)), max(remap, default=0)) + 1, dtype=np.int64)
    for old, new in remap.items():
        lookup[old] = new
    return np.asfortranarray(lookup[labels].astype(label_dtype(int(lookup.max(initial=0)))))


def _flattened(layers: list[Layer], table: dict[int, Label], overlap: Overlap) -> Layer:
    """Every layer in one label map on the first layer's grid (``later-wins``: a later layer's voxel wins;
    ``error``: a voxel in two is refused). Layers cropped from the same grid are put back in place."""
    base = layers[0]
    flat = base.labels.astype(label_dtype(max(table, default=0)), order="F")
    for layer in layers[1:]:
        offset = _offset_on(base, layer)
        box = tuple(slice(o, o + n) for o, n in zip(offset, layer.labels.shape))
        target = flat[box]
        labelled = layer.labels != 0
        if overlap == "error":
            pair = first_overlap([target, layer.labels])
            if pair is not None:
                a, b = table[pair[0]].name, table[pair[1]].name
                raise SegAlignError(
                    f"segments {a!r} and {b!r} of different files overlap; pass overlap='keep' to keep both, or "
                    "'later-wins' to flatten them",
                    cli_message=f"segments {a!r} and {b!r} of different files overlap; use --overlap keep to keep "
                    "both, or --overlap later-wins to flatten them",
                )
        target[labelled] = layer.labels[labelled]
    return Layer(flat, base.affine)


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
