import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.logs import setup_logging

setup_logging(snakemake.log[0])

from hmf.wsi.qc import write_qc_summary  # noqa: E402

write_qc_summary(
    snakemake.output[0],
    list(snakemake.params.slides),
    list(snakemake.input.segmentation),
    list(snakemake.input.coords),
    list(snakemake.input.extraction),
)
