"""Filling polygons at pixel centres: the even-odd rule, with a stated rule for centres exactly on an edge.

A polygon is an ``(n, 2)`` array of ``(row, column)`` vertices in a frame's pixel coordinates (pixel ``(r, c)``'s
centre is at ``(r, c)``), closed from its last vertex back to its first. :func:`even_odd` marks the pixel centres
inside the polygons of one structure on one frame, all of them together, by the **even-odd rule**: a centre is
inside when a ray from it crosses the polygons' edges an odd number of times. Holes and islands drawn as contours of
their own, and keyhole contours (an outline that runs in to a hole and back out along a cut), combine as planning
systems mean them to.

**Centres on an edge** follow the half-open rule of pixel-centre rasterisers (Direct3D's top-left rule, Cairo,
Skia): an edge spans the pixel rows ``R`` with ``min(r0, r1) <= R < max(r0, r1)`` (a centre on a top edge is
inside, on a bottom edge outside; horizontal edges span no row, and a vertex on a row is counted once), and along a
row a centre exactly on a crossing counts as right of it (on a left edge inside, on a right edge outside). So a
square with its corners on pixel centres ``(0, 0)`` and ``(2, 2)`` covers the four centres ``(0..1, 0..1)``, and
squares that tile the plane share no centre and leave none out. A coordinate within :data:`EDGE_TOLERANCE_PIXELS`
of a centre counts as on it, so that rounding in the millimetre-to-pixel conversion never decides a tie. Contours
along pixel edges (SegAlign's RTSTRUCT) have no centre on an edge: they give back exactly the pixels they outline.

The fill is numpy over all edges at once: every crossing of an edge with a pixel row, counted per row at the first
centre right of it (``bincount``), then a running parity along each row.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import SegAlignError

#: Coordinates within this many pixels of a pixel centre's row or column count as exactly on it (see the module).
EDGE_TOLERANCE_PIXELS = 1e-6
#: The most crossings of edges with pixel rows one fill may count (a million-point contour zigzagging across every
#: row of a frame would otherwise take gigabytes); an outline of a whole 2048 x 2048 frame has about 4,000.
MAX_CROSSINGS = 20_000_000


def even_odd(polygons: Sequence[np.ndarray], rows: int, columns: int, row0: int = 0, column0: int = 0,
             where: str = "the contours") -> np.ndarray:
    """The pixel centres inside ``polygons`` by the even-odd rule (see the module): a ``(rows, columns)`` bool mask
    whose element ``(i, j)`` is the centre ``(row0 + i, column0 + j)`` of the frame (a window of it, for speed).
    ``where`` names the contours in the refusal of a fill that would count more than :data:`MAX_CROSSINGS`
    crossings."""
    mask = np.zeros((rows, columns), dtype=bool)
    parts = [np.asarray(polygon, dtype=np.float64).reshape(-1, 2) for polygon in polygons]
    parts = [part for part in parts if len(part) >= 3]
    if not parts or rows <= 0 or columns <= 0:
        return mask
    starts = np.concatenate(parts)
    ends = np.concatenate([np.roll(part, -1, axis=0) for part in parts])
    r0, c0 = starts[:, 0] - row0, starts[:, 1] - column0
    r1, c1 = ends[:, 0] - row0, ends[:, 1] - column0
    low, high = np.minimum(r0, r1), np.maximum(r0, r1)
    first = np.clip(np.ceil(low - EDGE_TOLERANCE_PIXELS), 0, rows).astype(np.int64)  # rows R >= low
    stop = np.clip(np.ceil(high - EDGE_TOLERANCE_PIXELS), 0, rows).astype(np.int64)  # rows R < high
    counts = np.maximum(stop - first, 0)
    total = int(counts.sum())
    if total == 0:
        return mask
    if total > MAX_CROSSINGS:
        raise SegAlignError(f"{where}: the edges cross the pixel rows {total} times, more than the "
                            f"{MAX_CROSSINGS} a structure on one frame may (are the contours garbage?)")
    edge = np.repeat(np.flatnonzero(counts), counts[counts > 0])
    row = first[edge] + (np.arange(total) - np.repeat(np.cumsum(counts[counts > 0]) - counts[counts > 0],
                                                      counts[counts > 0]))
    crossing = c0[edge] + (row - r0[edge]) * (c1[edge] - c0[edge]) / (r1[edge] - r0[edge])
    # A crossing toggles the centres at and right of it: columns C >= crossing (on a crossing counts as right of it).
    toggled = np.clip(np.ceil(crossing - EDGE_TOLERANCE_PIXELS), 0, columns).astype(np.int64)
    toggles = np.bincount(row * (columns + 1) + toggled, minlength=rows * (columns + 1)).reshape(rows, columns + 1)
    return (np.cumsum(toggles[:, :columns], axis=1) & 1).astype(bool)


def centre_box(polygon: np.ndarray, rows: int, columns: int) -> tuple[int, int, int, int] | None:
    """The rows ``[r0, r1)`` and columns ``[c0, c1)`` of the frame (``rows`` x ``columns``) holding every pixel centre
    :func:`even_odd` may mark inside ``polygon``, or None where there is none."""
    low, high = polygon.min(axis=0), polygon.max(axis=0)
    r0 = max(int(np.ceil(low[0] - EDGE_TOLERANCE_PIXELS)), 0)
    r1 = min(int(np.ceil(high[0] - EDGE_TOLERANCE_PIXELS)), rows)
    c0 = max(int(np.ceil(low[1] - EDGE_TOLERANCE_PIXELS)), 0)
    c1 = min(int(np.floor(high[1] + EDGE_TOLERANCE_PIXELS)) + 1, columns)
    if r1 <= r0 or c1 <= c0:
        return None
    return r0, r1, c0, c1
