"""hmf.models.names: the one list of model names, equal to the schema's enums and to what the
registry builds. (That names and recipes are read without torch: test_config.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from hmf.config import load_schema
from hmf.models.names import LEVELS, MODELS, model_info, model_names

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
