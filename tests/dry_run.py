"""Every job a Snakemake dry run would run, recorded by wrapping its dry-run executor: rule,
wildcards, named inputs, params, whether it is a local rule, threads and resources (the jobs
of a group one by one)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

RECORDER = """
import json, sys
import snakemake.executors.dryrun as dryrun

jobs = []
run_job = dryrun.Executor.run_job


def files(value):
    return [str(value)] if isinstance(value, str) else [str(f) for f in value]


def plain(value):
    return value if isinstance(value, (int, float, str)) else str(value)


def record(self, job):
    for single in job.jobs if job.is_group() else [job]:  # a group job: each of its jobs
        jobs.append(
            {
                "rule": single.rule.name,
                "wildcards": dict(single.wildcards.items()),
                "input": {key: files(value) for key, value in single.input.items()},
                "params": {key: value for key, value in single.params.items()},
                # Declared in localrules (every job is local to the local executor itself).
                "local": single.rule.name in single.rule.workflow._localrules,
                "threads": single.threads,
                "resources": {k: plain(v) for k, v in single.resources.items() if not k.startswith("_")},
            }
        )
    return run_job(self, job)


dryrun.Executor.run_job = record
from snakemake.cli import main

try:
    main([*sys.argv[2:], "-n", "--quiet", "all"])  # targets first: --quiet takes the words after it
finally:
    with open(sys.argv[1], "w") as fh:
        json.dump(jobs, fh, default=repr)
"""


def record_jobs(workdir: Path, *args: str) -> list[dict]:
    """The jobs of ``snakemake -n <args>`` run in ``workdir`` (a copy of the workflow)."""
    (workdir / "record.py").write_text(RECORDER)
    out = workdir / "jobs.json"
    proc = subprocess.run(
        [sys.executable, "record.py", str(out), *args], cwd=workdir, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return json.loads(out.read_text())
