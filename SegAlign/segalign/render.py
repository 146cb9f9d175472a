"""Overlays: labels drawn on a grayscale frame in their colours, blended or as outlines.

Blending, per pixel with a non-zero label of colour ``C`` and grayscale ``g``::

    out = floor((1 - alpha) * g + alpha * C + 0.5)      (each channel)

Pixels with label 0 keep ``g`` exactly. With ``outline=True`` only the boundary pixels of each labelled region are
coloured, fully (``alpha`` is not used): a labelled pixel is on the boundary when one of its four neighbours has a
different label; pixels beyond the image edge count as having the same label, so the frame border is not drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from .errors import SegAlignError
from .labels import Label, default_color
from .pixels import HALF_TOLERANCE, Window


@dataclass(frozen=True)
class OverlayStyle:
    """How overlays look: the window (None: each frame's own), label opacity, or outlines instead of fills."""

    window: Window | None = None
    alpha: float = 0.4
    outline: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise SegAlignError(f"--alpha must be between 0 and 1, got {self.alpha}")


def color_lookup(labels: Mapping[int, Label], largest: int) -> np.ndarray:
    """``(largest + 1, 3)`` uint8 colours indexed by label value (unnamed values get the default palette)."""
    lookup = np.zeros((largest + 1, 3), dtype=np.uint8)
    for value in range(1, largest + 1):
        lookup[value] = labels[value].color if value in labels else default_color(value)
    return lookup


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


def overlay(gray: np.ndarray, labels: np.ndarray, lookup: np.ndarray, alpha: float = 0.4, outline: bool = False) -> np.ndarray:
    """RGB uint8 image ``(rows, columns, 3)``: ``gray`` with ``labels`` drawn in the colours of ``lookup``."""
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    mask = boundary(labels) if outline else labels != 0
    if not mask.any():
        return rgb
    colors = lookup[labels[mask]]
    if outline:
        rgb[mask] = colors
    else:
        mixed = (1.0 - alpha) * gray[mask][:, None].astype(np.float64) + alpha * colors
        rgb[mask] = np.floor(mixed + (0.5 + HALF_TOLERANCE)).astype(np.uint8)  # halves round up, whatever float error
    return rgb
