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
    from hmf.sources import aperio_slide as fetch

    return fetch(sources_dir)


@pytest.fixture(scope="session")
def tumour_image(sources_dir) -> Path:
    from hmf.sources import tumour_region as fetch

    return fetch(sources_dir)


def pytest_configure(config):
    # One intra-op thread per test process: results do not depend on the core count, and
    # tests do not oversubscribe a small machine.
    import torch

    torch.set_num_threads(1)
