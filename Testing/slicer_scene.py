"""A headless Slicer application on the slicer-core wheel: real MRML scene, Volumes, Colors and Segmentations logic.

``load_dicom_volume`` loads a series the way Slicer's DICOM scalar volume plugin does: the ITK/GDCM archetype
reader over the file list, files sorted by position along cross(row, col) of the first file, slice order reversed
if the IJK frame comes out left-handed, and the ``DICOM.instanceUIDs`` / ``DICOM.instanceNumbers`` attributes set
slice by slice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pydicom
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is needed for the MRML tests (pip install slicer-core)")
vtk = pytest.importorskip("vtk")
from headless_slicer import HeadlessSlicer, headless_slicer  # noqa: E402,F401  (re-exported for the tests)


def load_dicom_volume(app: HeadlessSlicer, files: Sequence[Path], name: str = "series"):
    """Load single-frame DICOM files as Slicer's DICOM plugin does; returns the scalar volume node."""
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    orientation = np.array(headers[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    order = sorted(range(len(files)), key=lambda i: float(np.dot(np.array(headers[i].ImagePositionPatient, float), normal)))
    sorted_files = [str(files[i]) for i in order]
    sorted_headers = [headers[i] for i in order]
    file_list = vtk.vtkStringArray()
    for f in sorted_files:
        file_list.InsertNextValue(f)
    volume = app.volumes.AddArchetypeVolume(sorted_files[0], name, 0, file_list)
    assert volume is not None, "the archetype reader could not load the series"
    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    if not slicer.vtkMRMLVolumeNode.IsIJKCoordinateSystemRightHanded(matrix):
        slicer.vtkMRMLVolumeNode.ReverseSliceOrder(volume.GetImageData(), matrix)
        volume.SetIJKToRASMatrix(matrix)
        sorted_headers = sorted_headers[::-1]
    uids = [h.get("SOPInstanceUID") or h.file_meta.get("MediaStorageSOPInstanceUID") or "Unknown" for h in sorted_headers]
    volume.SetAttribute("DICOM.instanceUIDs", " ".join(uids))
    volume.SetAttribute("DICOM.instanceNumbers", " ".join(str(h.get("InstanceNumber", "?")) for h in sorted_headers))
    return volume


def file_lookup(folder: Path):
    """SOPInstanceUID -> file, like ``slicer.dicomDatabase.fileForInstance`` (the file meta UID as fallback)."""
    table = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            continue
        uid = header.get("SOPInstanceUID") or header.file_meta.get("MediaStorageSOPInstanceUID")
        table[str(uid)] = str(path)
    return lambda uid: table.get(uid, "")
