"""Feature-extraction throughput on the real Aperio slide against this machine's compute limit.

Prints patches/s of the full pipeline as the workflow runs it (patch reads, resizing,
normalisation, the model; on the CPU in one stream per core), of the same pipeline on
patches already in memory (the model's share), the fp32 matmul rate measured with torch in
the same run, the compute limit (matmul GFLOP/s / 6.56 GFLOP per 224 x 224 patch of
ResNet50-trunc) and the ratios.

    .venv/bin/python benchmarks/bench_features.py [--n-patches 480] [--batch-size auto] [--cpu-optimize jit]

The pipeline runs --repeats times over the same patches; each run's rate and ratio are
printed and the headline is their median, so one slow spell of a shared or virtual machine
does not decide the figure. The matmul rate is the best of short samples taken before,
between and after the runs (the highest limit, so the ratios are the conservative ones).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hmf.features.encoders import EncoderSettings, build_encoder
from hmf.features.extract import (PatchDataset, RuntimeSettings, describe_layout, encode_patches, prepare_model,
                                  resolve_device)
from hmf.sources import aperio_slide
from hmf.wsi.patching import read_coords
from hmf.wsi.slide import open_slide
from hmf.wsi.steps import run_patching, run_segmentation

GFLOP_PER_PATCH = 6.56  # ResNet-50 up to layer3 at 224 x 224 (3.28 GMAC)


def matmul_gflops(seconds: float = 2.0, n: int = 2048) -> float:
    """Best fp32 matmul rate over short runs (GFLOP/s) with the current torch threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(3):
            a @ b
        best = max(best, 3 * 2 * n ** 3 / (time.perf_counter() - start) / 1e9)
    return best


class InMemoryPatches(torch.utils.data.Dataset):
    """Ready uint8 patches: the pipeline without reading and resizing."""

    def __init__(self, pixels: list[torch.Tensor], slide):
        self.pixels, self.slide = pixels, slide

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.pixels[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-patches", type=int, default=480)
    parser.add_argument("--batch-size", default="auto")
    parser.add_argument("--workers", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--streams", default="auto", help="CPU streams (auto: one per thread)")
    parser.add_argument("--cpu-optimize", default="jit", choices=["auto", "jit", "none"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="whole-pipeline runs; the headline is their median")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    slide_path = aperio_slide()
    work = Path(tempfile.mkdtemp(prefix="bench_features_"))
    cfg = {"preset": "bwh_biopsy", "patching": {"patch_size": 256, "step_size": 128}}
    run_segmentation(slide_path, "cmu", cfg, work / "c.geojson", work / "m.jpg", work / "s.json")
    run_patching(slide_path, "cmu", cfg, work / "c.geojson", work / "p.h5", work / "st.jpg")
    coords, attrs = read_coords(work / "p.h5")
    coords = np.resize(coords, (args.n_patches, 2))  # cycle the grid if the slide has fewer
    encoder = build_encoder(EncoderSettings(weights="random"))
    device = resolve_device(args.device)
    runtime = RuntimeSettings(
        batch_size=args.batch_size if args.batch_size == "auto" else int(args.batch_size),
        num_workers=args.workers if args.workers == "auto" else int(args.workers),
        cpu_streams=args.streams if args.streams == "auto" else int(args.streams),
        cpu_optimize=args.cpu_optimize, progress_interval_s=60)
    batch_size = runtime.batch_for(device)
    slide = open_slide(slide_path, name="cmu")
    dataset = PatchDataset(slide, coords, int(attrs["patch_level"]), int(attrs["patch_size"]), encoder.pixels)

    samples = [matmul_gflops()]
    start = time.perf_counter()
    model = prepare_model(encoder, device, runtime, len(coords), batch_size)
    prepare_s = time.perf_counter() - start
    warm = PatchDataset(slide, coords[: 2 * batch_size], dataset.patch_level, dataset.patch_size, encoder.pixels)
    encode_patches(encoder, warm, device, runtime, model=model)  # oneDNN primitive creation
    rates = []
    for _ in range(max(1, args.repeats)):
        start = time.perf_counter()
        features = encode_patches(encoder, dataset, device, runtime, model=model)
        rates.append(len(coords) / (time.perf_counter() - start))
        samples.append(matmul_gflops(seconds=1.0))
    in_memory = InMemoryPatches([dataset[i] for i in range(len(dataset))], dataset.slide)
    start = time.perf_counter()
    encode_patches(encoder, in_memory, device, runtime, model=model)
    model_only = len(in_memory) / (time.perf_counter() - start)
    samples.append(matmul_gflops())
    gflops = max(samples)
    limit = gflops / GFLOP_PER_PATCH
    assert features.shape == (len(coords), 1024) and torch.isfinite(features).all()
    median = statistics.median(rates)
    print(f"{describe_layout(runtime, device, len(coords))}, {len(coords)} patches of "
          f"{dataset.patch_size} px, device {device}, cpu_optimize {args.cpu_optimize} "
          f"(model prepared in {prepare_s:.1f} s)")
    print(f"fp32 matmul: {gflops:.1f} GFLOP/s (best of samples {', '.join(f'{g:.1f}' for g in samples)})")
    print(f"compute limit: {limit:.2f} patches/s ({GFLOP_PER_PATCH} GFLOP per patch)")
    print("pipeline runs: " + ", ".join(f"{r:.2f} patches/s (ratio {r / limit:.2f})" for r in rates))
    print(f"pipeline, median of {len(rates)} whole runs: {median:.2f} patches/s, ratio {median / limit:.2f}")
    print(f"patches already in memory (normalisation + model): {model_only:.2f} patches/s, "
          f"ratio {model_only / limit:.2f}")


if __name__ == "__main__":
    main()
