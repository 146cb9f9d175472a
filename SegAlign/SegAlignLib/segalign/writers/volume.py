"""Volumes on the series' own grid (``ExportOptions.volume``, ``--volume``): the frames' pixels and their labels as
one image each, for tools that train on volumes (nnU-Net, MONAI) and for 3D Slicer.

Files (NIfTI; with ``--volume-format nrrd`` the same names ending in ``.nrrd``)::

    image.nii.gz                  the frames' pixel values in modality units (stored * RescaleSlope + RescaleIntercept);
                                  4D for a 4D series (every position holding as many frames)
    labels.nii.gz                 the labels on the same voxels (label layer 1: what labels/*.png hold; of a 4D
                                  series, each position's first frame's: every frame at a position is on its plane)
    labels_layer2.nii.gz ...      where segments overlap: label layer n (what layers/<n>/*.png hold)
    volume_masks/<segment>.nii.gz (``masks``) one 0/1 volume per segment

Where every voxel lies is :mod:`segalign.grid`'s convention (dcm2niix's): slice ``k`` is the ``k``-th frame in
position order, voxel ``(i, j, k)`` its column ``i`` and row ``rows - 1 - j``, and the affine puts each voxel's
centre on its pixel's centre: the NIfTI sform (code 1, scanner) holds it exactly, sheared for a gantry tilt; the
qform (which cannot shear) holds the same affine with its slice axis along the normal, as dcm2niix writes it.
NRRD holds the exact affine in LPS ("space directions" may shear).

Nothing here samples: the labels are the frames' labels as the export sampled them (``FrameLabels.layers``), each put
into its slice as it comes, and the image each frame's pixels; memory is the volumes, nothing per frame beyond them.
The image is integer (int16, else int32) when every frame's slope and intercept are whole numbers and the values fit,
else float32. A series that is no regular stack is refused by :meth:`VolumeWriter.check`, before anything is
sampled, unless ``resample`` is asked for (:class:`segalign.grid.Resampling`: then the image is float32).
"""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import files
from ..dicom import Frame, Series
from ..errors import SegAlignError, WarningText
from ..grid import VolumeGrid, volume_grid
from ..options import ExportOptions, VolumeFormat, VolumeOptions
from ..segmentation import Segmentation
from .base import ExportContext, ExportSummary, FrameLabels, Writer
from .gzip_stream import write_gzip

#: A segmentation with more label layers than this gets no volumes (its file names are not export entries).
MAX_LAYERS = 999
MASKS_FOLDER = "volume_masks"
SUFFIXES = {VolumeFormat.NIFTI: ".nii.gz", VolumeFormat.NRRD: ".nrrd"}
#: Threads that deflate a .nii.gz (see :mod:`.gzip_stream`).
GZIP_THREADS = 2


def _layer_name(number: int) -> str:
    return "labels" if number == 1 else f"labels_layer{number}"


#: The entries of an export folder this writer may write (see :data:`segalign.export.EXPORT_ENTRIES`).
ENTRIES = frozenset(
    {f"{name}{suffix}" for suffix in SUFFIXES.values()
     for name in ["image", *(_layer_name(number) for number in range(1, MAX_LAYERS + 1))]}
    | {f"{MASKS_FOLDER}/"}
)
#: What ``volume_masks/`` holds.
FOLDER_SUFFIXES = {f"{MASKS_FOLDER}/": tuple(SUFFIXES.values())}


class VolumeWriter(Writer):
    """Writes the volumes (see the module documentation)."""

    needs_pixels = True
    #: Every layer has its label volume.
    writes_overlaps = True

    def __init__(self, options: VolumeOptions) -> None:
        self.options = options
        self.grid: VolumeGrid | None = None
        self._lock = threading.Lock()

    def check(self, series: Series, frames: Sequence[Frame], options: ExportOptions,
              segmentation: Segmentation) -> None:
        if len(segmentation.layers) > MAX_LAYERS:
            raise SegAlignError(f"{segmentation.name} has {len(segmentation.layers)} label layers: volumes are "
                                f"written for at most {MAX_LAYERS}")
        self.grid = volume_grid(frames, resample=self.options.resample)

    def begin(self, context: ExportContext) -> None:
        self.context = context
        grid = self.grid if self.grid is not None else volume_grid(context.frames, resample=self.options.resample)
        self.grid = grid
        #: the slot of each frame in export order: (position, an index into grid.frames; volume, 0 but in 4D)
        self.slot_of = [grid.slot(frame) for frame in context.frames]
        shape = grid.shape
        # Fortran order: slice k, volume[:, :, k], is one contiguous block, and NIfTI stores volumes so.
        self.layers = [np.zeros(shape, dtype=layer.labels.dtype, order="F") for layer in context.segmentation.layers]
        resampling = grid.resampling
        count = len(grid.frames)
        if resampling is None:
            self.label_slices = [[k] for k in range(count)]
            self.image_slices: list[list[tuple[int, float]]] = [[(k, 1.0)] for k in range(count)]
        else:
            self.label_slices = [np.flatnonzero(resampling.nearest == p).tolist() for p in range(count)]
            self.image_slices = [[] for _ in range(count)]
            for k, (below, above, weight) in enumerate(zip(resampling.below, resampling.above, resampling.weight)):
                self.image_slices[below].append((k, 1.0 - float(weight)))
                self.image_slices[above].append((k, float(weight)))
        self.stored: np.ndarray | None = None  #: stored values (or, resampled, interpolated modality values)
        #: the image's shape: a 4D series' volumes along a fourth axis
        self.image_shape = shape + ((grid.volumes,) if grid.volumes > 1 else ())
        slots = (shape[2], grid.volumes)
        self.slopes = np.ones(slots)
        self.intercepts = np.zeros(slots)
        self.lowest = np.zeros(slots)  #: each slice's smallest stored value
        self.highest = np.zeros(slots)

    def add(self, item: FrameLabels) -> None:
        position, time = self.slot_of[item.index]
        if time == 0:  # a 4D series' labels: its first frame's at each position (all lie on one plane)
            for volume, layer in zip(self.layers, item.layers):
                flipped = layer[::-1].T  # (columns, rows), rows flipped: voxel (i, j) is column i, row rows - 1 - j
                for k in self.label_slices[position]:
                    volume[:, :, k] = flipped
        pixels = item.pixels
        assert pixels is not None  # needs_pixels
        stored = pixels.stored[::-1].T
        with self._lock:
            if self.grid.resampling is not None:
                if self.stored is None:
                    self.stored = np.zeros(self.grid.shape, dtype=np.float32, order="F")
                values = stored.astype(np.float64) * pixels.slope + pixels.intercept
                for k, weight in self.image_slices[position]:
                    self.stored[:, :, k] += (values * weight).astype(np.float32)
                return
            if self.stored is None:
                self.stored = np.zeros(self.image_shape, dtype=stored.dtype, order="F")
            elif not np.can_cast(stored.dtype, self.stored.dtype, "safe"):  # frames stored differently: widen
                self.stored = self.stored.astype(np.result_type(self.stored.dtype, stored.dtype), order="F")
            slot = (position, time)
            self.stored[(slice(None), slice(None)) + (slot if self.grid.volumes > 1 else slot[:1])] = stored
            self.slopes[slot], self.intercepts[slot] = pixels.slope, pixels.intercept
            self.lowest[slot], self.highest[slot] = float(stored.min()), float(stored.max())

    def end(self, summary: ExportSummary) -> dict[str, str]:
        context, grid, options = self.context, self.grid, self.options
        suffix = SUFFIXES[options.format]
        outputs: dict[str, str] = {}
        image = self._image()
        self.stored = None
        name = f"image{suffix}"
        _write(context.folder / name, image, grid, options.format, label=False)
        outputs["volume_image"] = name
        del image
        for number, volume in enumerate(self.layers, start=1):
            name = f"{_layer_name(number)}{suffix}"
            _write(context.folder / name, volume, grid, options.format, label=True)
            outputs["volume_labels" if number == 1 else f"volume_labels_layer{number}"] = name
        if options.masks:
            segmentation = context.segmentation
            segments = [segmentation.label_table[v] for v in segmentation.values if v in segmentation.label_table]
            folder = context.folder / MASKS_FOLDER
            folder.mkdir()
            for segment, file_name in zip(segments, files.unique_safe_names([s.name for s in segments])):
                mask = (self.layers[segmentation.layer_of(segment.value)] == segment.value).astype(np.uint8)
                _write(folder / f"{file_name}{suffix}", np.asfortranarray(mask), grid, options.format, label=True)
            outputs["volume_masks"] = f"{MASKS_FOLDER}/"
        self.layers = []
        summary.provenance["volume"] = grid.as_dict()
        if grid.sheared:
            summary.warnings.append(WarningText(
                f"the volumes' affine is sheared: the slices are stacked {grid.tilt_degrees:.2f} deg off their normal "
                "(gantry tilt); the NIfTI sform holds it exactly, the qform (which cannot shear) does not, so tools "
                "that read only the qform misplace slices away from the first"
            ))
        if grid.resampling is not None:
            step = abs(float(np.dot(grid.lps_affine[:3, 2], grid.normal)))
            summary.warnings.append(grid.resampling.describe(grid.shape[2], len(grid.frames), step))
        return outputs

    def abort(self) -> None:
        self.stored = None
        self.layers = []

    def _image(self) -> np.ndarray:
        """The image volume in modality units, made in the stored values' memory where the type allows."""
        stored, grid = self.stored, self.grid
        assert stored is not None
        if grid.resampling is not None:
            return stored
        slopes, intercepts = self.slopes, self.intercepts
        integral = all(float(v).is_integer() for v in np.concatenate([slopes.ravel(), intercepts.ravel()]))
        ends = np.stack([self.lowest * slopes + intercepts, self.highest * slopes + intercepts])
        low, high = float(ends.min()), float(ends.max())
        if integral and np.iinfo(np.int16).min <= low and high <= np.iinfo(np.int16).max:
            dtype = np.dtype(np.int16)
        elif integral and np.iinfo(np.int32).min <= low and high <= np.iinfo(np.int32).max:
            dtype = np.dtype(np.int32)
        else:
            dtype = np.dtype(np.float32)
        if dtype == stored.dtype and not (slopes != 1).any() and not (intercepts != 0).any():
            return stored
        # Slice by slice, into the stored values' own memory when the new type is as wide: no second volume.
        image = stored.view(dtype) if dtype.itemsize == stored.dtype.itemsize else np.empty(
            stored.shape, dtype=dtype, order="F")
        for slot in np.ndindex(*slopes.shape):  # (slice, volume)
            where = (slice(None), slice(None)) + (slot if stored.ndim == 4 else slot[:1])
            values = stored[where]
            if dtype.kind == "f":
                converted = (values.astype(np.float64) * slopes[slot] + intercepts[slot]).astype(np.float32)
            else:
                converted = (values.astype(np.int64) * int(slopes[slot]) + int(intercepts[slot])).astype(dtype)
            image[where] = converted
        return image


def _write(path, volume: np.ndarray, grid: VolumeGrid, format: VolumeFormat, label: bool) -> None:
    """One volume on ``grid`` as NIfTI or NRRD."""
    if format is VolumeFormat.NRRD:
        import nrrd

        directions = grid.lps_affine[:3, :3].T
        kinds = ["domain", "domain", "domain"]
        if volume.ndim == 4:  # a 4D series' volumes: a list axis, which has no direction in space
            directions = np.vstack([directions, np.full((1, 3), np.nan)])
            kinds.append("list")
        header = {
            "type": _NRRD_TYPES[volume.dtype.str[1:]],
            "dimension": volume.ndim,
            "space": "left-posterior-superior",
            "space directions": directions,
            "space origin": grid.lps_affine[:3, 3],
            "kinds": kinds,
            "encoding": "gzip",
        }
        nrrd.write(str(path), volume, header, index_order="F", compression_level=1)
        return
    import nibabel as nib

    image = nib.Nifti1Image(volume, grid.ras_affine)
    image.set_sform(grid.ras_affine, code=1)
    image.set_qform(grid.orthogonal_ras_affine(), code=1)
    image.header.set_xyzt_units("mm")
    if label:
        image.header.set_intent("label")
    image.update_header()
    image.header.set_slope_inter(1.0, 0.0)  # the values as they are (what nibabel's own writer records)
    # The header as nibabel writes it, then the voxels straight from the array's memory (Fortran order is NIfTI's),
    # deflated on two threads: nibabel's own writer deflates on one, and that is most of the time a volume takes.
    head = io.BytesIO()
    image.header.write_to(head)
    offset = int(image.header.get_data_offset())
    prefix = head.getvalue().ljust(offset, b"\0")
    data = np.asfortranarray(volume, dtype=volume.dtype.newbyteorder("="))  # the header's byte order: native
    write_gzip(Path(path), [prefix, memoryview(data.T)], threads=GZIP_THREADS)


_NRRD_TYPES = {"u1": "uint8", "i2": "int16", "u2": "uint16", "i4": "int32", "u4": "uint32", "f4": "float",
               "f8": "double", "i1": "int8"}
