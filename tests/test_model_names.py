"""hmf.models.names: the one list of model names, equal to the schema's enums and to what the
registry builds. (That names and recipes are read without torch: test_config.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from hmf.config import load_schema
from hmf.models.names import LEVELS, MODELS, model_info, model_names, task_refusal
from hmf.tasks import TASKS

SCHEMA = Path(__file__).resolve().parents[1] / "config" / "schema" / "config.schema.yaml"


@pytest.mark.parametrize("level", LEVELS)
def test_schema_enums_are_the_names(level):
    enum = load_schema(SCHEMA)["properties"]["models"]["properties"][level]["items"]["enum"]
    assert enum == list(model_names(level))


def test_registry_builds_the_trained_models_and_only_those():
    from hmf.models import registry

    for level in LEVELS:
        assert tuple(registry.DEFAULTS[level]) == model_names(level, trained=True)
        for name in model_names(level, trained=True):
            cls = registry.model_class(level, name)
            assert f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}" == model_info(level, name).implementation
    assert registry.SLIDE_MODELS == model_names("slide")
    assert registry.PATIENT_MODELS == model_names("patient", trained=True)
    for name in model_names("patient", trained=False):
        with pytest.raises(ValueError, match=f"unknown patient model '{name}'"):
            registry.build_patient_model(name, 8, 2)


def test_properties():
    assert model_names("patient", trained=False) == ("pn_rule", "mean_prob")
    assert model_names("slide", needs_text=True) == ("hmf",) == model_names("slide", heatmaps=True)
    assert model_names("slide", needs_coords=True) == ("gatmil",)
    assert all(info.trained for info in MODELS["slide"].values())
    # names shared by both levels are different models
    assert model_info("slide", "meanpool").implementation != model_info("patient", "meanpool").implementation
    # what each untrained patient model combines, and only those combine anything
    assert model_names("patient", aggregates="labels") == ("pn_rule",)
    assert model_names("patient", aggregates="probabilities") == ("mean_prob",)
    assert all(info.aggregates is None for info in MODELS["slide"].values())
    assert {n for n, i in MODELS["patient"].items() if i.aggregates} == set(model_names("patient", trained=False))


def test_task_refusals_name_the_model_and_the_task():
    assert task_refusal("patient", "pn_rule", TASKS["camelyon17"]) is None
    assert (
        task_refusal("patient", "pn_rule", TASKS["tcga_brca"])
        == "pn_rule applies to CAMELYON17 only, not task tcga_brca"
    )
    assert task_refusal("patient", "mean_prob", TASKS["tcga_nsclc"]) is None
    assert task_refusal("patient", "mean_prob", TASKS["camelyon17"]) == (
        "mean_prob averages slide probabilities over a patient's slides, which needs slide and patient "
        "classes to be the same; task camelyon17 has different ones"
    )
    assert all(
        task_refusal(level, name, TASKS["tcga_brca"]) is None
        for level in LEVELS
        for name in MODELS[level]
        if model_info(level, name).trained
    )


def test_unknown_names_levels_and_properties_are_refused_by_name():
    with pytest.raises(ValueError, match="unknown slide model 'clam': choose one of hmf, meanpool"):
        model_info("slide", "clam")
    with pytest.raises(ValueError, match="unknown level 'case'"):
        model_names("case")
    with pytest.raises(ValueError, match=r"unknown model properties \['needs_gpu'\]"):
        model_names("slide", needs_gpu=True)


@pytest.mark.parametrize("level", LEVELS)
def test_model_classes_say_what_the_names_say(level):
    """A model class's ``requires_text`` / ``needs_coords`` (what its forward reads) agree with
    hmf.models.names (what the rules and config checks ask)."""
    from hmf.models import registry

    for name in model_names(level, trained=True):
        cls, info = registry.model_class(level, name), model_info(level, name)
        assert getattr(cls, "requires_text", False) is info.needs_text, name
        assert getattr(cls, "needs_coords", False) is info.needs_coords, name
