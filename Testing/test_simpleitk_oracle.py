"""A second implementation as oracle: SimpleITK nearest-neighbour resampling must give identical label images.

The reference image for each frame is the DICOM file itself as ITK/GDCM reads it (its own reading of
ImagePositionPatient, ImageOrientationPatient and PixelSpacing), so neither SegAlign's header parsing nor its
pixel-centre formula is shared with the oracle. The segmentation is given to ITK from nibabel's array and affine
(LPS = diag(-1, -1, 1) RAS), so both sides use the affine nibabel resolves.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import read_manifest, read_png, run_cli
from phantoms import rotated_orientation, small_phantom, write_segmentation
from segalign.synthetic import AXIAL, SAGITTAL, grid_affine, shuffled_names, stack, write_series

sitk = pytest.importorskip("SimpleITK", reason="SimpleITK is the independent oracle (pip install SimpleITK)")

PHANTOM = small_phantom()


def itk_segmentation(path: Path) -> "sitk.Image":
    """The NIfTI as an ITK image, geometry from nibabel's affine (orthonormal direction required by ITK)."""
    image = nib.load(path)
    data = np.asarray(image.dataobj)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ image.affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    result = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))  # ITK arrays are [k, j, i]
    result.SetSpacing(spacing.tolist())
    result.SetOrigin(lps[:3, 3].tolist())
    result.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    return result


def itk_labels_on_frame(segmentation: "sitk.Image", dicom_file: Path) -> np.ndarray:
    reference = sitk.ReadImage(str(dicom_file))
    resampled = sitk.Resample(segmentation, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, segmentation.GetPixelID())
    return sitk.GetArrayFromImage(resampled)[0]  # [row, column] of the only frame


def assert_same_as_itk(tmp_path: Path, dicom: Path, segmentation_path: Path) -> None:
    out = tmp_path / "out"
    run = run_cli("export", dicom, segmentation_path, "-o", out, "-q")
    assert run.code == 0, run.stderr
    segmentation = itk_segmentation(segmentation_path)
    labelled = 0
    for row in read_manifest(out):
        ours = read_png(out / row["label_png"])
        theirs = itk_labels_on_frame(segmentation, dicom / row["source_file"])
        np.testing.assert_array_equal(ours, theirs, err_msg=row["label_png"])
        labelled += int(theirs.any())
    assert labelled >= 5, "the comparison must include frames with labels"


CASES = {
    # name: (frame orientation, frame spacing, rows, columns, IPP step, segmentation axes (LPS), spacing, origin, shape)
    "axial_reversed_coarse_las": (AXIAL, (0.83, 0.83), 48, 48, (0, 0, 1.25), [(1, 0, 0), (0, -1, 0), (0, 0, 1)],
                                  (1.97, 1.93, 2.71), (-21.13, 19.37, -14.29), (22, 22, 11)),
    "double_oblique_frames_rotated_grid": (rotated_orientation(0.4, -0.3, 0.25), (0.91, 0.77), 44, 52, None,
                                           [(0.9, 0.3, 0.0), (0, 0, 1), (0.3, -0.9, 0.0)], (1.31, 1.17, 1.53),
                                           (-19.41, -3.77, -21.13), (33, 37, 31)),
    "tilted_frames_sagittal_grid": ((1.0, 0.0, 0.0, 0.0, 0.956, -0.2924), (0.93, 0.93), 40, 40, (0, 0, 1.6),
                                    [(0, 1, 0), (0, 0, -1), (1, 0, 0)], (1.11, 1.07, 1.49), (-19.77, -22.23, 21.41),
                                    (40, 42, 28)),
    "non_square_anisotropic_frames": (SAGITTAL, (0.71, 1.43), 60, 28, (1.33, 0, 0), [(1, 0, 0), (0, 1, 0), (0, 0, 1)],
                                      (1.51, 1.49, 1.47), (-18.17, -22.71, -20.63), (27, 30, 29)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_identical_to_simpleitk(tmp_path: Path, case: str) -> None:
    orientation, spacing, rows, columns, step, axes, grid_spacing, origin, shape = CASES[case]
    # Orthonormalise the segmentation axes (ITK needs an orthonormal direction).
    axes = np.linalg.qr(np.asarray(axes, dtype=float).T)[0].T * np.sign(np.diag(np.linalg.qr(np.asarray(axes, dtype=float).T)[1]))[:, None]
    normal = np.cross(orientation[:3], orientation[3:])
    step = np.asarray(step) if step is not None else 1.45 * normal
    centre = spacing[1] * columns / 2 * np.asarray(orientation[:3]) + spacing[0] * rows / 2 * np.asarray(orientation[3:])
    specs = stack(-centre - 10 * step, 20, step, orientation=orientation, spacing=spacing, rows=rows, columns=columns,
                  instance_numbers=range(20, 0, -1))
    dicom = tmp_path / "dicom"
    write_series(dicom, specs, file_names=shuffled_names(20, seed=4))
    affine = grid_affine(origin, grid_spacing, axes)
    assert_same_as_itk(tmp_path, dicom, write_segmentation(tmp_path / "seg.nii.gz", PHANTOM, affine, shape))
