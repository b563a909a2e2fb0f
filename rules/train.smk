# Patient-level folds and per-fold training: one job per level x model x fold.


rule splits:
    """One fold's split file: fold f of stratified K folds over patients made with seed
    splits.seed + f // K (repeat f // K), grouped by centre, site or a sheet column when
    configured (or the user's split files, checked). One job per fold, whose params leave out
    splits.repeats: adding repeats adds folds and leaves the existing ones (and their models)."""
    input:
        sheet=labelled(f"{R}/sample_sheet.csv"),
    output:
        f"{R}/splits/fold_{{fold}}.csv",
    log:
        f"{LOGS}/splits/fold_{{fold}}.log",
    conda:
        "../envs/hmf.yaml"
    params:
        splits=FOLD_PARAMS,
    script:
        "../workflow/scripts/splits.py"


rule train_slide:
    """Train one slide-level model on one fold; predict its test slides; embed every slide."""
    input:
        unpack(train_slide_inputs),
    output:
        checkpoint=f"{R}/slide/{{model}}/fold_{{fold}}/checkpoint.pt",
        train_log=f"{R}/slide/{{model}}/fold_{{fold}}/train_log.csv",
        predictions=f"{R}/slide/{{model}}/fold_{{fold}}/predictions.csv",
        embeddings=f"{R}/slide/{{model}}/fold_{{fold}}/embeddings.pt",
    log:
        f"{LOGS}/slide/{{model}}/fold_{{fold}}.log",
    benchmark:
        f"{BENCH}/slide/{{model}}/fold_{{fold}}.tsv"
    conda:
        "../envs/hmf.yaml"
    threads: 1
    resources:
        gpu=TRAINING_GPUS,
        # From this job's inputs: the largest bag and the bag cache (features stream from disk).
        mem_mb=lambda wc, input: train_slide_mem_mb(wc.model, input.features, config["training"]["cache_mb"]),
    params:
        task=TASK.name,
        classes=DATASET.get("classes"),
        overrides=lambda wc: config["models"]["slide_params"].get(wc.model, {}),
        training=result_params("training", config["training"]),
    script:
        "../workflow/scripts/train_slide.py"


rule train_patient:
    """Train one patient-level model on the frozen slide model's embeddings of one fold
    (cross-fitted: test patients predicted from each inner model's embeddings, averaged)."""
    input:
        sheet=f"{R}/sample_sheet.csv",
        split=f"{R}/splits/fold_{{fold}}.csv",
        embeddings=patient_embeddings,
    output:
        checkpoint=f"{R}/patient/{{model}}/fold_{{fold}}/checkpoint.pt",
        train_log=f"{R}/patient/{{model}}/fold_{{fold}}/train_log.csv",
        predictions=f"{R}/patient/{{model}}/fold_{{fold}}/predictions.csv",
    log:
        f"{LOGS}/patient/{{model}}/fold_{{fold}}.log",
    benchmark:
        f"{BENCH}/patient/{{model}}/fold_{{fold}}.tsv"
    wildcard_constraints:
        model="|".join(model_names("patient", trained=True)),
    conda:
        "../envs/hmf.yaml"
    threads: 1
    resources:
        gpu=TRAINING_GPUS,
        mem_mb=lambda wc, input: train_patient_mem_mb(input.embeddings),
    params:
        task=TASK.name,
        classes=DATASET.get("classes"),
        overrides=lambda wc: config["models"]["patient_params"].get(wc.model, {}),
        training=result_params("training", config["training"]),
    script:
        "../workflow/scripts/train_patient.py"


rule aggregate_patient:
    """Patient predictions from the slide model's test predictions (no training): the pN
    rule on predicted slide labels, or the mean of slide probabilities."""
    input:
        sheet=f"{R}/sample_sheet.csv",
        split=f"{R}/splits/fold_{{fold}}.csv",
        slide_predictions=f"{R}/slide/{PATIENT_SOURCE}/fold_{{fold}}/predictions.csv",
    output:
        predictions=f"{R}/patient/{{model}}/fold_{{fold}}/predictions.csv",
    log:
        f"{LOGS}/patient/{{model}}/fold_{{fold}}.log",
    wildcard_constraints:
        model="|".join(model_names("patient", trained=False)),
    conda:
        "../envs/hmf.yaml"
    params:
        task=TASK.name,
        classes=DATASET.get("classes"),
    script:
        "../workflow/scripts/aggregate_patient.py"


rule inner_splits:
    """Inner folds over one outer fold's training and validation patients."""
    input:
        sheet=f"{R}/sample_sheet.csv",
        split=f"{R}/splits/fold_{{fold}}.csv",
    output:
        [f"{R}/splits/fold_{{fold}}/inner_{j}.csv" for j in INNER_FOLDS],
    log:
        f"{LOGS}/splits/fold_{{fold}}_inner.log",
    conda:
        "../envs/hmf.yaml"
    params:
        val_fraction=config["splits"]["val_fraction"],
        seed=config["splits"]["seed"],
    script:
        "../workflow/scripts/inner_splits.py"


use rule train_slide as train_slide_inner with:
    input:
        unpack(train_slide_inner_inputs),
    output:
        checkpoint=f"{R}/slide/{{model}}/fold_{{fold}}/inner_{{inner}}/checkpoint.pt",
        train_log=f"{R}/slide/{{model}}/fold_{{fold}}/inner_{{inner}}/train_log.csv",
        predictions=f"{R}/slide/{{model}}/fold_{{fold}}/inner_{{inner}}/predictions.csv",
        embeddings=f"{R}/slide/{{model}}/fold_{{fold}}/inner_{{inner}}/embeddings.pt",
    log:
        f"{LOGS}/slide/{{model}}/fold_{{fold}}/inner_{{inner}}.log",
    benchmark:
        f"{BENCH}/slide/{{model}}/fold_{{fold}}/inner_{{inner}}.tsv"


rule cross_fitted_embeddings:
    """One embeddings block per inner model: each training and validation slide embedded by
    the inner model that did not see its patient, every other slide by each inner model (the
    patient model averages its test predictions over the blocks). Logs the linear CKA of the
    outer and each inner model's embeddings of the fold's test slides."""
    input:
        sheet=f"{R}/sample_sheet.csv",
        split=f"{R}/splits/fold_{{fold}}.csv",
        outer=f"{R}/slide/{{model}}/fold_{{fold}}/embeddings.pt",
        inner_splits=[f"{R}/splits/fold_{{fold}}/inner_{j}.csv" for j in INNER_FOLDS],
        inner=[f"{R}/slide/{{model}}/fold_{{fold}}/inner_{j}/embeddings.pt" for j in INNER_FOLDS],
    output:
        f"{R}/slide/{{model}}/fold_{{fold}}/embeddings_cross_fitted.pt",
    log:
        f"{LOGS}/slide/{{model}}/fold_{{fold}}/cross_fitted.log",
    conda:
        "../envs/hmf.yaml"
    script:
        "../workflow/scripts/cross_fitted_embeddings.py"


rule feature_index:
    """The cohort's feature index: every training slide's feature file and its size, in
    sample-sheet order (hmf.features.index). The jobs that read the whole cohort's features
    depend on this one file, which depends on every feature file."""
    input:
        features=get_feature_files,
        checked=feature_checks("train"),
    output:
        FEATURE_INDEX,
    log:
        f"{LOGS}/features/index.log",
    conda:
        "../envs/hmf.yaml"
    params:
        slides=SLIDE_IDS,
    script:
        "../workflow/scripts/feature_index.py"


rule check_features:
    """Every value of a batch of precomputed feature files (features.precomputed_dir): finite,
    and of the training cohort's feature size; a failure names the file, row and dim. Read
    block by block, so memory stays bounded by the block, not the file."""
    input:
        get_checked_features,
    output:
        f"{R}/checks/features/{{cohort}}_{{batch}}.json",
    log:
        f"{LOGS}/checks/features/{{cohort}}_{{batch}}.log",
    wildcard_constraints:
        cohort="train|predict",
        batch="[0-9]+",
    conda:
        "../envs/hmf.yaml"
    threads: 1
    params:
        slides=lambda wc: feature_check_batches(wc.cohort)[int(wc.batch)],
        dim=FEATURE_DIM if PRECOMPUTED else None,
    script:
        "../workflow/scripts/check_features.py"
