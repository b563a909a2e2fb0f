"""Patient models (HMF patient model, pooling aggregators) and the untrained aggregators of slide
predictions (the pN rule on predicted slide labels, the mean of slide probabilities)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from hmf.models import PATIENT_MODELS, aggregate_slides, build_patient_model
from hmf.tasks import CAMELYON17_PATIENT, CAMELYON17_SLIDE, TASKS

E = 32
TINY = {"hmf_patient": {"heads": 4, "ff_dim": 64, "attn_hidden": [32, 16], "mlp_hidden": 16}}


def build(name: str, n_classes: int):
    return build_patient_model(name, E, n_classes, TINY.get(name))


def separable_patients(n_classes: int, n_patients: int, seed: int = 0):
    """Patients of 2-6 slides; one or two slides carry a class-specific direction."""
    g = torch.Generator().manual_seed(seed)
    patients = []
    for i in range(n_patients):
        label = i % n_classes
        s = int(torch.randint(2, 7, (1,), generator=g))
        x = torch.randn(s, E, generator=g)
        x[: 1 + i % 2, label] += 4.0
        patients.append((x, torch.randperm(s, generator=g), torch.tensor(label)))
    return patients


def evaluate(model, patients):
    model.eval()
    losses, correct = [], 0
    with torch.no_grad():
        for x, nodes, y in patients:
            out = model(x, nodes)
            losses.append(float(model.loss(out, y, {})))
            correct += int(out["logits"].argmax() == y)
    return sum(losses) / len(losses), correct / len(patients)


@pytest.mark.parametrize("name", PATIENT_MODELS)
@pytest.mark.parametrize("n_classes", [2, 5])
def test_forward_and_loss(name, n_classes):
    torch.manual_seed(0)
    model = build(name, n_classes)
    for s in (1, 5):
        for nodes in (None, torch.arange(s)):
            model.train()
            model.zero_grad()
            out = model(torch.randn(s, E), nodes)
            assert out["logits"].shape == (n_classes,)
            loss = model.loss(out, torch.tensor(n_classes - 1), {"class_weights": torch.ones(n_classes)})
            assert torch.isfinite(loss)
            loss.backward()
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", PATIENT_MODELS)
def test_loss_goes_down_on_separable_patients(name):
    torch.manual_seed(0)
    patients = separable_patients(3, 15)
    model = build(name, 3)
    before, _ = evaluate(model, patients)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(15):
        model.train()
        for x, nodes, y in patients:
            optimizer.zero_grad()
            model.loss(model(x, nodes), y, {}).backward()
            optimizer.step()
    after, accuracy = evaluate(model, patients)
    assert after < before - 0.3 * abs(before), (name, before, after)
    assert accuracy >= 0.7, (name, accuracy)


@pytest.mark.parametrize("name", PATIENT_MODELS)
def test_seeded_training_is_deterministic(name):
    patients = separable_patients(2, 4, seed=5)
    results = []
    for _ in range(2):
        torch.manual_seed(11)
        model = build(name, 2)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        model.train()
        for x, nodes, y in patients:
            optimizer.zero_grad()
            model.loss(model(x, nodes), y, {}).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            results.append(torch.stack([model(x, nodes)["logits"] for x, nodes, _ in patients]))
    assert torch.equal(results[0], results[1])


def test_hmf_patient_node_positions_matter_and_are_checked():
    torch.manual_seed(0)
    model = build("hmf_patient", 5).eval()
    with torch.no_grad():
        model.node_bias.weight.normal_(0, 1.0)
        x = torch.randn(5, E)
        a = model(x, torch.arange(5))["logits"]
        b = model(x, torch.tensor([4, 3, 2, 1, 0]))["logits"]
        c = model(x[torch.tensor([4, 3, 2, 1, 0])], torch.tensor([0, 1, 2, 3, 4]).flip(0))["logits"]
    assert not torch.allclose(a, b)
    assert torch.allclose(a, c, atol=1e-5)  # same (slide, node) pairs in another order
    with pytest.raises(ValueError, match="max_nodes"):
        model(x, torch.tensor([0, 1, 2, 3, 16]))
    with pytest.raises(ValueError, match="node_index"):
        model(x, torch.arange(4))
    with pytest.raises(ValueError, match="E=7"):
        model(torch.randn(5, 7))


def test_pooling_aggregators_pool_as_named():
    x = torch.tensor([[1.0, -2.0], [3.0, 4.0]])
    expected = {"meanpool": x.mean(0), "maxpool": x.max(0).values, "sumpool": x.sum(0), "minpool": x.min(0).values}
    for name, pooled in expected.items():
        out = build_patient_model(name, 2, 2)(x)
        assert torch.equal(out["embedding"], pooled)
    out = build_patient_model("attnpool", 2, 2)(x)
    assert torch.allclose(out["attention"].sum(), torch.tensor(1.0))


# Every pN class of the CAMELYON17 rule table (design/camelyon17.md), five nodes each.
RULE_TABLE = [
    (["negative"] * 5, "pN0"),
    (["itc", "negative", "negative", "negative", "negative"], "pN0(i+)"),
    (["itc", "itc", "itc", "itc", "itc"], "pN0(i+)"),
    (["micro", "negative", "negative", "negative", "negative"], "pN1mi"),
    (["micro", "micro", "micro", "micro", "itc"], "pN1mi"),
    (["macro", "negative", "negative", "negative", "negative"], "pN1"),
    (["macro", "micro", "micro", "itc", "itc"], "pN1"),  # 3 positive nodes
    (["macro", "macro", "macro", "negative", "itc"], "pN1"),
    (["macro", "micro", "micro", "micro", "negative"], "pN2"),  # 4 positive nodes with a macro
    (["macro"] * 5, "pN2"),
    (["micro", "micro", "micro", "micro", "micro"], "pN1mi"),  # >3 positive but no macro
]


def pn_rule(slides, probs=None):
    """The pN rule's patient class from slide labels (each the arg-max of its probability row)."""
    rows = np.eye(len(CAMELYON17_SLIDE))[[CAMELYON17_SLIDE.index(s) for s in slides]] if probs is None else probs
    row = aggregate_slides("pn_rule", TASKS["camelyon17"], rows)
    assert row.sum() == 1 and row.max() == 1  # one-hot
    return CAMELYON17_PATIENT[int(row.argmax())]


@pytest.mark.parametrize("slides,stage", RULE_TABLE)
def test_pn_rule_table(slides, stage):
    assert pn_rule(slides) == stage
    # The label of a slide is the arg-max of its probabilities, whatever the other classes get.
    rng = np.random.default_rng(0)
    probs = rng.uniform(0, 0.2, (len(slides), len(CAMELYON17_SLIDE)))
    probs[np.arange(len(slides)), [CAMELYON17_SLIDE.index(s) for s in slides]] = 0.5
    assert pn_rule(slides, probs) == stage


def test_pn_rule_covers_every_stage_and_is_order_free():
    seen = set()
    for combo in itertools.combinations_with_replacement(CAMELYON17_SLIDE, 5):
        stage = pn_rule(list(combo))
        assert pn_rule(list(reversed(combo))) == stage
        seen.add(stage)
    assert seen == set(CAMELYON17_PATIENT)


def test_mean_prob_averages_the_slide_probabilities():
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
    np.testing.assert_allclose(aggregate_slides("mean_prob", TASKS["tcga_brca"], probs), [0.6, 0.4])


def test_untrained_aggregators_refuse_what_they_cannot_aggregate():
    with pytest.raises(ValueError, match="pn_rule applies to CAMELYON17 only, not task tcga_brca"):
        aggregate_slides("pn_rule", TASKS["tcga_brca"], np.array([[0.5, 0.5]]))
    with pytest.raises(ValueError, match="mean_prob averages slide probabilities.*task camelyon17 has different"):
        aggregate_slides("mean_prob", TASKS["camelyon17"], np.eye(4))
    with pytest.raises(ValueError, match=r"n_slides >= 1, 4\), got \(0, 4\)"):
        aggregate_slides("pn_rule", TASKS["camelyon17"], np.zeros((0, 4)))
    with pytest.raises(ValueError, match=r"shape \(n_slides >= 1, 4\), got \(2, 3\)"):
        aggregate_slides("pn_rule", TASKS["camelyon17"], np.zeros((2, 3)))
    with pytest.raises(ValueError, match="meanpool is a trained patient model"):
        aggregate_slides("meanpool", TASKS["tcga_brca"], np.array([[0.5, 0.5]]))
    with pytest.raises(ValueError, match="unknown patient model 'median'"):
        aggregate_slides("median", TASKS["tcga_brca"], np.array([[0.5, 0.5]]))
