import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.logs import setup_logging

setup_logging(snakemake.log[0])

from pathlib import Path  # noqa: E402

from hmf.data.splits import make_split_files, split_settings  # noqa: E402

splits = split_settings(snakemake.params.splits)
make_split_files(
    snakemake.input.sheet,
    Path(snakemake.output[0]).parent,
    k=splits.k,
    val_fraction=splits.val_fraction,
    seed=splits.seed,
    files=splits.files,
    repeats=splits.repeats,
    group_by=splits.group_by,
    leave_one_group_out=splits.leave_one_group_out,
)
