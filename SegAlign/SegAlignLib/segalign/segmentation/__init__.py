"""The segmentation model, its label tables, and sampling it on DICOM frames.

- :mod:`.model`: :class:`Segmentation` (a label volume in patient space, its label table, the reader's warnings)
  and the checks that hold whatever the file format (a placeable affine, a label map rather than an image);
- :mod:`.labels`: label tables (:class:`Label`; user tables, the table TotalSegmentator embeds, the tables shipped
  in ``data/``);
- :mod:`.sampling`: :class:`FrameSampler`, nearest neighbour at every pixel centre of a DICOM frame.

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
    Overlap,
    Segmentation,
    check_affine,
    count_labels,
    looks_like_image,
    max_corner_difference,
)
from .sampling import FrameSampler

__all__ = [
    "AFFINE_TOLERANCE_MM",
    "MAX_AFFINE_ENTRY",
    "MAX_LABEL",
    "FrameSampler",
    "Label",
    "Overlap",
    "Segmentation",
    "builtin_table",
    "check_affine",
    "complete_table",
    "count_labels",
    "default_color",
    "default_name",
    "embedded_label_table",
    "guess_totalsegmentator",
    "looks_like_image",
    "max_corner_difference",
    "parse_caret_label_table",
    "read_label_file",
    "shipped_text",
]
