# Metrics from prediction files, the result tables (pooled out-of-fold values with bootstrap
# confidence intervals beside mean ± std over folds) and the paired comparisons with a
# reference model.


rule evaluate:
    """Metrics and a confusion matrix for one model on one fold, from its predictions file; test
    slides or patients without a prediction are counted in the metrics file."""
    input:
        predictions=f"{R}/{{level}}/{{model}}/fold_{{fold}}/predictions.csv",
        sheet=f"{R}/sample_sheet.csv",
        split=f"{R}/splits/fold_{{fold}}.csv",
    output:
        metrics=f"{R}/{{level}}/{{model}}/fold_{{fold}}/metrics.json",
        confusion=report(
            f"{R}/{{level}}/{{model}}/fold_{{fold}}/confusion.png",
            caption="../workflow/report/confusion.rst",
            category="Confusion matrices",
            subcategory="{level} level",
            labels={"model": "{model}", "fold": "{fold}"},
        ),
    log:
        f"{LOGS}/evaluate/{{level}}/{{model}}/fold_{{fold}}.log",
    conda:
        "../envs/hmf.yaml"
    params:
        classes=get_classes,
        ordinal=get_ordinal,
        title=get_fold_title,
    script:
        "../workflow/scripts/evaluate.py"


rule table:
    """One table per level: a row per model, the pooled out-of-fold value of each metric with its
    patient-level bootstrap 95% CI, beside the mean ± std over folds (with repeats: the mean over
    repeats of the pooled values and their range)."""
    input:
        metrics=get_fold_metrics,
        predictions=get_fold_predictions,
        sheet=f"{R}/sample_sheet.csv",
    output:
        csv=report(
            f"{R}/tables/{{level}}.csv",
            caption="../workflow/report/table_csv.rst",
            category="Result tables",
            labels={"level": "{level}", "format": "CSV"},
        ),
        md=f"{R}/tables/{{level}}.md",
        png=report(
            f"{R}/tables/{{level}}.png",
            caption="../workflow/report/table_figure.rst",
            category="Result tables",
            labels={"level": "{level}", "format": "figure"},
        ),
    log:
        f"{LOGS}/tables/{{level}}.log",
    conda:
        "../envs/hmf.yaml"
    params:
        models=get_models,
        folds=FOLDS,
        design=FOLD_DESIGN_PARAMS,
        classes=get_classes,
        ordinal=get_ordinal,
        bootstrap=BOOTSTRAP,
        notes=get_level_notes,
        title=get_level_title,
    script:
        "../workflow/scripts/table.py"


rule comparison:
    """Every model of a level against the reference model on the same pooled predictions: the
    difference in macro F1, kappa (ordinal levels) and AUC with a paired bootstrap 95% CI and
    two-sided p-values, raw and Holm-adjusted; a forest plot."""
    input:
        predictions=get_fold_predictions,
        sheet=f"{R}/sample_sheet.csv",
    output:
        csv=report(
            f"{R}/tables/{{level}}_comparison.csv",
            caption="../workflow/report/comparison_csv.rst",
            category="Result tables",
            labels={"level": "{level}", "format": "comparison CSV"},
        ),
        md=f"{R}/tables/{{level}}_comparison.md",
        html=report(
            f"{R}/tables/{{level}}_comparison.html",
            caption="../workflow/report/comparison.rst",
            category="Result tables",
            labels={"level": "{level}", "format": "comparison"},
        ),
        png=report(
            f"{R}/tables/{{level}}_comparison.png",
            caption="../workflow/report/comparison_figure.rst",
            category="Result tables",
            labels={"level": "{level}", "format": "forest plot"},
        ),
    log:
        f"{LOGS}/tables/{{level}}_comparison.log",
    conda:
        "../envs/hmf.yaml"
    params:
        models=get_models,
        folds=FOLDS,
        design=FOLD_DESIGN_PARAMS,
        classes=get_classes,
        ordinal=get_ordinal,
        reference=get_reference,
        bootstrap=BOOTSTRAP,
        title=get_comparison_title,
    script:
        "../workflow/scripts/comparison.py"
