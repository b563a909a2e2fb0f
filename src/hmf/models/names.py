"""The model names, per level, and what each model needs; no torch, so the workflow can ask
while it parses the Snakefile.

The config schema's ``models.slide`` / ``models.patient`` enums list the same names (a test
keeps them equal); ``hmf.models.registry`` builds the trained ones, from the class named
here and its own recipe. Slide and patient names overlap (meanpool, maxpool), so a model is
looked up by level and name:

    model_info("slide", "hmf").needs_text         # True: trains on the class-text embeddings
    model_names("patient", trained=False)         # ('pn_rule', 'mean_prob')
    model_names("slide", heatmaps=True)           # ('hmf',)
    task_refusal("patient", "pn_rule", task)      # None, or why the task does not allow it
"""

from __future__ import annotations

from dataclasses import dataclass, fields

LEVELS = ("slide", "patient")


@dataclass(frozen=True)
class ModelInfo:
    """One model: ``implementation`` is ``"<module of hmf.models>.<class>"`` of a trained
    model, None for a rule over the slide model's predictions (nothing to train)."""

    level: str
    name: str
    implementation: str | None
    needs_text: bool  # trains and predicts with the class-text embedding bank
    needs_coords: bool  # reads patch coordinates from the feature files
    heatmaps: bool  # its attention is drawn as heatmaps in the report
    # Untrained patient models: what they combine over a patient's slides of the source slide
    # model's predictions ("labels": the pN stage of the predicted slide labels; "probabilities":
    # their mean), and the hmf.tasks.Task flag they need with the refusal when it is false.
    aggregates: str | None = None
    task_needs: tuple[str, str] | None = None

    @property
    def trained(self) -> bool:
        return self.implementation is not None


def _slide(name: str, implementation: str, needs_text=False, needs_coords=False, heatmaps=False) -> ModelInfo:
    return ModelInfo("slide", name, implementation, needs_text, needs_coords, heatmaps)


def _patient(name: str, implementation: str | None, aggregates=None, task_needs=None) -> ModelInfo:
    return ModelInfo("patient", name, implementation, False, False, False, aggregates, task_needs)


_MODELS = (
    _slide("hmf", "hmf_slide.HMFSlide", needs_text=True, heatmaps=True),
    _slide("meanpool", "pooling.PoolingMIL"),
    _slide("maxpool", "pooling.PoolingMIL"),
    _slide("abmil", "abmil.ABMIL"),
    _slide("gatmil", "gatmil.GATMIL", needs_coords=True),
    _slide("dsmil", "dsmil.DSMIL"),
    _slide("transmil", "transmil.TransMIL"),
    _slide("dtfd_maxs", "dtfd.DTFDMIL"),
    _slide("dtfd_maxmins", "dtfd.DTFDMIL"),
    _slide("dtfd_afs", "dtfd.DTFDMIL"),
    _slide("acmil", "acmil.ACMIL"),
    _patient("hmf_patient", "hmf_patient.HMFPatient"),
    *(_patient(f"{pool}pool", "patient_aggregators.PoolingPatient") for pool in ("mean", "max", "sum", "min", "attn")),
    # Untrained: the CAMELYON17 pN rule on predicted slide labels, the mean of slide probabilities.
    _patient("pn_rule", None, "labels", ("pn_rule", "applies to CAMELYON17 only, not task {task}")),
    _patient(
        "mean_prob",
        None,
        "probabilities",
        (
            "slides_inherit_patient_label",
            "averages slide probabilities over a patient's slides, which needs slide and patient "
            "classes to be the same; task {task} has different ones",
        ),
    ),
)
MODELS: dict[str, dict[str, ModelInfo]] = {level: {m.name: m for m in _MODELS if m.level == level} for level in LEVELS}
_PROPERTIES = frozenset(f.name for f in fields(ModelInfo)) - {"level", "name", "implementation", "task_needs"} | {
    "trained"
}


def _of_level(level: str) -> dict[str, ModelInfo]:
    if level not in MODELS:
        raise ValueError(f"unknown level {level!r}: expected one of {', '.join(LEVELS)}")
    return MODELS[level]


def model_info(level: str, name: str) -> ModelInfo:
    """The model ``name`` of ``level`` ('slide' or 'patient'); ValueError naming the choices."""
    models = _of_level(level)
    if name not in models:
        raise ValueError(f"unknown {level} model {name!r}: choose one of {', '.join(models)}")
    return models[name]


def model_names(level: str, **properties: bool) -> tuple[str, ...]:
    """The names of ``level``, in the schema's order, with each given property equal to its
    value, e.g. ``model_names("patient", trained=True)``."""
    unknown = set(properties) - _PROPERTIES
    if unknown:
        raise ValueError(f"unknown model properties {sorted(unknown)}: choose from {sorted(_PROPERTIES)}")
    return tuple(
        name
        for name, info in _of_level(level).items()
        if all(getattr(info, key) == value for key, value in properties.items())
    )


def task_refusal(level: str, name: str, task) -> str | None:
    """Why the model ``name`` of ``level`` cannot run on ``task`` (an ``hmf.tasks.Task``),
    naming the model and the task; None when it can."""
    needs = model_info(level, name).task_needs
    if needs is None or getattr(task, needs[0]):
        return None
    return f"{name} " + needs[1].format(task=task.name)
