"""Contours along pixel edges: the outlines of the labelled pixel squares of a frame, for every label at once.

A contour is a closed polygon through pixel corners: vertex ``(i, j)`` is the corner shared by pixels
``(i - 1, j - 1)``, ``(i - 1, j)``, ``(i, j - 1)`` and ``(i, j)``, so in pixel coordinates it lies at row
``i - 0.5``, column ``j - 0.5``. Filling a label's contours by the even-odd rule at pixel centres gives back exactly
that label's pixels: holes and islands are contours of their own, every contour is a simple polygon, and contours
of one label touch at most at a vertex (where two pixels of it meet only diagonally, the outline turns so that they
lie on separate contours). Only corners are kept: collinear points are never produced, and a one-pixel structure is
a 4-point contour.

The tracer is numpy over the whole frame (the boundary edges of all labels come from four comparisons of the
frame with its shifted self, straight runs of edges are merged, and runs are linked corner to corner), plus one
pass in Python over the corners to put each polygon in order. scikit-image's ``find_contours`` and OpenCV's
``findContours`` trace through pixel centres (iso-lines and boundary pixels), which shrinks every structure by
half a pixel and merges or drops thin parts; they cannot give these edges exactly.
"""

from __future__ import annotations

import numpy as np

#: Directions of an edge in (row, column) steps: right, down, left, up.
STEPS = np.array([[0, 1], [1, 0], [0, -1], [-1, 0]], dtype=np.int64)


def trace_edges(labels: np.ndarray) -> dict[int, list[np.ndarray]]:
    """The contours of every non-zero label of a 2D label image: label value -> list of ``(n, 2)`` int arrays of
    vertices ``(i, j)`` (pixel corners, see the module documentation), each a closed polygon without repeating its
    first vertex. Contours of a label run with the label on the same side, so outer outlines and holes run in
    opposite senses (irrelevant for the even-odd rule, which is how they are meant to be combined)."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"a label image is 2D, not of shape {labels.shape}")
    rows, columns = labels.shape
    padded = np.zeros((rows + 2, columns + 2), dtype=labels.dtype)
    padded[1:-1, 1:-1] = labels

    # Boundary edges. Horizontal edge (i, j)-(i, j+1) lies between pixel rows i-1 (above) and i (below); the label
    # below walks it leftward, the label above rightward. Vertical edge (i, j)-(i+1, j) lies between pixel columns
    # j-1 (left) and j (right); the label on the right walks it downward, the one on the left upward. So every
    # label's edges form closed circuits, the label always on the same side.
    above, below = padded[:-1, 1:-1], padded[1:, 1:-1]
    hi, hj = np.nonzero(above != below)
    left, right = padded[1:-1, :-1], padded[1:-1, 1:]
    vi, vj = np.nonzero(left != right)
    parts = []  # (label, direction, line, position) of every directed edge
    for value, direction, line, position in (
        (below[hi, hj], 2, hi, hj),  # leftward along row line hi, covering columns hj..hj+1
        (above[hi, hj], 0, hi, hj),  # rightward
        (right[vi, vj], 1, vj, vi),  # downward along column line vj, covering rows vi..vi+1
        (left[vi, vj], 3, vj, vi),  # upward
    ):
        keep = value != 0
        parts.append((value[keep].astype(np.int64), np.full(int(keep.sum()), direction), line[keep], position[keep]))
    label = np.concatenate([p[0] for p in parts])
    if label.size == 0:
        return {}
    direction = np.concatenate([p[1] for p in parts]).astype(np.int64)
    line = np.concatenate([p[2] for p in parts]).astype(np.int64)
    position = np.concatenate([p[3] for p in parts]).astype(np.int64)

    # Straight runs: consecutive edges of one label, one direction, on one line.
    order = np.lexsort((position, line, direction, label))
    label, direction, line, position = label[order], direction[order], line[order], position[order]
    new_run = np.ones(label.size, dtype=bool)
    new_run[1:] = (
        (label[1:] != label[:-1]) | (direction[1:] != direction[:-1]) | (line[1:] != line[:-1])
        | (position[1:] != position[:-1] + 1)
    )
    starts = np.flatnonzero(new_run)
    ends = np.append(starts[1:], label.size) - 1
    run_label, run_direction, run_line = label[starts], direction[starts], line[starts]
    low, high = position[starts], position[ends] + 1  # the run covers positions low..high along its line
    # Each run's first and last vertex (i, j), by direction.
    forward = (run_direction == 0) | (run_direction == 1)  # right and down walk towards higher positions
    first_position = np.where(forward, low, high)
    last_position = np.where(forward, high, low)
    horizontal = (run_direction == 0) | (run_direction == 2)
    first = np.where(horizontal[:, None], np.stack([run_line, first_position], 1), np.stack([first_position, run_line], 1))
    last = np.where(horizontal[:, None], np.stack([run_line, last_position], 1), np.stack([last_position, run_line], 1))

    # Link each run to the run of its label that starts where it ends. Where two do (a vertex where two pixels of
    # the label meet diagonally), turn so that the run's own pixel stays on this contour: right -> up, down ->
    # right, left -> down, up -> left.
    width = columns + 1
    vertex_count = (rows + 1) * width
    values, label_rank = np.unique(run_label, return_inverse=True)
    start_key = label_rank * vertex_count + first[:, 0] * width + first[:, 1]
    end_key = label_rank * vertex_count + last[:, 0] * width + last[:, 1]
    by_start = np.lexsort((run_direction, start_key))
    sorted_keys = start_key[by_start]
    lo = np.searchsorted(sorted_keys, end_key, side="left")
    hi_ = np.searchsorted(sorted_keys, end_key, side="right")
    count = hi_ - lo
    if np.any(count == 0) or np.any(count > 2):
        raise AssertionError("contour tracing found an open or branching outline")  # impossible for a label image
    following = by_start[lo]
    saddle = count == 2
    if saddle.any():
        wanted = (run_direction[saddle] + 3) % 4
        candidate_a, candidate_b = by_start[lo[saddle]], by_start[lo[saddle] + 1]
        following[saddle] = np.where(run_direction[candidate_a] == wanted, candidate_a, candidate_b)

    # Walk the circuits in order (one step per corner).
    successor = following.tolist()
    seen = bytearray(len(successor))
    contours: dict[int, list[np.ndarray]] = {}
    ranks = label_rank.tolist()
    for start in range(len(successor)):
        if seen[start]:
            continue
        loop = []
        run = start
        while not seen[run]:
            seen[run] = 1
            loop.append(run)
            run = successor[run]
        contours.setdefault(int(values[ranks[start]]), []).append(first[loop])
    return contours


def vertices_to_patient(
    vertices: np.ndarray, position: np.ndarray, orientation: np.ndarray, spacing: np.ndarray
) -> np.ndarray:
    """Pixel corners ``(i, j)`` of a frame as LPS millimetres: corner ``(i, j)`` is at row ``i - 0.5``, column
    ``j - 0.5``, and pixel ``(r, c)``'s centre at ``IPP + c * PixelSpacing[1] * IOP[0:3] + r * PixelSpacing[0] *
    IOP[3:6]``."""
    rows = vertices[:, 0].astype(np.float64) - 0.5
    columns = vertices[:, 1].astype(np.float64) - 0.5
    row_direction, column_direction = orientation[:3], orientation[3:]
    return (
        position[None, :]
        + (columns * spacing[1])[:, None] * row_direction[None, :]
        + (rows * spacing[0])[:, None] * column_direction[None, :]
    )
