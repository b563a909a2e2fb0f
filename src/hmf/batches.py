"""Job batches of the per-slide steps (``preprocessing.slides_per_job``,
``features.slides_per_job`` above 1): which slides one job processes, and the manifests that
keep those batches once made.

Snakemake records a job's input files with each of its outputs and reruns a job whose inputs
differ from the recorded ones. A batch's inputs are its slides, so batches cut anew from a
changed ``slides_per_job`` would redo every slide. Instead each batch job writes a manifest
(``<batches>/<batch id>.json``, the batch's slide ids in order), each one-slide job a marker
(``<batches>/single/<slide>``), and a plan keeps what it finds: ``slides_per_job`` only cuts
the slides that neither holds. Changing it therefore plans nothing on a finished run, and a new
slide joins a new batch without touching the old ones. ``<batches>`` is :func:`batch_folder`
of the step's output folder (``features/<encoder>``, ``patches``).

The plan depends on nothing else (not on which output files exist), so a cluster job that
reads the workflow while other batches finish finds its own batch: a finished batch is a whole
cut (or the last), and the cuts after it stay where they were.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Collection, Sequence
from pathlib import Path

from hmf.atomic import write_json

SINGLE_DIR = "single"


class BatchManifestError(ValueError):
    """A batch manifest that is not this module's format, named with the cause."""


def batch_folder(output_dir: str | os.PathLike) -> str:
    """Where the manifests and markers of a step whose per-slide files are under ``output_dir``
    live (a name that none of the step's per-slide files can take)."""
    return os.path.join(output_dir, "batches")


def batch_id(slides: Sequence[str]) -> str:
    """A short id of a batch, from its slide ids in order: the same slides give the same id."""
    return hashlib.blake2b("\n".join(slides).encode(), digest_size=6).hexdigest()


def manifest_path(folder: str | os.PathLike, slides: Sequence[str]) -> str:
    """The manifest the batch job of ``slides`` writes in the batch folder ``folder``."""
    return os.path.join(folder, f"{batch_id(slides)}.json")


def write_manifest(path: str | os.PathLike, slides: Sequence[str]) -> None:
    """Record the batch of ``slides`` (atomically: a killed job leaves no manifest)."""
    write_json(path, {"slides": list(slides)})


def read_manifest(path: str | os.PathLike) -> list[str]:
    """The slide ids of a manifest, checked."""
    try:
        slides = json.loads(Path(path).read_text())["slides"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise BatchManifestError(f"{path}: not a batch manifest ({err!r}); delete it") from None
    if not isinstance(slides, list) or not all(isinstance(s, str) for s in slides):
        raise BatchManifestError(f"{path}: not a batch manifest (no list of slide ids); delete it")
    return slides


def single_marker(folder: str | os.PathLike, slide: str) -> str:
    """The marker a one-slide job leaves for ``slide`` in the batch folder ``folder``."""
    return os.path.join(folder, SINGLE_DIR, slide)


def write_single_marker(path: str | os.PathLike) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).touch()


def record_batch(output_dir: str | os.PathLike, slides: Sequence[str]) -> None:
    """What a job of a per-slide step does last, once the files of ``slides`` are written under
    the step's ``output_dir``: a marker for a one-slide job, else the batch's manifest."""
    folder = batch_folder(output_dir)
    if len(slides) == 1:
        write_single_marker(single_marker(folder, slides[0]))
    else:
        write_manifest(manifest_path(folder, slides), slides)


def read_singles(folder: str | os.PathLike) -> set[str]:
    """The slides done by one-slide jobs (one directory listing, no file read)."""
    try:
        return set(os.listdir(Path(folder, SINGLE_DIR)))
    except FileNotFoundError:
        return set()


def read_manifests(folder: str | os.PathLike) -> list[list[str]]:
    """Every manifest's slides in the batch folder ``folder``, newest first."""
    try:
        entries = [e for e in os.scandir(folder) if e.name.endswith(".json") and e.is_file()]
    except FileNotFoundError:
        return []
    entries.sort(key=lambda e: (e.stat().st_mtime_ns, e.name), reverse=True)
    return [read_manifest(e.path) for e in entries]


def plan_batches(
    slides: Sequence[str],
    size: int,
    manifests: Sequence[Sequence[str]],
    singles: Collection[str] = (),
) -> list[list[str]]:
    """The batches of ``slides`` (in sample-sheet order), each of two slides or more; every
    other slide is left to the step's one-slide rule.

    Each manifest (newest first) keeps its batch: its slides that are among ``slides`` and not
    in a newer manifest, in the manifest's order (a batch that lost slides differs from its
    recorded inputs, so it runs again, as it should). The slides that no manifest holds and
    that no one-slide job did (``singles``) are cut into batches of ``size``."""
    wanted = set(slides)
    taken: set[str] = set()
    batches = []
    for manifest in manifests:
        batch = [s for s in manifest if s in wanted and s not in taken]
        taken.update(batch)
        if len(batch) > 1:
            batches.append(batch)
    if size > 1:
        new = [s for s in slides if s not in taken and s not in singles]
        cuts = (new[start : start + size] for start in range(0, len(new), size))
        batches.extend(cut for cut in cuts if len(cut) > 1)
    return batches
