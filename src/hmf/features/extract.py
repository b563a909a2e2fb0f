"""Patch features of one slide: read patches, encode them in batches.

On CUDA, DataLoader worker processes read and resize patches (each opens its own OpenSlide
handle: ``Slide`` reopens lazily per process) and feed the GPU. On the CPU, batches go to
*streams*: threads that each read their batch and run the model on one core. Independent
single-core streams avoid the synchronisation of intra-op threads between layers, and reading
inside the stream (OpenSlide and PIL release the GIL) leaves no reader process competing with
the model for the cores; measured on 2 cores, this is about 10% faster than a reader process
feeding a 2-thread model. Readers hand over uint8 pixels and the normalisation runs per batch
(``Encoder.normalize``). The model runs channels-last under ``torch.inference_mode``.

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

import contextlib
import logging
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from hmf.atomic import atomic_path, remove_stale_parts, write_json
from hmf.devices import claim_device, unclaimed_device
from hmf.features.encoders import Encoder, EncoderError, EncoderSettings, build_encoder
from hmf.wsi.patching import read_coords
from hmf.wsi.slide import Slide, SlideError, open_slide

log = logging.getLogger(__name__)


# Patches per batch on the CPU, per stream and precision: fp32 is fastest at 2 (fits a core's
# L2 cache better than 4 or 8); bf16 kernels want larger batches.
CPU_BATCH = {"fp32": 2, "bf16": 8}
CUDA_BATCH = 128
PRECISIONS = ("fp32", "bf16", "auto")
# /proc/cpuinfo flags of the instructions oneDNN's bf16 kernels run on (x86: AVX512_BF16 and
# AMX; Arm: the BF16 extension). Without them, bf16 is emulated and slower than fp32.
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
# Freezing the model with TorchScript fuses conv+ReLU(+add) for oneDNN (10-30% faster on CPU)
# but costs a few seconds, so "auto" does it only for slides with at least this many patches.
JIT_MIN_PATCHES = 256


class FeaturesConfigError(ValueError):
    """A ``features:`` config value is unknown or out of range."""


@dataclass(frozen=True)
class RuntimeSettings:
    device: str = "auto"  # auto | cpu | cuda | cuda:<i>
    batch_size: int | str = "auto"  # auto: CPU_BATCH per CPU stream, 128 on CUDA
    num_workers: int | str = "auto"  # reader processes; auto: none on CPU (streams read), up to 8 on CUDA
    num_threads: int = 0  # torch CPU threads; 0: the job's threads / all cores
    cpu_streams: int | str = "auto"  # CPU: concurrent batches; auto: one per thread
    cpu_optimize: str = "auto"  # auto | jit | none: TorchScript-freeze the model on CPU
    precision: str = "fp32"  # fp32 | bf16 | auto
    progress_interval_s: float = 10.0

    def batch_for(self, device: torch.device, precision: str = "fp32") -> int:
        if self.batch_size != "auto":
            return int(self.batch_size)
        return CUDA_BATCH if device.type == "cuda" else CPU_BATCH[precision]


_ENCODER_KEYS = {f.name for f in fields(EncoderSettings)}
_RUNTIME_KEYS = {f.name for f in fields(RuntimeSettings)}
# Keys of the `features:` section that the workflow reads (job layout), not the extraction.
_WORKFLOW_KEYS = {"slides_per_job", "precomputed_dir"}


def resolve_features(config: dict | None) -> tuple[EncoderSettings, RuntimeSettings]:
    """Split and validate the ``features:`` config section."""
    config = {k: v for k, v in (config or {}).items() if k not in _WORKFLOW_KEYS}
    unknown = set(config) - _ENCODER_KEYS - _RUNTIME_KEYS
    if unknown:
        raise FeaturesConfigError(
            f"features: unknown key(s) {sorted(unknown)}; allowed: "
            f"{sorted(_ENCODER_KEYS | _RUNTIME_KEYS | _WORKFLOW_KEYS)}"
        )
    enc = {k: v for k, v in config.items() if k in _ENCODER_KEYS}
    for key in ("mean", "std"):
        if enc.get(key) is not None:
            enc[key] = tuple(float(v) for v in enc[key])
    if enc.get("weights") is not None:
        enc["weights"] = str(enc["weights"])
    enc["model_kwargs"] = dict(enc.get("model_kwargs") or {})
    encoder = replace(EncoderSettings(), **enc)
    runtime = replace(RuntimeSettings(), **{k: v for k, v in config.items() if k in _RUNTIME_KEYS})
    if runtime.batch_size != "auto" and (not isinstance(runtime.batch_size, int) or runtime.batch_size < 1):
        raise FeaturesConfigError(f"features.batch_size={runtime.batch_size!r}: use 'auto' or an integer >= 1")
    if runtime.cpu_optimize not in ("auto", "jit", "none"):
        raise FeaturesConfigError(f"features.cpu_optimize={runtime.cpu_optimize!r}: use auto, jit or none")
    if runtime.num_workers != "auto" and (not isinstance(runtime.num_workers, int) or runtime.num_workers < 0):
        raise FeaturesConfigError(f"features.num_workers={runtime.num_workers!r}: use 'auto' or an integer >= 0")
    if runtime.cpu_streams != "auto" and (not isinstance(runtime.cpu_streams, int) or runtime.cpu_streams < 1):
        raise FeaturesConfigError(f"features.cpu_streams={runtime.cpu_streams!r}: use 'auto' or an integer >= 1")
    if runtime.num_threads < 0:
        raise FeaturesConfigError(f"features.num_threads={runtime.num_threads}: must be >= 0")
    if runtime.precision not in PRECISIONS:
        raise FeaturesConfigError(f"features.precision={runtime.precision!r}: use {', '.join(PRECISIONS)}")
    return encoder, runtime


def cpu_flags() -> set[str]:
    """The feature flags of this CPU (``/proc/cpuinfo``); empty where the file does not exist."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):  # x86 | Arm
                    return set(value.split())
    except OSError:
        pass
    return set()


def bf16_unsupported(device: torch.device) -> str | None:
    """Why ``device`` cannot run bf16 natively, or None when it can."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return None
        return f"CUDA device {device} ({torch.cuda.get_device_name(device)}) has no native bf16"
    if device.type == "cpu":
        if set(CPU_BF16_FLAGS) & cpu_flags():
            return None
        return (
            "this CPU has no bf16 instructions (none of the /proc/cpuinfo flags "
            f"{', '.join(CPU_BF16_FLAGS)}); torch's CPU capability is "
            f"{torch.backends.cpu.get_cpu_capability()}"
        )
    return f"device {device} is not a CPU or a CUDA device"


def resolve_precision(requested: str, device: torch.device) -> str:
    """``fp32`` or ``bf16`` for ``features.precision`` on ``device``: ``auto`` takes bf16 where
    the hardware runs it natively; an explicit ``bf16`` where it does not is an error."""
    if requested == "fp32":
        return "fp32"
    reason = bf16_unsupported(device)
    if requested == "auto":
        return "fp32" if reason else "bf16"
    if requested == "bf16":
        if reason:
            raise FeaturesConfigError(
                f"features.precision=bf16: {reason}. Use fp32, or auto to take bf16 only where the hardware has it"
            )
        return "bf16"
    raise FeaturesConfigError(f"features.precision={requested!r}: use {', '.join(PRECISIONS)}")


def autocast_for(device: torch.device, precision: str):
    """The context the encoder runs under: bfloat16 autocast for ``bf16``, none for ``fp32``."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def resolve_device(requested: str) -> torch.device:
    """The device ``features.device`` names, unclaimed (benchmarks; jobs use :func:`claimed_device`)."""
    try:
        return torch.device(unclaimed_device(requested))
    except (ValueError, RuntimeError) as err:
        raise FeaturesConfigError(f"features.device={requested}: {err}") from None


@contextlib.contextmanager
def claimed_device(requested: str, gpus: int | None = None):
    """The device to run on, holding the card's lock while the block runs.

    Every device but ``cpu`` (``auto``, ``cuda``, ``cuda:<i>``) is claimed through
    :func:`hmf.devices.claim_device`, so concurrent jobs never share a card; ``gpus`` is the
    number of GPUs the job asked Snakemake for (0: ``auto`` runs on the CPU).
    """
    try:
        claim = claim_device(requested, gpus=gpus)
    except (ValueError, RuntimeError) as err:
        raise FeaturesConfigError(f"features.device={requested}: {err}") from None
    with claim:
        yield torch.device(claim.compute_device)  # the CPU for a simulated card (HMF_FAKE_GPUS)


class PatchDataset(Dataset):
    """Patches of one slide at ``patch_level`` and ``patch_size``, each made model-sized by
    ``pixels`` (``Encoder.pixels``: RGB image -> uint8 (H, W, 3) tensor).

    Readers hand over uint8 pixels, a quarter of the float32 bytes, and the normalisation
    runs per batch on the compute device (``Encoder.normalize``).
    """

    def __init__(self, slide: Slide, coords: np.ndarray, patch_level: int, patch_size: int, pixels):
        self.slide = slide
        self.coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
        self.patch_level = int(patch_level)
        self.patch_size = int(patch_size)
        self.pixels = pixels

    def __len__(self) -> int:
        return len(self.coords)

    def __getitem__(self, index: int) -> torch.Tensor:
        x, y = self.coords[index]
        return self.pixels(self.slide.read_region_image((x, y), self.patch_level, (self.patch_size, self.patch_size)))


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


def _worker_init(_worker_id: int) -> None:
    # Readers decode and resize; leave the cores' threads to the model.
    torch.set_num_threads(1)


def reader_processes(runtime: RuntimeSettings, device: torch.device, n_patches: int) -> int:
    if runtime.num_workers != "auto":
        return int(runtime.num_workers)
    if device.type != "cuda" or n_patches <= runtime.batch_for(device):
        return 0
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def uses_cpu_streams(device: torch.device, workers: int) -> bool:
    """CPU runs without reader processes encode in streams (see the module docstring)."""
    return device.type == "cpu" and workers == 0


def cpu_stream_layout(runtime: RuntimeSettings, n_batches: int) -> tuple[int, int]:
    """(streams, torch threads per stream) for ``n_batches`` on the CPU."""
    threads = max(1, torch.get_num_threads())
    streams = threads if runtime.cpu_streams == "auto" else int(runtime.cpu_streams)
    streams = max(1, min(streams, n_batches))
    return streams, max(1, threads // streams)


def describe_layout(runtime: RuntimeSettings, device: torch.device, n_patches: int, precision: str = "fp32") -> str:
    """How ``n_patches`` will be encoded, for logs: precision, batch, readers or streams, threads."""
    batch = runtime.batch_for(device, precision)
    workers = reader_processes(runtime, device, n_patches)
    if uses_cpu_streams(device, workers):
        streams, threads = cpu_stream_layout(runtime, -(-n_patches // batch))
        return f"{precision}, batch {batch}, {streams} CPU stream(s) of {threads} torch thread(s)"
    return f"{precision}, batch {batch}, {workers} reader process(es), {torch.get_num_threads()} torch thread(s)"


def prepare_model(
    encoder: Encoder,
    device: torch.device,
    runtime: RuntimeSettings,
    n_patches: int,
    batch_size: int,
    precision: str = "fp32",
):
    """The encoder in eval mode, channels-last on ``device``; TorchScript-frozen on the CPU
    when ``cpu_optimize`` asks for it (``auto``: slides with many patches). In bf16 the model
    is traced under autocast, so the frozen graph holds the weights already cast to bf16."""
    import warnings

    model = encoder.module.to(device).to(memory_format=torch.channels_last).eval()
    use_jit = device.type == "cpu" and (
        runtime.cpu_optimize == "jit" or (runtime.cpu_optimize == "auto" and n_patches >= JIT_MIN_PATCHES)
    )
    if not use_jit:
        return model
    example = torch.zeros(batch_size, 3, encoder.input_size, encoder.input_size).contiguous(
        memory_format=torch.channels_last
    )
    try:
        with torch.no_grad(), warnings.catch_warnings(), autocast_for(device, precision):
            warnings.simplefilter("ignore")  # TorchScript's deprecation notices
            # The trace check reruns the model outside autocast: it would compare fp32 with bf16.
            traced = torch.jit.trace(model, example, check_trace=precision == "fp32")
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
        return frozen
    except Exception as err:  # not traceable: run it eagerly
        log.warning("TorchScript freezing of %s failed (%s); running it eagerly", encoder.name, err)
        return model


def encode_patches(
    encoder: Encoder,
    dataset: PatchDataset,
    device: torch.device,
    runtime: RuntimeSettings,
    progress=None,
    model=None,
    on_batch=None,
    precision: str = "fp32",
) -> torch.Tensor:
    """Features (N, dim) float32 on the CPU for every patch of ``dataset``, in order.

    ``model``: the encoder already made ready by :func:`prepare_model` (else done here);
    ``on_batch(done)`` is called after each batch with the number of patches encoded so far;
    ``precision``: ``fp32`` or ``bf16`` (already resolved, see :func:`resolve_precision`).
    Batches are the same whatever the number of streams or workers: patches ``[k*B, (k+1)*B)``.
    The batches are written into one (N, dim) matrix, the only copy of the features.
    """
    from tqdm import tqdm

    n = len(dataset)
    if n == 0:
        return torch.zeros((0, encoder.dim), dtype=torch.float32)
    batch_size = runtime.batch_for(device, precision)
    if model is None:
        model = prepare_model(encoder, device, runtime, n, batch_size, precision)
    workers = reader_processes(runtime, device, n)
    out = torch.empty((n, encoder.dim), dtype=torch.float32)
    bar = tqdm(
        total=n,
        unit="patch",
        file=progress,
        mininterval=runtime.progress_interval_s,
        desc=f"{dataset.slide.name} features",
        dynamic_ncols=False,
        ascii=True,
    )
    done = 0
    with bar:
        if uses_cpu_streams(device, workers):
            batches = _encode_in_cpu_streams(encoder, dataset, model, runtime, batch_size, out, precision)
        else:
            batches = _encode_from_loader(encoder, dataset, model, device, batch_size, workers, out, precision)
        for size in batches:
            done += size
            bar.update(size)
            if on_batch is not None:
                on_batch(done)
    return out


def _check_finite(features: torch.Tensor, slide: str, start: int) -> None:
    """Per batch, so that no full-size mask of the features is ever made."""
    if not torch.isfinite(features).all():
        raise RuntimeError(
            f"slide {slide}: the encoder produced non-finite features (patches {start}-{start + len(features) - 1})"
        )


def _encode_from_loader(
    encoder: Encoder,
    dataset: PatchDataset,
    model,
    device: torch.device,
    batch_size: int,
    workers: int,
    out: torch.Tensor,
    precision: str = "fp32",
):
    """Reader processes feed the model on ``device``; yields each batch's size once encoded."""
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        worker_init_fn=_worker_init if workers else None,
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )
    done = 0
    with torch.inference_mode():
        for batch in loader:
            with autocast_for(device, precision):
                features = model(encoder.normalize(batch.to(device, non_blocking=True)))
            _check_finite(features, dataset.slide.name, done)
            out[done : done + len(batch)] = features.float().cpu()
            done += len(batch)
            yield len(batch)


def _encode_in_cpu_streams(
    encoder: Encoder,
    dataset: PatchDataset,
    model,
    runtime: RuntimeSettings,
    batch_size: int,
    out: torch.Tensor,
    precision: str = "fp32",
):
    """Each stream (a thread with its share of the torch threads) reads one batch and encodes
    it; yields batch sizes in order. At most two batches per stream are in flight."""
    n = len(dataset)
    starts = range(0, n, batch_size)
    streams, threads_per_stream = cpu_stream_layout(runtime, len(starts))
    total_threads = torch.get_num_threads()
    cpu = torch.device("cpu")

    def encode(start: int) -> int:
        stop = min(start + batch_size, n)
        pixels = torch.stack([dataset[i] for i in range(start, stop)])
        with torch.inference_mode(), autocast_for(cpu, precision):  # autocast state is per thread
            features = model(encoder.normalize(pixels))
        _check_finite(features, dataset.slide.name, start)
        out[start:stop] = features
        return stop - start

    # OpenMP thread counts are per thread: each stream sets its own.
    pool = ThreadPoolExecutor(
        streams, thread_name_prefix="features-stream", initializer=torch.set_num_threads, initargs=(threads_per_stream,)
    )
    pending: deque = deque()
    try:
        for start in starts:
            pending.append(pool.submit(encode, start))
            if len(pending) >= 2 * streams:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True)
        torch.set_num_threads(total_threads)


def _remove_stale_parts(path: Path) -> None:
    """Delete temporary files an earlier, killed run left beside ``path`` (its own only)."""
    remove_stale_parts(path)


def write_feature_files(
    out_h5: str | os.PathLike,
    out_pt: str | os.PathLike,
    features: torch.Tensor,
    coords: np.ndarray,
    coords_attrs: dict,
    encoder: Encoder,
    extra_attrs: dict,
) -> None:
    """``h5_files/<slide>.h5`` (features, coords, attributes) and ``pt_files/<slide>.pt`` (features).

    Both are written from ``features`` itself (float32, contiguous, a whole storage), without a
    second copy: h5py writes straight from the array's memory and ``torch.save`` from the
    tensor's storage. The ``.pt`` keeps CLAM's layout: the features tensor alone.
    """
    if (
        features.dtype != torch.float32
        or not features.is_contiguous()
        or features.storage_offset() != 0
        or features.untyped_storage().nbytes() != features.numel() * 4
    ):
        # Never the case for encode_patches' output; a view would make torch.save write its whole storage.
        features = features.to(torch.float32).contiguous().clone()
    with atomic_path(out_h5) as tmp:
        with h5py.File(tmp, "w") as fh:
            fh.create_dataset("features", data=features.numpy())
            dset = fh.create_dataset("coords", data=np.asarray(coords, dtype=np.int64).reshape(-1, 2))
            for key, value in coords_attrs.items():
                if key != "seconds":  # keeps the file a pure function of its inputs
                    dset.attrs[key] = value
            fh.attrs["encoder"] = encoder.name
            fh.attrs["weights"] = encoder.weights
            fh.attrs["dim"] = int(encoder.dim)
            fh.attrs["input_size"] = int(encoder.input_size)
            for key, value in extra_attrs.items():
                fh.attrs[key] = value
    with atomic_path(out_pt) as tmp:
        torch.save(features, tmp)


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
    features: dict | None = None,
    slide_id: str | None = None,
    mpp: float | None = None,
    stats_json: str | os.PathLike | None = None,
    log_file: str | None = None,
    threads: int | None = None,
    gpus: int | None = None,
) -> dict:
    """Encode every patch listed in ``patches_h5`` and write the feature files of one slide.

    ``features`` is the ``features:`` config section; ``threads`` the job's thread count
    (used when ``features.num_threads`` is 0); with ``log_file`` (the rule's log, already set
    up by :func:`hmf.logs.setup_logging`) the progress bar goes to the log as lines; ``gpus``
    the GPUs the job asked Snakemake for (see :func:`claimed_device`).
    Returns the stats (also written to ``stats_json`` when given).
    """
    start = time.perf_counter()
    enc_settings, runtime = resolve_features(features)
    out_h5, out_pt = Path(out_h5), Path(out_pt)
    for path in (out_h5, out_pt):
        _remove_stale_parts(path)
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
        with claimed_device(runtime.device, gpus) as device:
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


__all__ = [
    "EncoderError",
    "FeaturesConfigError",
    "SlideError",
    "extract_features",
    "resolve_features",
    "resolve_device",
    "resolve_precision",
    "encode_patches",
    "PatchDataset",
    "write_feature_files",
    "describe_layout",
]
