import _checkout  # noqa: F401  (first: the job imports this checkout's hmf)

from hmf.training.jobs import model_job

with model_job(snakemake) as job:
    from hmf.features.index import feature_files
    from hmf.training.slide import SlideOutputs, train_slide_fold

    out = snakemake.output
    train_slide_fold(
        snakemake.wildcards.model,
        job.task,
        sheet_csv=snakemake.input.sheet,
        split_csv=snakemake.input.split,
        feature_files=feature_files(snakemake.input.features),
        outputs=SlideOutputs(out.checkpoint, out.train_log, out.predictions, out.embeddings),
        overrides=snakemake.params.overrides,
        training=job.training,
        text_bank=snakemake.input.get("text"),
        device=job.device,
        progress_file=job.progress_file,
    )
