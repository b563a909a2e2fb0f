"""Write R/text/<labelset>/<text_encoder>.pt from the label set's prompts, on the device the
job claims (a GPU only when the rule asked Snakemake for one)."""

import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.devices import torch_job
from hmf.text.settings import text_settings

with torch_job(snakemake, "text", text_settings) as job:
    import dataclasses

    from hmf.text.embeddings import encode_prompts

    encode_prompts(
        snakemake.input.prompts,
        snakemake.output[0],
        snakemake.wildcards.text_encoder,
        dataclasses.replace(job.settings, device=str(job.device)),
    )
