"""SegAlign: put NIfTI segmentations on their DICOM frames, pixel for pixel, in native acquisition order.

The library behind the ``segalign`` command line and the SegAlign 3D Slicer module::

    from segalign import scan_folder, load_segmentation, export_segmentation

    scan = scan_folder("dicom/")
    series = scan.select()                       # or scan.select("1.2.840...") when the folder holds several
    segmentation = load_segmentation("segmentation.nii.gz")
    result = export_segmentation(series, segmentation, "out/", dicom_root="dicom/")

Every frame is sampled in patient space from its own ImagePositionPatient, ImageOrientationPatient and
PixelSpacing, so tilted, unevenly spaced, oblique, left-handed and multi-frame series need no special handling.
"""

from .version import __version__  # noqa: E402, F401 (the package version, as segalign.__version__)
from .dicom import DicomScan, Frame, Series, scan_folder  # noqa: E402
from .diagnosis import SeriesReport, diagnose  # noqa: E402
from .errors import NoOverlapError, SegAlignError  # noqa: E402
from .export import ExportCancelled, ExportResult, export_segmentation  # noqa: E402
from .labels import Label, read_label_file  # noqa: E402
from .sampling import FrameSampler  # noqa: E402
from .readers import load_segmentation  # noqa: E402
from .segmentation import Segmentation  # noqa: E402

__all__ = [
    "DicomScan",
    "ExportCancelled",
    "ExportResult",
    "Frame",
    "FrameSampler",
    "Label",
    "NoOverlapError",
    "SegAlignError",
    "Segmentation",
    "Series",
    "SeriesReport",
    "diagnose",
    "export_segmentation",
    "load_segmentation",
    "read_label_file",
    "scan_folder",
]
