from hmf.logs import setup_logging
from hmf.report.curves import plot_training_curves

setup_logging(snakemake.log[0])
plot_training_curves(snakemake.input[0], snakemake.output[0], title=snakemake.params.title)
