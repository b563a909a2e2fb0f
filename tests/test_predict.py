"""Predictions for new, unlabelled patients: the sheet of new slides, the fold ensemble, the
CAMELYON17 submission file, and the `predict` target on the tiny run."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from sklearn.metrics import cohen_kappa_score

from hmf.data.sample_sheet import SampleSheetError
from hmf.predict import camelyon17_submission, load_predict_sheet, predict_patients
from hmf.tasks import CAMELYON17_PATIENT, CAMELYON17_SLIDE, get_task, pn_stage

TASK = get_task("camelyon17")
R = "results/tiny_camelyon17"
# The challenge's stage list, in its order (Bandi et al. 2019); the kappa is computed over it.
CHALLENGE_STAGES = ["pN0", "pN0(i+)", "pN1mi", "pN1", "pN2"]


def write_sheet(folder, rows):
    for row in rows:
        (folder / row["path"]).write_bytes(b"slide")
    path = folder / "new.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_predict_sheet_checks(tmp_path):
    rows = [
        {"slide_id": f"patient_100_node_{n}", "patient_id": "patient_100", "path": f"n{n}.tif", "node": n}
        for n in range(2)
    ]
    sheet = load_predict_sheet(write_sheet(tmp_path, rows))
    assert list(sheet["slide_id"]) == ["patient_100_node_0", "patient_100_node_1"]
    assert (sheet["patient_label"] == "").all() and list(sheet["node"]) == [0, 1]
    with pytest.raises(SampleSheetError, match="also in the training sample sheet"):
        load_predict_sheet(tmp_path / "new.csv", known_slide_ids=["patient_100_node_1"])
    rows[1]["slide_id"] = rows[0]["slide_id"]
    with pytest.raises(SampleSheetError, match="duplicate slide id"):
        load_predict_sheet(write_sheet(tmp_path, rows))
    rows[1].update(slide_id="../x")
    with pytest.raises(SampleSheetError, match="not a safe file name"):
        load_predict_sheet(write_sheet(tmp_path, rows))
    rows[1].update(slide_id="b", path="missing.tif")
    pd.DataFrame(rows).to_csv(tmp_path / "new.csv", index=False)
    with pytest.raises(SampleSheetError, match="line 3: slide b: file not found"):
        load_predict_sheet(tmp_path / "new.csv")


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
        tmp_path / "sheet.csv", tmp_path / "p.csv", tmp_path / "s.csv", tmp_path / "submission.csv"
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
        camelyon17_submission(tmp_path / "sheet.csv", tmp_path / "p.csv", tmp_path / "s.csv", tmp_path / "o.csv")


def test_submission_names_a_predictions_file_without_labels(tmp_path):
    sheet = pd.DataFrame(
        {"slide_id": ["a"], "patient_id": ["patient_1"], "path": "x", "slide_label": "", "patient_label": ""}
    )
    sheet.assign(node=[0], mpp="").to_csv(tmp_path / "sheet.csv", index=False)
    pd.DataFrame({"id": ["patient_1"], "stage": ["pN0"]}).to_csv(tmp_path / "p.csv", index=False)
    pd.DataFrame({"id": ["a"], "pred_label": ["negative"]}).to_csv(tmp_path / "s.csv", index=False)
    with pytest.raises(ValueError, match=r"predictions file .*p.csv: missing column\(s\) \['pred_label'\]"):
        camelyon17_submission(tmp_path / "sheet.csv", tmp_path / "p.csv", tmp_path / "s.csv", tmp_path / "o.csv")


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
    """Three tiny patients' slides, copied under new ids and without labels, go through the
    `predict` target; the submission file is read back and scored by scikit-learn."""
    from conftest import run_snakemake

    workdir = tmp_path / "wf"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    truth = pd.read_csv(workdir / "resources/demo/tiny_camelyon17/stage_labels.csv")
    stage_of = dict(zip(truth["patient"], truth["stage"]))
    new_dir = workdir / "new_slides"
    new_dir.mkdir()
    rows, hidden = [], {}
    for old, new in ((0, 200), (3, 203), (7, 207)):
        hidden[f"patient_{new}"] = stage_of[f"patient_{old:03d}.zip"]
        for node in range(5):
            src = workdir / f"resources/demo/tiny_camelyon17/slides/patient_{old:03d}_node_{node}.tif"
            shutil.copy(src, new_dir / f"patient_{new}_node_{node}.tif")
            rows.append(
                {
                    "slide_id": f"patient_{new}_node_{node}",
                    "patient_id": f"patient_{new}",
                    "path": f"patient_{new}_node_{node}.tif",
                    "node": node,
                }
            )
    pd.DataFrame(rows).to_csv(new_dir / "sheet.csv", index=False)
    config = yaml.safe_load((workdir / "tests/configs/tiny.yaml").read_text())
    config["predict"] = {"sample_sheet": "new_slides/sheet.csv"}
    (workdir / "predict.yaml").write_text(yaml.safe_dump(config, sort_keys=False))  # same params, same order
    checkpoints = sorted((workdir / R).glob("*/*/fold_*/checkpoint.pt"))
    before = {p: p.stat().st_mtime_ns for p in checkpoints}

    run_snakemake(workdir, "predict", "--cores", "2", "--configfile", "predict.yaml")

    assert {p: p.stat().st_mtime_ns for p in checkpoints} == before  # nothing retrained
    predict = workdir / R / "predict"
    slides = pd.read_csv(predict / "slide/hmf/predictions.csv")
    assert set(slides["id"]) <= {r["slide_id"] for r in rows} and len(slides) >= 10
    folds = pd.read_csv(predict / "slide/hmf/folds.csv")
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
        assert sorted(patients["id"]) == sorted(hidden) and (patients["folds"] == 2).all()

    submission = pd.read_csv(predict / "camelyon17_submission.csv", dtype=str)
    assert list(submission.columns) == ["patient", "stage"] and len(submission) == 3 * 6
    patient_rows = submission[submission["patient"].str.endswith(".zip")]
    node_rows = submission[submission["patient"].str.endswith(".tif")]
    assert all(re.fullmatch(r"patient_\d+\.zip", p) for p in patient_rows["patient"])
    assert all(re.fullmatch(r"patient_\d+_node_\d\.tif", p) for p in node_rows["patient"])
    assert set(patient_rows["stage"]) <= set(CAMELYON17_PATIENT) and set(node_rows["stage"]) <= set(CAMELYON17_SLIDE)
    hmf_patient = pd.read_csv(predict / "patient/hmf_patient/predictions.csv").set_index("id")["pred_label"]
    predicted = {p[: -len(".zip")]: s for p, s in zip(patient_rows["patient"], patient_rows["stage"])}
    assert predicted == hmf_patient.to_dict()  # the default submission model: the reference patient model
    ids = sorted(hidden)
    kappa = cohen_kappa_score(
        [hidden[p] for p in ids], [predicted[p] for p in ids], weights="quadratic", labels=CHALLENGE_STAGES
    )
    assert np.isfinite(kappa) and -1 <= kappa <= 1

    # A clash with a training slide id fails before any job runs.
    bad = pd.DataFrame(rows)
    bad.loc[0, "slide_id"] = "patient_000_node_0"
    bad.to_csv(new_dir / "sheet.csv", index=False)
    proc = run_snakemake(workdir, "predict", "-n", "--configfile", "predict.yaml", check=False)
    assert proc.returncode != 0 and "also in the training sample sheet" in proc.stdout + proc.stderr
