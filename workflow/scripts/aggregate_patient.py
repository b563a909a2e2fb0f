from hmf.logs import setup_logging
from hmf.tasks import get_task
from hmf.training.patient import aggregate_patient_fold

setup_logging(snakemake.log[0])
aggregate_patient_fold(
    snakemake.wildcards.model,
    get_task(snakemake.params.task, snakemake.params.classes),
    sheet_csv=snakemake.input.sheet,
    split_csv=snakemake.input.split,
    slide_predictions=snakemake.input.slide_predictions,
    predictions=snakemake.output.predictions,
)
