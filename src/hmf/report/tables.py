"""A results table as an HTML fragment, for the Snakemake report (viewed inline there, and
embedded in the report's workflow page)."""

from __future__ import annotations

import html
import os
from pathlib import Path

import pandas as pd

from hmf.atomic import write_text
from hmf.evaluation.tables import DEFAULT_METRICS, METRIC_LABELS

STYLE = ("border-collapse:collapse;font-family:sans-serif;font-size:13px;margin:0.5em 0;"
         "color:#1e293b;background:#ffffff")
CELL = "border:1px solid #cbd5e1;padding:3px 8px;text-align:right;white-space:nowrap"


def table_html(csv_path: str | os.PathLike, title: str) -> str:
    """``<div>`` with a heading and the ``mean ± std`` table (a row per model) of a table CSV."""
    path = Path(csv_path)
    if not path.is_file():
        raise FileNotFoundError(f"results table {path} does not exist")
    frame = pd.read_csv(path, dtype={"model": str}, keep_default_na=False)
    missing = [c for c in ("model", "folds") if c not in frame.columns]
    if missing:
        raise ValueError(f"results table {path}: missing column(s) {missing}")
    shown = [m for m in DEFAULT_METRICS if m in frame.columns and (pd.to_numeric(frame[f"{m}_n"]) > 0).any()]
    header = ["Model", *(METRIC_LABELS[m] for m in shown), "Folds"]
    rows = []
    for _, row in frame.iterrows():
        cells = [row["model"], *(row[m] for m in shown), row["folds"]]
        rows.append("<tr>" + "".join(
            f'<td style="{CELL};text-align:left">{html.escape(str(c))}</td>' if i == 0
            else f'<td style="{CELL}">{html.escape(str(c))}</td>' for i, c in enumerate(cells)) + "</tr>")
    head = "".join(f'<th style="{CELL};background:#f1f5f9">{html.escape(h)}</th>' for h in header)
    return (
        f'<div class="hmf-table">\n<h3 style="font-family:sans-serif">{html.escape(title)}</h3>\n'
        f'<table style="{STYLE}">\n<thead><tr>{head}</tr></thead>\n<tbody>\n' + "\n".join(rows) + "\n</tbody>\n</table>\n"
        '<p style="font-family:sans-serif;font-size:12px">Mean ± sample standard deviation (ddof = 1) over folds.</p>\n'
        "</div>\n"
    )


def write_table_html(csv_path: str | os.PathLike, out_html: str | os.PathLike, title: str) -> None:
    write_text(out_html, table_html(csv_path, title))
