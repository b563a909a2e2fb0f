"""Sample sheets and labels: every bad input fails with a message naming the row or key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hmf.data.sample_sheet import (
    SampleSheetError,
    load_camelyon17,
    load_generic,
    load_sample_sheet,
    load_tcga,
    validate_sample_sheet,
)
from hmf.tasks import get_task, pn_stage

CAMELYON = get_task("camelyon17")
BRCA = get_task("tcga_brca")


def _touch(folder: Path, names):
    """Slide files, each with its own content (a copy of one slide under two names is refused)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(f"slide {name}".encode())


def _generic(tmp_path: Path, rows, header="slide_id,patient_id,path,slide_label,patient_label,node") -> Path:
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(header + "\n" + "\n".join(rows) + "\n")
    return sheet


def _stage_labels(tmp_path: Path, patients: dict[str, tuple[str, list[str]]]) -> Path:
    lines = ["patient,stage"]
    for patient, (stage, nodes) in patients.items():
        lines.append(f"{patient}.zip,{stage}")
        lines += [f"{patient}_node_{i}.tif,{label}" for i, label in enumerate(nodes)]
    path = tmp_path / "stage_labels.csv"
    path.write_text("\n".join(lines) + "\n")
    _touch(tmp_path / "slides", [f"{p}_node_{i}.tif" for p, (_, n) in patients.items() for i in range(len(n))])
    return path


def test_generic_sheet_round_trip(tmp_path):
    _touch(tmp_path, ["a.svs", "b.svs"])
    sheet = _generic(tmp_path, ["s1,p1,a.svs,macro,pN1,0", "s2,p1,b.svs,negative,pN1,1"])
    frame = validate_sample_sheet(load_generic(sheet), CAMELYON)
    assert list(frame["slide_id"]) == ["s1", "s2"]
    assert frame["path"].iloc[0] == str(tmp_path / "a.svs")
    assert list(frame["node"]) == [0, 1]


def test_camelyon17_stage_labels(tmp_path):
    labels = _stage_labels(
        tmp_path,
        {
            "patient_000": ("pN1", ["negative", "macro", "micro", "itc", "negative"]),
            "patient_001": ("pN0(i+)", ["negative", "itc", "negative", "negative", "negative"]),
        },
    )
    frame = validate_sample_sheet(load_camelyon17(labels, tmp_path / "slides"), CAMELYON)
    assert len(frame) == 10
    assert set(frame["patient_label"]) == {"pN1", "pN0(i+)"}
    assert frame.loc[frame.slide_id == "patient_000_node_1", "slide_label"].item() == "macro"
    assert frame.loc[frame.slide_id == "patient_000_node_1", "node"].item() == 1


def test_patient_label_derived_by_pn_rule(tmp_path):
    _touch(tmp_path, [f"{i}.tif" for i in range(5)])
    rows = [f"p0_n{i},p0,{i}.tif,{lab},,{i}" for i, lab in enumerate(["macro"] * 4 + ["negative"])]
    frame = validate_sample_sheet(load_generic(_generic(tmp_path, rows)), CAMELYON)
    assert set(frame["patient_label"]) == {"pN2"}


def test_tcga_barcodes(tmp_path):
    slides = tmp_path / "slides"
    _touch(slides, ["TCGA-A1-A0SB-01Z-00-DX1.B34C.svs", "TCGA-A1-A0SB-01Z-00-DX2.svs", "TCGA-A2-A04P-01Z-00-DX1.svs"])
    labels = tmp_path / "labels.csv"
    labels.write_text("patient_id,label\nTCGA-A1-A0SB,IDC\nTCGA-A2-A04P,ILC\n")
    frame = validate_sample_sheet(load_tcga(slides, labels), BRCA)
    assert list(frame["patient_id"]) == ["TCGA-A1-A0SB", "TCGA-A1-A0SB", "TCGA-A2-A04P"]
    assert list(frame["slide_label"]) == ["IDC", "IDC", "ILC"]  # slides inherit the patient label
    assert frame["slide_id"].iloc[0] == "TCGA-A1-A0SB-01Z-00-DX1.B34C"


def test_tcga_slide_without_label_row(tmp_path):
    slides = tmp_path / "slides"
    _touch(slides, ["TCGA-A1-A0SB-01Z-00-DX1.svs"])
    labels = tmp_path / "labels.csv"
    labels.write_text("patient_id,label\nTCGA-ZZ-ZZZZ,IDC\n")
    with pytest.raises(SampleSheetError, match="TCGA-A1-A0SB has no row"):
        load_tcga(slides, labels)


def test_missing_slide_file(tmp_path):
    _touch(tmp_path, ["a.svs"])
    sheet = _generic(tmp_path, ["s1,p1,a.svs,macro,pN1,0", "s2,p1,gone.svs,negative,pN1,1"])
    with pytest.raises(SampleSheetError, match=r"line 3: slide s2: file not found"):
        validate_sample_sheet(load_generic(sheet), CAMELYON)


def test_duplicate_slide_id(tmp_path):
    _touch(tmp_path, ["a.svs", "b.svs"])
    sheet = _generic(tmp_path, ["s1,p1,a.svs,macro,pN1,0", "s1,p1,b.svs,negative,pN1,1"])
    with pytest.raises(SampleSheetError, match=r"line 3: duplicate slide id 's1'"):
        validate_sample_sheet(load_generic(sheet), CAMELYON)


@pytest.mark.parametrize("bad_id", ["../etc", "a/b", "x..y", ".hidden"])
def test_unsafe_slide_id(tmp_path, bad_id):
    _touch(tmp_path, ["a.svs"])
    sheet = _generic(tmp_path, [f"{bad_id},p1,a.svs,macro,pN1,0"])
    with pytest.raises(SampleSheetError, match=r"line 2: slide_id .* is not a safe file name"):
        validate_sample_sheet(load_generic(sheet), CAMELYON)


def test_label_not_a_class(tmp_path):
    _touch(tmp_path, ["a.svs"])
    sheet = _generic(tmp_path, ["s1,p1,a.svs,tumour,pN1,0"])
    with pytest.raises(SampleSheetError, match=r"line 2: slide label 'tumour' is not a class of task camelyon17"):
        validate_sample_sheet(load_generic(sheet), CAMELYON)
    sheet = _generic(tmp_path, ["s1,p1,a.svs,macro,pN9,0"])
    with pytest.raises(SampleSheetError, match=r"line 2: patient label 'pN9'"):
        validate_sample_sheet(load_generic(sheet), CAMELYON)


def test_one_patient_two_labels(tmp_path):
    _touch(tmp_path, ["a.svs", "b.svs"])
    sheet = _generic(tmp_path, ["s1,p1,a.svs,,IDC,", "s2,p1,b.svs,,ILC,"])
    with pytest.raises(SampleSheetError, match=r"patient p1: slides with different patient labels \['IDC', 'ILC'\]"):
        validate_sample_sheet(load_generic(sheet), BRCA)


def test_pn_rule_contradiction(tmp_path):
    labels = _stage_labels(
        tmp_path, {"patient_007": ("pN0", ["negative", "macro", "negative", "negative", "negative"])}
    )
    with pytest.raises(SampleSheetError, match=r"patient patient_007: label pN0 contradicts the pN rule .* gives pN1"):
        validate_sample_sheet(load_camelyon17(labels, tmp_path / "slides"), CAMELYON)


def test_bad_camelyon_row_names_line(tmp_path):
    path = tmp_path / "stage_labels.csv"
    path.write_text("patient,stage\npatient_000.zip,pN0\nnode0.tif,negative\n")
    with pytest.raises(SampleSheetError, match=r"line 3: 'node0.tif' is neither a patient"):
        load_camelyon17(path, tmp_path)


def test_generic_missing_columns_and_bad_values(tmp_path):
    with pytest.raises(SampleSheetError, match=r"missing column\(s\) \['path'\]"):
        load_generic(_generic(tmp_path, ["s1,p1"], header="slide_id,patient_id"))
    with pytest.raises(SampleSheetError, match=r"unknown column\(s\) \['colour'\]"):
        load_generic(_generic(tmp_path, ["s1,p1,a.svs,red"], header="slide_id,patient_id,path,colour"))
    with pytest.raises(SampleSheetError, match=r"line 2: mpp 'fine' is not a number"):
        load_generic(_generic(tmp_path, ["s1,p1,a.svs,fine"], header="slide_id,patient_id,path,mpp"))


def test_format_requires_its_keys():
    with pytest.raises(SampleSheetError, match="dataset.stage_labels is required"):
        load_sample_sheet({"format": "camelyon17", "slide_dir": "x"})


def test_slide_label_conflicts_with_inherited_patient_label(tmp_path):
    _touch(tmp_path, ["a.svs"])
    sheet = _generic(tmp_path, ["s1,p1,a.svs,ILC,IDC,"])
    with pytest.raises(SampleSheetError, match="differs from its patient's label"):
        validate_sample_sheet(load_generic(sheet), BRCA)


def test_pn_rule_table():
    assert pn_stage(["negative"] * 5) == "pN0"
    assert pn_stage(["itc"] + ["negative"] * 4) == "pN0(i+)"
    assert pn_stage(["micro", "itc", "negative", "negative", "negative"]) == "pN1mi"
    assert pn_stage(["macro", "micro", "micro", "negative", "negative"]) == "pN1"
    assert pn_stage(["macro", "micro", "micro", "micro", "itc"]) == "pN2"
    assert pn_stage(["macro", "itc", "itc", "itc", "itc"]) == "pN1"


def test_camelyon17_centre_subfolders(tmp_path):
    labels = _stage_labels(tmp_path, {"patient_004": ("pN0", ["negative"] * 5)})
    centre = tmp_path / "slides" / "center_0"
    centre.mkdir()
    for slide in (tmp_path / "slides").glob("*.tif"):
        slide.rename(centre / slide.name)
    frame = validate_sample_sheet(load_camelyon17(labels, tmp_path / "slides"), CAMELYON)
    assert all("/center_0/" in p for p in frame["path"])


# --- one slide, one row --------------------------------------------------------------------------


def test_one_slide_file_in_two_rows_is_refused(tmp_path):
    """The same file by another path (a link, ``..``, a hard link) or a copy of it: refused,
    naming both rows and both files."""
    import os
    import shutil

    _touch(tmp_path, ["a.svs", "b.svs", "c.svs"])
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.svs").symlink_to(tmp_path / "a.svs")
    os.link(tmp_path / "c.svs", tmp_path / "hard.svs")
    shutil.copy(tmp_path / "b.svs", tmp_path / "copy.svs")
    rows = [
        "s1,p1,a.svs,,IDC,",
        "s2,p2,b.svs,,ILC,",
        "s3,p3,c.svs,,IDC,",
        "s4,p4,link.svs,,ILC,",
        "s5,p5,sub/../b.svs,,IDC,",
        "s6,p6,hard.svs,,ILC,",
        "s7,p7,copy.svs,,IDC,",
    ]
    with pytest.raises(SampleSheetError) as caught:
        validate_sample_sheet(load_generic(_generic(tmp_path, rows)), BRCA)
    message = str(caught.value)
    assert message.startswith("4 problems:")
    sheet = tmp_path / "sheet.csv"
    for later, earlier, how in (
        ("line 5: slide s4: slide file {d}/link.svs", "line 2 (slide s1, {d}/a.svs)", "is the same file as"),
        ("line 6: slide s5: slide file {d}/sub/../b.svs", "line 3 (slide s2, {d}/b.svs)", "is the same file as"),
        ("line 7: slide s6: slide file {d}/hard.svs", "line 4 (slide s3, {d}/c.svs)", "is the same file as"),
        (
            "line 8: slide s7: slide file {d}/copy.svs",
            "line 3 (slide s2, {d}/b.svs)",
            "has the same content (size, first and last MiB) as",
        ),
    ):
        expected = f"{sheet} {later.format(d=tmp_path)} {how} {earlier.format(d=tmp_path)}"
        assert expected in message, (expected, message)
    # Without the file checks (precomputed features) the slide files are not compared.
    assert len(validate_sample_sheet(load_generic(_generic(tmp_path, rows)), BRCA, check_files=False)) == 7


def test_feature_files_of_two_slides_are_one(tmp_path):
    from hmf.data.sample_sheet import check_feature_files

    sheet = validate_sample_sheet(
        load_generic(_generic(tmp_path, ["s1,p1,a.svs,,IDC,", "s2,p2,b.svs,,ILC,"])), BRCA, check_files=False
    )
    (tmp_path / "s1.h5").write_bytes(b"features")
    (tmp_path / "s2.h5").write_bytes(b"features")
    files = {"s1": str(tmp_path / "s1.h5"), "s2": str(tmp_path / "s2.h5")}
    with pytest.raises(SampleSheetError, match=r"slide s2: feature file .*s2.h5 has the same content .* \(slide s1, "):
        check_feature_files(sheet, files)
    (tmp_path / "s2.h5").write_bytes(b"other features")
    check_feature_files(sheet, files)


def test_patient_ids_that_differ_only_in_case(tmp_path):
    _touch(tmp_path, ["a.svs", "b.svs", "c.svs"])
    sheet = _generic(
        tmp_path, ["s1,TCGA-AA-0001,a.svs,,IDC,", "s2,TCGA-AA-0001,b.svs,,IDC,", "s3,tcga-aa-0001,c.svs,,IDC,"]
    )
    with pytest.raises(
        SampleSheetError,
        match=r"line 4: patient ids 'TCGA-AA-0001', 'tcga-aa-0001' differ only in case \(line 2 has 'TCGA-AA-0001'\)",
    ):
        validate_sample_sheet(load_generic(sheet), BRCA)


def test_slide_path_must_be_a_regular_file(tmp_path):
    import os

    _touch(tmp_path, ["a.svs"])
    os.mkfifo(tmp_path / "pipe.svs")
    (tmp_path / "data.mrxs").mkdir()
    rows = ["s1,p1,a.svs,,IDC,", "s2,p2,pipe.svs,,IDC,", "s3,p3,/dev/zero,,IDC,", "s4,p4,data.mrxs,,IDC,"]
    with pytest.raises(SampleSheetError) as caught:
        validate_sample_sheet(load_generic(_generic(tmp_path, rows)), BRCA)
    message = str(caught.value)
    assert f"line 3: slide s2: {tmp_path}/pipe.svs is not a regular file (a FIFO)" in message
    assert "line 4: slide s3: /dev/zero is not a regular file (a character device)" in message
    assert f"line 5: slide s4: {tmp_path}/data.mrxs is not a regular file (a folder; give the slide file" in message


def test_every_problem_is_listed_up_to_a_limit(tmp_path):
    from hmf.data.sample_sheet import MAX_SHOWN

    _touch(tmp_path, ["a.svs"])
    rows = ["s0,p0,a.svs,,IDC,"] + [f"s{i},p{i},gone{i}.svs,,IDC," for i in range(1, MAX_SHOWN + 6)]
    with pytest.raises(SampleSheetError) as caught:
        validate_sample_sheet(load_generic(_generic(tmp_path, rows)), BRCA)
    message = str(caught.value)
    assert message.startswith(f"{MAX_SHOWN + 5} problems:")
    assert "line 3: slide s1: file not found" in message and message.endswith("... and 5 more")
    assert message.count("file not found") == MAX_SHOWN


@pytest.mark.parametrize(
    "name, shown",
    [("ID\u202eC", "U+202E"), ("A\u200bB", "U+200B"), ("tab\there", "U+0009"), ("IDC,ILC", "a comma")],
)
def test_custom_class_names_are_printable_and_without_commas(name, shown):
    from hmf.tasks import get_task

    with pytest.raises(ValueError, match=rf"config key dataset.classes.slide_classes: class name .*{re.escape(shown)}"):
        get_task("custom", {"patient_classes": ["A", "B"], "slide_classes": ["A", name]})
    assert get_task("custom", {"patient_classes": ["grade 1 (low)", "Grade 2/3 – high"]}).patient_classes


def test_pn_stage_from_counts_is_the_pn_rule():
    from itertools import product

    from hmf.tasks import CAMELYON17_SLIDE, pn_stage_from_counts

    for nodes in product(CAMELYON17_SLIDE, repeat=4):
        counts = (
            sum(n in ("micro", "macro") for n in nodes),
            sum(n == "macro" for n in nodes),
            sum(n == "itc" for n in nodes),
        )
        assert pn_stage_from_counts(*counts) == pn_stage(list(nodes))


def test_validating_a_100k_row_sheet_takes_seconds(tmp_path):
    """10^5 slides of 2*10^4 patients whose stages the pN rule derives: within 5 s of CPU."""
    import time

    import numpy as np
    import pandas as pd

    from hmf.tasks import CAMELYON17_SLIDE

    n = 100_000
    rng = np.random.default_rng(0)
    pd.DataFrame(
        {
            "slide_id": [f"patient_{i // 5}_node_{i % 5}" for i in range(n)],
            "patient_id": [f"patient_{i // 5}" for i in range(n)],
            "path": [f"slides/patient_{i // 5}_node_{i % 5}.tif" for i in range(n)],
            "slide_label": np.array(CAMELYON17_SLIDE)[rng.integers(0, 4, n)],
            "node": np.arange(n) % 5,
        }
    ).to_csv(tmp_path / "sheet.csv", index=False)
    start = time.process_time()
    frame = validate_sample_sheet(load_generic(tmp_path / "sheet.csv"), CAMELYON, check_files=False)
    seconds = time.process_time() - start
    assert len(frame) == n and (frame["patient_label"] != "").all()
    labels = frame[frame["patient_id"] == "patient_7"].sort_values("node")["slide_label"]
    assert frame.loc[frame["patient_id"] == "patient_7", "patient_label"].iloc[0] == pn_stage(list(labels))
    assert seconds <= 5, f"{seconds:.1f} s of CPU to validate {n} rows"
