"""Atomic file output: write under a temporary name in the same folder, then rename.

An interrupted job therefore never leaves a file that looks complete, and a rerun starts from
scratch for that file: the next write of the same path first removes the temporary files a
killed writer left behind (only that path's, never a neighbour's). The file's data is flushed
to disk before the rename, and its folder after it (the rename is an entry of the folder), so
after a crash of the machine the file is complete under its name or absent.
The finished file gets the mode an ordinary ``open()`` would give it (``0666`` less the
umask), so collaborators on a shared results folder can read it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PART_MARK = ".part"
# tempfile.mkstemp's random part: 8 characters of [a-z0-9_].
_RANDOM = "[a-z0-9_]{8}"


def _part_prefix_suffix(final: Path, suffix: str) -> tuple[str, str]:
    return f".{final.stem}.", f"{PART_MARK}{suffix}"


def stale_parts(path: str | os.PathLike, suffix: str | None = None) -> list[Path]:
    """Temporary files of :func:`atomic_path` for ``path`` left by a killed writer.

    Matches the exact name pattern (``.<stem>.<8 random chars>.part<suffix>``), so the
    leftovers of ``s1.h5`` never include those of ``s1.v2.h5``.
    """
    final = Path(path)
    prefix, tail = _part_prefix_suffix(final, final.suffix if suffix is None else suffix)
    pattern = re.compile(re.escape(prefix) + _RANDOM + re.escape(tail))
    if not final.parent.is_dir():
        return []
    return sorted(p for p in final.parent.iterdir() if pattern.fullmatch(p.name))


def remove_stale_parts(path: str | os.PathLike, suffix: str | None = None) -> None:
    """Delete the temporary files a killed writer of ``path`` left beside it."""
    for stale in stale_parts(path, suffix):
        with contextlib.suppress(OSError):
            stale.unlink()


def current_umask() -> int:
    """The process umask, read without changing it (``os.umask`` would race with other threads)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush ``folder``'s entries (a rename or a new file in it) to disk. File systems that
    cannot sync a folder (some network and FUSE ones) are left as they are."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary name keeps the final suffix (libraries such as h5py, cv2 or torch pick
    formats from it) and starts with ``.`` so globbing for outputs does not see it.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = final.suffix if suffix is None else suffix
    remove_stale_parts(final, suffix)
    prefix, tail = _part_prefix_suffix(final, suffix)
    fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=tail, dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates the file 0600; give it the mode of an ordinary new file instead
        # (after the block, as some writers replace the file rather than reuse it).
        os.chmod(tmp, 0o666 & ~current_umask())
        with open(tmp, "rb+") as fh:  # flush to disk before the rename makes it visible
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        fsync_dir(final.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_csv(path: str | os.PathLike, frame) -> None:
    """Write a pandas DataFrame atomically (no index column)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` of ``obj`` to ``path``, atomically. Saved through an open file, so the
    archive inside is named ``archive`` rather than after the temporary file: the same object
    gives the same bytes on every run."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)
