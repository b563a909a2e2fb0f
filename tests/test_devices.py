"""GPU claiming: lock files over the visible devices, simulated with HMF_FAKE_GPUS."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from hmf import devices
from hmf.devices import DeviceClaimTimeout, DeviceError, claim_device, visible_devices

SRC = Path(__file__).resolve().parents[1] / "src"

# A worker that waits for a start signal, claims a device, holds it, and records the times.
WORKER = r"""
import json, logging, os, sys, time
from pathlib import Path
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
from hmf.devices import claim_device
out, go, hold = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
out.with_suffix(".ready").touch()
while not go.exists():
    time.sleep(0.01)
requested = time.time()
with claim_device("auto") as claim:
    acquired = time.time()
    time.sleep(hold)
    released = time.time()
out.write_text(json.dumps(dict(device=claim.device, physical_id=claim.physical_id,
                               simulated=claim.simulated, requested=requested,
                               acquired=acquired, released=released)))
"""


@pytest.fixture
def fake_env(monkeypatch, tmp_path):
    """Two simulated GPUs, no scheduler visibility list, a private lock folder."""
    monkeypatch.setenv("HMF_FAKE_GPUS", "2")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    lock_dir = tmp_path / "locks"
    monkeypatch.setenv("HMF_GPU_LOCK_DIR", str(lock_dir))
    return lock_dir


def _spawn(args, env):
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_three_processes_share_two_gpus_without_overlap(fake_env, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    go = tmp_path / "go"
    outs = [tmp_path / f"worker{i}.json" for i in range(3)]
    procs = [_spawn([out, go, 1.5], env) for out in outs]
    deadline = time.time() + 60
    while not all(out.with_suffix(".ready").exists() for out in outs):
        assert time.time() < deadline, "workers did not start"
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.05)
    go.touch()
    logs = []
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        logs.append(err)
    runs = sorted(
        (json.loads(out.read_text()) | {"log": log} for out, log in zip(outs, logs)), key=lambda r: r["acquired"]
    )
    first, second, third = runs

    assert all(r["simulated"] for r in runs)
    assert {first["device"], second["device"]} == {"cuda:0", "cuda:1"}
    # The third asked while both cards were held, so it must have waited for a release ...
    assert third["requested"] < min(first["released"], second["released"])
    assert "waiting for one to be released" in third["log"]
    # ... and then got the card that was freed, never one still in use.
    previous = first if third["device"] == first["device"] else second
    assert third["device"] == previous["device"]
    assert third["acquired"] >= previous["released"]
    # No two holders of the same card ever overlap in time.
    for a in runs:
        for b in runs:
            if a is not b and a["device"] == b["device"]:
                assert a["released"] <= b["acquired"] or b["released"] <= a["acquired"]


def test_visible_devices_map_to_physical_lock_ids(fake_env, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert visible_devices().physical_ids == ("3", "5")
    with claim_device() as a, claim_device() as b:
        assert (a.device, a.physical_id) == ("cuda:0", "3")
        assert (b.device, b.physical_id) == ("cuda:1", "5")
        assert a.lock_path == fake_env / "gpu3.lock"
        assert b.lock_path == fake_env / "gpu5.lock"
        assert f"pid={os.getpid()}" in a.lock_path.read_text()


def test_visibility_list_stops_at_invalid_entry(fake_env, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,-1,2")
    assert visible_devices().physical_ids == ("1",)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_devices().physical_ids == ()
    assert claim_device().device == "cpu"


def test_cpu_preference_takes_no_lock(fake_env):
    claim = claim_device("cpu")
    assert claim.device == "cpu" and claim.lock_path is None and not claim.is_cuda
    assert not fake_env.exists()


def test_no_gpu_falls_back_to_cpu_unless_required(monkeypatch, tmp_path):
    monkeypatch.delenv("HMF_FAKE_GPUS", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(devices, "_cuda_device_count", lambda: 0)
    assert claim_device("auto", lock_dir=tmp_path).device == "cpu"
    with pytest.raises(RuntimeError, match="needs a GPU but none is visible"):
        claim_device("cuda", lock_dir=tmp_path)


def test_timeout_when_all_gpus_are_taken(fake_env):
    with claim_device(), claim_device():
        started = time.monotonic()
        with pytest.raises(DeviceClaimTimeout, match=r"no GPU became free within 0.4 s: all of 0, 1"):
            claim_device(timeout_s=0.4)
        assert 0.35 <= time.monotonic() - started < 5
    # Released on exit: the card is free again.
    with claim_device(timeout_s=0) as again:
        assert again.device == "cuda:0"


def test_lock_is_dropped_when_holder_is_killed(fake_env, monkeypatch):
    monkeypatch.setenv("HMF_FAKE_GPUS", "1")
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from hmf.devices import claim_device\n"
            "c = claim_device(); print(c.device, flush=True); time.sleep(120)",
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "cuda:0"
        with pytest.raises(DeviceClaimTimeout):
            claim_device(timeout_s=0.2)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    with claim_device(timeout_s=5) as claim:
        assert claim.device == "cuda:0"


def test_bad_settings_are_named(fake_env, monkeypatch):
    with pytest.raises(ValueError, match="device preference 'tpu'"):
        claim_device("tpu")
    monkeypatch.setenv("HMF_FAKE_GPUS", "two")
    with pytest.raises(ValueError, match="HMF_FAKE_GPUS='two'"):
        visible_devices()


def test_lock_dir_is_per_job_inside_slurm(monkeypatch, tmp_path):
    monkeypatch.delenv("HMF_GPU_LOCK_DIR", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert devices.default_lock_dir().name == "slurm-4242"
    monkeypatch.setenv("HMF_GPU_LOCK_DIR", str(tmp_path))
    assert devices.default_lock_dir() == tmp_path / "slurm-4242"
    monkeypatch.delenv("SLURM_JOB_ID")
    assert devices.default_lock_dir() == tmp_path
    monkeypatch.delenv("HMF_GPU_LOCK_DIR")
    assert devices.default_lock_dir().name == f"hmf-gpu-locks-{os.getuid()}"


def test_local_gpu_profile_runs_two_gpu_jobs_at_once_on_different_cards(tmp_path):
    """profiles/local-gpu caps GPU jobs at 2; the claims inside keep them on separate cards."""
    root = Path(__file__).resolve().parents[1]
    workdir = tmp_path / "work"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env.update(
        HMF_FAKE_GPUS="2",
        HMF_GPU_LOCK_DIR=str(tmp_path / "locks"),
        PYTHONPATH=str(SRC) + os.pathsep + env.get("PYTHONPATH", ""),
        PATH=str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""),
    )
    # --cores 6 leaves room for three 2-thread jobs: only the profile's gpu cap limits them to two.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(root / "tests/slurm/workflow/Snakefile"),
            "--directory",
            str(workdir),
            "--workflow-profile",
            str(root / "profiles/local-gpu"),
            "--cores",
            "6",
            "--config",
            "hold_s=2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    jobs = json.loads((workdir / "summary.json").read_text())["jobs"]
    assert len(jobs) == 3 and all(j["env"]["SLURM_JOB_ID"] is None for j in jobs)
    assert {j["device"] for j in jobs} == {"cuda:0", "cuda:1"}
    events = sorted([(j["started"], 1) for j in jobs] + [(j["finished"], -1) for j in jobs])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak == 2, [(j["started"], j["finished"]) for j in jobs]
    for i, a in enumerate(jobs):
        for b in jobs[i + 1 :]:
            if a["started"] < b["finished"] and b["started"] < a["finished"]:
                assert a["device"] != b["device"], (a, b)


def test_read_only_lock_file_of_another_user_still_locks(fake_env, monkeypatch):
    monkeypatch.setenv("HMF_FAKE_GPUS", "1")
    fake_env.mkdir()
    lock = fake_env / "gpu0.lock"
    lock.write_text("")
    lock.chmod(0o444)
    real_open = os.open

    def open_as_other_user(path, flags, *args):  # root ignores file modes: emulate the refusal
        if str(path) == str(lock) and flags & os.O_RDWR:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(devices.os, "open", open_as_other_user)
    with claim_device() as claim:
        assert claim.device == "cuda:0"
        with pytest.raises(DeviceClaimTimeout):
            claim_device(timeout_s=0.2)


def test_lock_folder_is_created_private(fake_env):
    with claim_device():
        pass
    assert stat.S_IMODE(fake_env.stat().st_mode) == 0o700


def test_lock_folder_writable_by_others_is_refused(fake_env):
    fake_env.mkdir()
    fake_env.chmod(0o777)
    with pytest.raises(DeviceError, match=r"mode 0777: others may replace its lock files"):
        claim_device()
    fake_env.chmod(0o1777)  # shared on purpose: the sticky bit keeps others from replacing our files
    with claim_device() as claim:
        assert claim.device == "cuda:0"


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give the folder to another user")
def test_lock_folder_of_another_user_is_refused(fake_env):
    fake_env.mkdir(mode=0o700)
    os.chown(fake_env, 12345, 12345)
    with pytest.raises(DeviceError, match=r"belongs to uid 12345, not to you"):
        claim_device()


def test_planted_symlink_is_refused_and_its_target_untouched(fake_env, tmp_path):
    fake_env.mkdir(mode=0o700)
    victim = tmp_path / "precious.txt"
    victim.write_text("precious data\n")
    (fake_env / "gpu0.lock").symlink_to(victim)
    with pytest.raises(DeviceError, match="is a symbolic link: refusing to follow it"):
        claim_device("cuda:0")
    assert victim.read_text() == "precious data\n"
    (tmp_path / "linked").mkdir()
    (fake_env / "gpu0.lock").unlink()
    os.symlink(tmp_path / "linked", fake_env.parent / "locks-link")
    with pytest.raises(DeviceError, match="GPU lock folder .* is a symbolic link"):
        claim_device(lock_dir=fake_env.parent / "locks-link")


def test_lock_descriptor_is_not_inherited(fake_env):
    import fcntl
    import multiprocessing

    with claim_device() as claim:
        fd = claim._fd
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC  # not across exec

        lock_file = os.stat(claim.lock_path)

        def child(queue):  # like a DataLoader worker (fork): the lock descriptor is gone
            try:  # (its number may have been reused for another file by then)
                info = os.fstat(fd)
                queue.put("open" if (info.st_dev, info.st_ino) == (lock_file.st_dev, lock_file.st_ino) else "closed")
            except OSError:
                queue.put("closed")

        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        worker = context.Process(target=child, args=(queue,))
        worker.start()
        worker.join(30)
        assert queue.get(timeout=5) == "closed"
        assert devices._try_lock(claim.lock_path) is None  # the parent still holds the card
    assert claim._fd is None


def test_explicit_card_takes_its_lock(fake_env):
    with claim_device("cuda:1") as claim:
        assert (claim.device, claim.physical_id) == ("cuda:1", "1")
        with pytest.raises(DeviceClaimTimeout, match="all of 1 are locked"):
            claim_device("cuda:1", timeout_s=0.2)
        with claim_device("cuda") as other:
            assert other.device == "cuda:0"
    with pytest.raises(DeviceError, match="only 2 GPU"):
        claim_device("cuda:2")


def test_auto_never_takes_a_card_the_job_did_not_ask_for(fake_env):
    claim = claim_device("auto", gpus=0)
    assert claim.device == "cpu" and not fake_env.exists()
    with claim_device("auto", gpus=1) as claim:
        assert claim.device == "cuda:0" and claim.compute_device == "cpu"  # simulated: computes on the CPU


def _job(tmp_path, device, gpus=1, section="features"):
    """A stand-in for the ``snakemake`` object of a job whose config section names ``device``."""
    return SimpleNamespace(
        log=[str(tmp_path / "logs" / "job.log")],
        params=SimpleNamespace(**{section: {"device": device}}),
        config={section: {"device": device}},
        resources={"gpu": gpus},
        threads=1,
    )


def _settings(given):
    return SimpleNamespace(**given)


def test_a_torch_job_logs_then_claims_the_card_it_names(fake_env, tmp_path):
    from hmf.devices import torch_job

    job = _job(tmp_path, "cuda:1")
    with torch_job(job, "features", _settings) as held:
        assert held.device.type == "cpu"  # simulated card
        assert held.settings.device == "cuda:1"
        with pytest.raises(DeviceClaimTimeout):
            claim_device("cuda:1", timeout_s=0.1)
    assert "claimed cuda:1 (physical GPU 1, simulated" in Path(job.log[0]).read_text()
    with torch_job(_job(tmp_path, "auto", gpus=0), "features", _settings) as held:
        assert held.device.type == "cpu" and not (fake_env / "gpu0.lock").exists()


def test_a_torch_job_writes_a_bad_setting_to_its_log(fake_env, tmp_path):
    from hmf.devices import torch_job

    def refuse(given):
        raise ValueError(f"bad section {given}")

    job = _job(tmp_path, "auto")
    with pytest.raises(ValueError, match="bad section"):
        with torch_job(job, "features", refuse):
            pass
    assert "hmf from" in Path(job.log[0]).read_text()  # the log was set up before the settings were read
    assert not list(fake_env.glob("*.lock"))  # and nothing was claimed


def test_jobs_claim_devices_only_through_torch_job():
    """``claim_device`` is the lower step of ``torch_job``: nothing else in the package, the
    workflow or the benchmarks calls it."""
    root = Path(__file__).resolve().parents[1]
    sources = [*root.glob("src/hmf/**/*.py"), *root.glob("workflow/scripts/*.py"), *root.glob("benchmarks/*.py")]
    sources += [*root.glob("rules/*.smk"), root / "Snakefile"]
    callers = [
        str(path.relative_to(root))
        for path in sources
        if path.name != "devices.py"
        and re.search(r"\bclaim_device\(|\bclaimed_device\b|\bunclaimed_device\b", path.read_text())
    ]
    assert callers == []


def test_errors_name_the_config_key_when_given(fake_env, tmp_path):
    from hmf.config import ConfigError

    with pytest.raises(DeviceError, match="only 2 GPU"):
        devices.resolve_device("cuda:5")
    with pytest.raises(ConfigError, match=r"^text\.device=cuda:5: .*only 2 GPU"):
        devices.resolve_device("cuda:5", key="text.device")
    with pytest.raises(ConfigError, match=r"^training\.device=cuda:5: "):
        with devices.torch_job(_job(tmp_path, "cuda:5", section="training"), "training", _settings):
            pass
    assert str(devices.resolve_device("auto")) == "cpu"  # a simulated card computes on the CPU
    assert not fake_env.exists()  # nothing was claimed
