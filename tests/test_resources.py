"""Memory requests estimated from a job's own inputs, not from the cohort."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from snakemake.exceptions import is_file_not_found_error

from hmf import resources


def _features(path, n, dim=1024):
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as fh:
        fh.create_dataset("features", (n, dim), dtype="float32")  # shape only: nothing written


def test_training_memory_follows_the_largest_bag_not_the_number_of_slides(tmp_path):
    from hmf.features.index import write_feature_index

    _features(tmp_path / "big.h5", 100_000)
    small = []
    for i in range(50):
        _features(tmp_path / f"s{i}.h5", 1_000)
        small.append(tmp_path / f"s{i}.h5")

    def index(name, files):
        write_feature_index([f.stem for f in files], files, tmp_path / name)
        return tmp_path / name

    one = resources.train_slide_mem_mb("abmil", index("one.csv", [tmp_path / "big.h5"]), cache_mb=1024)
    many = resources.train_slide_mem_mb("abmil", index("many.csv", [tmp_path / "big.h5", *small]), cache_mb=1024)
    assert one == many
    few = index("small.csv", small)
    assert resources.train_slide_mem_mb("abmil", few, cache_mb=1024) < one  # ~400 MB less of bag
    assert resources.train_slide_mem_mb("abmil", few, cache_mb=3072) == (
        resources.train_slide_mem_mb("abmil", few, cache_mb=1024) + 2048
    )
    assert one % 256 == 0


def test_extraction_memory_follows_the_patch_count(tmp_path):
    for name, n in (("few", 10), ("many", 200_000)):
        with h5py.File(tmp_path / f"{name}.h5", "w") as fh:
            fh["coords"] = np.zeros((n, 2), dtype=np.int64)
    few = resources.extract_mem_mb([tmp_path / "few.h5"])
    many = resources.extract_mem_mb([tmp_path / "many.h5"])
    assert many - few >= 200_000 * 1024 * 4 / 2**20 - 256


def test_inputs_still_to_be_made_defer_the_estimate(tmp_path):
    """Snakemake evaluates the estimate again once the input exists (recognised by its name)."""
    missing = str(tmp_path / "later.h5")
    for call in (
        lambda: resources.train_slide_mem_mb("hmf", missing, 0),
        lambda: resources.extract_mem_mb([missing]),
        lambda: resources.segment_mem_mb(missing, None),
    ):
        with pytest.raises(FileNotFoundError) as err:
            call()
        assert is_file_not_found_error(err.value, [missing])


def test_segmentation_memory_from_the_slide(aperio_slide, tmp_path):
    real = resources.segment_mem_mb(aperio_slide, None)
    assert real >= resources.SLIDE_JOB_MB
    junk = tmp_path / "junk.svs"
    junk.write_bytes(b"not a slide")
    assert resources.segment_mem_mb(junk, None) == resources.UNREADABLE_SLIDE_MB


def test_an_estimate_reads_its_file_once_while_the_file_is_unchanged(tmp_path, monkeypatch):
    """Snakemake re-evaluates resources on every scheduler pass while a job waits."""
    import hmf.features.threads as threads

    read = []
    real = threads.patch_count
    monkeypatch.setattr(threads, "patch_count", lambda path: read.append(path) or real(path))
    coords = tmp_path / "coords.h5"
    with h5py.File(coords, "w") as fh:
        fh["coords"] = np.zeros((10, 2), dtype=np.int64)
    few = resources.extract_mem_mb([coords])
    assert resources.extract_mem_mb([coords]) == few
    assert len(read) == 1
    with h5py.File(coords, "w") as fh:  # rewritten: another size, read again
        fh["coords"] = np.zeros((200_000, 2), dtype=np.int64)
    assert resources.extract_mem_mb([coords]) > few
    assert len(read) == 2


def test_a_dry_run_leaves_the_segmentation_estimate_to_the_run(aperio_slide, tmp_path):
    """Planning does not open every slide of the cohort: a dry run shows the segmentation
    job's memory as still to be estimated (the run estimates it from the slide)."""
    from standalone import StandalonePreprocessing

    config = {"preprocessing": {"preset": "bwh_biopsy"}, "features": {"device": "cpu"}}
    run = StandalonePreprocessing(tmp_path, {"cmu": aperio_slide}, config)
    proc = run.snakemake("results/t/contours/cmu.geojson", args=("-n", "--quiet", "progress"), timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    block = (proc.stdout + proc.stderr).split("rule segment_and_patch:", 1)[1].split("\n\n", 1)[0]
    assert "mem_mb=<TBD>" in block, block
