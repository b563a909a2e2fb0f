import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.logs import setup_logging
from hmf.training.cross_fitting import cross_fitted_embeddings

setup_logging(snakemake.log[0])
cross_fitted_embeddings(
    snakemake.input.sheet,
    snakemake.input.split,
    snakemake.input.outer,
    list(snakemake.input.inner_splits),
    list(snakemake.input.inner),
    snakemake.output[0],
)
