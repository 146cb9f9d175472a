"""Overlays: labels drawn on a grayscale frame in their colours, blended or as outlines.

Blending, per pixel with a non-zero label of colour ``C`` and grayscale ``g``::

    out = floor((1 - alpha) * g + alpha * C + 0.5)      (each channel)

Pixels with label 0 keep ``g`` exactly. With ``outline=True`` only the boundary pixels of each labelled region are
coloured, fully (``alpha`` is not used): a labelled pixel is on the boundary when one of its four neighbours has a
different label; pixels beyond the image edge count as having the same label, so the frame border is not drawn.

Where segments overlap (a segmentation of several label layers), the first layer is drawn as above and every
further layer on top of it as outlines (its boundary pixels in their colours, fully, layer after layer), so that a
segment inside or across another stays visible and the fill underneath still shows whose it is.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ...dicom import HALF_TOLERANCE
from ...segmentation import MAX_LABEL, Label


def color_lookup(labels: Mapping[int, Label], largest: int) -> np.ndarray:
    """``(largest + 1, 3)`` uint8 colours indexed by label value (unnamed values get the default palette).

    ``largest`` is capped at :data:`~segalign.labels.MAX_LABEL`: label images are uint8 or uint16, so no pixel
    holds a larger value, and a table entry of 10**12 must not make a lookup of terabytes. The default palette is
    computed for all values at once (as :func:`~segalign.labels.default_color` does for one).
    """
    size = min(max(int(largest), 0), MAX_LABEL) + 1
    lookup = default_colors(np.arange(size))
    lookup[0] = 0
    for value, label in labels.items():
        if 0 < value < size:
            lookup[value] = label.color
    return lookup


def default_colors(values: np.ndarray) -> np.ndarray:
    """:func:`~segalign.labels.default_color` of every value, as ``(n, 3)`` uint8: the same golden-angle hues,
    with the same float operations as :func:`colorsys.hsv_to_rgb`, so the colours are identical."""
    saturation, brightness = 0.65, 0.95
    hue = (np.asarray(values, dtype=np.float64) * 0.618033988749895) % 1.0
    sector = np.floor(hue * 6.0)
    fraction = hue * 6.0 - sector
    p = np.full_like(hue, brightness * (1.0 - saturation))
    q = brightness * (1.0 - saturation * fraction)
    t = brightness * (1.0 - saturation * (1.0 - fraction))
    v = np.full_like(hue, brightness)
    sector = sector.astype(np.int64) % 6
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    rgb = np.zeros(hue.shape + (3,), dtype=np.float64)
    for index, channels in enumerate(choices):
        chosen = sector == index
        for channel, source in enumerate(channels):
            rgb[chosen, channel] = source[chosen]
    return np.rint(rgb * 255).astype(np.uint8)  # rint rounds halves to even, as round() does


def boundary(labels: np.ndarray) -> np.ndarray:
    """Labelled pixels with a 4-neighbour of a different label (the image edge does not count)."""
    padded = np.pad(labels, 1, mode="edge")
    centre = padded[1:-1, 1:-1]
    edge = (
        (padded[:-2, 1:-1] != centre)
        | (padded[2:, 1:-1] != centre)
        | (padded[1:-1, :-2] != centre)
        | (padded[1:-1, 2:] != centre)
    )
    return edge & (labels != 0)


def overlay(
    gray: np.ndarray, labels: np.ndarray, lookup: np.ndarray, alpha: float = 0.4, outline: bool = False,
    more: Sequence[np.ndarray] = (),
) -> np.ndarray:
    """RGB uint8 image ``(rows, columns, 3)``: ``gray`` with ``labels`` drawn in the colours of ``lookup``, and
    the further layers ``more`` (where segments overlap) outlined on top, in order."""
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    mask = boundary(labels) if outline else labels != 0
    if mask.any():
        colors = lookup[labels[mask]]
        if outline:
            rgb[mask] = colors
        else:
            mixed = (1.0 - alpha) * gray[mask][:, None].astype(np.float64) + alpha * colors
            rgb[mask] = np.floor(mixed + (0.5 + HALF_TOLERANCE)).astype(np.uint8)  # halves round up, whatever float error
    for layer in more:
        edge = boundary(layer)
        rgb[edge] = lookup[layer[edge]]
    return rgb
