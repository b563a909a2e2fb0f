"""The checkpoint and slide-embeddings files: one module each writes and reads them."""

from __future__ import annotations

import pytest
import torch

from hmf.models import build_patient_model, build_slide_model
from hmf.training.checkpoints import (
    CheckpointError,
    PatientCheckpoint,
    SlideCheckpoint,
    load_patient_model,
    load_slide_model,
    read_checkpoint,
    write_checkpoint,
)
from hmf.training.slide_embeddings import read_slide_embeddings, write_slide_embeddings

CLASSES = ("negative", "itc", "micro", "macro")
SLIDE_KEYS = [
    "model",
    "state_dict",
    "in_dim",
    "n_classes",
    "classes",
    "text_dim",
    "params",
    "best_epoch",
    "feature_mean",
    "feature_std",
    "best_score",
    "provenance",  # hmf.provenance.stamp of the params
]


def _slide_checkpoint(model, mean=None, std=None) -> SlideCheckpoint:
    return SlideCheckpoint(
        model="abmil",
        state_dict=model.state_dict(),
        in_dim=6,
        n_classes=len(CLASSES),
        classes=CLASSES,
        text_dim=None,
        params={"model": {}, "fit": {"seed": 0}},
        best_epoch=2,
        feature_mean=mean,
        feature_std=std,
        best_score=0.5,
    )


def test_slide_checkpoint_round_trip_rebuilds_the_model(tmp_path):
    torch.manual_seed(0)
    model = build_slide_model("abmil", 6, len(CLASSES), {}).eval()
    mean, std = torch.arange(6.0), torch.full((6,), 2.0)
    path = tmp_path / "checkpoint.pt"
    write_checkpoint(path, _slide_checkpoint(model, mean, std))

    saved = torch.load(path, weights_only=True)  # a plain dict, the keys as the workflow has always written
    assert list(saved) == SLIDE_KEYS and saved["classes"] == list(CLASSES) and saved["n_classes"] == 4

    rebuilt, ckpt = load_slide_model(path, CLASSES)
    features = torch.randn(5, 6)
    assert not rebuilt.training
    with torch.inference_mode():
        assert torch.equal(rebuilt(features=features)["logits"], model(features=features)["logits"])
    assert torch.allclose(ckpt.standardise(features), (features - mean) / std)
    assert ckpt.best_epoch == 2 and ckpt.classes == CLASSES


def test_checkpoint_of_other_classes_or_kind_is_refused(tmp_path):
    model = build_slide_model("abmil", 6, len(CLASSES), {})
    path = tmp_path / "checkpoint.pt"
    write_checkpoint(path, _slide_checkpoint(model))
    with pytest.raises(CheckpointError, match=r"checkpoint.pt: classes \['negative', 'itc', 'micro', 'macro'\] differ"):
        load_slide_model(path, ["a", "b"])
    with pytest.raises(CheckpointError, match=r"lacks key\(s\) \['emb_dim'\]; expected a patient checkpoint"):
        read_checkpoint(path, PatientCheckpoint)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_slide_model(tmp_path / "nope.pt")


def test_checkpoint_without_weights_is_refused(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"model": "hmf"}, bad)
    with pytest.raises(CheckpointError, match="bad.pt lacks key"):
        load_slide_model(bad)


def test_patient_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_patient_model("hmf_patient", 8, 5, {}).eval()
    path = tmp_path / "checkpoint.pt"
    classes = ("pN0", "pN0(i+)", "pN1mi", "pN1", "pN2")
    write_checkpoint(path, PatientCheckpoint("hmf_patient", model.state_dict(), 8, classes, {"model": {}}, 3))
    assert list(torch.load(path, weights_only=True)) == [
        "model",
        "state_dict",
        "emb_dim",
        "classes",
        "params",
        "best_epoch",
        "provenance",
    ]
    rebuilt, ckpt = load_patient_model(path, classes)
    slides = torch.randn(3, 8)
    with torch.inference_mode():
        assert torch.equal(rebuilt(slide_embeddings=slides)["logits"], model(slide_embeddings=slides)["logits"])
    assert ckpt.emb_dim == 8


def test_slide_embeddings_round_trip_and_checks(tmp_path):
    path = tmp_path / "embeddings.pt"
    probs = torch.softmax(torch.randn(3, 4), -1)
    write_slide_embeddings(path, ["a", "b", "c"], torch.randn(3, 5).numpy(), probs, CLASSES, model="abmil")
    saved = torch.load(path, weights_only=True)
    assert list(saved) == ["slide_ids", "embeddings", "probs", "classes", "model", "provenance"]
    assert saved["embeddings"].dtype == torch.float32
    read = read_slide_embeddings(path)
    assert read.row_of() == {"a": 0, "b": 1, "c": 2} and read.model == "abmil" and read.source is None
    assert torch.equal(read.probs, probs)

    # per-fold files of the predict target: a leading folds axis, no model name
    write_slide_embeddings(path, ["a", "b"], torch.zeros(2, 2, 5), torch.full((2, 2, 4), 0.25), CLASSES)
    assert read_slide_embeddings(path).embeddings.shape == (2, 2, 5)

    with pytest.raises(ValueError, match=r"embeddings.pt: 3 slide ids, 4 classes, embeddings \(2, 5\)"):
        write_slide_embeddings(path, ["a", "b", "c"], torch.zeros(2, 5), torch.zeros(2, 4), CLASSES)
    torch.save({"slide_ids": ["a"], "embeddings": torch.zeros(1, 5)}, tmp_path / "old.pt")
    with pytest.raises(ValueError, match=r"old.pt lacks key\(s\) \['probs', 'classes'\]"):
        read_slide_embeddings(tmp_path / "old.pt")
