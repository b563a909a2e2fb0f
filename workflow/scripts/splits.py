import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.logs import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from pathlib import Path  # noqa: E402

from hmf.data.splits import make_split_files  # noqa: E402

cfg = snakemake.params.splits
make_split_files(
    snakemake.input.sheet,
    Path(snakemake.output[0]).parent,
    k=cfg["k"],
    val_fraction=cfg["val_fraction"],
    seed=cfg["seed"],
    files=cfg.get("files"),
)
