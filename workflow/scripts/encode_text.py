"""Write R/text/<labelset>/<text_encoder>.pt from the label set's prompts, on the device the
job claims (a GPU only when the rule asked Snakemake for one)."""

import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.logs import setup_logging

setup_logging(snakemake.log[0])

import dataclasses  # noqa: E402

from hmf.devices import claim_device  # noqa: E402
from hmf.text.embeddings import encode_prompts  # noqa: E402
from hmf.text.settings import text_settings  # noqa: E402

text = text_settings(snakemake.params.text)
with claim_device(text.device, gpus=snakemake.resources.get("gpu", 0)) as claim:
    encode_prompts(
        snakemake.input.prompts,
        snakemake.output[0],
        snakemake.wildcards.text_encoder,
        dataclasses.replace(text, device=claim.compute_device),
    )
