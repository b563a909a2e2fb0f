from pathlib import Path

from hmf.data.splits import make_split_files
from hmf.logs import setup_logging

setup_logging(snakemake.log[0])
cfg = snakemake.params.splits
make_split_files(
    snakemake.input.sheet,
    Path(snakemake.output[0]).parent,
    k=cfg["k"],
    val_fraction=cfg["val_fraction"],
    seed=cfg["seed"],
    files=cfg.get("files"),
)
