# Helpers shared by the rules: results paths, the sample sheet (read and validated at parse
# time, so bad input fails before any job runs) and input functions.

# The Snakefile has put this checkout's src/ on sys.path.
import dataclasses

from snakemake.exceptions import WorkflowError

from hmf.config import DEFAULT_REFERENCE, DEMO_LABEL_KEYS, path_component, predicted_models
from hmf.devices import wants_gpu
from hmf.features.io import feature_paths
from hmf.models.names import model_info, model_names
from hmf.resources import train_patient_mem_mb, train_slide_mem_mb
from hmf.settings import result_params
from hmf.data.sample_sheet import SampleSheetError, check_labelled, load_sample_sheet, validate_sample_sheet
from hmf.data.splits import FoldDesign, check_inner_folds, group_column, sheet_folds, split_settings
from hmf.tasks import get_task

DATASET = config["dataset"]
NAME = DATASET["name"]
R = f"results/{NAME}"
LOGS = f"logs/{NAME}"
BENCH = f"benchmarks/{NAME}"
DEMO = config["demo"].get("enabled", False)
# Features computed by this workflow, or an existing folder in CLAM's layout (h5_files/,
# pt_files/) given as features.precomputed_dir: then segmentation, patching and extraction
# are skipped.
PRECOMPUTED = config["features"]["precomputed_dir"]
FEATURES_DIR = PRECOMPUTED or f"{R}/features/{path_component(config['features']['encoder'])}"
TEXT_ENCODER = config["text"]["encoder"]
SPLITS = split_settings(config["splits"])
# A generic sample sheet's column that splits.group_by names is kept in the workflow's sheet.
EXTRA_SHEET_COLUMNS = [c for c in (group_column(SPLITS.group_by),) if c]
SLIDE_MODELS = config["models"]["slide"]
PATIENT_MODELS = config["models"]["patient"]
PATIENT_SOURCE = config["models"]["patient_source"]
# GPUs a training or predict job asks Snakemake for: one, unless training.device is cpu (with
# none, the job's device auto is the CPU).
TRAINING_GPUS = int(wants_gpu(config["training"]["device"]))

try:
    TASK = get_task(DATASET["task"], DATASET.get("classes"))
except ValueError as err:
    raise WorkflowError(f"config: {err}") from None


def _parse_time_sheet():
    """The slides as known before any job runs. The demo's slides are outputs of the demo
    rules, so its sheet comes from the cohort plan (the same rows its label file will hold)."""
    if DEMO:
        from hmf.demo.plan import planned_sample_sheet

        sheet = planned_sample_sheet({**config["demo"], "slide_dir": DATASET["slide_dir"]})
        return validate_sample_sheet(sheet, TASK, check_files=False, require_labels=False)
    # Slide files are needed only when this workflow computes the features.
    return validate_sample_sheet(
        load_sample_sheet(DATASET, EXTRA_SHEET_COLUMNS), TASK, check_files=not PRECOMPUTED, require_labels=False
    )


try:
    SHEET = _parse_time_sheet()
except (SampleSheetError, ValueError) as err:
    raise WorkflowError(f"sample sheet: {err}") from None

# Labels are needed by the splits and everything after them, not by preprocessing: a sheet
# without labels can still build the `features` target. Targets that need labels fail before
# any job runs, through `labelled()`.
LABEL_ERRORS = []
try:
    check_labelled(SHEET)
except SampleSheetError as err:
    LABEL_ERRORS.append(f"sample sheet: {err}")


def _parse_time_folds():
    """The folds the splits job will write (hmf.data.splits.sheet_folds on the same sheet and
    settings), checked against cross-fitting's inner folds when a trained patient model uses them."""
    folds = sheet_folds(SHEET, SPLITS)
    cross_fitted = config["models"]["patient_inputs"] == "cross_fitted"
    if cross_fitted and any(model_info("patient", m).trained for m in PATIENT_MODELS):
        check_inner_folds(folds, config["models"]["inner_folds"])
    return folds


# Folds are made at parse time as the splits job makes them, whatever models are configured: a
# setting the cohort cannot meet (k above a class's patients, too few groups, overlapping split
# files, models.inner_folds above a fold's training patients) fails every target that trains
# before any job runs, through `labelled()`; a features-only run is not affected.
PARSE_FOLDS = []
if not LABEL_ERRORS:
    try:
        PARSE_FOLDS = _parse_time_folds()
    except (ValueError, FileNotFoundError) as err:
        LABEL_ERRORS.append(f"folds: {err}")
# Every fold id: fold f is fold f % K of repeat f // K (K folds per repeat, R repeats).
FOLDS = list(range(len(PARSE_FOLDS) or SPLITS.repeats * SPLITS.k))
FOLD_DESIGN = FoldDesign.of(SPLITS, len(FOLDS))
# How the folds were made, for the tables' footnotes and the repeats they pool (rules/evaluate.smk).
FOLD_DESIGN_PARAMS = dataclasses.asdict(FOLD_DESIGN)
# The settings one fold's split file depends on (the splits rule): all but the number of repeats.
FOLD_PARAMS = {k: v for k, v in result_params("splits", config["splits"]).items() if k != "repeats"}

SLIDE_IDS = list(SHEET["slide_id"])
_PATHS = dict(zip(SHEET["slide_id"], SHEET["path"]))
# Per-slide µm per pixel from the sample sheet; None (read it from the slide) where it is empty.
_MPP = {s: (None if m != m else float(m)) for s, m in zip(SHEET["slide_id"], SHEET["mpp"])}

# New, unlabelled slides for the `predict` target: preprocessed by the same per-slide rules, so
# their ids join the slide mapping (and must not clash with the training sheet's).
# The predict sheet gets the training sheet's checks and is checked against it: no training
# slide id (up to case), and no training patient or slide file (same file or content) unless
# predict.allow_training_slides, which marks them in-sample (hmf.data.predict_sheet).
PREDICT_SLIDE_IDS = []
PREDICT_IN_SAMPLE = []
if config["predict"]["sample_sheet"]:
    from hmf.data.predict_sheet import load_predict_sheet

    try:
        _PREDICT_SHEET = load_predict_sheet(
            config["predict"]["sample_sheet"],
            TASK,
            SHEET,
            check_files=not PRECOMPUTED,
            allow_training_slides=config["predict"]["allow_training_slides"],
        )
    except (SampleSheetError, ValueError) as err:
        raise WorkflowError(f"predict.sample_sheet: {err}") from None
    PREDICT_SLIDE_IDS = list(_PREDICT_SHEET["slide_id"])
    _PATHS.update(zip(_PREDICT_SHEET["slide_id"], _PREDICT_SHEET["path"]))
    _MPP.update({s: (None if m != m else float(m)) for s, m in zip(_PREDICT_SHEET["slide_id"], _PREDICT_SHEET["mpp"])})


def _feature_files():
    """Slide id -> its feature file: the .h5 this workflow writes, or the precomputed folder's
    .h5 (else .pt), each checked before any job runs (present, same feature size, coordinates
    where a model needs them)."""
    if not PRECOMPUTED:
        return {s: feature_paths(FEATURES_DIR, s).h5 for s in SLIDE_IDS}
    from hmf.features.io import FeatureFileError, check_feature_folder

    need_coords = sorted(m for m in SLIDE_MODELS if model_info("slide", m).needs_coords)
    try:
        return {s: str(p) for s, p in check_feature_folder(PRECOMPUTED, SLIDE_IDS, need_coords).items()}
    except FeatureFileError as err:
        raise WorkflowError(f"features.precomputed_dir: {err}") from None


FEATURE_FILES = _feature_files()

# With precomputed features the slide files are not read: the feature files are the slides'
# content, so no two slides may share one (same file or content), nor a new slide a training one.
if PRECOMPUTED:
    from hmf.data.predict_sheet import check_predict_feature_files
    from hmf.data.sample_sheet import check_feature_files
    from hmf.features.io import feature_file

    try:
        check_feature_files(SHEET, FEATURE_FILES)
    except SampleSheetError as err:
        raise WorkflowError(f"sample sheet: {err}") from None
    if PREDICT_SLIDE_IDS:
        try:
            _PREDICT_SHEET = check_predict_feature_files(
                _PREDICT_SHEET,
                {s: str(feature_file(FEATURES_DIR, s)) for s in PREDICT_SLIDE_IDS},
                SHEET,
                FEATURE_FILES,
                allow=config["predict"]["allow_training_slides"],
            )
        except SampleSheetError as err:
            raise WorkflowError(f"predict.sample_sheet: {err}") from None
if PREDICT_SLIDE_IDS:
    PREDICT_IN_SAMPLE = sorted(_PREDICT_SHEET.loc[_PREDICT_SHEET["in_sample"], "slide_id"])


def get_feature_files(wildcards):
    """The feature file of every training slide, in sample-sheet order."""
    return [FEATURE_FILES[s] for s in SLIDE_IDS]


# Every training slide's feature file, listed in one file by the feature_index job
# (hmf.features.index): the input of the jobs that read the whole cohort's features.
FEATURE_INDEX = f"{R}/feature_index.csv"


# Values of precomputed feature files (finite, the training cohort's feature size) are checked
# by check_features jobs of FEATURE_CHECK_SLIDES slides each (rules/train.smk) before training
# or prediction reads them; features extracted here are checked as they are written.
FEATURE_CHECK_SLIDES = 100
if PRECOMPUTED:
    from hmf.features.io import cohort_dim

    FEATURE_DIM = cohort_dim(FEATURE_FILES.values())


def feature_check_batches(cohort):
    """The slides of each check_features job of a cohort (train: the sample sheet's slides,
    predict: predict.sample_sheet's), in sheet order; none when this workflow extracts the features."""
    ids = SLIDE_IDS if cohort == "train" else PREDICT_SLIDE_IDS
    return [ids[i : i + FEATURE_CHECK_SLIDES] for i in range(0, len(ids), FEATURE_CHECK_SLIDES)] if PRECOMPUTED else []


def feature_checks(cohort):
    """The outputs of a cohort's check_features jobs: inputs of the jobs that read its features."""
    return [f"{R}/checks/features/{cohort}_{i}.json" for i in range(len(feature_check_batches(cohort)))]


def get_checked_features(wildcards):
    """The feature files one check_features job reads (wildcards cohort, batch)."""
    files = FEATURE_FILES if wildcards.cohort == "train" else dict(zip(PREDICT_SLIDE_IDS, predict_features()))
    return [files[s] for s in feature_check_batches(wildcards.cohort)[int(wildcards.batch)]]


include: "slide_helpers.smk"


def label_inputs():
    """The user's label files (for the demo: those the demo rules write)."""
    keys = {"generic": ["sample_sheet"], "camelyon17": ["stage_labels"], "tcga": ["label_csv"]}
    return [DATASET[key] for key in keys[DATASET.get("format", "generic")]]


def labelled(path):
    """An input that needs labelled slides (and folds that can be made from them): refused
    with the reason, before any job runs, when the sample sheet or the folds do not allow it."""

    def check(wildcards):
        if LABEL_ERRORS:
            raise WorkflowError(LABEL_ERRORS[0])
        return path

    return check


def train_slide_inputs(wildcards):
    inputs = {
        "sheet": f"{R}/sample_sheet.csv",
        "split": f"{R}/splits/fold_{wildcards.fold}.csv",
        "features": FEATURE_INDEX,
    }
    if model_info("slide", wildcards.model).needs_text:
        inputs["text"] = text_bank("slide")
    return inputs


def levels():
    """Evaluation levels of the task: slide and patient, or patient only for subtyping."""
    return ["slide", "patient"]


def models_of(level):
    return SLIDE_MODELS if level == "slide" else PATIENT_MODELS


def text_bank(level):
    return f"{R}/text/{TASK.labelsets[level]}/{TEXT_ENCODER}.pt"


def fold_outputs(level, name):
    """A file of every model of a level on every fold, model by model, then fold by fold."""
    return [f"{R}/{level}/{model}/fold_{fold}/{name}" for model in models_of(level) for fold in FOLDS]


# Input functions and params of the per-level and per-fold rules (wildcards level, model, fold).


def get_models(wildcards):
    """The models of the job's level, in the configured order."""
    return models_of(wildcards.level)


def get_classes(wildcards):
    """The classes of the job's level, in the task's order."""
    return list(TASK.classes(wildcards.level))


def get_ordinal(wildcards):
    """Whether the classes of the job's level are ordered (then kappa is reported)."""
    return wildcards.level in TASK.ordinal


def get_fold_metrics(wildcards):
    """The metrics files of every model of the job's level on every fold (as fold_outputs orders them)."""
    return fold_outputs(wildcards.level, "metrics.json")


def get_fold_predictions(wildcards):
    """The predictions files of every model of the job's level on every fold (as fold_outputs orders them)."""
    return fold_outputs(wildcards.level, "predictions.csv")


def get_fold_title(wildcards):
    """The title of a figure of one model on one fold."""
    return f"{NAME} {wildcards.level} {wildcards.model} fold {wildcards.fold}"


def get_level_title(wildcards):
    """The title of a level's results table, with the level's classes."""
    return f"{NAME}: {wildcards.level} level ({', '.join(TASK.classes(wildcards.level))})"


def table_outputs():
    """Per level: the results table and the paired comparison with the reference model."""
    return [
        f"{R}/tables/{level}{kind}.{ext}"
        for level in levels()
        for kind in ("", "_comparison")
        for ext in ("csv", "md", "png")
    ]


# Pooled tables and paired comparisons (rules/evaluate.smk).
EVALUATION = config["evaluation"]
BOOTSTRAP = {"resamples": EVALUATION["bootstrap_resamples"], "seed": EVALUATION["seed"]}


def reference_model(level):
    """The model of a level every other is compared with: evaluation.reference.<level>, or
    hmf / hmf_patient when configured, else the level's first model."""
    chosen = EVALUATION["reference"][level]  # among models.<level>: hmf.config.check_cross_keys
    models = models_of(level)
    if chosen is None:
        default = DEFAULT_REFERENCE[level]
        return default if default in models else models[0]
    return chosen


def get_reference(wildcards):
    """The reference model of the job's level."""
    return reference_model(wildcards.level)


def get_comparison_title(wildcards):
    """The title of a level's paired comparison with its reference model."""
    return f"{NAME}: {wildcards.level} level, paired comparison with {reference_model(wildcards.level)}"


def get_level_notes(wildcards):
    """Notes printed under a level's results table."""
    if TASK.name == "camelyon17" and wildcards.level == "patient":
        return [
            "At patient level the pooled quadratic weighted kappa over all patients is the CAMELYON17 "
            "challenge's metric (one kappa over the cohort, not a mean of per-fold kappas)."
        ]
    return []


# Cross-fitted patient inputs (models.patient_inputs: cross_fitted): per outer fold, inner slide
# models of models.patient_source, each trained without one inner fold of the fold's training
# patients, embed that inner fold's slides; the patient models train on those embeddings and
# predict test (and new) patients from each inner model's embeddings, averaged.
INNER_FOLDS = list(range(config["models"]["inner_folds"]))
CROSS_FITTED = config["models"]["patient_inputs"] == "cross_fitted"


def patient_embeddings(wildcards):
    """The slide embeddings a patient model of this fold trains on."""
    name = "embeddings_cross_fitted.pt" if CROSS_FITTED else "embeddings.pt"
    return f"{R}/slide/{PATIENT_SOURCE}/fold_{wildcards.fold}/{name}"


def train_slide_inner_inputs(wildcards):
    return {**train_slide_inputs(wildcards), "split": f"{R}/splits/fold_{wildcards.fold}/inner_{wildcards.inner}.csv"}


# The predict target: which models predict the new slides (rules/predict.smk).
PREDICT = config["predict"]
PREDICT_DIR = f"{R}/predict"
PREDICT_SLIDE_MODELS = predicted_models(config, "slide")
PREDICT_PATIENT_MODELS = predicted_models(config, "patient")
# The patient model whose stages go into the CAMELYON17 submission: predict.submission_model,
# or (None) the predicted patient model with the best pooled out-of-fold kappa, chosen by the
# predict_submission job from the patient results table. (hmf.config.check_cross_keys has
# checked predict's models against the configured ones.)
SUBMISSION_MODEL = PREDICT["submission_model"]


def submission_candidates():
    """The patient models the submission's stages may come from: the one named, or every
    predicted patient model (the job picks the best pooled out-of-fold kappa)."""
    return [SUBMISSION_MODEL] if SUBMISSION_MODEL else list(PREDICT_PATIENT_MODELS)


def predict_outputs():
    if not PREDICT_SLIDE_IDS:
        raise WorkflowError("the predict target needs predict.sample_sheet in the config (the new, unlabelled slides)")
    outputs = [
        f"{PREDICT_DIR}/slide/{m}/{name}" for m in PREDICT_SLIDE_MODELS for name in ("predictions.csv", "folds.csv")
    ]
    outputs += [
        f"{PREDICT_DIR}/patient/{m}/{name}" for m in PREDICT_PATIENT_MODELS for name in ("predictions.csv", "folds.csv")
    ]
    if TASK.name == "camelyon17":
        outputs.append(f"{PREDICT_DIR}/camelyon17_submission.csv")
    return outputs


_PREDICT_FEATURE_FILES = []


def predict_features():
    """The new slides' feature files: written by this workflow, or found in features.precomputed_dir,
    checked from their headers before any job runs (present, of the training cohort's feature
    size, with coordinates where a predicting model needs them)."""
    if not PRECOMPUTED:
        return [feature_paths(FEATURES_DIR, s).h5 for s in PREDICT_SLIDE_IDS]
    if PREDICT_SLIDE_IDS and not _PREDICT_FEATURE_FILES:
        from hmf.features.io import FeatureFileError, check_feature_folder

        need_coords = sorted(m for m in PREDICT_SLIDE_MODELS if model_info("slide", m).needs_coords)
        try:
            files = check_feature_folder(PRECOMPUTED, PREDICT_SLIDE_IDS, need_coords, dim=FEATURE_DIM)
        except FeatureFileError as err:
            raise WorkflowError(f"features.precomputed_dir, slides of predict.sample_sheet: {err}") from None
        _PREDICT_FEATURE_FILES.extend(str(files[s]) for s in PREDICT_SLIDE_IDS)
    return list(_PREDICT_FEATURE_FILES)


def get_slide_text(wildcards):
    """The slide-level text bank, for a slide model that reads it (else nothing)."""
    return [text_bank("slide")] if model_info("slide", wildcards.model).needs_text else []


def _predicts_from_inner_models(model):
    """Whether a patient model predicts from the inner slide models' embeddings (trained on
    cross-fitted inputs) rather than the outer fold models'."""
    return CROSS_FITTED and model_info("patient", model).trained


def get_predict_embeddings(wildcards):
    """The outer fold models' embeddings of the new slides, for a patient model that reads them."""
    if _predicts_from_inner_models(wildcards.model):
        return []
    return [f"{PREDICT_DIR}/slide/{PATIENT_SOURCE}/embeddings.pt"]


def get_predict_inner_embeddings(wildcards):
    """Per fold, the inner slide models' embeddings of the new slides (cross-fitted patient inputs)."""
    if not _predicts_from_inner_models(wildcards.model):
        return []
    return [f"{PREDICT_DIR}/slide/{PATIENT_SOURCE}/fold_{k}/embeddings_inner.pt" for k in FOLDS]


wildcard_constraints:
    slide="[A-Za-z0-9][A-Za-z0-9._+()\\-]*",
    fold="[0-9]+",
    inner="[0-9]+",
    level="slide|patient",
    model="[a-z0-9_]+",
