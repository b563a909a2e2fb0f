"""Patient-level K-fold splits: partition, stratification, determinism and user split files."""

from __future__ import annotations

import pandas as pd
import pytest

from hmf.config import ConfigError
from hmf.data.splits import SplitSettings, load_splits, make_split_files, make_splits, read_split, write_splits
from hmf.settings import build, section

# CAMELYON17 training distribution of patient labels.
CAMELYON_COUNTS = {"pN0": 24, "pN0(i+)": 11, "pN1mi": 21, "pN1": 30, "pN2": 14}


def cohort(counts: dict[str, int]) -> pd.DataFrame:
    rows = []
    for label, n in counts.items():
        rows += [label] * n
    # Interleave labels over ids so that id order carries no class information.
    return pd.DataFrame({"patient_id": [f"patient_{i:03d}" for i in range(len(rows))], "patient_label": rows[::-1]})


@pytest.fixture()
def patients() -> pd.DataFrame:
    return cohort(CAMELYON_COUNTS)


def test_test_folds_partition_patients_and_parts_are_disjoint(patients):
    folds = make_splits(patients, k=5, val_fraction=0.2, seed=0)
    assert len(folds) == 5
    all_ids = set(patients["patient_id"])
    tested = []
    for fold in folds:
        assert list(fold.columns) == ["patient_id", "split"]
        assert fold["patient_id"].is_unique and set(fold["patient_id"]) == all_ids
        assert list(fold["patient_id"]) == sorted(all_ids)
        assert set(fold["split"]) == {"train", "val", "test"}
        tested += list(fold.loc[fold["split"] == "test", "patient_id"])
    assert sorted(tested) == sorted(all_ids)


def test_test_folds_are_stratified(patients):
    folds = make_splits(patients, k=5, seed=3)
    labels = patients.set_index("patient_id")["patient_label"]
    for fold in folds:
        counts = labels[fold.loc[fold["split"] == "test", "patient_id"]].value_counts()
        for label, n in CAMELYON_COUNTS.items():
            assert abs(counts.get(label, 0) - n / 5) <= 1, (label, counts.get(label, 0))


def test_validation_is_stratified_fraction_of_the_rest(patients):
    folds = make_splits(patients, k=5, val_fraction=0.2, seed=1)
    labels = patients.set_index("patient_id")["patient_label"]
    for fold in folds:
        rest = fold[fold["split"] != "test"]
        val = fold[fold["split"] == "val"]
        assert len(val) == round(0.2 * len(rest))
        rest_counts = labels[rest["patient_id"]].value_counts()
        val_counts = labels[val["patient_id"]].value_counts()
        for label in CAMELYON_COUNTS:
            assert abs(val_counts.get(label, 0) - 0.2 * rest_counts[label]) < 1
            # training keeps patients of every class
            assert rest_counts[label] - val_counts.get(label, 0) >= 1


def test_seeded_determinism_and_row_order_independence(patients):
    a = make_splits(patients, k=5, seed=7)
    b = make_splits(patients.sample(frac=1, random_state=11), k=5, seed=7)
    c = make_splits(patients, k=5, seed=8)
    for fa, fb in zip(a, b):
        pd.testing.assert_frame_equal(fa, fb)
    assert any(not fa.equals(fc) for fa, fc in zip(a, c))


def test_tiny_classes_fall_back_without_overlap():
    # 2 patients of "rare": one goes to each test fold of k=2; the rest holds a single one,
    # which must stay in training rather than move to validation.
    patients = cohort({"common": 8, "rare": 2})
    for fold in make_splits(patients, k=2, val_fraction=0.5, seed=0):
        rare = set(patients.loc[patients["patient_label"] == "rare", "patient_id"])
        parts = fold.set_index("patient_id")["split"]
        assert sorted(parts[list(rare)]) == ["test", "train"]
        assert fold["patient_id"].is_unique


def test_zero_val_fraction_gives_no_validation(patients):
    for fold in make_splits(patients, k=5, val_fraction=0.0):
        assert set(fold["split"]) == {"train", "test"}


def test_slide_rows_are_reduced_to_patients(patients):
    slides = patients.loc[patients.index.repeat(5)].reset_index(drop=True)
    a = make_splits(slides, k=5, seed=0)
    b = make_splits(patients, k=5, seed=0)
    for fa, fb in zip(a, b):
        pd.testing.assert_frame_equal(fa, fb)
    slides.loc[0, "patient_label"] = "pN2" if slides.loc[0, "patient_label"] != "pN2" else "pN0"
    with pytest.raises(ValueError, match="more than one patient_label"):
        make_splits(slides, k=5)


def test_too_few_patients_in_a_class_is_explained():
    patients = cohort({"pN0": 10, "pN0(i+)": 3, "pN1": 10})
    with pytest.raises(ValueError) as info:
        make_splits(patients, k=5)
    message = str(info.value)
    assert "'pN0(i+)' has 3 patient(s)" in message
    assert "splits.k" in message and "split files" in message


@pytest.mark.parametrize("k, val", [(1, 0.2), (5, 1.0), (5, -0.1)])
def test_bad_parameters(patients, k, val):
    with pytest.raises(ValueError, match="splits"):
        make_splits(patients, k=k, val_fraction=val)


def test_write_then_load_round_trip(patients, tmp_path):
    folds = make_splits(patients, k=5, seed=0)
    paths = write_splits(folds, tmp_path / "splits")
    assert [p.name for p in paths] == [f"fold_{k}.csv" for k in range(5)]
    loaded = load_splits(tmp_path / "splits", patients)
    for a, b in zip(folds, loaded):
        pd.testing.assert_frame_equal(a, b)
    # an explicit list of files works as well, and its order is kept
    reloaded = load_splits([paths[1], paths[0], *paths[2:]], patients)
    pd.testing.assert_frame_equal(reloaded[0], folds[1])


def test_read_split_reads_what_write_splits_wrote(patients, tmp_path):
    folds = make_splits(patients, k=5, seed=0)
    paths = write_splits(folds, tmp_path / "splits")
    assert read_split(paths[2]) == dict(zip(folds[2]["patient_id"], folds[2]["split"]))
    assert read_split(paths[2])["patient_007"] in ("train", "val", "test")  # ids kept as written
    (tmp_path / "bad.csv").write_text("patient_id,split\np1,holdout\n")
    with pytest.raises(ValueError, match=r"split file .*bad.csv: unknown split value\(s\) \['holdout'\]"):
        read_split(tmp_path / "bad.csv")
    (tmp_path / "cols.csv").write_text("patient,split\np1,test\n")
    with pytest.raises(ValueError, match=r"cols.csv: missing column\(s\) \['patient_id'\]"):
        read_split(tmp_path / "cols.csv")


def test_split_settings_from_the_schema():
    settings = build(SplitSettings, section("splits", {"files": ["f0.csv", "f1.csv"]}))
    assert settings == SplitSettings(k=5, val_fraction=0.2, seed=0, files=("f0.csv", "f1.csv"))
    assert build(SplitSettings, section("splits", {})).files is None
    with pytest.raises(ConfigError, match=r"splits\.k"):
        section("splits", {"k": 1})


def hand_written_folds(tmp_path, rows_per_fold):
    paths = []
    for k, rows in enumerate(rows_per_fold):
        path = tmp_path / f"fold_{k}.csv"
        pd.DataFrame(rows, columns=["patient_id", "split"]).to_csv(path, index=False)
        paths.append(path)
    return paths


SMALL = pd.DataFrame({"patient_id": ["007", "a", "b", "c"], "patient_label": ["x", "x", "y", "y"]})


def test_user_split_files_accepted(tmp_path):
    hand_written_folds(
        tmp_path,
        [
            [("007", "test"), ("b", "test"), ("a", "train"), ("c", "val")],
            [("a", "test"), ("c", "test"), ("007", "train"), ("b", "train")],
        ],
    )
    folds = load_splits(tmp_path, SMALL)
    assert list(folds[0]["patient_id"]) == ["007", "a", "b", "c"]  # leading zeros survive
    assert list(folds[0]["split"]) == ["test", "train", "test", "val"]


@pytest.mark.parametrize(
    "rows, message",
    [
        (  # patient b tested twice
            [
                [("007", "test"), ("b", "test"), ("a", "train"), ("c", "train")],
                [("a", "test"), ("c", "test"), ("b", "test"), ("007", "train")],
            ],
            "test folds overlap; patient.*b",
        ),
        (  # patient c never tested
            [
                [("007", "test"), ("b", "test"), ("a", "train"), ("c", "train")],
                [("a", "test"), ("c", "train"), ("007", "train"), ("b", "train")],
            ],
            "never tested: c",
        ),
        (  # patient c missing from the first file
            [
                [("007", "test"), ("b", "test"), ("a", "train")],
                [("a", "test"), ("c", "test"), ("007", "train"), ("b", "train")],
            ],
            "fold_0.csv.*missing: c",
        ),
        (  # unknown patient
            [
                [("007", "test"), ("b", "test"), ("a", "train"), ("c", "train"), ("zz", "train")],
                [("a", "test"), ("c", "test"), ("007", "train"), ("b", "train")],
            ],
            "not in the sample sheet: zz",
        ),
        (  # bad split value
            [
                [("007", "test"), ("b", "test"), ("a", "training"), ("c", "train")],
                [("a", "test"), ("c", "test"), ("007", "train"), ("b", "train")],
            ],
            "unknown split value.*training",
        ),
        (  # patient listed twice in one file
            [
                [("007", "test"), ("b", "test"), ("a", "train"), ("c", "train"), ("a", "val")],
                [("a", "test"), ("c", "test"), ("007", "train"), ("b", "train")],
            ],
            "more than once: a",
        ),
    ],
)
def test_bad_user_split_files_rejected(tmp_path, rows, message):
    hand_written_folds(tmp_path, rows)
    with pytest.raises(ValueError, match=message):
        load_splits(tmp_path, SMALL)


def test_split_files_must_be_numbered_from_zero(tmp_path):
    (tmp_path / "fold_1.csv").write_text("patient_id,split\n")
    with pytest.raises(ValueError, match="numbered fold_0.csv"):
        load_splits(tmp_path, SMALL)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no fold_<k>.csv"):
        load_splits(empty, SMALL)
    with pytest.raises(FileNotFoundError, match="split file not found"):
        load_splits([tmp_path / "fold_9.csv"], SMALL)


def test_make_split_files_from_sample_sheet(tmp_path, patients):
    sheet = patients.loc[patients.index.repeat(2)].assign(
        slide_id=lambda f: f["patient_id"] + "_" + f.groupby("patient_id").cumcount().astype(str)
    )
    sheet_csv = tmp_path / "sample_sheet.csv"
    sheet.to_csv(sheet_csv, index=False)
    paths = make_split_files(sheet_csv, tmp_path / "splits", k=4, val_fraction=0.25, seed=2)
    assert len(paths) == 4 and all(p.is_file() for p in paths)
    loaded = load_splits(tmp_path / "splits", patients)  # the written files pass validation
    pd.testing.assert_frame_equal(loaded[0], make_splits(patients, k=4, val_fraction=0.25, seed=2)[0])
    # user files are copied through validation; their count must match k
    copied = make_split_files(sheet_csv, tmp_path / "copied", k=4, files=tmp_path / "splits")
    assert [p.read_text() for p in copied] == [p.read_text() for p in paths]
    with pytest.raises(ValueError, match="splits.k is 5"):
        make_split_files(sheet_csv, tmp_path / "other", k=5, files=tmp_path / "splits")
