"""The DICOM side of SegAlign: series and their frames, read from the files' headers; pixels only for display.

=============  ==========================================================================================
``model``      :class:`Frame`, :class:`Series`, :class:`DicomScan`; acquisition and spatial order (:data:`Order`)
``scan``       :func:`scan_folder`, and :func:`series_from_files`: the one way to build a Series from files
``headers``    reading and checking one file's header (:func:`read_header` returns a :class:`Header`)
``elements``   the pixel data element's header, parsed from the file's bytes without reading the pixels
``values``     header values as numbers, or a refusal that quotes them
``frames``     the frames of one file, each with its own geometry (:func:`frames_of`, functional groups)
``mosaic``     frames that hold several slices (Siemens mosaics), and the layouts SegAlign refuses
``pixels``     decoding one frame's pixels, rescale and windowing (overlays and image PNGs)
``diagnosis``  what a series' geometry looks like (``segalign info``, export warnings)
=============  ==========================================================================================

The names below are what the rest of SegAlign imports from here.
"""

from .diagnosis import SeriesReport, diagnose
from .frames import frames_of, functional_groups, functional_value
from .headers import Header, check_image_header, read_header
from .model import DicomScan, Frame, Order, Series, native_order, plural, position_along, position_order
from .mosaic import Tile
from .pixels import HALF_TOLERANCE, FramePixels, PixelReader, Window, parse_window, range_window
from .scan import check_uids, iter_files, scan_folder, series_from_files

__all__ = [
    "HALF_TOLERANCE",
    "DicomScan",
    "Frame",
    "FramePixels",
    "Header",
    "Order",
    "PixelReader",
    "Series",
    "SeriesReport",
    "Tile",
    "Window",
    "check_image_header",
    "check_uids",
    "diagnose",
    "frames_of",
    "functional_groups",
    "functional_value",
    "iter_files",
    "native_order",
    "parse_window",
    "plural",
    "position_along",
    "position_order",
    "range_window",
    "read_header",
    "scan_folder",
    "series_from_files",
]
