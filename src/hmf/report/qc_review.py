"""Per-slide quality control in the report: which slides need a look, a bounded set of QC
pictures (tissue mask beside patch stitch, at a fixed size), and the QC table of every slide.

The report embeds only the pictures chosen here, so its size does not grow with the cohort:
slides flagged for review come first (most severe first), then an even spread over the patch
counts of the others fills up to ``qc_slides``. Every slide, shown or not, is a row of the QC
table, with the paths of its mask and stitch on disk.
"""

from __future__ import annotations

import html
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from hmf.atomic import current_umask, write_csv, write_text
from hmf.features.io import FeatureFileError, describe
from hmf.settings import section

log = logging.getLogger(__name__)

# Review reasons, most severe first: a slide's place in the report follows its worst reason.
FEATURES_UNREADABLE = "feature file unreadable"
NO_FEATURES = "no features"
FEATURES_MISMATCH = "features != patches"
NO_TISSUE = "no tissue"
LITTLE_TISSUE = "little tissue"
FEW_PATCHES = "few patches"
MANY_PATCHES = "many patches"
REASONS = (FEATURES_UNREADABLE, NO_FEATURES, FEATURES_MISMATCH, NO_TISSUE, LITTLE_TISSUE, FEW_PATCHES, MANY_PATCHES)

TABLE_COLUMNS = [
    "order",
    "slide_id",
    "review",
    "tissue_area_mm2",
    "n_contours",
    "n_holes",
    "n_patches",
    "n_features",
    "patch_z",
    "in_report",
    "mask",
    "stitch",
    "features",
]
JPEG_QUALITY = 80


_REPORT_DEFAULTS = section("report")


@dataclass(frozen=True)
class ReviewSettings:
    """The ``report.qc_*`` config keys (defaults: the schema's)."""

    slides: int = _REPORT_DEFAULTS["qc_slides"]
    picture_px: int = _REPORT_DEFAULTS["qc_picture_px"]
    little_tissue: float = _REPORT_DEFAULTS["qc_little_tissue"]
    patch_z: float = _REPORT_DEFAULTS["qc_patch_z"]

    @classmethod
    def from_config(cls, report: dict) -> ReviewSettings:
        return cls(
            slides=int(report["qc_slides"]),
            picture_px=int(report["qc_picture_px"]),
            little_tissue=float(report["qc_little_tissue"]),
            patch_z=float(report["qc_patch_z"]),
        )


def feature_rows(path: str | os.PathLike) -> tuple[int | None, str | None]:
    """(rows, None) of a feature file, or (None, the reason it cannot be read)."""
    try:
        return describe(path).n_patches, None
    except (FeatureFileError, OSError) as err:
        return None, str(err)


def patch_z(n_patches: pd.Series) -> pd.Series:
    """Robust z-score of log patch counts (median and MAD over slides with patches; NaN without)."""
    logs = np.log(n_patches.where(n_patches > 0).astype(float))
    valid = logs.dropna()
    if valid.empty:
        return logs * np.nan
    median = valid.median()
    # 1.4826 MAD estimates the standard deviation of normal data; the floor (10 % in log
    # space) keeps a cohort of equal counts from flagging every small difference.
    scale = max(1.4826 * float((valid - median).abs().median()), 0.1)
    return (logs - median) / scale


def review_table(
    summary: pd.DataFrame, masks: list, stitches: list, features: list, settings: ReviewSettings = ReviewSettings()
) -> pd.DataFrame:
    """Every slide of the QC summary with its review reasons, its report order (1.. for the
    slides whose picture the report shows, empty otherwise) and the paths of its pictures.

    ``masks``, ``stitches`` and ``features`` are paths in the summary's slide order.
    """
    missing = [
        c
        for c in ("slide_id", "tissue_area_mm2", "n_contours", "n_holes", "n_patches", "no_tissue")
        if c not in summary.columns
    ]
    if missing:
        raise ValueError(f"QC summary: missing column(s) {missing}")
    if not (len(summary) == len(masks) == len(stitches) == len(features)):
        raise ValueError(
            f"QC review: {len(summary)} slides in the QC summary but {len(masks)} masks, "
            f"{len(stitches)} stitches and {len(features)} feature files"
        )
    frame = summary[["slide_id", "tissue_area_mm2", "n_contours", "n_holes", "n_patches", "no_tissue"]].copy()
    frame["slide_id"] = frame["slide_id"].astype(str)
    frame["n_patches"] = pd.to_numeric(frame["n_patches"]).astype(int)
    frame["tissue_area_mm2"] = pd.to_numeric(frame["tissue_area_mm2"])
    frame["no_tissue"] = frame["no_tissue"].astype(str).str.lower().isin(("true", "1"))
    frame["mask"], frame["stitch"], frame["features"] = (
        [str(p) for p in masks],
        [str(p) for p in stitches],
        [str(p) for p in features],
    )
    read = [feature_rows(path) for path in frame["features"]]
    frame["n_features"] = pd.array([rows for rows, _ in read], dtype="Int64")
    errors = [error for _, error in read]
    frame["patch_z"] = patch_z(frame["n_patches"]).round(2)

    with_tissue = frame.loc[~frame["no_tissue"], "tissue_area_mm2"].dropna()
    little = settings.little_tissue * float(with_tissue.median()) if len(with_tissue) else 0.0
    reasons = []
    for (_, row), error in zip(frame.iterrows(), errors):
        found = []
        if error:
            found.append(FEATURES_UNREADABLE)
            log.warning("slide %s: %s", row["slide_id"], error)
        elif row["n_features"] == 0:
            found.append(NO_FEATURES)
        elif row["n_features"] != row["n_patches"]:
            found.append(FEATURES_MISMATCH)
        if row["no_tissue"]:
            found.append(NO_TISSUE)
        elif pd.notna(row["tissue_area_mm2"]) and row["tissue_area_mm2"] < little:
            found.append(LITTLE_TISSUE)
        if pd.notna(row["patch_z"]) and abs(row["patch_z"]) > settings.patch_z:
            found.append(FEW_PATCHES if row["patch_z"] < 0 else MANY_PATCHES)
        reasons.append(found)
    frame["review"] = ["; ".join(found) for found in reasons]

    order = choose_slides(frame, reasons, settings.slides)
    frame["order"] = pd.array([None] * len(frame), dtype="Int64")
    frame.loc[order, "order"] = range(1, len(order) + 1)
    frame["in_report"] = frame["order"].notna()
    # Slides in report order first, then the rest by slide id.
    frame = frame.sort_values(["order", "slide_id"], na_position="last", kind="stable")
    return frame[TABLE_COLUMNS].reset_index(drop=True)


def choose_slides(frame: pd.DataFrame, reasons: list[list[str]], limit: int) -> list:
    """Index labels of at most ``limit`` slides, in report order: flagged slides by their worst
    reason, then by how extreme their patch count is; then the unflagged slides spread evenly
    over the patch counts (smallest, ..., largest)."""
    rank = {reason: i for i, reason in enumerate(REASONS)}
    flagged = [
        (min(rank[r] for r in found), -abs(z) if pd.notna(z) else 0.0, slide, index)
        for index, found, z, slide in zip(frame.index, reasons, frame["patch_z"], frame["slide_id"])
        if found
    ]
    chosen = [index for *_, index in sorted(flagged)][: max(limit, 0)]
    room = max(limit, 0) - len(chosen)
    others = frame.loc[[i for i, found in zip(frame.index, reasons) if not found]]
    if room > 0 and len(others):
        others = others.sort_values(["n_patches", "slide_id"], kind="stable")
        picks = np.unique(np.linspace(0, len(others) - 1, min(room, len(others))).round().astype(int))
        chosen += list(others.index[picks])
    return chosen


# -- pictures ----------------------------------------------------------------------------


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (OSError, TypeError, ImportError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _fitted(path: str | os.PathLike, box: int) -> Image.Image:
    """The picture at ``path`` shrunk to fit a ``box`` x ``box`` square (never enlarged)."""
    with Image.open(path) as image:
        image.draft("RGB", (box, box))  # JPEG: decode at a reduced scale where it can
        image = image.convert("RGB")
        image.thumbnail((box, box), Image.Resampling.LANCZOS)
        return image


def qc_picture(mask: str | os.PathLike, stitch: str | os.PathLike, title: str, subtitle: str, px: int) -> Image.Image:
    """Mask and stitch side by side, each fitted into a ``px`` square, under a header (title,
    QC figures, panel names).

    The picture has the same size for every slide: (2 px + 3 m) x (header + px + m).
    """
    margin = max(4, px // 48)
    title_size, text_size = max(10, px // 22), max(9, px // 28)
    title_font, text_font = _font(title_size), _font(text_size)
    lines = [margin, margin + int(title_size * 1.4), margin + int(title_size * 1.4) + int(text_size * 1.6)]
    header = lines[2] + int(text_size * 1.4)
    canvas = Image.new("RGB", (2 * px + 3 * margin, header + px + margin), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((margin, lines[0]), title, fill=(15, 23, 42), font=title_font)
    draw.text((margin, lines[1]), subtitle, fill=(51, 65, 85), font=text_font)
    for column, (path, label) in enumerate(((mask, "tissue mask"), (stitch, "patch stitch"))):
        left = margin + column * (px + margin)
        draw.text((left, lines[2]), label, fill=(100, 116, 139), font=text_font)
        image = _fitted(path, px)
        canvas.paste(image, (left + (px - image.width) // 2, header))
    return canvas


def _figures(row: pd.Series) -> str:
    area = "n/a" if pd.isna(row["tissue_area_mm2"]) else f"{float(row['tissue_area_mm2']):.2f} mm2"
    features = "unreadable" if pd.isna(row["n_features"]) else f"{int(row['n_features']):,}"
    contours = "n/a" if pd.isna(row["n_contours"]) else int(row["n_contours"])
    return f"tissue {area} · {contours} contours · {int(row['n_patches']):,} patches · {features} features"


def write_qc_pictures(table: pd.DataFrame, out_dir: str | os.PathLike, px: int) -> list[Path]:
    """``<out_dir>/<slide>.jpg`` for each slide of ``table`` with a report order; the folder is
    written beside its final place and renamed onto it when complete."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for _, row in table[table["in_report"]].iterrows():
            title = f"{int(row['order'])}. {row['slide_id']}" + (f" - review: {row['review']}" if row["review"] else "")
            try:
                picture = qc_picture(row["mask"], row["stitch"], title, _figures(row), px)
            except (OSError, ValueError) as err:
                raise ValueError(f"QC picture of slide {row['slide_id']}: {err}") from err
            picture.save(tmp / f"{row['slide_id']}.jpg", quality=JPEG_QUALITY, optimize=True)
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it 0700
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return sorted(out_dir.glob("*.jpg"))


# -- the QC table --------------------------------------------------------------------------

TABLE_STYLE = """<style>
.hmf-qc{font-family:sans-serif;font-size:13px;color:#1e293b;background:#fff}
.hmf-qc table{border-collapse:collapse;margin:.5em 0}
.hmf-qc th,.hmf-qc td{border:1px solid #cbd5e1;padding:2px 6px;text-align:right;white-space:nowrap}
.hmf-qc th{background:#f1f5f9;position:sticky;top:0}
.hmf-qc td.l{text-align:left}
.hmf-qc tr.r td{background:#fef3c7}
</style>"""

HEADER = [
    "#",
    "Slide",
    "Review",
    "Tissue (mm²)",
    "Contours",
    "Holes",
    "Patches",
    "Features",
    "Patch z",
    "Mask",
    "Stitch",
]


def review_overview(table: pd.DataFrame) -> str:
    """One sentence: slides, slides flagged per reason, and how many pictures the report shows."""
    flagged = table[table["review"] != ""]
    counts = {
        reason: int(flagged["review"].str.split("; ").apply(lambda found, r=reason: r in found).sum())
        for reason in REASONS
    }
    parts = [f"{n} {reason}" for reason, n in counts.items() if n]
    return (
        f"{len(table)} slides; {len(flagged)} flagged for review"
        + (f" ({', '.join(parts)})" if parts else "")
        + f"; QC pictures of {int(table['in_report'].sum())} in the report, flagged slides first."
    )


def review_html(table: pd.DataFrame, title: str) -> str:
    """A page with the QC table: every slide, its review reasons, QC figures and picture paths."""

    def cell(value, left=False) -> str:
        text = "" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)
        return f'<td class="l">{html.escape(text)}</td>' if left else f"<td>{html.escape(text)}</td>"

    rows = []
    for _, row in table.iterrows():
        area = "" if pd.isna(row["tissue_area_mm2"]) else f"{float(row['tissue_area_mm2']):.3f}"
        cells = [
            cell(row["order"]),
            cell(row["slide_id"], True),
            cell(row["review"], True),
            cell(area),
            cell(row["n_contours"]),
            cell(row["n_holes"]),
            cell(row["n_patches"]),
            cell(row["n_features"]),
            cell(row["patch_z"]),
            cell(row["mask"], True),
            cell(row["stitch"], True),
        ]
        rows.append(f"<tr{' class=r' if row['review'] else ''}>" + "".join(cells) + "</tr>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>'
        + html.escape(title)
        + "</title>\n"
        + TABLE_STYLE
        + '\n</head><body class="hmf-qc">\n<h3>'
        + html.escape(title)
        + "</h3>\n<p><!-- overview -->"
        + html.escape(review_overview(table))
        + "<!-- overview --> Highlighted rows are flagged for review; # is the order of the "
        "slide's picture in the report (empty: the picture is on disk only).</p>\n"
        f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n"
        + "\n".join(rows)
        + "\n</tbody>\n</table>\n</body></html>\n"
    )


def write_review(
    summary_csv: str | os.PathLike,
    masks: list,
    stitches: list,
    features: list,
    out_csv: str | os.PathLike,
    out_html: str | os.PathLike,
    out_pictures: str | os.PathLike,
    settings: ReviewSettings,
    title: str = "QC of every slide",
) -> pd.DataFrame:
    """The QC review outputs: the table as CSV and HTML, and the chosen slides' pictures."""
    summary = pd.read_csv(summary_csv, dtype={"slide_id": str}, keep_default_na=False, na_values=[""])
    table = review_table(summary, masks, stitches, features, settings)
    write_qc_pictures(table, out_pictures, settings.picture_px)
    write_csv(out_csv, table)
    write_text(out_html, review_html(table, title))
    log.info("%s", review_overview(table))
    return table


def picture_labels(review_csv: str | os.PathLike, slide: str) -> dict:
    """Report labels of a slide's QC picture: its order in the report, id and review reasons."""
    table = _read_review(str(review_csv), os.stat(review_csv).st_mtime_ns)
    row = table.loc[table["slide_id"] == slide]
    if row.empty:
        raise ValueError(f"QC review table {review_csv} has no slide {slide}")
    row = row.iloc[0]
    width = len(str(int(table["order"].max()))) if table["order"].notna().any() else 1
    order = "" if pd.isna(row["order"]) else str(int(row["order"])).zfill(width)
    return {"order": order, "slide": slide, "review": row["review"] or "-"}


@lru_cache(maxsize=1)  # the report asks once per picture; read the table once per version
def _read_review(path: str, mtime_ns: int) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"slide_id": str, "review": str}, keep_default_na=False, na_values={"order": [""]})


__all__ = [
    "ReviewSettings",
    "REASONS",
    "review_table",
    "choose_slides",
    "qc_picture",
    "write_qc_pictures",
    "review_html",
    "review_overview",
    "write_review",
    "picture_labels",
    "feature_rows",
    "patch_z",
]
