from hmf.logs import setup_logging
from hmf.wsi.steps import run_patching

setup_logging(snakemake.log[0])
run_patching(snakemake.input.slide, snakemake.wildcards.slide, dict(snakemake.params.preprocessing),
             snakemake.input.geojson, snakemake.output.coords, snakemake.output.stitch, mpp=snakemake.params.mpp)
