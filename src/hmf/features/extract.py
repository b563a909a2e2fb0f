"""Patch features of one slide, the job of an ``extract_features`` rule: read the slide's patch
coordinates, encode every patch (:mod:`hmf.features.engine`) on the claimed device, write the
feature files (:func:`hmf.features.io.write_feature_files`) and the extraction stats.

``features.precision``: ``fp32`` (the default) gives CLAM's features; ``bf16`` runs the
encoder under bfloat16 autocast, on CPUs with bf16 instructions (AVX512_BF16, AMX) and on
CUDA; ``auto`` takes bf16 where the hardware has it. Features are stored as float32 either
way, and the precision used is recorded in the h5 file and the stats.

The features of a slide are held once, in the matrix the batches are written into; the files
are written from it without a second copy. Outputs are written under temporary names and
renamed when complete, so a killed job leaves nothing that looks finished, and a rerun
recomputes the same bytes.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from hmf.atomic import remove_stale_parts, write_json
from hmf.devices import resolve_device
from hmf.features.encoders import Encoder, build_encoder
from hmf.features.engine import PatchDataset, describe_layout, encode_patches
from hmf.features.io import write_feature_files
from hmf.features.settings import EncoderSettings, resolve_features
from hmf.precision import resolve_precision
from hmf.wsi.patching import read_coords
from hmf.wsi.slide import open_slide

log = logging.getLogger(__name__)


class _LogStream:
    """Progress into the rule's log through logging (the log's single writer): tqdm redraws
    its bar with carriage returns for terminals; here every redraw becomes one log line."""

    def __init__(self, logger: logging.Logger):
        self.logger = logger

    def write(self, text: str) -> None:
        for line in text.replace("\r", "\n").split("\n"):
            if line.strip():
                self.logger.info(line.strip())

    def flush(self) -> None:
        pass


_ENCODERS: dict[str, Encoder] = {}


def _cached_encoder(settings: EncoderSettings) -> Encoder:
    """One encoder per process and settings: a job that extracts several slides (features.
    slides_per_job) builds and warms the network once."""
    key = repr(settings)
    if key not in _ENCODERS:
        _ENCODERS[key] = build_encoder(settings)
    return _ENCODERS[key]


def extract_features(
    slide_path: str | os.PathLike,
    patches_h5: str | os.PathLike,
    out_h5: str | os.PathLike,
    out_pt: str | os.PathLike,
    features: Mapping[str, Any] | None = None,
    slide_id: str | None = None,
    mpp: float | None = None,
    stats_json: str | os.PathLike | None = None,
    log_file: str | None = None,
    threads: int | None = None,
    device: torch.device | str | None = None,
) -> dict:
    """Encode every patch listed in ``patches_h5`` and write the feature files of one slide.

    ``features`` is the ``features:`` config section (filled by the schema here); ``threads`` the job's thread count
    (used when ``features.num_threads`` is 0); with ``log_file`` (the rule's log, already set
    up by :func:`hmf.logs.setup_logging`) the progress bar goes to the log as lines; ``device``
    the device the job claimed (:func:`hmf.devices.torch_job`); None (outside a job) takes the
    one ``features.device`` names, unclaimed.
    Returns the stats (also written to ``stats_json`` when given).
    """
    start = time.perf_counter()
    enc_settings, runtime = resolve_features(features)
    out_h5, out_pt = Path(out_h5), Path(out_pt)
    for path in (out_h5, out_pt):
        remove_stale_parts(path)  # an earlier, killed run's temporary files
    device = resolve_device(runtime.device, key="features.device") if device is None else torch.device(device)
    coords, coords_attrs = read_coords(patches_h5)
    slide_id = slide_id or str(coords_attrs.get("name") or Path(slide_path).stem)
    n_threads = runtime.num_threads or threads or 0
    if n_threads:
        torch.set_num_threads(int(n_threads))
    encoder = _cached_encoder(enc_settings)
    slide = open_slide(slide_path, name=slide_id, mpp=mpp)
    dataset = PatchDataset(
        slide, coords, int(coords_attrs["patch_level"]), int(coords_attrs["patch_size"]), encoder.pixels
    )
    # With a log file the bar goes through logging, else to stderr as a terminal bar.
    stream = _LogStream(logging.getLogger("hmf.features.progress")) if log_file else None
    try:
        precision = resolve_precision(runtime.precision, device)
        log.info(
            "slide %s: %d patches, encoder %s (%s), device %s, %s",
            slide_id,
            len(coords),
            encoder.name,
            encoder.weights,
            device,
            describe_layout(runtime, device, len(coords), precision),
        )
        encode_start = time.perf_counter()
        feats = encode_patches(encoder, dataset, device, runtime, progress=stream, precision=precision)
        encode_seconds = time.perf_counter() - encode_start
    finally:
        slide.close()
    write_feature_files(
        out_h5,
        out_pt,
        feats,
        coords,
        coords_attrs,
        encoder,
        {
            "slide_id": slide_id,
            "patch_level": int(coords_attrs["patch_level"]),
            "patch_size": int(coords_attrs["patch_size"]),
            "precision": precision,
        },
        settings={"encoder": enc_settings, "precision": precision},
    )
    del feats
    seconds = time.perf_counter() - start
    stats = {
        "slide_id": slide_id,
        "n_patches": int(len(coords)),
        "encoder": encoder.name,
        "weights": encoder.weights,
        "dim": int(encoder.dim),
        "device": str(device),
        "precision": precision,
        "batch_size": runtime.batch_for(device, precision),
        "threads": torch.get_num_threads(),
        "seconds_encode": encode_seconds,
        "patches_per_s": (len(coords) / encode_seconds) if len(coords) and encode_seconds > 0 else None,
        "seconds": seconds,
    }
    if stats_json:
        write_json(stats_json, stats)
    log.info("slide %s: %d x %d features in %.1f s", slide_id, len(coords), encoder.dim, seconds)
    return stats
