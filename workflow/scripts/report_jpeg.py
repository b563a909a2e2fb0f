import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.logs import setup_logging

setup_logging(snakemake.log[0])

from hmf.report.jpeg import jpeg_copy  # noqa: E402

for src, dst in zip(snakemake.input, snakemake.output):
    jpeg_copy(src, dst)
