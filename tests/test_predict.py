"""Predictions for new, unlabelled patients: the sheet of new slides, the fold ensemble, the
CAMELYON17 submission file, and the `predict` target on the tiny run."""

from __future__ import annotations

import os
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from sklearn.metrics import cohen_kappa_score

from hmf.data.predict_sheet import load_predict_sheet
from hmf.data.sample_sheet import SampleSheetError
from hmf.predict import camelyon17_submission, predict_patients
from hmf.tasks import CAMELYON17_PATIENT, CAMELYON17_SLIDE, get_task, pn_stage

TASK = get_task("camelyon17")
R = "results/tiny_camelyon17"
# The challenge's stage list, in its order (Bandi et al. 2019); the kappa is computed over it.
CHALLENGE_STAGES = ["pN0", "pN0(i+)", "pN1mi", "pN1", "pN2"]


def write_sheet(folder, rows):
    for row in rows:
        (folder / row["path"]).write_bytes(f"slide {row['path']}".encode())  # each its own content
    path = folder / "new.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_predict_sheet_checks(tmp_path):
    rows = [
        {"slide_id": f"patient_100_node_{n}", "patient_id": "patient_100", "path": f"n{n}.tif", "node": n}
        for n in range(2)
    ]
    sheet = load_predict_sheet(write_sheet(tmp_path, rows), TASK)
    assert list(sheet["slide_id"]) == ["patient_100_node_0", "patient_100_node_1"]
    assert (sheet["patient_label"] == "").all() and list(sheet["node"]) == [0, 1]
    training = pd.DataFrame({"slide_id": ["patient_100_node_1"], "patient_id": ["patient_9"], "path": ["t.tif"]})
    with pytest.raises(SampleSheetError, match="also in the training sample sheet"):
        load_predict_sheet(tmp_path / "new.csv", TASK, training)
    rows[1]["slide_id"] = rows[0]["slide_id"]
    with pytest.raises(SampleSheetError, match="duplicate slide id"):
        load_predict_sheet(write_sheet(tmp_path, rows), TASK)
    rows[1].update(slide_id="../x")
    with pytest.raises(SampleSheetError, match="not a safe file name"):
        load_predict_sheet(write_sheet(tmp_path, rows), TASK)
    rows[1].update(slide_id="b", path="missing.tif")
    pd.DataFrame(rows).to_csv(tmp_path / "new.csv", index=False)
    with pytest.raises(SampleSheetError, match="line 3: slide b: file not found"):
        load_predict_sheet(tmp_path / "new.csv", TASK)


def out(folder):
    """A submission file and its conflicts file in ``folder``."""
    return folder / "submission.csv", folder / "conflicts.csv"


def write_unlabelled_sheet(path, slides):
    """The workflow's copy of a sheet of new CAMELYON17 slides (``patient_XXX_node_Y``)."""
    sheet = pd.DataFrame(
        {
            "slide_id": slides,
            "patient_id": [s[:11] for s in slides],
            "path": "x",
            "slide_label": "",
            "patient_label": "",
            "node": [int(s[-1]) for s in slides],
            "mpp": "",
        }
    )
    sheet.to_csv(path, index=False)


def test_pn_rule_ensemble_and_submission(tmp_path):
    """Fold by fold the pN rule on that fold's slide labels; the ensemble is the mean of the
    folds' one-hot rows; the submission lists each patient, then its nodes."""
    slides = [f"patient_{p}_node_{n}" for p in (100, 101) for n in range(5)]
    write_unlabelled_sheet(tmp_path / "sheet.csv", slides)
    labels = {
        0: ["macro", "macro", "micro", "negative", "negative", "itc"] + ["negative"] * 4,
        1: ["macro", "micro", "negative", "negative", "negative", "negative"] + ["negative"] * 4,
    }
    probs = torch.stack([torch.eye(4)[[CAMELYON17_SLIDE.index(x) for x in labels[k]]] * 0.9 + 0.025 for k in (0, 1)])
    torch.save(
        {"slide_ids": slides, "embeddings": torch.zeros(2, 10, 3), "probs": probs, "classes": list(CAMELYON17_SLIDE)},
        tmp_path / "emb.pt",
    )
    frame = predict_patients(
        "pn_rule", TASK, tmp_path / "sheet.csv", tmp_path / "emb.pt", [], tmp_path / "p.csv", tmp_path / "pf.csv"
    )
    row = frame.set_index("id").loc["patient_100"]
    # fold 0: macro, macro, micro -> pN1; fold 1: macro, micro -> pN1: agreement, no spread
    assert row["pred_label"] == pn_stage(labels[0][:5]) == "pN1" and row["prob_pN1"] == 1 and row["std_pN1"] == 0
    folds = pd.read_csv(tmp_path / "pf.csv")
    assert sorted(folds["fold"].unique()) == [0, 1] and len(folds) == 4
    # patient_101: fold 0 gives pN0(i+) (one itc), fold 1 pN0: half each, spread kept
    other = frame.set_index("id").loc["patient_101"]
    assert other["prob_pN0"] == other["prob_pN0(i+)"] == 0.5 and other["std_pN0"] > 0

    slide_preds = pd.DataFrame({"id": slides[:-1], "pred_label": labels[0][:9]})  # last slide: no patches
    slide_preds.to_csv(tmp_path / "s.csv", index=False)
    submission = camelyon17_submission(
        tmp_path / "sheet.csv",
        {"pn_rule": tmp_path / "p.csv"},
        tmp_path / "s.csv",
        tmp_path / "submission.csv",
        tmp_path / "conflicts.csv",
        model="pn_rule",
    )
    text = (tmp_path / "submission.csv").read_text().splitlines()
    assert text[0] == "patient,stage"
    assert text[1] == "patient_100.zip,pN1" and text[2] == "patient_100_node_0.tif,macro"
    assert text[7].startswith("patient_101.zip,") and text[-1] == "patient_101_node_4.tif,negative"
    assert len(submission) == 12


def test_submission_needs_camelyon_ids_and_nodes(tmp_path):
    sheet = pd.DataFrame(
        {
            "slide_id": ["a"],
            "patient_id": ["p1"],
            "path": "x",
            "slide_label": "",
            "patient_label": "",
            "node": [0],
            "mpp": "",
        }
    )
    sheet.to_csv(tmp_path / "sheet.csv", index=False)
    pd.DataFrame({"id": ["p1"], "pred_label": ["pN0"]}).to_csv(tmp_path / "p.csv", index=False)
    pd.DataFrame({"id": ["a"], "pred_label": ["negative"]}).to_csv(tmp_path / "s.csv", index=False)
    with pytest.raises(ValueError, match="'p1' is not a CAMELYON17 id"):
        camelyon17_submission(
            tmp_path / "sheet.csv", {"m": tmp_path / "p.csv"}, tmp_path / "s.csv", *out(tmp_path), model="m"
        )


def test_submission_names_a_predictions_file_without_labels(tmp_path):
    sheet = pd.DataFrame(
        {"slide_id": ["a"], "patient_id": ["patient_1"], "path": "x", "slide_label": "", "patient_label": ""}
    )
    sheet.assign(node=[0], mpp="").to_csv(tmp_path / "sheet.csv", index=False)
    pd.DataFrame({"id": ["patient_1"], "stage": ["pN0"]}).to_csv(tmp_path / "p.csv", index=False)
    pd.DataFrame({"id": ["a"], "pred_label": ["negative"]}).to_csv(tmp_path / "s.csv", index=False)
    with pytest.raises(ValueError, match=r"predictions file .*p.csv: missing column\(s\) \['pred_label'\]"):
        camelyon17_submission(
            tmp_path / "sheet.csv", {"m": tmp_path / "p.csv"}, tmp_path / "s.csv", *out(tmp_path), model="m"
        )


BRCA = get_task("tcga_brca")


def _training_sheet(folder):
    """A validated training sheet of two patients (files t0.svs, t1.svs, t2.svs)."""
    from hmf.data.sample_sheet import load_generic, validate_sample_sheet

    for name in ("t0.svs", "t1.svs", "t2.svs"):
        (folder / name).write_bytes(f"training slide {name}".encode() * 50)
    (folder / "train.csv").write_text(
        "slide_id,patient_id,path,patient_label\ns0,p0,t0.svs,IDC\ns1,p0,t1.svs,IDC\ns2,p1,t2.svs,ILC\n"
    )
    return validate_sample_sheet(load_generic(folder / "train.csv"), BRCA)


def test_predict_sheet_refuses_training_patients_and_slides(tmp_path):
    """A training patient (up to case), a copy of a training slide and a link to one are
    refused, each naming the training patient or slide and both files; allowed, they and
    their patients are marked in-sample."""
    training = _training_sheet(tmp_path)
    new = tmp_path / "new"
    new.mkdir()
    for name in ("n0.svs", "n1.svs"):
        (new / name).write_bytes(f"new slide {name}".encode())
    shutil.copy(tmp_path / "t0.svs", new / "copy.svs")
    (new / "link.svs").symlink_to(tmp_path / "t1.svs")
    rows = ["a0,q0,n0.svs", "a1,P1,n1.svs", "a2,q2,copy.svs", "a3,q2,n1.svs", "a4,q4,link.svs"]
    (new / "new.csv").write_text("slide_id,patient_id,path\n" + "\n".join(rows) + "\n")
    with pytest.raises(SampleSheetError) as caught:
        load_predict_sheet(new / "new.csv", BRCA, training)
    message = str(caught.value)
    source = tmp_path / "train.csv"
    assert message.startswith("4 problems:")
    assert f"line 3: patient 'P1' is patient 'p1' of the training sample sheet {source} (e.g. its slide s2)" in message
    assert (
        f"line 4: slide a2: slide file {new}/copy.svs has the same content (size, first and last MiB) as training "
        f"slide s0 ({source}, {tmp_path}/t0.svs)" in message
    )
    assert f"line 6: slide a4: slide file {new}/link.svs is the same file as training slide s1" in message
    assert f"line 5: slide a3: slide file {new}/n1.svs is the same file as line 3 (slide a1" in message

    rows[3] = "a3,q2,n0.svs"  # the sheet's own duplicate is refused whatever the option says
    (new / "new.csv").write_text("slide_id,patient_id,path\n" + "\n".join(rows) + "\n")
    with pytest.raises(SampleSheetError, match="line 5: slide a3: slide file .* is the same file as line 2"):
        load_predict_sheet(new / "new.csv", BRCA, training, allow_training_slides=True)
    rows[3] = "a3,q2,n2.svs"
    (new / "n2.svs").write_bytes(b"another new slide")
    (new / "new.csv").write_text("slide_id,patient_id,path\n" + "\n".join(rows) + "\n")
    sheet = load_predict_sheet(new / "new.csv", BRCA, training, allow_training_slides=True)
    # a3 shares patient q2 with the copy a2: the whole patient is in-sample
    assert dict(zip(sheet["slide_id"], sheet["in_sample"])) == {
        "a0": False,
        "a1": True,
        "a2": True,
        "a3": True,
        "a4": True,
    }


def test_predict_sheet_gets_the_training_sheets_checks(tmp_path):
    """Ids (length, case against the training ids), braces in paths, and regular files only:
    a FIFO, a device and a folder are named for what they are."""
    training = _training_sheet(tmp_path)
    (tmp_path / "ok.svs").write_bytes(b"new")
    os.mkfifo(tmp_path / "pipe.svs")
    (tmp_path / "folder.mrxs").mkdir()
    long_id = "n" * 240
    rows = [
        "n0,q0,ok.svs",
        f"{long_id},q1,ok2.svs",
        "n2,q2,slides/{1}.svs",
        "S0,q3,ok.svs",
        "n4,q4,pipe.svs",
        "n5,q5,/dev/zero",
        "n6,q6,folder.mrxs",
    ]
    (tmp_path / "new.csv").write_text("slide_id,patient_id,path\n" + "\n".join(rows) + "\n")
    with pytest.raises(SampleSheetError) as caught:
        load_predict_sheet(tmp_path / "new.csv", BRCA, training)
    message = str(caught.value)
    for part in (
        "line 3: slide_id nnnnnnnnnn",
        "is 240 characters long; at most 200",
        "line 4: slide n2: path",
        "contains '{' or '}', which Snakemake reads as a wildcard",
        "line 5: slide id 'S0' is also in the training sample sheet",
        "(as 's0')",
        f"line 6: slide n4: {tmp_path}/pipe.svs is not a regular file (a FIFO)",
        "line 7: slide n5: /dev/zero is not a regular file (a character device)",
        f"line 8: slide n6: {tmp_path}/folder.mrxs is not a regular file (a folder",
        "line 5: slide S0: slide file",  # and ok.svs is in two rows
    ):
        assert part in message, (part, message)


def test_predict_sheet_camelyon17_ids(tmp_path):
    """CAMELYON17: slide ids patient_<n>_node_<m> of their patient; an empty node comes from
    the id, a given one must agree; one row per patient and node."""
    rows = [
        {"slide_id": "patient_100_node_0", "patient_id": "patient_100", "path": "a.tif", "node": ""},
        {"slide_id": "patient_100_node_1", "patient_id": "patient_100", "path": "b.tif", "node": 1},
    ]
    sheet = load_predict_sheet(write_sheet(tmp_path, rows), TASK)
    assert list(sheet["node"]) == [0, 1]
    rows += [
        {"slide_id": "node_2", "patient_id": "patient_100", "path": "c.tif", "node": 2},
        {"slide_id": "patient_101_node_0", "patient_id": "patient_100", "path": "d.tif", "node": ""},
        {"slide_id": "patient_102_node_3", "patient_id": "patient_102", "path": "e.tif", "node": 4},
        {"slide_id": "patient_100_node_01", "patient_id": "patient_100", "path": "f.tif", "node": ""},
    ]
    with pytest.raises(SampleSheetError) as caught:
        load_predict_sheet(write_sheet(tmp_path, rows), TASK)
    message = str(caught.value)
    for part in (
        "line 4: slide id 'node_2' is not a CAMELYON17 slide id (patient_<number>_node_<number>)",
        "line 5: slide patient_101_node_0 is a node of patient_101 by its id, but its patient_id is 'patient_100'",
        "line 6: slide patient_102_node_3: node 4 differs from the node number in its id (3)",
        "line 7: slide patient_100_node_01 is node 1 of patient_100, as is line 3",
    ):
        assert part in message, (part, message)


def test_pn_rule_ties_and_a_submission_that_contradicts_its_nodes(tmp_path, caplog):
    """Two folds whose pN-rule stages differ tie in the ensemble: the pN rule over the
    ensemble's node labels breaks the tie (the nearest tied stage when it is not one of them).
    A submitted stage that contradicts the pN rule over the submitted node labels is listed in
    the log and in the conflicts file; in-sample patients are marked."""
    slides = [f"patient_{p}_node_{n}" for p in (100, 101, 102) for n in range(5)]
    write_unlabelled_sheet(tmp_path / "sheet.csv", slides)
    sheet = pd.read_csv(tmp_path / "sheet.csv")
    sheet["in_sample"] = sheet["patient_id"] == "patient_102"
    sheet.to_csv(tmp_path / "sheet.csv", index=False)
    one_hot = {c: np.eye(4)[i] for i, c in enumerate(CAMELYON17_SLIDE)}
    fold0 = ["macro"] + ["negative"] * 4 + ["macro"] * 4 + ["negative"] + ["negative"] * 5
    fold1 = ["negative"] * 5 + ["negative"] * 5 + ["negative"] * 5
    probs = np.stack([[one_hot[x] for x in fold0], [one_hot[x] for x in fold1]]) * 0.9 + 0.025
    # patient_100 node 0: macro in fold 0 (0.925), negative in fold 1 but macro close (0.45)
    probs[1, 0] = [0.5, 0.025, 0.025, 0.45]
    # patient_101: fold 0 pN2 (4 macro), fold 1 pN0; the ensemble's nodes: two macro -> pN1
    probs[1, 5:9] = [[0.5, 0.025, 0.025, 0.45]] * 2 + [[0.97, 0.01, 0.01, 0.01]] * 2
    ensemble_nodes = np.array(CAMELYON17_SLIDE)[probs.mean(axis=0).argmax(axis=1)]
    assert list(ensemble_nodes[:5]) == ["macro"] + ["negative"] * 4
    assert list(ensemble_nodes[5:10]) == ["macro", "macro"] + ["negative"] * 3
    assert pn_stage(list(ensemble_nodes[5:10])) == "pN1"
    torch.save(
        {
            "slide_ids": slides,
            "embeddings": torch.zeros(2, 15, 3),
            "probs": torch.tensor(probs, dtype=torch.float32),
            "classes": list(CAMELYON17_SLIDE),
        },
        tmp_path / "emb.pt",
    )
    frame = predict_patients(
        "pn_rule", TASK, tmp_path / "sheet.csv", tmp_path / "emb.pt", [], tmp_path / "p.csv", tmp_path / "pf.csv"
    ).set_index("id")
    # patient_100: fold 0 pN1, fold 1 pN0, half each: the rule over the ensemble's nodes says pN1
    assert frame.loc["patient_100", "prob_pN0"] == frame.loc["patient_100", "prob_pN1"] == 0.5
    assert frame.loc["patient_100", "pred_label"] == "pN1"
    # patient_101: pN2 against pN0; the rule says pN1: the nearer tied stage is pN2
    assert frame.loc["patient_101", "prob_pN0"] == frame.loc["patient_101", "prob_pN2"] == 0.5
    assert frame.loc["patient_101", "pred_label"] == "pN2"
    assert frame.loc["patient_102", "pred_label"] == "pN0"
    assert frame["in_sample"].to_dict() == {"patient_100": False, "patient_101": False, "patient_102": True}
    assert set(pd.read_csv(tmp_path / "pf.csv").query("in_sample")["id"]) == {"patient_102"}

    # Node labels from the slide ensemble; stages from another model, one of which contradicts them.
    pd.DataFrame({"id": slides, "pred_label": ensemble_nodes}).to_csv(tmp_path / "s.csv", index=False)
    other = pd.DataFrame({"id": ["patient_100", "patient_101", "patient_102"], "pred_label": ["pN0", "pN1", "pN0"]})
    other.to_csv(tmp_path / "other.csv", index=False)
    predictions = {"hmf_patient": tmp_path / "other.csv", "pn_rule": tmp_path / "p.csv"}
    with caplog.at_level("INFO"):
        camelyon17_submission(
            tmp_path / "sheet.csv", predictions, tmp_path / "s.csv", *out(tmp_path), model="hmf_patient"
        )
    conflicts = pd.read_csv(tmp_path / "conflicts.csv")
    assert conflicts.to_dict("records") == [
        {
            "patient": "patient_100",
            "stage": "pN0",
            "model": "hmf_patient",
            "node_labels": "macro negative negative negative negative",
            "pn_rule_stage": "pN1",
        }
    ]
    assert "1 of 3 patients: the submitted stage (hmf_patient) is not the pN rule" in caplog.text
    assert "patient_100 pN0 but nodes macro negative negative negative negative give pN1" in caplog.text
    # The pN rule's own stages agree with the nodes they came from, except where a tie went to
    # the nearer stage: that one is listed.
    camelyon17_submission(tmp_path / "sheet.csv", predictions, tmp_path / "s.csv", *out(tmp_path), model="pn_rule")
    assert list(pd.read_csv(tmp_path / "conflicts.csv")["patient"]) == ["patient_101"]


def test_submission_model_has_the_best_pooled_kappa(tmp_path, caplog):
    """With no model named, the stages come from the predicted patient model with the best
    pooled out-of-fold kappa in the patient results table, and the log says which."""
    write_unlabelled_sheet(tmp_path / "sheet.csv", ["patient_100_node_0"])
    pd.DataFrame({"id": ["patient_100_node_0"], "pred_label": ["micro"]}).to_csv(tmp_path / "s.csv", index=False)
    predictions = {}
    for model, stage in (("hmf_patient", "pN0"), ("pn_rule", "pN1mi"), ("meanpool", "pN2")):
        predictions[model] = tmp_path / f"{model}.csv"
        pd.DataFrame({"id": ["patient_100"], "pred_label": [stage]}).to_csv(predictions[model], index=False)
    table = tmp_path / "patient.csv"
    pd.DataFrame(
        {"model": ["hmf_patient", "pn_rule", "meanpool", "maxpool"], "kappa_quadratic_pooled": [0.41, 0.62, None, 0.9]}
    ).to_csv(table, index=False)
    with caplog.at_level("INFO"):
        frame = camelyon17_submission(
            tmp_path / "sheet.csv", predictions, tmp_path / "s.csv", *out(tmp_path), patient_table=table
        )
    assert frame["stage"].iloc[0] == "pN1mi"  # pn_rule: maxpool was not predicted, meanpool has no kappa
    assert "submission stages from pn_rule: the best pooled out-of-fold quadratic kappa" in caplog.text
    assert "hmf_patient 0.410, pn_rule 0.620, meanpool nan" in caplog.text
    pd.DataFrame({"model": ["hmf_patient"], "kappa_quadratic_pooled": [0.4]}).to_csv(table, index=False)
    with pytest.raises(ValueError, match=r"patient.csv: no row for patient model\(s\) \['pn_rule', 'meanpool'\]"):
        camelyon17_submission(
            tmp_path / "sheet.csv", predictions, tmp_path / "s.csv", *out(tmp_path), patient_table=table
        )


def test_predict_slides_reads_the_feature_files_it_is_given(tmp_path):
    """The K fold checkpoints predict the slides whose feature files the job was given (the
    mapping slide id -> file); the ensemble, per-fold rows and embeddings agree with each model."""
    import h5py

    from hmf.features.io import FeatureFileError
    from hmf.models import build_slide_model
    from hmf.predict import predict_slides
    from hmf.training.checkpoints import SlideCheckpoint, write_checkpoint
    from hmf.training.slide_embeddings import read_slide_embeddings

    classes = list(CAMELYON17_SLIDE)
    slides = ["patient_300_node_0", "patient_300_node_1", "patient_301_node_0"]
    write_unlabelled_sheet(tmp_path / "sheet.csv", slides)
    rng = np.random.default_rng(0)
    files = {}
    for slide, n in zip(slides, (5, 0, 3)):  # the second slide has no patches
        files[slide] = tmp_path / "anywhere" / f"{slide}.h5"
        files[slide].parent.mkdir(exist_ok=True)
        with h5py.File(files[slide], "w") as fh:
            fh["features"] = rng.normal(size=(n, 6)).astype(np.float32)
            fh["coords"] = np.zeros((n, 2), dtype=np.int64)
    models, checkpoints = [], []
    for k in range(2):
        torch.manual_seed(k)
        model = build_slide_model("abmil", 6, len(classes), {}).eval()
        mean, std = torch.full((6,), 0.1 * k), torch.full((6,), 1.0 + k)
        checkpoints.append(tmp_path / f"fold_{k}.pt")
        write_checkpoint(
            checkpoints[-1],
            SlideCheckpoint("abmil", model.state_dict(), 6, 4, tuple(classes), None, {"model": {}}, 0, mean, std, 0.0),
        )
        models.append((model, mean, std))
    out = {name: tmp_path / name for name in ("p.csv", "f.csv", "e.pt")}
    frame = predict_slides(TASK, tmp_path / "sheet.csv", files, checkpoints, out["p.csv"], out["f.csv"], out["e.pt"])

    assert list(frame["id"]) == [slides[0], slides[2]] and list(frame["patient_id"]) == ["patient_300", "patient_301"]
    saved = read_slide_embeddings(out["e.pt"])
    assert saved.slide_ids == [slides[0], slides[2]] and saved.probs.shape == (2, 2, 4)
    folds = pd.read_csv(out["f.csv"])
    for k, (model, mean, std) in enumerate(models):
        with h5py.File(files[slides[2]]) as fh:
            features = torch.from_numpy(fh["features"][()])
        with torch.inference_mode():
            expected = torch.softmax(model(features=(features - mean) / std)["logits"], -1)
        assert torch.allclose(saved.probs[k, 1], expected, atol=1e-6)
        row = folds[(folds["fold"] == k) & (folds["id"] == slides[2])]
        assert np.allclose(row[[f"prob_{c}" for c in classes]].to_numpy()[0], expected.numpy(), atol=1e-6)

    del files[slides[1]]
    with pytest.raises(FeatureFileError, match=f"slide {slides[1]}: no feature file among the job's inputs"):
        predict_slides(TASK, tmp_path / "sheet.csv", files, checkpoints, out["p.csv"], out["f.csv"], out["e.pt"])


@pytest.mark.workflow
def test_predict_target_on_the_tiny_run(tiny_run, tmp_path):
    """New patients (demo slides of another seed, labels hidden) and, re-scored on purpose, one
    training patient's slides under new ids go through the `predict` target; the submission
    file is read back and the new patients are scored by scikit-learn."""
    from conftest import run_snakemake

    from hmf.demo.plan import demo_settings, plan_cohort
    from hmf.demo.writer import write_slide

    workdir = tmp_path / "wf"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    config = yaml.safe_load((workdir / "tests/configs/tiny.yaml").read_text())
    new_dir = workdir / "new_slides"
    new_dir.mkdir()
    sources = workdir / "resources/sources"
    rows, hidden = [], {}
    plans = plan_cohort(demo_settings({**config["demo"], "n_patients": 3, "seed": config["demo"]["seed"] + 100}))
    for plan in plans:
        patient = f"patient_{200 + int(plan.patient_id[-3:])}"
        hidden[patient] = plan.patient_label
        slide = f"{patient}_node_{plan.node}"
        write_slide(plan, new_dir / f"{slide}.tif", sources / "cmu_small_region.svs", sources / "target_image.png")
        rows.append({"slide_id": slide, "patient_id": patient, "path": f"{slide}.tif", "node": str(plan.node)})
    # A training patient's slides, copied under new ids: refused unless re-scoring is asked for.
    for node in range(5):
        src = workdir / f"resources/demo/tiny_camelyon17/slides/patient_000_node_{node}.tif"
        slide = f"patient_300_node_{node}"
        shutil.copy(src, new_dir / f"{slide}.tif")
        rows.append({"slide_id": slide, "patient_id": "patient_300", "path": f"{slide}.tif", "node": ""})  # from the id
    pd.DataFrame(rows).to_csv(new_dir / "sheet.csv", index=False)
    config["predict"] = {"sample_sheet": "new_slides/sheet.csv"}
    (workdir / "predict.yaml").write_text(yaml.safe_dump(config, sort_keys=False))  # same params, same order
    refused = run_snakemake(workdir, "predict", "-n", "--configfile", "predict.yaml", check=False)
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0
    assert (
        "new_slides/sheet.csv line 17: slide patient_300_node_0: slide file new_slides/patient_300_node_0.tif has "
        "the same content (size, first and last MiB) as training slide patient_000_node_0" in output
    )

    config["predict"]["allow_training_slides"] = True
    (workdir / "predict.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    checkpoints = sorted((workdir / R).glob("*/*/fold_*/checkpoint.pt"))
    before = {p: p.stat().st_mtime_ns for p in checkpoints}

    run_snakemake(workdir, "predict", "--cores", "2", "--configfile", "predict.yaml")

    assert {p: p.stat().st_mtime_ns for p in checkpoints} == before  # nothing retrained
    predict = workdir / R / "predict"
    slides = pd.read_csv(predict / "slide/hmf/predictions.csv")
    assert set(slides["id"]) <= {r["slide_id"] for r in rows} and len(slides) >= 15
    assert set(slides.loc[slides["in_sample"], "id"]) == {f"patient_300_node_{n}" for n in range(5)} & set(slides["id"])
    folds = pd.read_csv(predict / "slide/hmf/folds.csv")
    assert set(folds.loc[folds["in_sample"], "id"]) == set(slides.loc[slides["in_sample"], "id"])
    probs = [f"prob_{c}" for c in CAMELYON17_SLIDE]
    mean = folds.groupby("id")[probs].mean().loc[slides["id"]].to_numpy()
    assert np.allclose(mean, slides[probs].to_numpy(), atol=1e-6)
    assert np.allclose(
        folds.groupby("id")[probs].std(ddof=1).loc[slides["id"]].to_numpy(),
        slides[[f"std_{c}" for c in CAMELYON17_SLIDE]].to_numpy(),
        atol=1e-6,
    )
    for model in ("hmf_patient", "pn_rule"):
        patients = pd.read_csv(predict / f"patient/{model}/predictions.csv")
        assert sorted(patients["id"]) == sorted([*hidden, "patient_300"]) and (patients["folds"] == 2).all()
        assert patients.set_index("id")["in_sample"].to_dict() == {p: p == "patient_300" for p in patients["id"]}
    assert "predicted in-sample" in (workdir / "logs/tiny_camelyon17/predict/slide/hmf.log").read_text()

    submission = pd.read_csv(predict / "camelyon17_submission.csv", dtype=str)
    assert list(submission.columns) == ["patient", "stage"] and len(submission) == 4 * 6
    patient_rows = submission[submission["patient"].str.endswith(".zip")]
    node_rows = submission[submission["patient"].str.endswith(".tif")]
    assert all(re.fullmatch(r"patient_\d+\.zip", p) for p in patient_rows["patient"])
    assert all(re.fullmatch(r"patient_\d+_node_\d\.tif", p) for p in node_rows["patient"])
    assert set(patient_rows["stage"]) <= set(CAMELYON17_PATIENT) and set(node_rows["stage"]) <= set(CAMELYON17_SLIDE)
    # The stages come from the patient model with the best pooled out-of-fold kappa, which the log names.
    table = pd.read_csv(workdir / R / "tables/patient.csv").set_index("model")["kappa_quadratic_pooled"]
    best = max(["hmf_patient", "pn_rule"], key=lambda m: (table[m], m == "hmf_patient"))
    chosen = pd.read_csv(predict / f"patient/{best}/predictions.csv").set_index("id")["pred_label"]
    predicted = {p[: -len(".zip")]: s for p, s in zip(patient_rows["patient"], patient_rows["stage"])}
    assert predicted == chosen.to_dict()
    assert f"submission stages from {best}" in (workdir / "logs/tiny_camelyon17/predict/submission.log").read_text()
    # Every stage that contradicts the pN rule over its submitted node labels is listed beside the file.
    nodes = {p: list(node_rows.loc[node_rows["patient"].str.startswith(f"{p}_node_"), "stage"]) for p in predicted}
    conflicts = pd.read_csv(predict / "camelyon17_submission_conflicts.csv")
    assert set(conflicts["patient"]) == {p for p, s in predicted.items() if pn_stage(nodes[p]) != s}
    # Only the new patients are scored.
    ids = sorted(hidden)
    kappa = cohen_kappa_score(
        [hidden[p] for p in ids], [predicted[p] for p in ids], weights="quadratic", labels=CHALLENGE_STAGES
    )
    assert np.isfinite(kappa) and -1 <= kappa <= 1

    # A clash with a training slide id (up to case) fails before any job runs.
    bad = pd.DataFrame(rows)
    bad.loc[0, "slide_id"] = "PATIENT_000_node_0"
    bad.to_csv(new_dir / "sheet.csv", index=False)
    proc = run_snakemake(workdir, "predict", "-n", "--configfile", "predict.yaml", check=False)
    assert proc.returncode != 0 and "also in the training sample sheet" in proc.stdout + proc.stderr


def _patient_checkpoints(tmp_path, n_folds, emb_dim):
    """``n_folds`` meanpool patient checkpoints with random weights, and their models."""
    from hmf.models import build_patient_model
    from hmf.training.checkpoints import PatientCheckpoint, write_checkpoint

    models, paths = [], []
    for k in range(n_folds):
        torch.manual_seed(10 + k)
        model = build_patient_model("meanpool", emb_dim, len(CAMELYON17_PATIENT), {}).eval()
        paths.append(tmp_path / f"patient_fold_{k}.pt")
        write_checkpoint(
            paths[-1],
            PatientCheckpoint("meanpool", model.state_dict(), emb_dim, CAMELYON17_PATIENT, {"model": {}}, 0),
        )
        models.append(model)
    return models, paths


def test_cross_fitted_predict_averages_each_folds_inner_models(tmp_path):
    """Cross-fitted patient inputs: fold k's patient model predicts from each of fold k's inner
    slide models' embeddings; its probabilities are averaged over them, then over the folds."""
    from hmf.training.slide_embeddings import write_slide_embeddings

    slides = [f"patient_{p}_node_{n}" for p in (100, 101) for n in range(5)]
    write_unlabelled_sheet(tmp_path / "sheet.csv", slides)
    models, checkpoints = _patient_checkpoints(tmp_path, n_folds=2, emb_dim=6)
    generator = torch.Generator().manual_seed(0)
    inner = []  # per fold: embeddings (J=3, S, E)
    for k in range(2):
        blocks = torch.randn(3, len(slides), 6, generator=generator)
        write_slide_embeddings(
            tmp_path / f"inner_{k}.pt", slides, blocks, torch.full((3, 10, 4), 0.25), CAMELYON17_SLIDE
        )
        inner.append(blocks)
    files = [tmp_path / f"inner_{k}.pt" for k in range(2)]
    frame = predict_patients(
        "meanpool",
        TASK,
        tmp_path / "sheet.csv",
        None,
        checkpoints,
        tmp_path / "p.csv",
        tmp_path / "f.csv",
        inner_embeddings=files,
    )
    probs = [f"prob_{c}" for c in CAMELYON17_PATIENT]
    folds = pd.read_csv(tmp_path / "f.csv")
    for k, model in enumerate(models):
        for p, patient in enumerate(("patient_100", "patient_101")):
            rows = slice(5 * p, 5 * p + 5)
            with torch.inference_mode():
                expected = torch.stack(
                    [
                        torch.softmax(
                            model(slide_embeddings=inner[k][j, rows], node_index=torch.arange(5))["logits"], -1
                        )
                        for j in range(3)
                    ]
                ).mean(0)
            got = folds[(folds["fold"] == k) & (folds["id"] == patient)][probs].to_numpy()[0]
            assert np.allclose(got, expected.numpy(), atol=1e-6)
    assert np.allclose(frame[probs].to_numpy(), folds.groupby("id")[probs].mean().loc[frame["id"]].to_numpy())

    # One inner file per patient checkpoint; the aggregators read no inner embeddings.
    with pytest.raises(ValueError, match="2 patient checkpoints but inner slide embeddings of 1 folds"):
        predict_patients(
            "meanpool",
            TASK,
            tmp_path / "sheet.csv",
            None,
            checkpoints,
            tmp_path / "p.csv",
            tmp_path / "f.csv",
            inner_embeddings=files[:1],
        )
    with pytest.raises(ValueError, match="pn_rule aggregates slide predictions"):
        predict_patients(
            "pn_rule",
            TASK,
            tmp_path / "sheet.csv",
            None,
            [],
            tmp_path / "p.csv",
            tmp_path / "f.csv",
            inner_embeddings=files,
        )


def test_in_sample_predict_reads_its_own_folds_block(tmp_path):
    """In-sample patient inputs: fold k's patient model reads block k of the outer fold models'
    embeddings (and only that block)."""
    slides = [f"patient_{p}_node_{n}" for p in (100, 101) for n in range(5)]
    write_unlabelled_sheet(tmp_path / "sheet.csv", slides)
    models, checkpoints = _patient_checkpoints(tmp_path, n_folds=2, emb_dim=6)
    embeddings = torch.randn(2, len(slides), 6, generator=torch.Generator().manual_seed(1))
    torch.save(
        {
            "slide_ids": slides,
            "embeddings": embeddings,
            "probs": torch.full((2, 10, 4), 0.25),
            "classes": list(CAMELYON17_SLIDE),
        },
        tmp_path / "emb.pt",
    )
    predict_patients(
        "meanpool",
        TASK,
        tmp_path / "sheet.csv",
        tmp_path / "emb.pt",
        checkpoints,
        tmp_path / "p.csv",
        tmp_path / "f.csv",
    )
    folds = pd.read_csv(tmp_path / "f.csv")
    probs = [f"prob_{c}" for c in CAMELYON17_PATIENT]
    for k, model in enumerate(models):
        with torch.inference_mode():
            expected = torch.softmax(
                model(slide_embeddings=embeddings[k, 5:], node_index=torch.arange(5))["logits"], -1
            )
        got = folds[(folds["fold"] == k) & (folds["id"] == "patient_101")][probs].to_numpy()[0]
        assert np.allclose(got, expected.numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="1 patient checkpoints but slide embeddings of 2 folds"):
        predict_patients(
            "meanpool",
            TASK,
            tmp_path / "sheet.csv",
            tmp_path / "emb.pt",
            checkpoints[:1],
            tmp_path / "p.csv",
            tmp_path / "f.csv",
        )
