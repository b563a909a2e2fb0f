import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.data.splits import FoldDesign
from hmf.evaluation.tables import paths_by_model, write_level_comparison
from hmf.logs import setup_logging
from hmf.report.table_html import write_comparison_html

setup_logging(snakemake.log[0])
models, folds = snakemake.params.models, snakemake.params.folds
out = snakemake.output
write_level_comparison(
    paths_by_model(snakemake.input.predictions, models, folds),
    snakemake.input.sheet,
    snakemake.wildcards.level,
    snakemake.params.classes,
    snakemake.params.ordinal,
    snakemake.params.reference,
    out.csv,
    out.md,
    out.png,
    title=snakemake.params.title,
    bootstrap=snakemake.params.bootstrap,
    design=FoldDesign(**snakemake.params.design),
)
write_comparison_html(out.csv, out.md, out.html, title=snakemake.params.title)
