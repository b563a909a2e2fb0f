"""Threads of a feature-extraction job, from the number of patches it encodes.

Snakemake evaluates a rule's ``threads`` again when the job is about to run, with its input
files present, so a job's threads can follow its own work. A job encodes on as many CPU
streams as it has threads (``hmf.features.engine``), so:

- a job asks for one thread per ``PATCHES_PER_THREAD`` patches (rounded up), at most the
  cores Snakemake has. Any slide of a real cohort (thousands of patches), and already the
  real 50-patch Aperio slide, asks for every core of a small machine: it then runs alone and
  uses all of them, whether it is a one-slide target, one of a few large slides or the last
  job of a run;
- a slide of at most ``PATCHES_PER_THREAD`` patches asks for one thread, so many tiny slides
  run side by side and their start-ups (Python, the torch import, the model build: a few
  seconds on one core) overlap;
- a job of several slides (``features.slides_per_job``) encodes them one after another, its
  streams sharing the batches of one slide, so its threads follow its largest slide, not the
  sum: a batch of tiny slides asks for one thread and batches run side by side, each
  spreading one start-up over its slides (on the demo, threads from the sum ran one 2-thread
  job at a time: 175 s for the `features` target against 167 s with one thread per job).

Light on purpose (h5py only): the workflow imports it when it reads the rules.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

# About 2.5 s of one core's fp32 work on ResNet50-trunc (12-13 patches/s per core measured),
# half a job's start-up: the demo's slides (about 27 patches) get one thread each.
PATCHES_PER_THREAD = 32


def patch_count(coords_file: str | os.PathLike) -> int | None:
    """Rows of a patch-coordinates file (``patches/<slide>.h5``), read from the dataset's
    header; None while the file does not exist yet (Snakemake builds the job graph first)."""
    import h5py

    if not os.path.isfile(coords_file):
        return None
    with h5py.File(coords_file, "r") as fh:
        return int(fh["coords"].shape[0]) if "coords" in fh else 0


def extraction_threads(coords_files: str | os.PathLike | Iterable[str | os.PathLike], cores: int | None) -> int:
    """Threads of a job that encodes the slides whose patches ``coords_files`` list, with
    ``cores`` the cores Snakemake was given: one per ``PATCHES_PER_THREAD`` patches of its
    largest slide (rounded up), between 1 and ``cores``. Before the coordinates exist (the
    graph being built) it is ``cores``; Snakemake evaluates it again when the job is ready to run."""
    if isinstance(coords_files, (str, os.PathLike)):
        coords_files = [coords_files]
    cores = max(1, int(cores or os.cpu_count() or 1))
    counts = [patch_count(path) for path in coords_files]
    if any(count is None for count in counts):
        return cores
    return max(1, min(cores, -(-max(counts, default=0) // PATCHES_PER_THREAD)))
