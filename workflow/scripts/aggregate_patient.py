import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.logs import setup_logging

setup_logging(snakemake.log[0])

from hmf.training.jobs import job_task  # noqa: E402
from hmf.training.patient import aggregate_patient_fold  # noqa: E402

aggregate_patient_fold(
    snakemake.wildcards.model,
    job_task(snakemake),
    sheet_csv=snakemake.input.sheet,
    split_csv=snakemake.input.split,
    slide_predictions=snakemake.input.slide_predictions,
    predictions=snakemake.output.predictions,
)
