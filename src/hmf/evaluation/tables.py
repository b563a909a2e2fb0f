"""Result tables: per model, each metric pooled over all out-of-fold predictions with a
patient-level bootstrap 95% confidence interval, beside the ``mean ± std`` of the per-fold values;
and the paired comparison of every model with a reference model.

The std is the sample standard deviation over folds (ddof = 1). A metric missing from some
folds (AUC when a class was absent, kappa when undefined) is averaged over the folds that
have it, and the Markdown table says so in a footnote.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from hmf.atomic import write_csv, write_text
from hmf.evaluation.bootstrap import Resamples, draw_resamples, paired_comparison, pool_predictions, pooled_summary
from hmf.evaluation.plots import plot_forest, plot_metric_bars

DEFAULT_METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "auc", "kappa_quadratic")
METRIC_LABELS = {
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "precision_macro": "Precision",
    "recall_macro": "Recall",
    "f1_macro": "F1",
    "f1_weighted": "Weighted F1",
    "auc": "AUC",
    "kappa_quadratic": "Kappa",
}
_SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
COMPARED_METRICS = ("f1_macro", "kappa_quadratic", "auc")
MACRO_NOTE = (
    "Precision, recall and F1 are macro averages over all {n} classes of the task (a class absent from "
    "the true labels and never predicted scores 0, with zero_division = 0); checkpoints are selected on "
    "validation metrics with the same convention."
)


def _load(path, model: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise FileNotFoundError(f"metrics file of model {model!r} not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"metrics file {path} (model {model!r}) is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"metrics file {path} (model {model!r}) does not hold a JSON object")
    return data


def format_cell(mean: float, std: float, n: int) -> str:
    """``0.840 ± 0.072``; a single fold gives ``0.840 (1 fold)``; no fold gives ``–``."""
    if n == 0 or not np.isfinite(mean):
        return "–"
    if n == 1:
        return f"{mean:.3f} (1 fold)"
    return f"{mean:.3f} ± {std:.3f}"


def summarise(
    metrics_paths: Mapping[str, Sequence[str | os.PathLike]],
    metrics: Sequence[str] = DEFAULT_METRICS,
    model_order: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per model: ``model``, ``folds`` and, per metric, ``<m>_mean``, ``<m>_std``
    (ddof = 1; NaN with fewer than two values), ``<m>_n`` (folds with a value) and ``<m>``
    (the formatted cell)."""
    unknown = [m for m in metrics if m not in METRIC_LABELS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {list(METRIC_LABELS)}")
    models = _ordered_models(metrics_paths, model_order)
    reference_classes = None
    rows = []
    for model in models:
        paths = list(metrics_paths[model])
        if not paths:
            raise ValueError(f"model {model!r}: no metrics files")
        row: dict = {"model": model, "folds": len(paths), "left_out": 0, "left_out_ids": ""}
        values = {m: [] for m in metrics}
        left_out_ids: list[str] = []
        reason = ""
        for path in paths:
            data = _load(path, model)
            left_out_ids += list((data.get("left_out") or {}).get("ids", []))
            reason = reason or (data.get("left_out") or {}).get("reason", "")
            classes = data.get("classes")
            if reference_classes is None:
                reference_classes = (classes, path)
            elif classes != reference_classes[0]:
                raise ValueError(
                    f"metrics file {path} (model {model!r}) has classes {classes}, but {reference_classes[1]} "
                    f"has {reference_classes[0]}: a table compares models on one task"
                )
            for m in metrics:
                if m not in data:
                    raise ValueError(f"metrics file {path} (model {model!r}) has no {m!r} entry")
                if data[m] is not None:
                    values[m].append(float(data[m]))
        for m in metrics:
            v = np.asarray(values[m], dtype=float)
            mean = float(v.mean()) if len(v) else float("nan")
            std = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
            row[f"{m}_mean"] = mean
            row[f"{m}_std"] = std
            row[f"{m}_n"] = int(len(v))
            row[m] = format_cell(mean, std, len(v))
        row["left_out"], row["left_out_ids"] = len(left_out_ids), " ".join(sorted(left_out_ids))
        row["left_out_reason"] = reason
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame.attrs["classes"] = reference_classes[0] if reference_classes else None
    return frame


def _ordered_models(metrics_paths: Mapping, model_order: Sequence[str] | None) -> list[str]:
    if not metrics_paths:
        raise ValueError("no models to tabulate")
    if model_order is None:
        return list(metrics_paths)
    missing = [m for m in model_order if m not in metrics_paths]
    if missing:
        raise ValueError(f"model_order names model(s) without metrics files: {missing}")
    return list(model_order) + [m for m in metrics_paths if m not in model_order]


def format_pooled(value: float, low: float, high: float) -> str:
    """``0.812 [0.743, 0.871]`` (pooled value and its interval); ``n/a`` when undefined."""
    if not np.isfinite(value):
        return "n/a"
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def add_pooled(summary: pd.DataFrame, pooled: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """``summary`` with the pooled columns of ``pooled`` (one row per model, see
    ``pooled_summary``) and a formatted ``<m>_pooled_ci`` cell per metric."""
    missing = sorted(set(summary["model"]) - set(pooled["model"]))
    if missing:
        raise ValueError(f"no pooled predictions for model(s) {missing}")
    merged = summary.merge(pooled, on="model", how="left", validate="one_to_one")
    for m in metrics:
        merged[f"{m}_pooled_ci"] = [
            format_pooled(v, lo, hi)
            for v, lo, hi in zip(merged[f"{m}_pooled"], merged[f"{m}_ci_low"], merged[f"{m}_ci_high"])
        ]
    merged.attrs = dict(summary.attrs)
    return merged


def shown_metrics(summary: pd.DataFrame, metrics: Sequence[str]) -> list[str]:
    """The metrics some model has a value for (per fold or pooled)."""
    pooled = f"{metrics[0]}_pooled" in summary if metrics else False
    return [
        m
        for m in metrics
        if (summary[f"{m}_n"] > 0).any() or (pooled and np.isfinite(summary[f"{m}_pooled"].to_numpy(dtype=float)).any())
    ]


def table_notes(summary: pd.DataFrame, level_noun: str = "predictions", bootstrap: dict | None = None) -> list[str]:
    """The footnotes every rendering of the table carries: what a cell is, the macro-average
    convention, n/a values, and the slides or patients left out."""
    notes = []
    if "n" in summary:
        n = int(summary["n"].max())
        notes.append(
            f"Each cell: the pooled out-of-fold value, computed once over all {n} test {level_noun} of the "
            f"{int(summary['folds'].max())} folds, with its 95% confidence interval in brackets (percentile bootstrap "
            f"over {bootstrap['resamples']} resamples of patients, a patient's slides together, seed "
            f"{bootstrap['seed']}); then the mean ± sample standard deviation (ddof = 1) of the per-fold values. "
            "Best pooled value per column in bold."
        )
        if any((not np.isfinite(v)) and n > 0 for v in summary.get("auc_pooled", pd.Series(dtype=float))):
            notes.append(
                "AUC n/a: a model with one-hot probabilities (hard labels, e.g. the pN rule) has no scores to "
                "rank, or a class is absent from the true labels."
            )
    else:
        notes.append("Mean ± sample standard deviation (ddof = 1) over folds; best mean per column in bold.")
    classes = summary.attrs.get("classes")
    if classes:
        notes.append(MACRO_NOTE.format(n=len(classes)))
    if "left_out" in summary and (summary["left_out"] > 0).any():
        groups = summary.groupby(["left_out", "left_out_ids", "left_out_reason"], sort=False)["model"].apply(list)
        for (count, ids, reason), models in groups.items():
            if count == 0:
                continue
            who = "every model" if len(models) == len(summary) else ", ".join(models)
            shown = ", ".join(ids.split()[:20]) + (" ..." if count > 20 else "")
            notes.append(f"Left out ({who}): {count} {reason or 'ids without a prediction'}: {shown}.")
    return notes


def markdown_table(
    summary: pd.DataFrame,
    metrics: Sequence[str],
    title: str,
    model_labels: Mapping[str, str] | None = None,
    notes: Sequence[str] = (),
) -> str:
    """The paper's layout (Model | Accuracy | Precision | Recall | F1 | AUC | Kappa | Folds),
    best value per column in bold (pooled when the summary has pooled columns, else the mean
    over folds); metrics no model has are left out; ``notes`` go under the table."""
    model_labels = model_labels or {}
    pooled = "n" in summary
    shown = shown_metrics(summary, metrics)
    header = ["Model", *[METRIC_LABELS[m] for m in shown], "Folds"]
    best = {}
    for m in shown:
        rounded = summary[f"{m}_pooled" if pooled else f"{m}_mean"].round(3)
        best[m] = rounded.max() if rounded.notna().sum() > 1 else None
    footnotes: list[str] = []
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for _, row in summary.iterrows():
        cells = [model_labels.get(row["model"], row["model"])]
        for m in shown:
            value = row[f"{m}_pooled" if pooled else f"{m}_mean"]
            cell = f"{row[f'{m}_pooled_ci']}; {row[m]}" if pooled else row[m]
            if best[m] is not None and round(value, 3) == best[m]:
                cell = f"**{cell}**"
            if 0 < row[f"{m}_n"] < row["folds"]:
                footnotes.append(
                    f"{METRIC_LABELS[m]} of {cells[0]}: averaged over the {row[f'{m}_n']} of {row['folds']} folds "
                    f"where it is defined (see the notes in the other folds' metrics.json)."
                )
                cell += str(len(footnotes)).translate(_SUPERSCRIPT)
            cells.append(cell)
        cells.append(str(row["folds"]))
        lines.append("| " + " | ".join(cells) + " |")
    for note in notes:
        lines += ["", note]
    for i, note in enumerate(footnotes, start=1):
        lines.append("")
        lines.append(f"{str(i).translate(_SUPERSCRIPT)} {note}")
    return "\n".join(lines) + "\n"


def build_tables(
    metrics_paths: Mapping[str, Sequence[str | os.PathLike]],
    out_csv: str | os.PathLike,
    out_md: str | os.PathLike,
    out_png: str | os.PathLike,
    title: str,
    metrics: Sequence[str] = DEFAULT_METRICS,
    model_order: Sequence[str] | None = None,
    model_labels: Mapping[str, str] | None = None,
    pooled: pd.DataFrame | None = None,
    bootstrap: dict | None = None,
    level_noun: str = "predictions",
    notes: Sequence[str] = (),
) -> pd.DataFrame:
    """Write the CSV (pooled values and intervals when ``pooled`` is given, fold means, stds,
    counts and the formatted cells), the Markdown table and the bar chart for one task × level;
    returns the summary frame."""
    summary = summarise(metrics_paths, metrics, model_order)
    if pooled is not None:
        summary = add_pooled(summary, pooled, metrics)
    all_notes = [*table_notes(summary, level_noun, bootstrap), *notes]
    summary.attrs["notes"] = all_notes
    write_csv(out_csv, summary.drop(columns=[c for c in ("pooled_notes",) if c in summary]))
    write_text(out_md, markdown_table(summary, metrics, title, model_labels, all_notes))
    shown = shown_metrics(summary, metrics)
    labels = [(model_labels or {}).get(m, m) for m in summary["model"]]
    if pooled is not None:
        values = summary[[f"{m}_pooled" for m in shown]].to_numpy(dtype=float)
        errors = np.stack(
            [
                values - summary[[f"{m}_ci_low" for m in shown]].to_numpy(dtype=float),
                summary[[f"{m}_ci_high" for m in shown]].to_numpy(dtype=float) - values,
            ]
        )
        plot_metric_bars(
            values,
            errors,
            labels,
            [METRIC_LABELS[m] for m in shown],
            out_png,
            title,
            ylabel="pooled out-of-fold (95% bootstrap CI)",
            markers=summary[[f"{m}_mean" for m in shown]].to_numpy(dtype=float),
            marker_label="mean over folds",
        )
    else:
        plot_metric_bars(
            summary[[f"{m}_mean" for m in shown]].to_numpy(dtype=float),
            summary[[f"{m}_std" for m in shown]].to_numpy(dtype=float),
            labels,
            [METRIC_LABELS[m] for m in shown],
            out_png,
            title,
        )
    return summary


# -- one level of the workflow: pooled predictions, tables and the paired comparison -----------


def pooled_frames(
    predictions_paths: Mapping[str, Sequence[str | os.PathLike]],
    classes: Sequence[str],
    patient_of: Mapping[str, str] | None = None,
) -> dict[str, pd.DataFrame]:
    """Every model's K fold predictions files pooled (see ``pool_predictions``)."""
    return {model: pool_predictions(paths, classes, patient_of) for model, paths in predictions_paths.items()}


def level_resamples(frames: Mapping[str, pd.DataFrame], n_resamples: int, seed: int) -> Resamples:
    """One set of patient draws for every model of a level (paired by construction)."""
    patients = set().union(*(set(f["patient_id"]) for f in frames.values()))
    return draw_resamples(patients, n_resamples, seed)


def pooled_table(
    frames: Mapping[str, pd.DataFrame],
    classes: Sequence[str],
    ordinal: bool,
    resamples: Resamples,
    metrics: Sequence[str] = DEFAULT_METRICS,
) -> pd.DataFrame:
    """One row per model: ``model`` and the pooled value, interval and resample count per metric."""
    return pd.DataFrame(
        [
            {"model": model, **pooled_summary(frame, classes, ordinal, resamples, metrics)}
            for model, frame in frames.items()
        ]
    )


def comparison_markdown(rows: pd.DataFrame, title: str, reference: str, bootstrap: dict, level_noun: str) -> str:
    """Markdown: a row per model, per compared metric ``+0.034 [-0.050, 0.120], p = 0.41``."""
    metrics = list(dict.fromkeys(rows["metric"]))
    header = ["Model", *[f"Δ {METRIC_LABELS[m]}" for m in metrics], "n"]
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for model, group in rows.groupby("model", sort=False):
        part = group.set_index("metric")
        cells = [model]
        for m in metrics:
            r = part.loc[m]
            cells.append(
                "n/a"
                if not np.isfinite(r["difference"])
                else f"{r['difference']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}], p = {r['p_value']:.3g}"
            )
        cells.append(str(int(group["n"].iloc[0])))
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        (
            f"Each cell: the model's pooled out-of-fold value minus that of the reference model {reference}, "
            f"on the test {level_noun} both predicted (n); in brackets the 95% paired bootstrap confidence "
            f"interval (percentile interval of the difference over {bootstrap['resamples']} resamples of "
            f"patients, a patient's slides together, seed {bootstrap['seed']}, the same resamples for both "
            "models); p: two-sided bootstrap p-value of no difference, twice the smaller share of resampled "
            "differences on either side of 0, with the +1 correction. n/a: undefined for one of the two models "
            "(AUC of one-hot predictions, e.g. the pN rule)."
        ),
    ]
    return "\n".join(lines) + "\n"


def write_comparison(
    frames: Mapping[str, pd.DataFrame],
    reference: str,
    classes: Sequence[str],
    ordinal: bool,
    resamples: Resamples,
    out_csv,
    out_md,
    out_png,
    title: str,
    level_noun: str = "predictions",
    metrics: Sequence[str] = COMPARED_METRICS,
) -> pd.DataFrame:
    """``<level>_comparison.{csv,md}`` and the forest plot: every model against ``reference``."""
    rows = paired_comparison(frames, reference, classes, ordinal, resamples, metrics)
    bootstrap = {"resamples": resamples.n, "seed": resamples.seed}
    write_csv(out_csv, rows)
    if rows.empty:
        text = f"### {title}\n\nOnly the reference model {reference} is configured: nothing to compare.\n"
        write_text(out_md, text)
    else:
        write_text(out_md, comparison_markdown(rows, title, reference, bootstrap, level_noun))
    plot_forest(rows, METRIC_LABELS, out_png, f"{title}\n(difference to {reference}, 95% paired bootstrap CI)")
    return rows


def level_frames(
    predictions_paths: Mapping[str, Sequence[str | os.PathLike]],
    classes: Sequence[str],
    level: str,
    sheet_csv: str | os.PathLike,
) -> dict[str, pd.DataFrame]:
    """Pooled predictions of every model of a level; slides are mapped to their patients
    through the sample sheet so that resampling keeps a patient's slides together."""
    patient_of = None
    if level == "slide":
        from hmf.data.sample_sheet import read_sample_sheet

        sheet = read_sample_sheet(sheet_csv)
        patient_of = dict(zip(sheet["slide_id"].astype(str), sheet["patient_id"].astype(str)))
    return pooled_frames(predictions_paths, classes, patient_of)


LEVEL_NOUN = {"slide": "slides", "patient": "patients"}


def paths_by_model(paths: Sequence, models: Sequence[str], folds: Sequence) -> dict[str, list]:
    """Model -> its per-fold files, from one flat list that holds them model by model, then fold
    by fold (the order the workflow's rules give a level's metrics and predictions files in)."""
    paths = list(paths)
    if len(paths) != len(models) * len(folds):
        raise ValueError(
            f"{len(paths)} files for {len(models)} models x {len(folds)} folds: expected one per model and fold"
        )
    return {model: paths[i * len(folds) : (i + 1) * len(folds)] for i, model in enumerate(models)}


def write_level_table(
    metrics_paths,
    predictions_paths,
    sheet_csv,
    level: str,
    classes: Sequence[str],
    ordinal: bool,
    out_csv,
    out_md,
    out_png,
    title: str,
    bootstrap: dict,
    notes: Sequence[str] = (),
    model_order: Sequence[str] | None = None,
) -> pd.DataFrame:
    """``tables/<level>.{csv,md,png}``: pooled values with bootstrap intervals beside mean ± std."""
    frames = level_frames(predictions_paths, classes, level, sheet_csv)
    resamples = level_resamples(frames, int(bootstrap["resamples"]), int(bootstrap["seed"]))
    pooled = pooled_table(frames, classes, ordinal, resamples)
    return build_tables(
        metrics_paths,
        out_csv,
        out_md,
        out_png,
        title,
        model_order=model_order,
        pooled=pooled,
        bootstrap=bootstrap,
        level_noun=LEVEL_NOUN[level],
        notes=notes,
    )


def write_level_comparison(
    predictions_paths,
    sheet_csv,
    level: str,
    classes: Sequence[str],
    ordinal: bool,
    reference: str,
    out_csv,
    out_md,
    out_png,
    title: str,
    bootstrap: dict,
) -> pd.DataFrame:
    """``tables/<level>_comparison.{csv,md,png}`` from the predictions files."""
    frames = level_frames(predictions_paths, classes, level, sheet_csv)
    resamples = level_resamples(frames, int(bootstrap["resamples"]), int(bootstrap["seed"]))
    return write_comparison(
        frames, reference, classes, ordinal, resamples, out_csv, out_md, out_png, title, LEVEL_NOUN[level]
    )
