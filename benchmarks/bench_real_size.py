"""Training at real size: a synthetic feature cohort with real bag sizes, one fold of every
slide model trained on it, and the peak memory of the training job as the cohort doubles.

    python benchmarks/bench_real_size.py                      # 100 and 200 slides, every slide model
    python benchmarks/bench_real_size.py --models hmf abmil --slides 50

The cohort: ``--slides`` x 2 feature files in CLAM's h5 layout (features float32, coords on a
256 px grid), bag sizes log-normal with median ``--median`` patches, capped at ``--max``;
the first slide of each cohort has exactly ``--max`` patches, so both cohorts share their
largest bag. The small cohort is the first half of the large one. Random features: the
figures are about time and memory, not accuracy.

Per model and cohort, a fresh process runs ``hmf.training.slide.train_slide_fold`` as the
``train_slide`` job does: streaming standardisation over the training slides, one epoch over
``--train`` training slides (the largest bag among them) and ``--val`` validation slides,
then one prediction pass over every slide of the cohort (the embeddings the patient models
need). It prints the job's wall time, its peak resident memory (getrusage of the process)
and the ratio of the two cohorts' peaks. Per-bag step and inference times at N = 10^3, 10^4,
10^5 come from ``benchmarks/bench_models.py`` (run with ``--per-bag``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SLIDE_MODELS = [
    "hmf",
    "meanpool",
    "maxpool",
    "abmil",
    "gatmil",
    "dsmil",
    "transmil",
    "dtfd_maxs",
    "dtfd_maxmins",
    "dtfd_afs",
    "acmil",
]


def bag_sizes(n_slides: int, median: int, maximum: int, seed: int = 0) -> list[int]:
    """Log-normal bag sizes with the given median, at most ``maximum``, the first one ``maximum``.

    sigma is chosen so that about 1 slide in 100 reaches the cap (the 99th percentile is
    ``maximum``), as in a CAMELYON17 cohort patched at level 0 (median 2*10^4, maximum 10^5).
    """
    rng = np.random.default_rng(seed)
    sigma = np.log(maximum / median) / 2.326
    sizes = np.minimum(np.rint(median * np.exp(sigma * rng.standard_normal(n_slides))), maximum).astype(int)
    sizes = np.maximum(sizes, 16)
    sizes[0] = maximum
    return sizes.tolist()


def write_cohort(folder: Path, sizes: list[int], dim: int, seed: int = 0) -> None:
    """h5_files/<slide>.h5 (features, coords), a sample sheet, a split and a text bank."""
    import h5py
    import pandas as pd
    import torch

    rng = np.random.default_rng(seed)
    (folder / "h5_files").mkdir(parents=True, exist_ok=True)
    classes = ["negative", "itc", "micro", "macro"]
    rows = []
    for i, n in enumerate(sizes):
        slide = f"slide_{i:04d}"
        path = folder / "h5_files" / f"{slide}.h5"
        if not path.exists():
            side = int(np.ceil(np.sqrt(n)))
            grid = np.stack(np.divmod(np.arange(n), side), 1)[:, ::-1] * 256
            tmp = path.with_suffix(".part")
            with h5py.File(tmp, "w") as fh:
                data = fh.create_dataset("features", (n, dim), dtype="float32")
                for start in range(0, n, 8192):  # written in chunks: never the whole bag in memory
                    stop = min(start + 8192, n)
                    data[start:stop] = rng.standard_normal((stop - start, dim), dtype=np.float32)
                fh["coords"] = grid.astype(np.int64)
            tmp.rename(path)
        rows.append(
            {
                "slide_id": slide,
                "patient_id": f"patient_{i:04d}",
                "path": "",
                "slide_label": classes[i % 4],
                "patient_label": "",
                "node": "",
                "mpp": "",
            }
        )
    pd.DataFrame(rows).to_csv(folder / "sample_sheet.csv", index=False)
    bank = {
        "prompts": [f"description {i}" for i in range(24)],
        "classes": [c for c in classes for _ in range(6)],
        "class_names": classes,
        "embeddings": torch.randn(24, 384),
        "encoder": "random",
        "dim": 384,
    }
    torch.save(bank, folder / "text_bank.pt")


def write_split(folder: Path, n_slides: int, n_train: int, n_val: int, name: str) -> Path:
    """Training: the largest bag (slide 0) and the next ``n_train - 1``; then validation; the rest test."""
    import pandas as pd

    split = ["train" if i < n_train else "val" if i < n_train + n_val else "test" for i in range(n_slides)]
    path = folder / f"{name}.csv"
    pd.DataFrame({"patient_id": [f"patient_{i:04d}" for i in range(n_slides)], "split": split}).to_csv(
        path, index=False
    )
    return path


def train_job(
    folder: Path, n_slides: int, model: str, split: Path, out: Path, threads: int, cache_mb: float, bf16: str | None
) -> dict:
    """One training job in this (fresh) process; returns wall time and peak RSS."""
    import pandas as pd
    import torch

    from hmf.tasks import get_task
    from hmf.training.slide import SlideOutputs, train_slide_fold

    torch.set_num_threads(threads)
    sheet = pd.read_csv(folder / "sample_sheet.csv", dtype=str, keep_default_na=False).iloc[:n_slides]
    sheet_csv = out / "sample_sheet.csv"
    out.mkdir(parents=True, exist_ok=True)
    sheet.to_csv(sheet_csv, index=False)
    files = {s: folder / "h5_files" / f"{s}.h5" for s in sheet["slide_id"]}
    outputs = SlideOutputs(
        *(str(out / n) for n in ("checkpoint.pt", "train_log.csv", "predictions.csv", "embeddings.pt"))
    )
    training = {"max_epochs": 1, "patience": 5, "seed": 0, "cache_mb": cache_mb}
    if bf16 is not None:
        training["bf16"] = bf16
    started = time.perf_counter()
    train_slide_fold(
        model,
        get_task("camelyon17"),
        str(sheet_csv),
        str(split),
        files,
        outputs,
        training=training,
        text_bank=str(folder / "text_bank.pt") if model == "hmf" else None,
    )
    return {
        "seconds": time.perf_counter() - started,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_child(args: argparse.Namespace, model: str, n_slides: int, split: Path) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        model,
        "--child-slides",
        str(n_slides),
        "--child-split",
        str(split),
        "--cohort",
        str(args.cohort),
        "--threads",
        str(args.threads),
        "--cache-mb",
        str(args.cache_mb),
    ]
    if args.bf16 is not None:
        cmd += ["--bf16", args.bf16]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1][:200]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohort", type=Path, default=ROOT / "benchmarks" / "real_size_cohort")
    parser.add_argument("--slides", type=int, default=100, help="slides of the first cohort (the second has twice)")
    parser.add_argument("--median", type=int, default=20000)
    parser.add_argument("--max", type=int, default=100000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--train", type=int, default=8)
    parser.add_argument("--val", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=SLIDE_MODELS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-mb", type=float, default=1024)
    parser.add_argument(
        "--bf16",
        choices=["cuda", "auto", "always", "false"],
        default=None,
        help="training.bf16 for the jobs (default: the schema's)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-slides", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-split", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        bf16 = args.bf16
        out = args.cohort / "runs" / f"{args.child}_{args.child_slides}"
        print(
            json.dumps(
                train_job(
                    args.cohort, args.child_slides, args.child, args.child_split, out, args.threads, args.cache_mb, bf16
                )
            )
        )
        return

    sizes = bag_sizes(2 * args.slides, args.median, args.max)
    started = time.perf_counter()
    write_cohort(args.cohort, sizes, args.dim)
    small, large = sizes[: args.slides], sizes
    print(f"cohort {args.cohort}: written or found in {time.perf_counter() - started:.0f} s")
    for name, cohort in (("A", small), ("B", large)):
        print(
            f"  cohort {name}: {len(cohort)} slides, {sum(cohort):,} patches "
            f"({sum(cohort) * args.dim * 4 / 2**30:.1f} GiB of float32 features), median bag "
            f"{int(np.median(cohort)):,}, largest {max(cohort):,}"
        )
    print(
        f"jobs: {args.train} training + {args.val} validation slides for one epoch, then a prediction over every "
        f"slide; {args.threads} threads; bag cache {args.cache_mb:g} MB; bf16 {args.bf16 or 'default'}"
    )
    splits = {n: write_split(args.cohort, n, args.train, args.val, f"split_{n}") for n in (len(small), len(large))}

    header = f"{'model':<13} {'A: s':>8} {'A: peak MB':>11} {'B: s':>8} {'B: peak MB':>11} {'B/A peak':>9}"
    print(header)
    print("-" * len(header))
    for model in args.models:
        a = run_child(args, model, len(small), splits[len(small)])
        b = run_child(args, model, len(large), splits[len(large)])
        if "error" in a or "error" in b:
            print(f"{model:<13} failed: {a.get('error') or b.get('error')}")
            continue
        print(
            f"{model:<13} {a['seconds']:>8.0f} {a['peak_rss_mb']:>11.0f} {b['seconds']:>8.0f} "
            f"{b['peak_rss_mb']:>11.0f} {b['peak_rss_mb'] / a['peak_rss_mb']:>9.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
