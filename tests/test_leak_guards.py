"""One slide, one row: a slide file under two ids, or a training slide or patient in the predict
sheet, is refused before any job runs, and the message names both rows or files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import copy_workflow, run_snakemake

from hmf.data import fingerprints
from hmf.data.fingerprints import CHUNK, clashes, fingerprint


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_fingerprint_reads_the_ends_only(tmp_path):
    big = bytes(range(256)) * (3 * CHUNK // 256)  # 3 MiB
    a = _write(tmp_path / "a", big)
    middle = bytearray(big)
    middle[len(big) // 2] ^= 0xFF
    b = _write(tmp_path / "b", bytes(middle))  # differs in the middle MiB only: not read
    end = bytearray(big)
    end[-1] ^= 0xFF
    c = _write(tmp_path / "c", bytes(end))
    assert fingerprint(a) == fingerprint(b) != fingerprint(c)
    assert fingerprint(a).startswith(f"{3 * CHUNK}:")
    small = _write(tmp_path / "s", b"x" * 100)
    assert fingerprint(small) != fingerprint(_write(tmp_path / "t", b"x" * 99 + b"y"))


def test_clashes_same_file_and_same_content(tmp_path):
    a = _write(tmp_path / "a.svs", b"slide a")
    b = _write(tmp_path / "b.svs", b"slide b")
    copy = tmp_path / "copy.svs"
    shutil.copy(a, copy)
    link = tmp_path / "link.svs"
    link.symlink_to(a)
    hard = tmp_path / "hard.svs"
    os.link(b, hard)
    dotted = tmp_path / "sub" / ".." / "b.svs"
    (tmp_path / "sub").mkdir()
    paths = [str(a), str(b), str(copy), str(link), str(hard), str(dotted), "", str(tmp_path / "missing")]
    found = {(c.earlier, c.later, c.how) for c in clashes(paths)}
    assert found == {(0, 2, "content"), (0, 3, "path"), (1, 4, "path"), (1, 5, "path")}


def test_only_files_of_a_shared_size_are_hashed(tmp_path, monkeypatch):
    paths = [str(_write(tmp_path / f"{i}.svs", b"x" * (10 + i))) for i in range(50)]
    paths.append(str(_write(tmp_path / "same_size.svs", b"y" * 10)))
    hashed = []
    real = fingerprints.fingerprint
    monkeypatch.setattr(fingerprints, "fingerprint", lambda p, size=None: hashed.append(p) or real(p, size))
    assert clashes(paths) == []
    assert sorted(hashed) == sorted([paths[0], paths[-1]])


# --- snakemake -n: the refusals name both rows or files -----------------------------------------


def _user_config(case: Path, **predict) -> dict:
    config = {
        "dataset": {"name": "user", "task": "tcga_brca", "format": "generic", "sample_sheet": str(case / "sheet.csv")},
        "splits": {"k": 2},
        "models": {"patient_inputs": "in_sample"},
    }
    if predict:
        config["predict"] = predict
    return config


def _dry_run(workdir: Path, case: Path, config: dict):
    (case / "config.yaml").write_text(yaml.safe_dump(config))
    proc = run_snakemake(workdir, "-n", "--configfile", str(case / "config.yaml"), check=False)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def workflow_copy(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("leaks") / "wf")


def _slides(case: Path, names) -> None:
    for name in names:
        _write(case / "slides" / name, f"slide {name}".encode() * 100)


GOOD_ROWS = ["s1,p1,slides/a.svs,IDC", "s2,p2,slides/b.svs,ILC", "s3,p3,slides/c.svs,IDC", "s4,p4,slides/d.svs,ILC"]


@pytest.mark.workflow
def test_training_sheet_leaks_fail_the_dry_run(workflow_copy):
    """One sheet with every training-sheet refusal: each is listed, naming both rows."""
    case = workflow_copy / "cases" / "training"
    _slides(case, ["a.svs", "b.svs", "c.svs", "d.svs"])
    shutil.copy(case / "slides/a.svs", case / "slides/a_copy.svs")
    (case / "slides/sub").mkdir()
    os.mkfifo(case / "slides/pipe.svs")
    long_id = "s" + "1" * 239
    rows = [
        *GOOD_ROWS,
        "s5,p5,slides/sub/../b.svs,IDC",  # the file of line 3 by another path
        "s6,p6,slides/a_copy.svs,ILC",  # a copy of line 2's slide
        "S1,p7,slides/c.svs,IDC",  # slide id of line 2 up to case (and line 4's file)
        "s8,P1,slides/d.svs,IDC",  # patient id of line 2 up to case (and line 5's file)
        "s9,p9,slides/pipe.svs,ILC",  # a FIFO
        f"{long_id},p10,slides/b.svs,IDC",
    ]
    (case / "sheet.csv").write_text("slide_id,patient_id,path,patient_label\n" + "\n".join(rows) + "\n")
    code, output = _dry_run(workflow_copy, case, _user_config(case))
    assert code != 0
    sheet = case / "sheet.csv"
    expected = [
        f"{sheet} line 6: slide s5: slide file {case}/slides/sub/../b.svs is the same file as line 3 (slide s2, "
        f"{case}/slides/b.svs)",
        f"{sheet} line 7: slide s6: slide file {case}/slides/a_copy.svs has the same content (size, first and last "
        f"MiB) as line 2 (slide s1, {case}/slides/a.svs)",
        f"{sheet} line 8: slide ids 's1', 'S1' differ only in case (line 2 has 's1')",
        f"{sheet} line 9: patient ids 'p1', 'P1' differ only in case (line 2 has 'p1')",
        f"{sheet} line 10: slide s9: {case}/slides/pipe.svs is not a regular file (a FIFO)",
        f"{sheet} line 11: slide_id s1111",
        "240 characters long; at most 200",
    ]
    for message in expected:
        assert message in output, (message, output[-4000:])
    assert not (workflow_copy / "results").exists()


@pytest.mark.workflow
def test_predict_sheet_leaks_fail_the_dry_run(workflow_copy):
    """A predict sheet with a training patient, a copy of a training slide, a training slide id
    up to case and braces in a path: each is listed, naming the training slide or patient; with
    predict.allow_training_slides the patient and the copy pass."""
    case = workflow_copy / "cases" / "predict"
    _slides(case, ["a.svs", "b.svs", "c.svs", "d.svs", "n1.svs", "n2.svs", "{1}.svs"])
    (case / "sheet.csv").write_text("slide_id,patient_id,path,patient_label\n" + "\n".join(GOOD_ROWS) + "\n")
    shutil.copy(case / "slides/c.svs", case / "slides/c_again.svs")
    new = ["n1,q1,slides/n1.svs", "n2,p2,slides/n2.svs", "n3,q3,slides/c_again.svs", "S4,q4,slides/{1}.svs"]
    (case / "new.csv").write_text("slide_id,patient_id,path\n" + "\n".join(new) + "\n")
    code, output = _dry_run(workflow_copy, case, _user_config(case, sample_sheet=str(case / "new.csv")))
    assert code != 0
    new_sheet, sheet = case / "new.csv", case / "sheet.csv"
    expected = [
        "predict.sample_sheet: 4 problems",
        f"{new_sheet} line 3: patient 'p2' is patient 'p2' of the training sample sheet {sheet} (e.g. its slide s2)",
        f"{new_sheet} line 4: slide n3: slide file {case}/slides/c_again.svs has the same content (size, first and "
        f"last MiB) as training slide s3 ({sheet}, {case}/slides/c.svs)",
        f"{new_sheet} line 5: slide id 'S4' is also in the training sample sheet {sheet} (as 's4')",
        f"{new_sheet} line 5: slide S4: path '{case}/slides/{{1}}.svs' contains '{{' or '}}'",
    ]
    for message in expected:
        assert message in output, (message, output[-4000:])

    # Re-scoring training slides is a choice: allowed, the patient and the copy are in-sample.
    new = ["n1,q1,slides/n1.svs", "n2,p2,slides/n2.svs", "n3,q3,slides/c_again.svs"]
    (case / "new.csv").write_text("slide_id,patient_id,path\n" + "\n".join(new) + "\n")
    config = _user_config(case, sample_sheet=str(case / "new.csv"), allow_training_slides=True)
    (case / "config.yaml").write_text(yaml.safe_dump(config))
    proc = run_snakemake(
        workflow_copy, "-n", "results/user/predict/sample_sheet.csv", "--configfile", str(case / "config.yaml")
    )
    assert "predict_sheet" in proc.stdout


@pytest.mark.workflow
def test_precomputed_feature_files_are_the_slides(workflow_copy):
    """With features.precomputed_dir the feature files stand for the slides: a training slide
    whose feature file is another's, and a new slide whose feature file is a training slide's,
    fail the dry run naming both; allowed, the new slide is in-sample."""
    from synthetic import make_cohort

    case = workflow_copy / "cases" / "precomputed"
    cohort = make_cohort(case, n_patients=10)
    h5 = case / "features/h5_files"
    shutil.copy(h5 / "patient_001_node_0.h5", h5 / "patient_900_node_0.h5")  # a training slide's features
    shutil.copy(h5 / "patient_002_node_0.h5", h5 / "patient_901_node_0.h5")
    (case / "new.csv").write_text(
        "slide_id,patient_id,path\npatient_900_node_0,patient_900,\npatient_901_node_0,patient_901,\n"
    )
    config = {
        "dataset": {"name": "byo", "task": "camelyon17", "format": "generic", "sample_sheet": str(cohort["sheet"])},
        "features": {"precomputed_dir": str(case / "features")},
        "splits": {"k": 2},
        "models": {"slide": ["meanpool"], "patient": ["pn_rule"], "patient_source": "meanpool"},
        "predict": {"sample_sheet": str(case / "new.csv")},
    }
    code, output = _dry_run(workflow_copy, case, config)
    assert code != 0
    assert (
        f"predict.sample_sheet: 2 problems:\n  {case}/new.csv (slide patient_900_node_0): slide patient_900_node_0: "
        f"feature file {h5}/patient_900_node_0.h5 has the same content (size, first and last MiB) as training slide "
        f"patient_001_node_0 ({cohort['sheet']}, {h5}/patient_001_node_0.h5)" in output
    ), output[-3000:]

    config["predict"]["allow_training_slides"] = True
    (case / "config.yaml").write_text(yaml.safe_dump(config))
    target = "results/byo/predict/sample_sheet.csv"
    run_snakemake(workflow_copy, "-n", target, "--configfile", str(case / "config.yaml"))

    # Two training slides of one feature file are one slide.
    shutil.copy(h5 / "patient_003_node_1.h5", h5 / "patient_003_node_2.h5")
    del config["predict"]
    code, output = _dry_run(workflow_copy, case, config)
    assert code != 0
    assert (
        f"sample sheet: {cohort['sheet']} (slide patient_003_node_2): slide patient_003_node_2: feature file "
        f"{h5}/patient_003_node_2.h5 has the same content (size, first and last MiB) as slide patient_003_node_1"
        in output
    ), output[-3000:]
