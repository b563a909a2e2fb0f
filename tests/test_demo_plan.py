"""The demo cohort plan: labels, pN stages, proportions, geometry and the planned sample sheet
(no pixels; fast)."""

from __future__ import annotations

import collections
import re
import subprocess
import sys

import pytest

from hmf.config import ConfigError
from hmf.demo.camelyon17 import (
    CAMELYON17_SLIDE_COUNTS,
    CAMELYON17_STAGE_COUNTS,
    ITC_MAX_UM,
    MICRO_MAX_UM,
    size_label,
    stage_counts,
)
from hmf.demo.plan import plan_from_config, planned_sample_sheet
from hmf.tasks import CAMELYON17_PATIENT, CAMELYON17_SLIDE, pn_stage


def plans_of(kind, n_patients, seed):
    """The cohort of these keys, the others from the demo schema."""
    return plan_from_config({"kind": kind, "n_patients": n_patients, "seed": seed})


@pytest.fixture(scope="module")
def cohort():
    return plans_of("camelyon17", 25, 17)


def by_patient(plans):
    groups = collections.defaultdict(list)
    for plan in plans:
        groups[plan.patient_id].append(plan)
    return groups


def test_camelyon17_ids_and_nodes(cohort):
    assert len(cohort) == 125
    assert all(re.fullmatch(r"patient_\d{3}_node_[0-4]", p.slide_id) for p in cohort)
    groups = by_patient(cohort)
    assert len(groups) == 25
    for patient, nodes in groups.items():
        assert sorted(p.node for p in nodes) == [0, 1, 2, 3, 4]
        assert all(p.slide_id == f"{patient}_node_{p.node}" for p in nodes)


def test_patient_stages_follow_the_pn_rule(cohort):
    for patient, nodes in by_patient(cohort).items():
        stages = {p.patient_label for p in nodes}
        assert len(stages) == 1, patient
        assert stages.pop() == pn_stage([p.slide_label for p in nodes]), patient


@pytest.mark.parametrize("seed", [17, 1, 2])
def test_proportions_close_to_camelyon17(seed):
    plans = plans_of("camelyon17", 25, seed)
    stages = collections.Counter(nodes[0].patient_label for nodes in by_patient(plans).values())
    assert min(stages[s] for s in CAMELYON17_PATIENT) >= 3  # every stage can reach 3 of 5 folds
    for stage, count in CAMELYON17_STAGE_COUNTS.items():
        assert abs(stages[stage] / 25 - count / 100) <= 0.07, (stage, stages)
    slides = collections.Counter(p.slide_label for p in plans)
    total = sum(CAMELYON17_SLIDE_COUNTS.values())
    for label, count in CAMELYON17_SLIDE_COUNTS.items():
        assert abs(slides[label] / len(plans) - count / total) <= 0.03, (label, slides)
    # every slide class in at least 3 patients, so 5-fold training parts all hold it
    for label in CAMELYON17_SLIDE:
        assert len({p.patient_id for p in plans if p.slide_label == label}) >= 3, label


def test_stage_counts():
    assert stage_counts(100) == CAMELYON17_STAGE_COUNTS
    for n in (15, 25, 40, 63):
        counts = stage_counts(n)
        assert sum(counts.values()) == n and min(counts.values()) >= 3
    assert sum(stage_counts(4).values()) == 4


def test_deposit_sizes_give_the_label_with_margin(cohort):
    for plan in cohort:
        largest = plan.largest_deposit_um
        assert size_label(largest) == plan.slide_label, plan.slide_id
        if plan.slide_label == "itc":
            assert 40 <= largest <= ITC_MAX_UM * 0.8
        elif plan.slide_label == "micro":
            assert ITC_MAX_UM * 1.5 <= largest <= MICRO_MAX_UM * 0.9
        elif plan.slide_label == "macro":
            assert largest >= MICRO_MAX_UM * 1.15
        for deposit in plan.deposits:
            assert deposit.label == size_label(deposit.size_um)
            assert plan.tissue[0].contains(deposit.blob), plan.slide_id
            # the recorded size is the largest dimension at the slide's resolution
            assert deposit.size_um == pytest.approx(deposit.blob.feret * plan.mpp)


def test_geometry_stays_small(cohort):
    mpps = [p.mpp for p in cohort]
    assert 2.5 * 0.9 <= min(mpps) and max(mpps) <= 2.5 * 1.1 and len(set(mpps)) > 100
    for plan in cohort:
        assert plan.width % 16 == 0 and plan.height % 16 == 0
        assert plan.width * plan.height <= 2600 * 2000
        patches = plan.tissue_area_mm2 / (256 * plan.mpp / 1000) ** 2
        assert 12 <= patches <= 35, (plan.slide_id, patches)


def test_same_seed_same_plan_other_seed_other_plan(cohort):
    assert plans_of("camelyon17", 25, 17) == cohort
    other = plans_of("camelyon17", 25, 18)
    assert [p.slide_label for p in other] != [p.slide_label for p in cohort]
    assert [p.mpp for p in other] != [p.mpp for p in cohort]


def test_tcga_cohort():
    plans = plans_of("tcga", 16, 17)
    patients = {p.patient_id: p.patient_label for p in plans}
    assert len(patients) == 16
    assert collections.Counter(patients.values()) == {"IDC": 8, "ILC": 8}
    counts = collections.Counter(p.patient_id for p in plans)
    assert set(counts.values()) <= {1, 2, 3} and len(set(counts.values())) > 1
    for plan in plans:
        assert re.fullmatch(r"TCGA-[A-Z0-9]{2}-[A-Z0-9]{4}-01Z-00-DX[123]", plan.slide_id)
        assert plan.slide_id[:12] == plan.patient_id
        assert plan.slide_label == plan.patient_label
        if plan.patient_label == "IDC":  # cohesive nests, no single cells
            assert len(plan.deposits) >= 3 and not plan.cells
            assert all(250 <= d.size_um <= 750 for d in plan.deposits)
        else:  # discohesive cells in strands, no nests
            assert not plan.deposits and sum(len(c.points) for c in plan.cells) > 300


def test_planned_sample_sheet(tmp_path):
    sheet = planned_sample_sheet(
        {
            "enabled": True,
            "kind": "camelyon17",
            "n_patients": 25,
            "seed": 17,
            "base_mpp": None,
            "slide_dir": str(tmp_path),
        }
    )
    assert list(sheet.columns) == ["slide_id", "patient_id", "path", "slide_label", "patient_label", "node", "mpp"]
    assert len(sheet) == 125 and sheet["slide_id"].is_monotonic_increasing
    assert sheet["path"].iloc[0] == str(tmp_path / "patient_000_node_0.tif")
    assert str(sheet["node"].dtype) == "Int64" and sheet["mpp"].between(2.25, 2.75).all()
    tcga = planned_sample_sheet({"kind": "tcga", "n_patients": 6, "seed": 3, "slide_dir": "slides"})
    assert (tcga["slide_label"] == "").all() and tcga["node"].isna().all()
    assert set(tcga["patient_label"]) == {"IDC", "ILC"}
    assert (tcga["patient_id"] == tcga["slide_id"].str[:12]).all()


@pytest.mark.parametrize(
    "cfg, key",
    [
        ({"kind": "camelyon16", "n_patients": 5, "seed": 1}, "demo.kind"),
        ({"kind": "camelyon17", "n_patients": 0, "seed": 1}, "demo.n_patients"),
        ({"kind": "camelyon17", "n_patients": 5, "seed": "x"}, "demo.seed"),
        ({"kind": "camelyon17", "n_patients": 5, "seed": 1, "base_mpp": -1}, "demo.base_mpp"),
        ({"kind": "camelyon17", "n_patients": 5, "seed": 1, "patients": 5}, "patients"),
        ({"kind": "camelyon17", "n_patients": 1001, "seed": 1}, "demo.n_patients"),
        ({"kind": "camelyon17", "n_patients": 5, "seed": 1, "mpp_jitter": 0.5}, "demo.mpp_jitter"),
    ],
)
def test_bad_config_names_the_key(cfg, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        planned_sample_sheet({**cfg, "slide_dir": "slides"})
    with pytest.raises(ConfigError, match="slide_dir"):
        planned_sample_sheet({"kind": "camelyon17", "n_patients": 5, "seed": 1})


def test_missing_keys_take_the_schema_defaults():
    """The demo schema is the one source of defaults: n_patients 25, seed 17, mpp_jitter 0.1."""
    assert plan_from_config({"kind": "camelyon17", "seed": 17}) == plans_of("camelyon17", 25, 17)
    assert plan_from_config({}) == plan_from_config({"kind": "camelyon17", "n_patients": 25, "seed": 17})


def test_planning_imports_no_pixel_or_deep_learning_libraries():
    code = (
        "import sys, hmf.demo.plan as p; p.planned_sample_sheet({'kind': 'camelyon17', 'n_patients': 5, "
        "'seed': 1, 'slide_dir': 's'}); print(sorted({'torch', 'cv2', 'openslide', 'tifffile'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
