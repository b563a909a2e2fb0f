"""A local run's scheduler (rules/scheduling.smk): no job rate limiter, whose re-evaluation
timers keep the main Snakemake process busy while jobs wait for cores."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMESPAN_S = 300

SNAKEFILE = """\
include: {scheduling!r}


rule all:
    input:
        expand("out/{{i}}.txt", i=range(4)),


rule one:
    output:
        "out/{{i}}.txt",
    shell:
        "sleep 0.5; touch {{output}}"
"""


def test_a_local_run_has_no_rate_limiter_timers(tmp_path):
    """Four jobs on one core wait for each other. With the rate limiter every scheduler pass
    that leaves a job waiting starts a timer for another pass a timespan later, and Snakemake
    exits only when those timers have fired: with a timespan of 300 s the run would last that
    long. Without it the run ends when its jobs do."""
    (tmp_path / "Snakefile").write_text(SNAKEFILE.format(scheduling=str(ROOT / "rules" / "scheduling.smk")))
    command = [str(Path(sys.executable).with_name("snakemake")), "--cores", "1", "--quiet", "all"]
    command += ["--max-jobs-per-timespan", f"1000/{TIMESPAN_S}s"]
    started = time.monotonic()
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=2 * TIMESPAN_S)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{i}.txt" for i in range(4)]
    assert elapsed < TIMESPAN_S / 2, f"the run lasted {elapsed:.0f} s: the scheduler's timers held it"
