"""Write R/text/<labelset>/<text_encoder>.pt from the label set's prompts."""

from hmf.logs import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821 (snakemake is injected by the script directive)

from hmf.text.embeddings import encode_prompts  # noqa: E402

encode_prompts(snakemake.input.prompts, snakemake.output[0], snakemake.wildcards.text_encoder,  # noqa: F821
               snakemake.config.get("text"))  # noqa: F821
