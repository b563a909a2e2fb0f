"""bf16 training on the CPU (``training.bf16``): which precision each setting gives on which
device, and a trained fold whose predictions under CPU bf16 agree with fp32."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from synthetic import make_cohort

import hmf.precision as precision
import hmf.training.slide as slide_module
from hmf.precision import training_autocast
from hmf.tasks import get_task
from hmf.training.slide import SlideOutputs, train_slide_fold

CPU = torch.device("cpu")
# Largest difference of a predicted class probability between a fold trained and predicted in
# fp32 and the same fold in bf16 (measured on this cohort: 0.0009 for hmf, 0.0003 for meanpool).
PROB_TOLERANCE = 0.01


def precision_of(mode, device=CPU):
    with training_autocast(device, mode):
        return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else torch.float32


@pytest.fixture
def cpu_with_bf16(monkeypatch):
    monkeypatch.setattr(precision, "bf16_unsupported", lambda device: None)


@pytest.fixture
def cpu_without_bf16(monkeypatch):
    monkeypatch.setattr(precision, "bf16_unsupported", lambda device: "this CPU has no bf16 instructions")


def test_default_keeps_fp32_on_the_cpu(cpu_with_bf16):
    for mode in (True, "cuda", False, "false"):
        assert precision_of(mode) == torch.float32


def test_auto_and_always_use_bf16_on_a_cpu_that_has_it(cpu_with_bf16):
    assert precision_of("auto") == torch.bfloat16
    assert precision_of("always") == torch.bfloat16


def test_without_cpu_bf16_auto_falls_back_and_always_is_an_error(cpu_without_bf16):
    assert precision_of("auto") == torch.float32
    with pytest.raises(ValueError, match="training.bf16=always: this CPU has no bf16"):
        precision_of("always")


def test_unknown_setting_is_named():
    with pytest.raises(ValueError, match="training.bf16='fp16'"):
        precision_of("fp16")


# The checkpoint is selected on the validation loss: a discrete metric (F1 on 10 validation
# slides) can tie or flip between epochs under a change of precision and select another epoch.
TRAINING = {"max_epochs": 3, "patience": 10, "seed": 0, "monitor": "loss"}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return make_cohort(tmp_path_factory.mktemp("cohort"))


def _train(cohort, folder, model, bf16, monkeypatch) -> pd.DataFrame:
    # training.bf16 as the fold's FitConfig (hmf.training.hparams) carries it (the recipe's mixed_precision decides
    # whether a model takes part; here both models do).
    real_resolve = slide_module.resolve

    def resolve(*args, **kwargs):
        hp = real_resolve(*args, **kwargs)
        hp.fit.bf16 = bf16
        return hp

    monkeypatch.setattr(slide_module, "resolve", resolve)
    out = SlideOutputs(*(str(folder / n) for n in ("checkpoint.pt", "train_log.csv", "predictions.csv", "emb.pt")))
    train_slide_fold(
        model,
        get_task("camelyon17"),
        str(cohort["sheet"]),
        str(cohort["split"]),
        str(cohort["features"]),
        out,
        overrides={"model": {"dim": 64, "embed_dim": 128}} if model == "hmf" else None,
        training=TRAINING,
        text_bank=str(cohort["text"]) if model == "hmf" else None,
    )
    return pd.read_csv(out.predictions)


@pytest.mark.parametrize("model", ["hmf", "meanpool"])
def test_cpu_bf16_predictions_agree_with_fp32(cohort, tmp_path, monkeypatch, cpu_with_bf16, model):
    """The same fold trained and predicted in fp32 and under CPU bf16 autocast (the tiny config's
    models and widths, 3 epochs): class probabilities within PROB_TOLERANCE, and bf16 did run."""
    fp32 = _train(cohort, tmp_path / "fp32", model, "false", monkeypatch)
    bf16 = _train(cohort, tmp_path / "bf16", model, "always", monkeypatch)
    columns = [c for c in fp32.columns if c.startswith("prob_")]
    assert list(fp32["id"]) == list(bf16["id"])
    difference = np.abs(fp32[columns].to_numpy() - bf16[columns].to_numpy()).max()
    print(f"{model}: max |prob fp32 - prob bf16| = {difference:.4f}")
    assert difference < PROB_TOLERANCE
    assert difference > 0  # bf16 changed the arithmetic: the setting reached the training loop


def test_the_setting_reaches_the_models_that_train_in_bf16():
    from hmf.training.hparams import resolve

    assert resolve("slide", "hmf", None, {"bf16": "always"}).fit.bf16 == "always"
    assert resolve("slide", "hmf", None, {}).fit.bf16 == "cuda"
    assert resolve("slide", "meanpool", None, {"bf16": "always"}).fit.bf16 is False
