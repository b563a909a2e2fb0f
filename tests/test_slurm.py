"""The SLURM profile on a real single-node SLURM cluster (started and stopped by the test).

tests/slurm/setup.sh installs the Debian SLURM packages if needed and starts munged,
slurmctld and slurmd with 2 CPUs and 2 (placeholder) GPUs and no accounting database.
A small workflow with the project's GPU rule names then runs through
snakemake-executor-plugin-slurm using profiles/slurm, with only the machine-size values
(memory, runtime, threads) shrunk to fit the test node and the documented squeue status
switch turned on. Skipped only when not root or when the packages cannot be installed.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SLURM_DIR = ROOT / "tests" / "slurm"
WORKFLOW = SLURM_DIR / "workflow" / "Snakefile"
PROFILE = ROOT / "profiles" / "slurm" / "config.yaml"
GPU_RULES = ("extract_features", "train_slide", "train_patient")
SNAKEMAKE_TIMEOUT_S = 150


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """Start the test cluster; always stop it afterwards. Yields the client environment."""
    if os.geteuid() != 0:
        pytest.skip("the SLURM test starts slurmctld/slurmd and needs root")
    # One test cluster per machine at a time: the ports and /etc/slurm links are shared.
    machine_lock = open(Path(tempfile.gettempdir()) / "hmf-slurm-test.lock", "w")
    deadline = time.monotonic() + 600
    while True:
        try:
            fcntl.flock(machine_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            assert time.monotonic() < deadline, "another SLURM test cluster is still running"
            time.sleep(2)
    state_dir = tmp_path_factory.mktemp("slurm-state")
    env = dict(os.environ, HMF_SLURM_DIR=str(state_dir))
    try:
        proc = subprocess.run(["bash", str(SLURM_DIR / "setup.sh")], env=env, capture_output=True,
                              text=True, timeout=600)
        if proc.returncode == 3:
            pytest.skip(f"SLURM packages are missing and cannot be installed: {proc.stderr.strip()[-500:]}")
        assert proc.returncode == 0, f"setup.sh failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
        slurm_conf = proc.stdout.strip().splitlines()[-1].split("=", 1)[1]
        yield dict(env, SLURM_CONF=slurm_conf)
    finally:
        subprocess.run(["bash", str(SLURM_DIR / "stop.sh")], env=env, capture_output=True, timeout=120)
        machine_lock.close()


def _test_profile(folder: Path, prefix: str) -> Path:
    """profiles/slurm with the node-size values shrunk and squeue status for no accounting."""
    profile = yaml.safe_load(PROFILE.read_text())
    assert profile["executor"] == "slurm"
    for rule in GPU_RULES:  # the profile itself asks SLURM for exactly one GPU per GPU job
        assert profile["set-resources"][rule]["gpu"] == 1, rule
    profile["slurm-status-command"] = "squeue"
    profile["slurm-jobname-prefix"] = prefix
    profile["slurm-init-seconds-before-status-checks"] = 2
    profile["seconds-between-status-checks"] = 2
    profile["latency-wait"] = 10
    profile["default-resources"] = dict(profile["default-resources"], mem_mb=200, runtime=10)
    for rule in GPU_RULES:
        profile["set-resources"][rule].update(mem_mb=200, runtime=10)
    profile["set-threads"] = {rule: 1 for rule in profile["set-threads"]}
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(profile))
    return folder


def _run_env(cluster_env: dict, lock_dir: Path) -> dict:
    env = {k: v for k, v in cluster_env.items() if not k.startswith("SLURM_") or k == "SLURM_CONF"}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    env["HMF_FAKE_GPUS"] = "2"  # the placeholder cards behave as two visible GPUs
    env["HMF_GPU_LOCK_DIR"] = str(lock_dir)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def _scontrol_job(job_id: str, env: dict) -> str:
    return subprocess.run(["scontrol", "show", "job", job_id], env=env, capture_output=True,
                          text=True, timeout=30, check=True).stdout


def _failure_report(workdir: Path, proc) -> str:
    parts = [proc.stdout[-3000:], proc.stderr[-5000:]]
    for log in sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log")):
        parts.append(f"--- {log}\n{log.read_text()[-2000:]}")
    return "\n".join(parts)


def test_slurm_profile_runs_gpu_jobs_as_slurm_jobs_with_one_gpu_each(slurm_cluster, tmp_path):
    prefix = f"hmftest{uuid.uuid4().hex[:8]}"
    profile = _test_profile(tmp_path / "profile", prefix)
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = _run_env(slurm_cluster, tmp_path / "locks")
    assert shutil.which("sbatch", path=env["PATH"]), "sbatch is not on PATH"

    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(WORKFLOW), "--directory", str(workdir),
         "--workflow-profile", str(profile), "--config", "hold_s=5"],
        env=env, cwd=workdir, capture_output=True, text=True, timeout=SNAKEMAKE_TIMEOUT_S)
    assert proc.returncode == 0, _failure_report(workdir, proc)

    summary = json.loads((workdir / "summary.json").read_text())
    jobs = summary["jobs"]
    assert sorted(j["rule"] for j in jobs) == ["train_patient", "train_slide", "train_slide"]
    # The aggregation rule is a localrule: it ran in the submitting process, not in SLURM.
    assert summary["aggregate_slurm_job_id"] is None

    job_ids = [j["env"]["SLURM_JOB_ID"] for j in jobs]
    assert all(job_ids) and len(set(job_ids)) == len(jobs), job_ids
    for job in jobs:
        visible = job["env"]["CUDA_VISIBLE_DEVICES"]
        # exactly one GPU, handed over by SLURM; the claim inside the job used exactly it
        assert visible in ("0", "1"), job
        assert job["env"]["SLURM_STEP_GPUS"] == visible, job
        assert (job["device"], job["physical_id"], job["simulated"]) == ("cuda:0", visible, True), job
        # the lock folder is per SLURM job: it only arbitrates within the job
        assert Path(job["lock_path"]).parent.name == f"slurm-{job['env']['SLURM_JOB_ID']}"
        record = _scontrol_job(job["env"]["SLURM_JOB_ID"], env)
        assert "JobState=COMPLETED" in record, record
        assert f"JobName={prefix}_" in record, record
        assert "gpu:1" in record, record  # TresPerJob / gres request of one GPU
    assert {j["env"]["CUDA_VISIBLE_DEVICES"] for j in jobs} == {"0", "1"}

    # Jobs that ran at the same time were on different GPUs, and some did run together.
    overlapping = [(a, b) for i, a in enumerate(jobs) for b in jobs[i + 1:]
                   if a["started"] < b["finished"] and b["started"] < a["finished"]]
    assert overlapping, [(j["started"], j["finished"]) for j in jobs]
    for a, b in overlapping:
        assert a["env"]["CUDA_VISIBLE_DEVICES"] != b["env"]["CUDA_VISIBLE_DEVICES"], (a, b)
