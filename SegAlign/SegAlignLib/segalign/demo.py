"""The demo: a synthetic CT with organs, its TotalSegmentator-style segmentation, and the export of one onto the
other. Everything is generated, so it runs anywhere with no data to download."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .version import __version__
from .dicom import scan_folder
from .errors import SegAlignError
from .export import ExportResult, ProgressCallback, export_segmentation
from .options import DicomSegOptions, ExportOptions, OverlayOptions
from .readers import load_segmentation
from .synthetic import SeriesIdentity, abdomen_phantom, las_affine, rasterize, stack, write_nifti, write_series

PIXEL_SPACING = 0.78125  # mm: a 400 mm field of view on 512 x 512
SLICE_SPACING = 2.5  # mm
#: The demo's record, in its folder, of the files it wrote (relative paths): a later demo replaces or removes
#: those and nothing else, and refuses a folder that holds anything else where it writes.
MARKER = ".segalign-demo.json"
WRITTEN_BY = "SegAlign demo"


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
        raise SegAlignError(
            f"slices must be at least 1, got {slices}", cli_message=f"--slices must be at least 1, got {slices}"
        )
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
    names = [f"CT.{n:04d}.dcm" for n in range(slices)]  # named in position order, numbered the other way
    wanted = {f"ct_dicom/{name}" for name in names} | {"segmentation.nii.gz"}
    earlier, complete = _refuse_foreign(folder)  # what an earlier demo wrote here and is still there
    if not (complete and earlier == wanted):  # reused only if an earlier demo finished these (same --slices)
        for relative in sorted(earlier):
            (folder / relative).unlink()
        _write_marker(folder, wanted, complete=False)  # first, so an interrupted demo is known as the demo's
        identity = SeriesIdentity(description="SegAlign demo abdomen CT")
        write_series(dicom_dir, specs, phantom, identity=identity, file_names=names)
        last = np.asarray(specs[-1].position) + np.array([511 * PIXEL_SPACING, 511 * PIXEL_SPACING, 0])
        affine, shape = las_affine(first, last, (PIXEL_SPACING, PIXEL_SPACING, SLICE_SPACING))
        labels = rasterize(phantom, shape, affine)
        write_nifti(segmentation_path, labels, affine, sform_code=2, qform_code=0, label_table_xml=phantom.label_table_xml())
        _write_marker(folder, wanted, complete=True)
    export_dir = folder / "export"
    scan = scan_folder(dicom_dir)
    result = export_segmentation(
        scan.select(), load_segmentation(segmentation_path), export_dir,
        ExportOptions(overlays=OverlayOptions(), dicom_seg=DicomSegOptions()),
        dicom_root=dicom_dir, overwrite=True, warnings=scan.warnings, progress=progress,
    )
    return DemoPaths(dicom_dir, segmentation_path, export_dir, result)


def _refuse_foreign(folder: Path) -> tuple[set[str], bool]:
    """The files an earlier demo wrote in ``folder`` (its marker lists them) that are still there, and whether
    that demo finished; refuses a ``ct_dicom`` holding anything else, or a ``segmentation.nii.gz`` the demo did
    not write."""
    written, complete = _marker(folder)
    present = set()
    dicom_dir, segmentation = folder / "ct_dicom", folder / "segmentation.nii.gz"
    if dicom_dir.is_symlink() or (dicom_dir.exists() and not dicom_dir.is_dir()):
        raise _foreign(folder, dicom_dir, "is not a folder the demo made")
    if dicom_dir.is_dir():
        for path in sorted(dicom_dir.iterdir()):
            relative = f"ct_dicom/{path.name}"
            if relative not in written or path.is_symlink() or not path.is_file():
                raise _foreign(folder, dicom_dir, f"holds {path.name}, which the demo did not write")
            present.add(relative)
    if segmentation.is_symlink() or segmentation.exists():
        if "segmentation.nii.gz" not in written or segmentation.is_symlink() or not segmentation.is_file():
            raise _foreign(folder, segmentation, "was not written by the demo")
        present.add("segmentation.nii.gz")
    return present, complete


def _foreign(folder: Path, path: Path, what: str) -> SegAlignError:
    def message(option: str) -> str:
        return f"{path} {what}; the demo replaces only its own files: {option}"

    return SegAlignError(
        message(f"give run_demo another folder than {folder}"), cli_message=message("choose another --output folder")
    )


def _marker(folder: Path) -> tuple[set[str], bool]:
    """The files the marker in ``folder`` says the demo wrote (only names the demo writes; none without a marker),
    and whether that demo finished writing them."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set(), False
    if not isinstance(marker, dict) or marker.get("written_by") != WRITTEN_BY:
        return set(), False
    if not isinstance(marker.get("files"), list):
        return set(), False
    files = {
        name for name in marker["files"]
        if isinstance(name, str) and (name == "segmentation.nii.gz" or re.fullmatch(r"ct_dicom/CT\.\d+\.dcm", name))
    }
    return files, marker.get("complete") is True


def _write_marker(folder: Path, files: set[str], complete: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    content = {"written_by": WRITTEN_BY, "segalign_version": __version__, "complete": complete, "files": sorted(files)}
    (folder / MARKER).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
