from hmf.data.sample_sheet import load_sample_sheet, validate_sample_sheet, write_sample_sheet
from hmf.logs import setup_logging
from hmf.tasks import get_task

setup_logging(snakemake.log[0])
dataset = snakemake.params.dataset
task = get_task(snakemake.params.task, dataset.get("classes"))
sheet = validate_sample_sheet(load_sample_sheet(dataset), task, check_files=True)
write_sample_sheet(sheet, snakemake.output[0])
