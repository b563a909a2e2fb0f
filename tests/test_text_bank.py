"""The shipped description banks: one per label set, exactly the task's classes, enough distinct text."""

from __future__ import annotations

import json

import pytest

from hmf.tasks import TASKS
from hmf.text.bank import bank_path, load_bank, shipped_labelsets
from hmf.text.prompts import labelset_classes

LABELSETS = {ls: labelset_classes(task, ls) for task in TASKS.values() for ls in task.labelsets.values()}


def test_every_task_labelset_has_a_bank():
    assert set(shipped_labelsets()) == set(LABELSETS)


@pytest.mark.parametrize("labelset", sorted(LABELSETS))
def test_bank_has_the_task_classes_and_six_distinct_descriptions(labelset):
    raw = json.loads(bank_path(labelset).read_text())
    assert raw["labelset"] == labelset
    assert raw["classes"] == list(LABELSETS[labelset])
    assert list(raw["descriptions"]) == list(LABELSETS[labelset])
    bank = load_bank(labelset, LABELSETS[labelset], min_per_class=6)
    texts = [t for descriptions in bank.values() for t in descriptions]
    assert len(texts) == len({t.casefold() for t in texts}), "a description is repeated"
    for name, descriptions in bank.items():
        assert descriptions == raw["descriptions"][name], "bank text must already be clean"
        assert all(len(t.split()) >= 8 for t in descriptions), f"{name}: descriptions should be full sentences"


def test_size_criteria_match_the_classes():
    slide = load_bank("camelyon17_slide", LABELSETS["camelyon17_slide"])
    assert any("0.2 mm" in t for t in slide["itc"])
    assert any("0.2 mm" in t and "2 mm" in t for t in slide["micro"])
    assert any("larger than 2 mm" in t for t in slide["macro"])
    patient = load_bank("camelyon17_patient", LABELSETS["camelyon17_patient"])
    assert any("four to nine" in t for t in patient["pN2"])
    assert any("one to three" in t for t in patient["pN1"])


def test_load_bank_rejects_wrong_classes(tmp_path):
    with pytest.raises(ValueError, match="needs exactly"):
        load_bank("tcga_brca", ["IDC", "ILC", "mixed"])
    with pytest.raises(ValueError, match="at least 50"):
        load_bank("tcga_brca", ["IDC", "ILC"], min_per_class=50)


def test_bank_dir_comes_first_and_unknown_labelset_is_named(tmp_path):
    custom = {
        "labelset": "melanoma",
        "classes": ["naevus", "melanoma"],
        "descriptions": {"naevus": ["Benign nests of melanocytes.", ""], "melanoma": ["Atypical melanocytes."]},
    }
    (tmp_path / "melanoma.json").write_text(json.dumps(custom))
    bank = load_bank("melanoma", ["naevus", "melanoma"], bank_dir=tmp_path)
    assert bank["naevus"] == ["Benign nests of melanocytes."]
    with pytest.raises(FileNotFoundError, match="'lymphoma'.*text.bank_dir"):
        bank_path("lymphoma", tmp_path)
    (tmp_path / "tcga_nsclc.json").write_text("{broken")
    with pytest.raises(ValueError, match="tcga_nsclc.json is not valid JSON"):
        load_bank("tcga_nsclc", ["LUAD", "LUSC"], bank_dir=tmp_path)
