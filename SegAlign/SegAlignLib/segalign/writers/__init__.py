"""Writers: the outputs of an export, each a :class:`~.base.Writer` (check, begin, add, end, abort).

* :class:`~.images.PngFolderWriter` (:mod:`.images`): label images (and masks, images, overlays with the preview
  page), manifest, label table: always written.
* :class:`~.dicom_seg.DicomSegWriter`: ``seg.dcm``, a DICOM Segmentation on the source frames
  (``ExportOptions.dicom_seg``); with :mod:`.rle` (its LABELMAP's pixel data) and :mod:`.segment_codes`.
* :class:`~.rtstruct.RtStructWriter`: ``rtstruct.dcm``, an RT Structure Set with pixel-edge contours
  (``ExportOptions.rtstruct``, :mod:`.contours`).
* :class:`~.volume.VolumeWriter`: ``image.nii.gz`` and ``labels.nii.gz`` (or NRRD), the frames' pixels and labels on the
  series' own grid (``ExportOptions.volume``, :mod:`segalign.grid`).
* :class:`~.dicom_base.DicomWriter`: what the two DICOM writers share.

:func:`writers_for` gives the writers an :class:`~segalign.options.ExportOptions` asks for, in the order their
``end`` runs.
"""

from __future__ import annotations

from ..options import ExportOptions
from .base import ExportContext, ExportSummary, FrameLabels, Writer
from .dicom_base import DicomWriter
from .dicom_seg import DicomSegWriter
from .images import PngFolderWriter
from .rtstruct import RtStructWriter
from .volume import VolumeWriter

__all__ = [
    "DicomSegWriter", "DicomWriter", "ExportContext", "ExportSummary", "FrameLabels", "PngFolderWriter",
    "RtStructWriter", "VolumeWriter", "Writer", "writers_for",
]


def writers_for(options: ExportOptions) -> list[Writer]:
    """The writers of an export with ``options``: the PNG folder, then each optional output that is on."""
    writers: list[Writer] = [PngFolderWriter()]
    if options.dicom_seg is not None:
        writers.append(DicomSegWriter(options.dicom_seg))
    if options.rtstruct is not None:
        writers.append(RtStructWriter(options.rtstruct))
    if options.volume is not None:
        writers.append(VolumeWriter(options.volume))
    return writers
