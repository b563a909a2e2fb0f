import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.evaluation.tables import write_level_comparison
from hmf.logs import setup_logging
from hmf.report.tables import write_comparison_html

setup_logging(snakemake.log[0])
models, folds = snakemake.params.models, snakemake.params.folds
paths = list(snakemake.input.predictions)
out = snakemake.output
write_level_comparison(
    {model: paths[i * len(folds) : (i + 1) * len(folds)] for i, model in enumerate(models)},
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
)
write_comparison_html(out.csv, out.md, out.html, title=snakemake.params.title)
