import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.logs import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from hmf.demo.plan import find_slide, plan_from_config  # noqa: E402
from hmf.demo.writer import write_slide  # noqa: E402

plan = plan_from_config(dict(snakemake.params.demo))
for slide_id, path in zip(snakemake.params.slides, snakemake.output):
    write_slide(find_slide(plan, slide_id), path, snakemake.input.aperio, snakemake.input.tumour)
