"""Write R/prompts/<labelset>.json (kept when its provenance matches the config)."""

import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.logs import setup_logging

setup_logging(snakemake.log[0])

from hmf.settings import job_section  # noqa: E402
from hmf.text.prompts import make_prompts  # noqa: E402
from hmf.text.settings import text_settings  # noqa: E402

make_prompts(
    snakemake.output[0],
    snakemake.wildcards.labelset,
    snakemake.params.classes,
    text_settings(job_section(snakemake, "text")),
)
