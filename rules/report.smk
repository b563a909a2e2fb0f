# Figures for the Snakemake report: attention heatmaps of the HMF slide model, training curves
# and HTML versions of the result tables; `report_inputs` builds every item the report shows.
#
#   snakemake --cores all report_inputs
#   snakemake report_inputs --report report.html

from hmf.config import ConfigError, validate_config
from hmf.report.selection import fold_test_patients, heatmap_jobs

try:
    # Defaults from the section's own schema (a no-op once the main schema has filled them).
    REPORT = validate_config(dict(config.get("report") or {}), f"{workflow.basedir}/config/schema/report.schema.yaml")
    HEATMAP_JOBS = (
        heatmap_jobs(SHEET, fold_test_patients(SHEET, config["splits"]), REPORT["heatmap_slides"],
                     REPORT["heatmap_per_class"])
        if "hmf" in SLIDE_MODELS
        else []
    )
except (ConfigError, ValueError) as err:
    raise WorkflowError(f"config report: {err}") from None


# Outputs per target, fixed at parse time.
HEATMAP_OUTPUTS = [
    f"{R}/heatmaps/fold_{k}/{name}" for k, slide in HEATMAP_JOBS for name in (f"{slide}.png", f"top_patches/{slide}.png")
]
# A curves.png per trained model and fold (the pN rule and mean_prob are not trained).
CURVE_OUTPUTS = [
    f"{R}/{level}/{model}/fold_{fold}/curves.png"
    for level in levels()
    for model in models_of(level)
    if model not in UNTRAINED_PATIENT_MODELS
    for fold in FOLDS
]
# Every file the report shows.
REPORT_OUTPUTS = [
    *table_outputs(),
    *[f"{R}/tables/{level}.html" for level in levels()],
    *[path for level in levels() for path in fold_outputs(level, "confusion.png")],
    *CURVE_OUTPUTS,
    *HEATMAP_OUTPUTS,
    f"{R}/qc/summary.csv",
    *expand(f"{R}/masks/{{slide}}.jpg", slide=SLIDE_IDS),
    *expand(f"{R}/stitches/{{slide}}.jpg", slide=SLIDE_IDS),
]


localrules:
    training_curves,
    table_html,


rule heatmap:
    """Patch and bi-cross attention of the fold's HMF model over one slide, and its top patches."""
    input:
        checkpoint=f"{R}/slide/hmf/fold_{{fold}}/checkpoint.pt",
        text=text_bank("slide"),
        features=f"{FEATURES_DIR}/h5_files/{{slide}}.h5",
        coords=f"{R}/patches/{{slide}}.h5",
        sheet=f"{R}/sample_sheet.csv",
        split=f"{R}/splits/fold_{{fold}}.csv",
        slide=slide_path,
    output:
        heatmap=report(
            f"{R}/heatmaps/fold_{{fold}}/{{slide}}.png",
            caption="../workflow/report/heatmap.rst",
            category="Attention heatmaps",
            subcategory="fold {fold}",
            labels={"slide": "{slide}", "figure": "attention maps"},
        ),
        top=report(
            f"{R}/heatmaps/fold_{{fold}}/top_patches/{{slide}}.png",
            caption="../workflow/report/top_patches.rst",
            category="Attention heatmaps",
            subcategory="fold {fold}",
            labels={"slide": "{slide}", "figure": "top patches"},
        ),
    params:
        top_k=REPORT["top_k"],
        thumbnail_px=REPORT["thumbnail_px"],
        alpha=REPORT["alpha"],
    threads: 1
    log:
        f"{LOGS}/heatmaps/fold_{{fold}}/{{slide}}.log",
    benchmark:
        f"{BENCH}/heatmaps/fold_{{fold}}/{{slide}}.tsv"
    conda:
        "../envs/hmf.yaml"
    script:
        "../workflow/scripts/heatmap.py"


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
    params:
        title=lambda wc: f"{NAME} {wc.level} {wc.model} fold {wc.fold}",
    log:
        f"{LOGS}/curves/{{level}}/{{model}}/fold_{{fold}}.log",
    conda:
        "../envs/hmf.yaml"
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
    params:
        title=lambda wc: f"{NAME}: {wc.level} level ({', '.join(TASK.classes(wc.level))})",
    log:
        f"{LOGS}/tables/{{level}}_html.log",
    conda:
        "../envs/hmf.yaml"
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
