"""Pooled out-of-fold metrics, patient-level bootstrap intervals, paired comparisons, the
macro-average convention shared with checkpoint selection, and left-out counts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from hmf.evaluation.bootstrap import (
    draw_resamples,
    holm,
    paired_comparison,
    percentile_interval,
    pool_predictions,
    pooled_summary,
    resampled_scores,
    two_sided_p,
)
from hmf.evaluation.metrics import compute_metrics, evaluate_fold, scores, weighted_auc
from hmf.evaluation.predictions import read_predictions, write_predictions
from hmf.evaluation.tables import write_level_comparison, write_level_table

CLASSES = ["negative", "itc", "micro", "macro"]


def fold_files(tmp_path, model, truth, probs, n_folds=2, name="slide"):
    """Predictions of ``len(truth)`` slides (two per patient) split over ``n_folds`` files."""
    ids = [f"s{i:03d}" for i in range(len(truth))]
    paths = []
    for k in range(n_folds):
        rows = [i for i in range(len(ids)) if (i // 2) % n_folds == k]
        path = tmp_path / model / f"fold_{k}" / "predictions.csv"
        write_predictions([ids[i] for i in rows], [truth[i] for i in rows], probs[rows], CLASSES, path)
        paths.append(path)
    patient_of = {s: f"p{i // 2:03d}" for i, s in enumerate(ids)}
    return paths, patient_of


def noisy_probs(rng, truth, accuracy):
    """Probabilities whose arg-max is the true class with about ``accuracy``."""
    n = len(truth)
    probs = rng.dirichlet(np.ones(len(CLASSES)), size=n)
    right = rng.random(n) < accuracy
    probs[right, truth[right]] += 2.0
    return probs / probs.sum(1, keepdims=True)


@pytest.fixture()
def cohort():
    rng = np.random.default_rng(1)
    truth = np.tile(np.arange(4), 20)
    return truth, noisy_probs(rng, truth, 0.85), noisy_probs(rng, truth, 0.4)


def test_resampled_scores_equal_sklearn_on_the_duplicated_rows():
    rng = np.random.default_rng(0)
    truth = np.tile(np.arange(4), 6)
    probs = noisy_probs(rng, truth, 0.6)
    pred = probs.argmax(1)
    counts = rng.integers(0, 3, size=(5, len(truth))).astype(float)
    counts[:, :4] += 1  # every class drawn at least once
    got = scores(truth, pred, probs, 4, ordinal=True, weights=counts)
    labels = list(range(4))
    for b, w in enumerate(counts):
        rows = np.repeat(np.arange(len(truth)), w.astype(int))
        t, p, pr = truth[rows], pred[rows], probs[rows]
        assert got["accuracy"][b] == pytest.approx(skm.accuracy_score(t, p))
        assert got["balanced_accuracy"][b] == pytest.approx(skm.balanced_accuracy_score(t, p))
        for key, average in (
            ("precision_macro", skm.precision_score),
            ("recall_macro", skm.recall_score),
            ("f1_macro", skm.f1_score),
        ):
            assert got[key][b] == pytest.approx(average(t, p, labels=labels, average="macro", zero_division=0))
        assert got["f1_weighted"][b] == pytest.approx(
            skm.f1_score(t, p, labels=labels, average="weighted", zero_division=0)
        )
        assert got["kappa_quadratic"][b] == pytest.approx(
            skm.cohen_kappa_score(t, p, weights="quadratic", labels=labels)
        )
        assert got["auc"][b] == pytest.approx(
            skm.roc_auc_score(t, pr, multi_class="ovr", average="macro", labels=labels)
        )


def test_weighted_auc_matches_sklearn_sample_weights_with_ties():
    rng = np.random.default_rng(2)
    score = rng.integers(0, 5, size=40) / 4  # many ties
    positive = rng.random(40) < 0.4
    weights = rng.integers(0, 4, size=(3, 40)).astype(float)
    for b in range(3):
        expected = skm.roc_auc_score(positive, score, sample_weight=weights[b])
        assert weighted_auc(score, positive, weights[b : b + 1])[0] == pytest.approx(expected)
    assert np.isnan(weighted_auc(score, np.zeros(40, bool), weights[:1])[0])


def test_macro_averages_follow_the_checkpoint_selection_convention():
    """A class absent from the truth and never predicted scores 0 in both places."""
    import torch

    from hmf.training.loop import Item, validation_scores

    class Fixed(torch.nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits = logits
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return {"logits": self.logits[int(x)]}

        def loss(self, out, label, context):
            return torch.nn.functional.cross_entropy(out["logits"][None], label[None])

    truth = [0, 0, 1, 1, 1]
    logits = torch.tensor([[3.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 3.0, 0, 0], [0, 3.0, 0, 0], [3.0, 0, 0, 0]])
    items = [Item(key=str(i), label=t, inputs={"x": torch.tensor(i)}) for i, t in enumerate(truth)]
    val = validation_scores(Fixed(logits), items, {}, torch.device("cpu"), bf16=False)
    probs = torch.softmax(logits, -1).numpy()
    ours = scores(np.array(truth), probs.argmax(1), probs, 4, ordinal=True)
    assert val["f1_macro"] == pytest.approx(ours["f1_macro"][0])
    assert ours["f1_macro"][0] == pytest.approx((1 / 2 + 2 / 3 + 0 + 0) / 4)  # classes 2 and 3 count 0


def test_pooled_metrics_and_intervals(tmp_path, cohort):
    truth, good, _ = cohort
    paths, patient_of = fold_files(tmp_path, "hmf", truth, good)
    pooled = pool_predictions(paths, CLASSES, patient_of)
    assert len(pooled) == len(truth) and pooled["patient_id"].nunique() == len(truth) // 2
    everything = read_predictions(paths[0], CLASSES)
    everything = pd.concat([everything, read_predictions(paths[1], CLASSES)])
    resamples = draw_resamples(pooled["patient_id"], 500, seed=7)
    row = pooled_summary(pooled, CLASSES, True, resamples, ["accuracy", "kappa_quadratic", "auc"])
    assert row["accuracy_pooled"] == pytest.approx(compute_metrics(everything, CLASSES, True)["accuracy"])
    for m in ("accuracy", "kappa_quadratic", "auc"):
        assert row[f"{m}_ci_low"] < row[f"{m}_pooled"] < row[f"{m}_ci_high"]
        assert row[f"{m}_resamples"] > 400
    # A patient's slides are drawn together: equal weights for the two slides of each patient.
    weights = resamples.weights(pooled)
    first, second = pooled.index[pooled["patient_id"] == "p003"]
    assert np.array_equal(weights[:, first], weights[:, second])
    again = pooled_summary(pooled, CLASSES, True, draw_resamples(pooled["patient_id"], 500, seed=7), ["accuracy"])
    assert again["accuracy_ci_low"] == row["accuracy_ci_low"]  # fixed seed, same interval
    other = draw_resamples(pooled["patient_id"], 500, seed=8)
    assert not np.array_equal(other.counts, resamples.counts)


def test_overlapping_folds_and_unknown_slides_are_rejected(tmp_path, cohort):
    truth, good, _ = cohort
    paths, patient_of = fold_files(tmp_path, "hmf", truth, good)
    with pytest.raises(ValueError, match="more than one test fold"):
        pool_predictions([paths[0], paths[0]], CLASSES, patient_of)
    with pytest.raises(ValueError, match="not in the sample sheet"):
        pool_predictions(paths, CLASSES, {k: v for k, v in patient_of.items() if k != "s000"})


def test_one_hot_predictor_gets_no_auc(tmp_path):
    path = tmp_path / "pn.csv"
    write_predictions(["a", "b", "c", "d"], [0, 1, 2, 3], np.eye(4)[[0, 1, 3, 3]], CLASSES, path)
    m = compute_metrics(read_predictions(path, CLASSES), CLASSES, ordinal=True)
    assert m["auc"] is None and any("one-hot" in n for n in m["notes"])
    assert m["kappa_quadratic"] is not None


def test_paired_comparison(tmp_path, cohort):
    truth, good, bad = cohort
    frames = {}
    for model, probs in (("hmf", good), ("meanpool", bad), ("copy", good)):
        paths, patient_of = fold_files(tmp_path, model, truth, probs)
        frames[model] = pool_predictions(paths, CLASSES, patient_of)
    resamples = draw_resamples(frames["hmf"]["patient_id"], 1000, seed=0)
    rows = paired_comparison(frames, "hmf", CLASSES, True, resamples, ["f1_macro", "kappa_quadratic", "auc"])
    assert set(rows["model"]) == {"meanpool", "copy"} and len(rows) == 6
    worse = rows[rows.model == "meanpool"].set_index("metric")
    for m in ("f1_macro", "kappa_quadratic", "auc"):
        r = worse.loc[m]
        assert r["difference"] == pytest.approx(r["model_value"] - r["reference_value"])
        assert r["ci_low"] <= r["difference"] <= r["ci_high"] < 0
        assert r["p_value"] < 0.01
    same = rows[rows.model == "copy"]
    assert (same["difference"] == 0).all() and (same["p_value"] == 1).all()
    reverse = paired_comparison(frames, "meanpool", CLASSES, True, resamples, ["f1_macro"]).set_index("model")
    assert reverse.loc["hmf", "difference"] == pytest.approx(-worse.loc["f1_macro", "difference"])


def test_two_sided_p_value():
    assert two_sided_p(np.array([1.0] * 99 + [-1.0])) == pytest.approx(2 * 2 / 101)
    assert two_sided_p(np.zeros(10)) == 1.0
    assert np.isnan(two_sided_p(np.array([np.nan])))


def test_level_table_and_comparison_files(tmp_path, cohort):
    truth, good, bad = cohort
    preds, metrics = {}, {}
    sheet_rows = []
    pn = np.eye(4)[np.clip(good.argmax(1), 0, 3)]
    for model, probs in (("hmf", good), ("meanpool", bad), ("pn_like", pn)):
        preds[model], patient_of = fold_files(tmp_path, model, truth, probs)
        metrics[model] = []
        for k, path in enumerate(preds[model]):
            out = path.with_name("metrics.json")
            ids = set(pd.read_csv(path)["id"])
            expected = sorted(ids | ({"s999"} if k == 0 else set()))  # one slide without patches
            evaluate_fold(path, out, path.with_name("confusion.png"), CLASSES, True, expected_ids=expected)
            metrics[model].append(out)
    saved = json.loads(metrics["hmf"][0].read_text())
    assert saved["left_out"] == {"n": 1, "ids": ["s999"], "reason": saved["left_out"]["reason"]}
    assert "without patches" in saved["left_out"]["reason"]
    for slide, patient in {**patient_of, "s999": "p999"}.items():
        sheet_rows.append(
            {
                "slide_id": slide,
                "patient_id": patient,
                "path": f"{slide}.tif",
                "slide_label": "negative",
                "patient_label": "pN0",
                "node": "",
                "mpp": "",
            }
        )
    sheet = tmp_path / "sheet.csv"
    pd.DataFrame(sheet_rows).to_csv(sheet, index=False)
    out = tmp_path / "tables"
    boot = {"resamples": 300, "seed": 0}
    summary = write_level_table(
        metrics,
        preds,
        sheet,
        "slide",
        CLASSES,
        True,
        out / "slide.csv",
        out / "slide.md",
        out / "slide.png",
        "demo: slide level",
        boot,
        notes=["An extra note."],
    )
    csv = pd.read_csv(out / "slide.csv", keep_default_na=False, na_values=[""]).set_index("model")
    assert csv.loc["hmf", "n"] == len(truth) and csv.loc["hmf", "left_out"] == 1
    assert csv.loc["hmf", "accuracy_ci_low"] < csv.loc["hmf", "accuracy_pooled"] < csv.loc["hmf", "accuracy_ci_high"]
    assert csv.loc["pn_like", "auc_pooled_ci"] == "n/a" and np.isnan(csv.loc["pn_like", "auc_pooled"])
    md = (out / "slide.md").read_text()
    hmf_row = next(line for line in md.splitlines() if line.startswith("| hmf "))
    assert "[" in hmf_row and "±" in hmf_row and "**" in hmf_row
    assert f"over all {len(truth)} test slides of the 2 folds" in md and "300 resamples of patients" in md
    assert "macro averages over all 4 classes" in md
    assert "Left out (every model): 1 test slides without patches" in md and "s999" in md
    assert "An extra note." in md and "AUC n/a" in md
    assert (out / "slide.png").read_bytes().startswith(b"\x89PNG")
    assert summary.attrs["notes"]

    rows = write_level_comparison(
        preds,
        sheet,
        "slide",
        CLASSES,
        True,
        "hmf",
        out / "c.csv",
        out / "c.md",
        out / "c.png",
        "demo: comparison",
        boot,
    )
    assert set(rows["model"]) == {"meanpool", "pn_like"}
    pn_auc = rows[(rows.model == "pn_like") & (rows.metric == "auc")].iloc[0]
    assert np.isnan(pn_auc["difference"]) and np.isnan(pn_auc["p_value"])
    cmd = (out / "c.md").read_text()
    assert "| Model | Δ F1 | Δ AUC | Δ Kappa | n |" in cmd and "p = " in cmd and "n/a" in cmd
    assert "paired bootstrap" in cmd and "two-sided" in cmd
    assert (out / "c.png").read_bytes().startswith(b"\x89PNG")

    from hmf.report.table_html import comparison_html, table_html

    fragment = table_html(out / "slide.csv", "slide")
    assert "<br>" in fragment and "±" in fragment and "Left out" in fragment
    fragment = comparison_html(out / "c.csv", out / "c.md", "cmp")
    assert fragment.count("<tr>") == 3 and "p = " in fragment


def test_predictions_outside_the_test_part_are_an_error(tmp_path, cohort):
    truth, good, _ = cohort
    paths, _ = fold_files(tmp_path, "hmf", truth, good)
    with pytest.raises(ValueError, match="outside the fold's test part"):
        evaluate_fold(paths[0], tmp_path / "m.json", tmp_path / "c.png", CLASSES, True, expected_ids=["s000"])


# -- repeated cross-validation ---------------------------------------------------------------


def repeated_files(tmp_path, model, truth, probs_per_repeat, n_folds=2):
    """R repeats of ``n_folds`` predictions files (fold f = fold f % K of repeat f // K), each
    repeat with its own probabilities and its own assignment of patients to folds."""
    paths = []
    for r, probs in enumerate(probs_per_repeat):
        ids = [f"s{i:03d}" for i in range(len(truth))]
        for k in range(n_folds):
            rows = [i for i in range(len(ids)) if (i // 2 + r) % n_folds == k]
            path = tmp_path / model / f"fold_{r * n_folds + k}" / "predictions.csv"
            write_predictions([ids[i] for i in rows], [truth[i] for i in rows], probs[rows], CLASSES, path)
            paths.append(path)
    return paths, {f"s{i:03d}": f"p{i // 2:03d}" for i in range(len(truth))}


def test_repeats_are_pooled_per_repeat_and_averaged(tmp_path, cohort):
    truth, good, bad = cohort
    rng = np.random.default_rng(5)
    repeats = [good, noisy_probs(rng, truth, 0.6), bad]
    paths, patient_of = repeated_files(tmp_path, "hmf", truth, repeats)
    frame = pool_predictions(paths, CLASSES, patient_of, folds_per_repeat=2)
    assert sorted(frame["repeat"].unique()) == [0, 1, 2] and len(frame) == 3 * len(truth)
    singles = [frame[frame["repeat"] == r].drop(columns="repeat").reset_index(drop=True) for r in range(3)]
    resamples = draw_resamples(frame["patient_id"], 400, seed=2)
    metrics = ["accuracy", "f1_macro", "auc", "kappa_quadratic"]
    row = pooled_summary(frame, CLASSES, True, resamples, metrics)
    per_repeat = [compute_metrics(single, CLASSES, ordinal=True) for single in singles]
    assert row["repeats"] == 3 and row["n"] == len(truth)
    for m in metrics:
        values = [p[m] for p in per_repeat]
        assert row[f"{m}_pooled"] == pytest.approx(np.mean(values))
        assert (row[f"{m}_pooled_min"], row[f"{m}_pooled_max"]) == (
            pytest.approx(min(values)),
            pytest.approx(max(values)),
        )
        # The interval of the mean over repeats: every repeat scored on the same patient draws.
        boot = np.mean([resampled_scores(single, CLASSES, True, resamples)[m] for single in singles], axis=0)
        low, high, kept = percentile_interval(boot)
        assert (row[f"{m}_ci_low"], row[f"{m}_ci_high"], row[f"{m}_resamples"]) == (
            pytest.approx(low),
            pytest.approx(high),
            kept,
        )
    # Scoring the repeats on independent draws would give another (here: narrower) interval.
    independent = [draw_resamples(frame["patient_id"], 400, seed=10 + r) for r in range(3)]
    shuffled = np.mean(
        [resampled_scores(single, CLASSES, True, res)["accuracy"] for single, res in zip(singles, independent)], axis=0
    )
    assert percentile_interval(shuffled)[:2] != pytest.approx((row["accuracy_ci_low"], row["accuracy_ci_high"]))


def test_one_repeat_is_the_single_cross_validation(tmp_path, cohort):
    truth, good, _ = cohort
    paths, patient_of = fold_files(tmp_path, "hmf", truth, good)
    resamples = draw_resamples(patient_of.values(), 300, seed=0)
    once = pool_predictions(paths, CLASSES, patient_of)
    as_repeat = pool_predictions(paths, CLASSES, patient_of, folds_per_repeat=2)
    a = pooled_summary(once, CLASSES, True, resamples, ["accuracy", "auc"])
    b = pooled_summary(as_repeat, CLASSES, True, resamples, ["accuracy", "auc"])
    assert a == b and a["repeats"] == 1
    # pooled over the two folds: the point value is the value of all predictions at once
    assert a["accuracy_pooled"] == compute_metrics(once, CLASSES, True)["accuracy"]
    # two identical repeats: the same value and interval as one
    twice = pool_predictions([*paths, *paths], CLASSES, patient_of, folds_per_repeat=2)
    c = pooled_summary(twice, CLASSES, True, resamples, ["accuracy", "auc"])
    for key in ("accuracy_pooled", "accuracy_ci_low", "accuracy_ci_high", "auc_pooled", "auc_ci_high"):
        assert c[key] == pytest.approx(a[key])
    assert c["repeats"] == 2 and c["accuracy_pooled_min"] == c["accuracy_pooled_max"]


def test_a_repeat_tests_each_id_once(tmp_path, cohort):
    truth, good, _ = cohort
    paths, patient_of = fold_files(tmp_path, "hmf", truth, good)
    with pytest.raises(ValueError, match="more than one test fold .* of a repeat must partition"):
        pool_predictions([paths[0], paths[0], *paths], CLASSES, patient_of, folds_per_repeat=2)
    with pytest.raises(ValueError, match="not whole repeats of 2 folds"):
        pool_predictions([*paths, paths[0]], CLASSES, patient_of, folds_per_repeat=2)


def test_paired_comparison_over_repeats(tmp_path, cohort):
    truth, good, bad = cohort
    rng = np.random.default_rng(7)
    frames = {}
    for model, probs in (
        ("hmf", [good, noisy_probs(rng, truth, 0.8)]),
        ("meanpool", [bad, noisy_probs(rng, truth, 0.5)]),
    ):
        paths, patient_of = repeated_files(tmp_path, model, truth, probs)
        frames[model] = pool_predictions(paths, CLASSES, patient_of, folds_per_repeat=2)
    resamples = draw_resamples(patient_of.values(), 300, seed=0)
    row = paired_comparison(frames, "hmf", CLASSES, True, resamples, ["f1_macro"]).iloc[0]
    per_repeat = [
        compute_metrics(frames["meanpool"][frames["meanpool"]["repeat"] == r], CLASSES, True)["f1_macro"]
        - compute_metrics(frames["hmf"][frames["hmf"]["repeat"] == r], CLASSES, True)["f1_macro"]
        for r in range(2)
    ]
    assert row["repeats"] == 2 and row["n"] == len(truth)
    assert row["difference"] == pytest.approx(np.mean(per_repeat))
    assert (row["difference_min"], row["difference_max"]) == (
        pytest.approx(min(per_repeat)),
        pytest.approx(max(per_repeat)),
    )
    assert row["ci_low"] <= row["difference"] <= row["ci_high"] < 0


def test_holm_adjustment():
    adjusted = holm([0.01, 0.04, 0.03, np.nan])
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06]) and np.isnan(adjusted[3])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.02]) == pytest.approx([0.02])  # one comparison: unchanged


def test_comparison_rows_carry_holm_within_each_metric(tmp_path, cohort):
    truth, good, bad = cohort
    frames = {}
    for model, probs in (("hmf", good), ("meanpool", bad), ("copy", good), ("pn_like", np.eye(4)[good.argmax(1)])):
        paths, patient_of = fold_files(tmp_path, model, truth, probs)
        frames[model] = pool_predictions(paths, CLASSES, patient_of)
    resamples = draw_resamples(patient_of.values(), 300, seed=0)
    rows = paired_comparison(frames, "hmf", CLASSES, True, resamples, ["f1_macro", "auc"])
    for _, part in rows.groupby("metric"):
        finite = part["p_value"].notna()
        assert (part["comparisons"] == finite.sum()).all()
        assert part.loc[finite, "p_holm"].to_numpy() == pytest.approx(holm(part.loc[finite, "p_value"].to_numpy()))
        assert (part["p_holm"][finite] >= part["p_value"][finite]).all()
    assert rows.set_index(["model", "metric"]).loc[("meanpool", "f1_macro"), "comparisons"] == 3
    assert rows.set_index(["model", "metric"]).loc[("meanpool", "auc"), "comparisons"] == 2  # pn_like has no AUC
