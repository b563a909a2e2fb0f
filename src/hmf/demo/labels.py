"""Label files of the demo cohort, in the formats the real datasets ship.

- camelyon17: CAMELYON17's ``stage_labels.csv`` (``patient,stage``; a ``patient_000.zip,pN0``
  row per patient followed by its ``patient_000_node_0.tif,negative`` node rows).
- tcga: a label CSV by patient (``patient_id,label``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from hmf.atomic import write_csv
from hmf.demo.plan import demo_settings, plan_cohort
from hmf.demo.slide_plan import SlidePlan

log = logging.getLogger(__name__)


def stage_labels_table(plans: list[SlidePlan]) -> pd.DataFrame:
    rows = []
    for patient in sorted({p.patient_id for p in plans}):
        nodes = sorted((p for p in plans if p.patient_id == patient), key=lambda p: p.node)
        rows.append((f"{patient}.zip", nodes[0].patient_label))
        rows.extend((f"{p.slide_id}.tif", p.slide_label) for p in nodes)
    return pd.DataFrame(rows, columns=["patient", "stage"])


def patient_labels_table(plans: list[SlidePlan]) -> pd.DataFrame:
    labels = {}
    for plan in plans:
        labels.setdefault(plan.patient_id, plan.patient_label)
    return pd.DataFrame(sorted(labels.items()), columns=["patient_id", "label"])


def write_labels(demo_cfg: dict, path: str | Path) -> pd.DataFrame:
    """Write the label file of the cohort in ``demo_cfg`` (the ``demo:`` config section) to ``path``."""
    settings = demo_settings(demo_cfg)
    plans = plan_cohort(settings)
    table = stage_labels_table(plans) if settings.kind == "camelyon17" else patient_labels_table(plans)
    write_csv(path, table)
    log.info("%s: %d rows for %d slides (%s)", path, len(table), len(plans), settings.kind)
    return table
