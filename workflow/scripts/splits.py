import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.logs import setup_logging

setup_logging(snakemake.log[0])

from pathlib import Path  # noqa: E402

from hmf.data.splits import SplitSettings, make_split_files  # noqa: E402
from hmf.settings import build, section  # noqa: E402

splits = build(SplitSettings, section("splits", snakemake.params.splits), where="splits")
make_split_files(
    snakemake.input.sheet,
    Path(snakemake.output[0]).parent,
    k=splits.k,
    val_fraction=splits.val_fraction,
    seed=splits.seed,
    files=splits.files,
)
