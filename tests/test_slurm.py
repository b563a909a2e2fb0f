"""The SLURM profile on a real single-node SLURM cluster (started and stopped by the test).

tests/slurm/setup.sh installs the Debian SLURM packages if needed and starts munged,
slurmctld and slurmd with 2 CPUs and 2 (placeholder) GPUs and no accounting database;
stop.sh stops them when the module's tests are done, whatever their outcome.

The project's workflow, copied to a temporary folder, runs the tiny TCGA configuration
through snakemake-executor-plugin-slurm with profiles/slurm (only the machine-size values
shrunk to fit the test node, the threads of the GPU rules at 1, and the documented squeue
status switch on). Every training job must have been a SLURM job of its own that SLURM gave
exactly one GPU, the claim inside the job must have taken that GPU, jobs training at the same
time must have held different GPUs, and the result tables and every predictions.csv must be
byte-identical to those of a plain local run of a second copy with the same thread counts.

The placeholder GPUs are announced to the jobs with HMF_FAKE_GPUS: claim_device() then
claims among the cards in SLURM's CUDA_VISIBLE_DEVICES, and the training computes on the CPU.
Skipped only when not root or when the packages cannot be installed.
"""

from __future__ import annotations

import fcntl
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from conftest import copy_workflow, run_snakemake

ROOT = Path(__file__).resolve().parents[1]
SLURM_DIR = ROOT / "tests" / "slurm"
PROFILE = ROOT / "profiles" / "slurm" / "config.yaml"
GPU_RULES = ("extract_features", "train_slide", "train_patient")
TINY_CONFIG = "tests/configs/tiny_tcga.yaml"
# patient "models" that aggregate slide predictions (rule aggregate_patient): no training
AGGREGATED_PATIENT_MODELS = {"pn_rule", "mean_prob"}
WORKFLOW_TIMEOUT_S = 1800  # generous: the machine may be shared
# Slides per SLURM job of the preprocess group (segmentation and patching) in the test: fewer
# than the tiny cohort's slides, so that it takes several such jobs.
SLIDES_PER_PREPROCESS_JOB = 3
# CPUs of the test node (tests/slurm/slurm.conf.in): the most one job may ask for.
NODE_CPUS = 2

SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+) \(log: (\S+?)\)")
CLAIMED = re.compile(
    r"^(\S+ \S+) INFO hmf\.devices: claimed (cuda:\d+) \(physical GPU (\S+?)(, simulated)?, "
    r"lock (\S+)\)",
    re.M,
)
RELEASED = re.compile(r"^(\S+ \S+) INFO hmf\.devices: released ", re.M)


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """Start the test cluster; always stop it afterwards. Yields the client environment."""
    if os.geteuid() != 0:
        pytest.skip("the SLURM test starts slurmctld/slurmd and needs root")
    # One test cluster per machine at a time: the ports and /etc/slurm links are shared.
    machine_lock = open(Path(tempfile.gettempdir()) / "hmf-slurm-test.lock", "w")
    deadline = time.monotonic() + 900
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
        proc = subprocess.run(
            ["bash", str(SLURM_DIR / "setup.sh")], env=env, capture_output=True, text=True, timeout=600
        )
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
    for rule in GPU_RULES:  # the rules ask for the GPU (none for a cpu device), not the profile
        assert "gpu" not in profile["set-resources"][rule], rule
    profile["slurm-status-command"] = "squeue"
    profile["slurm-jobname-prefix"] = prefix
    profile["slurm-init-seconds-before-status-checks"] = 2
    profile["seconds-between-status-checks"] = 2
    profile["latency-wait"] = 10
    profile["slurm-keep-successful-logs"] = True  # for the failure report
    profile["default-resources"] = dict(profile["default-resources"], mem_mb=500, runtime=15)
    # segmentation and patching of several slides per SLURM job, each job at most the node's size
    assert profile["group-components"]["preprocess"] > 1
    profile["group-components"] = {"preprocess": SLIDES_PER_PREPROCESS_JOB}
    profile["cores"] = NODE_CPUS
    for rule in GPU_RULES:
        profile["set-resources"][rule].update(mem_mb=500, runtime=15)
    # one thread per job: the local reference run uses the same, so the numbers can match
    profile["set-threads"] = {rule: 1 for rule in profile["set-threads"]}
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(profile))
    return folder


def _run_env(cluster_env: dict, lock_dir: Path) -> dict:
    env = {k: v for k, v in cluster_env.items() if not k.startswith("SLURM_") or k == "SLURM_CONF"}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["HMF_FAKE_GPUS"] = "2"  # the placeholder cards behave as two visible GPUs
    env["HMF_GPU_LOCK_DIR"] = str(lock_dir)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def _scontrol_job(job_id: str, env: dict) -> str:
    """The job's record with details (-d: the GPU indices it was given)."""
    return subprocess.run(
        ["scontrol", "-d", "show", "job", job_id], env=env, capture_output=True, text=True, timeout=30, check=True
    ).stdout


def _failure_report(workdir: Path, proc) -> str:
    parts = [proc.stdout[-3000:], proc.stderr[-6000:]]
    for log in sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log")):
        text = log.read_text(errors="replace")
        if "Error" in text or "Traceback" in text:
            parts.append(f"--- {log}\n{text[-2000:]}")
    return "\n".join(parts)


def _allocated_gpu_indices(record: str) -> list[str]:
    """GPU indices of a running job in ``scontrol -d`` output, e.g. ``GRES=gpu:1(IDX:1)``."""
    indices = []
    for spec in re.findall(r"GRES=\S*?gpu[^ ]*?\(IDX:([0-9,-]+)\)", record):
        for part in spec.split(","):
            lo, _, hi = part.partition("-")
            indices.extend(str(i) for i in range(int(lo), int(hi or lo) + 1))
    return indices


class GpuAllocationMonitor(threading.Thread):
    """Records the GPU indices SLURM gives each running job (scontrol drops them at the end)."""

    def __init__(self, env: dict, interval_s: float = 1.0):
        super().__init__(daemon=True)
        self.env, self.interval_s = env, interval_s
        self.allocations: dict[str, list[str]] = {}
        self.snapshots: list[dict[str, list[str]]] = []  # running job -> its GPUs, per poll
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            proc = subprocess.run(
                ["scontrol", "-d", "show", "job"], env=self.env, capture_output=True, text=True, timeout=30
            )
            running = {}
            for record in proc.stdout.split("\n\n"):
                job = re.search(r"JobId=(\d+)", record)
                if job and "JobState=RUNNING" in record and _allocated_gpu_indices(record):
                    running[job.group(1)] = _allocated_gpu_indices(record)
            self.allocations.update(running)
            self.snapshots.append(running)
            self._done.wait(self.interval_s)

    def stop(self) -> None:
        self._done.set()
        self.join(60)


def _log_time(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


# --- the project's tiny workflow --------------------------------------------------------


def _expected_training_jobs(workdir: Path) -> set[tuple[str, str, str]]:
    """(rule, model, fold) of every training job the tiny configuration asks for."""
    config = yaml.safe_load((workdir / TINY_CONFIG).read_text())
    folds = [str(k) for k in range(int(config["splits"]["k"]))]
    jobs = {("train_slide", m, f) for m in config["models"]["slide"] for f in folds}
    jobs |= {
        ("train_patient", m, f)
        for m in config["models"]["patient"]
        if m not in AGGREGATED_PATIENT_MODELS
        for f in folds
    }
    return jobs


def _training_claims(workdir: Path, dataset: str) -> dict[tuple[str, str, str], dict]:
    """What each training log says about its device claim, keyed by (rule, model, fold)."""
    claims = {}
    for level, rule in (("slide", "train_slide"), ("patient", "train_patient")):
        for log in sorted((workdir / "logs" / dataset / level).glob("*/fold_*.log")):
            if log.parent.name in AGGREGATED_PATIENT_MODELS:
                continue
            text = log.read_text()
            claimed = CLAIMED.findall(text)
            released = RELEASED.findall(text)
            assert len(claimed) == 1 and len(released) == 1, f"{log}: expected one claim and release:\n{text[-2000:]}"
            stamp, device, physical, simulated, lock = claimed[0]
            claims[(rule, log.parent.name, log.stem.removeprefix("fold_"))] = {
                "log": str(log),
                "device": device,
                "physical_id": physical,
                "simulated": bool(simulated),
                "lock_path": Path(lock),
                "claimed": _log_time(stamp),
                "released": _log_time(released[0]),
            }
    return claims


def _submissions(snakemake_output: str) -> dict[str, Path]:
    """SLURM job id -> the job's SLURM log, from Snakemake's 'submitted with SLURM jobid' lines."""
    return {job_id: Path(log) for job_id, log in SUBMITTED.findall(snakemake_output)}


def _prediction_files(workdir: Path, dataset: str) -> list[Path]:
    return sorted(p.relative_to(workdir) for p in (workdir / "results" / dataset).glob("*/*/fold_*/predictions.csv"))


def test_tiny_workflow_on_slurm_trains_on_one_gpu_per_job_and_matches_a_local_run(slurm_cluster, tmp_path):
    local = copy_workflow(tmp_path / "local")
    remote = copy_workflow(tmp_path / "slurm")
    dataset = yaml.safe_load((remote / TINY_CONFIG).read_text())["dataset"]["name"]
    # The demo dataset (the workflow's input) is generated once and given to both runs.
    run_snakemake(
        local,
        "--cores",
        "2",
        "--configfile",
        TINY_CONFIG,
        "--until",
        "demo_labels",
        "demo_slides_batch0",  # one batch: <= 16 slides
        timeout=WORKFLOW_TIMEOUT_S,
    )
    shutil.copytree(local / "resources" / "demo", remote / "resources" / "demo")

    # The local reference runs at the same time as the SLURM run (the machine is small).
    local_error: list[BaseException] = []

    def run_local():
        try:
            run_snakemake(
                local,
                "--cores",
                "2",
                "--configfile",
                TINY_CONFIG,
                "--set-threads",
                "train_slide=1",
                "train_patient=1",
                timeout=WORKFLOW_TIMEOUT_S,
            )
        except BaseException as exc:  # re-raised in the test's thread
            local_error.append(exc)

    local_thread = threading.Thread(target=run_local, daemon=True)
    local_thread.start()
    try:
        prefix = f"hmftest{uuid.uuid4().hex[:8]}"
        profile = _test_profile(tmp_path / "profile", prefix)
        env = _run_env(slurm_cluster, tmp_path / "locks")
        assert shutil.which("sbatch", path=env["PATH"]), "sbatch is not on PATH"
        started = time.monotonic()
        monitor = GpuAllocationMonitor(env)
        monitor.start()
        try:
            proc = subprocess.run(
                [
                    str(Path(sys.executable).with_name("snakemake")),
                    "--workflow-profile",
                    str(profile),
                    "--configfile",
                    TINY_CONFIG,
                ],
                env=env,
                cwd=remote,
                capture_output=True,
                text=True,
                timeout=WORKFLOW_TIMEOUT_S,
            )
        finally:
            monitor.stop()
        assert proc.returncode == 0, _failure_report(remote, proc)
        print(f"SLURM run: {time.monotonic() - started:.0f} s")
        output = proc.stdout + proc.stderr

        # --- every training job was a SLURM job of its own with one GPU ---------------------
        submitted = _submissions(output)
        rules_submitted = {
            job_id: log.relative_to(remote / ".snakemake" / "slurm_logs").parts[0] for job_id, log in submitted.items()
        }
        # Tables, evaluation, sample sheet and splits are localrules: never submitted.
        for local_rule in ("table", "evaluate", "sample_sheet", "splits"):
            assert f"rule_{local_rule}" not in rules_submitted.values(), rules_submitted

        expected = _expected_training_jobs(remote)
        claims = _training_claims(remote, dataset)
        assert set(claims) == expected, (sorted(claims), sorted(expected))
        job_ids = {}
        for (rule, model, fold), claim in claims.items():
            # the lock folder is per SLURM job: its name gives the job that trained this model
            match = re.fullmatch(r"slurm-(\d+)", claim["lock_path"].parent.name)
            assert match, claim
            job_id = match.group(1)
            assert rules_submitted.get(job_id) == f"rule_{rule}", (job_id, rule, rules_submitted)
            job_ids[(rule, model, fold)] = job_id
            # a simulated card chosen from what SLURM made visible; the training computed on the CPU
            assert claim["simulated"] and claim["device"] == "cuda:0", claim
            record = _scontrol_job(job_id, env)
            assert "JobState=COMPLETED" in record, record
            assert f"JobName={prefix}_" in record, record
            assert re.search(rf"Comment=rule_{rule}_wildcards_\S*{model}\S*", record), record
            assert re.search(r"TresPerJob=\S*gpu:1\b", record), record  # asked for one GPU
            # SLURM gave the job exactly one card, and the claim inside the job took that card
            assert monitor.allocations.get(job_id) == [claim["physical_id"]], (claim, monitor.allocations)
        assert len(set(job_ids.values())) == len(job_ids), job_ids

        # --- segmentation and patching: one SLURM job per group of slides ------------------
        slides = sorted(p.stem for p in (remote / "results" / dataset / "patches").glob("*.h5"))
        assert len(slides) > SLIDES_PER_PREPROCESS_JOB, slides
        # a group job's logs are named after the group and its rules: group_preprocess_segment_and_patch
        preprocess_jobs = [job_id for job_id, rule in rules_submitted.items() if rule.startswith("group_preprocess")]
        assert "rule_segment_and_patch" not in set(rules_submitted.values()), rules_submitted
        assert 1 <= len(preprocess_jobs) <= math.ceil(len(slides) / SLIDES_PER_PREPROCESS_JOB), rules_submitted
        segmented = []
        for job_id in preprocess_jobs:
            record = _scontrol_job(job_id, env)
            assert "JobState=COMPLETED" in record, record
            assert int(re.search(r"NumCPUs=(\d+)", record).group(1)) <= NODE_CPUS, record
            log = submitted[job_id].read_text(errors="replace")
            segmented += re.findall(r"^localrule segment_and_patch:\n(?:.*\n)*?\s+wildcards: slide=(\S+)", log, re.M)
        assert sorted(segmented) == slides  # each slide's segmentation ran in exactly one of them
        # Each slide is still a job of its own: a changed slide plans its own segmentation and
        # patching again, no other slide's.
        changed = next((remote / "resources" / "demo").rglob(f"{slides[0]}.*"))
        os.utime(changed)
        dry = subprocess.run(
            [str(Path(sys.executable).with_name("snakemake"))]
            + ["--workflow-profile", str(profile), "--configfile", TINY_CONFIG, "-n", "--quiet", "rules"],
            env=env,
            cwd=remote,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert dry.returncode == 0, dry.stderr[-3000:]
        planned = dict(re.findall(r"^(\w+)\s+(\d+)$", dry.stdout + dry.stderr, re.M))
        assert planned.get("segment_and_patch") == "1", dry.stdout + dry.stderr

        # Training jobs did run at the same time, and then on different GPUs.
        training_jobs = set(job_ids.values())
        together = [snap for snap in monitor.snapshots if len(training_jobs & set(snap)) >= 2]
        assert together, monitor.snapshots
        for snap in monitor.snapshots:
            gpus = [gpu for indices in snap.values() for gpu in indices]
            assert len(gpus) == len(set(gpus)), snap
        items = list(claims.values())
        for i, a in enumerate(items):
            for b in items[i + 1 :]:
                if a["claimed"] < b["released"] and b["claimed"] < a["released"]:
                    assert a["physical_id"] != b["physical_id"], (a, b)
        assert {c["physical_id"] for c in items} == {"0", "1"}, items
    finally:  # never leave the local run behind, even when the SLURM part failed
        local_thread.join(WORKFLOW_TIMEOUT_S)

    # --- the outputs are those of a local run -------------------------------------------
    assert not local_thread.is_alive(), "the local reference run did not finish"
    if local_error:
        raise local_error[0]

    tables = sorted(p.relative_to(remote) for p in (remote / "results" / dataset / "tables").glob("*.csv"))
    assert tables, "the SLURM run wrote no tables"
    predictions = _prediction_files(remote, dataset)
    assert len(predictions) >= len(expected), predictions
    assert predictions == _prediction_files(local, dataset)
    assert tables == sorted(p.relative_to(local) for p in (local / "results" / dataset / "tables").glob("*.csv"))
    differing = [str(p) for p in tables + predictions if (remote / p).read_bytes() != (local / p).read_bytes()]
    assert not differing, f"SLURM and local outputs differ: {differing}"
