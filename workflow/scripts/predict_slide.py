import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.logs import setup_logging

setup_logging(snakemake.log[0])

import torch  # noqa: E402

from hmf.devices import claim_device  # noqa: E402
from hmf.predict import predict_slides  # noqa: E402
from hmf.tasks import get_task  # noqa: E402

torch.set_num_threads(snakemake.threads)
out = snakemake.output
with claim_device(snakemake.params.device, gpus=snakemake.resources.get("gpu", 0)) as claim:
    predict_slides(
        get_task(snakemake.params.task, snakemake.params.classes),
        sheet_csv=snakemake.input.sheet,
        features_dir=snakemake.params.features_dir,
        checkpoints=list(snakemake.input.checkpoints),
        out_predictions=out.predictions,
        out_folds=out.folds,
        out_embeddings=out.embeddings,
        text_bank=(list(snakemake.input.text) or [None])[0],
        device=claim.compute_device,
    )
