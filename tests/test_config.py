"""The config schema: defaults filled in, unknown keys and wrong types rejected by name."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from hmf.config import ConfigError, validate_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "config" / "schema" / "config.schema.yaml")
CONFIGS = [*sorted((ROOT / "config").glob("*.yaml")), *sorted((ROOT / "config" / "examples").glob("*.yaml")),
           *sorted((ROOT / "tests" / "configs").glob("*.yaml"))]


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    config = _load(path)
    validate_config(config, SCHEMA)
    assert config["splits"]["k"] >= 2
    assert config["training"]["monitor"]


def test_defaults_are_filled():
    config = {"dataset": {"name": "x", "task": "tcga_brca", "format": "generic", "sample_sheet": "s.csv"}}
    validate_config(config, SCHEMA)
    assert config["splits"]["k"] == 5
    assert config["features"]["encoder"] == "resnet50_trunc"
    assert config["preprocessing"]["preset"]
    assert config["models"]["slide"] == ["hmf"]
    assert config["training"]["device"] == "auto"


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda c: c["dataset"].update(colour="red"), ["colour"]),
        (lambda c: c.update(trainer={}), ["trainer"]),
        (lambda c: c["splits"].update(k="five"), ["five", "k"]),
        (lambda c: c["dataset"].update(task="melanoma"), ["melanoma"]),
        (lambda c: c["models"].update(slide=["resnet"]), ["resnet"]),
        (lambda c: c["training"].update(max_epochs=-3), ["-3", "max_epochs"]),
    ],
    ids=["unknown-dataset-key", "unknown-section", "wrong-type", "unknown-task", "unknown-model", "out-of-range"],
)
def test_bad_config_named(mutate, words):
    config = copy.deepcopy(_load(ROOT / "config" / "config.yaml"))
    mutate(config)
    with pytest.raises(ConfigError) as err:
        validate_config(config, SCHEMA)
    for word in words:
        assert word in str(err.value)
