"""Seconds to read and validate a synthetic sample sheet of 10^4 and 10^5 slides.

    .venv/bin/python benchmarks/bench_sheet.py [--rows 10000 100000] [--no-files]

A CAMELYON17-shaped generic sheet (5 nodes per patient, slide labels only, so every patient's
stage is derived by the pN rule) whose slides are empty sparse files of distinct sizes in a
temporary folder (real slides have distinct sizes, so the fingerprint check stats them and
hashes none). Prints, per size, the seconds to write the files (not part of validation), to read
the sheet (load_generic), to validate it without the file checks and with them: wall-clock, and
in brackets this process's CPU seconds (which other load on the machine does not inflate).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from hmf.data.sample_sheet import load_generic, validate_sample_sheet
from hmf.tasks import CAMELYON17_SLIDE, get_task


def synthetic_sheet(folder: Path, n_rows: int, files: bool = True, seed: int = 0) -> Path:
    """``folder/sheet.csv`` of ``n_rows`` slides (5 per patient) and, with ``files``, the slides."""
    rng = np.random.default_rng(seed)
    index = np.arange(n_rows)
    slides = [f"patient_{i // 5}_node_{i % 5}" for i in index]
    labels = np.array(CAMELYON17_SLIDE)[rng.choice(4, size=n_rows, p=[0.7, 0.1, 0.1, 0.1])]
    frame = pd.DataFrame(
        {
            "slide_id": slides,
            "patient_id": [f"patient_{i // 5}" for i in index],
            "path": [f"slides/{s}.tif" for s in slides],
            "slide_label": labels,
            "node": index % 5,
        }
    )
    if files:
        (folder / "slides").mkdir(parents=True, exist_ok=True)
        for i, path in zip(index, frame["path"]):
            with open(folder / path, "wb") as fh:
                os.truncate(fh.fileno(), 1_000_000 + int(i))  # sparse: no disk blocks
    sheet = folder / "sheet.csv"
    frame.to_csv(sheet, index=False)
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--no-files", action="store_true", help="skip the runs with slide files")
    args = parser.parse_args()
    task = get_task("camelyon17")
    print(f"{'rows':>8} {'write files s':>14} {'read s':>14} {'validate s':>14} {'+ files s':>14}")
    for n in args.rows:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            sheet = synthetic_sheet(Path(tmp), n, files=not args.no_files)
            written = time.perf_counter() - start
            frame, read = timed(load_generic, sheet)
            validated, no_files = timed(validate_sample_sheet, frame, task, check_files=False)
            assert len(validated) == n and (validated["patient_label"] != "").all()
            with_files = "-"
            if not args.no_files:
                with_files = timed(validate_sample_sheet, frame, task, check_files=True)[1]
            print(f"{n:>8} {written:>14.2f} {read:>14} {no_files:>14} {with_files:>14}", flush=True)


def timed(function, *args, **kwargs):
    """The result, and ``wall (cpu)`` seconds of the call."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    return result, f"{time.perf_counter() - wall:.2f} ({time.process_time() - cpu:.2f})"


if __name__ == "__main__":
    main()
