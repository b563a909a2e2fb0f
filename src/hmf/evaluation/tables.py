"""Result tables: per model, each metric pooled over all out-of-fold predictions with a
patient-level bootstrap 95% confidence interval, beside the ``mean ± std`` of the per-fold values;
and the paired comparison of every model with a reference model (raw and Holm-adjusted
p-values). With repeated cross-validation a pooled value is the mean over repeats of the
per-repeat pooled values, shown with its range over repeats.

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
from hmf.data.splits import FoldDesign
from hmf.evaluation.bootstrap import Resamples, draw_resamples, paired_comparison, pool_predictions, pooled_summary
from hmf.evaluation.metrics import METRICS
from hmf.evaluation.plots import plot_forest, plot_metric_bars

# The metrics and their labels come from the one table of hmf.evaluation.metrics.
DEFAULT_METRICS = tuple(m.name for m in METRICS if m.tabulated)
METRIC_LABELS = {m.name: m.label for m in METRICS}
_SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
COMPARED_METRICS = tuple(m.name for m in METRICS if m.compared)
FIXED_MODELS_NOTE = (
    "The intervals resample the test patients with the trained models held fixed: they do not cover the "
    "variability of training (another training set, seed or split)."
)
POOLED_AUC_NOTE = (
    "Pooled AUC ranks together the scores of the different fold models: differences in calibration between "
    "them lower it (or, rarely, raise it) compared with the AUC of one model; the per-fold AUCs (mean ± std) "
    "do not mix models."
)
RARE_PATIENTS = 10  # a class with fewer test patients than this is rare for the interval of macro-F1
RARE_CLASS_NOTE = (
    "Macro-F1 with a rare class (a few patients): its bootstrap interval is too narrow or shifted (under-covers), "
    "as resamples without the class score it 0 and the class's F1 moves in large steps; read it with care."
)
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


def format_pooled(
    value: float, low: float, high: float, smallest: float = np.nan, largest: float = np.nan, repeats: int = 1
) -> str:
    """``0.812 [0.743, 0.871]`` (pooled value and its interval); with repeats the value is their
    mean and its range follows: ``0.812 [0.743, 0.871], range 0.790–0.835``; ``n/a`` when undefined."""
    if not np.isfinite(value):
        return "n/a"
    cell = f"{value:.3f} [{low:.3f}, {high:.3f}]" if np.isfinite(low) and np.isfinite(high) else f"{value:.3f}"
    if repeats > 1 and np.isfinite(smallest) and np.isfinite(largest):
        cell += f", range {smallest:.3f}–{largest:.3f}"
    return cell


def add_pooled(summary: pd.DataFrame, pooled: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """``summary`` with the pooled columns of ``pooled`` (one row per model, see
    ``pooled_summary``) and a formatted ``<m>_pooled_ci`` cell per metric."""
    missing = sorted(set(summary["model"]) - set(pooled["model"]))
    if missing:
        raise ValueError(f"no pooled predictions for model(s) {missing}")
    merged = summary.merge(pooled, on="model", how="left", validate="one_to_one")
    repeats = merged["repeats"] if "repeats" in merged else pd.Series(1, index=merged.index)
    for m in metrics:
        smallest = merged.get(f"{m}_pooled_min", pd.Series(np.nan, index=merged.index))
        largest = merged.get(f"{m}_pooled_max", pd.Series(np.nan, index=merged.index))
        merged[f"{m}_pooled_ci"] = [
            format_pooled(v, lo, hi, a, b, int(r))
            for v, lo, hi, a, b, r in zip(
                merged[f"{m}_pooled"], merged[f"{m}_ci_low"], merged[f"{m}_ci_high"], smallest, largest, repeats
            )
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


def table_notes(
    summary: pd.DataFrame,
    level_noun: str = "predictions",
    bootstrap: dict | None = None,
    design: FoldDesign | None = None,
) -> list[str]:
    """The footnotes every rendering of the table carries: what a cell is (and, with repeats,
    how the repeats are combined), what the intervals hold fixed, the folds, the macro-average
    convention, pooled AUC, n/a values, and the slides or patients left out."""
    notes = []
    repeats = int(summary["repeats"].max()) if "repeats" in summary else 1
    if "n" in summary and repeats > 1:
        n, folds = int(summary["n"].max()), int(summary["folds"].max())
        notes.append(
            f"Each cell: the mean over {repeats} repeats of the pooled out-of-fold value (each computed once over "
            f"all {n} test {level_noun} of a repeat's {folds // repeats} folds), with its 95% confidence interval in "
            f"brackets (percentile bootstrap over {bootstrap['resamples']} resamples of patients, a patient's slides "
            f"together, seed {bootstrap['seed']}; each resample draws the patients once and scores every repeat on "
            f"that draw, so the interval is the one of the mean over repeats) and the range (min–max) of the "
            f"per-repeat values; then the mean ± sample standard deviation (ddof = 1) of the {folds} per-fold values. "
            "Best pooled value per column in bold."
        )
    elif "n" in summary:
        n = int(summary["n"].max())
        notes.append(
            f"Each cell: the pooled out-of-fold value, computed once over all {n} test {level_noun} of the "
            f"{int(summary['folds'].max())} folds, with its 95% confidence interval in brackets (percentile bootstrap "
            f"over {bootstrap['resamples']} resamples of patients, a patient's slides together, seed "
            f"{bootstrap['seed']}); then the mean ± sample standard deviation (ddof = 1) of the per-fold values. "
            "Best pooled value per column in bold."
        )
    if "n" in summary:
        notes.append(FIXED_MODELS_NOTE)
        if design is not None:
            notes.append(design.sentence())
        if "auc_pooled" in summary and np.isfinite(summary["auc_pooled"].to_numpy(dtype=float)).any():
            notes.append(POOLED_AUC_NOTE)
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
    with_repeats = "repeats" in summary and int(summary["repeats"].max()) > 1
    header = ["Model", *[METRIC_LABELS[m] for m in shown], "Folds", *(["Repeats"] if with_repeats else [])]
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
        if with_repeats:
            cells.append(str(int(row["repeats"])))
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
    design: FoldDesign | None = None,
) -> pd.DataFrame:
    """Write the CSV (pooled values and intervals when ``pooled`` is given, fold means, stds,
    counts and the formatted cells), the Markdown table and the bar chart for one task × level;
    returns the summary frame."""
    summary = summarise(metrics_paths, metrics, model_order)
    if pooled is not None:
        summary = add_pooled(summary, pooled, metrics)
    all_notes = [*table_notes(summary, level_noun, bootstrap, design), *notes]
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
    folds_per_repeat: int | None = None,
) -> dict[str, pd.DataFrame]:
    """Every model's R*K fold predictions files pooled (see ``pool_predictions``)."""
    return {
        model: pool_predictions(paths, classes, patient_of, folds_per_repeat)
        for model, paths in predictions_paths.items()
    }


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


def rare_classes(frame: pd.DataFrame, classes: Sequence[str], below: int = RARE_PATIENTS) -> dict[str, int]:
    """Classes of the true labels with fewer than ``below`` patients (class -> patients), from
    one repeat of a pooled predictions frame."""
    part = frame[frame["repeat"] == frame["repeat"].min()] if "repeat" in frame else frame
    patients = part.groupby("true_label")["patient_id"].nunique()
    return {str(c): int(patients.get(c, 0)) for c in classes if 0 < patients.get(c, 0) < below}


def _comparison_cell(r: pd.Series, with_repeats: bool) -> str:
    if not np.isfinite(r["difference"]):
        return "n/a"
    cell = f"{r['difference']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}], p = {r['p_value']:.3g}"
    cell += f" (Holm {r['p_holm']:.3g})"
    if with_repeats:
        cell += f", range {r['difference_min']:+.3f}–{r['difference_max']:+.3f}"
    return cell


def comparison_notes(
    rows: pd.DataFrame,
    reference: str,
    bootstrap: dict,
    level_noun: str,
    design: FoldDesign | None = None,
    rare: Mapping[str, int] | None = None,
) -> list[str]:
    """The footnotes of a comparison table: what a cell is, the Holm adjustment and the number
    of comparisons, what the intervals hold fixed, the folds, the resamples AUC kept, pooled
    AUC and macro-F1 with rare classes."""
    repeats = int(rows["repeats"].max()) if "repeats" in rows and len(rows) else 1
    value = (
        f"the mean over {repeats} repeats of the per-repeat difference between the model's pooled out-of-fold "
        f"value and that of the reference model {reference} (its range over repeats after the p-values)"
        if repeats > 1
        else f"the model's pooled out-of-fold value minus that of the reference model {reference}"
    )
    draws = "; each resample draws the patients once and scores every repeat on that draw" if repeats > 1 else ""
    notes = [
        (
            f"Each cell: {value}, on the test {level_noun} both predicted (n); in brackets the 95% paired "
            f"bootstrap confidence interval (percentile interval of the difference over {bootstrap['resamples']} "
            f"resamples of patients, a patient's slides together, seed {bootstrap['seed']}, the same resamples "
            f"for both models{draws}); p: two-sided bootstrap p-value of no difference, twice the smaller share of "
            "resampled differences on either side of 0, with the +1 correction. n/a: undefined for one of the two "
            "models (AUC of one-hot predictions, e.g. the pN rule)."
        )
    ]
    counts = rows.groupby("metric", sort=False)["comparisons"].max()
    per_metric = ", ".join(f"{METRIC_LABELS.get(m, m)} {int(n)}" for m, n in counts.items())
    notes.append(
        f"Holm: p-values adjusted by Holm's step-down method within each metric over the models compared with "
        f"{reference} ({per_metric}; {int(counts.sum())} comparisons in this table). The raw p-values are not "
        "adjusted for these multiple comparisons."
    )
    notes.append(FIXED_MODELS_NOTE)
    if design is not None:
        notes.append(design.sentence())
    auc = rows[(rows["metric"] == "auc") & rows["difference"].notna()]
    if not auc.empty:
        kept = ", ".join(f"{m} {int(k)}" for m, k in zip(auc["model"], auc["resamples"]))
        if auc["resamples"].nunique() == 1:
            kept = f"{int(auc['resamples'].iloc[0])}"
        notes.append(
            f"AUC kept {kept} of {bootstrap['resamples']} resamples (those that drew a patient of every class). "
            + POOLED_AUC_NOTE
        )
    if rare and "f1_macro" in set(rows["metric"]):
        listed = ", ".join(f"{c} ({n} patients)" for c, n in rare.items())
        notes.append(f"Rare class(es): {listed}. " + RARE_CLASS_NOTE)
    return notes


def comparison_markdown(
    rows: pd.DataFrame,
    title: str,
    reference: str,
    bootstrap: dict,
    level_noun: str,
    design: FoldDesign | None = None,
    rare: Mapping[str, int] | None = None,
) -> str:
    """Markdown: a row per model, per compared metric ``+0.034 [-0.050, 0.120], p = 0.41 (Holm 0.82)``
    (with repeats, the range over repeats follows), and the footnotes."""
    metrics = list(dict.fromkeys(rows["metric"]))
    with_repeats = "repeats" in rows and int(rows["repeats"].max()) > 1
    header = ["Model", *[f"Δ {METRIC_LABELS[m]}" for m in metrics], "n"]
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for model, group in rows.groupby("model", sort=False):
        part = group.set_index("metric")
        cells = [model, *[_comparison_cell(part.loc[m], with_repeats) for m in metrics]]
        cells.append(str(int(group["n"].iloc[0])))
        lines.append("| " + " | ".join(cells) + " |")
    for note in comparison_notes(rows, reference, bootstrap, level_noun, design, rare):
        lines += ["", note]
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
    design: FoldDesign | None = None,
) -> pd.DataFrame:
    """``<level>_comparison.{csv,md}`` and the forest plot: every model against ``reference``."""
    rows = paired_comparison(frames, reference, classes, ordinal, resamples, metrics)
    bootstrap = {"resamples": resamples.n, "seed": resamples.seed}
    write_csv(out_csv, rows)
    if rows.empty:
        text = f"### {title}\n\nOnly the reference model {reference} is configured: nothing to compare.\n"
        write_text(out_md, text)
    else:
        rare = rare_classes(frames[reference], classes)
        write_text(out_md, comparison_markdown(rows, title, reference, bootstrap, level_noun, design, rare))
    plot_forest(rows, METRIC_LABELS, out_png, f"{title}\n(difference to {reference}, 95% paired bootstrap CI)")
    return rows


def level_frames(
    predictions_paths: Mapping[str, Sequence[str | os.PathLike]],
    classes: Sequence[str],
    level: str,
    sheet_csv: str | os.PathLike,
    folds_per_repeat: int | None = None,
) -> dict[str, pd.DataFrame]:
    """Pooled predictions of every model of a level (``folds_per_repeat``: K, when the files
    hold several repeats); slides are mapped to their patients through the sample sheet so that
    resampling keeps a patient's slides together."""
    patient_of = None
    if level == "slide":
        from hmf.data.sample_sheet import read_sample_sheet

        sheet = read_sample_sheet(sheet_csv)
        patient_of = dict(zip(sheet["slide_id"].astype(str), sheet["patient_id"].astype(str)))
    return pooled_frames(predictions_paths, classes, patient_of, folds_per_repeat)


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
    design: FoldDesign | None = None,
) -> pd.DataFrame:
    """``tables/<level>.{csv,md,png}``: pooled values with bootstrap intervals beside mean ± std
    (``design``: how the folds were made; None: one cross-validation, not described)."""
    k = design.folds_per_repeat if design is not None else None
    frames = level_frames(predictions_paths, classes, level, sheet_csv, k)
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
        design=design,
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
    design: FoldDesign | None = None,
) -> pd.DataFrame:
    """``tables/<level>_comparison.{csv,md,png}`` from the predictions files."""
    k = design.folds_per_repeat if design is not None else None
    frames = level_frames(predictions_paths, classes, level, sheet_csv, k)
    resamples = level_resamples(frames, int(bootstrap["resamples"]), int(bootstrap["seed"]))
    return write_comparison(
        frames,
        reference,
        classes,
        ordinal,
        resamples,
        out_csv,
        out_md,
        out_png,
        title,
        LEVEL_NOUN[level],
        design=design,
    )
