"""Result tables: mean ± sample std over folds, Markdown layout, CSV columns and the figure."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from hmf.evaluation.metrics import evaluate_fold
from hmf.evaluation.predictions import write_predictions
from hmf.evaluation.tables import build_tables, format_cell, summarise

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
