"""Patient-level K-fold splits: partition, stratification, determinism and user split files."""

from __future__ import annotations

import pandas as pd
import pytest

from hmf.config import ConfigError
from hmf.data.splits import (
    FoldDesign,
    SplitSettings,
    check_grouped,
    check_inner_folds,
    folds_for,
    group_column,
    load_splits,
    make_fold_file,
    make_split_files,
    make_splits,
    patient_groups,
    read_split,
    sheet_fold,
    split_settings,
    write_splits,
)
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
    assert settings == SplitSettings(
        k=5,
        val_fraction=0.2,
        seed=0,
        files=("f0.csv", "f1.csv"),
        repeats=1,
        group_by=None,
        leave_one_group_out=False,
    )
    assert build(SplitSettings, section("splits", {})).files is None
    with pytest.raises(ConfigError, match=r"splits\.k"):
        section("splits", {"k": 1})
    with pytest.raises(ConfigError, match=r"splits\.repeats"):
        section("splits", {"repeats": 0})
    with pytest.raises(ConfigError, match=r"splits\.repeats"):
        section("splits", {"repeats": 1000})


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


# -- repeated cross-validation -------------------------------------------------------------


def test_repeats_are_the_folds_of_consecutive_seeds(patients):
    folds = make_splits(patients, k=5, val_fraction=0.2, seed=4, repeats=3)
    assert len(folds) == 15
    for r in range(3):
        single = make_splits(patients, k=5, val_fraction=0.2, seed=4 + r)
        for i in range(5):
            # fold f is fold f % K of repeat f // K; repeat r uses seed + r
            pd.testing.assert_frame_equal(folds[r * 5 + i], single[i])
        tested = pd.concat([f.loc[f["split"] == "test", "patient_id"] for f in folds[r * 5 : r * 5 + 5]])
        assert sorted(tested) == sorted(patients["patient_id"])  # one prediction per patient per repeat
    assert not folds[0].equals(folds[5])
    # repeat 0 is the single cross-validation of the same seed
    for a, b in zip(folds[:5], make_splits(patients, k=5, val_fraction=0.2, seed=4)):
        pd.testing.assert_frame_equal(a, b)


def test_split_files_with_repeats_are_refused(patients, tmp_path):
    write_splits(make_splits(patients, k=5, seed=0), tmp_path / "splits")
    with pytest.raises(ValueError, match=r"splits.files with splits.repeats=2.*set splits.repeats to 1"):
        folds_for(patients, k=5, files=tmp_path / "splits", repeats=2)


# -- grouped folds ---------------------------------------------------------------------------


def camelyon_sheet(n_patients: int = 100, folders: bool = False) -> pd.DataFrame:
    """Slide rows of CAMELYON17-named patients, labels spread over the centres."""
    labels = ["pN0", "pN0(i+)", "pN1mi", "pN1", "pN2"]
    rows = []
    for p in range(n_patients):
        for node in range(2):
            folder = f"centre_{p // 20}/" if folders else ""
            rows.append(
                {
                    "slide_id": f"patient_{p:03d}_node_{node}",
                    "patient_id": f"patient_{p:03d}",
                    "path": f"/data/{folder}patient_{p:03d}_node_{node}.tif",
                    "patient_label": labels[(p * 7 + p // 20) % 5],
                }
            )
    return pd.DataFrame(rows)


def test_camelyon17_centre_from_patient_number_or_folder():
    sheet = camelyon_sheet()
    groups = patient_groups(sheet, "centre")
    assert groups["patient_000"] == groups["patient_019"] == "centre_0"
    assert groups["patient_020"] == "centre_1" and groups["patient_099"] == "centre_4"
    assert groups.value_counts().to_dict() == {f"centre_{c}": 20 for c in range(5)}
    # the download's centre_<i>/ folders win over the patient number
    moved = camelyon_sheet(folders=True)
    moved.loc[moved["patient_id"] == "patient_000", "path"] = "/data/centre_3/patient_000_node_0.tif"
    assert patient_groups(moved, "centre")["patient_000"] == "centre_3"
    moved.loc[0, "path"] = "/data/centre_2/patient_000_node_0.tif"
    with pytest.raises(ValueError, match=r"patient_000 has slides in more than one group \['centre_2', 'centre_3'\]"):
        patient_groups(moved, "centre")
    other = pd.DataFrame({"slide_id": ["s1"], "patient_id": ["case7"], "path": ["/x/s1.tif"], "patient_label": ["a"]})
    with pytest.raises(ValueError, match="slide s1 of patient case7: no centre_<i>/ folder"):
        patient_groups(other, "centre")


def test_tcga_site_from_the_barcode():
    sheet = pd.DataFrame(
        {
            "slide_id": ["TCGA-A1-0001-01Z", "TCGA-A1-0001-02Z", "TCGA-BH-0002-01Z", "TCGA-E2-0003-01Z"],
            "patient_id": ["TCGA-A1-0001", "TCGA-A1-0001", "TCGA-BH-0002", "TCGA-E2-0003"],
            "path": ["a", "b", "c", "d"],
        }
    )
    assert patient_groups(sheet, "site").to_dict() == {"TCGA-A1-0001": "A1", "TCGA-BH-0002": "BH", "TCGA-E2-0003": "E2"}
    sheet.loc[3, "patient_id"] = "case-3"
    with pytest.raises(ValueError, match="patient case-3 is not a TCGA barcode"):
        patient_groups(sheet, "site")


def test_sheet_column_groups():
    sheet = camelyon_sheet(10).assign(hospital=lambda f: ["H" + str(int(p[-3:]) % 3) for p in f["patient_id"]])
    groups = patient_groups(sheet, "hospital")
    assert groups["patient_004"] == "H1" and groups.nunique() == 3
    assert group_column("hospital") == "hospital"
    assert group_column("centre") is None and group_column("site") is None and group_column(None) is None
    with pytest.raises(
        ValueError, match=r"column 'scanner' is not in the sample sheet \(its extra columns: \['hospital'\]\)"
    ):
        patient_groups(sheet, "scanner")
    sheet.loc[3, "hospital"] = ""
    with pytest.raises(ValueError, match=r"patient\(s\) with an empty hospital: patient_001"):
        patient_groups(sheet, "hospital")


def assert_grouped(folds, groups):
    """No group on both sides of a fold (checked directly, not through check_grouped)."""
    for fold in folds:
        group = fold["patient_id"].map(groups)
        assert not set(group[fold["split"] == "test"]) & set(group[fold["split"] != "test"])


def test_grouped_folds_keep_each_group_on_one_side():
    sheet = camelyon_sheet()
    groups = patient_groups(sheet, "centre")
    patients = sheet[["patient_id", "patient_label"]].drop_duplicates()
    folds = make_splits(patients, k=3, val_fraction=0.2, seed=1, repeats=2, groups=groups)
    assert len(folds) == 6
    assert_grouped(folds, groups)
    check_grouped(folds, groups)
    for r in range(2):  # test parts still partition the patients within each repeat
        tested = pd.concat([f.loc[f["split"] == "test", "patient_id"] for f in folds[r * 3 : r * 3 + 3]])
        assert sorted(tested) == sorted(patients["patient_id"])
    assert any(not a.equals(b) for a, b in zip(folds[:3], folds[3:]))  # the repeats differ
    # seeded and independent of row order
    again = make_splits(
        patients.sample(frac=1, random_state=3), k=3, val_fraction=0.2, seed=1, repeats=2, groups=groups
    )
    for a, b in zip(folds, again):
        pd.testing.assert_frame_equal(a, b)
    # ungrouped folds of this cohort do put a centre on both sides (the check has teeth)
    with pytest.raises(ValueError, match="have patients both in the test part and in training"):
        check_grouped(make_splits(patients, k=3, seed=1), groups)


def test_leave_one_centre_out():
    sheet = camelyon_sheet()
    groups = patient_groups(sheet, "centre")
    patients = sheet[["patient_id", "patient_label"]].drop_duplicates()
    folds = make_splits(patients, k=2, val_fraction=0.2, groups=groups, leave_one_group_out=True)
    assert len(folds) == 5  # K = number of centres, k unused
    for c, fold in enumerate(folds):
        tested = set(fold.loc[fold["split"] == "test", "patient_id"])
        assert tested == set(groups[groups == f"centre_{c}"].index)
        assert (fold["split"] == "val").any()
    assert_grouped(folds, groups)
    with pytest.raises(ValueError, match="repeats must be 1"):
        make_splits(patients, groups=groups, leave_one_group_out=True, repeats=2)
    with pytest.raises(ValueError, match="needs splits.group_by"):
        make_splits(patients, leave_one_group_out=True)


def test_infeasible_grouped_settings_name_group_and_class_counts():
    sheet = camelyon_sheet(40)  # two centres
    groups = patient_groups(sheet, "centre")
    patients = sheet[["patient_id", "patient_label"]].drop_duplicates()
    with pytest.raises(ValueError) as info:
        make_splits(patients, k=3, groups=groups)
    message = str(info.value)
    assert "cannot make 3 grouped folds from 2 group(s)" in message
    assert "centre_0: pN0 4, pN0(i+) 4" in message and "centre_1:" in message
    # a class found in one centre only: leaving that centre out trains without the class
    three = patient_groups(camelyon_sheet(60), "centre")
    only = camelyon_sheet(60)[["patient_id", "patient_label"]].drop_duplicates()
    elsewhere = (only["patient_id"].map(three) != "centre_2") & (only["patient_label"] == "pN2")
    only.loc[elsewhere, "patient_label"] = "pN0"
    with pytest.raises(
        ValueError, match=r"fold 2 \(test group\(s\) centre_2\) has no training patient of class\(es\) \['pN2'\]"
    ):
        make_splits(only, groups=three, leave_one_group_out=True)
    one = pd.Series("centre_0", index=patients["patient_id"])
    with pytest.raises(ValueError, match="at least 2 groups, the cohort has 1"):
        make_splits(patients, groups=one, leave_one_group_out=True)


def test_user_split_files_are_checked_against_groups(tmp_path):
    sheet = camelyon_sheet()
    groups = patient_groups(sheet, "centre")
    patients = sheet[["patient_id", "patient_label"]].drop_duplicates()
    write_splits(make_splits(patients, k=3, seed=1), tmp_path / "mixed")
    with pytest.raises(ValueError, match="splits.files with splits.group_by: fold 0: group"):
        folds_for(patients, k=3, files=tmp_path / "mixed", groups=groups)
    write_splits(make_splits(patients, k=3, seed=1, groups=groups), tmp_path / "grouped")
    assert len(folds_for(patients, k=3, files=tmp_path / "grouped", groups=groups)) == 3


def test_make_split_files_with_a_group_column_and_repeats(tmp_path):
    sheet = camelyon_sheet(30).assign(hospital=lambda f: ["H" + str(int(p[-3:]) % 4) for p in f["patient_id"]])
    sheet_csv = tmp_path / "sample_sheet.csv"
    sheet.to_csv(sheet_csv, index=False)
    paths = make_split_files(sheet_csv, tmp_path / "splits", k=2, repeats=2, group_by="hospital")
    assert [p.name for p in paths] == [f"fold_{f}.csv" for f in range(4)]
    written = [pd.read_csv(p, dtype=str) for p in paths]
    assert_grouped(written, patient_groups(sheet, "hospital"))
    paths = make_split_files(sheet_csv, tmp_path / "logo", group_by="hospital", leave_one_group_out=True)
    assert len(paths) == 4


def test_inner_folds_need_enough_training_patients(patients):
    folds = make_splits(patients, k=5, seed=0)
    check_inner_folds(folds, 5)
    with pytest.raises(ValueError, match=r"models.inner_folds=90 but fold \d has 80 training and validation patient"):
        check_inner_folds(folds, 90)


def test_fold_design_sentence():
    assert FoldDesign(5).sentence() == "Folds: 5-fold cross-validation over patients, stratified by class."
    assert "repeated 3 times (seeds 2-4)" in FoldDesign(5, repeats=3, seed=2).sentence()
    grouped = FoldDesign(5, group_by="site").sentence()
    assert "grouped by tissue source site: no tissue source site has patients in both" in grouped
    assert (
        FoldDesign(5, group_by="centre", leave_one_group_out=True)
        .sentence()
        .startswith("Folds: leave one centre out (5 folds")
    )


def test_a_generic_sheet_keeps_the_group_column(tmp_path):
    from hmf.data.sample_sheet import SampleSheetError, load_sample_sheet, write_sample_sheet

    (tmp_path / "sheet.csv").write_text("slide_id,patient_id,path,patient_label,hospital\ns1,p1,a.svs,IDC,H7\n")
    dataset = {"format": "generic", "sample_sheet": str(tmp_path / "sheet.csv")}
    sheet = load_sample_sheet(dataset, ("hospital",))
    write_sample_sheet(sheet, tmp_path / "written.csv")
    assert pd.read_csv(tmp_path / "written.csv", dtype=str)["hospital"].tolist() == ["H7"]
    assert patient_groups(sheet, "hospital").to_dict() == {"p1": "H7"}
    with pytest.raises(SampleSheetError, match=r"unknown column\(s\) \['hospital'\]"):
        load_sample_sheet(dataset)  # not named by splits.group_by: still a typo
    with pytest.raises(SampleSheetError, match=r"missing column\(s\) \['site_name'\] \(named by splits.group_by\)"):
        load_sample_sheet(dataset, ("site_name",))


@pytest.mark.parametrize(
    "given",
    [
        {"k": 3, "repeats": 3, "seed": 5},
        {"k": 2, "repeats": 2, "group_by": "hospital"},
        {"group_by": "hospital", "leave_one_group_out": True, "val_fraction": 0.0},
    ],
    ids=["repeats", "grouped-repeats", "leave-one-group-out"],
)
def test_one_fold_file_is_that_fold_of_all_repeats(tmp_path, given):
    # The workflow writes one file per fold (its job does not depend on splits.repeats).
    sheet = camelyon_sheet(30).assign(hospital=lambda f: ["H" + str(int(p[-3:]) % 4) for p in f["patient_id"]])
    sheet_csv = tmp_path / "sample_sheet.csv"
    sheet.to_csv(sheet_csv, index=False)
    settings = split_settings(given)
    whole = make_split_files(
        sheet_csv,
        tmp_path / "all",
        k=settings.k,
        val_fraction=settings.val_fraction,
        seed=settings.seed,
        repeats=settings.repeats,
        group_by=settings.group_by,
        leave_one_group_out=settings.leave_one_group_out,
    )
    single_repeat = split_settings({**given, "repeats": 1})
    for f, path in enumerate(whole):
        written = make_fold_file(sheet_csv, tmp_path / "one" / f"fold_{f}.csv", f, single_repeat)
        assert written.read_bytes() == path.read_bytes()
    if settings.leave_one_group_out:  # one fold per group, no more
        with pytest.raises(ValueError, match=f"fold {len(whole)} does not exist"):
            sheet_fold(sheet, settings, len(whole))
