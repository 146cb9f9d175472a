"""The folder reader: a folder of binary NIfTI masks, one structure per file (TotalSegmentator's default output).

Label values are 1..N in file-name order and names come from the file names, unless a user label table names the
files. Masks must share one grid. Where masks overlap, every mask is kept whole, in as few layers as the overlaps
need (see :mod:`segalign.segmentation.layers`), unless overlaps are to be flattened (the later file in name order
wins) or refused. A folder is
not a file the registry can recognise by its first bytes, and the user's table chooses its values, not only their
names: so :func:`load_mask_folder` is called for every folder, before the file readers, and gives a whole
:class:`~segalign.segmentation.Segmentation`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np

from ..errors import SegAlignError, describe, short, short_path
from ..segmentation import (
    AFFINE_TOLERANCE_MM,
    MAX_LABEL,
    Label,
    Layer,
    LayerPacker,
    Overlap,
    Segmentation,
    bounding_box,
    complete_table,
    crop,
    default_color,
    label_dtype,
    max_corner_difference,
)
from .nifti import NIFTI_SUFFIXES, load_image, nifti_stem, resolve_affine, volume_data

if TYPE_CHECKING:
    import nibabel as nib


def load_mask_folder(folder: Path, user: Mapping[int, Label], overlap: Overlap) -> Segmentation:
    """The masks of a folder (every ``.nii``/``.nii.gz`` in it) as one label volume: a mask that is not a
    readable file (a broken link) is refused rather than left out, and so are more masks than labels can be."""
    try:
        files = sorted(path for path in folder.iterdir() if path.name.endswith(NIFTI_SUFFIXES))
    except OSError as error:
        raise SegAlignError(f"{short_path(folder)}: the folder cannot be read ({describe(error)})") from None
    not_files = [path for path in files if not path.is_file()]
    if not_files:
        raise SegAlignError(
            f"{short_path(folder)}: {short(not_files[0].name, 80)} is not a readable file (a broken link, or a "
            "folder?); every .nii or .nii.gz in a folder of masks is read as a mask"
        )
    if not files:
        raise SegAlignError(f"{folder}: the folder holds no .nii or .nii.gz masks")
    if len(files) > MAX_LABEL and not user:
        raise SegAlignError(f"{short_path(folder)}: {len(files)} masks, but a segmentation holds at most {MAX_LABEL}")
    by_name = {label.name: label for label in user.values()}
    if user:
        unnamed = [path.name for path in files if nifti_stem(path) not in by_name]
        if unnamed:
            raise SegAlignError(f"{folder}: the label table does not name {', '.join(unnamed[:5])}")
        labels_for_files = [by_name[nifti_stem(path)] for path in files]
        bad = [f"{path.name} -> {label.value}" for path, label in zip(files, labels_for_files) if label.value == 0]
        if bad:
            raise SegAlignError(f"{folder}: the label table gives value 0 (background) to {', '.join(bad)}")
    else:
        labels_for_files = [
            Label(value, nifti_stem(path), default_color(value)) for value, path in enumerate(files, start=1)
        ]
    largest = max(label.value for label in labels_for_files)
    packer: LayerPacker | None = None
    combined: np.ndarray | None = None
    first_image: "nib.Nifti1Image | None" = None
    affine = np.eye(4)
    source = "sform"
    warnings: list[str] = []
    owner: dict[int, Path] = {}
    overlapping = 0
    for path, label in zip(files, labels_for_files):
        image = load_image(path)
        mask = volume_data(image, path)  # a voxel is in the mask where it is not 0 (looked at in its box only)
        if first_image is None:
            first_image = image
            affine, source, warnings = resolve_affine(image, path)
            combined = np.zeros(mask.shape, dtype=label_dtype(largest), order="F")
            if overlap == "keep":
                packer = LayerPacker(mask.shape, largest)
                packer.layers.append(combined)
        else:
            this_affine, _, _ = resolve_affine(image, path)
            if mask.shape != combined.shape or max_corner_difference(affine, this_affine, mask.shape) > AFFINE_TOLERANCE_MM:
                raise SegAlignError(
                    f"{path.name} and {files[0].name} are on different grids "
                    f"(shape {mask.shape} vs {combined.shape} or different affines); masks of one folder must share a grid"
                )
        if packer is not None:
            packer.add(label.value, mask)
            continue
        box = bounding_box(mask)
        if box is None:
            continue
        inside = np.asfortranarray(mask[box] != 0).T  # as LayerPacker looks at a mask: its box, in memory order
        target = combined[box].T
        taken = target[inside]
        clash = taken != 0
        if clash.any():
            if overlap != "later-wins":
                earlier = owner[int(taken[clash][0])]
                message = f"masks {earlier.name} and {path.name} overlap in {int(clash.sum())} voxels; "
                raise SegAlignError(
                    message + "pass overlap='later-wins' to let later files win",
                    cli_message=message + "use --overlap later-wins to let later files win",
                )
            overlapping += int(clash.sum())
        target[inside] = label.value
        owner[label.value] = path
    if overlapping:
        warnings.append(f"{overlapping} voxels are in more than one mask; the later file in name order won")
    table = {label.value: label for label in labels_for_files}
    assert combined is not None
    more = [crop(Layer(layer, affine)) for layer in packer.layers[1:]] if packer is not None else []
    return Segmentation(combined, affine, complete_table(table, table), folder, source,  # counted as they were packed
                        packer.voxels if packer is not None else {}, warnings=warnings, more_layers=more,
                        value_layers=packer.layer_of if packer is not None else {})
