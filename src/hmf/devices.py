"""Compute devices: one vocabulary (``auto``, ``cpu``, ``cuda``, ``cuda:<i>``) and one way to
claim a card, so that concurrent jobs on one machine never share it.

Snakemake's ``--resources gpu=N`` only limits how many GPU jobs run at once; it does not
say *which* card a job should use. Each job that computes on a GPU therefore takes an
exclusive ``flock`` on ``<lock_dir>/gpu<physical_id>.lock`` for one of the visible devices
and keeps it while it runs. The kernel drops the lock when the job exits or dies, so a
crashed job never leaves a card blocked.

- ``auto``: a free visible card, else the CPU; but the CPU whenever the job asked Snakemake
  for no GPU (``gpus=0``, the rule's ``resources: gpu``), so a job never takes a card that the
  scheduler did not count.
- ``cuda``: a free visible card (an error when none is visible).
- ``cuda:<i>``: that card (the ``i``-th visible one), waiting for its lock.
- ``cpu``: the CPU, no lock.

Visible devices follow CUDA's rules: when a scheduler (SLURM, a container runtime, the user)
sets ``CUDA_VISIBLE_DEVICES``, only those cards are used and torch index ``i`` is the
``i``-th entry of that list; the lock is named after the entry (the physical id) so that two
processes with different visibility lists still agree on which card is taken.

The lock folder is ``$HMF_GPU_LOCK_DIR`` or ``<tmp>/hmf-gpu-locks-<uid>`` (a ``slurm-<job>``
subfolder inside a SLURM job). It is created with mode 0700 and must belong to the user (or,
shared on purpose, to root with the sticky bit, like ``/tmp``); anything else is refused, as
is a lock file that is a symbolic link or not a regular file (a FIFO or device would block or
misbehave; lock files are opened without blocking). Lock descriptors are closed on ``exec`` and in
children made by ``fork`` (DataLoader workers), so only the claiming process holds the card.

``HMF_FAKE_GPUS=N`` pretends ``N`` cards are installed (device strings ``cuda:i`` are handed
out, but CUDA is not touched; :attr:`DeviceClaim.compute_device` is then the CPU): it lets
the scheduling logic be tested on machines without a GPU.

Torch is imported only by the functions that need it, so the workflow can read this module
when it parses the rules. What a device computes in (bfloat16 or not) is :mod:`hmf.precision`'s.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TextIO, TypeVar

from hmf.config import ConfigError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

FAKE_GPUS_ENV = "HMF_FAKE_GPUS"
LOCK_DIR_ENV = "HMF_GPU_LOCK_DIR"
VOCABULARY = "auto, cpu, cuda or cuda:<index>"
_PREFERENCE = re.compile(r"^(auto|cpu|cuda(?::(\d+))?)$")
POLL_INTERVAL_S = 0.5


class DeviceError(RuntimeError):
    """A device that cannot be had (no GPU visible, no such card), or an unsafe lock folder or file."""


class DeviceClaimTimeout(TimeoutError):
    """No visible GPU became free within the requested time."""


def parse_preference(preference: str) -> tuple[str, int | None]:
    """``(kind, index)`` of a device preference: kind ``auto``, ``cpu`` or ``cuda``; index for ``cuda:<i>``."""
    text = str(preference).strip().lower()
    match = _PREFERENCE.match(text)
    if not match:
        raise ValueError(f"device preference {preference!r} is not one of {VOCABULARY}")
    kind = text.split(":")[0]
    return kind, (int(match.group(2)) if match.group(2) is not None else None)


def wants_gpu(preference: str) -> bool:
    """Whether a job with this preference may compute on a GPU (and so asks Snakemake for one)."""
    return parse_preference(preference)[0] != "cpu"


@dataclass(frozen=True)
class VisibleDevices:
    """The GPUs this process may use: ``physical_ids[i]`` is the card behind ``cuda:i``."""

    physical_ids: tuple[str, ...]
    simulated: bool


# Lock descriptors held by this process: closed in fork children, which must not hold the card.
_HELD: dict[int, DeviceClaim] = {}


@dataclass
class DeviceClaim:
    """A claimed device; use as a context manager or call :meth:`release`.

    ``device`` is ``'cuda:i'`` or ``'cpu'``; ``index`` the torch index (``None`` on CPU);
    ``physical_id`` the card's entry in ``CUDA_VISIBLE_DEVICES`` (or its index when that is
    unset); ``simulated`` is true when the devices come from ``HMF_FAKE_GPUS`` rather than CUDA.
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

    @property
    def compute_device(self) -> str:
        """Where to compute: the claimed device, or the CPU for a simulated card."""
        return "cpu" if self.simulated else self.device

    def release(self) -> None:
        """Drop the lock (idempotent).

        A claim that is never released holds its card until the process exits (the lock is
        deliberately not tied to garbage collection of the claim object).
        """
        if self._fd is not None:
            _HELD.pop(self._fd, None)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
            log.info("released %s (lock %s)", self.device, self.lock_path)

    def __enter__(self) -> DeviceClaim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _forget_locks_in_child() -> None:
    """After ``fork``: close the inherited lock descriptors (closing, unlike LOCK_UN, leaves the
    parent's lock in place) so a surviving child never keeps the card."""
    for fd, claim in list(_HELD.items()):
        try:
            os.close(fd)
        except OSError:
            pass
        claim._fd = None
    _HELD.clear()


os.register_at_fork(after_in_child=_forget_locks_in_child)


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


def _check_folder(folder: Path) -> None:
    """Refuse a lock folder that another user could have planted or can write into."""
    info = os.lstat(folder)
    hint = f"remove it, or set {LOCK_DIR_ENV} to a folder of your own"
    if stat.S_ISLNK(info.st_mode):
        raise DeviceError(f"GPU lock folder {folder} is a symbolic link; {hint}")
    if not stat.S_ISDIR(info.st_mode):
        raise DeviceError(f"GPU lock folder {folder} is not a folder; {hint}")
    mode = stat.S_IMODE(info.st_mode)
    writable_by_others = bool(mode & (stat.S_IWGRP | stat.S_IWOTH))
    sticky = bool(mode & stat.S_ISVTX)
    if info.st_uid != os.getuid() and not (info.st_uid == 0 and (sticky or not writable_by_others)):
        raise DeviceError(
            f"GPU lock folder {folder} belongs to uid {info.st_uid}, not to you (uid {os.getuid()}); {hint} "
            f"(a folder shared on purpose must belong to root and have the sticky bit, mode 1777)"
        )
    if writable_by_others and not sticky:
        raise DeviceError(
            f"GPU lock folder {folder} has mode {mode:04o}: others may replace its lock files; "
            f"make it 0700 (or 1777 to share it on purpose), or {hint}"
        )


def prepare_lock_dir(folder: str | os.PathLike | None = None) -> Path:
    """The lock folder (default :func:`default_lock_dir`), created with mode 0700 and checked."""
    folder = Path(folder) if folder is not None else default_lock_dir()
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    else:
        os.chmod(folder, 0o700)  # whatever the umask
    _check_folder(folder)
    return folder


def _lock_file_name(physical_id: str) -> str:
    # UUID-style ids (GPU-xxxx, MIG-xxxx) are allowed in CUDA_VISIBLE_DEVICES
    return "gpu" + re.sub(r"[^A-Za-z0-9_.-]", "_", physical_id) + ".lock"


def _not_regular(path: Path) -> DeviceError:
    return DeviceError(f"GPU lock file {path} is not a regular file; remove it")


def _open_lock(path: Path) -> tuple[int, bool]:
    """An fd on the lock file (never through a symlink, closed on exec) and whether to record
    the holder in it (only in a plain file of ours, never in another user's or a hard link).

    Opening never blocks: a FIFO or device planted under the lock file's name is refused from
    its ``lstat``, and the open itself is non-blocking (``O_NONBLOCK``; opening a FIFO for
    reading would otherwise wait for a writer, past any claim timeout) in case one is planted
    in between."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISREG(info.st_mode) and not stat.S_ISLNK(info.st_mode):
            raise _not_regular(path)
    flags = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | flags, 0o666)
    except PermissionError:
        # Another user's lock file in a shared lock folder: flock works on a read-only fd.
        fd = os.open(path, os.O_RDONLY | flags)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise DeviceError(
                f"GPU lock file {path} is a symbolic link: refusing to follow it (it could make this job "
                f"overwrite another file); remove it"
            ) from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise _not_regular(path)
    os.set_blocking(fd, True)  # a regular file: back to ordinary writes of the holder line
    os.set_inheritable(fd, False)
    own_plain_file = info.st_uid == os.getuid() and info.st_nlink == 1
    writable = own_plain_file and (fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE) == os.O_RDWR
    return fd, writable


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive lock on ``path``, or None when another process holds it."""
    fd, writable = _open_lock(path)
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


def _no_gpu(preference: str) -> DeviceError:
    return DeviceError(
        f"device preference {preference!r} needs a GPU but none is visible (no CUDA device; "
        f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}, "
        f"{FAKE_GPUS_ENV}={os.environ.get(FAKE_GPUS_ENV)!r}); use 'auto' or 'cpu' to run on the CPU"
    )


def _check_index(preference: str, index: int, visible: VisibleDevices) -> None:
    if index >= len(visible.physical_ids):
        raise DeviceError(
            f"device preference {preference!r}: only {len(visible.physical_ids)} GPU(s) are visible "
            f"({', '.join(visible.physical_ids)})"
        )


def _unclaimed(preference: str) -> str:
    """The device a preference names, without claiming it. ``auto`` and ``cuda`` name the first
    visible GPU; a simulated card names the CPU."""
    kind, index = parse_preference(preference)
    if kind == "cpu":
        return "cpu"
    visible = visible_devices()
    if not visible.physical_ids:
        if kind == "cuda":
            raise _no_gpu(preference)
        return "cpu"
    if index is not None:
        _check_index(preference, index, visible)
    return "cpu" if visible.simulated else f"cuda:{index or 0}"


def claim_device(
    preference: str = "auto",
    lock_dir: str | os.PathLike | None = None,
    timeout_s: float | None = None,
    gpus: int | None = None,
) -> DeviceClaim:
    """Claim a device for this process: a visible GPU exclusively (waiting while it is taken), or the CPU.
    Jobs claim through :func:`torch_job`; this is its lower step.

    ``preference``: ``auto``, ``cpu``, ``cuda`` or ``cuda:<i>`` (see the module docstring).
    ``gpus``: the GPUs the job asked Snakemake for (its ``resources: gpu``); with 0, ``auto``
    is the CPU. ``None`` (outside a Snakemake job): no such limit.
    ``lock_dir``: folder of the lock files (default :func:`default_lock_dir`).
    ``timeout_s``: give up with :class:`DeviceClaimTimeout` after this many seconds of
    waiting (``None``: wait as long as it takes).
    """
    kind, wanted_index = parse_preference(preference)
    if kind == "cpu":
        log.info("using the CPU (device preference 'cpu')")
        return DeviceClaim("cpu")
    if kind == "auto" and gpus is not None and gpus < 1:
        log.info("using the CPU (device 'auto' in a job that asked Snakemake for no GPU)")
        return DeviceClaim("cpu")

    visible = visible_devices()
    if not visible.physical_ids:
        if kind == "cuda":
            raise _no_gpu(preference)
        log.info("no GPU visible: using the CPU")
        return DeviceClaim("cpu")
    candidates = list(enumerate(visible.physical_ids))
    if wanted_index is not None:
        _check_index(preference, wanted_index, visible)
        candidates = [candidates[wanted_index]]

    folder = prepare_lock_dir(lock_dir)
    started = time.monotonic()
    waiting_logged = False
    while True:
        for index, physical_id in candidates:
            path = folder / _lock_file_name(physical_id)
            fd = _try_lock(path)
            if fd is None:
                continue
            claim = DeviceClaim(f"cuda:{index}", index, physical_id, path, visible.simulated, fd)
            _HELD[fd] = claim
            log.info(
                "claimed %s (physical GPU %s%s, lock %s) after %.1f s",
                claim.device,
                physical_id,
                ", simulated" if visible.simulated else "",
                path,
                time.monotonic() - started,
            )
            return claim
        waited = time.monotonic() - started
        names = ", ".join(physical_id for _, physical_id in candidates)
        if timeout_s is not None and waited >= timeout_s:
            raise DeviceClaimTimeout(
                f"no GPU became free within {timeout_s:g} s: all of {names} "
                f"are locked in {folder} (see the lock files for the holding processes)"
            )
        if not waiting_logged:
            log.info("all GPUs (%s) are taken; waiting for one to be released", names)
            waiting_logged = True
        time.sleep(POLL_INTERVAL_S if timeout_s is None else max(0.0, min(POLL_INTERVAL_S, timeout_s - waited)))


def _named(key: str | None, preference: str, err: Exception) -> Exception:
    """``err`` as a :class:`ConfigError` naming the config key, when there is one."""
    return ConfigError(f"{key}={preference}: {err}") if key else err


def resolve_device(preference: str, key: str | None = None) -> torch.device:
    """The torch device a preference names, unclaimed: for code outside a workflow job
    (benchmarks, interactive use, a library call given ``auto``); jobs use :func:`torch_job`.
    With ``key``, an unknown or missing device is a ConfigError naming it."""
    import torch

    try:
        return torch.device(_unclaimed(preference))
    except (ValueError, RuntimeError) as err:
        raise _named(key, preference, err) from None


S = TypeVar("S")


@dataclass
class TorchJob(Generic[S]):
    """What :func:`torch_job` sets up: the job's settings section, the claimed device to compute
    on, and the stream for its progress bars."""

    settings: S
    device: torch.device
    progress_file: TextIO  # the rule's log (appended), or stderr


@contextlib.contextmanager
def torch_job(
    snakemake: Any, section: str, settings: Callable[[Any], S], set_threads: bool = False
) -> Iterator[TorchJob[S]]:
    """Set up every workflow job that computes with torch (feature extraction, text encoding,
    training, prediction), in this order: the rule's log (:func:`hmf.logs.setup_logging`, so any
    failure after it is written there); the settings, ``settings(section)`` of the config section
    as the job sees it (:func:`hmf.settings.job_section`: the keys that change outputs from the
    rule's params, the run-time keys such as the device from the config);
    with ``set_threads``, torch's threads to the job's ``threads``; then the device named by the
    settings' ``device``, claimed with :func:`claim_device` for the GPUs the job asked Snakemake
    for (``resources: gpu``) and held until the block ends. A device that cannot be had is a
    ConfigError naming ``<section>.device``; a simulated card computes on the CPU."""
    from hmf.logs import progress_stream, setup_logging
    from hmf.settings import job_section

    log_file = snakemake.log[0] if snakemake.log else None
    setup_logging(log_file)
    chosen = settings(job_section(snakemake, section))
    import torch

    if set_threads:
        torch.set_num_threads(snakemake.threads)
    try:
        claim = claim_device(chosen.device, gpus=snakemake.resources.get("gpu", 0))
    except (ValueError, RuntimeError) as err:
        raise _named(f"{section}.device", chosen.device, err) from None
    with claim:
        yield TorchJob(chosen, torch.device(claim.compute_device), progress_stream(log_file))
