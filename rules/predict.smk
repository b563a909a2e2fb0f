# Predictions for new, unlabelled patients: the slides of predict.sample_sheet are segmented,
# patched and encoded by the same per-slide rules as the training slides, then every fold model
# of each chosen model predicts them (mean of the K folds' probabilities, per-fold spread kept).
#
#   snakemake predict --cores all --configfile my.yaml        (with predict.sample_sheet set)


rule predict:
    """Slide and patient predictions for the new patients of predict.sample_sheet (and, for
    CAMELYON17, the challenge's submission file)."""
    input:
        lambda wc: predict_outputs(),


rule predict_sheet:
    """The new slides' sheet, checked as the training sheet (labels ignored), with the slides
    accepted as training slides (predict.allow_training_slides) marked in_sample; the checks
    against the training sheet ran when the workflow was read."""
    input:
        sheet=PREDICT["sample_sheet"] or [],
        slides=[] if PRECOMPUTED else [_PATHS[s] for s in PREDICT_SLIDE_IDS],
    output:
        f"{PREDICT_DIR}/sample_sheet.csv",
    log:
        f"{LOGS}/predict/sample_sheet.log",
    conda:
        "../envs/hmf.yaml"
    params:
        task=TASK.name,
        classes=DATASET.get("classes"),
        in_sample=PREDICT_IN_SAMPLE,
        check_files=not PRECOMPUTED,
    script:
        "../workflow/scripts/predict_sheet.py"


rule predict_slide:
    """The K fold models of one slide model on the new slides: ensemble, per-fold rows and
    per-fold embeddings."""
    input:
        sheet=f"{PREDICT_DIR}/sample_sheet.csv",
        features=predict_features(),
        checked=feature_checks("predict"),
        checkpoints=lambda wc: [f"{R}/slide/{wc.model}/fold_{k}/checkpoint.pt" for k in FOLDS],
        text=get_slide_text,
    output:
        predictions=f"{PREDICT_DIR}/slide/{{model}}/predictions.csv",
        folds=f"{PREDICT_DIR}/slide/{{model}}/folds.csv",
        embeddings=f"{PREDICT_DIR}/slide/{{model}}/embeddings.pt",
    log:
        f"{LOGS}/predict/slide/{{model}}.log",
    conda:
        "../envs/hmf.yaml"
    threads: 1
    resources:
        gpu=TRAINING_GPUS,
    params:
        task=TASK.name,
        classes=DATASET.get("classes"),
        slides=PREDICT_SLIDE_IDS,
    script:
        "../workflow/scripts/predict_slide.py"


rule predict_slide_inner:
    """The inner slide models of one outer fold on the new slides (cross-fitted patient
    inputs): one embeddings block per inner model, for that fold's patient models."""
    input:
        sheet=f"{PREDICT_DIR}/sample_sheet.csv",
        features=predict_features(),
        checked=feature_checks("predict"),
        checkpoints=lambda wc: [f"{R}/slide/{wc.model}/fold_{wc.fold}/inner_{j}/checkpoint.pt" for j in INNER_FOLDS],
        text=get_slide_text,
    output:
        f"{PREDICT_DIR}/slide/{{model}}/fold_{{fold}}/embeddings_inner.pt",
    log:
        f"{LOGS}/predict/slide/{{model}}/fold_{{fold}}_inner.log",
    conda:
        "../envs/hmf.yaml"
    threads: 1
    resources:
        gpu=TRAINING_GPUS,
    params:
        task=TASK.name,
        classes=DATASET.get("classes"),
        slides=PREDICT_SLIDE_IDS,
    script:
        "../workflow/scripts/predict_slide_inner.py"


rule predict_patient:
    """The K fold models of one patient model on the new patients, each on the source slide
    model's embeddings of its own fold: the outer fold model's (in-sample inputs, and the
    untrained aggregators) or each of the fold's inner models' (cross-fitted inputs; the
    probabilities averaged over them)."""
    input:
        sheet=f"{PREDICT_DIR}/sample_sheet.csv",
        embeddings=get_predict_embeddings,
        inner=get_predict_inner_embeddings,
        checkpoints=lambda wc: (
            []
            if not model_info("patient", wc.model).trained
            else [f"{R}/patient/{wc.model}/fold_{k}/checkpoint.pt" for k in FOLDS]
        ),
    output:
        predictions=f"{PREDICT_DIR}/patient/{{model}}/predictions.csv",
        folds=f"{PREDICT_DIR}/patient/{{model}}/folds.csv",
    log:
        f"{LOGS}/predict/patient/{{model}}.log",
    conda:
        "../envs/hmf.yaml"
    threads: 1
    resources:
        gpu=TRAINING_GPUS,
    params:
        task=TASK.name,
        classes=DATASET.get("classes"),
    script:
        "../workflow/scripts/predict_patient.py"


rule predict_submission:
    """CAMELYON17's submission file: patient_XXX.zip,<pN stage> and patient_XXX_node_Y.tif,<label>,
    the stages from predict.submission_model or else the predicted patient model with the best
    pooled out-of-fold kappa (patient results table); stages that contradict the pN rule over
    the submitted node labels are listed beside it."""
    input:
        sheet=f"{PREDICT_DIR}/sample_sheet.csv",
        patients=[f"{PREDICT_DIR}/patient/{m}/predictions.csv" for m in submission_candidates()],
        slides=f"{PREDICT_DIR}/slide/{PATIENT_SOURCE}/predictions.csv",
        table=[] if SUBMISSION_MODEL else [f"{R}/tables/patient.csv"],
    output:
        submission=f"{PREDICT_DIR}/camelyon17_submission.csv",
        conflicts=f"{PREDICT_DIR}/camelyon17_submission_conflicts.csv",
    log:
        f"{LOGS}/predict/submission.log",
    conda:
        "../envs/hmf.yaml"
    params:
        model=SUBMISSION_MODEL,
        models=submission_candidates(),
    script:
        "../workflow/scripts/predict_submission.py"
