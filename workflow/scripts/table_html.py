from hmf.logs import setup_logging
from hmf.report.tables import write_table_html

setup_logging(snakemake.log[0])
write_table_html(snakemake.input[0], snakemake.output[0], title=snakemake.params.title)
