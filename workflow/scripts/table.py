import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.data.splits import FoldDesign
from hmf.evaluation.tables import paths_by_model, write_level_table
from hmf.logs import setup_logging

setup_logging(snakemake.log[0])
models, folds = snakemake.params.models, snakemake.params.folds
write_level_table(
    paths_by_model(snakemake.input.metrics, models, folds),
    paths_by_model(snakemake.input.predictions, models, folds),
    snakemake.input.sheet,
    snakemake.wildcards.level,
    snakemake.params.classes,
    snakemake.params.ordinal,
    snakemake.output.csv,
    snakemake.output.md,
    snakemake.output.png,
    title=snakemake.params.title,
    bootstrap=snakemake.params.bootstrap,
    design=FoldDesign(**snakemake.params.design),
    notes=snakemake.params.notes,
    model_order=models,
)
