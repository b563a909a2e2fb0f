"""The prompts file: bank source, provenance-keyed caching, hand edits, config defaults."""

from __future__ import annotations

import ast
import dataclasses
import json
import os
from pathlib import Path

import jsonschema
import pytest
import yaml

from hmf.config import ConfigError
from hmf.settings import as_dict, build, section
from hmf.tasks import get_task
from hmf.text.bank import bank_sha256
from hmf.text.prompts import cache_key, labelset_classes, make_prompts, read_prompts, sha256_text
from hmf.text.settings import (
    DEFAULT_TEMPLATE,
    TextEncoderSpec,
    TextSettings,
    encoding_params,
    prompts_params,
    text_settings,
)

ROOT = Path(__file__).resolve().parents[1]
SLIDE = ["negative", "itc", "micro", "macro"]


def test_bank_source_writes_provenance(tmp_path):
    out = tmp_path / "prompts" / "camelyon17_slide.json"
    data = make_prompts(out, "camelyon17_slide", SLIDE, text_settings({"source": "bank"}))
    stored = read_prompts(out)
    assert stored["classes"] == SLIDE and stored["descriptions"] == data["descriptions"]
    prov = stored["provenance"]
    assert prov["source"] == "bank" and prov["model"] is None and prov["classes"] == SLIDE
    assert prov["template_sha256"] == bank_sha256("camelyon17_slide")
    assert prov["bank_file"] == "camelyon17_slide.json" and prov["created"].endswith("+00:00")
    assert [p.name for p in out.parent.iterdir()] == ["camelyon17_slide.json"]  # no temporary left


def test_hand_edits_survive_a_rerun_until_the_key_changes(tmp_path):
    out = tmp_path / "camelyon17_slide.json"
    make_prompts(out, "camelyon17_slide", SLIDE, text_settings({}))
    data = json.loads(out.read_text())
    data["descriptions"]["itc"] = ["My own ITC description one.", "My own ITC description two."]
    out.write_text(json.dumps(data, indent=2))
    before = out.stat().st_mtime_ns
    kept = make_prompts(out, "camelyon17_slide", SLIDE, text_settings({}))
    assert kept["descriptions"]["itc"][0] == "My own ITC description one."
    assert out.stat().st_mtime_ns == before  # not even rewritten
    # a bank of a different content (another template hash) replaces the file
    other = tmp_path / "banks"
    other.mkdir()
    bank = json.loads((ROOT / "src/hmf/text/bank/camelyon17_slide.json").read_text())
    bank["descriptions"]["negative"].append("A lymph node with no tumour at all, extra sentence.")
    (other / "camelyon17_slide.json").write_text(json.dumps(bank))
    replaced = make_prompts(out, "camelyon17_slide", SLIDE, text_settings({"bank_dir": str(other)}))
    assert replaced["descriptions"]["itc"] != ["My own ITC description one.", "My own ITC description two."]
    assert replaced["descriptions"]["negative"][-1].endswith("extra sentence.")


def test_broken_cache_is_replaced(tmp_path):
    out = tmp_path / "tcga_nsclc.json"
    out.write_text("{ not json")
    data = make_prompts(out, "tcga_nsclc", ["LUAD", "LUSC"], text_settings({}))
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
    def key_of(text):
        return cache_key("tcga_brca", ["IDC", "ILC"], text_settings(text))

    key = key_of({"source": "llm", "llm": {"model": "m1"}})
    assert key == {
        "source": "llm",
        "model": "m1",
        "template_sha256": sha256_text(DEFAULT_TEMPLATE),
        "classes": ["IDC", "ILC"],
    }
    assert key_of({"source": "llm", "llm": {"model": "m1", "temperature": 0}}) == key
    assert key_of({"source": "llm", "llm": {"model": "m2"}}) != key
    with pytest.raises(ValueError, match="text.source"):
        key_of({"source": "wiki"})


def test_labelset_classes():
    task = get_task("camelyon17")
    assert labelset_classes(task, "camelyon17_patient") == ("pN0", "pN0(i+)", "pN1mi", "pN1", "pN2")
    assert labelset_classes(get_task("tcga_brca"), "tcga_brca") == ("IDC", "ILC")
    with pytest.raises(ValueError, match="no label set 'tcga_brca'"):
        labelset_classes(task, "tcga_brca")


def test_schema_validates_the_section():
    schema = yaml.safe_load((ROOT / "config/schema/text.schema.yaml").read_text())
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


def test_text_settings_keeps_builtin_encoders():
    cfg = text_settings(
        {"encoders": {"flan_t5_small": {"path_or_id": "/m/t5"}, "mine": {"kind": "t5", "path_or_id": "/m/x"}}}
    )
    assert cfg.encoders["flan_t5_small"] == TextEncoderSpec(kind="t5", path_or_id="/m/t5")
    assert cfg.encoders["minilm"].kind == "sentence_transformers"
    assert list(cfg.encoders) == ["flan_t5_small", "minilm", "mine"]
    assert cfg.llm.template == DEFAULT_TEMPLATE
    assert text_settings({}).encoders["flan_t5_small"].path_or_id == "google/flan-t5-small"
    # a null entry keeps the built-in; an entry that is not built in needs its kind
    assert text_settings({"encoders": {"minilm": None}}).encoders == text_settings({}).encoders
    with pytest.raises(ConfigError, match=r"text\.encoders\.mine\.kind: required .*'t5', 'sentence_transformers'"):
        text_settings({"encoders": {"mine": {"path_or_id": "/m/x"}}})
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # tests never reach the hub


def test_text_settings_are_the_schema_defaults_typed_and_frozen():
    built = build(TextSettings, section("text", {}), "text")
    assert built.llm.template is None  # null in the schema: the built-in template
    expected = dataclasses.replace(built, llm=dataclasses.replace(built.llm, template=DEFAULT_TEMPLATE))
    assert text_settings({}) == text_settings(None) == expected
    assert as_dict(text_settings({"batch_size": 7}))["batch_size"] == 7
    with pytest.raises(dataclasses.FrozenInstanceError):
        text_settings({}).device = "cpu"
    with pytest.raises(TypeError):
        text_settings({}).encoders["x"] = None


def test_text_settings_checks_what_the_schema_cannot():
    with pytest.raises(ValueError, match="unknown text encoder 'clip'; configured"):
        text_settings({"encoder": "clip"})
    assert (
        text_settings({"encoder": "mine", "encoders": {"mine": {"kind": "t5", "path_or_id": "/m"}}}).encoder == "mine"
    )
    with pytest.raises(ConfigError, match=r"text\.llm\.template: needs the placeholders"):
        text_settings({"llm": {"template": "describe {classes}"}})
    assert text_settings({"llm": {"template": "{n} of {classes}"}}).llm.per_class is False
    assert text_settings({"llm": {"template": ""}}).llm.template == DEFAULT_TEMPLATE
    with pytest.raises(ConfigError, match=r"config key text\.llm\.n_per_class: 0 is less than the minimum"):
        text_settings({"llm": {"n_per_class": 0}})


# Values of the text section's defaults as Python literals: a module repeating two or more of
# them beside their keys (a dict display, a class body, a signature) repeats the schema.
def _text_defaults() -> dict[str, object]:
    filled = section("text", {})
    llm = filled.pop("llm")
    filled.pop("encoders")
    return {**filled, **llm}


def _repeated_defaults(tree: ast.AST, defaults: dict[str, object]) -> list[tuple[int, list[str]]]:
    def matches(pairs) -> list[str]:
        return [
            name
            for name, value in pairs
            if name in defaults
            and isinstance(value, ast.Constant)
            and type(value.value) is type(defaults[name])
            and value.value == defaults[name]
        ]

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            pairs = [(k.value, v) for k, v in zip(node.keys, node.values) if isinstance(k, ast.Constant)]
        elif isinstance(node, ast.Call):
            pairs = [(k.arg, k.value) for k in node.keywords]
        elif isinstance(node, ast.ClassDef):
            pairs = [(n.target.id, n.value) for n in node.body if isinstance(n, ast.AnnAssign) and n.value is not None]
        elif isinstance(node, ast.FunctionDef):
            args = node.args
            positional = [*args.posonlyargs, *args.args]
            pairs = list(zip([a.arg for a in positional[len(positional) - len(args.defaults) :]], args.defaults))
            pairs += [(a.arg, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
        else:
            continue
        names = matches(pairs)
        if len(names) >= 2:
            found.append((node.lineno, names))
    return found


def test_no_module_repeats_the_text_defaults():
    defaults = _text_defaults()
    # the check finds a repeat where there is one
    sample = 'DEFAULTS = {"model": "gpt-4o-mini", "n_per_class": 6}\ndef f(batch_size=32, max_length=128): ...'
    assert sorted(n for _, n in _repeated_defaults(ast.parse(sample), defaults)) == [
        ["batch_size", "max_length"],
        ["model", "n_per_class"],
    ]
    repeats = {
        f"{path.relative_to(ROOT)}:{line}": names
        for path in sorted((ROOT / "src/hmf").rglob("*.py"))
        for line, names in _repeated_defaults(ast.parse(path.read_text(encoding="utf-8")), defaults)
    }
    assert repeats == {}


def test_job_params_are_plain_data_that_give_the_same_settings_back():
    text = text_settings(
        {
            "source": "llm",
            "llm": {"model": "m1", "temperature": 0.2},
            "encoders": {"flan_t5_small": {"path_or_id": "/m/t5"}},
            "device": "cpu",
            "max_length": 64,
        }
    )
    prompts = prompts_params(text)
    assert json.loads(json.dumps(prompts)) == prompts and "encoders" not in prompts
    assert text_settings(prompts).llm == text.llm
    assert cache_key("tcga_brca", ["IDC"], text_settings(prompts)) == cache_key("tcga_brca", ["IDC"], text)
    assert prompts_params(text_settings({"bank_dir": "/b"})) == {"source": "bank", "bank_dir": "/b"}
    encoding = encoding_params(text, "flan_t5_small")
    assert json.loads(json.dumps(encoding)) == encoding and "llm" not in encoding
    back = text_settings(encoding)
    assert back.encoder_spec("flan_t5_small") == TextEncoderSpec("t5", "/m/t5")
    assert (back.device, back.max_length, back.batch_size) == ("cpu", 64, text.batch_size)
