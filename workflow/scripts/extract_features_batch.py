import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.batches import record_batch
from hmf.devices import torch_job
from hmf.features.io import feature_folder
from hmf.features.settings import runtime_settings
from hmf.settings import job_section

with torch_job(snakemake, "features", lambda features: runtime_settings(**features)) as job:
    from hmf.features.extract import extract_features  # torch is imported once the log is set up

    out, params = snakemake.output, snakemake.params
    for i, slide_id in enumerate(params.slides):
        extract_features(
            snakemake.input.slides[i],
            snakemake.input.coords[i],
            out.h5[i],
            out.pt[i],
            job_section(snakemake, "features"),
            slide_id=slide_id,
            mpp=params.mpp[i],
            stats_json=out.stats[i],
            log_file=snakemake.log[0],
            threads=snakemake.threads,
            device=job.device,
        )
    # last: the batch is kept once all its slides are done
    record_batch(feature_folder(out.stats[0]), params.slides)
