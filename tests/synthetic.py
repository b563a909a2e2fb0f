"""A small synthetic feature cohort for training tests: CLAM-layout h5 files whose patch
features carry a class signal, a sample sheet, a split file and a random text bank."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch

from hmf.tasks import CAMELYON17_SLIDE, pn_stage

NODE_PATTERNS = [
    ["negative"] * 5,
    ["itc", "negative", "negative", "negative", "negative"],
    ["micro", "negative", "itc", "negative", "negative"],
    ["macro", "micro", "negative", "negative", "negative"],
    ["macro", "macro", "micro", "macro", "negative"],
]


def make_cohort(root: Path, n_patients: int = 10, dim: int = 16, seed: int = 0, splits=None) -> dict:
    """Write features, a sample sheet, one split file and a text bank under ``root``."""
    rng = np.random.default_rng(seed)
    feats_dir = root / "features"
    (feats_dir / "h5_files").mkdir(parents=True, exist_ok=True)
    rows = []
    centres = rng.normal(size=(len(CAMELYON17_SLIDE), dim)) * 2.0
    for p in range(n_patients):
        nodes = NODE_PATTERNS[p % len(NODE_PATTERNS)]
        patient = f"patient_{p:03d}"
        for node, label in enumerate(nodes):
            slide = f"{patient}_node_{node}"
            n = int(rng.integers(4, 12))
            features = rng.normal(size=(n, dim)).astype(np.float32)
            features[: max(1, n // 3)] += centres[CAMELYON17_SLIDE.index(label)]
            coords = np.stack(np.meshgrid(np.arange(n) * 256, [0]), -1).reshape(-1, 2)[:n].astype(np.int64)
            with h5py.File(feats_dir / "h5_files" / f"{slide}.h5", "w") as fh:
                fh["features"] = features
                fh["coords"] = coords
            rows.append(
                {
                    "slide_id": slide,
                    "patient_id": patient,
                    "path": f"{slide}.tif",
                    "slide_label": label,
                    "patient_label": pn_stage(nodes),
                    "node": node,
                    "mpp": "",
                }
            )
    sheet = pd.DataFrame(rows)
    sheet_csv = root / "sample_sheet.csv"
    sheet.to_csv(sheet_csv, index=False)
    patients = sorted(sheet["patient_id"].unique())
    if splits is None:
        # test and validation patients with different node patterns (patient i has pattern i % 5)
        splits = {p: ("test" if i in (1, 7) else "val" if i in (3, 5) else "train") for i, p in enumerate(patients)}
    split_csv = root / "fold_0.csv"
    pd.DataFrame({"patient_id": list(splits), "split": list(splits.values())}).to_csv(split_csv, index=False)
    text = torch.randn(3 * len(CAMELYON17_SLIDE), 24)
    bank = {
        "prompts": [f"description {i}" for i in range(len(text))],
        "classes": [c for c in CAMELYON17_SLIDE for _ in range(3)],
        "class_names": list(CAMELYON17_SLIDE),
        "embeddings": text,
        "encoder": "random",
        "dim": 24,
    }
    bank_path = root / "text_bank.pt"
    torch.save(bank, bank_path)
    return {"sheet": sheet_csv, "split": split_csv, "features": feats_dir, "text": bank_path, "frame": sheet}
