from hmf.evaluation.metrics import evaluate_fold
from hmf.logs import setup_logging

setup_logging(snakemake.log[0])
evaluate_fold(
    snakemake.input[0],
    snakemake.output.metrics,
    snakemake.output.confusion,
    classes=snakemake.params.classes,
    ordinal=snakemake.params.ordinal,
    title=snakemake.params.title,
)
