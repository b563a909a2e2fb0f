"""The demo cohort plan: which slides exist, their labels, resolution and tumour geometry.

Pure numbers from the seed (numpy and pandas only, no pixels, no torch) so the workflow can
build the sample sheet while it parses the Snakefile; each slide job re-plans and renders
its own slide from the same numbers.

Kinds:

- ``camelyon17``: ``n_patients`` x 5 lymph-node sections ``patient_XXX_node_Y``. Patient pN
  stages are drawn first in CAMELYON17's training proportions (24/11/21/30/14 of 100; at
  least 3 patients per stage when there are 15 or more patients), then node labels
  consistent with the stage; of many such draws the one whose slide labels come closest to
  CAMELYON17's 318/36/59/87 (negative/itc/micro/macro of 500) is kept. The label of a slide
  follows the largest dimension of its largest deposit (ITC <= 0.2 mm < micro <= 2 mm <
  macro); generated sizes stay well inside those bounds.
- ``tcga``: breast-cancer subtyping, ``n_patients`` patients with 1-3 diagnostic slides
  named by TCGA barcode; IDC slides carry cohesive solid tumour nests, ILC slides
  discohesive single cells in single-file strands and small loose clusters.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hmf.demo.geometry import Blob, random_blob
from hmf.tasks import CAMELYON17_PATIENT, CAMELYON17_SLIDE, pn_stage

KINDS = ("camelyon17", "tcga")
BASE_MPP = {"camelyon17": 2.5, "tcga": 1.0}  # um/px at level 0 before the per-slide jitter
NODES_PER_PATIENT = 5

# CAMELYON17 training set (Bandi et al. 2019).
CAMELYON17_STAGE_COUNTS = dict(zip(CAMELYON17_PATIENT, (24, 11, 21, 30, 14)))
CAMELYON17_SLIDE_COUNTS = dict(zip(CAMELYON17_SLIDE, (318, 36, 59, 87)))

# TNM size classes by the largest dimension of the largest deposit, in um.
ITC_MAX_UM = 200.0
MICRO_MAX_UM = 2000.0
# Generated sizes (um), clear of the class bounds above.
DEPOSIT_SIZE_UM = {"itc": (60.0, 150.0), "micro": (350.0, 1700.0), "macro": (2400.0, 3000.0)}
SATELLITE_SIZE_UM = {"itc": (30.0, 120.0), "micro": (300.0, 700.0)}

# Lymph-node section (um): major and minor axis ranges, blank margin around the tissue.
NODE_MAJOR_UM = (3800.0, 4600.0)
NODE_MINOR_UM = (2600.0, 3200.0)
TCGA_MAJOR_UM = (1800.0, 2400.0)
TCGA_MINOR_UM = (1300.0, 1800.0)
MARGIN_UM = 300.0

TCGA_CLASSES = ("IDC", "ILC")
# Tissue source sites of TCGA-BRCA (first barcode field after TCGA).
TCGA_SITES = ("A2", "A7", "A8", "AN", "AO", "AR", "B6", "BH", "C8", "D8", "E2", "E9", "GM", "OL")
BARCODE_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class DemoConfigError(ValueError):
    """A ``demo:`` configuration that cannot be planned, with the key and the cause."""


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
        return _area_mm2(self.tissue, self.holes, self.mpp)


def _area_mm2(tissue, holes, mpp: float) -> float:
    def area(blob: Blob) -> float:
        poly = blob.polygon()
        x, y = poly[:, 0], poly[:, 1]
        return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))

    return (sum(area(b) for b in tissue) - sum(area(b) for b in holes)) * (mpp / 1000.0) ** 2


def size_label(size_um: float) -> str:
    """CAMELYON17 slide label from the largest deposit's largest dimension (0 = none)."""
    if size_um <= 0:
        return "negative"
    if size_um <= ITC_MAX_UM:
        return "itc"
    if size_um <= MICRO_MAX_UM:
        return "micro"
    return "macro"


def _rng(seed: int, *keys: int | str) -> np.random.Generator:
    words = [int(seed)] + [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in keys]
    return np.random.default_rng(words)


# --------------------------------------------------------------------------- labels


def stage_counts(n_patients: int) -> dict[str, int]:
    """Patients per pN stage: CAMELYON17's proportions by largest remainder, with at least
    3 per stage (fewer when there are under 15 patients) so every stage reaches each fold."""
    total = sum(CAMELYON17_STAGE_COUNTS.values())
    ideal = np.array([CAMELYON17_STAGE_COUNTS[s] * n_patients / total for s in CAMELYON17_PATIENT])
    counts = np.floor(ideal).astype(int)
    for i in np.argsort(-(ideal - counts), kind="stable")[: n_patients - counts.sum()]:
        counts[i] += 1
    minimum = min(3, n_patients // len(CAMELYON17_PATIENT))
    while (counts < minimum).any():
        low = int(np.argmin(counts))
        donors = np.where(counts > minimum, counts - ideal, -np.inf)
        counts[low] += 1
        counts[int(np.argmax(donors))] -= 1
    return dict(zip(CAMELYON17_PATIENT, counts.tolist()))


def _node_labels(stage: str, rng: np.random.Generator) -> list[str]:
    """Five node labels whose pN stage is ``stage`` (node order shuffled)."""

    def pick(options: dict[int, float]) -> int:
        keys = list(options)
        return int(rng.choice(keys, p=np.array(list(options.values())) / sum(options.values())))

    macro = micro = itc = 0
    if stage == "pN0(i+)":
        itc = pick({1: 0.7, 2: 0.3})
    elif stage == "pN1mi":
        micro = pick({1: 0.6, 2: 0.3, 3: 0.1})
        itc = pick({0: 0.7, 1: 0.3})
    elif stage == "pN1":
        macro = pick({1: 0.65, 2: 0.35})
        micro = min(pick({0: 0.5, 1: 0.4, 2: 0.1}), 3 - macro)
        itc = pick({0: 0.8, 1: 0.2})
    elif stage == "pN2":
        pos = pick({4: 0.6, 5: 0.4})
        macro = int(rng.integers(2, pos + 1))
        micro = pos - macro
        itc = pick({0: 0.8, 1: 0.2}) if pos < 5 else 0
    labels = ["macro"] * macro + ["micro"] * micro + ["itc"] * itc
    labels += ["negative"] * (NODES_PER_PATIENT - len(labels))
    rng.shuffle(labels)
    assert pn_stage(labels) == stage, (stage, labels)
    return labels


def camelyon17_labels(n_patients: int, seed: int, draws: int = 64) -> list[tuple[str, list[str]]]:
    """(patient stage, five node labels) per patient."""
    counts = stage_counts(n_patients)
    rng = _rng(seed, "stages")
    stages = [s for s in CAMELYON17_PATIENT for _ in range(counts[s])]
    rng.shuffle(stages)
    total = sum(CAMELYON17_SLIDE_COUNTS.values())
    target = np.array([CAMELYON17_SLIDE_COUNTS[c] / total for c in CAMELYON17_SLIDE])
    best, best_score = None, math.inf
    for draw in range(draws):
        sub = _rng(seed, "nodes", draw)
        cohort = [_node_labels(stage, sub) for stage in stages]
        flat = [label for nodes in cohort for label in nodes]
        share = np.array([flat.count(c) for c in CAMELYON17_SLIDE]) / len(flat)
        score = float(np.abs(share - target).sum())
        if score < best_score:
            best, best_score = cohort, score
    return list(zip(stages, best))


# --------------------------------------------------------------------------- geometry


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


def _place(
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
        hole = _place(rng, host, size, holes, 0.12, (0.45, 0.95), 0.12, 4.0, spread=0.85, tries=50)
        if hole is not None:
            holes.append(hole)
    return holes


def _tissue_outline(rng: np.random.Generator, major_um, minor_um, mpp: float) -> Blob:
    major, minor = rng.uniform(*major_um) / mpp, rng.uniform(*minor_um) / mpp
    return random_blob(rng, 0.0, 0.0, major, minor / major, rng.uniform(-0.25, 0.25), 0.06)


def plan_lymph_node(
    slide_id: str,
    patient_id: str,
    node: int,
    slide_label: str,
    patient_label: str,
    seed: int,
    base_mpp: float,
    mpp_jitter: float,
) -> SlidePlan:
    rng = _rng(seed, slide_id)
    mpp = _slide_mpp(rng, base_mpp, mpp_jitter)
    margin = MARGIN_UM / mpp
    outline = _tissue_outline(rng, NODE_MAJOR_UM, NODE_MINOR_UM, mpp)
    (outline,), width, height, _, _ = _frame([outline], margin)
    holes = _holes(rng, outline, mpp, (3, 7), (100.0, 450.0))

    deposits: list[Deposit] = []
    if slide_label != "negative":
        main_size = rng.uniform(*DEPOSIT_SIZE_UM[slide_label])
        wobble = 0.1 if slide_label == "itc" else 0.16
        for _retry in range(20):  # a deposit too large for this node is retried a little smaller
            blob = _place(rng, outline, main_size / mpp, [], 0.04, (0.5, 0.8), wobble, 0.0)
            if blob is not None:
                break
            main_size = max(DEPOSIT_SIZE_UM[slide_label][0], main_size * 0.97)
        else:
            raise AssertionError(f"{slide_id}: no room for a {main_size:.0f} um deposit in the node")
        deposits.append(Deposit(blob, blob.feret * mpp, slide_label))
        # Smaller satellite deposits of lower classes; they never change the slide label.
        satellites = {
            "itc": ["itc"] * int(rng.integers(0, 3)),
            "micro": ["itc"] * int(rng.integers(0, 3)),
            "macro": ["micro"] * int(rng.integers(0, 2)) + ["itc"] * int(rng.integers(0, 2)),
        }[slide_label]
        for label in satellites:
            size = rng.uniform(*SATELLITE_SIZE_UM[label]) / mpp
            placed = [d.blob for d in deposits]
            sat = _place(rng, outline, size, placed, 0.04, (0.5, 0.9), 0.1, 60.0 / mpp, spread=0.9, tries=60)
            if sat is not None:
                deposits.append(Deposit(sat, sat.feret * mpp, label))
    plan = SlidePlan(
        "camelyon17",
        slide_id,
        patient_id,
        node,
        slide_label,
        patient_label,
        mpp,
        width,
        height,
        int(rng.integers(0, 2**31 - 1)),
        (outline,),
        tuple(holes),
        tuple(deposits),
    )
    if size_label(plan.largest_deposit_um) != slide_label:
        raise AssertionError(
            f"{slide_id}: planned deposit {plan.largest_deposit_um:.0f} um does not match {slide_label}"
        )
    return plan


def _cell_chains(rng: np.random.Generator, host: Blob, mpp: float, area_mm2: float) -> list[CellChain]:
    """ILC pattern: single-file strands running roughly along one direction, plus small loose
    clusters, scattered through the stroma."""
    radius = float(rng.uniform(5.0, 6.5) / mpp)
    heading = rng.uniform(0, math.pi)
    n_strands = int(round(area_mm2 * rng.uniform(60.0, 90.0)))
    # Start points inside the tissue (drawn in the bounding square, kept when deep enough).
    candidates = np.stack(
        [
            host.cx + rng.uniform(-host.rx, host.rx, 8 * n_strands),
            host.cy + rng.uniform(-host.rx, host.rx, 8 * n_strands),
        ],
        axis=1,
    )
    starts = candidates[host.depth(candidates) > 0.08][:n_strands]
    chains: list[CellChain] = []
    for start in starts:
        n_cells = int(rng.integers(5, 15))
        direction = heading + rng.normal(0, 0.35) + np.cumsum(rng.normal(0, 0.15, n_cells))
        steps = rng.uniform(2.2, 2.9, n_cells) * radius
        walk = start + np.cumsum(np.stack([steps * np.cos(direction), steps * np.sin(direction)], axis=1), axis=0)
        points = np.vstack([start[None], walk])
        outside = np.nonzero(host.depth(points) < 0.05)[0]
        points = points[: outside[0]] if len(outside) else points  # a strand stops at the tissue edge
        chains.append(CellChain(tuple((float(x), float(y)) for x, y in points), radius))
    n_clusters = int(round(area_mm2 * rng.uniform(8.0, 14.0)))
    centres = np.stack(
        [
            host.cx + rng.uniform(-0.7, 0.7, n_clusters) * host.rx,
            host.cy + rng.uniform(-0.7, 0.7, n_clusters) * host.ry,
        ],
        axis=1,
    )
    for centre in centres[host.depth(centres) >= 0.1]:
        offsets = rng.normal(0, 2.2 * radius, (int(rng.integers(3, 7)), 2))
        chains.append(CellChain(tuple((float(x), float(y)) for x, y in centre + offsets), radius))
    return chains


def plan_tcga_slide(
    slide_id: str, patient_id: str, label: str, seed: int, base_mpp: float, mpp_jitter: float
) -> SlidePlan:
    rng = _rng(seed, slide_id)
    mpp = _slide_mpp(rng, base_mpp, mpp_jitter)
    outline = _tissue_outline(rng, TCGA_MAJOR_UM, TCGA_MINOR_UM, mpp)
    (outline,), width, height, _, _ = _frame([outline], MARGIN_UM / mpp)
    holes = _holes(rng, outline, mpp, (4, 9), (80.0, 350.0))
    deposits: list[Deposit] = []
    cells: list[CellChain] = []
    if label == "IDC":
        placed: list[Blob] = []
        wanted = int(rng.integers(4, 8))
        for _ in range(3 * wanted):
            nest = _place(
                rng, outline, rng.uniform(250.0, 750.0) / mpp, placed, 0.05, (0.5, 0.9), 0.2, 40.0 / mpp, tries=80
            )
            if nest is not None:
                placed.append(nest)
                deposits.append(Deposit(nest, nest.feret * mpp, "nest"))
            if len(placed) == wanted:
                break
    else:
        cells = _cell_chains(rng, outline, mpp, _area_mm2([outline], holes, mpp))
    return SlidePlan(
        "tcga",
        slide_id,
        patient_id,
        None,
        label,
        label,
        mpp,
        width,
        height,
        int(rng.integers(0, 2**31 - 1)),
        (outline,),
        tuple(holes),
        tuple(deposits),
        tuple(cells),
    )


# --------------------------------------------------------------------------- cohorts


def _tcga_patients(n_patients: int, seed: int) -> list[tuple[str, str, int]]:
    """(barcode patient id, class, number of slides) per patient."""
    rng = _rng(seed, "tcga-patients")
    labels = [TCGA_CLASSES[i % 2] for i in range(n_patients)]
    rng.shuffle(labels)
    patients, seen = [], set()
    for label in labels:
        while True:
            site = TCGA_SITES[int(rng.integers(len(TCGA_SITES)))]
            participant = "A" + "".join(BARCODE_CHARS[int(i)] for i in rng.integers(0, 36, 3))
            patient = f"TCGA-{site}-{participant}"
            if patient not in seen:
                seen.add(patient)
                break
        patients.append((patient, label, int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))))
    return sorted(patients)


def plan_cohort(
    kind: str, n_patients: int, seed: int, base_mpp: float | None = None, mpp_jitter: float = 0.1
) -> list[SlidePlan]:
    """Every slide of the demo cohort, sorted by slide id. ``base_mpp`` (um/px at level 0)
    defaults per kind (camelyon17 2.5, tcga 1.0); each slide's mpp is drawn within
    ``base_mpp * (1 +- mpp_jitter)``."""
    if kind not in KINDS:
        raise DemoConfigError(f"demo.kind: unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    if not isinstance(n_patients, (int, np.integer)) or isinstance(n_patients, bool) or n_patients < 1:
        raise DemoConfigError(f"demo.n_patients: expected a whole number >= 1, got {n_patients!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise DemoConfigError(f"demo.seed: expected a whole number, got {seed!r}")
    if kind == "camelyon17" and n_patients > 1000:
        raise DemoConfigError(
            f"demo.n_patients: at most 1000 for kind camelyon17 (ids patient_000..999), got {n_patients}"
        )
    base_mpp = BASE_MPP[kind] if base_mpp is None else float(base_mpp)
    if not base_mpp > 0:
        raise DemoConfigError(f"demo.base_mpp: expected a positive number of um/px, got {base_mpp!r}")
    if not 0 <= mpp_jitter < 0.5:
        raise DemoConfigError(f"demo.mpp_jitter: expected a fraction in [0, 0.5), got {mpp_jitter!r}")

    plans: list[SlidePlan] = []
    if kind == "camelyon17":
        for p, (stage, nodes) in enumerate(camelyon17_labels(n_patients, seed)):
            patient = f"patient_{p:03d}"
            for node, label in enumerate(nodes):
                plans.append(
                    plan_lymph_node(f"{patient}_node_{node}", patient, node, label, stage, seed, base_mpp, mpp_jitter)
                )
    else:
        for patient, label, n_slides in _tcga_patients(n_patients, seed):
            for k in range(1, n_slides + 1):
                plans.append(plan_tcga_slide(f"{patient}-01Z-00-DX{k}", patient, label, seed, base_mpp, mpp_jitter))
    return sorted(plans, key=lambda plan: plan.slide_id)


PLAN_KEYS = ("kind", "n_patients", "seed", "base_mpp", "mpp_jitter")
SHEET_COLUMNS = ["slide_id", "patient_id", "path", "slide_label", "patient_label", "node", "mpp"]


def plan_from_config(demo_cfg: dict) -> list[SlidePlan]:
    """:func:`plan_cohort` from the ``demo:`` config section (``enabled`` and ``slide_dir``
    are ignored; any other unknown key is an error)."""
    unknown = set(demo_cfg) - set(PLAN_KEYS) - {"enabled", "slide_dir"}
    if unknown:
        raise DemoConfigError(f"demo: unknown key(s) {sorted(unknown)}; allowed: {', '.join(PLAN_KEYS)}, enabled")
    for key in ("kind", "n_patients", "seed"):
        if key not in demo_cfg:
            raise DemoConfigError(f"demo.{key} is required")
    return plan_cohort(**{k: demo_cfg[k] for k in PLAN_KEYS if k in demo_cfg and demo_cfg[k] is not None})


def find_slide(plans: list[SlidePlan], slide_id: str) -> SlidePlan:
    for plan in plans:
        if plan.slide_id == slide_id:
            return plan
    raise KeyError(f"slide {slide_id!r} is not part of the demo cohort ({len(plans)} slides)")


def planned_sample_sheet(demo_cfg: dict) -> pd.DataFrame:
    """The sample sheet the demo's label file and slide folder will yield, before any pixel
    exists: ``slide_id, patient_id, path, slide_label, patient_label, node, mpp`` with
    ``path = <slide_dir>/<slide_id>.tif``. As with the real loaders, tcga slides have an
    empty ``slide_label`` and no ``node``; unlike them, ``mpp`` is filled in."""
    if not demo_cfg.get("slide_dir"):
        raise DemoConfigError("demo: slide_dir is required (pass dataset.slide_dir)")
    slide_dir = Path(demo_cfg["slide_dir"])
    rows = [
        {
            "slide_id": p.slide_id,
            "patient_id": p.patient_id,
            "path": str(slide_dir / f"{p.slide_id}.tif"),
            "slide_label": p.slide_label if p.kind == "camelyon17" else "",
            "patient_label": p.patient_label,
            "node": p.node,
            "mpp": p.mpp,
        }
        for p in plan_from_config(demo_cfg)
    ]
    frame = pd.DataFrame(rows, columns=SHEET_COLUMNS)
    frame["node"] = pd.array(frame["node"].tolist(), dtype="Int64")
    frame["mpp"] = frame["mpp"].astype(float)
    return frame
