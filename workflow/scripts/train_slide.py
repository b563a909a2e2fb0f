from hmf.logs import progress_stream, setup_logging
from hmf.tasks import get_task
from hmf.training.devices import claim_device
from hmf.training.slide import SlideOutputs, train_slide_fold

import torch

setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
out = snakemake.output
with claim_device(snakemake.params.training["device"]) as claim:
    train_slide_fold(
        snakemake.wildcards.model,
        get_task(snakemake.params.task, snakemake.params.classes),
        sheet_csv=snakemake.input.sheet,
        split_csv=snakemake.input.split,
        features_dir=snakemake.params.features_dir,
        outputs=SlideOutputs(out.checkpoint, out.train_log, out.predictions, out.embeddings),
        overrides=snakemake.params.overrides,
        training=snakemake.params.training,
        text_bank=snakemake.input.get("text"),
        device="cpu" if claim.simulated else claim.device,  # simulated cards compute on the CPU
        progress_file=progress_stream(snakemake.log[0]),
    )
