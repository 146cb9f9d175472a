"""The segmentation model, its label tables, and sampling it on DICOM frames.

- :mod:`.model`: :class:`Segmentation` (a label volume in patient space, its label table, the reader's warnings)
  and the checks that hold whatever the file format (a placeable affine, a label map rather than an image);
- :mod:`.labels`: label tables (:class:`Label`; user tables, the table TotalSegmentator embeds, the tables shipped
  in ``data/``);
- :mod:`.layers`: segments that overlap, kept in a few label volumes in which they do not (:class:`Layer`);
- :mod:`.sampling`: :class:`FrameSampler`, nearest neighbour at every pixel centre of a DICOM frame, and
  :class:`SegmentationSampler`, every layer of a segmentation on a frame.

The names other packages use are importable from here.
"""

from .labels import (
    MAX_LABEL,
    Label,
    builtin_table,
    complete_table,
    default_color,
    default_name,
    embedded_label_table,
    guess_totalsegmentator,
    parse_caret_label_table,
    read_label_file,
    shipped_text,
)
from .model import (
    AFFINE_TOLERANCE_MM,
    MAX_AFFINE_ENTRY,
    OVERLAPS,
    Overlap,
    Segmentation,
    check_affine,
    count_labels,
    looks_like_image,
    max_corner_difference,
)
from .layers import Layer, LayerMerger, LayerPacker, bounding_box, crop, first_overlap, label_dtype, lattice_offset, merge_layers
from .sampling import FrameSampler, SegmentationSampler

__all__ = [
    "AFFINE_TOLERANCE_MM",
    "MAX_AFFINE_ENTRY",
    "MAX_LABEL",
    "FrameSampler",
    "Label",
    "Layer",
    "LayerMerger",
    "LayerPacker",
    "OVERLAPS",
    "Overlap",
    "Segmentation",
    "SegmentationSampler",
    "bounding_box",
    "builtin_table",
    "check_affine",
    "complete_table",
    "crop",
    "count_labels",
    "default_color",
    "default_name",
    "embedded_label_table",
    "first_overlap",
    "guess_totalsegmentator",
    "label_dtype",
    "lattice_offset",
    "looks_like_image",
    "max_corner_difference",
    "merge_layers",
    "parse_caret_label_table",
    "read_label_file",
    "shipped_text",
]
