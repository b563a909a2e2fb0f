"""Slide (MIL) and patient models, their losses and optimiser builders.

Entry points: ``build_slide_model``, ``build_patient_model``, ``training_defaults`` /
``DEFAULTS`` (each model's paper recipe), ``build_optimizer`` / ``build_scheduler``, and
``aggregate_slides`` (the untrained patient models: the CAMELYON17 pN rule on predicted slide
labels, the mean of slide probabilities). The model names and
what each model needs are in ``hmf.models.names``.

The entry points are imported on first use, so ``hmf.models.names`` and the recipes of
``hmf.models.registry`` are read without importing torch (the workflow reads them while it
parses the Snakefile).
"""

import importlib

_ENTRY_POINTS = {
    "Lookahead": "optim",
    "build_optimizer": "optim",
    "build_scheduler": "optim",
    "aggregate_slides": "patient_aggregators",
    "DEFAULTS": "registry",
    "PATIENT_DEFAULTS": "registry",
    "PATIENT_MODELS": "registry",
    "SLIDE_DEFAULTS": "registry",
    "SLIDE_MODELS": "registry",
    "build_patient_model": "registry",
    "build_slide_model": "registry",
    "training_defaults": "registry",
}

__all__ = sorted(_ENTRY_POINTS)


def __getattr__(name: str):
    if name not in _ENTRY_POINTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_ENTRY_POINTS[name]}"), name)
