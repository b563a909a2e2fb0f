from hmf.logs import setup_logging
from hmf.wsi.qc import write_qc_summary

setup_logging(snakemake.log[0])
write_qc_summary(snakemake.output[0], list(snakemake.params.slides), list(snakemake.input.segmentation),
                 list(snakemake.input.coords), list(snakemake.input.extraction))
