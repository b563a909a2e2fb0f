import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.evaluation.metrics import evaluate_fold, expected_test_ids
from hmf.logs import setup_logging

setup_logging(snakemake.log[0])
evaluate_fold(
    snakemake.input.predictions,
    snakemake.output.metrics,
    snakemake.output.confusion,
    classes=snakemake.params.classes,
    ordinal=snakemake.params.ordinal,
    title=snakemake.params.title,
    expected_ids=expected_test_ids(snakemake.input.sheet, snakemake.input.split, snakemake.wildcards.level),
    level=snakemake.wildcards.level,
)
