"""The demo: a synthetic CT with organs, its TotalSegmentator-style segmentation, and the export of one onto the
other. Everything is generated, so it runs anywhere with no data to download."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .dicom import scan_folder
from .errors import SegAlignError
from .export import ExportResult, ProgressCallback, export_segmentation
from .segmentation import load_segmentation
from .synthetic import SeriesIdentity, abdomen_phantom, las_affine, rasterize, stack, write_nifti, write_series

PIXEL_SPACING = 0.78125  # mm: a 400 mm field of view on 512 x 512
SLICE_SPACING = 2.5  # mm


@dataclass
class DemoPaths:
    dicom_dir: Path
    segmentation: Path
    export_dir: Path
    result: ExportResult


def run_demo(folder: str | os.PathLike[str], slices: int = 80, progress: ProgressCallback | None = None) -> DemoPaths:
    """Write the demo CT and segmentation under ``folder`` (reused if already there with as many slices) and
    export it, with overlays and the index.html preview page."""
    if slices < 1:
        raise SegAlignError(f"--slices must be at least 1, got {slices}")
    folder = Path(folder)
    dicom_dir = folder / "ct_dicom"
    segmentation_path = folder / "segmentation.nii.gz"
    phantom = abdomen_phantom()
    first = np.array([-200 + PIXEL_SPACING / 2, -200 + PIXEL_SPACING / 2, -SLICE_SPACING * (slices - 1) / 2])
    # Scanners often count InstanceNumber from head to feet: the lowest slice gets the highest number.
    specs = stack(
        first, slices, (0, 0, SLICE_SPACING), spacing=(PIXEL_SPACING, PIXEL_SPACING), rows=512, columns=512,
        instance_numbers=range(slices, 0, -1),
    )
    if not (dicom_dir.is_dir() and len(list(dicom_dir.iterdir())) == slices and segmentation_path.is_file()):
        if dicom_dir.is_dir():  # an earlier demo with another --slices: start again (only the demo's own folder)
            shutil.rmtree(dicom_dir)
        identity = SeriesIdentity(description="SegAlign demo abdomen CT")
        names = [f"CT.{n:04d}.dcm" for n in range(slices)]  # named in position order, numbered the other way
        write_series(dicom_dir, specs, phantom, identity=identity, file_names=names)
        last = np.asarray(specs[-1].position) + np.array([511 * PIXEL_SPACING, 511 * PIXEL_SPACING, 0])
        affine, shape = las_affine(first, last, (PIXEL_SPACING, PIXEL_SPACING, SLICE_SPACING))
        labels = rasterize(phantom, shape, affine)
        write_nifti(segmentation_path, labels, affine, sform_code=2, qform_code=0, label_table_xml=phantom.label_table_xml())
    export_dir = folder / "export"
    scan = scan_folder(dicom_dir)
    result = export_segmentation(
        scan.select(), load_segmentation(segmentation_path), export_dir, dicom_root=dicom_dir, overlays=True,
        overwrite=True, warnings=scan.warnings, progress=progress,
    )
    return DemoPaths(dicom_dir, segmentation_path, export_dir, result)
