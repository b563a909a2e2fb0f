from pathlib import Path

from hmf.logs import setup_logging
from hmf.sources import aperio_slide, tumour_region

setup_logging(snakemake.log[0])
aperio_slide(Path(snakemake.output.aperio).parent)
tumour_region(Path(snakemake.output.tumour).parent)
