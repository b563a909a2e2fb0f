from hmf.logs import progress_stream, setup_logging
from hmf.tasks import get_task
from hmf.training.devices import claim_device
from hmf.training.patient import train_patient_fold

import torch

setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
out = snakemake.output
with claim_device(snakemake.params.training["device"]) as claim:
    train_patient_fold(
        snakemake.wildcards.model,
        get_task(snakemake.params.task, snakemake.params.classes),
        sheet_csv=snakemake.input.sheet,
        split_csv=snakemake.input.split,
        embeddings=snakemake.input.embeddings,
        checkpoint=out.checkpoint,
        train_log=out.train_log,
        predictions=out.predictions,
        overrides=snakemake.params.overrides,
        training=snakemake.params.training,
        device="cpu" if claim.simulated else claim.device,  # simulated cards compute on the CPU
        progress_file=progress_stream(snakemake.log[0]),
    )
