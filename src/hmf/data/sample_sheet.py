"""Sample sheets: the generic CSV, CAMELYON17's ``stage_labels.csv`` and TCGA slides named by
barcode, all turned into one normalised table and validated before any job runs.

Normalised columns: ``slide_id, patient_id, path, slide_label, patient_label, node, mpp``
(empty strings / NaN where unknown). Every error names the file and row (``line`` counts the
header as line 1) or the slide, and the cause.
"""

from __future__ import annotations

import logging
import math
import os
import re
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from hmf.data import fingerprints
from hmf.tasks import Task, pn_stage_from_counts

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


def _normalise(frame: pd.DataFrame, extra_columns: tuple[str, ...] = ()) -> pd.DataFrame:
    for column in COLUMNS:
        if column not in frame:
            frame[column] = ""
    frame = frame[COLUMNS + list(extra_columns) + [c for c in frame.columns if c == "line"]].copy()
    for column in ("slide_id", "patient_id", "path", "slide_label", "patient_label"):
        frame[column] = frame[column].fillna("").astype(str).str.strip()
    frame["node"] = pd.to_numeric(frame["node"].replace("", None), errors="coerce").astype("Int64")
    frame["mpp"] = pd.to_numeric(frame["mpp"].replace("", None), errors="coerce")
    return frame.reset_index(drop=True)


MPP_RANGE = "must be a positive, finite number of micrometres per pixel (empty: read it from the slide)"


def _valid_mpp(value: float) -> bool:
    return math.isfinite(value) and value > 0


def load_generic(csv_path: str | Path, extra_columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """``slide_id, patient_id, path`` and optional ``slide_label, patient_label, node, mpp``.
    Relative paths are taken relative to the sheet's folder. ``extra_columns``: further columns
    the sheet must have and that are kept (e.g. the column ``splits.group_by`` names)."""
    csv_path = Path(csv_path)
    frame = _read_csv(csv_path)
    missing = {"slide_id", "patient_id", "path"} - set(frame.columns)
    if missing:
        raise SampleSheetError(
            f"{csv_path}: missing column(s) {sorted(missing)}; expected slide_id, patient_id, path "
            f"and optionally slide_label, patient_label, node, mpp"
        )
    absent = [c for c in extra_columns if c not in frame.columns]
    if absent:
        raise SampleSheetError(f"{csv_path}: missing column(s) {absent} (named by splits.group_by)")
    unknown = set(frame.columns) - set(COLUMNS) - set(extra_columns)
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
    frame["path"] = _relative_to(csv_path.parent, frame["path"])
    frame.attrs["source"] = str(csv_path)
    return _normalise(frame, tuple(extra_columns))


def _relative_to(folder: Path, paths) -> list[str]:
    """Relative paths joined to ``folder`` (as ``pathlib`` writes them); absolute and empty ones
    unchanged. Each folder is normalised once, not each path."""
    folders: dict[str, str] = {}
    out = []
    for p in list(paths):
        if not p or p[0] == "/":
            out.append(p)
            continue
        cut = p.rfind("/") + 1
        head, tail = p[:cut], p[cut:]
        if tail in ("", ".", ".."):
            out.append(str(folder / p))
            continue
        if head not in folders:
            joined = str(folder / head)
            folders[head] = "" if joined == "." else joined if joined.endswith("/") else joined + "/"
        out.append(folders[head] + tail)
    return out


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


def load_sample_sheet(dataset: dict, extra_columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """Read the slides and labels described by the ``dataset:`` config section (``extra_columns``:
    further columns of a generic sheet to keep)."""
    fmt = dataset.get("format", "generic")
    if fmt == "generic":
        return load_generic(_required(dataset, "sample_sheet"), tuple(extra_columns))
    if extra_columns:
        raise SampleSheetError(
            f"dataset.format {fmt!r} has no column(s) {list(extra_columns)} (named by splits.group_by); "
            f"extra columns come with a generic sample sheet"
        )
    if fmt == "camelyon17":
        return load_camelyon17(_required(dataset, "stage_labels"), _required(dataset, "slide_dir"))
    if fmt == "tcga":
        return load_tcga(_required(dataset, "slide_dir"), _required(dataset, "label_csv"))
    raise SampleSheetError(f"dataset.format: unknown format {fmt!r} (generic, camelyon17, tcga)")


def _required(dataset: dict, key: str) -> str:
    if not dataset.get(key):
        raise SampleSheetError(f"dataset.{key} is required for dataset.format {dataset.get('format')!r}")
    return dataset[key]


def place(frame: pd.DataFrame, index) -> str:
    source = frame.attrs.get("source", "sample sheet")
    if "line" in frame and pd.notna(frame.at[index, "line"]):
        return f"{source} line {int(frame.at[index, 'line'])}"
    return f"{source} (slide {frame.at[index, 'slide_id']})"


def row_label(frame: pd.DataFrame, index) -> str:
    """``line 5`` (or ``slide s5`` where the sheet has no line numbers), for naming a second row."""
    if "line" in frame and pd.notna(frame.at[index, "line"]):
        return f"line {int(frame.at[index, 'line'])}"
    return f"slide {frame.at[index, 'slide_id']}"


MAX_SHOWN = 20  # problems listed in one error; the rest are counted


class Problems:
    """The problems found in a sheet, collected so that one error lists them all (up to
    ``MAX_SHOWN``, the rest counted)."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.count = 0

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.messages) < MAX_SHOWN:
            self.messages.append(message)

    def add_each(self, keys: Sequence, message) -> None:
        """``message(key)`` for every key (formatted only for those shown)."""
        for key in keys[: max(0, MAX_SHOWN - len(self.messages))]:
            self.messages.append(message(key))
        self.count += len(keys)

    def add_rows(self, frame: pd.DataFrame, mask, message) -> None:
        """``message(index)`` for every row where ``mask`` holds."""
        self.add_each(frame.index[np.asarray(mask, dtype=bool)], message)

    def __bool__(self) -> bool:
        return self.count > 0

    def raise_if_any(self) -> None:
        if not self.count:
            return
        if self.count == 1:
            raise SampleSheetError(self.messages[0])
        more = f"\n  ... and {self.count - len(self.messages)} more" if self.count > len(self.messages) else ""
        raise SampleSheetError(f"{self.count} problems:\n  " + "\n  ".join(self.messages) + more)


def check_ids(frame: pd.DataFrame, problems: Problems) -> None:
    """Slide and patient ids: present, safe file names, at most MAX_ID_LENGTH characters."""
    for column in ("slide_id", "patient_id"):
        values = frame[column]
        empty = values == ""
        problems.add_rows(frame, empty, lambda i, c=column: f"{place(frame, i)}: empty {c}")
        unsafe = ~empty & (~values.str.match(SAFE_NAME.pattern) | values.str.contains("..", regex=False))
        problems.add_rows(
            frame,
            unsafe,
            lambda i, c=column: (
                f"{place(frame, i)}: {c} {frame.at[i, c]!r} is not a safe file name "
                f"(letters, digits, '._+()-'; no '/', '\\' or '..')"
            ),
        )
        long = ~unsafe & (values.str.len() > MAX_ID_LENGTH)
        problems.add_rows(
            frame,
            long,
            lambda i, c=column: (
                f"{place(frame, i)}: {c} {frame.at[i, c][:40]}... is {len(frame.at[i, c])} characters long; at "
                f"most {MAX_ID_LENGTH} are allowed (it becomes part of file names, which filesystems limit to "
                f"255 bytes)"
            ),
        )


def check_unique_ids(frame: pd.DataFrame, problems: Problems) -> None:
    """Slide ids unique, also up to case; patient ids unique up to case (``P1`` beside ``p1``)."""
    slide = frame["slide_id"]
    first_of = pd.Series(frame.index, index=slide).groupby(level=0).first()
    twice = slide.duplicated()
    problems.add_rows(
        frame,
        twice,
        lambda i: (
            f"{place(frame, i)}: duplicate slide id {slide[i]!r} (also on {row_label(frame, first_of[slide[i]])})"
        ),
    )
    # On case-insensitive filesystems (macOS, Windows shares) such ids would share their files.
    _case_clashes(
        frame,
        "slide_id",
        ~twice,
        problems,
        "their files would collide on case-insensitive filesystems; rename one",
    )
    # One patient typed twice would be two patients to the splits: its slides could be split
    # between training and test.
    _case_clashes(
        frame,
        "patient_id",
        ~frame["patient_id"].duplicated(),
        problems,
        "one patient spelt two ways would be split as two patients (its slides could land in training and "
        "test); spell it one way",
    )


def _case_clashes(frame: pd.DataFrame, column: str, mask, problems: Problems, why: str) -> None:
    """Rows (among ``mask``, one per distinct value) whose value equals an earlier one up to case."""
    values = frame.loc[np.asarray(mask, dtype=bool), column]
    values = values[values != ""]
    folded = values.str.casefold()
    clash = folded.duplicated()
    if not clash.any():
        return
    first_of = pd.Series(values.index, index=folded.to_numpy()).groupby(level=0).first()
    noun = column.replace("_id", "")

    def message(i):
        j = first_of[folded[i]]
        return (
            f"{place(frame, i)}: {noun} ids {values[j]!r}, {values[i]!r} differ only in case "
            f"({row_label(frame, j)} has {values[j]!r}); {why}"
        )

    problems.add_rows(frame, frame.index.isin(clash.index[clash]), message)


def check_mpp(frame: pd.DataFrame, problems: Problems) -> None:
    if "mpp" not in frame:
        return
    mpp = pd.to_numeric(frame["mpp"], errors="coerce").astype(float).to_numpy()
    given = ~np.isnan(mpp)
    bad = given & ~(np.isfinite(mpp) & (mpp > 0))
    problems.add_rows(
        frame,
        bad,
        lambda i: f"{place(frame, i)}: slide {frame.at[i, 'slide_id']}: mpp {float(frame.at[i, 'mpp'])!r} {MPP_RANGE}",
    )


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder; give the slide file itself, e.g. the .mrxs beside its data folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a file"


def check_paths(frame: pd.DataFrame, problems: Problems, check_files: bool, column: str = "path") -> None:
    """Paths without Snakemake's wildcard braces; with ``check_files``, each a regular file
    (``os.stat`` follows links: a link to a slide file is fine)."""
    paths = frame[column]
    braces = paths.str.contains("{", regex=False) | paths.str.contains("}", regex=False)
    problems.add_rows(
        frame,
        braces,
        lambda i: (
            f"{place(frame, i)}: slide {frame.at[i, 'slide_id']}: path {paths[i]!r} contains '{{' or '}}', "
            f"which Snakemake reads as a wildcard; rename the file or its folder"
        ),
    )
    if not check_files:
        return
    for i, path in zip(frame.index, paths):
        if not path:
            problems.add(f"{place(frame, i)}: slide {frame.at[i, 'slide_id']}: no path")
            continue
        try:
            mode = os.stat(path).st_mode
        except (OSError, ValueError):
            problems.add(f"{place(frame, i)}: slide {frame.at[i, 'slide_id']}: file not found: {path}")
            continue
        if not stat.S_ISREG(mode):
            problems.add(
                f"{place(frame, i)}: slide {frame.at[i, 'slide_id']}: {path} is not a regular file ({_file_kind(mode)})"
            )


def check_distinct_files(
    frame: pd.DataFrame, problems: Problems, files: Sequence[str] | None = None, what: str = "slide file"
) -> None:
    """No two rows of one file: the same resolved path or the same content fingerprint
    (:mod:`hmf.data.fingerprints`). ``files`` (one per row; default the ``path`` column)
    are the files compared, e.g. the feature files of precomputed features."""
    files = list(frame["path"] if files is None else files)
    index = list(frame.index)
    for clash in fingerprints.clashes(files):
        i, j = index[clash.later], index[clash.earlier]
        problems.add(
            f"{place(frame, i)}: slide {frame.at[i, 'slide_id']}: {what} {files[clash.later]} {clash.describe()} "
            f"{row_label(frame, j)} (slide {frame.at[j, 'slide_id']}, {files[clash.earlier]}); one slide belongs "
            f"to one row (under two ids it could be in training and in test)"
        )


def check_feature_files(frame: pd.DataFrame, files: Mapping[str, str]) -> None:
    """With precomputed features (the slide files unread): no two slides of ``frame`` share a
    feature file (``files``: slide id -> file) by path or content. SampleSheetError naming both."""
    problems = Problems()
    check_distinct_files(frame, problems, [files[s] for s in frame["slide_id"]], what="feature file")
    problems.raise_if_any()


def check_rows(frame: pd.DataFrame, problems: Problems, check_files: bool) -> None:
    """The checks every sheet gets, training or predict: ids, mpp, paths, files, one row per slide."""
    check_ids(frame, problems)
    check_unique_ids(frame, problems)
    check_mpp(frame, problems)
    check_paths(frame, problems, check_files)
    if check_files:
        check_distinct_files(frame, problems)


def check_labelled(frame: pd.DataFrame) -> None:
    """Every slide has a patient and a slide label (training needs them; preprocessing does not)."""
    for column, what in (("patient_label", "patient label"), ("slide_label", "slide label")):
        unlabelled = frame.index[frame[column] == ""]
        if len(unlabelled):
            raise SampleSheetError(
                f"{place(frame, unlabelled[0])}: slide {frame.at[unlabelled[0], 'slide_id']} has no {what}"
            )


def _check_labels(frame: pd.DataFrame, task: Task, problems: Problems) -> None:
    for column, level, noun in (("patient_label", "patient", "patient label"), ("slide_label", "slide", "slide label")):
        classes = task.classes(level)
        labels = frame[column]
        problems.add_rows(
            frame,
            (labels != "") & ~labels.isin(classes),
            lambda i, c=column, n=noun, k=classes: (
                f"{place(frame, i)}: {n} {frame.at[i, c]!r} is not a class of task {task.name} ({', '.join(k)})"
            ),
        )
    given = frame[frame["patient_label"] != ""]
    counts = given.groupby("patient_id", sort=False)["patient_label"].nunique()

    def message(patient):
        group = given[given["patient_id"] == patient]
        return (
            f"patient {patient}: slides with different patient labels {sorted(set(group['patient_label']))} "
            f"({place(frame, group.index[0])})"
        )

    problems.add_each(counts.index[(counts > 1).to_numpy()], message)


def _fill_patient_labels(frame: pd.DataFrame, task: Task, problems: Problems) -> None:
    """Patient labels given on some of a patient's slides go to all of them; with the pN rule,
    a patient whose slides are all labelled gets (or must agree with) the rule's stage."""
    patient = frame["patient_id"]
    given = frame.loc[frame["patient_label"] != ""].groupby("patient_id", sort=False)["patient_label"].first()
    label = _mapped(patient, given)
    if task.pn_rule:
        slide = frame["slide_label"]
        groups = pd.DataFrame(
            {
                "patient_id": patient,
                "pos": slide.isin(("micro", "macro")),
                "macro": slide == "macro",
                "itc": slide == "itc",
                "unlabelled": slide == "",
            }
        ).groupby("patient_id", sort=False)
        counts = groups.sum()
        complete = counts.index[counts["unlabelled"] == 0]
        done = counts.loc[complete]
        stage = pd.Series(
            [pn_stage_from_counts(int(p), int(m), int(t)) for p, m, t in zip(done["pos"], done["macro"], done["itc"])],
            index=complete,
            dtype=object,
        )
        stated = given.reindex(complete)
        wrong = stated.notna() & (stated != stage)
        problems.add_each(
            stated.index[wrong.to_numpy()],
            lambda p: (
                f"patient {p}: label {stated[p]} contradicts the pN rule applied to its slide labels "
                f"{list(frame.loc[patient == p, 'slide_label'])} (which gives {stage[p]})"
            ),
        )
        derived = _mapped(patient, stage)
        label = label.where(label != "", derived)
    frame["patient_label"] = label.to_numpy()


def _mapped(keys: pd.Series, values: pd.Series) -> pd.Series:
    """``values[key]`` per key, ``""`` where there is none."""
    out = keys.map(values).astype(object)
    return out.where(out.notna(), "")


def validate_sample_sheet(
    frame: pd.DataFrame, task: Task, check_files: bool = True, require_labels: bool = True
) -> pd.DataFrame:
    """Check a normalised sheet against the task; fill labels that follow from others.

    ``require_labels=False`` accepts slides without labels (enough to preprocess them); the
    labels that are given are still checked. ``check_files``: every path is a regular file and
    no two rows are one slide file (same resolved path or content fingerprint).

    Returns a copy with slide labels filled from patient labels (tasks whose slides inherit
    the patient's label) and patient labels derived by the pN rule where only slide labels
    are given. Raises SampleSheetError listing every problem found, each naming its row (and
    the other row, for a clash between two) and the cause.
    """
    frame = frame.copy()
    if frame.empty:
        raise SampleSheetError(f"{frame.attrs.get('source', 'sample sheet')}: no slides")
    problems = Problems()
    check_rows(frame, problems, check_files)
    _check_labels(frame, task, problems)
    problems.raise_if_any()
    _fill_patient_labels(frame, task, problems)
    if task.slides_inherit_patient_label:
        slide, patient = frame["slide_label"], frame["patient_label"]
        problems.add_rows(
            frame,
            (slide != "") & (slide != patient),
            lambda i: (
                f"{place(frame, i)}: slide label {slide[i]!r} differs from its patient's label "
                f"{patient[i]!r}; task {task.name} labels slides by patient"
            ),
        )
        frame["slide_label"] = frame["patient_label"]
    problems.raise_if_any()
    if require_labels:
        check_labelled(frame)
    return frame.drop(columns=[c for c in ("line",) if c in frame]).sort_values("slide_id").reset_index(drop=True)


def write_sample_sheet(frame: pd.DataFrame, path: str | Path) -> None:
    from hmf.atomic import write_csv

    write_csv(path, frame[COLUMNS + [c for c in frame.columns if c not in COLUMNS and c != "line"]])


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
