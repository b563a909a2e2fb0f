import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.logs import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from hmf.wsi.steps import run_patching  # noqa: E402

run_patching(
    snakemake.input.slide,
    snakemake.wildcards.slide,
    dict(snakemake.params.preprocessing),
    snakemake.input.geojson,
    snakemake.output.coords,
    snakemake.output.stitch,
    mpp=snakemake.params.mpp,
)
