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
    """The new slides' sheet, checked (safe, unique ids; files present; labels ignored)."""
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
        known=SLIDE_IDS,
        check_files=not PRECOMPUTED,
    script:
        "../workflow/scripts/predict_sheet.py"


rule predict_slide:
    """The K fold models of one slide model on the new slides: ensemble, per-fold rows and
    per-fold embeddings."""
    input:
        sheet=f"{PREDICT_DIR}/sample_sheet.csv",
        features=predict_features(),
        checkpoints=lambda wc: [f"{R}/slide/{wc.model}/fold_{k}/checkpoint.pt" for k in FOLDS],
        text=lambda wc: [text_bank("slide")] if model_info("slide", wc.model).needs_text else [],
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
        gpu=1,
    params:
        task=TASK.name,
        classes=DATASET.get("classes"),
        training=config["training"],
        slides=PREDICT_SLIDE_IDS,
    script:
        "../workflow/scripts/predict_slide.py"


rule predict_patient:
    """The K fold models of one patient model on the new patients, each on the source slide
    model's embeddings of its own fold."""
    input:
        sheet=f"{PREDICT_DIR}/sample_sheet.csv",
        embeddings=f"{PREDICT_DIR}/slide/{PATIENT_SOURCE}/embeddings.pt",
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
        gpu=1,
    params:
        task=TASK.name,
        classes=DATASET.get("classes"),
        training=config["training"],
    script:
        "../workflow/scripts/predict_patient.py"


rule predict_submission:
    """CAMELYON17's submission file: patient_XXX.zip,<pN stage> and patient_XXX_node_Y.tif,<label>."""
    input:
        sheet=f"{PREDICT_DIR}/sample_sheet.csv",
        patients=f"{PREDICT_DIR}/patient/{SUBMISSION_MODEL}/predictions.csv",
        slides=f"{PREDICT_DIR}/slide/{PATIENT_SOURCE}/predictions.csv",
    output:
        f"{PREDICT_DIR}/camelyon17_submission.csv",
    log:
        f"{LOGS}/predict/submission.log",
    conda:
        "../envs/hmf.yaml"
    script:
        "../workflow/scripts/predict_submission.py"
