import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.training.jobs import model_job

with model_job(snakemake) as job:
    from hmf.training.patient import train_patient_fold

    out = snakemake.output
    train_patient_fold(
        snakemake.wildcards.model,
        job.task,
        sheet_csv=snakemake.input.sheet,
        split_csv=snakemake.input.split,
        embeddings=snakemake.input.embeddings,
        checkpoint=out.checkpoint,
        train_log=out.train_log,
        predictions=out.predictions,
        overrides=snakemake.params.overrides,
        training=job.training,
        device=job.device,
        progress_file=job.progress_file,
    )
