# Figures for the Snakemake report: attention heatmaps of the HMF slide model, training curves,
# HTML versions of the result tables and the QC review (the QC pictures of a bounded selection
# of slides, a QC table of every slide); `report_inputs` builds every item the report shows.
#
#   snakemake --cores all report_inputs
#   snakemake report_inputs --report report.html

from hmf.report.qc_review import picture_labels
from hmf.report.selection import heatmap_jobs

REPORT = config["report"]  # validated and filled by the Snakefile

# Heatmaps are drawn over the slides with the patch files this workflow writes, so not from
# precomputed features; each slide by the model of the fold of the first repeat that tested it.
# The folds are checked in common.smk (PARSE_FOLDS is empty when they cannot be made).
# The slide model whose attention is drawn (hmf.models.names: the one with heatmaps).
(HEATMAP_MODEL,) = model_names("slide", heatmaps=True)
HEATMAP_JOBS = []
if HEATMAP_MODEL in SLIDE_MODELS and not PRECOMPUTED and PARSE_FOLDS:
    try:
        HEATMAP_JOBS = heatmap_jobs(
            SHEET,
            [set(f.loc[f["split"] == "test", "patient_id"]) for f in PARSE_FOLDS[: FOLD_DESIGN.folds_per_repeat]],
            REPORT["heatmap_slides"],
            REPORT["heatmap_per_class"],
        )
    except ValueError as err:
        LABEL_ERRORS.append(f"config report: {err}")


# Outputs per target, fixed at parse time.
HEATMAP_OUTPUTS = [
    f"{R}/heatmaps/fold_{k}/{name}"
    for k, slide in HEATMAP_JOBS
    for name in (f"{slide}.png", f"top_patches/{slide}.png")
]
# Their JPEG copies, which the report shows.
HEATMAP_REPORT_OUTPUTS = [
    f"{R}/report/heatmaps/fold_{k}/{name}"
    for k, slide in HEATMAP_JOBS
    for name in (f"{slide}.jpg", f"top_patches/{slide}.jpg")
]
# A curves.png per trained model and fold (the pN rule and mean_prob are not trained).
CURVE_OUTPUTS = [
    f"{R}/{level}/{model}/fold_{fold}/curves.png"
    for level in levels()
    for model in models_of(level)
    if model_info(level, model).trained
    for fold in FOLDS
]
# The QC table of every slide and the QC pictures of a bounded selection (rule qc_review).
QC_REVIEW_OUTPUTS = [f"{R}/qc/review.html", f"{R}/qc/pictures"]
# Every file the report shows.
REPORT_OUTPUTS = [
    *table_outputs(),
    *[f"{R}/tables/{level}.html" for level in levels()],
    *[path for level in levels() for path in fold_outputs(level, "confusion.png")],
    *CURVE_OUTPUTS,
    *HEATMAP_REPORT_OUTPUTS,
    *(
        []
        if PRECOMPUTED
        else [
            f"{R}/qc/summary.csv",
            *QC_REVIEW_OUTPUTS,
        ]
    ),
]


rule heatmap:
    """Patch and bi-cross attention of the fold's HMF model over one slide, and its top patches."""
    input:
        checkpoint=f"{R}/slide/{HEATMAP_MODEL}/fold_{{fold}}/checkpoint.pt",
        text=text_bank("slide"),
        features=lambda wc: FEATURE_FILES[wc.slide],
        coords=f"{R}/patches/{{slide}}.h5",
        sheet=f"{R}/sample_sheet.csv",
        split=f"{R}/splits/fold_{{fold}}.csv",
        slide=slide_path,
    # The report shows JPEG copies (rule heatmap_jpeg).
    output:
        heatmap=f"{R}/heatmaps/fold_{{fold}}/{{slide}}.png",
        top=f"{R}/heatmaps/fold_{{fold}}/top_patches/{{slide}}.png",
    log:
        f"{LOGS}/heatmaps/fold_{{fold}}/{{slide}}.log",
    benchmark:
        f"{BENCH}/heatmaps/fold_{{fold}}/{{slide}}.tsv"
    conda:
        "../envs/hmf.yaml"
    threads: 1
    params:
        top_k=REPORT["top_k"],
        thumbnail_px=REPORT["thumbnail_px"],
        alpha=REPORT["alpha"],
    script:
        "../workflow/scripts/heatmap.py"


rule heatmap_jpeg:
    """JPEG copies of a heatmap and its top-patch montage for the report (about a quarter of the
    PNGs' bytes; the PNGs stay on disk)."""
    input:
        heatmap=f"{R}/heatmaps/fold_{{fold}}/{{slide}}.png",
        top=f"{R}/heatmaps/fold_{{fold}}/top_patches/{{slide}}.png",
    output:
        heatmap=report(
            f"{R}/report/heatmaps/fold_{{fold}}/{{slide}}.jpg",
            caption="../workflow/report/heatmap.rst",
            category="Attention heatmaps",
            subcategory="fold {fold}",
            labels={"slide": "{slide}", "figure": "attention maps"},
        ),
        top=report(
            f"{R}/report/heatmaps/fold_{{fold}}/top_patches/{{slide}}.jpg",
            caption="../workflow/report/top_patches.rst",
            category="Attention heatmaps",
            subcategory="fold {fold}",
            labels={"slide": "{slide}", "figure": "top patches"},
        ),
    log:
        f"{LOGS}/heatmaps/fold_{{fold}}/{{slide}}_jpeg.log",
    conda:
        "../envs/hmf.yaml"
    script:
        "../workflow/scripts/report_jpeg.py"


rule qc_review:
    """The QC table of every slide (review reasons, QC figures, paths of its mask and stitch) and
    the QC pictures of at most report.qc_slides slides, flagged ones first, for the report."""
    input:
        summary=f"{R}/qc/summary.csv",
        masks=for_each_slide(f"{R}/masks/{{slide}}.jpg"),
        stitches=for_each_slide(f"{R}/stitches/{{slide}}.jpg"),
        features=FEATURE_INDEX,
    output:
        table=f"{R}/qc/review.csv",
        html=report(
            f"{R}/qc/review.html",
            caption="../workflow/report/qc_review.rst",
            category="Quality control",
            subcategory="Summary",
            labels={"table": "QC of every slide"},
        ),
        pictures=report(
            directory(f"{R}/qc/pictures"),
            patterns=["{slide}.jpg"],
            caption="../workflow/report/qc_picture.rst",
            category="Quality control",
            subcategory="Slides for review",
            labels=lambda wildcards, output: picture_labels(output.table, wildcards.slide),
        ),
    log:
        f"{LOGS}/qc_review.log",
    conda:
        "../envs/hmf.yaml"
    params:
        report=result_params("report", REPORT, only=("qc_slides", "qc_picture_px", "qc_little_tissue", "qc_patch_z")),
        title=f"{NAME}: QC of every slide",
    script:
        "../workflow/scripts/qc_review.py"


rule training_curves:
    """Training and validation loss and validation metrics per epoch of one model on one fold."""
    input:
        f"{R}/{{level}}/{{model}}/fold_{{fold}}/train_log.csv",
    output:
        report(
            f"{R}/{{level}}/{{model}}/fold_{{fold}}/curves.png",
            caption="../workflow/report/curves.rst",
            category="Training curves",
            subcategory="{level} level",
            labels={"model": "{model}", "fold": "{fold}"},
        ),
    log:
        f"{LOGS}/curves/{{level}}/{{model}}/fold_{{fold}}.log",
    conda:
        "../envs/hmf.yaml"
    params:
        title=get_fold_title,
    script:
        "../workflow/scripts/training_curves.py"


rule table_html:
    """A level's results table as HTML, viewable in the report."""
    input:
        f"{R}/tables/{{level}}.csv",
    output:
        report(
            f"{R}/tables/{{level}}.html",
            caption="../workflow/report/table.rst",
            category="Result tables",
            labels={"level": "{level}", "format": "table"},
        ),
    log:
        f"{LOGS}/tables/{{level}}_html.log",
    conda:
        "../envs/hmf.yaml"
    params:
        title=get_level_title,
    script:
        "../workflow/scripts/table_html.py"


rule heatmaps:
    """Attention heatmaps of the configured (or default) slides, every fold."""
    input:
        HEATMAP_OUTPUTS,


rule figures:
    """Training curves of every trained model and fold, and the attention heatmaps."""
    input:
        CURVE_OUTPUTS,
        HEATMAP_OUTPUTS,


rule report_inputs:
    """Everything `snakemake --report` shows: QC, tables, confusion matrices, curves, heatmaps."""
    input:
        REPORT_OUTPUTS,
