"""The demo cohort plan: which slides exist, their labels, resolution and tumour geometry,
and the sample sheet they will make.

Pure numbers from the seed (numpy and pandas only, no pixels, no torch) so the workflow can
build the sample sheet while it parses the Snakefile; each slide job re-plans and renders
its own slide from the same numbers. The kinds: :mod:`hmf.demo.camelyon17` (lymph nodes,
pN stages) and :mod:`hmf.demo.tcga` (breast-cancer subtyping); one slide's plan:
:mod:`hmf.demo.slide_plan`. The ``demo:`` config section is checked and filled by its schema
(``config/schema/demo.schema.yaml``) into :class:`DemoSettings`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from hmf.config import ConfigError
from hmf.demo import camelyon17, tcga
from hmf.demo.slide_plan import SlidePlan
from hmf.settings import build, section

# Each kind of the schema's demo.kind: its module (BASE_MPP, plan_slides).
KINDS = {"camelyon17": camelyon17, "tcga": tcga}
SHEET_COLUMNS = ["slide_id", "patient_id", "path", "slide_label", "patient_label", "node", "mpp"]


@dataclass(frozen=True)
class DemoSettings:
    """The ``demo:`` config section (see its schema for the meaning and defaults of each key)."""

    enabled: bool
    kind: str
    n_patients: int
    seed: int
    base_mpp: float | None
    mpp_jitter: float


def demo_settings(demo_cfg: Mapping[str, Any] | None) -> DemoSettings:
    """The ``demo:`` section checked and filled by its schema; ConfigError naming the key."""
    return build(DemoSettings, section("demo", demo_cfg), "demo")


def plan_cohort(settings: DemoSettings) -> list[SlidePlan]:
    """Every slide of the demo cohort, sorted by slide id. A null ``base_mpp`` (um/px at level
    0) is the kind's own (camelyon17 2.5, tcga 1.0); each slide's mpp is drawn within
    ``base_mpp * (1 +- mpp_jitter)``."""
    kind = KINDS[settings.kind]
    base_mpp = kind.BASE_MPP if settings.base_mpp is None else float(settings.base_mpp)
    plans = kind.plan_slides(settings.n_patients, settings.seed, base_mpp, settings.mpp_jitter)
    return sorted(plans, key=lambda plan: plan.slide_id)


def plan_from_config(demo_cfg: Mapping[str, Any]) -> list[SlidePlan]:
    """:func:`plan_cohort` from the ``demo:`` config section."""
    return plan_cohort(demo_settings(demo_cfg))


def find_slide(plans: list[SlidePlan], slide_id: str) -> SlidePlan:
    for plan in plans:
        if plan.slide_id == slide_id:
            return plan
    raise KeyError(f"slide {slide_id!r} is not part of the demo cohort ({len(plans)} slides)")


def planned_sample_sheet(demo_cfg: Mapping[str, Any]) -> pd.DataFrame:
    """The sample sheet the demo's label file and slide folder will yield, before any pixel
    exists: ``slide_id, patient_id, path, slide_label, patient_label, node, mpp`` with
    ``path = <slide_dir>/<slide_id>.tif``, from the ``demo:`` section plus ``slide_dir``
    (dataset.slide_dir). As with the real loaders, tcga slides have an empty
    ``slide_label`` and no ``node``; unlike them, ``mpp`` is filled in."""
    demo_cfg = dict(demo_cfg)
    slide_dir = demo_cfg.pop("slide_dir", None)
    if not slide_dir:
        raise ConfigError("demo: slide_dir is required (pass dataset.slide_dir)")
    rows = [
        {
            "slide_id": p.slide_id,
            "patient_id": p.patient_id,
            "path": str(Path(slide_dir) / f"{p.slide_id}.tif"),
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
