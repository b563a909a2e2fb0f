"""Result tables: mean ± sample std over folds, Markdown layout, CSV columns and the figure."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from hmf.data.splits import FoldDesign
from hmf.evaluation.bootstrap import holm
from hmf.evaluation.metrics import evaluate_fold
from hmf.evaluation.predictions import write_predictions
from hmf.evaluation.tables import (
    build_tables,
    format_cell,
    format_pooled,
    summarise,
    write_level_comparison,
    write_level_table,
)

CLASSES = ["neg", "pos"]


def metrics_file(path, accuracy, auc=0.5, kappa=None, classes=CLASSES):
    record = {
        "accuracy": accuracy,
        "balanced_accuracy": accuracy,
        "precision_macro": accuracy / 2,
        "recall_macro": accuracy / 2,
        "f1_macro": accuracy / 2,
        "f1_weighted": accuracy,
        "auc": auc,
        "kappa_quadratic": kappa,
        "classes": classes,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


@pytest.fixture()
def paths(tmp_path):
    return {
        "abmil": [
            metrics_file(tmp_path / "abmil" / f"fold_{k}.json", acc, auc)
            for k, (acc, auc) in enumerate([(0.6, 0.7), (0.7, None), (0.8, 0.9)])
        ],
        "hmf": [
            metrics_file(tmp_path / "hmf" / f"fold_{k}.json", acc, 0.95) for k, acc in enumerate([0.90, 0.85, 0.80])
        ],
        "maxpool": [metrics_file(tmp_path / "maxpool" / "fold_0.json", 0.55, 0.6)],
    }


def test_mean_and_sample_std_over_folds(paths):
    summary = summarise(paths, metrics=["accuracy", "auc"])
    row = summary.set_index("model").loc["abmil"]
    assert row["folds"] == 3
    assert row["accuracy_mean"] == pytest.approx(0.7)
    # sample std (ddof=1) of 0.6, 0.7, 0.8 is 0.1; the population std would be 0.0816
    assert row["accuracy_std"] == pytest.approx(0.1)
    assert row["accuracy"] == "0.700 ± 0.100"
    # AUC only where defined: folds 0 and 2
    assert row["auc_n"] == 2
    assert row["auc_mean"] == pytest.approx(0.8)
    assert row["auc_std"] == pytest.approx(np.std([0.7, 0.9], ddof=1))
    single = summary.set_index("model").loc["maxpool"]
    assert single["accuracy"] == "0.550 (1 fold)" and np.isnan(single["accuracy_std"])
    assert list(summary["model"]) == ["abmil", "hmf", "maxpool"]


def test_format_cell():
    assert format_cell(0.8404, 0.0716, 5) == "0.840 ± 0.072"
    assert format_cell(0.5, float("nan"), 1) == "0.500 (1 fold)"
    assert format_cell(float("nan"), float("nan"), 0) == "–"


def test_build_tables_writes_csv_markdown_and_figure(paths, tmp_path):
    out = tmp_path / "tables"
    summary = build_tables(
        paths, out / "slide.csv", out / "slide.md", out / "slide.png", "Slide level", model_order=["hmf", "maxpool"]
    )
    assert list(summary["model"]) == ["hmf", "maxpool", "abmil"]

    csv = pd.read_csv(out / "slide.csv")
    for column in ["model", "folds", "accuracy_mean", "accuracy_std", "accuracy_n", "accuracy", "auc_mean"]:
        assert column in csv.columns
    assert csv.loc[csv["model"] == "hmf", "accuracy_std"].item() == pytest.approx(0.05)

    md = (out / "slide.md").read_text()
    lines = md.splitlines()
    assert lines[0] == "### Slide level"
    # kappa is None everywhere (not an ordinal task): no Kappa column
    assert lines[2] == "| Model | Accuracy | Precision | Recall | F1 | AUC | Folds |"
    hmf_row = next(line for line in lines if line.startswith("| hmf "))
    assert "**0.850 ± 0.050**" in hmf_row  # best accuracy in bold
    assert "**0.950 ± 0.000**" in hmf_row
    assert hmf_row.endswith("| 3 |")
    abmil_row = next(line for line in lines if line.startswith("| abmil "))
    assert "0.800 ± 0.141¹" in abmil_row and "**" not in abmil_row
    assert "¹ AUC of abmil: averaged over the 2 of 3 folds" in md
    assert "0.550 (1 fold)" in md

    png = (out / "slide.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    assert not list(out.glob(".*"))


def test_tables_from_real_fold_evaluations(tmp_path):
    rng = np.random.default_rng(0)
    metrics = {}
    for model in ("meanpool", "hmf"):
        metrics[model] = []
        for fold in range(2):
            probs = rng.dirichlet([1, 1, 1], size=12)
            truth = np.tile([0, 1, 2], 4)
            base = tmp_path / model / f"fold_{fold}"
            write_predictions([f"s{i:02d}" for i in range(12)], truth, probs, ["x", "y", "z"], base / "predictions.csv")
            evaluate_fold(
                base / "predictions.csv", base / "metrics.json", base / "confusion.png", ["x", "y", "z"], ordinal=True
            )
            metrics[model].append(base / "metrics.json")
    summary = build_tables(metrics, tmp_path / "t.csv", tmp_path / "t.md", tmp_path / "t.png", "Patient level")
    folds = [json.loads(p.read_text())["kappa_quadratic"] for p in metrics["hmf"]]
    row = summary.set_index("model").loc["hmf"]
    assert row["kappa_quadratic_mean"] == pytest.approx(np.mean(folds))
    assert row["kappa_quadratic_std"] == pytest.approx(np.std(folds, ddof=1))
    assert "| Kappa | Folds |" in (tmp_path / "t.md").read_text()


def test_inconsistent_or_missing_inputs_are_rejected(paths, tmp_path):
    paths["other"] = [metrics_file(tmp_path / "other.json", 0.5, classes=["a", "b", "c"])]
    with pytest.raises(ValueError, match="other.json.*classes"):
        summarise(paths)
    with pytest.raises(FileNotFoundError, match="model 'ghost'"):
        summarise({"ghost": [tmp_path / "missing.json"]})
    with pytest.raises(ValueError, match="unknown metric"):
        summarise({"hmf": paths["hmf"]}, metrics=["accuracy", "speed"])
    with pytest.raises(ValueError, match="without metrics files"):
        summarise({"hmf": paths["hmf"]}, model_order=["hmf", "dsmil"])


def repeated_run(tmp_path, models, n_patients=24, repeats=2, k=2, rare=False):
    """Predictions and metrics files of R repeats of K folds per model (fold f = fold f % K of
    repeat f // K), one slide per patient, and the sample sheet."""
    rng = np.random.default_rng(3)
    classes = ["x", "y", "z"]
    truth = np.tile([0, 1, 2], n_patients // 3)
    if rare:
        truth[truth == 2] = 0
        truth[:2] = 2  # class z: 2 patients
    ids = [f"s{i:02d}" for i in range(n_patients)]
    preds, metrics = {}, {}
    for model, skill in models.items():
        preds[model], metrics[model] = [], []
        for r in range(repeats):
            probs = rng.dirichlet([1, 1, 1], size=n_patients)
            probs[np.arange(n_patients), truth] += skill
            probs /= probs.sum(1, keepdims=True)
            order = rng.permutation(n_patients)
            for j in range(k):
                rows = sorted(order[j::k])
                base = tmp_path / model / f"fold_{r * k + j}"
                write_predictions([ids[i] for i in rows], truth[rows], probs[rows], classes, base / "predictions.csv")
                evaluate_fold(base / "predictions.csv", base / "metrics.json", base / "confusion.png", classes, True)
                preds[model].append(base / "predictions.csv")
                metrics[model].append(base / "metrics.json")
    sheet = pd.DataFrame(
        {"slide_id": ids, "patient_id": ids, "path": "", "slide_label": "", "patient_label": "", "node": "", "mpp": ""}
    )
    sheet.to_csv(tmp_path / "sheet.csv", index=False)
    return classes, preds, metrics


def test_table_over_repeats_reports_mean_and_range(tmp_path):
    classes, preds, metrics = repeated_run(tmp_path, {"hmf": 1.0, "meanpool": 0.2}, repeats=3)
    design = FoldDesign(2, repeats=3, seed=0)
    out = tmp_path / "tables"
    summary = write_level_table(
        metrics,
        preds,
        tmp_path / "sheet.csv",
        "patient",
        classes,
        True,
        out / "p.csv",
        out / "p.md",
        out / "p.png",
        "patients",
        {"resamples": 200, "seed": 0},
        design=design,
    )
    row = summary.set_index("model").loc["hmf"]
    assert row["folds"] == 6 and row["repeats"] == 3 and row["n"] == 24
    per_repeat = []
    for r in range(3):
        frames = [pd.read_csv(path) for path in preds["hmf"][2 * r : 2 * r + 2]]
        pooled = pd.concat(frames)
        per_repeat.append((pooled["true_label"] == pooled["pred_label"]).mean())
    assert row["accuracy_pooled"] == pytest.approx(np.mean(per_repeat))
    assert row["accuracy_pooled_min"] == pytest.approx(min(per_repeat))
    assert row["accuracy_pooled_max"] == pytest.approx(max(per_repeat))
    assert row["accuracy_pooled_ci"] == format_pooled(
        row["accuracy_pooled"], row["accuracy_ci_low"], row["accuracy_ci_high"], min(per_repeat), max(per_repeat), 3
    )
    md = (out / "p.md").read_text()
    assert "| Folds | Repeats |" in md and ", range " in md
    assert "the mean over 3 repeats of the pooled out-of-fold value" in md
    assert "scores every repeat on that draw" in md
    assert "held fixed" in md and "repeated 3 times (seeds 0-2)" in md and "Pooled AUC ranks together" in md
    csv = pd.read_csv(out / "p.csv")
    assert {"repeats", "accuracy_pooled_min", "accuracy_pooled_max"} <= set(csv.columns)

    from hmf.report.table_html import table_html

    assert "<th" in table_html(out / "p.csv", "t") and "Repeats" in table_html(out / "p.csv", "t")


def test_comparison_table_holm_and_footnotes(tmp_path):
    classes, preds, _ = repeated_run(
        tmp_path, {"hmf": 1.0, "meanpool": 0.1, "maxpool": 0.3, "abmil": 0.9}, repeats=1, k=2, n_patients=30, rare=True
    )
    out = tmp_path / "tables"
    design = FoldDesign(2, group_by="centre", leave_one_group_out=True)
    rows = write_level_comparison(
        preds,
        tmp_path / "sheet.csv",
        "patient",
        classes,
        True,
        "hmf",
        out / "c.csv",
        out / "c.md",
        out / "c.png",
        "cmp",
        {"resamples": 300, "seed": 1},
        design=design,
    )
    csv = pd.read_csv(out / "c.csv")
    assert {"p_value", "p_holm", "comparisons"} <= set(csv.columns)
    for _, part in csv.groupby("metric"):
        assert part["p_holm"].to_numpy() == pytest.approx(holm(part["p_value"].to_numpy()))
        assert (part["comparisons"] == 3).all()
    md = (out / "c.md").read_text()
    first = rows.iloc[0]
    assert f"p = {first['p_value']:.3g} (Holm {first['p_holm']:.3g})" in md
    assert "Holm's step-down method within each metric" in md
    assert "(F1 3, AUC 3, Kappa 3; 9 comparisons in this table)" in md
    assert "trained models held fixed" in md
    assert "Folds: leave one centre out (2 folds" in md
    kept = int(csv.loc[csv["metric"] == "auc", "resamples"].iloc[0])
    assert 0 < kept < 300  # with 2 patients of class z, some resamples draw none
    assert f"AUC kept {kept} of 300 resamples" in md and "calibration" in md
    assert "Rare class(es): y (9 patients), z (2 patients)." in md and "under-covers" in md
    assert ", range " not in md  # one repeat: no range

    from hmf.report.table_html import comparison_html

    fragment = comparison_html(out / "c.csv", out / "c.md", "cmp")
    assert "Holm" in fragment and fragment.count("<tr>") == 4
