"""Which code and which settings made a file: the stamp that the feature files (h5 attributes),
the checkpoints and the slide embeddings files carry.

``stamp(settings)`` is a flat dict of strings:

- ``hmf_version``: the installed package's version (``importlib.metadata``);
- ``hmf_commit``: the git commit of the checkout the package runs from, or ``""`` where it is
  not known (an installed package, no ``.git``). It is read once per process from the files
  under ``.git`` (no ``git`` program is needed, and nothing fails without one); local
  changes that are not committed are not recorded;
- ``settings_sha256``: the sha256 of the settings that made the file, as canonical JSON
  (dataclasses and mappings as objects with sorted keys, tuples as lists), or ``""`` where
  the writer was given none.

No time and no host go in, so two runs of the same commit with the same settings write the
same bytes.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

KEYS = ("hmf_version", "hmf_commit", "settings_sha256")
_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
CHECKOUT = Path(__file__).resolve().parents[2]  # src/hmf/provenance.py -> the checkout


@functools.cache
def package_version() -> str:
    """The installed version of the hmf package, or ``"unknown"`` when it is not installed."""
    try:
        return metadata.version("hmf")
    except metadata.PackageNotFoundError:
        return "unknown"


def _git_dir(root: Path) -> Path | None:
    dot = root / ".git"
    if dot.is_dir():
        return dot
    if dot.is_file():  # a worktree or submodule: "gitdir: <path>"
        text = dot.read_text(encoding="utf-8").strip()
        if text.startswith("gitdir:"):
            return (root / text[len("gitdir:") :].strip()).resolve()
    return None


def read_commit(root: Path) -> str | None:
    """The commit checked out at ``root`` from the files under its ``.git`` (HEAD, the loose
    ref, packed-refs), or None where there is no repository or it cannot be read."""
    try:
        git = _git_dir(root)
        if git is None:
            return None
        common = git
        if (git / "commondir").is_file():
            common = (git / (git / "commondir").read_text(encoding="utf-8").strip()).resolve()
        head = (git / "HEAD").read_text(encoding="utf-8").strip()
        if not head.startswith("ref:"):
            return head if _SHA.match(head) else None  # a detached HEAD
        ref = head[len("ref:") :].strip()
        for folder in (git, common):
            if (folder / ref).is_file():
                sha = (folder / ref).read_text(encoding="utf-8").strip()
                return sha if _SHA.match(sha) else None
        packed = common / "packed-refs"
        if packed.is_file():
            for line in packed.read_text(encoding="utf-8").splitlines():
                sha, _, name = line.partition(" ")
                if name.strip() == ref and _SHA.match(sha):
                    return sha
    except (OSError, UnicodeDecodeError):
        pass
    return None


@functools.cache
def checkout_commit() -> str:
    """The commit of the checkout this package runs from, read once per process; ``""`` if unknown."""
    return read_commit(CHECKOUT) or ""


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def settings_digest(settings: Any) -> str:
    """sha256 of ``settings`` as canonical JSON (a value JSON does not know is written as its ``str``)."""
    text = json.dumps(_plain(settings), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def stamp(settings: Any = None) -> dict[str, str]:
    """The provenance of a file made with ``settings`` (None: not known to the writer)."""
    return {
        "hmf_version": package_version(),
        "hmf_commit": checkout_commit(),
        "settings_sha256": "" if settings is None else settings_digest(settings),
    }
