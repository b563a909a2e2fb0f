"""The demo's CAMELYON17 lymph-node slides: ``n_patients`` x 5 sections ``patient_XXX_node_Y``.

Patient pN stages are drawn first in CAMELYON17's training proportions (24/11/21/30/14 of
100; at least 3 patients per stage when there are 15 or more patients), then node labels
consistent with the stage; of many such draws the one whose slide labels come closest to
CAMELYON17's 318/36/59/87 (negative/itc/micro/macro of 500) is kept. The label of a slide
follows the largest dimension of its largest deposit (ITC <= 0.2 mm < micro <= 2 mm <
macro); generated sizes stay well inside those bounds.
"""

from __future__ import annotations

import math

import numpy as np

from hmf.demo.slide_plan import Deposit, SlidePlan, place, seeded_rng, tissue_section
from hmf.tasks import CAMELYON17_PATIENT, CAMELYON17_SLIDE, pn_stage

BASE_MPP = 2.5  # um/px at level 0 before the per-slide jitter
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

# Lymph-node section (um): major and minor axis ranges.
NODE_MAJOR_UM = (3800.0, 4600.0)
NODE_MINOR_UM = (2600.0, 3200.0)


def size_label(size_um: float) -> str:
    """CAMELYON17 slide label from the largest deposit's largest dimension (0 = none)."""
    if size_um <= 0:
        return "negative"
    if size_um <= ITC_MAX_UM:
        return "itc"
    if size_um <= MICRO_MAX_UM:
        return "micro"
    return "macro"


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
    rng = seeded_rng(seed, "stages")
    stages = [s for s in CAMELYON17_PATIENT for _ in range(counts[s])]
    rng.shuffle(stages)
    total = sum(CAMELYON17_SLIDE_COUNTS.values())
    target = np.array([CAMELYON17_SLIDE_COUNTS[c] / total for c in CAMELYON17_SLIDE])
    best, best_score = None, math.inf
    for draw in range(draws):
        sub = seeded_rng(seed, "nodes", draw)
        cohort = [_node_labels(stage, sub) for stage in stages]
        flat = [label for nodes in cohort for label in nodes]
        share = np.array([flat.count(c) for c in CAMELYON17_SLIDE]) / len(flat)
        score = float(np.abs(share - target).sum())
        if score < best_score:
            best, best_score = cohort, score
    return list(zip(stages, best))


# --------------------------------------------------------------------------- geometry


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
    section = tissue_section(slide_id, seed, base_mpp, mpp_jitter, NODE_MAJOR_UM, NODE_MINOR_UM, (3, 7), (100.0, 450.0))
    rng, mpp, outline = section.rng, section.mpp, section.outline

    deposits: list[Deposit] = []
    if slide_label != "negative":
        main_size = rng.uniform(*DEPOSIT_SIZE_UM[slide_label])
        wobble = 0.1 if slide_label == "itc" else 0.16
        for _retry in range(20):  # a deposit too large for this node is retried a little smaller
            blob = place(rng, outline, main_size / mpp, [], 0.04, (0.5, 0.8), wobble, 0.0)
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
            sat = place(rng, outline, size, placed, 0.04, (0.5, 0.9), 0.1, 60.0 / mpp, spread=0.9, tries=60)
            if sat is not None:
                deposits.append(Deposit(sat, sat.feret * mpp, label))
    plan = section.plan("camelyon17", slide_id, patient_id, node, slide_label, patient_label, deposits)
    if size_label(plan.largest_deposit_um) != slide_label:
        raise AssertionError(
            f"{slide_id}: planned deposit {plan.largest_deposit_um:.0f} um does not match {slide_label}"
        )
    return plan


def plan_slides(n_patients: int, seed: int, base_mpp: float, mpp_jitter: float) -> list[SlidePlan]:
    """Five lymph-node slides per patient, patient by patient, node by node."""
    plans = []
    for p, (stage, nodes) in enumerate(camelyon17_labels(n_patients, seed)):
        patient = f"patient_{p:03d}"
        for node, label in enumerate(nodes):
            plans.append(
                plan_lymph_node(f"{patient}_node_{node}", patient, node, label, stage, seed, base_mpp, mpp_jitter)
            )
    return plans
