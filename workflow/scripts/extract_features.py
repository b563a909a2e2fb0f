import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.batches import record_batch
from hmf.devices import torch_job
from hmf.features.io import feature_folder
from hmf.features.settings import runtime_settings
from hmf.settings import job_section

with torch_job(snakemake, "features", lambda features: runtime_settings(**features)) as job:
    from hmf.features.extract import extract_features  # torch is imported once the log is set up

    extract_features(
        snakemake.input.slide,
        snakemake.input.coords,
        snakemake.output.h5,
        snakemake.output.pt,
        job_section(snakemake, "features"),
        slide_id=snakemake.wildcards.slide,
        mpp=snakemake.params.mpp,
        stats_json=snakemake.output.stats,
        log_file=snakemake.log[0],
        threads=snakemake.threads,
        device=job.device,
    )
    # last: the slide is kept out of extraction batches (features.slides_per_job) from now on
    record_batch(feature_folder(snakemake.output.stats), [snakemake.wildcards.slide])
