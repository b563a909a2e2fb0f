import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.logs import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

import os  # noqa: E402

from hmf.batches import record_batch  # noqa: E402
from hmf.wsi.steps import run_patching, run_segmentation  # noqa: E402

out, params = snakemake.output, snakemake.params
preprocessing = dict(params.preprocessing)
run_segmentation(
    snakemake.input.slide, snakemake.wildcards.slide, preprocessing, out.geojson, out.mask, out.stats, mpp=params.mpp
)
run_patching(
    snakemake.input.slide, snakemake.wildcards.slide, preprocessing, out.geojson, out.coords, out.stitch, mpp=params.mpp
)
# last: the slide is kept out of segmentation batches (preprocessing.slides_per_job) from now on
record_batch(os.path.dirname(out.coords), [snakemake.wildcards.slide])
