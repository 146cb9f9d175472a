"""Analytic solids in patient space (LPS millimetres), the shapes synthetic phantoms are made of (see
:mod:`segalign.synthetic`): an :class:`Ellipsoid` (organs, a BODY outline), a :class:`Box` (slabs), a
:class:`Cylinder` (tubes, vessels) and a :class:`Torus` (rings). Each has a label ``value``, a ``name``, a CT value
``hu``, a ``color``, ``bounds()`` (the LPS box that holds it) and ``contains(points)`` (booleans for points shaped
``(..., 3)``), so a label or mask at any point is known exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np


@dataclass(frozen=True)
class Ellipsoid:
    """A labelled ellipsoid: ``|R^T (x - centre) / radii| <= 1`` in LPS millimetres."""

    value: int
    name: str
    centre: tuple[float, float, float]
    radii: tuple[float, float, float]
    hu: float = 50.0
    axes: tuple[tuple[float, float, float], ...] = ((1, 0, 0), (0, 1, 0), (0, 0, 1))  #: columns of R, in LPS
    color: tuple[int, int, int] = (200, 80, 80)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The LPS box holding the ellipsoid: lowest and highest corner."""
        axes = np.asarray(self.axes, dtype=float)  # rows: the ellipsoid's axes in LPS
        half = np.sqrt(((axes * np.asarray(self.radii, dtype=float)[:, None]) ** 2).sum(axis=0))
        return np.asarray(self.centre) - half, np.asarray(self.centre) + half

    def contains(self, points: np.ndarray) -> np.ndarray:
        local = (points - np.asarray(self.centre)) @ np.asarray(self.axes, dtype=float).T
        return np.sum((local / np.asarray(self.radii)) ** 2, axis=-1) <= 1.0


def _box_bounds(centre: Sequence[float], axes: Sequence[Sequence[float]], half: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The LPS box holding a box of ``half`` sizes along ``axes`` (rows: unit LPS vectors) around ``centre``."""
    reach = np.abs(np.asarray(axes, dtype=float) * np.asarray(half, dtype=float)[:, None]).sum(axis=0)
    return np.asarray(centre, dtype=float) - reach, np.asarray(centre, dtype=float) + reach


def _local(points: np.ndarray, centre: Sequence[float], axes: Sequence[Sequence[float]]) -> np.ndarray:
    """Points in a shape's own coordinates: along each row of ``axes``, from ``centre``."""
    return (points - np.asarray(centre, dtype=float)) @ np.asarray(axes, dtype=float).T


@dataclass(frozen=True)
class Box:
    """A labelled box: ``|R^T (x - centre)| <= half`` on every axis, in LPS millimetres (a slab, a block)."""

    value: int
    name: str
    centre: tuple[float, float, float]
    half: tuple[float, float, float]  #: half sizes along the rows of ``axes``
    hu: float = 50.0
    axes: tuple[tuple[float, float, float], ...] = ((1, 0, 0), (0, 1, 0), (0, 0, 1))  #: the box's axes, in LPS
    color: tuple[int, int, int] = (80, 160, 200)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return _box_bounds(self.centre, self.axes, self.half)

    def contains(self, points: np.ndarray) -> np.ndarray:
        return np.all(np.abs(_local(points, self.centre, self.axes)) <= np.asarray(self.half, dtype=float), axis=-1)


@dataclass(frozen=True)
class Cylinder:
    """A labelled tube: along ``axes[0]`` for ``half_length`` either side of ``centre``, an elliptic section of
    ``radii`` along ``axes[1]`` and ``axes[2]`` (LPS millimetres)."""

    value: int
    name: str
    centre: tuple[float, float, float]
    half_length: float
    radii: tuple[float, float]
    hu: float = 50.0
    axes: tuple[tuple[float, float, float], ...] = ((1, 0, 0), (0, 1, 0), (0, 0, 1))
    color: tuple[int, int, int] = (220, 60, 60)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return _box_bounds(self.centre, self.axes, (self.half_length, *self.radii))

    def contains(self, points: np.ndarray) -> np.ndarray:
        local = _local(points, self.centre, self.axes)
        section = (local[..., 1] / self.radii[0]) ** 2 + (local[..., 2] / self.radii[1]) ** 2
        return (np.abs(local[..., 0]) <= self.half_length) & (section <= 1.0)


@dataclass(frozen=True)
class Torus:
    """A labelled ring around ``axes[2]`` through ``centre``: the points whose distance from that axis differs
    from ``major`` by ``d`` and whose height along it is ``h``, with ``(d / minor)^2 + (h / half_height)^2 <= 1``
    (LPS millimetres)."""

    value: int
    name: str
    centre: tuple[float, float, float]
    major: float
    minor: float
    half_height: float
    hu: float = 50.0
    axes: tuple[tuple[float, float, float], ...] = ((1, 0, 0), (0, 1, 0), (0, 0, 1))
    color: tuple[int, int, int] = (240, 200, 60)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        reach = self.major + self.minor
        return _box_bounds(self.centre, self.axes, (reach, reach, self.half_height))

    def contains(self, points: np.ndarray) -> np.ndarray:
        local = _local(points, self.centre, self.axes)
        radial = np.hypot(local[..., 0], local[..., 1]) - self.major
        return (radial / self.minor) ** 2 + (local[..., 2] / self.half_height) ** 2 <= 1.0


#: Any of the solids above.
Shape = Union[Ellipsoid, Box, Cylinder, Torus]
