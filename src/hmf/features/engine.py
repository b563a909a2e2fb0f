"""The encoding engine: the patches of one slide through the encoder, in batches.

On CUDA, DataLoader worker processes read and resize patches (each opens its own OpenSlide
handle: ``Slide`` reopens lazily per process) and feed the GPU. On the CPU, batches go to
*streams*: threads that each read their batch and run the model on one core. Independent
single-core streams avoid the synchronisation of intra-op threads between layers, and reading
inside the stream (OpenSlide and PIL release the GIL) leaves no reader process competing with
the model for the cores; measured on 2 cores, this is about 10% faster than a reader process
feeding a 2-thread model. Readers hand over uint8 pixels and the normalisation runs per batch
(``Encoder.normalize``). The model runs channels-last under ``torch.inference_mode``, in fp32
or under bfloat16 autocast (``features.precision``, see :func:`hmf.precision.resolve_precision`).

The batches are written into one (N, dim) float32 matrix, the only copy of a slide's features.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from hmf.features.encoders import Encoder
from hmf.features.settings import RuntimeSettings
from hmf.precision import autocast_for
from hmf.wsi.slide import Slide

log = logging.getLogger(__name__)

# Freezing the model with TorchScript fuses conv+ReLU(+add) for oneDNN (10-30% faster on CPU)
# but costs a few seconds, so "auto" does it only for slides with at least this many patches.
JIT_MIN_PATCHES = 256


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
    ``precision``: ``fp32`` or ``bf16`` (already resolved, see :func:`hmf.precision.resolve_precision`).
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
