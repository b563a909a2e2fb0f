"""Patient-input designs compared on a finished cross-fitted run, without training a slide model.

Reads a results folder made with ``models.patient_inputs: cross_fitted`` (each fold's outer
``embeddings.pt`` and ``embeddings_cross_fitted.pt`` of ``models.patient_source``), retrains
each trained patient model on every fold under each design with the run's own settings
(``training`` and ``models.patient_params`` of the config), and prints the pooled patient
kappa per repeat: its mean and range. Nothing of the run is changed (the retrained models go
to ``--out``).

Designs:

- ``in_sample``: the outer slide model's embeddings of every slide (the workflow's in_sample);
- ``cross_fitted``: the workflow's aligned cross-fitting (out-of-fold inner embeddings for
  training patients, test patients from every inner model, probabilities averaged);
- ``stacked``: the same, on the slide models' log class probabilities instead of embeddings
  (the patient model stacked on out-of-fold slide predictions); a stacked ``hmf_patient`` uses
  one attention head per probability;
- ``stacked_outer``: out-of-fold log probabilities for training patients, the outer model's
  for test patients (classic stacking: probabilities share one space across slide models).

    .venv/bin/python benchmarks/bench_patient_inputs.py --results results/demo_camelyon17 \\
        --configfile config/config.yaml --configfile /tmp/demo_r3.yaml
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from snakemake.utils import update_config

from hmf.config import validate_config
from hmf.evaluation.metrics import scores
from hmf.models.names import model_info
from hmf.tasks import get_task
from hmf.training.patient import train_patient_fold
from hmf.training.slide_embeddings import read_slide_embeddings, write_slide_embeddings

ROOT = Path(__file__).resolve().parents[1]
DESIGNS = ("in_sample", "cross_fitted", "stacked", "stacked_outer")


def _merged_config(paths: list[str]) -> dict:
    """The config files merged as Snakemake merges --configfile, filled and checked by the schema."""
    config: dict = {}
    for path in paths:
        update_config(config, yaml.safe_load(Path(path).read_text()) or {})
    return validate_config(config, ROOT / "config/schema/config.schema.yaml")


def _log_probs(probs: torch.Tensor) -> torch.Tensor:
    return torch.log(probs.float().clamp_min(1e-4))


def design_inputs(fold_dir: Path, design: str, out: Path) -> Path:
    """The embeddings file the patient model of ``design`` reads for one fold."""
    if design == "in_sample":
        return fold_dir / "embeddings.pt"
    if design == "cross_fitted":
        return fold_dir / "embeddings_cross_fitted.pt"
    cf = read_slide_embeddings(fold_dir / "embeddings_cross_fitted.pt")
    if design == "stacked":
        values = _log_probs(cf.probs)  # (J, S, C): one block per inner model
    else:
        outer = read_slide_embeddings(fold_dir / "embeddings.pt")
        if outer.slide_ids != cf.slide_ids:
            raise ValueError(f"{fold_dir}: the outer and cross-fitted files list other slides")
        values = _log_probs(cf.probs[0])
        each = [i for i, source in enumerate(cf.source) if source == "each_inner"]
        values[each] = _log_probs(outer.probs)[each]
    write_slide_embeddings(out, cf.slide_ids, values, values, cf.classes, model=cf.model)
    return out


def pooled_kappas(predictions: list[list[Path]], classes: tuple[str, ...]) -> list[float]:
    """Pooled quadratic kappa of each repeat (its folds' test predictions together)."""
    kappas = []
    for files in predictions:
        frame = pd.concat([pd.read_csv(f) for f in files])
        probs = frame[[f"prob_{c}" for c in classes]].to_numpy()
        truth = np.array([classes.index(label) for label in frame["true_label"]])
        kappas.append(float(scores(truth, probs.argmax(1), probs, len(classes), True)["kappa_quadratic"][0]))
    return kappas


def _kappa(truth: np.ndarray, probs: np.ndarray, n_classes: int) -> float:
    return float(scores(truth, probs.argmax(1), probs, n_classes, True)["kappa_quadratic"][0])


def slide_kappas(results: Path, source: str, folds: int, classes: tuple[str, ...]) -> dict[str, float]:
    """Mean over folds of the slide-level kappa on each fold's test slides: of the outer model,
    of one inner model (mean over the J), and of the inner models' probabilities averaged."""
    from hmf.data.sample_sheet import read_sample_sheet
    from hmf.data.splits import read_split

    sheet = read_sample_sheet(results / "sample_sheet.csv")
    label_of = dict(zip(sheet["slide_id"], sheet["slide_label"]))
    patient_of = dict(zip(sheet["slide_id"], sheet["patient_id"]))
    found: dict[str, list[float]] = {"outer": [], "one inner": [], "inner average": []}
    for fold in range(folds):
        outer = read_slide_embeddings(results / f"slide/{source}/fold_{fold}/embeddings.pt")
        cf = read_slide_embeddings(results / f"slide/{source}/fold_{fold}/embeddings_cross_fitted.pt")
        split = read_split(results / f"splits/fold_{fold}.csv")
        test = [i for i, s in enumerate(outer.slide_ids) if split.get(patient_of[s]) == "test"]
        truth = np.array([classes.index(label_of[outer.slide_ids[i]]) for i in test])

        inner = cf.probs.float().numpy()[:, test]
        found["outer"].append(_kappa(truth, outer.probs.float().numpy()[test], len(classes)))
        found["one inner"].append(float(np.mean([_kappa(truth, block, len(classes)) for block in inner])))
        found["inner average"].append(_kappa(truth, inner.mean(0), len(classes)))
    return {name: float(np.mean(values)) for name, values in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", required=True, help="a finished cross-fitted run's results/<name> folder")
    parser.add_argument("--configfile", action="append", required=True, help="the run's config file(s), in order")
    parser.add_argument("--designs", default=",".join(DESIGNS))
    parser.add_argument("--models", default=None, help="patient models (default: the config's trained ones)")
    parser.add_argument("--out", default=None, help="folder for the retrained models (default: a temporary one)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")

    config = _merged_config(args.configfile)
    results = Path(args.results)
    task = get_task(config["dataset"]["task"], config["dataset"].get("classes"))
    classes = tuple(task.classes("patient"))
    source = config["models"]["patient_source"]
    k, repeats = config["splits"]["k"], config["splits"]["repeats"]
    trained = [m for m in config["models"]["patient"] if model_info("patient", m).trained]
    models = args.models.split(",") if args.models else trained
    out = Path(args.out or tempfile.mkdtemp(prefix="hmf-patient-inputs-"))
    print(f"{results}: {repeats} repeat(s) x {k} folds, patient models on {source}'s slides; models in {out}")
    slide_classes = tuple(task.classes("slide"))
    if "slide" in task.ordinal:
        kappas = slide_kappas(results, source, k * repeats, slide_classes)
        print("slide kappa on the folds' test slides: " + ", ".join(f"{n} {v:.3f}" for n, v in kappas.items()))
    print(f"{'design':<14} {'model':<12} {'mean':>6}  range")
    for design in args.designs.split(","):
        for model in models:
            overrides = dict(config["models"]["patient_params"].get(model, {}))
            if model == "hmf_patient" and design.startswith("stacked"):
                overrides["model"] = {**overrides.get("model", {}), "heads": 1}
            per_repeat = []
            for r in range(repeats):
                files = []
                for fold in range(r * k, (r + 1) * k):
                    where = out / design / model / f"fold_{fold}"
                    where.mkdir(parents=True, exist_ok=True)
                    train_patient_fold(
                        model,
                        task,
                        str(results / "sample_sheet.csv"),
                        str(results / f"splits/fold_{fold}.csv"),
                        str(design_inputs(results / f"slide/{source}/fold_{fold}", design, where / "inputs.pt")),
                        str(where / "checkpoint.pt"),
                        str(where / "train_log.csv"),
                        str(where / "predictions.csv"),
                        overrides=overrides,
                        training=config["training"],
                    )
                    files.append(where / "predictions.csv")
                per_repeat.append(files)
            kappas = pooled_kappas(per_repeat, classes)
            print(f"{design:<14} {model:<12} {np.mean(kappas):>6.3f}  {min(kappas):.3f}-{max(kappas):.3f}", flush=True)


if __name__ == "__main__":
    main()
