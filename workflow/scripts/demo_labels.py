import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.logs import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from hmf.demo.labels import write_labels  # noqa: E402

write_labels(dict(snakemake.params.demo), snakemake.output[0])
