import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.logs import setup_logging
from hmf.predict import camelyon17_submission

setup_logging(snakemake.log[0])
camelyon17_submission(
    snakemake.input.sheet,
    dict(zip(snakemake.params.models, snakemake.input.patients, strict=True)),
    snakemake.input.slides,
    snakemake.output.submission,
    snakemake.output.conflicts,
    model=snakemake.params.model,
    patient_table=snakemake.input.table[0] if snakemake.input.table else None,
)
