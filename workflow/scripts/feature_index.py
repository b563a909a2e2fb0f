"""Index every training slide's feature file (hmf.features.index)."""

import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.logs import setup_logging

setup_logging(snakemake.log[0])

from hmf.features.index import write_feature_index  # noqa: E402

write_feature_index(snakemake.params.slides, list(snakemake.input.features), snakemake.output[0])
