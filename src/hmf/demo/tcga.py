"""The demo's TCGA slides: breast-cancer subtyping, ``n_patients`` patients with 1-3
diagnostic slides named by TCGA barcode; IDC slides carry cohesive solid tumour nests, ILC
slides discohesive single cells in single-file strands and small loose clusters."""

from __future__ import annotations

import math

import numpy as np

from hmf.demo.geometry import Blob
from hmf.demo.slide_plan import CellChain, Deposit, SlidePlan, area_mm2, place, seeded_rng, tissue_section

BASE_MPP = 1.0  # um/px at level 0 before the per-slide jitter
# Tissue section (um): major and minor axis ranges.
TCGA_MAJOR_UM = (1800.0, 2400.0)
TCGA_MINOR_UM = (1300.0, 1800.0)

TCGA_CLASSES = ("IDC", "ILC")
# Tissue source sites of TCGA-BRCA (first barcode field after TCGA).
TCGA_SITES = ("A2", "A7", "A8", "AN", "AO", "AR", "B6", "BH", "C8", "D8", "E2", "E9", "GM", "OL")
BARCODE_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _cell_chains(rng: np.random.Generator, host: Blob, mpp: float, tissue_mm2: float) -> list[CellChain]:
    """ILC pattern: single-file strands running roughly along one direction, plus small loose
    clusters, scattered through the stroma."""
    radius = float(rng.uniform(5.0, 6.5) / mpp)
    heading = rng.uniform(0, math.pi)
    n_strands = int(round(tissue_mm2 * rng.uniform(60.0, 90.0)))
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
    n_clusters = int(round(tissue_mm2 * rng.uniform(8.0, 14.0)))
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
    section = tissue_section(slide_id, seed, base_mpp, mpp_jitter, TCGA_MAJOR_UM, TCGA_MINOR_UM, (4, 9), (80.0, 350.0))
    rng, mpp, outline = section.rng, section.mpp, section.outline
    deposits: list[Deposit] = []
    cells: list[CellChain] = []
    if label == "IDC":
        placed: list[Blob] = []
        wanted = int(rng.integers(4, 8))
        for _ in range(3 * wanted):
            nest = place(
                rng, outline, rng.uniform(250.0, 750.0) / mpp, placed, 0.05, (0.5, 0.9), 0.2, 40.0 / mpp, tries=80
            )
            if nest is not None:
                placed.append(nest)
                deposits.append(Deposit(nest, nest.feret * mpp, "nest"))
            if len(placed) == wanted:
                break
    else:
        cells = _cell_chains(rng, outline, mpp, area_mm2([outline], section.holes, mpp))
    return section.plan("tcga", slide_id, patient_id, None, label, label, deposits, cells)


def _tcga_patients(n_patients: int, seed: int) -> list[tuple[str, str, int]]:
    """(barcode patient id, class, number of slides) per patient."""
    rng = seeded_rng(seed, "tcga-patients")
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


def plan_slides(n_patients: int, seed: int, base_mpp: float, mpp_jitter: float) -> list[SlidePlan]:
    """Each patient's diagnostic slides ``<patient>-01Z-00-DX<k>``, patient by patient."""
    plans = []
    for patient, label, n_slides in _tcga_patients(n_patients, seed):
        for k in range(1, n_slides + 1):
            plans.append(plan_tcga_slide(f"{patient}-01Z-00-DX{k}", patient, label, seed, base_mpp, mpp_jitter))
    return plans
