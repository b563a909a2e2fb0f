import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.logs import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from hmf.features.extract import extract_features  # noqa: E402  (torch import after logging is set)

out, params = snakemake.output, snakemake.params
for i, slide_id in enumerate(params.slides):
    extract_features(
        snakemake.input.slides[i],
        snakemake.input.coords[i],
        out.h5[i],
        out.pt[i],
        dict(params.features),
        slide_id=slide_id,
        mpp=params.mpp[i],
        stats_json=out.stats[i],
        log_file=snakemake.log[0],
        threads=snakemake.threads,
        gpus=snakemake.resources.get("gpu", 0),
    )
