import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.evaluation.tables import write_level_table
from hmf.logs import setup_logging

setup_logging(snakemake.log[0])
models, folds = snakemake.params.models, snakemake.params.folds


def by_model(paths):
    paths = list(paths)
    return {model: paths[i * len(folds) : (i + 1) * len(folds)] for i, model in enumerate(models)}


write_level_table(
    by_model(snakemake.input.metrics),
    by_model(snakemake.input.predictions),
    snakemake.input.sheet,
    snakemake.wildcards.level,
    snakemake.params.classes,
    snakemake.params.ordinal,
    snakemake.output.csv,
    snakemake.output.md,
    snakemake.output.png,
    title=snakemake.params.title,
    bootstrap=snakemake.params.bootstrap,
    notes=snakemake.params.notes,
    model_order=models,
)
