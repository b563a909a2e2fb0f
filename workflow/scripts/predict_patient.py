import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.logs import setup_logging

setup_logging(snakemake.log[0])

import torch  # noqa: E402

from hmf.devices import claim_device  # noqa: E402
from hmf.predict import predict_patients  # noqa: E402
from hmf.tasks import get_task  # noqa: E402

torch.set_num_threads(snakemake.threads)
with claim_device(snakemake.params.device, gpus=snakemake.resources.get("gpu", 0)) as claim:
    predict_patients(
        snakemake.wildcards.model,
        get_task(snakemake.params.task, snakemake.params.classes),
        sheet_csv=snakemake.input.sheet,
        slide_embeddings=snakemake.input.embeddings,
        checkpoints=list(snakemake.input.checkpoints),
        out_predictions=snakemake.output.predictions,
        out_folds=snakemake.output.folds,
        device=claim.compute_device,
    )
