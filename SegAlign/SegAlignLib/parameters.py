"""The panel's parameters: a parameter node saved with the scene, and its translation into export options.

``SegAlignParameterNode`` is a ``slicer.parameterNodeWrapper`` class: each field is stored on the module's
vtkMRMLScriptedModuleNode and bound to the panel's widget whose ``SlicerParameterName`` property names it (see
Resources/UI/SegAlign.ui). :func:`export_options` is the one place where these fields become the library's
:class:`~SegAlignLib.segalign.options.ExportOptions`, so the library knows nothing of the panel's names.
"""

from __future__ import annotations

import enum
import pathlib
from typing import Annotated

from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper

from .segalign.options import DicomSegOptions, ExportOptions, OverlayOptions, RtStructOptions


class OverlayWindow(enum.Enum):
    """The overlays' display window: each frame's own (its Window Center/Width), or a preset."""

    FRAME = "frame"
    ABDOMEN = "abdomen"
    BONE = "bone"
    BRAIN = "brain"
    LUNG = "lung"
    MEDIASTINUM = "mediastinum"

    def label(self) -> str:
        return _("Each frame's own") if self is OverlayWindow.FRAME else self.value.capitalize()


class ExportOrder(enum.Enum):
    INSTANCE = "instance"
    POSITION = "position"

    def label(self) -> str:
        return {"instance": _("Acquisition (InstanceNumber, frame)"), "position": _("Position along the normal")}[self.value]


class DicomSegType(enum.Enum):
    BINARY = "binary"
    LABELMAP = "labelmap"

    def label(self) -> str:
        return {
            "binary": _("Binary (one frame per segment and slice; readable everywhere)"),
            "labelmap": _("Label map (one compressed frame per slice; smaller, newer readers)"),
        }[self.value]


@parameterNodeWrapper
class SegAlignParameterNode:
    """What the panel shows; saved with the scene.

    referenceVolume - the DICOM series (a volume loaded through the DICOM module, or by SegAlign).
    segmentation - the segmentation to export.
    outputFolder - where labels/, masks/, manifest.csv, labels.json and export.json are written.
    writeMasks - also write one binary image per segment per frame.
    order - native acquisition order or spatial order.
    writeOverlays - also write the frames with the labels drawn on them, and the index.html preview page.
    overlayWindow - the overlays' display window: each frame's own, or a preset.
    overlayOpacity - opacity of the labels on the overlays.
    overlayOutline - draw outlines instead of filled labels.
    writeImages - also write the frames' pixels as 16-bit images.
    writeStats - per-label pixel counts and areas in the manifest.
    writeDicomSeg - also write seg.dcm, a DICOM Segmentation on the series' own frames (for PACS, OHIF, Slicer).
    dicomSegType - binary or label map DICOM SEG.
    writeRtStruct - also write rtstruct.dcm, an RT Structure Set with pixel-edge contours (planning systems, SlicerRT).
    overwrite - replace the output folder if it holds an earlier SegAlign export.
    """

    referenceVolume: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    outputFolder: pathlib.Path
    writeMasks: bool = False
    order: ExportOrder = ExportOrder.INSTANCE
    writeOverlays: bool = True
    overlayWindow: OverlayWindow = OverlayWindow.FRAME
    overlayOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.4
    overlayOutline: bool = False
    writeImages: bool = False
    writeStats: bool = False
    writeDicomSeg: bool = False
    dicomSegType: DicomSegType = DicomSegType.BINARY
    writeRtStruct: bool = False
    overwrite: bool = False


def export_options(parameters: SegAlignParameterNode) -> ExportOptions:
    """The library's export options for the panel's ``parameters`` (the overlay and SEG settings only where their
    switch is on)."""
    overlays = None
    if parameters.writeOverlays:
        window = parameters.overlayWindow
        overlays = OverlayOptions(
            None if window is OverlayWindow.FRAME else window.value, float(parameters.overlayOpacity),
            bool(parameters.overlayOutline),
        )
    return ExportOptions(
        order=parameters.order.value,
        masks=bool(parameters.writeMasks),
        images=bool(parameters.writeImages),
        stats=bool(parameters.writeStats),
        overlays=overlays,
        dicom_seg=DicomSegOptions(parameters.dicomSegType.value) if parameters.writeDicomSeg else None,
        rtstruct=RtStructOptions() if parameters.writeRtStruct else None,
    )
