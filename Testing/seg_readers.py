"""Independent readers of DICOM Segmentation objects, for checking the SEG that ``segalign export --dicom-seg`` writes.

None of them uses SegAlign. Each rebuilds, for every source frame it finds (key: ``(SOPInstanceUID, frame
number)``, frame 1 for single-frame files), the label-value image a SEG stands for: ``Rows x Columns`` like the
source's ``pixel_array``, each pixel the label value of the segment it belongs to (0 for none). Segment numbers
are mapped to label values by SegmentLabel through a ``{name: value}`` table, by segment order through a list of
values, or left as segment numbers.

* :func:`pydicom_label_images`: pydicom only (``dcmread`` + ``pixel_array``, which unpacks 1-bit BINARY frames and
  decodes RLE LABELMAP frames); frames are tied to source frames through each per-frame functional group's
  DerivationImageSequence / SourceImageSequence, segments through SegmentIdentificationSequence.
* :func:`highdicom_label_images`: highdicom's own reading (``highdicom.seg.segread`` and
  ``get_pixels_by_source_instance`` / ``get_pixels_by_source_frame`` with ``combine_segments=True``).
* :func:`dcmqi_segments`: dcmqi's ``segimage2itkimage`` turns the SEG into one volume per segment group (NRRD),
  read with SimpleITK (LPS geometry); :func:`sample_nearest` samples a volume at a frame's pixel centres.
* :func:`dciodvfy_errors`: the "Error" lines David Clunie's dciodvfy prints for a file.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

SourceKey = tuple[str, int]  #: (ReferencedSOPInstanceUID, frame number, 1-based; 1 for single-frame sources)
Labels = Mapping[str, int] | Sequence[int] | None

BINARY_SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
LABELMAP_SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.7"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
BACKGROUND_CODE = ("125040", "DCM")  #: Segmented Property Type "Background" (dcmqi's segment 0 of a LABELMAP)

VENV_BIN = Path(__file__).resolve().parent.parent / ".venv" / "bin"


class SegReadError(AssertionError):
    """The SEG cannot be turned into label images (overlapping segments, a frame without a source...)."""


# ----------------------------------------------------------------------------------------------------------------
# Segment number -> label value
# ----------------------------------------------------------------------------------------------------------------


def segment_values(
    segments: Mapping[int, str], labels: Labels = None, background: Sequence[int] = ()
) -> dict[int, int]:
    """``{segment number: label value}`` for segments ``{number: SegmentLabel}``.

    ``labels`` is a ``{name: value}`` table (segments are matched by SegmentLabel, which must be in the table and
    name one value only), a list of values (the n-th lowest segment number gets the n-th value), or None (label
    value = segment number). Segments in ``background`` (a LABELMAP's segment 0) map to 0.
    """
    numbers = sorted(number for number in segments if number not in background)
    result = {number: 0 for number in background}
    if labels is None:
        result.update({number: number for number in numbers})
    elif isinstance(labels, Mapping):
        for number in numbers:
            name = segments[number]
            if name not in labels:
                raise SegReadError(f"segment {number} is labelled {name!r}, which is not in the label table")
            result[number] = int(labels[name])
        if len({result[n] for n in numbers}) != len(numbers):
            raise SegReadError(f"two segments have the same label value: {[(n, segments[n]) for n in numbers]}")
    else:
        values = [int(v) for v in labels]
        if len(values) != len(numbers):
            raise SegReadError(f"{len(numbers)} segments but {len(values)} label values given")
        result.update(zip(numbers, values))
    return result


def _label_dtype(values: Mapping[int, int]) -> type:
    return np.uint8 if max(values.values(), default=0) <= 255 else np.uint16


# ----------------------------------------------------------------------------------------------------------------
# (a) pydicom only
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegFrame:
    """One frame of a SEG, as pydicom reads it."""

    index: int  #: 0-based frame index in the SEG
    source: SourceKey  #: the source frame it is derived from
    segment_number: int | None  #: ReferencedSegmentNumber (None for a LABELMAP frame)
    pixels: np.ndarray  #: (Rows, Columns), as stored: 0/1 for BINARY, segment numbers for LABELMAP
    position: np.ndarray | None  #: ImagePositionPatient of the frame
    orientation: np.ndarray | None  #: ImageOrientationPatient (per-frame, else shared)
    spacing: np.ndarray | None  #: PixelSpacing (per-frame, else shared)
    spatial_locations_preserved: str | None  #: SourceImageSequence[0].SpatialLocationsPreserved


def _functional(item: pydicom.Dataset | None, shared: pydicom.Dataset | None, sequence: str, keyword: str):
    for group in (item, shared):
        if group is not None and sequence in group and len(group[sequence].value) and keyword in group[sequence][0]:
            return group[sequence][0][keyword].value
    return None


def read_seg_frames(path: str | Path) -> tuple[pydicom.Dataset, list[SegFrame]]:
    """The SEG's dataset and every frame with its source frame, segment and plane geometry (pydicom only)."""
    dataset = pydicom.dcmread(path)
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    pixels = dataset.pixel_array
    if frames == 1 and pixels.ndim == 2:
        pixels = pixels[None]
    if pixels.shape != (frames, int(dataset.Rows), int(dataset.Columns)):
        raise SegReadError(f"pixel_array has shape {pixels.shape}, expected {(frames, dataset.Rows, dataset.Columns)}")
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
    if per_frame is None or len(per_frame) != frames:
        raise SegReadError(
            f"{frames} frames but {0 if per_frame is None else len(per_frame)} per-frame functional groups"
        )
    shared_sequence = dataset.get("SharedFunctionalGroupsSequence")
    shared = shared_sequence[0] if shared_sequence else None
    labelmap = str(dataset.get("SegmentationType", "")) == "LABELMAP"
    result = []
    for index, item in enumerate(per_frame):
        derivations = item.get("DerivationImageSequence") or []
        if len(derivations) != 1 or len(derivations[0].get("SourceImageSequence") or []) != 1:
            raise SegReadError(f"SEG frame {index + 1} does not name exactly one source image")
        source = derivations[0].SourceImageSequence[0]
        number = source.get("ReferencedFrameNumber")
        if number is not None and not isinstance(number, int) and len(number) != 1:  # multi-valued
            raise SegReadError(f"SEG frame {index + 1} references frames {list(number)} of one source")
        key = (str(source.ReferencedSOPInstanceUID), int(number) if number is not None else 1)
        segment = None
        if not labelmap:
            identification = item.get("SegmentIdentificationSequence") or []
            if len(identification) != 1:
                raise SegReadError(f"SEG frame {index + 1} has no SegmentIdentificationSequence item")
            segment = int(identification[0].ReferencedSegmentNumber)

        def geometry(sequence: str, keyword: str, item: pydicom.Dataset = item) -> np.ndarray | None:
            value = _functional(item, shared, sequence, keyword)
            return None if value is None else np.array([float(v) for v in value])

        result.append(
            SegFrame(
                index=index,
                source=key,
                segment_number=segment,
                pixels=pixels[index],
                position=geometry("PlanePositionSequence", "ImagePositionPatient"),
                orientation=geometry("PlaneOrientationSequence", "ImageOrientationPatient"),
                spacing=geometry("PixelMeasuresSequence", "PixelSpacing"),
                spatial_locations_preserved=source.get("SpatialLocationsPreserved"),
            )
        )
    return dataset, result


def segments_of(dataset: pydicom.Dataset) -> dict[int, str]:
    """``{SegmentNumber: SegmentLabel}`` from the SegmentSequence."""
    return {int(item.SegmentNumber): str(item.get("SegmentLabel", "")) for item in dataset.SegmentSequence}


def background_segments(dataset: pydicom.Dataset) -> list[int]:
    """LABELMAP segments that stand for "no segment": segment 0 (dcmqi describes it, typed Background)."""
    if str(dataset.get("SegmentationType", "")) != "LABELMAP":
        return []
    return [0] if 0 in segments_of(dataset) else []


def pydicom_segment_masks(path: str | Path) -> dict[SourceKey, dict[int, np.ndarray]]:
    """``{source frame: {segment number: bool mask}}`` for every source frame the SEG has a frame for (pydicom)."""
    dataset, frames = read_seg_frames(path)
    labelmap = str(dataset.SegmentationType) == "LABELMAP"
    numbers = [n for n in segments_of(dataset) if n not in background_segments(dataset)]
    masks: dict[SourceKey, dict[int, np.ndarray]] = {}
    seen: set[tuple[SourceKey, int | None]] = set()
    for frame in frames:
        if (frame.source, frame.segment_number) in seen:
            raise SegReadError(f"two SEG frames for {frame.source}, segment {frame.segment_number}")
        seen.add((frame.source, frame.segment_number))
        per_segment = masks.setdefault(frame.source, {})
        if labelmap:
            stored = frame.pixels
            padding = dataset.get("PixelPaddingValue")
            allowed = set(segments_of(dataset)) | {0} | ({int(padding)} if padding is not None else set())
            stray = set(np.unique(stored).tolist()) - allowed
            if stray:
                raise SegReadError(f"SEG frame {frame.index + 1} holds values {sorted(stray)} that are no segment")
            for number in numbers:
                per_segment[number] = stored == number
        else:
            if str(dataset.SegmentationType) == "BINARY" and not set(np.unique(frame.pixels).tolist()) <= {0, 1}:
                raise SegReadError(f"BINARY SEG frame {frame.index + 1} holds values other than 0 and 1")
            per_segment[frame.segment_number] = frame.pixels != 0
    return masks


def combine(
    masks: Mapping[int, np.ndarray], values: Mapping[int, int], shape: tuple[int, int], where: object
) -> np.ndarray:
    """One label image from per-segment masks; overlapping segments are an error (a label image cannot hold them)."""
    image = np.zeros(shape, dtype=_label_dtype(values))
    for number, mask in sorted(masks.items()):
        if number not in values:
            raise SegReadError(f"{where}: frame of segment {number}, which the SegmentSequence does not describe")
        if mask.shape != shape:
            raise SegReadError(f"{where}: mask shape {mask.shape}, expected {shape}")
        clash = mask & (image != 0)
        if clash.any():
            raise SegReadError(f"{where}: segment {number} overlaps another segment on {int(clash.sum())} pixels")
        image[mask] = values[number]
    return image


def pydicom_label_images(path: str | Path, labels: Labels = None) -> dict[SourceKey, np.ndarray]:
    """``{source frame: label image}`` for every source frame the SEG has frames for, read with pydicom only."""
    dataset = pydicom.dcmread(path, stop_before_pixels=True)
    values = segment_values(segments_of(dataset), labels, background_segments(dataset))
    shape = (int(dataset.Rows), int(dataset.Columns))
    return {key: combine(masks, values, shape, where=key) for key, masks in pydicom_segment_masks(path).items()}


# ----------------------------------------------------------------------------------------------------------------
# (b) highdicom
# ----------------------------------------------------------------------------------------------------------------


def highdicom_label_images(
    path: str | Path,
    labels: Labels = None,
    sources: Mapping[str, int] | None = None,
    *,
    ignore_spatial_locations: bool = False,
) -> dict[SourceKey, np.ndarray]:
    """``{source frame: label image}`` as highdicom reads the SEG, for every frame of ``sources``.

    ``sources`` is ``{SOPInstanceUID: NumberOfFrames}`` of the source series (frames the SEG has nothing for come
    back as zeros); None means the instances the SEG lists as its sources, taken as single-frame.
    Single-frame sources are read with ``get_pixels_by_source_instance``, multi-frame ones with
    ``get_pixels_by_source_frame``; segments are combined by highdicom (it refuses overlaps). highdicom refuses
    to index by source frame unless every frame says SpatialLocationsPreserved YES, unless
    ``ignore_spatial_locations``.
    """
    import highdicom

    seg = highdicom.seg.segread(str(path))
    numbers = list(seg.segment_numbers)
    names = {number: seg.get_segment_description(number).segment_label for number in numbers}
    background = []
    if str(seg.SegmentationType) == "LABELMAP" and 0 in names:
        background = [0]
    values = segment_values(names, labels, background)
    if sources is None:
        sources = {str(uid): 1 for _, _, uid in seg.get_source_image_uids()}
    lookup = np.zeros(max(values) + 1, dtype=_label_dtype(values))
    for number, value in values.items():
        lookup[number] = value
    common = {
        "combine_segments": True,
        "relabel": False,
        "ignore_spatial_locations": ignore_spatial_locations,
        "assert_missing_frames_are_empty": True,
    }
    result: dict[SourceKey, np.ndarray] = {}
    single = [uid for uid, count in sources.items() if int(count) <= 1]
    try:
        if single:
            stack = seg.get_pixels_by_source_instance(single, **common)
            for uid, image in zip(single, stack):
                result[(uid, 1)] = lookup[image]
        for uid, count in sources.items():
            if int(count) > 1:
                frame_numbers = list(range(1, int(count) + 1))
                stack = seg.get_pixels_by_source_frame(uid, frame_numbers, **common)
                for number, image in zip(frame_numbers, stack):
                    result[(uid, number)] = lookup[image]
    except RuntimeError as error:
        if "overlap" in str(error):  # a label image cannot hold overlapping segments
            raise SegReadError(f"highdicom: {error}") from error
        raise
    return result


# ----------------------------------------------------------------------------------------------------------------
# (c) dcmqi
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class DcmqiSegment:
    """One segment as dcmqi's segimage2itkimage writes it: a mask volume with its geometry (SimpleITK, LPS)."""

    number: int  #: dcmqi's labelID (the SEG's SegmentNumber)
    label: str  #: SegmentLabel
    rgb: tuple[int, int, int] | None  #: dcmqi's recommendedDisplayRGBValue (its own CIELab -> RGB conversion)
    mask: object  #: SimpleITK image, 1 inside the segment, 0 elsewhere
    file: Path


def segimage2itkimage() -> str | None:
    """Path of dcmqi's segimage2itkimage (the project venv's, else on PATH), or None."""
    local = VENV_BIN / "segimage2itkimage"
    return str(local) if local.exists() else shutil.which("segimage2itkimage")


def dcmqi_segments(path: str | Path, workdir: str | Path) -> dict[int, DcmqiSegment]:
    """Run ``segimage2itkimage --inputDICOM path --outputDirectory workdir -t nrrd`` (one file per group of
    non-overlapping segments, each voxel the labelID of its segment) and split the files into one mask per segment.

    NRRD keeps the geometry in full double precision (NIfTI would round it to float32).
    """
    import SimpleITK as sitk

    tool = segimage2itkimage()
    if tool is None:
        raise FileNotFoundError("segimage2itkimage (dcmqi) is not installed")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    run = subprocess.run(
        [tool, "--inputDICOM", str(path), "--outputDirectory", str(workdir), "-t", "nrrd"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if run.returncode != 0:
        raise SegReadError(f"segimage2itkimage failed ({run.returncode}): {run.stdout[-2000:]} {run.stderr[-2000:]}")
    meta = json.loads((workdir / "meta.json").read_text(encoding="utf-8"))
    groups = meta["segmentAttributes"]
    files = sorted(workdir.glob("*.nrrd"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    if len(files) != len(groups):
        raise SegReadError(f"dcmqi wrote {len(files)} volumes for {len(groups)} segment groups: {run.stdout[-2000:]}")
    result: dict[int, DcmqiSegment] = {}
    for group, file in zip(groups, files):
        image = sitk.ReadImage(str(file))
        array = sitk.GetArrayViewFromImage(image)
        for attributes in group:
            number = int(attributes["labelID"])
            mask = sitk.GetImageFromArray((array == number).astype(np.uint8))
            mask.CopyInformation(image)
            rgb = attributes.get("recommendedDisplayRGBValue")
            result[number] = DcmqiSegment(
                number, str(attributes.get("SegmentLabel", "")), tuple(int(v) for v in rgb) if rgb else None, mask, file
            )
    return result


def pixel_centres(
    position: Sequence[float], orientation: Sequence[float], spacing: Sequence[float], rows: int, columns: int
) -> np.ndarray:
    """LPS centre of every pixel, ``(rows, columns, 3)``: IPP + c * PixelSpacing[1] * IOP[0:3] + r * PixelSpacing[0] *
    IOP[3:6] (DICOM PS3.3 C.7.6.2.1.1)."""
    ipp = np.asarray(position, dtype=float)
    iop = np.asarray(orientation, dtype=float)
    r = np.arange(rows)[:, None, None]
    c = np.arange(columns)[None, :, None]
    return ipp + c * float(spacing[1]) * iop[:3] + r * float(spacing[0]) * iop[3:6]


def sample_nearest(image: object, points: np.ndarray) -> tuple[np.ndarray, float]:
    """Values of a SimpleITK image at LPS ``points`` (``(..., 3)``), nearest voxel, 0 outside; and how far (in voxel
    units, largest over the points inside) the points are from the voxel centres they took their value from."""
    import SimpleITK as sitk

    origin = np.array(image.GetOrigin())
    spacing = np.array(image.GetSpacing())
    direction = np.array(image.GetDirection()).reshape(3, 3)
    to_index = np.linalg.inv(direction @ np.diag(spacing))
    continuous = (points.reshape(-1, 3) - origin) @ to_index.T
    nearest = np.rint(continuous).astype(np.int64)
    size = np.array(image.GetSize())
    inside = np.all((nearest >= 0) & (nearest < size), axis=1)
    array = sitk.GetArrayViewFromImage(image)  # [k, j, i]
    values = np.zeros(len(nearest), dtype=array.dtype)
    i, j, k = nearest[inside].T
    values[inside] = array[k, j, i]
    offset = float(np.abs(continuous[inside] - nearest[inside]).max()) if inside.any() else 0.0
    return values.reshape(points.shape[:-1]), offset


# ----------------------------------------------------------------------------------------------------------------
# (d) dciodvfy
# ----------------------------------------------------------------------------------------------------------------


def dciodvfy() -> str | None:
    return shutil.which("dciodvfy")


def dciodvfy_errors(path: str | Path) -> list[str]:
    """The "Error" lines dciodvfy prints for a file (it writes them to stderr), as printed."""
    tool = dciodvfy()
    if tool is None:
        raise FileNotFoundError("dciodvfy is not installed")
    run = subprocess.run([tool, str(path)], capture_output=True, text=True, errors="replace", timeout=300, check=False)
    lines = (run.stderr + "\n" + run.stdout).splitlines()
    return [line.strip() for line in lines if line.strip().startswith("Error")]


def normalise_message(line: str) -> str:
    """A dciodvfy message without its "Error - " prefix, with runs of white space collapsed."""
    return " ".join(re.sub(r"^Error\s*-\s*", "", line.strip()).split())
