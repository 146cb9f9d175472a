"""SegAlign: put NIfTI segmentations on their DICOM frames, pixel for pixel, in native acquisition order.

In a notebook, one call (see :func:`segalign.align`)::

    import segalign

    a = segalign.align("dicom/", "segmentation.nii.gz")   # or Datasets, a nibabel/SimpleITK image, (array, affine)
    a.labels                 # (frames, rows, columns): frame i lined up with the pixel_array of a[i].frame
    a.mask("liver")          # the same as booleans, by name or value
    a[0].pixels()            # that frame's modality values (HU for CT)
    a.export("out/", overlays=True, dicom_seg=True)    # what `segalign export` writes

The building blocks behind it, and behind the ``segalign`` command line and the SegAlign 3D Slicer module::

    from segalign import scan_folder, load_segmentation, export_segmentation

    scan = scan_folder("dicom/")
    series = scan.select()                       # or scan.select("1.2.840...") when the folder holds several
    segmentation = load_segmentation("segmentation.nii.gz")
    result = export_segmentation(series, segmentation, "out/", dicom_root="dicom/")

Every frame is sampled in patient space from its own ImagePositionPatient, ImageOrientationPatient and
PixelSpacing, so tilted, unevenly spaced, oblique, left-handed and multi-frame series need no special handling.
"""

from typing import TYPE_CHECKING

from .version import __version__  # noqa: F401 (the package version, as segalign.__version__)

#: The public names and their modules. They are imported when first used, so that ``import segalign`` (and the
#: ``segalign`` command's start, which a Ctrl-C may interrupt) does not load NumPy, pydicom and nibabel first.
_PUBLIC = {
    "align": "alignment", "Alignment": "alignment", "AlignedFrame": "alignment",
    "check_export": "check", "CheckResult": "check",
    "DicomScan": "dicom.model", "Frame": "dicom.model", "Series": "dicom.model", "scan_folder": "dicom.scan",
    "SeriesReport": "dicom.diagnosis", "diagnose": "dicom.diagnosis",
    "NoOverlapError": "errors", "SegAlignError": "errors",
    "ExportCancelled": "export", "ExportResult": "export", "export_segmentation": "export",
    "Label": "segmentation", "read_label_file": "segmentation",
    "FrameSampler": "segmentation",
    "load_segmentation": "readers", "load_segmentations": "readers",
    "Segmentation": "segmentation",
}

__all__ = [  # the keys of _PUBLIC
    "AlignedFrame",
    "Alignment",
    "CheckResult",
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
    "align",
    "check_export",
    "diagnose",
    "export_segmentation",
    "load_segmentation",
    "load_segmentations",
    "read_label_file",
    "scan_folder",
]


def __getattr__(name: str) -> object:
    if name in _PUBLIC:
        from importlib import import_module

        value = getattr(import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value  # once imported, an ordinary attribute
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])


if TYPE_CHECKING:  # what type checkers and IDEs see
    from .alignment import AlignedFrame, Alignment, align
    from .check import CheckResult, check_export
    from .dicom.diagnosis import SeriesReport, diagnose
    from .dicom.model import DicomScan, Frame, Series
    from .dicom.scan import scan_folder
    from .errors import NoOverlapError, SegAlignError
    from .export import ExportCancelled, ExportResult, export_segmentation
    from .readers import load_segmentation, load_segmentations
    from .segmentation import FrameSampler, Label, Segmentation, read_label_file
