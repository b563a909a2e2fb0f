"""The sheet of new, unlabelled slides for the ``predict`` target, checked like the training
sheet and against it.

The rows get the training sheet's checks (:func:`hmf.data.sample_sheet.check_rows`: safe ids of
bounded length, unique also up to case, paths without wildcard braces, each a regular file, no
slide file in two rows) and, for CAMELYON17, the challenge's ids (``patient_<n>_node_<m>``, the
node number in the id and in the ``node`` column the same). Against the training sheet:

- a slide id equal to a training slide id up to case is refused (the two sheets share the
  per-slide preprocessing outputs);
- a patient of the training sheet (up to case), and a slide file that is a training slide
  (same resolved path or content fingerprint, :mod:`hmf.data.fingerprints`) are refused: a
  prediction for them is in-sample. ``allow_training_slides`` accepts them to re-score
  training slides; they are then marked ``in_sample`` (the column this module adds).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import pandas as pd

from hmf.data import fingerprints
from hmf.data.sample_sheet import (
    Problems,
    SampleSheetError,
    check_distinct_files,
    check_rows,
    load_generic,
    place,
    row_label,
    write_sample_sheet,
)
from hmf.tasks import Task

log = logging.getLogger(__name__)

CAMELYON_SLIDE_ID = r"^(patient_\d+)_node_(\d+)$"
ALLOW_KEY = "predict.allow_training_slides"


def load_predict_sheet(
    csv_path: str | os.PathLike,
    task: Task,
    training: pd.DataFrame | None = None,
    check_files: bool = True,
    allow_training_slides: bool = False,
) -> pd.DataFrame:
    """The unlabelled sample sheet: ``slide_id, patient_id, path`` and optionally ``node, mpp``
    (label columns, if present, are ignored: nothing here is scored), checked as described in
    the module's docstring against ``training`` (the validated training sheet), if given.

    With ``check_files`` the files compared with the training slides are the ``path`` columns
    of both sheets; without (precomputed features) call :func:`check_training_files` with the
    feature files. Returns the sheet sorted by slide id with empty labels and an ``in_sample``
    column. Raises SampleSheetError listing every problem, each naming its row and, for a
    clash, the other row or training slide.
    """
    frame = load_generic(csv_path)
    if frame.empty:
        raise SampleSheetError(f"{csv_path}: no slides")
    problems = Problems()
    check_rows(frame, problems, check_files)
    if task.name == "camelyon17":
        check_camelyon_ids(frame, problems)
    frame["in_sample"] = False
    if training is not None:
        check_training_ids(frame, training, problems, allow_training_slides)
        if check_files:
            check_training_files(frame, training, problems, allow_training_slides)
    problems.raise_if_any()
    frame["slide_label"] = ""
    frame["patient_label"] = ""
    _mark_patients(frame)
    return frame.drop(columns=[c for c in ("line",) if c in frame]).sort_values("slide_id").reset_index(drop=True)


def check_camelyon_ids(frame: pd.DataFrame, problems: Problems) -> None:
    """CAMELYON17 ids: slide ``patient_<n>_node_<m>`` of patient ``patient_<n>``; an empty node
    is taken from the id, a given one must agree with it; one row per patient and node."""
    parts = frame["slide_id"].str.extract(CAMELYON_SLIDE_ID)
    bad = parts[0].isna().to_numpy()
    problems.add_rows(
        frame,
        bad,
        lambda i: (
            f"{place(frame, i)}: slide id {frame.at[i, 'slide_id']!r} is not a CAMELYON17 slide id "
            f"(patient_<number>_node_<number>), which the submission file is made of"
        ),
    )
    good = ~bad
    other = good & (parts[0] != frame["patient_id"]).to_numpy()
    problems.add_rows(
        frame,
        other,
        lambda i: (
            f"{place(frame, i)}: slide {frame.at[i, 'slide_id']} is a node of {parts.at[i, 0]} by its id, "
            f"but its patient_id is {frame.at[i, 'patient_id']!r}"
        ),
    )
    node_of_id = pd.to_numeric(parts[1], errors="coerce").astype("Int64")
    empty = frame["node"].isna().to_numpy() & good
    frame.loc[empty, "node"] = node_of_id[empty]
    differs = good & ~empty & (frame["node"] != node_of_id).fillna(True).to_numpy()
    problems.add_rows(
        frame,
        differs,
        lambda i: (
            f"{place(frame, i)}: slide {frame.at[i, 'slide_id']}: node {frame.at[i, 'node']} differs from the "
            f"node number in its id ({node_of_id[i]})"
        ),
    )
    keys = frame.loc[good & ~other & ~differs, ["patient_id", "node"]]
    twice = keys.duplicated()
    if twice.any():
        first = keys.reset_index().groupby(["patient_id", "node"])["index"].first()

        def message(i):
            patient, node = frame.at[i, "patient_id"], frame.at[i, "node"]
            return (
                f"{place(frame, i)}: slide {frame.at[i, 'slide_id']} is node {node} of {patient}, "
                f"as is {row_label(frame, first[(patient, node)])}"
            )

        problems.add_each(keys.index[twice.to_numpy()], message)


def _training_source(training: pd.DataFrame) -> str:
    return str(training.attrs.get("source", "the training sample sheet"))


def check_training_ids(frame: pd.DataFrame, training: pd.DataFrame, problems: Problems, allow: bool) -> None:
    """Slide ids never equal a training slide id up to case; patient ids not a training
    patient's up to case, unless ``allow`` (then marked in-sample)."""
    source = _training_source(training)
    known = dict(zip(training["slide_id"].str.casefold(), training["slide_id"]))
    folded = frame["slide_id"].str.casefold()
    problems.add_rows(
        frame,
        folded.isin(known.keys()),
        lambda i: (
            f"{place(frame, i)}: slide id {frame.at[i, 'slide_id']!r} is also in the training sample sheet "
            f"{source} (as {known[folded[i]]!r}); slide ids must be unique across both sheets, also up to case "
            f"(they share the per-slide preprocessing outputs)"
        ),
    )
    patients = training.drop_duplicates("patient_id")
    known_patient = dict(zip(patients["patient_id"].str.casefold(), zip(patients["patient_id"], patients["slide_id"])))
    folded = frame["patient_id"].str.casefold()
    seen = folded.isin(known_patient.keys()).to_numpy()
    if allow:
        frame.loc[seen, "in_sample"] = True
        return
    problems.add_rows(
        frame,
        seen,
        lambda i: (
            f"{place(frame, i)}: patient {frame.at[i, 'patient_id']!r} is patient "
            f"{known_patient[folded[i]][0]!r} of the training sample sheet {source} (e.g. its slide "
            f"{known_patient[folded[i]][1]}); a training patient is not a new patient, its prediction would be "
            f"in-sample ({ALLOW_KEY}: true re-scores training patients, marked in_sample)"
        ),
    )


def check_training_files(
    frame: pd.DataFrame,
    training: pd.DataFrame,
    problems: Problems,
    allow: bool,
    files: Sequence[str] | None = None,
    training_files: Sequence[str] | None = None,
    what: str = "slide file",
) -> None:
    """No slide file of ``frame`` is a training slide's (same resolved path or content
    fingerprint), unless ``allow`` (then marked in-sample). ``files`` / ``training_files``
    (one per row; default the ``path`` columns) are the files compared, e.g. feature files."""
    files = list(frame["path"] if files is None else files)
    training_files = list(training["path"] if training_files is None else training_files)
    n = len(training_files)
    rows, training_ids = list(frame.index), list(training["slide_id"])
    for clash in fingerprints.clashes(training_files + files):
        if clash.later < n or clash.earlier >= n:
            continue  # within one sheet: the sheet's own check reports it
        i, j = rows[clash.later - n], clash.earlier
        if allow:
            frame.at[i, "in_sample"] = True
            continue
        problems.add(
            f"{place(frame, i)}: slide {frame.at[i, 'slide_id']}: {what} {files[clash.later - n]} "
            f"{clash.describe()} training slide {training_ids[j]} ({_training_source(training)}, {training_files[j]}); "
            f"its prediction would be in-sample ({ALLOW_KEY}: true re-scores training slides, marked in_sample)"
        )


def check_predict_feature_files(
    frame: pd.DataFrame,
    files: Mapping[str, str],
    training: pd.DataFrame,
    training_files: Mapping[str, str],
    allow: bool = False,
) -> pd.DataFrame:
    """With precomputed features: the feature files of the new slides (``files``: slide id ->
    file) are distinct from each other and, unless ``allow``, from the training slides'
    (``training_files``). Returns ``frame`` with ``in_sample`` updated; raises SampleSheetError
    naming both slides and files."""
    frame = frame.copy()
    new = [files[s] for s in frame["slide_id"]]
    problems = Problems()
    check_distinct_files(frame, problems, new, what="feature file")
    known = [training_files[s] for s in training["slide_id"]]
    check_training_files(frame, training, problems, allow, new, known, what="feature file")
    problems.raise_if_any()
    _mark_patients(frame)
    return frame


def _mark_patients(frame: pd.DataFrame) -> None:
    """A patient with one in-sample slide is in-sample, with all its slides."""
    patients = set(frame.loc[frame["in_sample"], "patient_id"])
    frame["in_sample"] = frame["patient_id"].isin(patients)


def in_sample_ids(sheet: pd.DataFrame, level: str) -> set[str]:
    """The in-sample slide or patient ids of a written predict sheet (none when it has no
    ``in_sample`` column)."""
    if "in_sample" not in sheet:
        return set()
    marked = sheet[sheet["in_sample"].astype(str).str.lower() == "true"]
    return set(marked["slide_id" if level == "slide" else "patient_id"])


def write_predict_sheet(
    csv_path,
    out_csv,
    task: Task,
    in_sample: Sequence[str] = (),
    check_files: bool = True,
) -> pd.DataFrame:
    """The workflow's copy of the predict sheet, rechecked (its own rows; the checks against the
    training sheet ran when the workflow was read, and ``in_sample`` lists the slides they
    accepted as training slides)."""
    frame = load_predict_sheet(csv_path, task, check_files=check_files)
    unknown = sorted(set(in_sample) - set(frame["slide_id"]))
    if unknown:
        raise SampleSheetError(f"{csv_path}: in-sample slide(s) {unknown[:10]} are not in the sheet")
    frame["in_sample"] = frame["slide_id"].isin(set(in_sample))
    if frame["in_sample"].any():
        marked = frame[frame["in_sample"]]
        log.warning(
            "%d slide(s) of %d patient(s) are training slides or of training patients (allowed by %s): their "
            "predictions are in-sample and marked in_sample: %s",
            len(marked),
            marked["patient_id"].nunique(),
            ALLOW_KEY,
            ", ".join(sorted(marked["slide_id"])[:20]),
        )
    write_sample_sheet(frame, out_csv)  # with its in_sample column
    return frame
