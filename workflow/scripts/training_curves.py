import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.logs import setup_logging

setup_logging(snakemake.log[0])

from hmf.report.curves import plot_training_curves  # noqa: E402

plot_training_curves(snakemake.input[0], snakemake.output[0], title=snakemake.params.title)
