import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.logs import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from hmf.report.heatmaps import heatmap_for_fold  # noqa: E402

heatmap_for_fold(
    snakemake.input.checkpoint,
    snakemake.input.text,
    snakemake.input.features,
    snakemake.input.coords,
    snakemake.input.sheet,
    snakemake.input.split,
    snakemake.wildcards.slide,
    snakemake.wildcards.fold,
    snakemake.output.heatmap,
    snakemake.output.top,
    top_k=snakemake.params.top_k,
    thumbnail_px=snakemake.params.thumbnail_px,
    alpha=snakemake.params.alpha,
)
