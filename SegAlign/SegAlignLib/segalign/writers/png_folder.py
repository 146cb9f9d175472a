"""The old home of the PNG folder writer, kept only for the modules of other packages that still import from it
(export, batch, all_series). The writer is :mod:`.images`; the file helpers are :mod:`segalign.files`, which
callers call module-qualified (``files.write_json(...)``) so that tests' disk faults reach them.
"""

from __future__ import annotations

from ..files import has_csv_header, safe_name, unique_safe_names, write_json
from .images import ENTRIES, PngFolderWriter, image_values, read_pixels
from .images.png import write_png

__all__ = [
    "ENTRIES", "PngFolderWriter", "has_csv_header", "image_values", "read_pixels", "safe_name", "unique_safe_names",
    "write_json", "write_png",
]
