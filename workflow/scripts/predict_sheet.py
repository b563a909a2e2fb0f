import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.data.predict_sheet import write_predict_sheet
from hmf.logs import setup_logging
from hmf.tasks import get_task

setup_logging(snakemake.log[0])
write_predict_sheet(
    snakemake.input.sheet,
    snakemake.output[0],
    get_task(snakemake.params.task, snakemake.params.classes),
    in_sample=snakemake.params.in_sample,
    check_files=snakemake.params.check_files,
)
