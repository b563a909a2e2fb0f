from hmf.demo.plan import find_slide, plan_from_config
from hmf.demo.writer import write_slide
from hmf.logs import setup_logging

setup_logging(snakemake.log[0])
plan = plan_from_config(dict(snakemake.params.demo))
for slide_id, path in zip(snakemake.params.slides, snakemake.output):
    write_slide(find_slide(plan, slide_id), path, snakemake.input.aperio, snakemake.input.tumour)
