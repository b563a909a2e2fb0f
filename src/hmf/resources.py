"""Memory a job will need, estimated from its own inputs (Snakemake's ``mem_mb``).

Snakemake calls these when a job is about to be scheduled, so its input files exist: the
estimate follows the slide's size, the patch count or the largest bag of the job, never a
fixed figure and never the size of the cohort. The constants were measured on the CPU
(peak resident memory of whole jobs, see ``benchmarks/bench_real_size.py``) and rounded up.

Snakemake evaluates a job's resources again on every pass of its scheduler while the job waits
for cores: what an estimate reads from a file (a slide's header, a patch count, the cohort's
feature index) is remembered for that file's size and modification time, so each file is
opened once per Snakemake process while it is unchanged.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

MB = 2**20

# Python, torch, h5py and the job's own code, before any data: measured 350-550 MB for
# training and extraction jobs on the CPU; 1 GB leaves room for the allocator.
TORCH_JOB_MB = 1024
# Segmentation and patching import OpenCV and OpenSlide only.
SLIDE_JOB_MB = 512
# Peak memory of one training step plus one prediction of a slide model, per MB of the
# largest bag's float32 features (features read, standardised in place, activations and
# their gradients). Measured at N = 10^5 patches on the CPU; see docs/performance.md, "Slide
# models on one bag".
BAG_FACTOR = {
    "hmf": 9.0,
    "transmil": 9.0,
    "gatmil": 9.0,
    "default": 6.0,
}
# Segmentation holds the RGB image at the segmentation level and a few same-sized masks
# (HSV, blurred saturation, binary mask, contour raster, the QC picture).
SEGMENT_BYTES_PER_PIXEL = 24
# A slide that cannot be opened while the job is planned: its job fails at once with the cause.
UNREADABLE_SLIDE_MB = 1024


def _existing(path: str | os.PathLike) -> Path:
    """The input, or FileNotFoundError while it is still to be made: Snakemake then evaluates
    the estimate again once the job's inputs exist (a dry run shows the job without it)."""
    if not Path(path).exists():
        # Snakemake recognises the error by the file name, which must be the input as given.
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
    return Path(path)


def _file_key(path: str | os.PathLike) -> tuple[str, int, int]:
    """The existing input as (path, size, modification time): the key under which what was read
    from it is remembered."""
    stat = os.stat(_existing(path))
    return str(path), stat.st_size, stat.st_mtime_ns


# Enough for the files a scheduler pass looks at; an estimate of a file not among them is read again.
_CACHE_SIZE = 2**16


def _round(mb: float) -> int:
    """Up to the next 256 MB, so small differences between slides do not fragment the queue."""
    return int(-(-mb // 256) * 256)


@lru_cache(maxsize=_CACHE_SIZE)
def _patch_count(key: tuple[str, int, int]) -> int:
    from hmf.features.threads import patch_count

    return patch_count(key[0])


def train_slide_mem_mb(model: str, feature_index: str | os.PathLike, cache_mb: float) -> int:
    """A slide model's training job: base, the bag cache and the largest bag times the model's
    factor; the largest bag from the cohort's feature index (hmf.features.index)."""
    largest = _largest_bag_bytes(_file_key(feature_index)) / MB
    factor = BAG_FACTOR.get(model, BAG_FACTOR["default"])
    return _round(TORCH_JOB_MB + cache_mb + factor * largest)


@lru_cache(maxsize=_CACHE_SIZE)
def _largest_bag_bytes(key: tuple[str, int, int]) -> int:
    from hmf.features.index import largest_bag_bytes

    return largest_bag_bytes(key[0])


def train_patient_mem_mb(embeddings: str | os.PathLike) -> int:
    """A patient model's training job: the slide embeddings of the cohort (small) a few times over."""
    return _round(TORCH_JOB_MB + 4 * os.path.getsize(_existing(embeddings)) / MB)


def extract_mem_mb(coords_files: Iterable[str | os.PathLike], feature_dim: int = 1024) -> int:
    """Feature extraction: the encoder and its streams, plus one slide's features at a time
    (the largest of the job's slides), held once while the files are written."""
    largest = max((_patch_count(_file_key(path)) for path in coords_files), default=0)
    return _round(TORCH_JOB_MB + 1024 + largest * feature_dim * 4 / MB)


def segment_mem_mb(slide_path: str | os.PathLike, preprocessing: dict | None, mpp: float | None = None) -> int:
    """Tissue segmentation of one slide: the segmentation image and its masks."""
    return _segment_mem_mb(_file_key(slide_path), json.dumps(preprocessing, sort_keys=True), mpp)


@lru_cache(maxsize=_CACHE_SIZE)
def _segment_mem_mb(key: tuple[str, int, int], preprocessing: str, mpp: float | None) -> int:
    from hmf.wsi.segmentation import segmentation_image_size
    from hmf.wsi.settings import resolve_preprocessing
    from hmf.wsi.slide import open_slide

    settings = resolve_preprocessing(json.loads(preprocessing))
    slide_path = key[0]
    try:
        with open_slide(slide_path, name=Path(slide_path).stem, mpp=mpp) as slide:
            width, height = segmentation_image_size(slide, settings.segmentation)
    except FileNotFoundError:
        raise
    except Exception:  # an unreadable slide: the job itself reports it, with the slide's name
        return UNREADABLE_SLIDE_MB
    return _round(SLIDE_JOB_MB + width * height * SEGMENT_BYTES_PER_PIXEL / MB)
