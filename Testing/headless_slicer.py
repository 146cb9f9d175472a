"""A Slicer application without Qt, on the ``slicer-core`` wheel: the scaffolding the tests and the benchmark use
to run SegAlign's MRML logic for real outside Slicer. It is not shipped in the module: inside Slicer the
application provides all of this.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

from segalign.errors import SegAlignError
from segalign.mrml import FILES_ATTRIBUTE


@dataclass
class HeadlessSlicer:
    """A Slicer application without Qt (the slicer-core wheel): a scene with Volumes, Colors and Segmentations
    logic, as scripts and tests outside Slicer need it. Keep the object alive while the scene is used: the
    application logic holds the module logics by raw pointer."""

    scene: object
    volumes: object
    segmentations: object
    application: object
    colors: object

    def load_dicom_files(self, files: Sequence[str | os.PathLike[str]], name: str = "series"):
        """Load files as one scalar volume with ITK/GDCM (the reader Slicer's DICOM plugin uses) and record them
        in the volume's ``SegAlign.dicomFiles`` attribute, so :meth:`SegAlignMRMLLogic.export` finds them."""
        import vtk

        paths = [str(f) for f in files]
        file_list = vtk.vtkStringArray()
        for path in paths:
            file_list.InsertNextValue(path)
        volume = self.volumes.AddArchetypeVolume(paths[0], name, 0, file_list)
        if volume is None:
            raise SegAlignError(f"the ITK/GDCM reader could not load {paths[0]} and the other files as a volume")
        volume.SetAttribute(FILES_ATTRIBUTE, "\n".join(paths))
        return volume


def headless_slicer() -> HeadlessSlicer:
    """Build a :class:`HeadlessSlicer` (needs the ``slicer-core`` wheel)."""
    from slicer import (
        vtkMRMLScene,
        vtkSlicerApplicationLogic,
        vtkSlicerColorLogic,
        vtkSlicerSegmentationsModuleLogic,
        vtkSlicerVolumesLogic,
    )

    scene = vtkMRMLScene()
    application = vtkSlicerApplicationLogic()
    application.SetMRMLScene(scene)
    colors = vtkSlicerColorLogic()
    colors.SetMRMLApplicationLogic(application)
    colors.SetMRMLScene(scene)
    application.SetModuleLogic("Colors", colors)
    volumes = vtkSlicerVolumesLogic()
    volumes.SetMRMLApplicationLogic(application)
    volumes.SetMRMLScene(scene)
    segmentations = vtkSlicerSegmentationsModuleLogic()
    segmentations.SetMRMLApplicationLogic(application)
    segmentations.SetMRMLScene(scene)
    return HeadlessSlicer(scene, volumes, segmentations, application, colors)
