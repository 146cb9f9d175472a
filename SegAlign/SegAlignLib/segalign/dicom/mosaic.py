"""Frames that hold several slices: Siemens mosaics, and the layouts SegAlign refuses.

A Siemens *mosaic* is one DICOM frame holding a whole volume: ``n`` slices of ``rows x columns`` pixels laid out
row by row in a square grid of ``ceil(sqrt(n))`` tiles a side (for example 35 slices of 64 x 64 in a 384 x 384
image, 6 x 6 tiles, the last one empty). The header's ImagePositionPatient describes none of those slices: it is
the corner of the whole 384 x 384 image as if it were one plane. Each slice's plane comes from the Siemens CSA
image header (NumberOfImagesInMosaic and SliceNormalVector) with the correction nibabel documents in
``nibabel.nicom.dicomwrappers.MosaicWrapper``: SegAlign uses that wrapper, not a parser of its own.

Tile ``t`` (0-based, in the CSA's slice order, along ``SliceNormalVector``) sits at grid row ``t // size`` and
grid column ``t % size`` of the frame, and its first pixel is at nibabel's affine applied to ``(0, 0, t)``
(nibabel indexes its volume ``[row, column, slice]`` in LPS). Every tile has the frame's ImageOrientationPatient
and PixelSpacing.

Other layouts that put several slices in one frame without standard per-frame geometry (UIH ``VFRAME`` and
``MOSAIC`` images, whose per-slice positions live only in a private sequence; a Siemens mosaic without its CSA
header) are refused: their slices cannot be placed, and SegAlign never samples them on a guessed plane.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from ..errors import SegAlignError, quiet_warnings

#: ImageType values that mark a frame holding several slices.
MULTI_SLICE_IMAGE_TYPES = ("MOSAIC", "VFRAME")
#: Siemens' NumberOfImagesInMosaic, in the private block of creator "SIEMENS MR HEADER" (usually (0019,100A)).
SIEMENS_MR_CREATOR = "SIEMENS MR HEADER"
SIEMENS_CSA_CREATOR = "SIEMENS CSA HEADER"

#: Private tags a header read must include for mosaics: the creators of groups 0019 and 0029 and the elements
#: of the first three private blocks that may hold NumberOfImagesInMosaic (xx0A) and the CSA image header (xx10).
MOSAIC_HEADER_TAGS = [
    *(0x00190000 | element for element in (0x10, 0x11, 0x12)),
    *(0x0019000A | (block << 8) for block in (0x10, 0x11, 0x12)),
    *(0x00290000 | element for element in (0x10, 0x11, 0x12)),
    *(0x00290010 | (block << 8) for block in (0x10, 0x11, 0x12)),
]


@dataclass(frozen=True)
class Tile:
    """One slice of a mosaic frame: where it lies in the frame's pixel array and where it lies in the patient."""

    number: int  #: 1-based slice number in the mosaic, in the CSA header's order (along SliceNormalVector)
    row_offset: int  #: first row of the tile in the frame's pixel array
    column_offset: int  #: first column of the tile in the frame's pixel array
    rows: int
    columns: int
    position: tuple[float, float, float]  #: LPS centre of the tile's first pixel (its own ImagePositionPatient)
    orientation: tuple[float, float, float, float, float, float]  #: ImageOrientationPatient
    pixel_spacing: tuple[float, float]  #: (between rows, between columns), mm
    frame_shape: tuple[int, int] = (0, 0)  #: (Rows, Columns) of the frame that holds the tile

    def region(self) -> tuple[slice, slice]:
        """The tile's rows and columns in the frame's pixel array: ``pixel_array[tile.region()]``."""
        return (
            slice(self.row_offset, self.row_offset + self.rows),
            slice(self.column_offset, self.column_offset + self.columns),
        )


def image_types(dataset: pydicom.Dataset) -> list[str]:
    """ImageType as upper-case strings (empty when absent)."""
    value = dataset.get("ImageType")
    if value is None:
        return []
    values = value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
    return [str(v).strip().upper() for v in values]


def is_multi_slice(dataset: pydicom.Dataset) -> bool:
    """True when ImageType says one frame holds several slices (MOSAIC, VFRAME)."""
    return any(value in MULTI_SLICE_IMAGE_TYPES for value in image_types(dataset))


def mosaic_tiles(dataset: pydicom.Dataset, path: Path) -> tuple[Tile, ...]:
    """Every tile of a Siemens mosaic, in CSA order; a :class:`SegAlignError` for a layout that cannot be placed.

    ``dataset`` must hold ImageType, Rows, Columns, ImagePositionPatient, ImageOrientationPatient, PixelSpacing,
    SpacingBetweenSlices or SliceThickness, and the private tags of :data:`MOSAIC_HEADER_TAGS`.
    """
    found = "/".join(image_types(dataset))
    manufacturer = str(dataset.get("Manufacturer", "") or "").strip()
    if "VFRAME" in image_types(dataset) or "UIH" in manufacturer.upper() or "UNITED IMAGING" in manufacturer.upper():
        raise SegAlignError(
            f"{path}: ImageType {found} ({manufacturer or 'unknown manufacturer'}) holds several slices in one frame "
            "whose positions are kept only in a private sequence; SegAlign cannot place them and will not guess"
        )
    with quiet_warnings():  # nibabel warns on import that its DICOM readers are experimental
        from nibabel.nicom import csareader, dicomwrappers

    try:
        csa = csareader.get_csa_header(dataset, "image")
    except Exception as error:  # a damaged CSA header: csareader raises its own CSAReadError and struct errors
        raise SegAlignError(f"{path}: ImageType {found}, but its Siemens CSA image header cannot be read ({error})") from None
    if csa is None:
        raise SegAlignError(
            f"{path}: ImageType {found} says the frame holds several slices, but there is no Siemens CSA image "
            "header (anonymised?) to place them; SegAlign cannot place the slices and will not guess"
        )
    in_csa = _csa_int(csareader, csa, "NumberOfImagesInMosaic")
    in_header = _siemens_images_in_mosaic(dataset)
    count = in_csa or in_header
    if not count or count < 1:
        raise SegAlignError(f"{path}: ImageType {found}, but NumberOfImagesInMosaic is missing from the CSA header")
    if in_csa and in_header and in_csa != in_header:
        raise SegAlignError(
            f"{path}: NumberOfImagesInMosaic is {in_csa} in the CSA header but {in_header} in (0019,100A)"
        )
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    size = math.ceil(math.sqrt(count))
    if rows % size or columns % size:
        raise SegAlignError(
            f"{path}: {count} mosaic slices need a {size}x{size} grid, which does not divide the {rows}x{columns} frame"
        )
    try:
        with quiet_warnings():
            wrapper = dicomwrappers.MosaicWrapper(dataset, csa, count)
            affine = np.asarray(wrapper.affine, dtype=float)
    except AssertionError:  # nibabel asserts that the CSA and IOP slice normals are parallel
        raise SegAlignError(
            f"{path}: the CSA header's SliceNormalVector {csareader.get_slice_normal(csa)} is not perpendicular to "
            f"ImageOrientationPatient {list(dataset.get('ImageOrientationPatient', []))}"
        ) from None
    except Exception as error:
        raise SegAlignError(f"{path}: the mosaic's slice geometry cannot be computed ({error})") from None
    if not np.all(np.isfinite(affine)):
        raise SegAlignError(f"{path}: the mosaic's slice geometry is not finite: {affine.tolist()}")
    tile_rows, tile_columns = rows // size, columns // size
    orientation = tuple(float(v) for v in dataset.ImageOrientationPatient)
    spacing = tuple(float(v) for v in dataset.PixelSpacing)
    tiles = []
    for index in range(count):
        position = affine[:3, :3] @ np.array([0.0, 0.0, float(index)]) + affine[:3, 3]
        tiles.append(
            Tile(
                number=index + 1,
                row_offset=(index // size) * tile_rows,
                column_offset=(index % size) * tile_columns,
                rows=tile_rows,
                columns=tile_columns,
                position=tuple(float(v) for v in position),  # type: ignore[arg-type]
                orientation=orientation,  # type: ignore[arg-type]
                pixel_spacing=spacing,  # type: ignore[arg-type]
                frame_shape=(rows, columns),
            )
        )
    return tuple(tiles)


def describe_tiles(tiles: tuple[Tile, ...], rows: int, columns: int) -> str:
    """E.g. ``35 slices of 64x64 in a 6x6 grid``."""
    size = rows // tiles[0].rows if tiles else 0
    return f"{len(tiles)} slices of {tiles[0].rows}x{tiles[0].columns} in a {size}x{size} grid" if tiles else ""


def _csa_int(csareader: Any, csa: dict, name: str) -> int | None:
    try:
        value = csareader.get_scalar(csa, name)
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _siemens_images_in_mosaic(dataset: pydicom.Dataset) -> int | None:
    """NumberOfImagesInMosaic from the SIEMENS MR HEADER private block (group 0019), if present."""
    try:
        block = dataset.private_block(0x0019, SIEMENS_MR_CREATOR)
        value = block[0x0A].value
    except (KeyError, ValueError):
        return None
    try:
        return int(value[0] if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else value)
    except (TypeError, ValueError, IndexError):
        return None
