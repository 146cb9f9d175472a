"""DICOM pixel data for people to look at: decoding one frame at a time, rescale, windowing, MONOCHROME1.

Label export never reads pixel data; overlays and image PNGs do. Compressed transfer syntaxes decode through
pydicom's plugins: JPEG Lossless and JPEG-LS need pylibjpeg (the ``codecs`` extra) or gdcm, while JPEG 2000 and RLE
usually decode without it (Pillow's OpenJPEG, pydicom's own RLE decoder). When no plugin can, a single-frame file is
decoded by GDCM through SimpleITK if it is installed (3D Slicer bundles it, and no pydicom plugin); else the error
names the transfer syntax and what to install.

Conventions:

* **Modality LUT**: ``value = stored * RescaleSlope + RescaleIntercept`` (from the frame's
  PixelValueTransformationSequence in enhanced files, else the top level; 1 and 0 when absent).
* **Window**: the DICOM linear VOI function (PS3.3 C.11.2.1.2) mapped onto 0..255::

      x <= c - 0.5 - (w - 1) / 2  ->  0
      x >  c - 0.5 + (w - 1) / 2  ->  255
      otherwise                   ->  ((x - (c - 0.5)) / (w - 1) + 0.5) * 255

  computed in float64 and rounded half up. The frame's own WindowCenter/WindowWidth (FrameVOILUTSequence in enhanced
  files; the first value when several) are used unless a window is given; without either, the frame's own value range.
* **MONOCHROME1** is inverted after windowing (``255 - y``), so bright always means dense.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.uid import RLELossless
from pydicom.multival import MultiValue
from pydicom.pixels import pixel_array

from ..errors import SegAlignError, describe, quiet_decoders, quiet_warnings, short, short_path
from .frames import functional_groups, functional_value
from .model import Frame


@dataclass(frozen=True)
class Window:
    """A display window in modality units (e.g. HU): centre and width."""

    center: float
    width: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.center) and math.isfinite(self.width)) or self.width < 1:
            raise SegAlignError(f"window width must be at least 1, got centre {self.center}, width {self.width}")


#: Named CT windows (centre, width in HU), as commonly used in radiology.
PRESETS: dict[str, Window] = {
    "abdomen": Window(40, 400),
    "bone": Window(400, 1800),
    "brain": Window(40, 80),
    "lung": Window(-600, 1500),
    "mediastinum": Window(50, 350),
}


def parse_window(text: str) -> Window:
    """``"CENTER,WIDTH"`` (e.g. ``"40,400"``) or a preset name (abdomen, bone, brain, lung, mediastinum)."""
    name = text.strip().lower()
    if not name:
        raise SegAlignError(f"window is empty: give CENTER,WIDTH or a preset ({', '.join(sorted(PRESETS))})")
    if name in PRESETS:
        return PRESETS[name]
    parts = name.split(",")
    try:
        center, width = (float(part) for part in parts)
    except ValueError:
        presets = ", ".join(sorted(PRESETS))
        raise SegAlignError(f"window {text!r} is neither CENTER,WIDTH nor a preset ({presets})") from None
    return Window(center, width)


#: Display values within this of a half (x.5) are halves, and round up; float error must not decide them.
HALF_TOLERANCE = 1e-9


def apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """The DICOM linear VOI function of ``values`` onto 0..255 (uint8), rounded half up (in float64)."""
    values = np.asarray(values, dtype=np.float64)
    center, width = window.center, window.width
    if width == 1:
        return np.where(values > center - 0.5, 255, 0).astype(np.uint8)
    low = center - 0.5 - (width - 1) / 2
    high = center - 0.5 + (width - 1) / 2
    scaled = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255.0
    scaled = np.floor(scaled + (0.5 + HALF_TOLERANCE))
    scaled[values <= low] = 0
    scaled[values > high] = 255
    return np.clip(scaled, 0, 255).astype(np.uint8)


@dataclass
class FramePixels:
    """One frame's decoded pixels and how to show them."""

    stored: np.ndarray  #: stored values, ``(Rows, Columns)``, as pydicom decodes them
    slope: float
    intercept: float
    window: Window | None  #: the frame's own window, if it has one
    monochrome1: bool

    @property
    def values(self) -> np.ndarray:
        """Modality values (e.g. HU) as float64 (exact for stored integers and decimal rescale values)."""
        return self.stored.astype(np.float64) * self.slope + self.intercept

    def display(self, window: Window | None = None) -> np.ndarray:
        """8-bit grayscale for display: ``window``, else the frame's own, else its value range."""
        values = self.values
        chosen = window or self.window or range_window(values)
        gray = apply_window(values, chosen)
        return 255 - gray if self.monochrome1 else gray


class PixelReader:
    """Reads the pixel data of frames, one frame at a time (multi-frame files are not decoded whole)."""

    def __init__(self) -> None:
        self._header_path: Path | None = None
        self._header: pydicom.Dataset | None = None

    def read(self, frame: Frame) -> FramePixels:
        """Decode ``frame``'s pixels, with its rescale, window and photometric interpretation."""
        if frame.number_of_frames > 1:  # decode only this frame; the header is kept for the file's next frame
            header = self._read_header(frame.source_file)
            index = frame.frame_number - 1
            stored = self._decode(frame, header, lambda: pixel_array(str(frame.source_file), index=index))
        else:  # one read gives header and pixels
            header = _read(frame.source_file, stop_before_pixels=False)
            stored = self._decode(frame, header, lambda: header.pixel_array)
        with quiet_warnings():
            groups = functional_groups(header, frame.frame_number - 1)
            transformation = "PixelValueTransformationSequence"
            slope = _rescale(
                functional_value(groups, header, transformation, "RescaleSlope"), 1.0, "RescaleSlope", frame
            )
            intercept = _rescale(
                functional_value(groups, header, transformation, "RescaleIntercept"), 0.0, "RescaleIntercept", frame
            )
            center = _first_number(functional_value(groups, header, "FrameVOILUTSequence", "WindowCenter"), None)
            width = _first_number(functional_value(groups, header, "FrameVOILUTSequence", "WindowWidth"), None)
            monochrome1 = str(header.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1"
        usable = center is not None and width is not None and 1 <= width <= MAX_RESCALE and abs(center) <= MAX_RESCALE
        window = Window(center, width) if usable else None  # a window is only for display: a bad one is not used
        return FramePixels(stored, slope, intercept, window, monochrome1)

    def _read_header(self, path: Path) -> pydicom.Dataset:
        if path != self._header_path:
            self._header = _read(path, stop_before_pixels=True)
            self._header_path = path
        assert self._header is not None
        return self._header

    @staticmethod
    def _decode(frame: Frame, header: pydicom.Dataset, decode) -> np.ndarray:
        with quiet_warnings():
            photometric = str(header.get("PhotometricInterpretation", "MONOCHROME2") or "").strip().upper()
            samples = header.get("SamplesPerPixel", 1)
        where = short_path(frame.source_file)
        if samples is None or samples == "":
            raise SegAlignError(f"{where}: SamplesPerPixel is missing; overlays and image PNGs need it")
        if _first_number(samples, None) != 1:
            raise SegAlignError(
                f"{where}: SamplesPerPixel is {short(samples, 20)} (PhotometricInterpretation "
                f"{short(photometric, 20) or 'missing'}): overlays and image PNGs need grayscale pixel data, one "
                "sample per pixel"
            )
        if photometric not in ("MONOCHROME1", "MONOCHROME2"):
            what = f"PhotometricInterpretation {short(photometric, 20)} is not grayscale" if photometric else (
                "PhotometricInterpretation is missing"
            )
            raise SegAlignError(f"{where}: {what}; overlays and image PNGs need MONOCHROME1 or MONOCHROME2 pixel data")
        if "PixelData" not in header and frame.number_of_frames == 1:
            raise SegAlignError(f"{frame.source_file}: has no PixelData")
        syntax = header.file_meta.get("TransferSyntaxUID") if hasattr(header, "file_meta") else None
        try:
            with np.errstate(all="ignore"), quiet_decoders():
                stored = decode()
        except Exception as error:
            reason = describe(error, 200)
            if syntax is not None and syntax.is_compressed:
                # GDCM (through SimpleITK, bundled with 3D Slicer) decodes what no pydicom plugin installed does:
                # JPEG Lossless and JPEG-LS there. Never RLE: pydicom always decodes it, so a failure is broken data,
                # and GDCM ends the process with SIGFPE on some (an RLE header of zeros).
                gdcm = frame.number_of_frames == 1 and syntax != RLELossless
                stored = _decode_with_itk(frame, header) if gdcm else None
                if stored is None:
                    raise SegAlignError(
                        f"{short_path(frame.source_file)}: cannot decode {short(syntax.name, 40)} ({syntax}) pixel "
                        "data (damaged, or no decoder: pip install 'segalign[codecs]', python-gdcm or SimpleITK) "
                        f"({reason})"
                    ) from None
            else:
                raise SegAlignError(f"{frame.source_file}: cannot read the pixel data ({reason})") from None
        if stored.shape != (frame.rows, frame.columns):
            raise SegAlignError(
                f"{short_path(frame.source_file)}: decoded pixel data has shape {stored.shape}, "
                f"expected ({frame.rows}, {frame.columns})"
            )
        return stored


def _decode_with_itk(frame: Frame, header: pydicom.Dataset) -> np.ndarray | None:
    """A single-frame file's stored values decoded by GDCM through SimpleITK (bundled with 3D Slicer, where no
    pydicom plugin decodes JPEG Lossless or JPEG-LS), or None without SimpleITK or if GDCM cannot either.

    GDCM applies RescaleSlope and RescaleIntercept; they are undone here (exactly: the values were integers) so the
    result is what pydicom's ``pixel_array`` would give, in its dtype."""
    try:
        import SimpleITK as sitk
    except ImportError:
        return None
    try:
        reader = sitk.ImageFileReader()
        reader.SetImageIO("GDCMImageIO")
        reader.SetFileName(str(frame.source_file))
        with quiet_decoders():
            values = sitk.GetArrayFromImage(reader.Execute())
    except Exception:  # RuntimeError: GDCM cannot decode it either
        return None
    values = values.reshape(values.shape[-2:]) if values.ndim == 3 and values.shape[0] == 1 else values
    with quiet_warnings():
        slope = _first_number(header.get("RescaleSlope"), 1.0) or 1.0
        intercept = _first_number(header.get("RescaleIntercept"), 0.0)
        bits = int(header.get("BitsAllocated", 16) or 16)
        signed = int(header.get("PixelRepresentation", 0) or 0) == 1
    dtype = np.dtype(f"{'i' if signed else 'u'}{max(bits // 8, 1)}")
    stored = np.rint((values.astype(np.float64) - intercept) / slope)
    info = np.iinfo(dtype)
    if stored.min() < info.min or stored.max() > info.max:
        return None
    return stored.astype(dtype)


def _read(path: Path, stop_before_pixels: bool) -> pydicom.Dataset:
    try:
        with quiet_warnings():
            return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except Exception as error:
        raise SegAlignError(f"{short_path(path)}: cannot be read ({describe(error)})") from None


#: RescaleSlope, RescaleIntercept and window values beyond this in magnitude are not believed.
MAX_RESCALE = 1e12


def _rescale(value: Any, default: float, keyword: str, frame: Frame) -> float:
    """RescaleSlope or RescaleIntercept: ``default`` when absent, else a finite number within :data:`MAX_RESCALE`
    (the manifest gives it with --images, so a garbled one is refused rather than replaced)."""
    if value is None or value == "":
        return default
    number = _first_number(value, None)
    if number is None or abs(number) > MAX_RESCALE:
        raise SegAlignError(
            f"{short_path(frame.source_file)}: {keyword} '{short(value)}' is not a finite number of at most "
            f"{MAX_RESCALE:g}"
        )
    return number


def range_window(values: np.ndarray) -> Window:
    low, high = float(values.min()), float(values.max())
    width = max(high - low, 1.0)
    return Window(low + width / 2 + 0.5, width + 1)


def _first_number(value, default):
    if value is None or value == "":
        return default
    if isinstance(value, (list, tuple, MultiValue)):
        if not len(value):
            return default
        value = value[0]
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return default
    return number if math.isfinite(number) else default
