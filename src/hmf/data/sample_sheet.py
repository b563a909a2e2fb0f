"""Sample sheets: the generic CSV, CAMELYON17's ``stage_labels.csv`` and TCGA slides named by
barcode, all turned into one normalised table and validated before any job runs.

Normalised columns: ``slide_id, patient_id, path, slide_label, patient_label, node, mpp``
(empty strings / NaN where unknown). Every error names the file and row (``line`` counts the
header as line 1) or the slide, and the cause.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import pandas as pd

from hmf.tasks import Task, pn_stage

log = logging.getLogger(__name__)

COLUMNS = ["slide_id", "patient_id", "path", "slide_label", "patient_label", "node", "mpp"]
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+()\-]*$")
# Ids become file names, and a file's temporary name (hmf.atomic) adds about 25 characters:
# this keeps every name within the 255 bytes filesystems allow.
MAX_ID_LENGTH = 200
CAMELYON_PATIENT = re.compile(r"^(patient_\d+)\.zip$")
CAMELYON_SLIDE = re.compile(r"^(patient_\d+)_node_(\d+)\.tif$")
TCGA_BARCODE = re.compile(r"^(TCGA-[A-Z0-9]{2}-[A-Z0-9]{4})")


class SampleSheetError(ValueError):
    """A sample sheet or label file that cannot be used, with the file, row and cause."""


def _read_csv(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise SampleSheetError(f"{path}: file not found")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise SampleSheetError(f"{path}: not a readable CSV ({err})") from err


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    for column in COLUMNS:
        if column not in frame:
            frame[column] = ""
    frame = frame[COLUMNS + [c for c in frame.columns if c == "line"]].copy()
    for column in ("slide_id", "patient_id", "path", "slide_label", "patient_label"):
        frame[column] = frame[column].fillna("").astype(str).str.strip()
    frame["node"] = pd.to_numeric(frame["node"].replace("", None), errors="coerce").astype("Int64")
    frame["mpp"] = pd.to_numeric(frame["mpp"].replace("", None), errors="coerce")
    return frame.reset_index(drop=True)


MPP_RANGE = "must be a positive, finite number of micrometres per pixel (empty: read it from the slide)"


def _valid_mpp(value: float) -> bool:
    return math.isfinite(value) and value > 0


def load_generic(csv_path: str | Path) -> pd.DataFrame:
    """``slide_id, patient_id, path`` and optional ``slide_label, patient_label, node, mpp``.
    Relative paths are taken relative to the sheet's folder."""
    csv_path = Path(csv_path)
    frame = _read_csv(csv_path)
    missing = {"slide_id", "patient_id", "path"} - set(frame.columns)
    if missing:
        raise SampleSheetError(
            f"{csv_path}: missing column(s) {sorted(missing)}; expected slide_id, patient_id, path "
            f"and optionally slide_label, patient_label, node, mpp"
        )
    unknown = set(frame.columns) - set(COLUMNS)
    if unknown:
        raise SampleSheetError(f"{csv_path}: unknown column(s) {sorted(unknown)}; allowed: {COLUMNS}")
    frame["line"] = range(2, len(frame) + 2)
    for line, mpp, node in zip(
        frame["line"], frame.get("mpp", [""] * len(frame)), frame.get("node", [""] * len(frame))
    ):
        if mpp not in ("", None):
            try:
                value = float(mpp)
            except ValueError:
                raise SampleSheetError(f"{csv_path} line {line}: mpp {mpp!r} is not a number") from None
            if not _valid_mpp(value):
                raise SampleSheetError(f"{csv_path} line {line}: mpp {mpp!r} {MPP_RANGE}")
        if node not in ("", None) and not str(node).isdigit():
            raise SampleSheetError(f"{csv_path} line {line}: node {node!r} is not a whole number")
    frame["path"] = [str(p if Path(p).is_absolute() or not p else csv_path.parent / p) for p in frame["path"]]
    frame.attrs["source"] = str(csv_path)
    return _normalise(frame)


def load_camelyon17(stage_labels: str | Path, slide_dir: str | Path) -> pd.DataFrame:
    """CAMELYON17's own ``stage_labels.csv`` (``patient,stage``; ``patient_000.zip,pN0`` rows for
    patients and ``patient_000_node_0.tif,negative`` rows for slides) plus the slide folder."""
    stage_labels, slide_dir = Path(stage_labels), Path(slide_dir)
    table = _read_csv(stage_labels)
    if list(table.columns[:2]) != ["patient", "stage"]:
        raise SampleSheetError(
            f"{stage_labels}: expected CAMELYON17's header 'patient,stage', found {','.join(table.columns)}"
        )
    # The challenge's download keeps slides in centre_<i>/ subfolders; accept either layout.
    found = {p.name: p for p in slide_dir.rglob("*.tif")} if slide_dir.is_dir() else {}
    patients: dict[str, str] = {}
    slides = []
    for line, (name, stage) in enumerate(zip(table["patient"], table["stage"]), start=2):
        name, stage = name.strip(), stage.strip()
        if match := CAMELYON_PATIENT.match(name):
            patients[match.group(1)] = stage
        elif match := CAMELYON_SLIDE.match(name):
            slides.append(
                {
                    "slide_id": name[: -len(".tif")],
                    "patient_id": match.group(1),
                    "node": match.group(2),
                    "path": str(found.get(name, slide_dir / name)),
                    "slide_label": stage,
                    "line": line,
                }
            )
        else:
            raise SampleSheetError(
                f"{stage_labels} line {line}: {name!r} is neither a patient ('patient_000.zip') "
                f"nor a slide ('patient_000_node_0.tif') row"
            )
    frame = pd.DataFrame(slides, columns=["slide_id", "patient_id", "node", "path", "slide_label", "line"])
    orphans = sorted(set(patients) - set(frame["patient_id"]))
    if orphans:
        raise SampleSheetError(f"{stage_labels}: patient(s) without slide rows: {', '.join(orphans[:10])}")
    frame["patient_label"] = [patients.get(p, "") for p in frame["patient_id"]]
    frame.attrs["source"] = str(stage_labels)
    return _normalise(frame)


def load_tcga(slide_dir: str | Path, label_csv: str | Path) -> pd.DataFrame:
    """TCGA slides named by barcode in ``slide_dir`` (patient = first 12 characters) and a label
    CSV by patient with columns ``patient_id,label``."""
    slide_dir, label_csv = Path(slide_dir), Path(label_csv)
    labels = _read_csv(label_csv)
    if not {"patient_id", "label"} <= set(labels.columns):
        raise SampleSheetError(f"{label_csv}: expected columns 'patient_id,label', found {','.join(labels.columns)}")
    duplicated = labels["patient_id"][labels["patient_id"].duplicated()].tolist()
    if duplicated:
        raise SampleSheetError(f"{label_csv}: patient(s) listed twice: {', '.join(duplicated[:10])}")
    by_patient = dict(zip(labels["patient_id"].str.strip(), labels["label"].str.strip()))
    if not slide_dir.is_dir():
        raise SampleSheetError(f"{slide_dir}: slide folder not found")
    rows = []
    for path in sorted(slide_dir.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in SLIDE_SUFFIXES:
            continue
        match = TCGA_BARCODE.match(path.name)
        if not match:
            raise SampleSheetError(f"{path}: file name does not start with a TCGA barcode (TCGA-XX-XXXX)")
        patient = match.group(1)
        if patient not in by_patient:
            raise SampleSheetError(f"{path}: patient {patient} has no row in {label_csv}")
        rows.append(
            {
                "slide_id": path.name[: -len(path.suffix)],
                "patient_id": patient,
                "path": str(path),
                "patient_label": by_patient[patient],
            }
        )
    if not rows:
        raise SampleSheetError(f"{slide_dir}: no slide files ({', '.join(SLIDE_SUFFIXES)})")
    frame = pd.DataFrame(rows)
    frame.attrs["source"] = str(slide_dir)
    return _normalise(frame)


def load_sample_sheet(dataset: dict) -> pd.DataFrame:
    """Read the slides and labels described by the ``dataset:`` config section."""
    fmt = dataset.get("format", "generic")
    if fmt == "generic":
        return load_generic(_required(dataset, "sample_sheet"))
    if fmt == "camelyon17":
        return load_camelyon17(_required(dataset, "stage_labels"), _required(dataset, "slide_dir"))
    if fmt == "tcga":
        return load_tcga(_required(dataset, "slide_dir"), _required(dataset, "label_csv"))
    raise SampleSheetError(f"dataset.format: unknown format {fmt!r} (generic, camelyon17, tcga)")


def _required(dataset: dict, key: str) -> str:
    if not dataset.get(key):
        raise SampleSheetError(f"dataset.{key} is required for dataset.format {dataset.get('format')!r}")
    return dataset[key]


def _where(frame: pd.DataFrame, index: int) -> str:
    source = frame.attrs.get("source", "sample sheet")
    if "line" in frame and pd.notna(frame.at[index, "line"]):
        return f"{source} line {int(frame.at[index, 'line'])}"
    return f"{source} (slide {frame.at[index, 'slide_id']})"


def check_labelled(frame: pd.DataFrame) -> None:
    """Every slide has a patient and a slide label (training needs them; preprocessing does not)."""
    for column, what in (("patient_label", "patient label"), ("slide_label", "slide label")):
        unlabelled = frame.index[frame[column] == ""]
        if len(unlabelled):
            raise SampleSheetError(
                f"{_where(frame, unlabelled[0])}: slide {frame.at[unlabelled[0], 'slide_id']} has no {what}"
            )


def validate_sample_sheet(
    frame: pd.DataFrame, task: Task, check_files: bool = True, require_labels: bool = True
) -> pd.DataFrame:
    """Check a normalised sheet against the task; fill labels that follow from others.

    ``require_labels=False`` accepts slides without labels (enough to preprocess them); the
    labels that are given are still checked.

    Returns a copy with slide labels filled from patient labels (tasks whose slides inherit
    the patient's label) and patient labels derived by the pN rule where only slide labels
    are given. Raises SampleSheetError naming the row or slide and the cause.
    """
    frame = frame.copy()
    if frame.empty:
        raise SampleSheetError(f"{frame.attrs.get('source', 'sample sheet')}: no slides")
    for i in frame.index:
        for column in ("slide_id", "patient_id"):
            value = frame.at[i, column]
            if not value:
                raise SampleSheetError(f"{_where(frame, i)}: empty {column}")
            if not SAFE_NAME.match(value) or ".." in value:
                raise SampleSheetError(
                    f"{_where(frame, i)}: {column} {value!r} is not a safe file name "
                    f"(letters, digits, '._+()-'; no '/', '\\' or '..')"
                )
            if len(value) > MAX_ID_LENGTH:
                raise SampleSheetError(
                    f"{_where(frame, i)}: {column} {value[:40]}... is {len(value)} characters long; at most "
                    f"{MAX_ID_LENGTH} are allowed (it becomes part of file names, which filesystems limit to 255 bytes)"
                )
        mpp = frame.at[i, "mpp"] if "mpp" in frame else None
        if mpp is not None and not pd.isna(mpp) and not _valid_mpp(float(mpp)):
            raise SampleSheetError(
                f"{_where(frame, i)}: slide {frame.at[i, 'slide_id']}: mpp {float(mpp)!r} {MPP_RANGE}"
            )
    duplicated = frame["slide_id"][frame["slide_id"].duplicated(keep=False)]
    if not duplicated.empty:
        first = duplicated.index[1]
        raise SampleSheetError(f"{_where(frame, first)}: duplicate slide id {duplicated.iloc[0]!r}")
    # On case-insensitive filesystems (macOS, Windows shares) such ids would share their files.
    folded = frame["slide_id"].str.casefold()
    clashes = frame.index[folded.duplicated(keep=False)]
    if len(clashes):
        names = sorted(frame.loc[clashes, "slide_id"])
        raise SampleSheetError(
            f"{_where(frame, clashes[1])}: slide ids {', '.join(map(repr, names))} differ only in case; "
            f"their files would collide on case-insensitive filesystems, rename one"
        )
    for i in frame.index:
        path = frame.at[i, "path"]
        if "{" in path or "}" in path:
            raise SampleSheetError(
                f"{_where(frame, i)}: slide {frame.at[i, 'slide_id']}: path {path!r} contains '{{' or '}}', "
                f"which Snakemake reads as a wildcard; rename the file or its folder"
            )
    if check_files:
        for i in frame.index:
            path = frame.at[i, "path"]
            if path and Path(path).is_dir():
                raise SampleSheetError(
                    f"{_where(frame, i)}: slide {frame.at[i, 'slide_id']}: {path} is a folder, not a slide file "
                    f"(give the slide file itself, e.g. the .mrxs beside its data folder)"
                )
            if not path or not Path(path).is_file():
                raise SampleSheetError(f"{_where(frame, i)}: slide {frame.at[i, 'slide_id']}: file not found: {path}")

    patient_classes = set(task.classes("patient"))
    slide_classes = set(task.classes("slide"))
    for i in frame.index:
        label = frame.at[i, "patient_label"]
        if label and label not in patient_classes:
            raise SampleSheetError(
                f"{_where(frame, i)}: patient label {label!r} is not a class of task {task.name} "
                f"({', '.join(task.classes('patient'))})"
            )
        label = frame.at[i, "slide_label"]
        if label and label not in slide_classes:
            raise SampleSheetError(
                f"{_where(frame, i)}: slide label {label!r} is not a class of task {task.name} "
                f"({', '.join(task.classes('slide'))})"
            )

    for patient, group in frame.groupby("patient_id", sort=False):
        labels = set(group["patient_label"]) - {""}
        if len(labels) > 1:
            raise SampleSheetError(
                f"patient {patient}: slides with different patient labels {sorted(labels)} "
                f"({_where(frame, group.index[0])})"
            )
        if task.pn_rule and (group["slide_label"] != "").all():
            expected = pn_stage(list(group["slide_label"]))
            if labels and expected not in labels:
                raise SampleSheetError(
                    f"patient {patient}: label {labels.pop()} contradicts the pN rule applied to its "
                    f"slide labels {list(group['slide_label'])} (which gives {expected})"
                )
            if not labels:
                frame.loc[group.index, "patient_label"] = expected
        elif labels:
            frame.loc[group.index, "patient_label"] = labels.pop()

    if task.slides_inherit_patient_label:
        for i in frame.index:
            slide_label, patient_label = frame.at[i, "slide_label"], frame.at[i, "patient_label"]
            if slide_label and slide_label != patient_label:
                raise SampleSheetError(
                    f"{_where(frame, i)}: slide label {slide_label!r} differs from its patient's label "
                    f"{patient_label!r}; task {task.name} labels slides by patient"
                )
        frame["slide_label"] = frame["patient_label"]

    if require_labels:
        check_labelled(frame)
    return frame.drop(columns=[c for c in ("line",) if c in frame]).sort_values("slide_id").reset_index(drop=True)


def write_sample_sheet(frame: pd.DataFrame, path: str | Path) -> None:
    from hmf.atomic import write_csv

    write_csv(path, frame[COLUMNS])


def read_sample_sheet(path: str | Path) -> pd.DataFrame:
    """Read a sheet written by :func:`write_sample_sheet` (the workflow's own copy)."""
    frame = pd.read_csv(
        path,
        dtype={"slide_id": str, "patient_id": str, "slide_label": str, "patient_label": str},
        keep_default_na=False,
    )
    frame["node"] = pd.to_numeric(frame["node"].replace("", None), errors="coerce").astype("Int64")
    frame["mpp"] = pd.to_numeric(frame["mpp"].replace("", None), errors="coerce")
    return frame
