import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.logs import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from hmf.features.extract import extract_features  # noqa: E402  (torch import after logging is set)

extract_features(
    snakemake.input.slide,
    snakemake.input.coords,
    snakemake.output.h5,
    snakemake.output.pt,
    dict(snakemake.params.features),
    slide_id=snakemake.wildcards.slide,
    mpp=snakemake.params.mpp,
    stats_json=snakemake.output.stats,
    log_file=snakemake.log[0],
    threads=snakemake.threads,
    gpus=snakemake.resources.get("gpu", 0),
)
