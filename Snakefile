# HMF: from whole-slide images and class descriptions to patient-level result tables.
#
#   snakemake --cores all                      everything for the configured dataset
#   snakemake --cores all features             masks, patches and features only
#   snakemake --cores all tables               every model on every fold, then the tables
#   snakemake results/<dataset>/slide/hmf/fold_3/metrics.json --cores 4 --forcerun train_slide
#
# config/config.yaml is the embedded demo; config/examples/ holds CAMELYON17 and TCGA configs.

import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("9.0")
sys.path.insert(0, f"{workflow.basedir}/src")


include: "rules/scheduling.smk"


from hmf.config import ConfigError, check_cross_keys, validate_config
from hmf.models.registry import check_model_params

# The demo config is the default; a config given with --configfile replaces it (rather
# than being merged over it, which would leak the demo's settings into a user's run).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


try:
    validate_config(config, f"{workflow.basedir}/config/schema/config.schema.yaml")
    check_model_params(config)
    check_cross_keys(config)
except ConfigError as err:
    raise WorkflowError(str(err)) from None


report: "workflow/report/workflow.rst"


include: "rules/common.smk"
include: "rules/sample_sheet.smk"


if DEMO:

    include: "rules/demo.smk"


if not PRECOMPUTED:

    include: "rules/preprocess.smk"


include: "rules/text.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/predict.smk"
include: "rules/report.smk"


# Every local rule of the workflow (run on the submitting host, never sent to a cluster
# executor): the targets, and small single-threaded steps.
localrules:
    all,
    features,
    tables,
    figures,
    heatmaps,
    report_inputs,
    predict,
    sample_sheet,
    splits,
    prompts,
    evaluate,
    table,
    table_html,
    training_curves,
    heatmap_jpeg,
    predict_sheet,
    predict_submission,
    feature_index,


rule all:
    """The default target: result tables for every level of the task, and every item of the
    report (QC pictures, confusion matrices, training curves, attention heatmaps)."""
    input:
        table_outputs(),
        REPORT_OUTPUTS,


rule features:
    """Segmentation, patching and feature extraction for every slide, plus the QC summary
    (with features.precomputed_dir: the given feature files, their values checked)."""
    input:
        [*FEATURE_FILES.values(), *feature_checks("train")]
        if PRECOMPUTED
        else [
            *[feature_paths(FEATURES_DIR, s).h5 for s in SLIDE_IDS],
            *[feature_paths(FEATURES_DIR, s).pt for s in SLIDE_IDS],
            *expand(f"{R}/stitches/{{slide}}.jpg", slide=SLIDE_IDS),
            f"{R}/qc/summary.csv",
        ],


rule tables:
    """Every configured model on every fold, evaluated, and one table per level."""
    input:
        table_outputs(),
