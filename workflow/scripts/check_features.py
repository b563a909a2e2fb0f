"""Check the values of a batch of feature files; write what each holds (rows, feature size)."""

import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.logs import setup_logging

setup_logging(snakemake.log[0])

import logging  # noqa: E402

from hmf.atomic import write_json  # noqa: E402
from hmf.features.io import check_values  # noqa: E402

log = logging.getLogger("check_features")
checked = {}
for slide_id, path in zip(snakemake.params.slides, snakemake.input, strict=True):
    info = check_values(path, dim=snakemake.params.dim)
    checked[slide_id] = {"path": str(path), "rows": info.n_patches, "dim": info.dim}
    log.info("slide %s: %s: %d rows of %d features, all finite", slide_id, path, info.n_patches, info.dim)
write_json(snakemake.output[0], {"dim": snakemake.params.dim, "slides": checked})
