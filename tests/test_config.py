"""The config schema: defaults filled in, unknown keys and wrong types rejected by name."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from hmf.config import ConfigError, check_cross_keys, validate_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "config" / "schema" / "config.schema.yaml")
CONFIGS = [
    *sorted((ROOT / "config").glob("*.yaml")),
    *sorted((ROOT / "config" / "examples").glob("*.yaml")),
    *sorted((ROOT / "tests" / "configs").glob("*.yaml")),
]


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    config = _load(path)
    validate_config(config, SCHEMA)
    check_cross_keys(config)
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


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_model_params_are_accepted(path):
    from hmf.models.registry import check_model_params

    config = _load(path)
    validate_config(config, SCHEMA)
    check_model_params(config)


def test_a_pasted_key_is_never_echoed():
    config = copy.deepcopy(_load(ROOT / "config" / "config.yaml"))
    secret = "sk-live-0123456789abcdef"
    config.setdefault("text", {}).setdefault("llm", {})["api_key_env"] = secret
    with pytest.raises(ConfigError) as err:
        validate_config(config, SCHEMA)
    assert "text.llm.api_key_env" in str(err.value) and secret not in str(err.value)
    from hmf.text.llm import LLMSettings

    with pytest.raises(ValueError) as err:
        LLMSettings.from_config({"model": "m", "api_key_env": secret})
    assert secret not in str(err.value)


def test_nan_is_refused_by_name():
    config = copy.deepcopy(_load(ROOT / "config" / "config.yaml"))
    config.setdefault("preprocessing", {}).setdefault("patching", {})["target_mpp"] = float("nan")
    with pytest.raises(ConfigError, match="preprocessing.patching.target_mpp: NaN"):
        validate_config(config, SCHEMA)


def test_accepted_model_params_read_without_torch_match_the_registry():
    """The parse-time table comes from the sources; it must say what the registry does."""
    import inspect
    import subprocess
    import sys

    code = (
        "import sys; from hmf.models.registry import accepted_model_params; t = accepted_model_params(); "
        "print(sorted(t['slide']), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "'hmf'" in out and out.strip().endswith("False")  # no torch import at parse time
    from hmf.models import optim, registry
    from hmf.models.registry import accepted_model_params

    def params(cls) -> frozenset[str] | None:
        signature = inspect.signature(cls.__init__).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.values()):
            return None
        return frozenset(signature) - {"self", "in_dim", "emb_dim", "n_classes", "text_dim"}

    sections = {"optimizer": frozenset(optim.OPTIMIZER_KEYS), "scheduler": frozenset(optim.SCHEDULER_KEYS)}
    expected = {
        level: {
            name: {
                "recipe": frozenset(registry.training_defaults(name, level)),
                "model": params(registry.model_class(level, name)),
                **sections,
            }
            for name in names
        }
        for level, names in (("slide", registry.SLIDE_MODELS), ("patient", registry.PATIENT_MODELS))
    }
    assert accepted_model_params() == expected
    assert not {"pn_rule", "mean_prob"} & set(expected["patient"])  # rules: nothing to configure


def test_model_params_checked_by_name():
    from hmf.models.registry import check_model_params

    check_model_params(
        {"models": {"slide_params": {"hmf": {"model": {"dim": 64}, "optimizer": {"lr": 1e-4}, "epochs": 3}}}}
    )
    bad = {
        "models": {
            "slide_params": {"abmil": {"model": {"hiden": 8}, "optimizer": {"learning_rate": 1}}},
            "patient_params": {"hmf_patient": {"model": 3}},
        }
    }
    with pytest.raises(ConfigError) as err:
        check_model_params(bad)
    message = str(err.value)
    assert "models.slide_params.abmil.model.hiden: unknown key (allowed here: attn_hidden, dropout, hidden)" in message
    assert "models.slide_params.abmil.optimizer.learning_rate: unknown key" in message
    assert "models.patient_params.hmf_patient.model: must be a mapping" in message


def _filled(**sections) -> dict:
    config = {
        "dataset": {"name": "x", "task": "tcga_brca", "format": "generic", "sample_sheet": "s.csv"},
        "models": {"slide": ["hmf", "meanpool"], "patient": ["hmf_patient", "mean_prob"]},
        **sections,
    }
    validate_config(config, SCHEMA)
    return config


@pytest.mark.parametrize(
    "change,message",
    [
        (
            {"models": {"slide": ["hmf"], "patient": ["pn_rule"]}},
            "config key models.patient: pn_rule applies to CAMELYON17 only, not task tcga_brca",
        ),
        (
            {
                "dataset": {"name": "x", "task": "camelyon17", "format": "camelyon17", "stage_labels": "s.csv"},
                "models": {"slide": ["hmf"], "patient": ["mean_prob"]},
            },
            "config key models.patient: mean_prob averages slide probabilities over a patient's slides, which "
            "needs slide and patient classes to be the same; task camelyon17 has different ones",
        ),
        (
            {"models": {"slide": ["meanpool"], "patient": ["mean_prob"]}},
            "config key models.patient_source: 'hmf' is not one of models.slide ['meanpool']",
        ),
        (
            {"evaluation": {"reference": {"slide": "abmil"}}},
            "config key evaluation.reference.slide: 'abmil' is not one of models.slide ['hmf', 'meanpool']",
        ),
        (
            {"demo": {"enabled": True, "kind": "tcga"}},
            "config key demo.kind: tcga needs dataset.format: tcga, dataset.label_csv and dataset.slide_dir",
        ),
        (
            {"dataset": {"name": "x", "task": "custom", "format": "generic", "sample_sheet": "s.csv"}},
            "config: task 'custom' needs dataset.classes.patient_classes in the config",
        ),
        (
            {"predict": {"slide_models": ["hmf", "abmil"]}},
            "config key predict.slide_models: ['abmil'] not among the configured models.slide ['hmf', 'meanpool']",
        ),
        (
            {"predict": {"patient_models": ["mean_prob"], "submission_model": "hmf_patient"}},
            "config key predict.submission_model: 'hmf_patient' is not among the predicted patient "
            "models ['mean_prob']",
        ),
    ],
)
def test_cross_key_checks_name_the_key(change, message):
    config = _filled(**change)
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_cross_keys(config)


def test_cross_key_checks_accept_agreeing_keys():
    check_cross_keys(_filled())
    check_cross_keys(_filled(models={"slide": ["hmf"], "patient": []}, evaluation={"reference": {"slide": "hmf"}}))
