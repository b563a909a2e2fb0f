"""How the patient model's inputs are produced, on a synthetic CAMELYON17-shaped cohort: pooled
patient-level quadratic kappa of four designs, with every slide model seeded alike or the
inner ones seeded apart from the outer one.

The cohort: 100 patients x 5 lymph-node slides; a slide is a bag of 24 patch features (32-d
Gaussian noise) of which 0, 1, 3 or 10 carry a tumour signal (negative, ITC, micro, macro),
the patient's label is the pN stage of its node labels (hmf.tasks.pn_stage). The slide model
is an attention-MIL network (Ilse et al. 2018; 32-d embedding, 4 slide classes); the patient
model is a linear (multinomial logistic) head on the mean and the max of the patient's slide
embeddings. Per repeat: stratified 5-fold outer splits (hmf.data.splits.make_splits), 3 inner
folds per outer fold (hmf.training.cross_fitting.inner_splits, the workflow's); slide models
train on their split's training and validation patients for a fixed number of epochs.

Designs (each test patient predicted once per repeat; kappa pooled over the 100 patients,
then averaged over the repeats):

- in-sample: the outer slide model embeds every slide (its own training slides included);
- cross-fitted as built: training patients embedded by the inner model that held them out,
  test patients by the outer model (the design the workflow had before);
- cross-fitted, aligned: training patients as above, each test patient embedded by every inner
  model and the patient model's probabilities averaged over them (the workflow's design);
- stacking: the patient head on the out-of-fold slide probabilities instead of the embeddings
  (mean and max over nodes), test patients from every inner model, averaged.

Seeds: "same seed" initialises every slide model alike (the workflow's one training.seed);
"seeded apart" gives each inner model its own seed (the outer models keep theirs, so the
in-sample column is the same in both). The linear CKA of the outer and inner models'
embeddings of the test slides is printed too (hmf.training.cross_fitting.linear_cka).

    .venv/bin/python benchmarks/bench_cross_fitting.py --repeats 5
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import cohen_kappa_score
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from hmf.data.splits import make_splits  # noqa: E402
from hmf.tasks import CAMELYON17_PATIENT, CAMELYON17_SLIDE, pn_stage  # noqa: E402
from hmf.training.cross_fitting import inner_splits, linear_cka  # noqa: E402

NODES, PATCHES, FEATURES, EMBEDDING = 5, 24, 32, 32
TUMOUR_PATCHES = {"negative": 0, "itc": 1, "micro": 3, "macro": 10}
# Node-label patterns drawn per patient: every pN stage is reached.
STAGE_PATTERNS = {
    "pN0": [[]],
    "pN0(i+)": [["itc"], ["itc", "itc"]],
    "pN1mi": [["micro"], ["micro", "itc"], ["micro", "micro"]],
    "pN1": [["macro"], ["macro", "micro"], ["macro", "macro", "micro"]],
    "pN2": [["macro"] * 4, ["macro", "macro", "micro", "micro"], ["macro"] * 5],
}
DESIGNS = ("in-sample", "cross-fitted as built", "cross-fitted, aligned (J-average)", "stacking on slide probabilities")


def make_cohort(n_patients: int, seed: int):
    """Patch bags (slides, patches, features), slide labels, and the sample sheet frame."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=FEATURES)
    signal *= 3.0 / np.linalg.norm(signal)
    stages = list(STAGE_PATTERNS)
    bags, slide_labels, rows = [], [], []
    for p in range(n_patients):
        patterns = STAGE_PATTERNS[stages[p % len(stages)]]
        pattern = patterns[rng.integers(len(patterns))]
        nodes = list(pattern) + ["negative"] * (NODES - len(pattern))
        nodes = [nodes[i] for i in rng.permutation(NODES)]
        stage = pn_stage(nodes)
        patient = f"patient_{p:03d}"
        for node, label in enumerate(nodes):
            bag = rng.normal(size=(PATCHES, FEATURES))
            bag[: TUMOUR_PATCHES[label]] += signal + 0.5 * rng.normal(size=(TUMOUR_PATCHES[label], FEATURES))
            bags.append(bag[rng.permutation(PATCHES)])
            slide_labels.append(CAMELYON17_SLIDE.index(label))
            rows.append({"slide_id": f"{patient}_node_{node}", "patient_id": patient, "patient_label": stage})
    sheet = pd.DataFrame(rows)
    return torch.tensor(np.stack(bags), dtype=torch.float32), torch.tensor(slide_labels), sheet


class AttentionMIL(torch.nn.Module):
    """Gated-free attention MIL: patch encoder, attention pooling, linear slide classifier."""

    def __init__(self):
        super().__init__()
        self.encode = torch.nn.Sequential(torch.nn.Linear(FEATURES, EMBEDDING), torch.nn.ReLU())
        self.attention = torch.nn.Sequential(torch.nn.Linear(EMBEDDING, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
        self.classify = torch.nn.Linear(EMBEDDING, len(CAMELYON17_SLIDE))

    def forward(self, bags):  # (B, N, D)
        h = self.encode(bags)
        a = torch.softmax(self.attention(h), dim=1)
        embedding = (a * h).sum(1)
        return embedding, self.classify(embedding)


def train_slide_model(bags, labels, rows, seed: int, epochs: int) -> AttentionMIL:
    torch.manual_seed(seed)
    model = AttentionMIL()
    optimiser = torch.optim.Adam(model.parameters(), lr=5e-3, weight_decay=1e-4)
    counts = torch.bincount(labels[rows], minlength=len(CAMELYON17_SLIDE)).float()
    weights = torch.where(counts > 0, counts.sum() / (len(counts) * counts.clamp(min=1)), torch.zeros_like(counts))
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights)
    x, y = bags[rows], labels[rows]
    for _ in range(epochs):
        optimiser.zero_grad()
        loss = loss_fn(model(x)[1], y)
        loss.backward()
        optimiser.step()
    return model.eval()


def embed(model, bags):
    with torch.inference_mode():
        embedding, logits = model(bags)
    return embedding.numpy(), torch.softmax(logits, -1).numpy()


def patient_features(per_slide: np.ndarray, slide_rows: dict[str, list[int]], patients) -> np.ndarray:
    """Mean and max over the patient's node rows."""
    return np.stack(
        [np.concatenate([per_slide[slide_rows[p]].mean(0), per_slide[slide_rows[p]].max(0)]) for p in patients]
    )


def fit_head(x, y):
    scaler = StandardScaler().fit(x)
    head = LogisticRegression(C=0.5, max_iter=2000).fit(scaler.transform(x), y)
    return lambda z: _proba(head, scaler.transform(z))


def _proba(head, z):
    """Probabilities over every pN stage (a stage absent from the training patients gets 0)."""
    out = np.zeros((len(z), len(CAMELYON17_PATIENT)))
    out[:, head.classes_] = head.predict_proba(z)
    return out


def run_repeat(repeat: int, args) -> dict:
    bags, labels, sheet = make_cohort(args.patients, seed=repeat)
    slide_rows = {p: list(g.index) for p, g in sheet.groupby("patient_id")}
    stage_of = dict(zip(sheet["patient_id"], sheet["patient_label"]))
    y_of = {p: CAMELYON17_PATIENT.index(s) for p, s in stage_of.items()}
    folds = make_splits(sheet, k=args.outer, val_fraction=0.2, seed=repeat)
    truth = {regime: [] for regime in ("same", "apart")}
    preds = {regime: {d: [] for d in DESIGNS} for regime in truth}
    cka = {regime: [] for regime in truth}
    for k, fold in enumerate(folds):
        outer = dict(zip(fold["patient_id"], fold["split"]))
        test = sorted(p for p, s in outer.items() if s == "test")
        training = sorted(p for p, s in outer.items() if s != "test")
        rows = [r for p in training for r in slide_rows[p]]
        base = 1000 * repeat + 10 * k
        outer_model = train_slide_model(bags, labels, rows, base, args.epochs)
        outer_emb, _ = embed(outer_model, bags)
        test_slides = [r for p in test for r in slide_rows[p]]
        inner = inner_splits(sheet, outer, args.inner, 0.2, seed=repeat)
        for regime in truth:
            held_emb = np.zeros_like(outer_emb)
            held_prob = np.zeros((len(bags), len(CAMELYON17_SLIDE)))
            inner_out = []
            for j, frame in enumerate(inner):
                parts = dict(zip(frame["patient_id"], frame["split"]))
                held = [p for p in training if parts[p] == "test"]
                fit_rows = [r for p in training if parts[p] != "test" for r in slide_rows[p]]
                seed = base if regime == "same" else base + 1 + j
                emb, prob = embed(train_slide_model(bags, labels, fit_rows, seed, args.epochs), bags)
                for p in held:
                    held_emb[slide_rows[p]], held_prob[slide_rows[p]] = emb[slide_rows[p]], prob[slide_rows[p]]
                inner_out.append((emb, prob))
                cka[regime].append(linear_cka(outer_emb[test_slides], emb[test_slides]))
            y = np.array([y_of[p] for p in training])
            head_in = fit_head(patient_features(outer_emb, slide_rows, training), y)
            head_cf = fit_head(patient_features(held_emb, slide_rows, training), y)
            head_st = fit_head(patient_features(held_prob, slide_rows, training), y)
            preds[regime]["in-sample"].append(head_in(patient_features(outer_emb, slide_rows, test)))
            preds[regime]["cross-fitted as built"].append(head_cf(patient_features(outer_emb, slide_rows, test)))
            preds[regime]["cross-fitted, aligned (J-average)"].append(
                np.mean([head_cf(patient_features(e, slide_rows, test)) for e, _ in inner_out], axis=0)
            )
            preds[regime]["stacking on slide probabilities"].append(
                np.mean([head_st(patient_features(p, slide_rows, test)) for _, p in inner_out], axis=0)
            )
            truth[regime].extend(y_of[p] for p in test)
    out = {}
    for regime in truth:
        for design in DESIGNS:
            predicted = np.concatenate(preds[regime][design]).argmax(1)
            out[(regime, design)] = cohen_kappa_score(
                truth[regime], predicted, weights="quadratic", labels=list(range(len(CAMELYON17_PATIENT)))
            )
        out[(regime, "cka")] = float(np.mean(cka[regime]))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--outer", type=int, default=5, help="outer folds")
    parser.add_argument("--inner", type=int, default=3, help="inner folds per outer fold")
    parser.add_argument("--epochs", type=int, default=150, help="slide-model epochs (full batch)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    results = [run_repeat(r, args) for r in range(args.repeats)]
    mean = {key: float(np.mean([r[key] for r in results])) for key in results[0]}
    print(
        f"{args.patients} patients x {NODES} nodes, {args.outer} outer x {args.inner} inner folds, "
        f"pooled patient kappa (quadratic), mean over {args.repeats} repeats "
        f"({time.perf_counter() - start:.0f} s)\n"
    )
    print("| design | inner models seeded apart | same seed everywhere |")
    print("|---|---|---|")
    for design in DESIGNS:
        print(f"| {design} | {mean[('apart', design)]:.3f} | {mean[('same', design)]:.3f} |")
    print(
        f"| linear CKA, outer vs inner embeddings of the test slides | {mean[('apart', 'cka')]:.3f} | "
        f"{mean[('same', 'cka')]:.3f} |"
    )


if __name__ == "__main__":
    main()
