"""Result tables as HTML fragments, for the Snakemake report (viewed inline there, and
embedded in the report's workflow page): the results table of a level (pooled value with its
confidence interval above the mean ± std over folds) and the paired comparison."""

from __future__ import annotations

import html
import os
from pathlib import Path

import pandas as pd

from hmf.atomic import write_text
from hmf.evaluation.metrics import METRIC, METRICS

STYLE = "border-collapse:collapse;font-family:sans-serif;font-size:13px;margin:0.5em 0;color:#1e293b;background:#ffffff"
CELL = "border:1px solid #cbd5e1;padding:3px 8px;text-align:right;white-space:nowrap"
# The result tables' metrics (hmf.evaluation.metrics.METRICS), in the table's order.
TABULATED = tuple(m.name for m in METRICS if m.tabulated)
NOTE = "font-family:sans-serif;font-size:12px;max-width:60em"


def _read(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"results table {path} does not exist")
    frame = pd.read_csv(path, dtype={"model": str}, keep_default_na=False)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"results table {path}: missing column(s) {missing}")
    return frame


def markdown_notes(md_path: Path) -> list[str]:
    """The paragraphs under the table of a Markdown table file (its footnotes); none if absent."""
    if not md_path.is_file():
        return []
    lines = md_path.read_text(encoding="utf-8").splitlines()
    body = [line for line in lines if line and not line.startswith(("|", "###"))]
    return body


def _fragment(title: str, header: list[str], rows: list[list[str]], notes: list[str]) -> str:
    def cell(i: int, value: str) -> str:
        align = ";text-align:left" if i == 0 else ""
        return f'<td style="{CELL}{align}">{value}</td>'

    head = "".join(f'<th style="{CELL};background:#f1f5f9">{html.escape(h)}</th>' for h in header)
    body = "\n".join("<tr>" + "".join(cell(i, c) for i, c in enumerate(r)) + "</tr>" for r in rows)
    paragraphs = "".join(f'<p style="{NOTE}">{html.escape(n.replace("**", ""))}</p>\n' for n in notes)
    return (
        f'<div class="hmf-table">\n<h3 style="font-family:sans-serif">{html.escape(title)}</h3>\n'
        f'<table style="{STYLE}">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>\n'
        f"{paragraphs}</div>\n"
    )


def table_html(csv_path: str | os.PathLike, title: str) -> str:
    """``<div>`` with a heading, the table (a row per model; per metric the pooled value and
    its CI above the ``mean ± std`` over folds) and the footnotes of the sibling ``.md`` file."""
    path = Path(csv_path)
    frame = _read(path, ("model", "folds"))
    pooled = "n" in frame.columns
    shown = [
        m
        for m in TABULATED
        if m in frame.columns
        and (
            (pd.to_numeric(frame[f"{m}_n"]) > 0).any()
            or (pooled and f"{m}_pooled_ci" in frame and (frame[f"{m}_pooled_ci"] != "n/a").any())
        )
    ]
    with_repeats = "repeats" in frame.columns and (pd.to_numeric(frame["repeats"]) > 1).any()
    header = ["Model", *(METRIC[m].label for m in shown), "Folds", *(["Repeats"] if with_repeats else [])]
    rows = []
    for _, row in frame.iterrows():
        cells = [html.escape(str(row["model"]))]
        for m in shown:
            fold_cell = html.escape(str(row[m]))
            cells.append(f"<b>{html.escape(str(row[f'{m}_pooled_ci']))}</b><br>{fold_cell}" if pooled else fold_cell)
        cells.append(html.escape(str(row["folds"])))
        if with_repeats:
            cells.append(html.escape(str(row["repeats"])))
        rows.append(cells)
    notes = markdown_notes(path.with_suffix(".md")) or ["Mean ± sample standard deviation (ddof = 1) over folds."]
    return _fragment(title, header, rows, notes)


def write_table_html(csv_path: str | os.PathLike, out_html: str | os.PathLike, title: str) -> None:
    write_text(out_html, table_html(csv_path, title))


def comparison_html(csv_path: str | os.PathLike, md_path: str | os.PathLike, title: str) -> str:
    """``<div>`` with the paired comparison: a row per model, per metric the difference to the
    reference, its 95% CI, the raw and Holm-adjusted p-values (and, with repeats, the range of
    the difference over repeats); the footnotes of the Markdown file under it."""
    frame = _read(Path(csv_path), ("model", "metric", "difference", "ci_low", "ci_high", "p_value", "p_holm", "n"))
    with_repeats = "repeats" in frame.columns and (pd.to_numeric(frame["repeats"]) > 1).any()
    metrics = list(dict.fromkeys(frame["metric"]))
    header = ["Model", *(f"Δ {METRIC[m].label if m in METRIC else m}" for m in metrics), "n"]
    rows = []
    for model, group in frame.groupby("model", sort=False):
        part = group.set_index("metric")
        cells = [html.escape(model)]
        for m in metrics:
            r = part.loc[m]
            diff = pd.to_numeric(r["difference"], errors="coerce")
            cell = (
                "n/a"
                if pd.isna(diff)
                else f"{diff:+.3f} [{float(r['ci_low']):+.3f}, {float(r['ci_high']):+.3f}]<br>"
                f"p = {float(r['p_value']):.3g}, Holm {float(r['p_holm']):.3g}"
            )
            if with_repeats and not pd.isna(diff):
                cell += f"<br>range {float(r['difference_min']):+.3f}–{float(r['difference_max']):+.3f}"
            cells.append(cell)
        cells.append(html.escape(str(group["n"].iloc[0])))
        rows.append(cells)
    notes = markdown_notes(Path(md_path))
    return _fragment(title, header, rows, notes)


def write_comparison_html(csv_path, md_path, out_html, title: str) -> None:
    write_text(out_html, comparison_html(csv_path, md_path, title))
