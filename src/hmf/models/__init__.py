"""Slide (MIL) and patient models, their losses and optimiser builders.

Entry points: ``build_slide_model``, ``build_patient_model``, ``training_defaults`` /
``DEFAULTS`` (each model's paper recipe), ``build_optimizer`` / ``build_scheduler``, and
``pn_rule_predict`` (the CAMELYON17 pN rule on predicted slide labels).
"""

from hmf.models.optim import Lookahead, build_optimizer, build_scheduler
from hmf.models.patient_aggregators import pn_rule_predict, pn_rule_predict_index
from hmf.models.registry import (
    DEFAULTS,
    PATIENT_DEFAULTS,
    PATIENT_MODELS,
    SLIDE_DEFAULTS,
    SLIDE_MODELS,
    build_patient_model,
    build_slide_model,
    training_defaults,
)

__all__ = [
    "DEFAULTS",
    "PATIENT_DEFAULTS",
    "PATIENT_MODELS",
    "SLIDE_DEFAULTS",
    "SLIDE_MODELS",
    "Lookahead",
    "build_optimizer",
    "build_patient_model",
    "build_scheduler",
    "build_slide_model",
    "pn_rule_predict",
    "pn_rule_predict_index",
    "training_defaults",
]
