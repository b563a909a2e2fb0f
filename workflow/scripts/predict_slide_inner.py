import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.training.jobs import model_job

with model_job(snakemake) as job:
    from hmf.predict import embed_slides_inner

    embed_slides_inner(
        job.task,
        sheet_csv=snakemake.input.sheet,
        feature_files=dict(zip(snakemake.params.slides, snakemake.input.features, strict=True)),
        checkpoints=list(snakemake.input.checkpoints),
        out_embeddings=snakemake.output[0],
        text_bank=(list(snakemake.input.text) or [None])[0],
        device=job.device,
    )
