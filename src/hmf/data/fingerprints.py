"""Which files of a list are the same slide: one file (the same resolved path, a symbolic or
hard link: the same device and inode), or the same content.

A slide's content fingerprint is its size plus a BLAKE2b hash of its first and last MiB (the
whole file when it is smaller than 2 MiB), so at most 2 MiB is read per file. Two files with
the same content have the same size, so only files whose size another file shares are hashed:
for a cohort of distinct slides that is one ``stat`` per file.

The fingerprint is a guard against a slide copied or linked under another name, not a proof of
identity: two different slides whose size and first and last MiB agree would be called the
same (whole-slide images differ in their tile data well within those bytes).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

CHUNK = 1 << 20  # bytes read from each end of a file


def fingerprint(path: str | os.PathLike, size: int | None = None) -> str:
    """``<size>:<hash of the first and last MiB>`` of a regular file."""
    size = os.stat(path).st_size if size is None else size
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        if size <= 2 * CHUNK:
            digest.update(fh.read(2 * CHUNK))
        else:
            digest.update(fh.read(CHUNK))
            fh.seek(size - CHUNK)
            digest.update(fh.read(CHUNK))
    return f"{size}:{digest.hexdigest()}"


@dataclass(frozen=True)
class Clash:
    """File ``later`` (an index into the list) is file ``earlier``: the same file under another
    path, through a link or ``..`` (``how == "path"``: same device and inode), or the same size
    and first and last MiB (``how == "content"``)."""

    earlier: int
    later: int
    how: str

    def describe(self) -> str:
        return "is the same file as" if self.how == "path" else "has the same content (size, first and last MiB) as"


def clashes(paths: Sequence[str | os.PathLike | None]) -> list[Clash]:
    """For every file of ``paths`` that is an earlier one, the first such earlier file.

    Entries that are None, empty or not regular files are skipped (their own checks report
    them). Returns the clashes sorted by the later file's index.
    """
    seen: dict[tuple[int, int], int] = {}
    found: list[Clash] = []
    by_size: dict[int, list[int]] = defaultdict(list)
    for i, path in enumerate(paths):
        if not path:
            continue
        try:
            info = os.stat(path)  # follows links: a link and its target are one file
        except (OSError, ValueError):
            continue
        if not stat.S_ISREG(info.st_mode):
            continue
        key = (info.st_dev, info.st_ino)
        if key in seen:
            found.append(Clash(seen[key], i, "path"))
            continue
        seen[key] = i
        by_size[info.st_size].append(i)
    for size, group in by_size.items():
        if len(group) < 2:
            continue
        first: dict[str, int] = {}
        for i in group:
            try:
                key = fingerprint(paths[i], size)
            except OSError:
                continue
            if key in first:
                found.append(Clash(first[key], i, "content"))
            else:
                first[key] = i
    return sorted(found, key=lambda c: (c.later, c.earlier))
