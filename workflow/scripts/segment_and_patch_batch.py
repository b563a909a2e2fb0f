import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.logs import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

import os  # noqa: E402

from hmf.batches import record_batch  # noqa: E402
from hmf.wsi.steps import run_patching, run_segmentation  # noqa: E402

out, params = snakemake.output, snakemake.params
preprocessing = dict(params.preprocessing)
for i, slide_id in enumerate(params.slides):
    slide, mpp = snakemake.input.slides[i], params.mpp[i]
    run_segmentation(slide, slide_id, preprocessing, out.geojson[i], out.mask[i], out.stats[i], mpp=mpp)
    run_patching(slide, slide_id, preprocessing, out.geojson[i], out.coords[i], out.stitch[i], mpp=mpp)
# last: the batch is kept once all its slides are done
record_batch(os.path.dirname(out.coords[0]), params.slides)
