import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.logs import setup_logging

setup_logging(snakemake.log[0])

from hmf.data.sample_sheet import load_sample_sheet, validate_sample_sheet, write_sample_sheet  # noqa: E402
from hmf.tasks import get_task  # noqa: E402

dataset = snakemake.params.dataset
task = get_task(snakemake.params.task, dataset.get("classes"))
sheet = validate_sample_sheet(
    load_sample_sheet(dataset, tuple(snakemake.params.extra_columns)), task, check_files=snakemake.params.check_files
)
write_sample_sheet(sheet, snakemake.output[0])
