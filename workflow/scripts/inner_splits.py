import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.logs import setup_logging
from hmf.training.cross_fitting import write_inner_splits

setup_logging(snakemake.log[0])
write_inner_splits(
    snakemake.input.sheet,
    snakemake.input.split,
    list(snakemake.output),
    val_fraction=snakemake.params.val_fraction,
    seed=snakemake.params.seed,
)
