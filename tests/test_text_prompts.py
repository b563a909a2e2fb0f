"""The prompts file: bank source, provenance-keyed caching, hand edits, config defaults."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import pytest
import yaml

from hmf.tasks import get_task
from hmf.text.bank import bank_sha256
from hmf.text.prompts import cache_key, labelset_classes, make_prompts, read_prompts, sha256_text
from hmf.text.settings import DEFAULT_TEMPLATE, DEFAULTS, text_settings

ROOT = Path(__file__).resolve().parents[1]
SLIDE = ["negative", "itc", "micro", "macro"]


def test_bank_source_writes_provenance(tmp_path):
    out = tmp_path / "prompts" / "camelyon17_slide.json"
    data = make_prompts(out, "camelyon17_slide", SLIDE, {"source": "bank"})
    stored = read_prompts(out)
    assert stored["classes"] == SLIDE and stored["descriptions"] == data["descriptions"]
    prov = stored["provenance"]
    assert prov["source"] == "bank" and prov["model"] is None and prov["classes"] == SLIDE
    assert prov["template_sha256"] == bank_sha256("camelyon17_slide")
    assert prov["bank_file"] == "camelyon17_slide.json" and prov["created"].endswith("+00:00")
    assert [p.name for p in out.parent.iterdir()] == ["camelyon17_slide.json"]  # no temporary left


def test_hand_edits_survive_a_rerun_until_the_key_changes(tmp_path):
    out = tmp_path / "camelyon17_slide.json"
    make_prompts(out, "camelyon17_slide", SLIDE, {})
    data = json.loads(out.read_text())
    data["descriptions"]["itc"] = ["My own ITC description one.", "My own ITC description two."]
    out.write_text(json.dumps(data, indent=2))
    before = out.stat().st_mtime_ns
    kept = make_prompts(out, "camelyon17_slide", SLIDE, {})
    assert kept["descriptions"]["itc"][0] == "My own ITC description one."
    assert out.stat().st_mtime_ns == before  # not even rewritten
    # a bank of a different content (another template hash) replaces the file
    other = tmp_path / "banks"
    other.mkdir()
    bank = json.loads((ROOT / "src/hmf/text/bank/camelyon17_slide.json").read_text())
    bank["descriptions"]["negative"].append("A lymph node with no tumour at all, extra sentence.")
    (other / "camelyon17_slide.json").write_text(json.dumps(bank))
    replaced = make_prompts(out, "camelyon17_slide", SLIDE, {"bank_dir": str(other)})
    assert replaced["descriptions"]["itc"] != ["My own ITC description one.", "My own ITC description two."]
    assert replaced["descriptions"]["negative"][-1].endswith("extra sentence.")


def test_broken_cache_is_replaced(tmp_path):
    out = tmp_path / "tcga_nsclc.json"
    out.write_text("{ not json")
    data = make_prompts(out, "tcga_nsclc", ["LUAD", "LUSC"], {})
    assert read_prompts(out)["descriptions"] == data["descriptions"]


def test_read_prompts_names_the_problem(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"classes": ["A", "B"], "descriptions": {"A": ["x"]}}))
    with pytest.raises(ValueError, match="p.json.*differ"):
        read_prompts(path)
    path.write_text(json.dumps({"classes": ["A"], "descriptions": {"A": ["  ", ""]}}))
    with pytest.raises(ValueError, match="class 'A': no descriptions"):
        read_prompts(path)


def test_cache_key_follows_template_model_and_classes():
    llm = {"source": "llm", "llm": {"model": "m1"}}
    key = cache_key("tcga_brca", ["IDC", "ILC"], llm)
    assert key == {
        "source": "llm",
        "model": "m1",
        "template_sha256": sha256_text(DEFAULT_TEMPLATE),
        "classes": ["IDC", "ILC"],
    }
    assert cache_key("tcga_brca", ["IDC", "ILC"], {"source": "llm", "llm": {"model": "m1", "temperature": 0}}) == key
    assert cache_key("tcga_brca", ["IDC", "ILC"], {"source": "llm", "llm": {"model": "m2"}}) != key
    with pytest.raises(ValueError, match="text.source"):
        cache_key("tcga_brca", ["IDC", "ILC"], {"source": "wiki"})


def test_labelset_classes():
    task = get_task("camelyon17")
    assert labelset_classes(task, "camelyon17_patient") == ("pN0", "pN0(i+)", "pN1mi", "pN1", "pN2")
    assert labelset_classes(get_task("tcga_brca"), "tcga_brca") == ("IDC", "ILC")
    with pytest.raises(ValueError, match="no label set 'tcga_brca'"):
        labelset_classes(task, "tcga_brca")


def _schema_defaults(schema: dict) -> dict:
    out = {}
    for name, prop in schema["properties"].items():
        if prop.get("type") == "object" and "properties" in prop:
            out[name] = _schema_defaults(prop)
        else:
            out[name] = prop["default"]
    return out


def test_schema_defaults_match_the_code():
    schema = yaml.safe_load((ROOT / "config/schema/text.schema.yaml").read_text())
    assert _schema_defaults(schema) == DEFAULTS
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    validator.validate(
        {
            "source": "llm",
            "llm": {"model": "x", "base_url": "http://127.0.0.1:1/v1"},
            "encoders": {"flan_t5_small": {"path_or_id": "/models/flan-t5-small"}},
        }
    )
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({"source": "wikipedia"})
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({"llm": {"api_key": "sk-do-not-put-keys-here"}})
    # the workflow's default-filling validator gives exactly the code's defaults
    from hmf.config import validate_config

    assert validate_config({}, ROOT / "config/schema/text.schema.yaml") == DEFAULTS


def test_text_settings_keeps_builtin_encoders():
    cfg = text_settings(
        {"encoders": {"flan_t5_small": {"path_or_id": "/m/t5"}, "mine": {"kind": "t5", "path_or_id": "/m/x"}}}
    )
    assert cfg["encoders"]["flan_t5_small"] == {"kind": "t5", "path_or_id": "/m/t5"}
    assert cfg["encoders"]["minilm"]["kind"] == "sentence_transformers"
    assert set(cfg["encoders"]) == {"flan_t5_small", "minilm", "mine"}
    assert cfg["llm"]["template"] == DEFAULT_TEMPLATE
    assert DEFAULTS["encoders"]["flan_t5_small"]["path_or_id"] == "google/flan-t5-small"
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # tests never reach the hub
