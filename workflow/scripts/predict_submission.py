import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.logs import setup_logging
from hmf.predict import camelyon17_submission

setup_logging(snakemake.log[0])
camelyon17_submission(snakemake.input.sheet, snakemake.input.patients, snakemake.input.slides, snakemake.output[0])
