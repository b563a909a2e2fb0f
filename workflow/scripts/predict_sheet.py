import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.logs import setup_logging
from hmf.predict import write_predict_sheet

setup_logging(snakemake.log[0])
write_predict_sheet(
    snakemake.input.sheet,
    snakemake.output[0],
    known_slide_ids=snakemake.params.known,
    check_files=snakemake.params.check_files,
)
