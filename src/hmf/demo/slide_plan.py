"""One demo slide's plan: the record both kinds fill in (tissue outline and holes, tumour
regions, um/px, the seed of the pixel-level choices) and the placement both kinds share.

Pure numbers from the seed (numpy only): every draw comes from one random stream per slide,
in a fixed order, so the same seed gives the same plan and the same slide bytes.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hmf.demo.geometry import Blob, random_blob

MARGIN_UM = 300.0  # blank margin around the tissue


@dataclass(frozen=True)
class Deposit:
    """A tumour region: ``size_um`` is its largest dimension at the slide's resolution."""

    blob: Blob
    size_um: float
    label: str  # itc | micro | macro (camelyon17) or nest (tcga IDC)


@dataclass(frozen=True)
class CellChain:
    """Discohesive tumour cells (tcga ILC): centres in level-0 pixels, one radius for all."""

    points: tuple[tuple[float, float], ...]
    radius: float


@dataclass(frozen=True)
class SlidePlan:
    kind: str
    slide_id: str
    patient_id: str
    node: int | None
    slide_label: str
    patient_label: str
    mpp: float
    width: int
    height: int
    seed: int  # for the pixel-level choices (textures, stain) made while rendering
    tissue: tuple[Blob, ...]
    holes: tuple[Blob, ...] = ()
    deposits: tuple[Deposit, ...] = ()
    cells: tuple[CellChain, ...] = ()

    @property
    def largest_deposit_um(self) -> float:
        return max((d.size_um for d in self.deposits), default=0.0)

    @property
    def tissue_area_mm2(self) -> float:
        """Approximate tissue area (outlines minus holes), for patch-count estimates."""
        return area_mm2(self.tissue, self.holes, self.mpp)


def area_mm2(tissue: Sequence[Blob], holes: Sequence[Blob], mpp: float) -> float:
    def area(blob: Blob) -> float:
        poly = blob.polygon()
        x, y = poly[:, 0], poly[:, 1]
        return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))

    return (sum(area(b) for b in tissue) - sum(area(b) for b in holes)) * (mpp / 1000.0) ** 2


def seeded_rng(seed: int, *keys: int | str) -> np.random.Generator:
    """The random stream of ``seed`` and ``keys`` (strings by their CRC32)."""
    words = [int(seed)] + [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in keys]
    return np.random.default_rng(words)


def _slide_mpp(rng: np.random.Generator, base_mpp: float, mpp_jitter: float) -> float:
    return round(float(base_mpp * rng.uniform(1.0 - mpp_jitter, 1.0 + mpp_jitter)), 4)


def _frame(tissue: list[Blob], margin_px: float, extra: list[Blob] = ()) -> tuple[list[Blob], int, int, float, float]:
    """Shift blobs so the tissue sits ``margin_px`` from the top-left; canvas size as a
    multiple of 16 so the pyramid downsamples are exact."""
    boxes = np.array([b.bbox() for b in tissue])
    x0, y0 = boxes[:, 0].min() - margin_px, boxes[:, 1].min() - margin_px
    width = int(math.ceil((boxes[:, 2].max() + margin_px - x0) / 16.0) * 16)
    height = int(math.ceil((boxes[:, 3].max() + margin_px - y0) / 16.0) * 16)
    return [b.moved(-x0, -y0) for b in tissue], width, height, -x0, -y0


def place(
    rng: np.random.Generator,
    host: Blob,
    size_px: float,
    placed: list[Blob],
    depth: float,
    aspect: tuple[float, float],
    wobble: float,
    gap_px: float,
    spread: float = 0.8,
    tries: int = 400,
) -> Blob | None:
    """A blob of largest dimension ``size_px`` inside ``host`` (``depth`` deep), ``gap_px`` clear
    of ``placed``; None when no spot is found."""
    shape = None
    for attempt in range(tries):
        # Late attempts flatten the shape and pull it towards the centre so big deposits fit.
        squeeze = 1.0 - 0.6 * attempt / tries
        if attempt % 20 == 0:  # the largest dimension survives moves and turns: rescale rarely
            shape = random_blob(rng, 0.0, 0.0, size_px, rng.uniform(*aspect) * squeeze, 0.0, wobble)
            reach = shape.reach
        t = rng.uniform(0, 2 * math.pi)
        rho = spread * squeeze * math.sqrt(rng.uniform())
        u, v = host.rx * rho * math.cos(t), host.ry * rho * math.sin(t)
        c, s = math.cos(host.angle), math.sin(host.angle)
        cx, cy = host.cx + c * u - s * v, host.cy + s * u + c * v
        if any(math.hypot(cx - o.cx, cy - o.cy) < reach + o.reach + gap_px for o in placed):
            continue
        angle = host.angle + rng.normal(0, 0.3 if size_px > host.ry else 1.5)
        blob = Blob(float(cx), float(cy), shape.rx, shape.ry, float(angle), shape.harmonics)
        if host.contains(blob, depth):
            return blob
    return None


def _holes(
    rng: np.random.Generator, host: Blob, mpp: float, count: tuple[int, int], size_um: tuple[float, float]
) -> list[Blob]:
    holes: list[Blob] = []
    for _ in range(int(rng.integers(count[0], count[1] + 1))):
        size = rng.uniform(*size_um) / mpp
        hole = place(rng, host, size, holes, 0.12, (0.45, 0.95), 0.12, 4.0, spread=0.85, tries=50)
        if hole is not None:
            holes.append(hole)
    return holes


def _tissue_outline(rng: np.random.Generator, major_um, minor_um, mpp: float) -> Blob:
    major, minor = rng.uniform(*major_um) / mpp, rng.uniform(*minor_um) / mpp
    return random_blob(rng, 0.0, 0.0, major, minor / major, rng.uniform(-0.25, 0.25), 0.06)


@dataclass(frozen=True)
class TissueSection:
    """A slide's tissue before its tumour: um/px, the framed outline, the canvas size and the
    holes, with the slide's random stream that the tumour placement goes on drawing from."""

    rng: np.random.Generator
    mpp: float
    outline: Blob
    width: int
    height: int
    holes: tuple[Blob, ...]

    def plan(
        self,
        kind: str,
        slide_id: str,
        patient_id: str,
        node: int | None,
        slide_label: str,
        patient_label: str,
        deposits: Sequence[Deposit] = (),
        cells: Sequence[CellChain] = (),
    ) -> SlidePlan:
        """The slide's plan; the seed of its pixel-level choices is the stream's last draw."""
        return SlidePlan(
            kind=kind,
            slide_id=slide_id,
            patient_id=patient_id,
            node=node,
            slide_label=slide_label,
            patient_label=patient_label,
            mpp=self.mpp,
            width=self.width,
            height=self.height,
            seed=int(self.rng.integers(0, 2**31 - 1)),
            tissue=(self.outline,),
            holes=self.holes,
            deposits=tuple(deposits),
            cells=tuple(cells),
        )


def tissue_section(
    slide_id: str,
    seed: int,
    base_mpp: float,
    mpp_jitter: float,
    major_um: tuple[float, float],
    minor_um: tuple[float, float],
    hole_count: tuple[int, int],
    hole_size_um: tuple[float, float],
) -> TissueSection:
    """The tissue of slide ``slide_id``: its um/px within ``base_mpp * (1 +- mpp_jitter)``, an
    outline with axes in the ``major_um`` / ``minor_um`` ranges, framed by ``MARGIN_UM``, and
    ``hole_count`` holes of ``hole_size_um``."""
    rng = seeded_rng(seed, slide_id)
    mpp = _slide_mpp(rng, base_mpp, mpp_jitter)
    outline = _tissue_outline(rng, major_um, minor_um, mpp)
    (outline,), width, height, _, _ = _frame([outline], MARGIN_UM / mpp)
    holes = _holes(rng, outline, mpp, hole_count, hole_size_um)
    return TissueSection(rng, mpp, outline, width, height, tuple(holes))
