"""The training: section as typed settings: the schema's defaults, checked keys, and the fit
configuration resolved from them."""

from __future__ import annotations

import dataclasses

import pytest

from hmf.config import ConfigError
from hmf.settings import section
from hmf.training.hparams import resolve
from hmf.training.settings import TrainingSettings, training_settings


def test_defaults_come_from_the_schema():
    settings = training_settings(None)
    assert dataclasses.asdict(settings) == section("training", {})
    assert settings.cache_mb == 1024 and settings.monitor == "f1_macro" and settings.bf16 == "cuda"
    assert training_settings({"seed": 3}).seed == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.seed = 1


def test_built_settings_pass_through_and_bad_keys_are_named():
    settings = training_settings({"max_epochs": 2})
    assert training_settings(settings) is settings
    with pytest.raises(ConfigError, match=r"training\.nope: unknown key"):
        training_settings({"nope": 1})
    with pytest.raises(ConfigError, match=r"training\.monitor"):
        training_settings({"monitor": "auc"})


def test_fit_config_from_the_settings():
    from hmf.models.registry import training_defaults

    recipe = training_defaults("hmf", "slide")
    fit = resolve("slide", "hmf", None, TrainingSettings(**{**section("training", {}), "max_epochs": 1})).fit
    assert fit.epochs == 1 and fit.patience == recipe["patience"] and fit.monitor == "f1_macro"
    assert fit.min_epochs == 0 and fit.seed == 0 and fit.bf16 == "cuda" and fit.max_patches is None
    # A partial section is filled by the schema; the same fit as with the built settings.
    assert resolve("slide", "hmf", None, {"max_epochs": 1}).fit == fit
    assert resolve("slide", "meanpool", None, {"bf16": "always"}).fit.bf16 is False


def test_model_overrides_are_checked_by_the_registry_naming_the_key():
    hp = resolve("slide", "abmil", {"epochs": 3, "optimizer": {"lr": 1e-3}}, {})
    assert hp.fit.epochs == 3 and hp.optimizer["lr"] == 1e-3
    with pytest.raises(ConfigError, match=r"models.slide_params.abmil.epoch: unknown key \(allowed here: "):
        resolve("slide", "abmil", {"epoch": 3}, {})
    with pytest.raises(ConfigError, match="models.patient_params.hmf_patient.optimizer: must be a mapping"):
        resolve("patient", "hmf_patient", {"optimizer": 0.1}, {})
    with pytest.raises(ConfigError, match=r"models.slide_params.abmil.model.hiden: unknown key"):
        resolve("slide", "abmil", {"model": {"hiden": 8}}, {})
