"""Feature-extraction throughput on the real Aperio slide against this machine's compute limit,
in fp32 and in bf16, and the same for the workflow's extraction jobs on a 10-slide cohort.

Engine, per precision: patches/s of the full pipeline as the workflow runs it (patch reads,
resizing, normalisation, the model; on the CPU in one stream per core), of the same pipeline
on patches already in memory (the model's share), the matmul rate of the same dtype measured
with torch in the same run, the compute limit (matmul GFLOP/s / 6.56 GFLOP per 224 x 224 patch
of ResNet50-trunc) and the ratios. bf16 is measured where the hardware has it.

Workflow (``--workflow-slides N``, 0 to skip): N pyramidal mosaics of the real slide (each a
3 x 3 mosaic with its own flips, about 430 patches) are segmented, patched and encoded by
Snakemake with the workflow's own rules (rules/preprocess.smk) and ``--cores`` all, from a clean
results folder. Printed: wall time and patches/s of the whole run against the time the cohort's
patches x 6.56 GFLOP take at the measured matmul rate.

    .venv/bin/python benchmarks/bench_features.py [--n-patches 480] [--precisions fp32,bf16]
        [--batch-size auto] [--workflow-slides 10]

The pipeline runs --repeats times over the same patches; each run's rate and ratio are
printed and the headline is their median, so one slow spell of a shared or virtual machine
does not decide the figure. The matmul rate is the best of short samples taken before,
between and after the runs (the highest limit, so the ratios are the conservative ones).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hmf.demo.sources import aperio_slide
from hmf.demo.writer import write_pyramid_tiff
from hmf.devices import resolve_device
from hmf.features.encoders import build_encoder
from hmf.features.engine import PatchDataset, describe_layout, encode_patches, prepare_model
from hmf.features.settings import encoder_settings, runtime_settings
from hmf.precision import bf16_unsupported
from hmf.wsi.patching import read_coords
from hmf.wsi.slide import open_slide
from hmf.wsi.steps import run_patching, run_segmentation

# The tests' harness that runs the preprocessing rules on their own (tests/standalone.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from standalone import StandalonePreprocessing  # noqa: E402

GFLOP_PER_PATCH = 6.56  # ResNet-50 up to layer3 at 224 x 224 (3.28 GMAC)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def matmul_gflops(dtype: torch.dtype = torch.float32, seconds: float = 2.0, n: int = 2048) -> float:
    """Best matmul rate of ``dtype`` over short runs (GFLOP/s) with the current torch threads."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(3):
            a @ b
        best = max(best, 3 * 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best


class InMemoryPatches(torch.utils.data.Dataset):
    """Ready uint8 patches: the pipeline without reading and resizing."""

    def __init__(self, pixels: list[torch.Tensor], slide):
        self.pixels, self.slide = pixels, slide

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.pixels[index]


def engine(precision: str, args, encoder, dataset: PatchDataset, device: torch.device) -> float:
    """Prints the engine's figures for one precision; returns the matmul rate."""
    runtime = runtime_settings(
        batch_size=args.batch_size if args.batch_size == "auto" else int(args.batch_size),
        num_workers=args.workers if args.workers == "auto" else int(args.workers),
        cpu_streams=args.streams if args.streams == "auto" else int(args.streams),
        cpu_optimize=args.cpu_optimize,
        progress_interval_s=60,
    )
    batch_size = runtime.batch_for(device, precision)
    dtype = DTYPES[precision]
    samples = [matmul_gflops(dtype)]
    start = time.perf_counter()
    model = prepare_model(encoder, device, runtime, len(dataset), batch_size, precision)
    prepare_s = time.perf_counter() - start
    warm = PatchDataset(
        dataset.slide,
        dataset.coords[: 2 * batch_size * max(1, torch.get_num_threads())],
        dataset.patch_level,
        dataset.patch_size,
        encoder.pixels,
    )
    encode_patches(encoder, warm, device, runtime, model=model, precision=precision)  # oneDNN primitives
    rates = []
    for _ in range(max(1, args.repeats)):
        start = time.perf_counter()
        features = encode_patches(encoder, dataset, device, runtime, model=model, precision=precision)
        rates.append(len(dataset) / (time.perf_counter() - start))
        samples.append(matmul_gflops(dtype, seconds=1.0))
    in_memory = InMemoryPatches([dataset[i] for i in range(len(dataset))], dataset.slide)
    start = time.perf_counter()
    encode_patches(encoder, in_memory, device, runtime, model=model, precision=precision)
    model_only = len(in_memory) / (time.perf_counter() - start)
    samples.append(matmul_gflops(dtype))
    gflops = max(samples)
    limit = gflops / GFLOP_PER_PATCH
    assert features.shape == (len(dataset), 1024) and torch.isfinite(features).all()
    median = statistics.median(rates)
    print(
        f"\n== {precision}: {describe_layout(runtime, device, len(dataset), precision)}, {len(dataset)} patches "
        f"of {dataset.patch_size} px, device {device}, cpu_optimize {args.cpu_optimize} "
        f"(model prepared in {prepare_s:.1f} s)"
    )
    print(f"{precision} matmul: {gflops:.1f} GFLOP/s (best of samples {', '.join(f'{g:.1f}' for g in samples)})")
    print(f"compute limit: {limit:.2f} patches/s ({GFLOP_PER_PATCH} GFLOP per patch)")
    print("pipeline runs: " + ", ".join(f"{r:.2f} patches/s (ratio {r / limit:.2f})" for r in rates))
    print(f"pipeline, median of {len(rates)} whole runs: {median:.2f} patches/s, ratio {median / limit:.2f}")
    print(
        f"patches already in memory (normalisation + model): {model_only:.2f} patches/s, ratio {model_only / limit:.2f}"
    )
    return gflops


def mosaic_slide(src: Path, out: Path, seed: int, tiles: int = 3) -> Path:
    """A ``tiles`` x ``tiles`` mosaic of the slide, each tile flipped its own way, as a tiled
    pyramidal JPEG TIFF (4 levels, mpp tags)."""
    slide = open_slide(src)
    rgb = slide.read_region((0, 0), 0, slide.dimensions)
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(tiles):
        row = []
        for _ in range(tiles):
            flip = rng.integers(0, 4)
            row.append(rgb[:: 1 - 2 * (flip & 1), :: 1 - 2 * (flip >> 1)])
        rows.append(np.concatenate(row, 1))
    write_pyramid_tiff(out, np.ascontiguousarray(np.concatenate(rows, 0)), slide.mpp, downsamples=(1, 2, 4, 8))
    return out


def workflow(precision: str, n_slides: int, gflops: float, work: Path) -> None:
    """Wall time of the extraction rules on ``n_slides`` mosaics, from a clean results folder."""
    slides_dir = work / "slides"
    slides_dir.mkdir(exist_ok=True)
    slides = {}
    for i in range(n_slides):
        path = slides_dir / f"m{i:02d}.tif"
        if not path.exists():
            mosaic_slide(aperio_slide(), path, seed=i)
        slides[f"m{i:02d}"] = str(path)
    run = StandalonePreprocessing(
        work / f"run_{precision}",
        slides,
        {
            "preprocessing": {"preset": "bwh_biopsy", "segmentation": {}, "patching": {}},
            "features": {
                "encoder": "resnet50_trunc",
                "weights": "random",
                "device": "cpu",
                "slides_per_job": 1,
                "precision": precision,
            },
        },
        name="b",
    )
    targets = [path for s in slides for path in (*run.features(s)[:2], f"{run.results}/stitches/{s}.jpg")]
    start = time.perf_counter()
    proc = run.snakemake(*targets, cores="all")
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"workflow run failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    patches = sum(read_coords(run.folder / f"{run.results}/patches/{s}.h5")[0].shape[0] for s in slides)
    ideal = patches * GFLOP_PER_PATCH / gflops
    print(
        f"\n== workflow, {precision}: {n_slides} slides, {patches} patches, `features` rules from a clean "
        f"results folder with --cores all ({os.cpu_count()}): {wall:.1f} s wall, {patches / wall:.2f} patches/s; "
        f"the patches at the {gflops:.0f} GFLOP/s matmul rate: {ideal:.1f} s, ratio {ideal / wall:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-patches", type=int, default=480)
    parser.add_argument("--precisions", default="fp32,bf16", help="comma-separated; bf16 where the hardware has it")
    parser.add_argument("--batch-size", default="auto")
    parser.add_argument("--workers", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--streams", default="auto", help="CPU streams (auto: one per thread)")
    parser.add_argument("--cpu-optimize", default="jit", choices=["auto", "jit", "none"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="whole-pipeline runs; the headline is their median")
    parser.add_argument("--workflow-slides", type=int, default=10, help="slides of the workflow run; 0: skip it")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device, key="--device")
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    for precision in [p for p in precisions if p == "bf16"]:
        reason = bf16_unsupported(device)
        if reason:
            print(f"bf16 skipped: {reason}")
            precisions.remove(precision)
    slide_path = aperio_slide()
    work = Path(tempfile.mkdtemp(prefix="bench_features_"))
    cfg = {"preset": "bwh_biopsy", "patching": {"patch_size": 256, "step_size": 128}}
    run_segmentation(slide_path, "cmu", cfg, work / "c.geojson", work / "m.jpg", work / "s.json")
    run_patching(slide_path, "cmu", cfg, work / "c.geojson", work / "p.h5", work / "st.jpg")
    coords, attrs = read_coords(work / "p.h5")
    coords = np.resize(coords, (args.n_patches, 2))  # cycle the grid if the slide has fewer
    encoder = build_encoder(encoder_settings(weights="random"))
    slide = open_slide(slide_path, name="cmu")
    dataset = PatchDataset(slide, coords, int(attrs["patch_level"]), int(attrs["patch_size"]), encoder.pixels)
    print(
        f"CPU: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"(capability {torch.backends.cpu.get_cpu_capability()}); load average {os.getloadavg()[0]:.2f}"
    )
    rates = {precision: engine(precision, args, encoder, dataset, device) for precision in precisions}
    for precision in precisions if args.workflow_slides > 0 else []:
        workflow(precision, args.workflow_slides, rates[precision], work)
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
