# Helpers shared by the rules: results paths, the sample sheet (read and validated at parse
# time, so bad input fails before any job runs) and input functions.

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from snakemake.exceptions import WorkflowError

from hmf.config import path_component
from hmf.data.sample_sheet import SampleSheetError, load_sample_sheet, validate_sample_sheet
from hmf.tasks import get_task

DATASET = config["dataset"]
NAME = DATASET["name"]
R = f"results/{NAME}"
LOGS = f"logs/{NAME}"
BENCH = f"benchmarks/{NAME}"
DEMO = config["demo"].get("enabled", False)
FEATURES_DIR = f"{R}/features/{path_component(config['features']['encoder'])}"
TEXT_ENCODER = config["text"]["encoder"]
FOLDS = list(range(config["splits"]["k"]))
SLIDE_MODELS = config["models"]["slide"]
PATIENT_MODELS = config["models"]["patient"]
PATIENT_SOURCE = config["models"]["patient_source"]
UNTRAINED_PATIENT_MODELS = ["pn_rule", "mean_prob"]

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
        return validate_sample_sheet(sheet, TASK, check_files=False)
    return validate_sample_sheet(load_sample_sheet(DATASET), TASK, check_files=True)


try:
    SHEET = _parse_time_sheet()
except (SampleSheetError, ValueError) as err:
    raise WorkflowError(f"sample sheet: {err}") from None

SLIDE_IDS = list(SHEET["slide_id"])
_PATHS = dict(zip(SHEET["slide_id"], SHEET["path"]))
# Per-slide µm per pixel from the sample sheet; None (read it from the slide) where it is empty.
_MPP = {s: (None if m != m else float(m)) for s, m in zip(SHEET["slide_id"], SHEET["mpp"])}

if "pn_rule" in PATIENT_MODELS and not TASK.pn_rule:
    raise WorkflowError(f"models.patient: pn_rule applies to CAMELYON17 only, not task {TASK.name}")
if "mean_prob" in PATIENT_MODELS and not TASK.slides_inherit_patient_label:
    raise WorkflowError(
        f"models.patient: mean_prob averages slide probabilities over a patient's slides, which needs "
        f"slide and patient classes to be the same; task {TASK.name} has different ones"
    )
if (set(PATIENT_MODELS) - set(UNTRAINED_PATIENT_MODELS) or "pn_rule" in PATIENT_MODELS) and PATIENT_SOURCE not in SLIDE_MODELS:
    raise WorkflowError(f"models.patient_source: {PATIENT_SOURCE!r} is not one of models.slide {SLIDE_MODELS}")


def slide_path(wildcards):
    return _PATHS[wildcards.slide]


def slide_mpp(wildcards):
    """Per-slide µm per pixel from the sample sheet, or None to read it from the slide."""
    return _MPP[wildcards.slide]

def label_inputs():
    """The user's label files (for the demo: those the demo rules write)."""
    keys = {"generic": ["sample_sheet"], "camelyon17": ["stage_labels"], "tcga": ["label_csv"]}
    return [DATASET[key] for key in keys[DATASET.get("format", "generic")]]


def train_slide_inputs(wildcards):
    inputs = {
        "sheet": f"{R}/sample_sheet.csv",
        "split": f"{R}/splits/fold_{wildcards.fold}.csv",
        "features": expand(f"{FEATURES_DIR}/h5_files/{{slide}}.h5", slide=SLIDE_IDS),
    }
    if wildcards.model == "hmf":
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
    return [f"{R}/{level}/{model}/fold_{fold}/{name}" for model in models_of(level) for fold in FOLDS]


def table_outputs():
    return [f"{R}/tables/{level}.{ext}" for level in levels() for ext in ("csv", "md", "png")]


wildcard_constraints:
    slide="[A-Za-z0-9][A-Za-z0-9._+()\\-]*",
    fold="[0-9]+",
    level="slide|patient",
    model="[a-z0-9_]+",
