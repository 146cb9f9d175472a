"""The Slicer bridge on MRML: segmentation files in as segmentation nodes, segmentation nodes out onto DICOM frames.

It needs only Slicer's MRML layer, so it runs inside 3D Slicer and, headless, on the ``slicer-core`` wheel
(VTK and Slicer are imported only where they are used, so the package imports without them).

- :mod:`.logic`: :class:`SegAlignMRMLLogic`, import and export (what the Slicer module's panel calls);
- :mod:`.segments`: what SegAlign keeps on nodes and segments (label values, the reader's warnings, terminology),
  and the segments an import makes;
- :mod:`.merge`: a node's segments as label layers, each segment whole where segments overlap (layers read
  directly, or merged by Slicer layer by layer), or flattened into one label volume;
- :mod:`.matrices`: VTK matrices and oriented images as numpy, and sheared affines split for Slicer volumes.
"""

from .logic import FILES_ATTRIBUTE, SegAlignMRMLLogic
from .matrices import split_affine
from .segments import IMPORT_WARNINGS_ATTRIBUTE, LABEL_VALUE_TAG, import_warnings, labelmap_layer_count

__all__ = [
    "FILES_ATTRIBUTE",
    "IMPORT_WARNINGS_ATTRIBUTE",
    "LABEL_VALUE_TAG",
    "SegAlignMRMLLogic",
    "import_warnings",
    "labelmap_layer_count",
    "split_affine",
]
