"""Whether two finished runs of the same config computed the same numbers (a refactor's check).

Compares two ``results/<name>`` folders, e.g. of the demo at two commits:

- every ``predictions.csv`` and ``metrics.json`` of the slide and patient models, byte for byte;
- the split files, byte for byte;
- every dataset of the feature and patch files (values, and the datasets' attributes but for
  timings), so that file-level stamps (version, settings digest) do not count;
- the slide models' embeddings files: slide ids, embeddings, probabilities and classes;
- the result and comparison tables cell by cell on the columns and rows both have (a newer
  version may add columns).

    .venv/bin/python benchmarks/compare_runs.py /tmp/old/results/demo_camelyon17 results/demo_camelyon17

Prints one line per kind of file and exits 1 when a number differs.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch

TIMINGS = {"seconds"}  # attributes that record how long a step took, not what it computed


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pairs(a: Path, b: Path, pattern: str) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Files of ``pattern`` in both folders, and those in only one."""
    left = {p.relative_to(a) for p in a.glob(pattern)}
    right = {p.relative_to(b) for p in b.glob(pattern)}
    return [(a / p, b / p) for p in sorted(left & right)], sorted(str(p) for p in left ^ right)


def _h5_differences(x: Path, y: Path) -> list[str]:
    with h5py.File(x) as fx, h5py.File(y) as fy:
        if sorted(fx) != sorted(fy):
            return [f"datasets {sorted(fx)} against {sorted(fy)}"]
        found = []
        for name in fx:
            if not np.array_equal(fx[name][()], fy[name][()]):
                found.append(f"dataset {name}")
            ax, ay = dict(fx[name].attrs), dict(fy[name].attrs)
            for key in (set(ax) | set(ay)) - TIMINGS:
                if str(ax.get(key)) != str(ay.get(key)):
                    found.append(f"attribute {name}.{key}")
        return found


def _embeddings_differ(x: Path, y: Path) -> bool:
    ex, ey = torch.load(x, weights_only=False), torch.load(y, weights_only=False)
    for key in ("slide_ids", "embeddings", "probs", "classes"):
        vx, vy = ex[key], ey[key]
        if not (torch.equal(vx, vy) if torch.is_tensor(vx) else vx == vy):
            return True
    return False


def _table_differences(x: Path, y: Path) -> tuple[int, list[str]]:
    keys = ["model", "metric"] if x.name.endswith("_comparison.csv") else ["model"]
    tx, ty = pd.read_csv(x).set_index(keys), pd.read_csv(y).set_index(keys)
    columns = [c for c in tx.columns if c in ty.columns]
    rows = [r for r in tx.index if r in ty.index]
    found = [
        f"{r} {c}: {tx.at[r, c]} / {ty.at[r, c]}" for r in rows for c in columns if str(tx.at[r, c]) != str(ty.at[r, c])
    ]
    return len(rows) * len(columns), found


def main() -> int:
    a, b = Path(sys.argv[1]), Path(sys.argv[2])
    failed = False
    for pattern in ("*/*/fold_*/predictions.csv", "*/*/fold_*/metrics.json", "splits/fold_*.csv"):
        pairs, alone = _pairs(a, b, pattern)
        differ = [str(x.relative_to(a)) for x, y in pairs if _digest(x) != _digest(y)]
        failed |= bool(differ or alone)
        print(
            f"{pattern}: {len(pairs)} in both, {len(pairs) - len(differ)} byte-identical; "
            f"differ {differ[:5]}; in one only {alone[:5]}"
        )
    for pattern in ("features/*/h5_files/*.h5", "patches/*.h5"):
        pairs, alone = _pairs(a, b, pattern)
        differ = {str(x.relative_to(a)): d for x, y in pairs if (d := _h5_differences(x, y))}
        failed |= bool(differ or alone)
        print(
            f"{pattern}: {len(pairs)} in both, {len(pairs) - len(differ)} with equal datasets; "
            f"differ {dict(list(differ.items())[:3])}"
        )
    pairs, alone = _pairs(a, b, "slide/*/fold_*/embeddings.pt")
    differ = [str(x.relative_to(a)) for x, y in pairs if _embeddings_differ(x, y)]
    failed |= bool(differ or alone)
    print(f"slide embeddings: {len(pairs)} in both, {len(pairs) - len(differ)} equal; differ {differ[:5]}")
    for x, y in _pairs(a, b, "tables/*.csv")[0]:
        cells, differ = _table_differences(x, y)
        failed |= bool(differ)
        added = sorted(set(pd.read_csv(y).columns) - set(pd.read_csv(x).columns))
        print(
            f"tables/{x.name}: {cells} common cells, {len(differ)} differ {differ[:3]}; "
            f"columns only in the second: {len(added)}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
