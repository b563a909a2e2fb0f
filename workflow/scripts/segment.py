from hmf.logs import setup_logging
from hmf.wsi.steps import run_segmentation

setup_logging(snakemake.log[0])
run_segmentation(snakemake.input.slide, snakemake.wildcards.slide, dict(snakemake.params.preprocessing),
                 snakemake.output.geojson, snakemake.output.mask, snakemake.output.stats, mpp=snakemake.params.mpp)
