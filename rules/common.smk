# Helpers shared by the rules: results paths, the sample sheet (read and validated at parse
# time, so bad input fails before any job runs) and input functions.

# The Snakefile has put this checkout's src/ on sys.path.
from snakemake.exceptions import WorkflowError

from hmf.config import path_component
from hmf.features.io import feature_paths
from hmf.models.names import model_info, model_names
from hmf.resources import train_patient_mem_mb, train_slide_mem_mb
from hmf.data.sample_sheet import SampleSheetError, check_labelled, load_sample_sheet, validate_sample_sheet
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
FOLDS = list(range(config["splits"]["k"]))
SLIDE_MODELS = config["models"]["slide"]
PATIENT_MODELS = config["models"]["patient"]
PATIENT_SOURCE = config["models"]["patient_source"]

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
    return validate_sample_sheet(load_sample_sheet(DATASET), TASK, check_files=not PRECOMPUTED, require_labels=False)


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

SLIDE_IDS = list(SHEET["slide_id"])
_PATHS = dict(zip(SHEET["slide_id"], SHEET["path"]))
# Per-slide µm per pixel from the sample sheet; None (read it from the slide) where it is empty.
_MPP = {s: (None if m != m else float(m)) for s, m in zip(SHEET["slide_id"], SHEET["mpp"])}

# New, unlabelled slides for the `predict` target: preprocessed by the same per-slide rules, so
# their ids join the slide mapping (and must not clash with the training sheet's).
PREDICT_SLIDE_IDS = []
if config["predict"]["sample_sheet"]:
    from hmf.predict import load_predict_sheet

    try:
        _PREDICT_SHEET = load_predict_sheet(config["predict"]["sample_sheet"], SLIDE_IDS, check_files=not PRECOMPUTED)
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


def get_feature_files(wildcards):
    """The feature file of every training slide, in sample-sheet order."""
    return [FEATURE_FILES[s] for s in SLIDE_IDS]


if "pn_rule" in PATIENT_MODELS and not TASK.pn_rule:
    raise WorkflowError(f"models.patient: pn_rule applies to CAMELYON17 only, not task {TASK.name}")
if "mean_prob" in PATIENT_MODELS and not TASK.slides_inherit_patient_label:
    raise WorkflowError(
        f"models.patient: mean_prob averages slide probabilities over a patient's slides, which needs "
        f"slide and patient classes to be the same; task {TASK.name} has different ones"
    )
if (
    any(model_info("patient", m).trained for m in PATIENT_MODELS) or "pn_rule" in PATIENT_MODELS
) and PATIENT_SOURCE not in SLIDE_MODELS:
    raise WorkflowError(f"models.patient_source: {PATIENT_SOURCE!r} is not one of models.slide {SLIDE_MODELS}")


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
        "features": get_feature_files(wildcards),
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
    chosen = EVALUATION["reference"][level]
    models = models_of(level)
    if chosen is None:
        default = {"slide": "hmf", "patient": "hmf_patient"}[level]
        return default if default in models else models[0]
    if chosen not in models:
        raise WorkflowError(
            f"config key evaluation.reference.{level}: {chosen!r} is not one of models.{level} {models}"
        )
    return chosen


for _level in levels():
    reference_model(_level)  # a bad reference fails before any job runs


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
# patients, embed that inner fold's slides; the patient models train on those embeddings.
INNER_FOLDS = list(range(config["models"]["inner_folds"]))


def patient_embeddings(wildcards):
    """The slide embeddings a patient model of this fold trains on."""
    name = "embeddings_cross_fitted.pt" if config["models"]["patient_inputs"] == "cross_fitted" else "embeddings.pt"
    return f"{R}/slide/{PATIENT_SOURCE}/fold_{wildcards.fold}/{name}"


def train_slide_inner_inputs(wildcards):
    return {**train_slide_inputs(wildcards), "split": f"{R}/splits/fold_{wildcards.fold}/inner_{wildcards.inner}.csv"}


# The predict target: which models predict the new slides (rules/predict.smk).
PREDICT = config["predict"]
PREDICT_DIR = f"{R}/predict"
PREDICT_SLIDE_MODELS = PREDICT["slide_models"] or SLIDE_MODELS
PREDICT_PATIENT_MODELS = PREDICT["patient_models"] or PATIENT_MODELS
for _key, _chosen, _models in (
    ("slide_models", PREDICT_SLIDE_MODELS, SLIDE_MODELS),
    ("patient_models", PREDICT_PATIENT_MODELS, PATIENT_MODELS),
):
    if set(_chosen) - set(_models):
        raise WorkflowError(
            f"config key predict.{_key}: {sorted(set(_chosen) - set(_models))} not among the "
            f"configured models {_models}"
        )
SUBMISSION_MODEL = PREDICT["submission_model"] or reference_model("patient")
if SUBMISSION_MODEL not in PREDICT_PATIENT_MODELS:
    raise WorkflowError(
        f"config key predict.submission_model: {SUBMISSION_MODEL!r} is not among the predicted "
        f"patient models {PREDICT_PATIENT_MODELS}"
    )


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


def predict_features():
    """The new slides' feature files: written by this workflow, or found in features.precomputed_dir."""
    if not PRECOMPUTED:
        return [feature_paths(FEATURES_DIR, s).h5 for s in PREDICT_SLIDE_IDS]
    from hmf.features.io import feature_file

    return [str(feature_file(FEATURES_DIR, s)) for s in PREDICT_SLIDE_IDS]


wildcard_constraints:
    slide="[A-Za-z0-9][A-Za-z0-9._+()\\-]*",
    fold="[0-9]+",
    inner="[0-9]+",
    level="slide|patient",
    model="[a-z0-9_]+",
