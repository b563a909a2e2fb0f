"""The `features:` section as typed settings: every key comes from the schema, none has a
default in Python, and each lands in exactly one place."""

from __future__ import annotations

import dataclasses

import pytest

from hmf.config import ConfigError
from hmf.features.settings import (
    WORKFLOW_KEYS,
    EncoderSettings,
    RuntimeSettings,
    encoder_settings,
    resolve_features,
    runtime_settings,
)
from hmf.settings import schema, section


def test_every_key_of_the_schema_has_one_owner():
    keys = set(schema()["properties"]["features"]["properties"])
    encoder = {f.name for f in dataclasses.fields(EncoderSettings)}
    runtime = {f.name for f in dataclasses.fields(RuntimeSettings)}
    assert not encoder & runtime and not (encoder | runtime) & set(WORKFLOW_KEYS)
    assert encoder | runtime | set(WORKFLOW_KEYS) == keys


def test_the_settings_repeat_no_default_of_the_schema():
    for cls in (EncoderSettings, RuntimeSettings):
        for field in dataclasses.fields(cls):
            assert field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING, field.name
        with pytest.raises(TypeError):
            cls()


def test_defaults_come_from_the_schema_and_values_are_typed():
    filled = section("features", {})
    encoder, runtime = resolve_features(None)
    assert dataclasses.asdict(runtime) == {k: filled[k] for k in dataclasses.asdict(runtime)}
    assert encoder.encoder == filled["encoder"] and encoder.weights == filled["weights"]
    given = encoder_settings(mean=[0.5, 0.5, 0.5], model_kwargs={"global_pool": "avg"})
    assert given.mean == (0.5, 0.5, 0.5) and given.model_kwargs["global_pool"] == "avg"
    with pytest.raises(TypeError):
        given.model_kwargs["x"] = 1  # frozen all the way down
    assert runtime_settings(batch_size=3).batch_size == 3


def test_the_schema_checks_the_section_once():
    with pytest.raises(ConfigError, match=r"features\.num_workers"):
        resolve_features({"num_workers": -1})
    with pytest.raises(ConfigError, match=r"features\.cpu_optimize"):
        resolve_features({"cpu_optimize": "fast"})
    with pytest.raises(ConfigError, match=r"features\.num_threads"):
        resolve_features({"num_threads": -2})
    encoder, runtime = resolve_features({"slides_per_job": 4, "precomputed_dir": None})  # the rules' keys
    assert runtime.device == "auto"
