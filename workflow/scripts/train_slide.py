import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.logs import progress_stream, setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

import torch  # noqa: E402

from hmf.devices import claim_device  # noqa: E402
from hmf.tasks import get_task  # noqa: E402
from hmf.training.slide import SlideOutputs, train_slide_fold  # noqa: E402

torch.set_num_threads(snakemake.threads)
out = snakemake.output
with claim_device(snakemake.params.training["device"], gpus=snakemake.resources.get("gpu", 0)) as claim:
    train_slide_fold(
        snakemake.wildcards.model,
        get_task(snakemake.params.task, snakemake.params.classes),
        sheet_csv=snakemake.input.sheet,
        split_csv=snakemake.input.split,
        feature_files=dict(zip(snakemake.params.slides, snakemake.input.features, strict=True)),
        outputs=SlideOutputs(out.checkpoint, out.train_log, out.predictions, out.embeddings),
        overrides=snakemake.params.overrides,
        training=snakemake.params.training,
        text_bank=snakemake.input.get("text"),
        device=claim.compute_device,
        progress_file=progress_stream(snakemake.log[0]),
    )
