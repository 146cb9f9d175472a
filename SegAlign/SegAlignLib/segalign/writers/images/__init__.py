"""The PNG folder: label images, masks, images and overlays per frame, manifest.csv, tiles.csv, labels.json, and
the index.html preview page.

Layout (see :mod:`segalign.export` for the whole export folder)::

    labels/<index>_i<InstanceNumber>[_f<frame>].png   one label image per frame, Rows x Columns, like pixel_array
    masks/<segment>/<same name>.png                   (options.masks) one 1-bit image per segment per frame
    images/<same name>.png                            (options.images) the frame's stored values, 16-bit
    overlays/<same name>.png                          (options.overlays) the frame windowed, labels drawn on it
    labels.json                                       value, name, colour (and voxel and frame counts) per label
    tiles.csv                                         for Siemens mosaics: where each tile of a label mosaic lies
    manifest.csv                                      one row per frame in export order; written last
    index.html, viewer/                               (options.overlays) the preview page and its frames' data

Modules: :mod:`.folder` (the writer, :class:`PngFolderWriter`), :mod:`.manifest` (the tables' rows and columns,
the frames' file names), :mod:`.png` (PNG encoding), :mod:`.render` (overlays and label colours),
:mod:`.preview` (the page's data) and :mod:`.page` (the page's HTML, style and script).
"""

from __future__ import annotations

from .folder import ENTRIES, PngFolderWriter, image_values, read_pixels

__all__ = ["ENTRIES", "PngFolderWriter", "image_values", "read_pixels"]
