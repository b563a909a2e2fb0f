"""Planning time and memory of the workflow at 10^3-10^5 slides, and the CPU the main Snakemake
process uses while a local run waits for its jobs.

Planning (``plan``): for each size N a synthetic generic cohort of N slides (copies of one small
pyramidal TIFF, each with its own trailing bytes, so every path is a distinct, readable slide
file), a TCGA-BRCA task with 3 slide and 2 patient models on k = 5 folds (cross-fitted
patient inputs, 3 inner folds), ``preprocessing.slides_per_job`` and ``features.slides_per_job``
from ``--slides-per-job`` (slides per segmentation and per extraction job), and
``snakemake -n`` of the default target. Printed per size: wall time, peak resident memory of the
Snakemake process (its rusage from wait4) and the number of jobs planned.

Local run (``run``): N synthetic slides (default 100), each its own small TIFF with a tissue
blob, and ``snakemake --cores 2 features`` (segmentation, patching and feature extraction, CPU,
random encoder weights) from a clean results folder. Printed: wall time and the CPU time of the
main Snakemake process alone (not its jobs), also as % of one core over the run.

    .venv/bin/python benchmarks/bench_planning.py plan [--sizes 1000,10000,100000] [--workdir DIR]
    .venv/bin/python benchmarks/bench_planning.py run [--slides 100] [--cores 2] [--workdir DIR]

Extra Snakemake options follow ``--`` (e.g. ``-- --max-jobs-per-timespan 100/1s``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
MPP = 0.5
# Runs snakemake in this process and writes, when it exits, the process's own CPU seconds (all
# its threads, none of its jobs) and its main thread's seconds on a CPU and runnable but waiting
# for one (Linux schedstat; their sum is what the thread asked for, which on a loaded machine is
# more than it got) to $HMF_BENCH_CPU.
MAIN_CPU_WRAPPER = """\
import atexit, os, resource, sys
def _report():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    try:
        with open("/proc/thread-self/schedstat") as fh:
            on_cpu, waiting = (int(v) / 1e9 for v in fh.read().split()[:2])
    except OSError:
        on_cpu = waiting = float("nan")
    with open(os.environ["HMF_BENCH_CPU"], "w") as fh:
        fh.write(f"{usage.ru_utime + usage.ru_stime} {on_cpu} {waiting}\\n")
atexit.register(_report)
from snakemake.cli import main
sys.argv[0] = "snakemake"
main()
"""


def slide_image(seed: int, side: int = 1024) -> np.ndarray:
    """White background with one stained, textured blob covering about half the slide."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side]
    centre = side / 2 + rng.uniform(-side / 16, side / 16, 2)
    radius = side * rng.uniform(0.3, 0.4)
    inside = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius**2
    rgb = np.full((side, side, 3), 240, np.uint8)
    noise = rng.integers(-25, 25, (side, side, 1))
    tissue = np.clip(np.array([200, 110, 170]) + noise, 0, 255).astype(np.uint8)
    rgb[inside] = tissue[inside]
    return rgb


def write_cohort(folder: Path, n: int, distinct: bool) -> Path:
    """N slides under folder/slides and a generic sample sheet; returns the sheet. With
    ``distinct`` False the slides are copies of one 256 x 256 slide, each followed by its own
    slide id (which TIFF readers ignore): quick to write, and distinct files (planning only)."""
    from hmf.demo.writer import write_pyramid_tiff

    slides = folder / "slides"
    slides.mkdir(parents=True, exist_ok=True)
    template = slides / "template.tif"
    if not distinct and not template.exists():
        write_pyramid_tiff(template, slide_image(0, side=256), MPP, downsamples=(1,))
    head = template.read_bytes() if not distinct else b""
    rows = ["slide_id,patient_id,path,patient_label,mpp"]
    for i in range(n):
        slide_id = f"S{i:06d}"
        path = slides / f"{slide_id}.tif"
        if not path.exists():
            if distinct:
                write_pyramid_tiff(path, slide_image(i), MPP)
            else:
                path.write_bytes(head + slide_id.encode())
        rows.append(f"{slide_id},P{i:06d},{path},{('IDC', 'ILC')[i % 2]},{MPP}")
    sheet = folder / f"sheet_{n}.csv"
    sheet.write_text("\n".join(rows) + "\n")
    return sheet


def write_config(folder: Path, sheet: Path, name: str, slides_per_job: int = 1) -> Path:
    config = {
        "dataset": {"name": name, "task": "tcga_brca", "format": "generic", "sample_sheet": str(sheet)},
        "preprocessing": {
            "preset": "tcga",
            "slides_per_job": slides_per_job,
            "segmentation": {"a_t": 1, "a_h": 1},
            "patching": {"mode": "level", "patch_level": 0, "patch_size": 256, "step_size": 256},
        },
        "features": {
            "encoder": "resnet50_trunc",
            "weights": "random",
            "device": "cpu",
            "slides_per_job": slides_per_job,
        },
        "text": {"source": "bank", "encoder": "minilm"},
        "splits": {"k": 5, "val_fraction": 0.2, "seed": 0},
        "models": {"slide": ["hmf", "abmil", "meanpool"], "patient": ["hmf_patient", "meanpool"]},
    }
    path = folder / f"config_{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_measured(cmd: list[str], cwd: Path, env: dict | None = None, log: Path | None = None):
    """(wall s, CPU s, peak RSS GB of the process tree's largest process, return code) of one
    command. CPU seconds (user + system, the command and the children it waited for) are the
    figure to compare on a shared machine, where the wall time follows the load."""
    out = open(log, "w") if log else subprocess.DEVNULL
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if log:
        out.close()
    cpu = usage.ru_utime + usage.ru_stime
    return wall, cpu, usage.ru_maxrss / 2**20, os.waitstatus_to_exitcode(status)


def plan(args, extra: list[str]) -> None:
    work = Path(args.workdir or tempfile.mkdtemp(prefix="hmf-plan-"))
    print(
        f"cohorts in {work}; slides per segmentation and extraction job {args.slides_per_job}; "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    print(f"{'slides':>8} {'jobs':>8} {'wall s':>8} {'CPU s':>8} {'peak GB':>8}")
    for n in [int(s) for s in args.sizes.split(",")]:
        sheet = write_cohort(work, n, distinct=False)
        config = write_config(work, sheet, f"plan{n}", args.slides_per_job)
        log = work / f"plan_{n}.log"
        cmd = [str(SNAKEMAKE), "-s", str(ROOT / "Snakefile"), "-d", str(work), "--configfile", str(config)]
        cmd += ["-n", "--quiet", "rules", *extra]
        wall, cpu, peak, rc = run_measured(cmd, work, log=log)
        text = log.read_text(errors="replace")
        match = re.search(r"^total\s+(\d+)", text, re.M)
        jobs = match.group(1) if match else "?"
        status = "" if rc == 0 else f"  FAILED ({rc}), see {log}"
        load = os.getloadavg()[0]
        print(f"{n:>8} {jobs:>8} {wall:>8.1f} {cpu:>8.1f} {peak:>8.2f}  load {load:.2f}{status}", flush=True)


def run(args, extra: list[str]) -> None:
    work = Path(args.workdir or tempfile.mkdtemp(prefix="hmf-run-"))
    sheet = write_cohort(work, args.slides, distinct=True)
    config = write_config(work, sheet, f"run{args.slides}")
    shutil.rmtree(work / "results" / f"run{args.slides}", ignore_errors=True)
    shutil.rmtree(work / ".snakemake", ignore_errors=True)
    cpu_file = work / "main_cpu.txt"
    env = dict(os.environ, HMF_BENCH_CPU=str(cpu_file))
    cmd = [sys.executable, "-c", MAIN_CPU_WRAPPER, "-s", str(ROOT / "Snakefile"), "-d", str(work)]
    cmd += ["--configfile", str(config), "--cores", str(args.cores), args.target, *extra]
    log = work / "run.log"
    print(f"local run in {work} (log {log}); load average {os.getloadavg()[0]:.2f}", flush=True)
    wall, _, _, rc = run_measured(cmd, work, env=env, log=log)
    if rc != 0:
        sys.exit(f"snakemake failed ({rc}); see {log}")
    cpu, on_cpu, waiting = (float(v) for v in cpu_file.read_text().split())
    print(
        f"{args.slides} slides, --cores {args.cores}, target {args.target}: wall {wall:.0f} s, "
        f"main process CPU {cpu:.1f} s = {100 * cpu / wall:.1f} % of one core; its main thread "
        f"runnable {100 * (on_cpu + waiting) / wall:.1f} % of the run ({on_cpu:.1f} s on a CPU, "
        f"{waiting:.1f} s waiting for one); load average {os.getloadavg()[0]:.2f}"
    )


def main() -> None:
    argv = sys.argv[1:]
    extra = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1 :]
        argv = argv[: argv.index("--")]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("plan", help="snakemake -n at each size")
    p.add_argument("--sizes", default="1000,10000,100000")
    p.add_argument(
        "--slides-per-job",
        type=int,
        default=1,
        help="preprocessing.slides_per_job and features.slides_per_job: slides per segmentation and extraction job",
    )
    p.add_argument("--workdir", help="folder for the cohorts (kept; default: a new temporary folder)")
    r = sub.add_parser("run", help="a local run; CPU of the main process")
    r.add_argument("--slides", type=int, default=100)
    r.add_argument("--cores", type=int, default=2)
    r.add_argument("--target", default="features")
    r.add_argument("--workdir", help="folder for the cohort and results (default: a new temporary folder)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    {"plan": plan, "run": run}[args.mode](args, extra)


if __name__ == "__main__":
    main()
