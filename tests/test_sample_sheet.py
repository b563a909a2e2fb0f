"""Sample sheets and labels: every bad input fails with a message naming the row or key."""

from __future__ import annotations

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
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"slide")


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
