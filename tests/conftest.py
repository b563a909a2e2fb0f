"""Shared fixtures: real H&E sources, fetched once per machine into resources/sources."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def sources_dir() -> Path:
    return ROOT / "resources" / "sources"


@pytest.fixture(scope="session")
def aperio_slide(sources_dir) -> Path:
    from hmf.demo.sources import aperio_slide as fetch

    return fetch(sources_dir)


@pytest.fixture(scope="session")
def tumour_image(sources_dir) -> Path:
    from hmf.demo.sources import tumour_region as fetch

    return fetch(sources_dir)


def pytest_configure(config):
    # One intra-op thread per test process: results do not depend on the core count, and
    # tests do not oversubscribe a small machine.
    import torch

    torch.set_num_threads(1)


WORKFLOW_FILES = ("Snakefile", "rules", "workflow", "config", "src", "profiles", "envs", "pyproject.toml")


def copy_workflow(dest: Path) -> Path:
    """A copy of the workflow (not its results) in ``dest``, sharing the fetched H&E sources."""
    import shutil

    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    shutil.copytree(ROOT / "tests" / "configs", dest / "tests" / "configs")
    cached = ROOT / "resources" / "sources"
    if cached.is_dir():
        shutil.copytree(cached, dest / "resources" / "sources")
    return dest


def run_snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 1200):
    """Run the venv's snakemake in ``workdir``; on failure show its output and the failed logs."""
    import subprocess
    import sys

    cmd = [str(Path(sys.executable).with_name("snakemake")), *args]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        logs = []
        for log in sorted((workdir / "logs").rglob("*.log"))[-200:] if (workdir / "logs").exists() else []:
            text = log.read_text(errors="replace")
            if "Error" in text or "Traceback" in text:
                logs.append(f"--- {log}\n{text[-3000:]}")
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}\n"
            + "\n".join(logs[:5])
        )
    return proc


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, sources_dir, aperio_slide, tumour_image) -> Path:
    """The tiny CAMELYON17-shaped configuration run once, end to end, in a copy of the workflow."""
    workdir = copy_workflow(tmp_path_factory.mktemp("tiny") / "wf")
    run_snakemake(workdir, "--cores", "2", "--configfile", "tests/configs/tiny.yaml")
    return workdir
