from hmf.demo.labels import write_labels
from hmf.logs import setup_logging

setup_logging(snakemake.log[0])
write_labels(dict(snakemake.params.demo), snakemake.output[0])
