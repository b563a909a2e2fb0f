import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.logs import setup_logging

setup_logging(snakemake.log[0])

from hmf.report.table_html import write_table_html  # noqa: E402

write_table_html(snakemake.input[0], snakemake.output[0], title=snakemake.params.title)
