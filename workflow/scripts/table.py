from hmf.evaluation.tables import build_tables
from hmf.logs import setup_logging

setup_logging(snakemake.log[0])
models, folds = snakemake.params.models, snakemake.params.folds
paths = list(snakemake.input)
build_tables(
    {model: paths[i * len(folds):(i + 1) * len(folds)] for i, model in enumerate(models)},
    snakemake.output.csv,
    snakemake.output.md,
    snakemake.output.png,
    title=snakemake.params.title,
    model_order=models,
)
