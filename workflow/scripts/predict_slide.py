import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.training.jobs import model_job

with model_job(snakemake) as job:
    from hmf.predict import predict_slides

    out = snakemake.output
    predict_slides(
        job.task,
        sheet_csv=snakemake.input.sheet,
        feature_files=dict(zip(snakemake.params.slides, snakemake.input.features, strict=True)),
        checkpoints=list(snakemake.input.checkpoints),
        out_predictions=out.predictions,
        out_folds=out.folds,
        out_embeddings=out.embeddings,
        text_bank=(list(snakemake.input.text) or [None])[0],
        device=job.device,
    )
