"""Smooth random blob shapes (tissue outlines, holes, tumour deposits) as pure geometry.

A blob is an ellipse whose radius is modulated by a few low-order harmonics. All numbers
are level-0 pixels of the slide the blob belongs to. Nothing here touches pixels, so the
cohort plan can be built at workflow parse time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

N_VERTICES = 128


@dataclass(frozen=True)
class Blob:
    """Ellipse (semi-axes ``rx``, ``ry``, rotated by ``angle`` radians) with a wavy radius
    ``1 + sum(amp * cos(k * t + phase))`` over ``harmonics = ((k, amp, phase), ...)``."""

    cx: float
    cy: float
    rx: float
    ry: float
    angle: float
    harmonics: tuple[tuple[int, float, float], ...] = ()

    def _wave(self, t: np.ndarray) -> np.ndarray:
        r = np.ones_like(t)
        for k, amp, phase in self.harmonics:
            r = r + amp * np.cos(k * t + phase)
        return r

    def polygon(self, n: int = N_VERTICES) -> np.ndarray:
        """(n, 2) float vertices (x, y) of the outline."""
        if n == N_VERTICES:
            return self._outline
        return self._vertices(n)

    @cached_property
    def _outline(self) -> np.ndarray:
        return self._vertices(N_VERTICES)

    def _vertices(self, n: int) -> np.ndarray:
        t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
        r = self._wave(t)
        u, v = self.rx * r * np.cos(t), self.ry * r * np.sin(t)
        c, s = math.cos(self.angle), math.sin(self.angle)
        return np.stack([self.cx + c * u - s * v, self.cy + s * u + c * v], axis=1)

    def depth(self, points: np.ndarray) -> np.ndarray:
        """How far inside each (x, y) point lies: 1 at the centre, 0 on the outline, < 0 outside
        (in units of the local radius; exact because the blob is star-shaped)."""
        points = np.atleast_2d(np.asarray(points, dtype=float))
        dx, dy = points[:, 0] - self.cx, points[:, 1] - self.cy
        c, s = math.cos(self.angle), math.sin(self.angle)
        u, v = (c * dx + s * dy) / self.rx, (-s * dx + c * dy) / self.ry
        t = np.arctan2(v, u)
        return 1.0 - np.hypot(u, v) / self._wave(t)

    def contains(self, other: Blob, margin: float = 0.0) -> bool:
        """True when every outline vertex of ``other`` lies inside, ``margin`` (relative) deep."""
        return bool((self.depth(other.polygon()) > margin).all())

    @cached_property
    def feret(self) -> float:
        """Largest dimension: the greatest distance between two outline vertices (pixels)."""
        return feret_diameter(self.polygon())

    @cached_property
    def reach(self) -> float:
        """Greatest distance from the centre to the outline (pixels)."""
        poly = self.polygon()
        return float(np.hypot(poly[:, 0] - self.cx, poly[:, 1] - self.cy).max())

    def bbox(self) -> tuple[float, float, float, float]:
        poly = self.polygon()
        return float(poly[:, 0].min()), float(poly[:, 1].min()), float(poly[:, 0].max()), float(poly[:, 1].max())

    def moved(self, dx: float, dy: float) -> Blob:
        return Blob(self.cx + dx, self.cy + dy, self.rx, self.ry, self.angle, self.harmonics)

    def scaled(self, factor: float) -> Blob:
        return Blob(self.cx, self.cy, self.rx * factor, self.ry * factor, self.angle, self.harmonics)


def feret_diameter(points: np.ndarray) -> float:
    """Largest pairwise distance between points (fine for the few hundred of an outline)."""
    points = np.asarray(points, dtype=float)
    if len(points) < 2:
        return 0.0
    x, y = points[:, 0], points[:, 1]
    return float(math.sqrt(((x[:, None] - x[None, :]) ** 2 + (y[:, None] - y[None, :]) ** 2).max()))


def random_blob(
    rng: np.random.Generator,
    cx: float,
    cy: float,
    size: float,
    aspect: float,
    angle: float,
    wobble: float,
    orders: tuple[int, ...] = (2, 3, 4, 5),
) -> Blob:
    """A blob whose largest dimension (Feret diameter) is exactly ``size`` pixels.

    ``aspect`` = minor / major axis before the wobble; ``wobble`` bounds the summed harmonic
    amplitudes so the outline stays star-shaped and smooth.
    """
    amps = rng.uniform(0.0, 1.0, len(orders))
    amps = amps / max(amps.sum(), 1e-9) * wobble
    harmonics = tuple((int(k), float(a), float(rng.uniform(0, 2 * math.pi))) for k, a in zip(orders, amps))
    unit = Blob(float(cx), float(cy), 1.0, float(aspect), float(angle), harmonics)
    return unit.scaled(size / unit.feret)
