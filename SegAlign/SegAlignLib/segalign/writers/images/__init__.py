"""The PNG folder: label images, masks, images and overlays per frame, manifest.csv, tiles.csv, labels.json, and
the index.html preview page.

Layout (see :mod:`segalign.export` for the whole export folder)::

    labels/<index>_i<InstanceNumber>[_f<frame>].png   one label image per frame, Rows x Columns, like pixel_array
    layers/<n>/<same name>.png                        where segments overlap: label layer n (2, 3...) of the frame
    masks/<segment>/<same name>.png                   (options.masks) one 1-bit image per segment per frame
    images/<same name>.png                            (options.images) the frame's stored values, 16-bit
    overlays/<same name>.png                          (options.overlays) the frame windowed, labels drawn on it
    labels.json                                       value, name, colour (and voxel and frame counts) per label
    tiles.csv                                         for Siemens mosaics: where each tile of a label mosaic lies
    manifest.csv                                      one row per frame in export order; written last
    index.html, viewer/                               (options.overlays) the preview page and its frames' data

Overlapping segments. A label image holds one value per pixel, so a segmentation whose segments overlap (a BODY
around every organ, a PTV around its CTV, masks of several models) is written as a few label *layers*, in each of
which segments do not overlap (see :mod:`segalign.segmentation.layers`); a segment is in exactly one layer, with a
label value of its own. ``labels/`` holds layer 1, exactly as for a segmentation without overlaps (which has only
that layer: its files are the same, byte for byte); ``layers/<n>/`` holds layer ``n`` under the same file names.
labels.json gives each segment's ``"layer"``, and manifest.csv (and tiles.csv) a column ``label_png_<n>`` per
further layer, after all the others. A segment's pixels on a frame are those of its value in its layer's image,
whatever other layers hold there. Masks are each segment's own pixels (overlaps kept); ``label_pixels`` and
``label_areas_mm2`` count each segment's own pixels; overlays and the preview page draw layer 1 as always and the
further layers as outlines on top, and the page's readout names every segment under the cursor.

Modules: :mod:`.folder` (the writer, :class:`PngFolderWriter`), :mod:`.manifest` (the tables' rows and columns,
the frames' file names), :mod:`.png` (PNG encoding), :mod:`.render` (overlays and label colours),
:mod:`.preview` (the page's data) and :mod:`.page` (the page's HTML, style and script).
"""

from __future__ import annotations

from .folder import ENTRIES, PngFolderWriter, image_values, read_pixels

__all__ = ["ENTRIES", "PngFolderWriter", "image_values", "read_pixels"]
