import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.logs import setup_logging

setup_logging(snakemake.log[0])

from hmf.data.splits import make_fold_file, split_settings  # noqa: E402

make_fold_file(
    snakemake.input.sheet, snakemake.output[0], int(snakemake.wildcards.fold), split_settings(snakemake.params.splits)
)
