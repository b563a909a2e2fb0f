"""Predictions files and per-fold metrics, checked against hand-computed values."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from hmf.evaluation.metrics import compute_metrics, evaluate_fold
from hmf.evaluation.predictions import read_predictions, write_predictions

CLASSES = ["a", "b", "c"]
# Crafted fold: confusion matrix (rows true, cols predicted) [[3,1,0],[0,1,1],[0,1,2]].
TRUE = ["a", "a", "a", "a", "b", "b", "c", "c", "c"]
PROBS = np.array(
    [
        [0.7, 0.2, 0.1],  # a -> a
        [0.6, 0.3, 0.1],  # a -> a
        [0.5, 0.3, 0.2],  # a -> a
        [0.3, 0.5, 0.2],  # a -> b
        [0.2, 0.6, 0.2],  # b -> b
        [0.1, 0.4, 0.5],  # b -> c
        [0.1, 0.2, 0.7],  # c -> c
        [0.2, 0.2, 0.6],  # c -> c
        [0.1, 0.5, 0.4],  # c -> b
    ]
)
IDS = [f"slide_{i}" for i in (5, 2, 8, 1, 9, 3, 7, 4, 6)]  # deliberately unsorted


@pytest.fixture()
def crafted(tmp_path):
    path = tmp_path / "predictions.csv"
    write_predictions(IDS, TRUE, PROBS, CLASSES, path)
    return path


def rank_auc(positive_scores, negative_scores) -> float:
    """Mann-Whitney form of the ROC AUC: P(score_pos > score_neg) + 0.5 P(tie)."""
    pos = np.asarray(positive_scores)[:, None]
    neg = np.asarray(negative_scores)[None, :]
    return float(((pos > neg) + 0.5 * (pos == neg)).mean())


def quadratic_kappa(confusion: np.ndarray) -> float:
    """Cohen's kappa with quadratic weights, written out from its definition."""
    n_classes = confusion.shape[0]
    i, j = np.indices((n_classes, n_classes))
    weights = (i - j) ** 2 / (n_classes - 1) ** 2
    expected = np.outer(confusion.sum(1), confusion.sum(0)) / confusion.sum()
    return 1 - (weights * confusion).sum() / (weights * expected).sum()


def test_predictions_file_layout(crafted):
    frame = pd.read_csv(crafted, dtype={"id": str})
    assert list(frame.columns) == ["id", "true_label", "pred_label", "prob_a", "prob_b", "prob_c"]
    assert list(frame["id"]) == sorted(IDS)
    row = frame.set_index("id").loc["slide_3"]  # true b, predicted c
    assert (row["true_label"], row["pred_label"]) == ("b", "c")
    assert not list(crafted.parent.glob(".*"))  # no temporary files left behind


def test_metrics_match_hand_computed_values(crafted):
    m = compute_metrics(read_predictions(crafted, CLASSES), CLASSES, ordinal=True)
    assert m["confusion_matrix"] == [[3, 1, 0], [0, 1, 1], [0, 1, 2]]
    assert m["accuracy"] == pytest.approx(6 / 9)
    # recall a 3/4, b 1/2, c 2/3; precision a 3/3, b 1/3, c 2/3
    assert m["recall_macro"] == pytest.approx((3 / 4 + 1 / 2 + 2 / 3) / 3)
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 1 / 2 + 2 / 3) / 3)
    assert m["precision_macro"] == pytest.approx((1 + 1 / 3 + 2 / 3) / 3)
    # F1 a 6/7, b 2/5, c 2/3
    assert m["f1_macro"] == pytest.approx((6 / 7 + 2 / 5 + 2 / 3) / 3)
    assert m["f1_weighted"] == pytest.approx((4 * 6 / 7 + 2 * 2 / 5 + 3 * 2 / 3) / 9)
    # sum(w*O) = 3 and sum(w*E) = 13 with unnormalised weights (i-j)^2
    assert m["kappa_quadratic"] == pytest.approx(10 / 13)
    assert m["kappa_quadratic"] == pytest.approx(quadratic_kappa(np.array(m["confusion_matrix"])))
    truth = np.array([CLASSES.index(t) for t in TRUE])
    expected_auc = np.mean([rank_auc(PROBS[truth == c, c], PROBS[truth != c, c]) for c in range(3)])
    assert m["auc"] == pytest.approx(expected_auc)
    assert m["n"] == 9
    assert m["class_counts"] == {"a": 4, "b": 2, "c": 3}
    assert m["classes"] == CLASSES
    assert m["per_class"]["b"] == pytest.approx({"precision": 1 / 3, "recall": 1 / 2, "f1": 2 / 5, "support": 2})
    assert m["notes"] == []


def test_kappa_only_for_ordinal_tasks(crafted):
    m = compute_metrics(read_predictions(crafted, CLASSES), CLASSES, ordinal=False)
    assert m["kappa_quadratic"] is None


def test_binary_auc(tmp_path):
    path = tmp_path / "binary.csv"
    p1 = np.array([0.1, 0.4, 0.35, 0.8])
    write_predictions(["p1", "p2", "p3", "p4"], [0, 0, 1, 1], np.c_[1 - p1, p1], ["IDC", "ILC"], path)
    m = compute_metrics(read_predictions(path, ["IDC", "ILC"]), ["IDC", "ILC"], ordinal=False)
    assert m["auc"] == pytest.approx(0.75)  # 3 of the 4 positive/negative pairs ranked right
    assert m["accuracy"] == pytest.approx(3 / 4)
    assert m["confusion_matrix"] == [[2, 0], [1, 1]]


def test_auc_skipped_with_note_when_a_class_is_absent(tmp_path):
    path = tmp_path / "absent.csv"
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.3, 0.2, 0.5]])
    write_predictions(["x", "y", "z"], ["a", "b", "b"], probs, CLASSES, path)
    m = compute_metrics(read_predictions(path, CLASSES), CLASSES, ordinal=True)
    assert m["auc"] is None
    assert any("auc skipped" in note and "'c'" in note for note in m["notes"])
    assert m["confusion_matrix"][2] == [0, 0, 0]  # all classes kept in the matrix
    assert m["kappa_quadratic"] is not None


def test_one_hot_rows_from_the_pn_rule(tmp_path):
    classes = ["pN0", "pN0(i+)", "pN1mi", "pN1", "pN2"]
    path = tmp_path / "pn_rule.csv"
    predicted = [0, 1, 2, 3, 4, 3]
    write_predictions([f"patient_{i:03d}" for i in range(6)], [0, 1, 2, 3, 4, 4], np.eye(5)[predicted], classes, path)
    frame = read_predictions(path, classes)
    assert list(frame["pred_label"]) == [classes[i] for i in predicted]
    m = compute_metrics(frame, classes, ordinal=True)
    assert m["accuracy"] == pytest.approx(5 / 6)
    assert m["kappa_quadratic"] == pytest.approx(quadratic_kappa(np.array(m["confusion_matrix"])))


def test_evaluate_fold_writes_metrics_and_confusion_picture(crafted, tmp_path):
    out_json = tmp_path / "fold_0" / "metrics.json"
    out_png = tmp_path / "fold_0" / "confusion.png"
    result = evaluate_fold(crafted, out_json, out_png, CLASSES, ordinal=True)
    saved = json.loads(out_json.read_text())
    assert saved["accuracy"] == pytest.approx(6 / 9)
    assert saved["kappa_quadratic"] == pytest.approx(result["kappa_quadratic"])
    assert saved["predictions"] == str(crafted)
    data = out_png.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 2000


def rewrite(path, edit):
    frame = pd.read_csv(path, dtype={"id": str})
    edited = edit(frame)  # edits in place (returns None) or returns a new frame
    (frame if edited is None else edited).to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda f: f.drop(columns="prob_b"), r"missing column\(s\) \['prob_b'\]"),
        (lambda f: f.insert(6, "prob_d", 0.0), r"prob_d.*classes not in"),
        (lambda f: f.loc.__setitem__((0, "true_label"), "z"), r"true_label value\(s\) \['z'\]"),
        (lambda f: f.loc.__setitem__((0, "prob_a"), 1.5), r"outside \[0, 1\].*slide_1"),
        (lambda f: f.loc.__setitem__((0, "prob_a"), 0.1), r"do not sum to 1.*slide_1"),
        (lambda f: f.loc.__setitem__((0, "prob_a"), np.nan), r"non-finite.*slide_1"),
        (lambda f: f.loc.__setitem__((1, "id"), "slide_1"), r"duplicate id.*slide_1"),
        (lambda f: f.loc.__setitem__((0, "pred_label"), "c"), r"not a class of highest probability.*slide_1"),
        (lambda f: f.iloc[:0], r"no rows"),
    ],
)
def test_bad_predictions_files_are_rejected_naming_the_file(crafted, edit, message):
    rewrite(crafted, edit)
    with pytest.raises(ValueError, match=message) as info:
        read_predictions(crafted, CLASSES)
    assert str(crafted) in str(info.value)


def test_missing_predictions_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="predictions file not found"):
        read_predictions(tmp_path / "nope.csv", CLASSES)


def test_write_predictions_checks_its_input(tmp_path):
    path = tmp_path / "p.csv"
    with pytest.raises(ValueError, match="shape"):
        write_predictions(["x"], ["a"], np.array([[0.5, 0.5]]), CLASSES, path)
    with pytest.raises(ValueError, match="'q' not among"):
        write_predictions(["x"], ["q"], np.array([[0.2, 0.3, 0.5]]), CLASSES, path)
    with pytest.raises(ValueError, match="index 3"):
        write_predictions(["x"], [3], np.array([[0.2, 0.3, 0.5]]), CLASSES, path)
    with pytest.raises(ValueError, match="do not sum to 1"):
        write_predictions(["x"], ["a"], np.array([[0.2, 0.3, 0.3]]), CLASSES, path)
    assert not path.exists()
