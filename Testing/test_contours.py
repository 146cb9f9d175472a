"""The pixel-edge contour tracer, against a point-in-polygon rasteriser written here (even-odd rule at pixel
centres): exact for every label of random label images, with no collinear points and the fewest vertices."""

from __future__ import annotations

import numpy as np
import pytest

from segalign.writers.contours import trace_edges, vertices_to_patient


def rasterise(polygons: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Pixel centres (r, c) inside the polygons (vertices in corner coordinates: row i - 0.5, column j - 0.5),
    combined by the even-odd rule: a crossing-number test along each pixel row."""
    rows, columns = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    inside = np.zeros(shape, dtype=bool)
    for polygon in polygons:
        y, x = polygon[:, 0] - 0.5, polygon[:, 1] - 0.5
        for y0, x0, y1, x1 in zip(y, x, np.roll(y, -1), np.roll(x, -1)):
            if y0 == y1:
                continue
            crosses = (y0 > rows) != (y1 > rows)
            x_at = x0 + (rows - y0) * (x1 - x0) / (y1 - y0)
            inside ^= crosses & (columns < x_at)
    return inside


def corners_of(polygon: np.ndarray) -> bool:
    """Every vertex is a corner: the edges before and after it are perpendicular (no collinear points)."""
    step = np.diff(np.vstack([polygon, polygon[:1]]), axis=0)
    following = np.roll(step, -1, axis=0)
    return bool(np.all(step[:, 0] * following[:, 1] - step[:, 1] * following[:, 0] != 0))


@pytest.mark.parametrize("seed", range(3))
def test_random_label_images_rasterise_back_exactly(seed: int):
    rng = np.random.default_rng(seed)
    for trial in range(120):
        shape = tuple(int(n) for n in rng.integers(1, 18, 2))
        if trial % 3 == 0:  # binary noise: many diagonal contacts and holes
            labels = (rng.random(shape) < 0.5).astype(np.uint8)
        elif trial % 3 == 1:  # several labels touching each other
            labels = rng.integers(0, 5, shape).astype(np.uint16)
        else:  # blobs
            labels = np.zeros(shape, np.uint8)
            labels[shape[0] // 4: shape[0] - 1, shape[1] // 3:] = 3
            labels[shape[0] // 2, :] = 9
        contours = trace_edges(labels)
        assert sorted(contours) == sorted(int(v) for v in np.unique(labels) if v)
        for value, polygons in contours.items():
            np.testing.assert_array_equal(rasterise(polygons, labels.shape), labels == value)
            assert all(corners_of(polygon) and len(polygon) >= 4 for polygon in polygons)


def test_shapes_planning_systems_meet():
    one = np.zeros((5, 5), np.uint8)
    one[2, 3] = 1
    [square] = trace_edges(one)[1]
    assert sorted(map(tuple, square)) == [(2, 3), (2, 4), (3, 3), (3, 4)]  # a proper 4-point contour
    full = np.ones((7, 9), np.uint8)
    [outline] = trace_edges(full)[1]
    assert sorted(map(tuple, outline)) == [(0, 0), (0, 9), (7, 0), (7, 9)]  # the whole frame's edge
    ring = np.ones((6, 6), np.uint8)
    ring[2:4, 2:4] = 0
    assert len(trace_edges(ring)[1]) == 2  # outline and hole
    diagonal = np.array([[1, 0], [0, 1]], np.uint8)
    assert len(trace_edges(diagonal)[1]) == 2  # touching at a corner: two contours
    islands = np.zeros((9, 9), np.uint8)
    islands[1, 1] = islands[4, 6] = islands[7, 2] = 2
    assert len(trace_edges(islands)[2]) == 3
    assert trace_edges(np.zeros((3, 3), np.uint8)) == {}


def test_vertices_go_to_pixel_corners_in_patient_space():
    """Corner (i, j) lies half a pixel before pixel (i, j)'s centre along both axes, on an oblique plane with
    non-square pixels."""
    position = np.array([10.0, -20.0, 30.0])
    a, b = np.array([0.8, 0.6, 0.0]), np.array([0.0, 0.0, -1.0])
    orientation = np.concatenate([a, b])
    spacing = np.array([0.7, 1.3])  # between rows, between columns
    corners = vertices_to_patient(np.array([[0, 0], [2, 5]]), position, orientation, spacing)
    np.testing.assert_allclose(corners[0], position - 0.5 * 1.3 * a - 0.5 * 0.7 * b)
    np.testing.assert_allclose(corners[1], position + 4.5 * 1.3 * a + 1.5 * 0.7 * b)
