"""Claim one GPU per job so that concurrent jobs on one machine never share a card.

Snakemake's ``--resources gpu=N`` only limits how many GPU jobs run at once; it does not
say *which* card a job should use. Each GPU job therefore takes an exclusive ``flock`` on
``<lock_dir>/gpu<physical_id>.lock`` for one of the visible devices and keeps it while it
runs. The kernel drops the lock when the job exits or dies, so a crashed job never leaves a
card blocked.

Visible devices follow CUDA's rules: when a scheduler (SLURM, a container runtime, the user)
sets ``CUDA_VISIBLE_DEVICES``, only those cards are used and torch index ``i`` is the
``i``-th entry of that list; the lock is named after the entry (the physical id) so that two
processes with different visibility lists still agree on which card is taken.

``HMF_FAKE_GPUS=N`` pretends ``N`` cards are installed (device strings ``cuda:i`` are handed
out, but CUDA is not touched): it lets the scheduling logic be tested on machines without a
GPU. ``HMF_GPU_LOCK_DIR`` overrides where lock files live.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

FAKE_GPUS_ENV = "HMF_FAKE_GPUS"
LOCK_DIR_ENV = "HMF_GPU_LOCK_DIR"
PREFERENCES = ("auto", "cpu", "cuda", "gpu")
POLL_INTERVAL_S = 0.5


class DeviceClaimTimeout(TimeoutError):
    """No visible GPU became free within the requested time."""


@dataclass(frozen=True)
class VisibleDevices:
    """The GPUs this process may use: ``physical_ids[i]`` is the card behind ``cuda:i``."""

    physical_ids: tuple[str, ...]
    simulated: bool


@dataclass
class DeviceClaim:
    """A claimed device; use as a context manager or call :meth:`release`.

    ``device`` is a string for ``torch.device`` (``'cuda:i'`` or ``'cpu'``); ``index`` is
    the torch index (``None`` on CPU); ``physical_id`` is the card's entry in
    ``CUDA_VISIBLE_DEVICES`` (or its index when that is unset); ``simulated`` is true when the
    devices come from ``HMF_FAKE_GPUS`` rather than CUDA.
    """

    device: str
    index: int | None = None
    physical_id: str | None = None
    lock_path: Path | None = None
    simulated: bool = False
    _fd: int | None = field(default=None, repr=False)

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    def release(self) -> None:
        """Drop the lock (idempotent).

        A claim that is never released holds its card until the process exits (the lock is
        deliberately not tied to garbage collection of the claim object).
        """
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
            log.info("released %s (lock %s)", self.device, self.lock_path)

    def __enter__(self) -> "DeviceClaim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _parse_visible_list(value: str) -> tuple[str, ...]:
    """Entries of ``CUDA_VISIBLE_DEVICES``; CUDA stops at the first invalid entry (e.g. -1)."""
    entries = []
    for entry in (part.strip() for part in value.split(",")):
        if not entry or entry.startswith("-"):
            break
        entries.append(entry)
    return tuple(entries)


def _fake_gpu_count() -> int | None:
    raw = os.environ.get(FAKE_GPUS_ENV)
    if raw is None or raw.strip() == "":
        return None
    try:
        count = int(raw)
    except ValueError:
        raise ValueError(f"{FAKE_GPUS_ENV}={raw!r} is not a whole number of simulated GPUs") from None
    if count < 0:
        raise ValueError(f"{FAKE_GPUS_ENV}={raw!r} must not be negative")
    return count


def _cuda_device_count() -> int:
    import torch  # imported here so that CPU-only and simulated runs stay light

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def visible_devices() -> VisibleDevices:
    """The GPUs this process may claim, in torch index order."""
    visible_env = os.environ.get("CUDA_VISIBLE_DEVICES")
    fake = _fake_gpu_count()
    if fake is not None:
        # Simulated cards behave like real ones: a scheduler's list selects among them.
        ids = _parse_visible_list(visible_env) if visible_env is not None else tuple(map(str, range(fake)))
        return VisibleDevices(ids, simulated=True)
    count = _cuda_device_count()
    if visible_env is not None:
        ids = _parse_visible_list(visible_env)[:count]
    else:
        ids = tuple(map(str, range(count)))
    return VisibleDevices(ids, simulated=False)


def default_lock_dir() -> Path:
    """``$HMF_GPU_LOCK_DIR``, else a per-user folder in the temp dir; per job inside SLURM.

    Inside a SLURM job the scheduler has already given the job its own cards, so the locks
    only need to arbitrate within the job and live in a ``slurm-<job id>`` subfolder.
    Without this, two jobs whose cards SLURM renumbers to ``CUDA_VISIBLE_DEVICES=0``
    (device cgroups) would queue behind each other for a lock they do not actually share.
    """
    configured = os.environ.get(LOCK_DIR_ENV)
    base = Path(configured) if configured else Path(tempfile.gettempdir()) / f"hmf-gpu-locks-{os.getuid()}"
    job = os.environ.get("SLURM_JOB_ID")
    return base / f"slurm-{job}" if job else base


def _lock_file_name(physical_id: str) -> str:
    # UUID-style ids (GPU-xxxx, MIG-xxxx) are allowed in CUDA_VISIBLE_DEVICES
    return "gpu" + re.sub(r"[^A-Za-z0-9_.-]", "_", physical_id) + ".lock"


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive lock on ``path``, or None when another process holds it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        writable = True
    except PermissionError:
        # Another user's lock file in a shared lock folder: flock works on a read-only fd.
        fd = os.open(path, os.O_RDONLY)
        writable = False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return None
        raise
    if writable:  # who holds the card, for anyone inspecting the lock folder
        os.ftruncate(fd, 0)
        os.write(fd, f"pid={os.getpid()} host={socket.gethostname()} since={time.time():.3f}\n".encode())
    return fd


def claim_device(
    preference: str = "auto",
    lock_dir: str | os.PathLike | None = None,
    timeout_s: float | None = None,
) -> DeviceClaim:
    """Claim one visible GPU exclusively, waiting while all are taken; else the CPU.

    ``preference``: ``'auto'`` (a GPU when one is visible, otherwise the CPU), ``'cpu'``, or
    ``'cuda'``/``'gpu'`` (a GPU is required: error when none is visible).
    ``lock_dir``: folder of the lock files (default :func:`default_lock_dir`).
    ``timeout_s``: give up with :class:`DeviceClaimTimeout` after this many seconds of
    waiting (``None``: wait as long as it takes).
    """
    if preference not in PREFERENCES:
        raise ValueError(f"device preference {preference!r} is not one of {', '.join(PREFERENCES)}")
    if preference == "cpu":
        log.info("using the CPU (device preference 'cpu')")
        return DeviceClaim("cpu")

    visible = visible_devices()
    if not visible.physical_ids:
        if preference in ("cuda", "gpu"):
            raise RuntimeError(
                f"device preference {preference!r} needs a GPU but none is visible "
                f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}, "
                f"{FAKE_GPUS_ENV}={os.environ.get(FAKE_GPUS_ENV)!r}); use 'auto' or 'cpu' to run on the CPU"
            )
        log.info("no GPU visible: using the CPU")
        return DeviceClaim("cpu")

    folder = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    waiting_logged = False
    while True:
        for index, physical_id in enumerate(visible.physical_ids):
            path = folder / _lock_file_name(physical_id)
            fd = _try_lock(path)
            if fd is None:
                continue
            claim = DeviceClaim(f"cuda:{index}", index, physical_id, path, visible.simulated, fd)
            log.info(
                "claimed %s (physical GPU %s%s, lock %s) after %.1f s",
                claim.device, physical_id, ", simulated" if visible.simulated else "", path,
                time.monotonic() - started,
            )
            return claim
        waited = time.monotonic() - started
        if timeout_s is not None and waited >= timeout_s:
            raise DeviceClaimTimeout(
                f"no GPU became free within {timeout_s:g} s: all of {', '.join(visible.physical_ids)} "
                f"are locked in {folder} (see the lock files for the holding processes)"
            )
        if not waiting_logged:
            log.info("all GPUs (%s) are taken; waiting for one to be released", ", ".join(visible.physical_ids))
            waiting_logged = True
        time.sleep(POLL_INTERVAL_S if timeout_s is None else max(0.0, min(POLL_INTERVAL_S, timeout_s - waited)))
