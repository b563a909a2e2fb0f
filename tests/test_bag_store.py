"""Bags streamed from disk: read when a step needs them, a bounded cache, the same numbers as
bags held in memory, CLAM's .pt files, clear errors, and resume states tied to the inputs."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from synthetic import make_cohort

from hmf.features.io import FeatureFileError, check_feature_folder, describe
from hmf.tasks import get_task
from hmf.training import loop, standardise
from hmf.training.bags import BagStore, scan_slides
from hmf.training.slide import SlideOutputs, train_slide_fold

TASK = get_task("camelyon17")
FAST = {"max_epochs": 2, "patience": 10, "seed": 1}


def _write_h5(path: Path, n: int, dim: int, coords: bool = True, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    features = rng.normal(3.0, 2.0, size=(n, dim)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as fh:
        fh["features"] = features
        if coords:
            fh["coords"] = np.arange(2 * n, dtype=np.int64).reshape(n, 2) * 256
    return features


def _sheet(ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"slide_id": ids, "patient_id": [f"p{i}" for i in range(len(ids))], "node": [""] * len(ids)})


def test_describe_reads_shapes_of_h5_and_pt(tmp_path):
    _write_h5(tmp_path / "a.h5", 7, 5)
    torch.save(torch.zeros(9, 5), tmp_path / "b.pt")  # CLAM's .pt: the tensor alone
    a, b = describe(tmp_path / "a.h5"), describe(tmp_path / "b.pt")
    assert (a.n_patches, a.dim, a.has_coords) == (7, 5, True)
    assert (b.n_patches, b.dim, b.has_coords) == (9, 5, False)
    assert a.nbytes == 7 * 5 * 4


def test_bags_are_read_when_needed_and_the_cache_is_bounded(tmp_path):
    ids = [f"s{i}" for i in range(6)]
    files = {s: tmp_path / f"{s}.h5" for s in ids}
    raw = {s: _write_h5(files[s], 1000, 64, seed=i) for i, s in enumerate(ids)}  # 256 kB each
    store = BagStore(scan_slides(_sheet(ids), files), cache_mb=0.6)  # room for two bags
    assert store.reads == 0  # scanning reads headers only
    for s in ids:
        features, coords = store.get(s)
        assert torch.equal(features, torch.from_numpy(raw[s])) and coords.shape == (1000, 2)
    assert store.reads == 6
    assert store._cached_bytes <= 0.6 * 2**20 and len(store._cache) == 2
    store.get("s5")  # most recently used: still cached
    assert store.reads == 6
    store.get("s0")  # evicted long ago: read again
    assert store.reads == 7
    uncached = BagStore(scan_slides(_sheet(ids), files), cache_mb=0)
    uncached.get("s1"), uncached.get("s1")
    assert uncached.reads == 2 and not uncached._cache


def test_streamed_standardisation_equals_the_in_memory_one(tmp_path):
    ids = [f"s{i}" for i in range(4)]
    files = {s: tmp_path / f"{s}.h5" for s in ids}
    raw = [
        torch.from_numpy(_write_h5(files[s], n, 32, seed=i)) for i, (s, n) in enumerate(zip(ids, (5, 20000, 300, 9000)))
    ]
    store = BagStore(scan_slides(_sheet(ids), files))
    mean, std = store.fit_standardisation(ids[:3])
    stacked = torch.cat([r.double() for r in raw[:3]])
    assert torch.equal(mean, stacked.mean(0).float())
    assert torch.equal(std, stacked.std(0, unbiased=False).clamp(min=standardise.MIN_STD).float())
    store.standardise_with(mean, std)
    assert torch.equal(store.get("s3")[0], standardise.apply(raw[3], mean, std))


def test_scan_refuses_mixed_feature_sizes_naming_the_slides(tmp_path):
    _write_h5(tmp_path / "a.h5", 4, 8)
    _write_h5(tmp_path / "b.h5", 4, 16)
    with pytest.raises(FeatureFileError, match=r"8 \(slide a\).*16 \(slide b\)"):
        scan_slides(_sheet(["a", "b"]), {"a": tmp_path / "a.h5", "b": tmp_path / "b.h5"})


def test_a_model_that_needs_coordinates_names_the_slide_without_them(tmp_path):
    torch.save(torch.zeros(3, 4), tmp_path / "a.pt")
    store = BagStore(scan_slides(_sheet(["a"]), {"a": tmp_path / "a.pt"}))
    with pytest.raises(FeatureFileError, match="slide a: .*a.pt has no patch coordinates"):
        store.loader("a", needs_coords=True, text=None)()


def test_check_feature_folder(tmp_path):
    folder = tmp_path / "features"
    _write_h5(folder / "h5_files" / "a.h5", 4, 8)
    (folder / "pt_files").mkdir()
    torch.save(torch.zeros(3, 8), folder / "pt_files" / "b.pt")
    files = check_feature_folder(folder, ["a", "b"])
    assert files == {"a": folder / "h5_files" / "a.h5", "b": folder / "pt_files" / "b.pt"}
    with pytest.raises(FeatureFileError, match="slide c: no feature file"):
        check_feature_folder(folder, ["a", "c"])
    with pytest.raises(FeatureFileError, match="slide b: .*b.pt has no patch coordinates, which gatmil needs"):
        check_feature_folder(folder, ["a", "b"], coords_for=["gatmil"])
    torch.save(torch.zeros(3, 9), folder / "pt_files" / "b.pt")
    with pytest.raises(FeatureFileError, match="slides a and b have features of different sizes"):
        check_feature_folder(folder, ["a", "b"])
    with pytest.raises(FeatureFileError, match="neither an h5_files/ nor a pt_files/"):
        check_feature_folder(tmp_path, ["a"])


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return make_cohort(tmp_path_factory.mktemp("cohort"))


def _outputs(folder: Path) -> SlideOutputs:
    return SlideOutputs(
        *(str(folder / n) for n in ("checkpoint.pt", "train_log.csv", "predictions.csv", "embeddings.pt"))
    )


def test_training_from_pt_files_matches_h5(cohort, tmp_path):
    """CLAM's pt_files/ (features only) give the same model as the h5 files they came from."""
    pt_dir = tmp_path / "pt_files"
    pt_dir.mkdir()
    files = {}
    for h5 in sorted((cohort["features"] / "h5_files").glob("*.h5")):
        with h5py.File(h5) as fh:
            torch.save(torch.from_numpy(fh["features"][()]), pt_dir / f"{h5.stem}.pt")
        files[h5.stem] = pt_dir / f"{h5.stem}.pt"
    a, b = _outputs(tmp_path / "a"), _outputs(tmp_path / "b")
    for out, feature_files in ((a, cohort["features"]), (b, files)):
        train_slide_fold(
            "abmil",
            TASK,
            str(cohort["sheet"]),
            str(cohort["split"]),
            feature_files,
            out,
            training={**FAST, "cache_mb": 0},
        )
    assert Path(a.predictions).read_bytes() == Path(b.predictions).read_bytes()


def test_resume_state_is_tied_to_the_inputs(cohort, tmp_path, monkeypatch):
    """A resume state is reused only when features, labels and text are unchanged."""
    seen = []
    real_fit = loop.fit

    def recording_fit(*args, **kwargs):
        seen.append(args[9])  # run_id
        return real_fit(*args, **kwargs)

    monkeypatch.setattr("hmf.training.loop.fit", recording_fit)
    work = tmp_path / "cohort"
    import shutil

    shutil.copytree(cohort["features"], work / "features")
    sheet = pd.read_csv(cohort["sheet"], dtype=str, keep_default_na=False)

    def run(sheet_frame, name):
        sheet_csv = tmp_path / f"{name}.csv"
        sheet_frame.to_csv(sheet_csv, index=False)
        train_slide_fold(
            "hmf",
            TASK,
            str(sheet_csv),
            str(cohort["split"]),
            work / "features",
            _outputs(tmp_path / name),
            overrides={"model": {"dim": 32, "embed_dim": 64}},
            training=FAST,
            text_bank=str(cohort["text"]),
        )

    run(sheet, "first")
    run(sheet, "same")
    assert seen[0] == seen[1]
    changed = sheet.copy()
    train_slide = changed.index[0]
    changed.loc[train_slide, "slide_label"] = "macro" if changed.loc[train_slide, "slide_label"] != "macro" else "itc"
    run(changed, "labels")
    h5 = work / "features" / "h5_files" / f"{sheet.slide_id[0]}.h5"
    with h5py.File(h5, "r+") as fh:
        fh["features"][0, 0] += 1.0
    run(sheet, "features")
    assert len(set(seen)) == 3 and seen[2] != seen[0] and seen[3] not in (seen[0], seen[2])


def test_a_cohort_of_mixed_precisions_is_refused_at_training_time(tmp_path):
    for name, precision in (("a", "fp32"), ("b", "bf16")):
        _write_h5(tmp_path / f"{name}.h5", 4, 8)
        with h5py.File(tmp_path / f"{name}.h5", "r+") as fh:
            fh.attrs["precision"] = precision
    with pytest.raises(FeatureFileError, match="slides a and b have features computed in different precisions"):
        scan_slides(_sheet(["a", "b"]), {"a": tmp_path / "a.h5", "b": tmp_path / "b.h5"})
