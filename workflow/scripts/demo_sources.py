import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.logs import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from pathlib import Path  # noqa: E402

from hmf.demo.sources import aperio_slide, tumour_region  # noqa: E402

aperio_slide(Path(snakemake.output.aperio).parent)
tumour_region(Path(snakemake.output.tumour).parent)
