"""The NRRD reader: NRRD label maps and Slicer segmentations (``.seg.nrrd``), read with pynrrd and slicerio.

A file is NRRD by its magic (:func:`matches`); its header then tells which of the two it is (:func:`read`).
pynrrd (``nrrd``) is the NRRD reader Python pipelines use; slicerio, by the 3D Slicer developers, reads Slicer's
segmentation files (a NRRD whose ``Segment<i>_*`` keys give each segment's name, colour, label value and layer).
Both honour ``space`` and ``space directions``; the affine is converted to RAS here from the header, never guessed:
a file without ``space``, ``space directions`` or ``space origin`` is refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import SegAlignError, describe, short, short_path
from ..segmentation import Label, Layer, LayerPacker, Overlap, crop, default_color, label_dtype
from .base import Reading, integer_labels

NAME = "nrrd"
NEEDS_SERIES = False  #: the file places itself

#: NRRD ``space`` values SegAlign places, as the sign flips that take them to RAS.
SPACES = {
    "right-anterior-superior": (1, 1, 1), "ras": (1, 1, 1),
    "left-anterior-superior": (-1, 1, 1), "las": (-1, 1, 1),
    "left-posterior-superior": (-1, -1, 1), "lps": (-1, -1, 1),
}
NRRD_MAGIC = b"NRRD000"


def matches(path: Path, head: bytes) -> bool:
    """Whether a file is a NRRD (a label map or a Slicer segmentation): it starts with the NRRD magic."""
    return head.startswith(NRRD_MAGIC)


def read(path: Path, overlap: Overlap) -> Reading:
    """A Slicer segmentation when the header has ``Segment<i>_*`` keys (:func:`load_slicer_segmentation`), else a
    NRRD label map (:func:`load_nrrd`)."""
    if is_slicer_segmentation(read_header(path)):
        return load_slicer_segmentation(path, overlap)
    return load_nrrd(path)


def _nrrd() -> object:
    try:
        import nrrd
    except ImportError:
        raise SegAlignError("reading NRRD files needs pynrrd: pip install pynrrd (a dependency of segalign)") from None
    return nrrd


def read_header(path: Path) -> dict:
    """The NRRD header of ``path``, or a one-line error."""
    nrrd = _nrrd()
    try:
        return dict(nrrd.read_header(str(path)))
    except Exception as error:  # pynrrd raises NRRDError, ValueError, OSError...
        raise SegAlignError(f"segmentation {short_path(path)} is not a readable NRRD file: {describe(error)}") from None


def is_slicer_segmentation(header: dict) -> bool:
    """Whether a NRRD header is a Slicer segmentation's (it has ``Segment<i>_*`` keys)."""
    return any(key.startswith("Segment") and "_" in key and key[7:key.index("_")].isdigit() for key in header)


def affine_ras(header: dict, path: Path, layered: bool = False) -> np.ndarray:
    """The voxel-to-RAS affine of a NRRD header (``layered``: the first axis is a list of layers)."""
    space = str(header.get("space", "")).strip().lower()
    if space not in SPACES:
        what = f"space {short(space, 40)!r}" if space else "no space field"
        raise SegAlignError(f"{short_path(path)}: {what}; SegAlign places NRRD files in RAS, LAS or LPS space only")
    directions = header.get("space directions")
    origin = header.get("space origin")
    if directions is None or origin is None:
        missing = "space directions" if directions is None else "space origin"
        raise SegAlignError(f"{short_path(path)}: the header has no {missing}, so the volume cannot be placed")
    directions = np.asarray(directions, dtype=float)
    if layered:
        directions = directions[1:]
    if directions.shape != (3, 3) or not np.all(np.isfinite(directions)):
        raise SegAlignError(f"{short_path(path)}: space directions {short(header.get('space directions'), 80)} are "
                            "not three 3-vectors")
    affine = np.eye(4)
    affine[:3, :3] = directions.T  # each row of "space directions" is one axis' step
    affine[:3, 3] = np.asarray(origin, dtype=float)
    return np.diag([*SPACES[space], 1.0]) @ affine


def load_nrrd(path: Path) -> Reading:
    """A plain NRRD label map: labels (uint8/uint16, ``labels[i, j, k]``) and the RAS affine."""
    nrrd = _nrrd()
    header = read_header(path)
    if int(header.get("dimension", 0)) != 3:
        raise SegAlignError(f"{short_path(path)}: a {header.get('dimension')}-dimensional NRRD; a label map has 3 "
                            "dimensions")
    affine = affine_ras(header, path)
    try:
        data, _ = nrrd.read(str(path), index_order="F")
    except Exception as error:
        raise SegAlignError(f"segmentation {short_path(path)} cannot be read: {describe(error)}") from None
    return Reading(integer_labels(np.asarray(data), path), affine, "nrrd")


def load_slicer_segmentation(path: Path, overlap: Overlap) -> Reading:
    """A Slicer ``.seg.nrrd``: labels, RAS affine, the label table from its segments, warnings.

    Segments keep their label values when the file has one layer. With several layers (segments that overlap),
    segments are numbered 1..N in the file's order and, with ``overlap`` ``"keep"``, kept whole in as few layers as
    their overlaps need; ``"later-wins"`` flattens them (the later segment gets a voxel in two), ``"error"``
    refuses a voxel in two segments, naming them.
    """
    try:
        import slicerio
    except ImportError:
        raise SegAlignError("reading .seg.nrrd files needs slicerio: pip install slicerio (a dependency of "
                            "segalign)") from None
    header = read_header(path)
    try:
        segmentation = slicerio.read_segmentation(str(path))
    except Exception as error:
        raise SegAlignError(f"segmentation {short_path(path)} cannot be read as a Slicer segmentation: "
                            f"{describe(error)}") from None
    voxels = np.asarray(segmentation["voxels"])
    layered = voxels.ndim == 4
    if voxels.ndim not in (3, 4):
        raise SegAlignError(f"{short_path(path)}: voxels of shape {voxels.shape}; a segmentation has 3 dimensions, "
                            "or 4 with layers first")
    affine = affine_ras(header, path, layered)
    segments = list(segmentation.get("segments", []))
    if not segments:
        raise SegAlignError(f"{short_path(path)}: the file lists no segments (Segment0_... keys)")
    missing = [segment.get("name", segment.get("id", "?")) for segment in segments if "labelValue" not in segment]
    if missing:
        raise SegAlignError(f"{short_path(path)}: segment {short(missing[0], 60)!r} has no label value "
                            "(Segment<i>_LabelValue); SegAlign cannot tell its voxels")
    layers = voxels if layered else voxels[np.newaxis]
    layers = np.stack([integer_labels(layer, path) for layer in layers])
    table: dict[int, Label] = {}
    warnings: list[str] = []
    if layers.shape[0] == 1:
        labels = layers[0]
        for segment in segments:
            value = int(segment["labelValue"])
            table[value] = Label(value, _name(segment), _color(segment))
        return Reading(labels, affine, "seg.nrrd", table, warnings)
    labels = np.zeros(layers.shape[1:], dtype=label_dtype(len(segments)), order="F")
    owner = np.zeros(layers.shape[1:], dtype=np.int32) if overlap != "keep" else None  # 1 + the voxel's segment
    packer = LayerPacker(labels.shape, len(segments))
    packer.layers.append(labels)
    overlapping = 0
    for index, segment in enumerate(segments, start=1):
        layer = int(segment.get("layer", 0))
        if not 0 <= layer < layers.shape[0]:
            raise SegAlignError(f"{short_path(path)}: segment {short(_name(segment), 60)!r} is in layer {layer}, but "
                                f"the file has {layers.shape[0]} layers")
        mask = layers[layer] == int(segment["labelValue"])
        table[index] = Label(index, _name(segment), _color(segment))
        if owner is None:
            packer.add(index, mask)
            continue
        clash = mask & (owner > 0)
        if clash.any() and overlap == "error":
            other = segments[int(owner[clash].flat[0]) - 1]
            raise SegAlignError(
                f"{short_path(path)}: segments {short(_name(other), 60)!r} and {short(_name(segment), 60)!r} overlap "
                f"({int(clash.sum())} voxels); pass overlap='later-wins' to give them to the later segment",
                cli_message=f"{short_path(path)}: segments {short(_name(other), 60)!r} and "
                f"{short(_name(segment), 60)!r} overlap ({int(clash.sum())} voxels); use --overlap later-wins to "
                "give them to the later segment",
            )
        overlapping += int(clash.sum())
        labels[mask] = index
        owner[mask] = index
    warnings.append(f"{path.name} holds its segments in {layers.shape[0]} layers; they are numbered 1..{len(segments)} "
                    "in the file's order")
    if overlapping:
        warnings.append(f"{overlapping} voxels are in more than one segment; the later segment in the file won")
    more = [crop(Layer(layer, affine)) for layer in packer.layers[1:]]
    return Reading(labels, affine, "seg.nrrd", table, warnings, more_layers=more)


def _name(segment: dict) -> str:
    return str(segment.get("name") or segment.get("id") or f"Segment_{segment.get('labelValue')}")


def _color(segment: dict) -> tuple[int, int, int]:
    color = segment.get("color")
    if not color or len(color) < 3:
        return default_color(int(segment.get("labelValue", 1)))
    return tuple(int(round(min(max(float(c), 0.0), 1.0) * 255)) for c in color[:3])  # type: ignore[return-value]
