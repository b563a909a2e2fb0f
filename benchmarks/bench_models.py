"""Cost of every slide model on one bag: seconds per training step and per inference pass, and
the peak resident memory of the process, at bag sizes of real slides (10^3 to 10^5 patches).

Each (model, size, precision) runs in a fresh Python process, so the peak memory is that
run's alone. A run builds the model with its default recipe (``hmf.models.registry``), draws
random 1024-d features (CLAM's ResNet50-trunc width), patch coordinates on a 256-px grid in two
tissue fragments offset from each other (GATMIL's graph), and a random text bank of 24 x 384
(HMF), after a warm-up on a 64-patch bag times one training step (forward, loss, backward, optimiser
step) and one prediction (eval mode, ``torch.inference_mode``). ``--bf16`` adds runs under bf16
autocast. The peak memory includes the bag (0.4 GB at 10^5 patches) and the Python/torch
process itself (about 0.8 GB).

    .venv/bin/python benchmarks/bench_models.py --sizes 1000 10000 100000 --threads 2 --bf16

``measure(model, n, threads, bf16)`` is the importable entry point (one fresh process).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FEATURE_DIM = 1024
N_CLASSES = 4
TEXT_BANK = (24, 384)  # descriptions x width of the text encoder (MiniLM)
PATCH_STEP = 256
DEFAULT_SIZES = (1_000, 10_000, 100_000)
DEFAULT_MAX_RSS_GB = 12.0  # a run above this is stopped (the machine is shared)
WARMUP_PATCHES = 64


def cpu_bf16_flags() -> list[str]:
    """The bf16 instruction flags of this CPU (``/proc/cpuinfo``: AVX-512-BF16, AMX)."""
    from hmf.precision import CPU_BF16_FLAGS, cpu_flags

    flags = cpu_flags()
    return [flag for flag in (*CPU_BF16_FLAGS, "amx_tile") if flag in flags]


def fragment_coords(n: int, seed: int = 0):
    """``n`` patch positions (level-0 px) on two grids with step 256 whose origins are offset
    by a non-multiple of the step, as CLAM patches two tissue fragments."""
    import torch

    g = torch.Generator().manual_seed(seed)
    first = n // 2
    coords = []
    for count, origin in ((first, (0, 0)), (n - first, None)):
        side = max(1, math.ceil(math.sqrt(count / 0.8)))  # 80 % of the bounding box is tissue
        cells = torch.randperm(side * side, generator=g)[:count]
        grid = torch.stack([cells % side, cells // side], 1) * PATCH_STEP
        if origin is None:  # the second fragment starts right of the first, off its grid
            origin = (int(coords[0][:, 0].max()) + PATCH_STEP + 1037, 123)
        coords.append(grid + torch.tensor(origin))
    return torch.cat(coords)


def _run(model_name: str, n: int, threads: int, bf16: bool, seed: int = 0) -> dict:
    """One training step and one prediction in this process (the child's side)."""
    import torch

    from hmf.models import build_optimizer, build_slide_model, training_defaults

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    recipe = training_defaults(model_name)
    text_dim = TEXT_BANK[1] if model_name == "hmf" else None
    model = build_slide_model(model_name, FEATURE_DIM, N_CLASSES, text_dim=text_dim)
    optimizer = build_optimizer(model.parameters(), recipe["optimizer"])
    inputs = {"features": torch.randn(n, FEATURE_DIM)}
    if model.needs_coords:
        inputs["coords"] = fragment_coords(n, seed)
    context = {"class_weights": torch.ones(N_CLASSES)}
    if model.requires_text:
        inputs["text"] = torch.randn(*TEXT_BANK)
        context["prompt_classes"] = torch.arange(TEXT_BANK[0]) % N_CLASSES
    label = torch.tensor(1)
    precision = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

    # Warm-up on a small bag: one-time costs (kernel selection, allocator) stay out of the figures.
    small = {k: (v[:WARMUP_PATCHES] if k != "text" else v) for k, v in inputs.items()}
    model.train()
    with precision:
        model.loss(model(**small), label, context).backward()
    model.zero_grad(set_to_none=True)
    model.eval()
    with torch.inference_mode(), precision:
        model(**small)

    model.train()
    started = time.perf_counter()
    with precision:
        output = model(**inputs)
        loss = model.loss(output, label, context)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    step_s = time.perf_counter() - started
    del output, loss

    model.eval()
    started = time.perf_counter()
    with torch.inference_mode(), precision:
        logits = model(**inputs)["logits"]
    infer_s = time.perf_counter() - started
    if not torch.isfinite(logits.float()).all():
        raise FloatingPointError(f"{model_name}: non-finite logits at N={n}")
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "model": model_name,
        "n": n,
        "threads": threads,
        "precision": "bf16" if bf16 else "fp32",
        "step_s": round(step_s, 3),
        "infer_s": round(infer_s, 3),
        "peak_rss_gb": round(peak_kib / 2**20, 3),
    }


def _rss_gb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def measure(
    model: str,
    n: int,
    threads: int = 2,
    bf16: bool = False,
    *,
    timeout_s: float = 3600,
    max_rss_gb: float = DEFAULT_MAX_RSS_GB,
) -> dict:
    """Seconds per training step and per inference pass, and peak RSS (GB), of ``model`` on one
    bag of ``n`` random patches, measured in a fresh process with ``threads`` torch threads.

    The dict has ``model, n, threads, precision, step_s, infer_s, peak_rss_gb``, or ``error``
    (with the fields that are known) when the run failed, ran out of time or was stopped for
    passing ``max_rss_gb``.
    """
    cmd = [sys.executable, __file__, "--child", model, str(n), str(threads), "1" if bf16 else "0"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    stopped: list[str] = []

    def watch() -> None:  # stop a run that outgrows the memory cap or the time limit
        started = time.monotonic()
        while proc.poll() is None:
            if _rss_gb(proc.pid) > max_rss_gb:
                stopped.append(f"stopped above {max_rss_gb:g} GB resident")
                proc.kill()
            elif time.monotonic() - started > timeout_s:
                stopped.append(f"stopped after {timeout_s:g} s")
                proc.kill()
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, err = proc.communicate()
    watcher.join()
    base = {"model": model, "n": n, "threads": threads, "precision": "bf16" if bf16 else "fp32"}
    if stopped or proc.returncode != 0:
        reason = stopped[0] if stopped else f"exit {proc.returncode}: {err.strip().splitlines()[-1:] or ''}"
        return {**base, "error": reason}
    return json.loads(out.strip().splitlines()[-1])


def format_table(rows: list[dict]) -> str:
    """A Markdown table: one line per model and size, step / inference seconds and peak GB per precision."""
    precisions = sorted({r["precision"] for r in rows}, key=["fp32", "bf16"].index)
    head = ["model", "N"] + [f"{p} {what}" for p in precisions for what in ("step s", "infer s", "peak GB")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keys = list(dict.fromkeys((r["model"], r["n"]) for r in rows))
    for model, n in keys:
        cells = [model, f"{n:,}"]
        for p in precisions:
            row = next((r for r in rows if (r["model"], r["n"], r["precision"]) == (model, n, p)), None)
            if row is None:
                cells += ["", "", ""]
            elif "error" in row:
                cells += [row["error"], "", ""]
            else:
                cells += [f"{row['step_s']:.2f}", f"{row['infer_s']:.2f}", f"{row['peak_rss_gb']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT / "src"))
    from hmf.models import SLIDE_MODELS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(SLIDE_MODELS), choices=SLIDE_MODELS)
    parser.add_argument("--sizes", nargs="+", type=int, default=list(DEFAULT_SIZES), help="patches per bag")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run")
    parser.add_argument("--bf16", action="store_true", help="also run every case under bf16 autocast")
    parser.add_argument(
        "--max-rss-gb", type=float, default=DEFAULT_MAX_RSS_GB, help="stop a run whose resident memory passes this"
    )
    parser.add_argument("--timeout-s", type=float, default=3600, help="stop a run after this long")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)

    print(f"torch threads per run: {args.threads}; load average {os.getloadavg()[0]:.2f}", flush=True)
    if args.bf16:
        flags = cpu_bf16_flags()
        print("CPU bf16 instructions: " + (", ".join(flags) if flags else "none (bf16 is emulated, slow)"), flush=True)
    rows = []
    for model in args.models:
        for n in args.sizes:
            for bf16 in (False, True) if args.bf16 else (False,):
                row = measure(model, n, args.threads, bf16, timeout_s=args.timeout_s, max_rss_gb=args.max_rss_gb)
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        sys.path.insert(0, str(ROOT / "src"))
        _, _, name, size, n_threads, use_bf16 = sys.argv
        print(json.dumps(_run(name, int(size), int(n_threads), use_bf16 == "1")))
    else:
        sys.exit(main())
