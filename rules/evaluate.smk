# Metrics from prediction files, and the result tables.


rule evaluate:
    """Metrics and a confusion matrix for one model on one fold, from its predictions file."""
    input:
        f"{R}/{{level}}/{{model}}/fold_{{fold}}/predictions.csv",
    output:
        metrics=f"{R}/{{level}}/{{model}}/fold_{{fold}}/metrics.json",
        confusion=report(
            f"{R}/{{level}}/{{model}}/fold_{{fold}}/confusion.png",
            caption="../workflow/report/confusion.rst",
            category="Confusion matrices",
            subcategory="{level} level",
            labels={"model": "{model}", "fold": "{fold}"},
        ),
    params:
        classes=lambda wc: list(TASK.classes(wc.level)),
        ordinal=lambda wc: wc.level in TASK.ordinal,
        title=lambda wc: f"{NAME} {wc.level} {wc.model} fold {wc.fold}",
    log:
        f"{LOGS}/evaluate/{{level}}/{{model}}/fold_{{fold}}.log",
    conda:
        "../envs/hmf.yaml"
    script:
        "../workflow/scripts/evaluate.py"


rule table:
    """One table per level: a row per model, mean ± std over folds."""
    input:
        lambda wc: fold_outputs(wc.level, "metrics.json"),
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
    params:
        models=lambda wc: models_of(wc.level),
        folds=FOLDS,
        title=lambda wc: f"{NAME}: {wc.level} level ({', '.join(TASK.classes(wc.level))})",
    log:
        f"{LOGS}/tables/{{level}}.log",
    conda:
        "../envs/hmf.yaml"
    script:
        "../workflow/scripts/table.py"
