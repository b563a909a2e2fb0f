import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.logs import setup_logging

setup_logging(snakemake.log[0])

from hmf.features.index import feature_files  # noqa: E402
from hmf.report.qc_review import ReviewSettings, write_review  # noqa: E402

write_review(
    snakemake.input.summary,
    list(snakemake.input.masks),
    list(snakemake.input.stitches),
    list(feature_files(snakemake.input.features).values()),
    snakemake.output.table,
    snakemake.output.html,
    snakemake.output.pictures,
    ReviewSettings.from_config(snakemake.params.report),
    title=snakemake.params.title,
)
