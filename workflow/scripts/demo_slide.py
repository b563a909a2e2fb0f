from hmf.demo.writer import write_demo_slide
from hmf.logs import setup_logging

setup_logging(snakemake.log[0])
write_demo_slide(snakemake.wildcards.slide, dict(snakemake.params.demo), snakemake.output[0],
                 snakemake.input.aperio, snakemake.input.tumour)
