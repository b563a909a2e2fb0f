"""One owner of the metrics: the validation scores that select a checkpoint are
``hmf.evaluation.metrics.scores`` on the validation predictions, and the metrics table
(``METRICS``) lists exactly what ``scores`` computes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, cohen_kappa_score, f1_score

from hmf.evaluation.metrics import METRIC, METRICS, metric, scores
from hmf.settings import schema
from hmf.training.loop import Item, selection_score, validation_scores


class Fixed(torch.nn.Module):
    """Returns the logits of row ``x``: predictions chosen by the test."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return {"logits": self.logits[int(x)]}

    def loss(self, out, label, context):
        return torch.nn.functional.cross_entropy(out["logits"][None], label[None])


def _validate(truth, logits):
    items = [Item(key=str(i), label=int(t), inputs={"x": torch.tensor(i)}) for i, t in enumerate(truth)]
    return validation_scores(Fixed(logits), items, {}, torch.device("cpu"), bf16=False)


@pytest.mark.parametrize("n_classes", [2, 4])
def test_validation_scores_are_the_scorer_on_the_same_predictions(n_classes):
    rng = np.random.default_rng(n_classes)
    truth = rng.integers(0, n_classes, size=40)
    truth[:n_classes] = np.arange(n_classes)  # every class present: AUC is defined
    logits = torch.tensor(rng.normal(size=(40, n_classes)), dtype=torch.float32)
    val = _validate(truth, logits)
    probs = torch.softmax(logits, -1).numpy()
    expected = scores(truth, probs.argmax(1), probs, n_classes, ordinal=True)
    assert set(val) == {"loss", *expected}
    for name, values in expected.items():
        assert val[name] == float(values[0]), name
    assert math.isfinite(val["auc"]) and math.isfinite(val["loss"])


def test_the_scorer_gives_the_validation_numbers_sklearn_gave():
    """The values the training logs held before the scorer computed them (sklearn), unchanged."""
    rng = np.random.default_rng(7)
    for n_classes in (2, 3, 5):
        truth = rng.integers(0, n_classes, size=60)
        pred = np.where(rng.random(60) < 0.6, truth, rng.integers(0, n_classes, size=60))
        probs = np.eye(n_classes)[pred] * 0.5 + 0.5 / n_classes
        ours = {k: float(v[0]) for k, v in scores(truth, pred, probs, n_classes, ordinal=True).items()}
        labels = list(range(n_classes))
        assert ours["accuracy"] == pytest.approx(accuracy_score(truth, pred), abs=1e-12)
        assert ours["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(truth, pred), abs=1e-12)
        sk_f1 = f1_score(truth, pred, average="macro", labels=labels, zero_division=0)
        assert ours["f1_macro"] == pytest.approx(sk_f1, abs=1e-12)
        sk_kappa = cohen_kappa_score(truth, pred, weights="quadratic", labels=labels)
        assert ours["kappa_quadratic"] == pytest.approx(sk_kappa, abs=1e-12)


def test_undefined_kappa_selects_as_chance_and_loss_is_lower_better():
    # One class, predicted perfectly: kappa is 0 / 0.
    val = _validate([1, 1, 1], torch.tensor([[0.0, 2.0], [0.0, 3.0], [0.0, 1.0]]))
    assert math.isnan(val["kappa_quadratic"])
    assert selection_score(val, "kappa_quadratic") == 0.0
    assert selection_score(val, "accuracy") == 1.0
    assert selection_score(val, "loss") == -val["loss"] < 0


def test_the_table_lists_what_the_scorer_computes():
    computed = scores(np.array([0, 1]), np.array([0, 1]), np.eye(2), 2, ordinal=True)
    assert [m.name for m in METRICS] == list(computed)
    assert METRIC["f1_macro"] is metric("f1_macro")
    with pytest.raises(ValueError, match="unknown metric 'f2'"):
        metric("f2")
    monitors = schema()["properties"]["training"]["properties"]["monitor"]["enum"]
    assert set(monitors) - {"loss"} <= set(METRIC), "training.monitor names a metric outside the table"


def test_result_tables_take_their_metrics_and_labels_from_the_table():
    from hmf.evaluation import tables
    from hmf.evaluation.metrics import METRICS

    assert tables.DEFAULT_METRICS == tuple(m.name for m in METRICS if m.tabulated)
    assert tables.COMPARED_METRICS == tuple(m.name for m in METRICS if m.compared)
    assert tables.METRIC_LABELS == {m.name: m.label for m in METRICS}
