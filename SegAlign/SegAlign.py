"""SegAlign: put segmentations on their original DICOM frames, pixel for pixel, in native acquisition order.

The module file Slicer loads: the module's description, and the names Slicer looks up in it. The panel, its
parameters, the logic and the self-test live in the SegAlignLib package beside this file (SegAlignLib.widget,
.parameters, .logic, .selftest), and the engine, the same code as the ``segalign`` command line, in
SegAlignLib.segalign, where it cannot collide with a ``segalign`` installed in Slicer's Python.
"""

from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule

# Slicer builds the panel from SegAlignWidget, ctest's py_SegAlign and "Reload and Test" run SegAlignTest, and the
# Python console finds the logic as SegAlignLogic: all by these names in this module.
from SegAlignLib.logic import SegAlignLogic  # noqa: F401
from SegAlignLib.selftest import SegAlignTest  # noqa: F401
from SegAlignLib.widget import SegAlignWidget  # noqa: F401

#: Who made the module, as "Name (Organization)" (the Extensions Index's format; CMakeLists.txt has the same).
CONTRIBUTORS = ["SegAlign maintainers (SegAlign project)"]


class SegAlign(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SegAlign")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        # slicer.dicomDatabase and DICOMLib come with the DICOM module (as for DICOMPatcher).
        self.parent.dependencies = ["DICOM"]
        self.parent.contributors = CONTRIBUTORS
        self.parent.helpText = _(
            "Export a segmentation (a TotalSegmentator, nnU-Net or MONAI NIfTI, or any segmentation node) onto the "
            "original DICOM frames of a series: one label image per frame, pixel for pixel on that frame's grid, in "
            "the scanner's acquisition order, with a manifest tying each image to its DICOM instance, and the DICOM "
            "SEG and RTSTRUCT that go back to PACS. "
            'See <a href="https://github.com/segalign/SlicerSegAlign#readme">the documentation</a>.'
        )
        self.parent.acknowledgementText = _(
            "SegAlign samples every DICOM frame in patient space with the engine of the segalign Python package."
        )
