import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.training.jobs import model_job

with model_job(snakemake) as job:
    from hmf.predict import predict_patients

    predict_patients(
        snakemake.wildcards.model,
        job.task,
        sheet_csv=snakemake.input.sheet,
        slide_embeddings=(list(snakemake.input.embeddings) or [None])[0],
        checkpoints=list(snakemake.input.checkpoints),
        out_predictions=snakemake.output.predictions,
        out_folds=snakemake.output.folds,
        device=job.device,
        inner_embeddings=list(snakemake.input.inner),
    )
