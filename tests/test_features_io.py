"""read_features: our files, CLAM's h5 and pt written by plain h5py/torch, and bad files."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from hmf.features.io import FeatureFileError, feature_dim, read_features


def test_clam_h5_without_our_attributes(tmp_path):
    feats = np.random.default_rng(0).normal(size=(7, 1024)).astype(np.float32)
    coords = np.arange(14, dtype=np.int64).reshape(7, 2) * 256
    with h5py.File(tmp_path / "clam.h5", "w") as fh:
        fh.create_dataset("features", data=feats)
        fh.create_dataset("coords", data=coords)
    got, got_coords = read_features(tmp_path / "clam.h5")
    assert torch.equal(got, torch.from_numpy(feats)) and np.array_equal(got_coords, coords)
    assert feature_dim(tmp_path / "clam.h5") == 1024


def test_clam_pt_tensor_and_float64(tmp_path):
    feats = torch.randn(5, 768, dtype=torch.float64)
    torch.save(feats, tmp_path / "clam.pt")
    got, coords = read_features(tmp_path / "clam.pt")
    assert coords is None and got.dtype == torch.float32 and got.shape == (5, 768)
    torch.testing.assert_close(got, feats.float())
    assert feature_dim(tmp_path / "clam.pt") == 768


def test_bad_feature_files(tmp_path):
    with pytest.raises(FeatureFileError, match="does not exist"):
        read_features(tmp_path / "none.h5")
    with h5py.File(tmp_path / "nofeat.h5", "w") as fh:
        fh.create_dataset("coords", data=np.zeros((2, 2)))
    with pytest.raises(FeatureFileError, match="nofeat.h5.*no 'features'"):
        read_features(tmp_path / "nofeat.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(FeatureFileError, match="junk.h5"):
        read_features(tmp_path / "junk.h5")
    torch.save(torch.zeros(3, 4, 5), tmp_path / "cube.pt")
    with pytest.raises(FeatureFileError, match="expected \\(N, D\\)"):
        read_features(tmp_path / "cube.pt")
    with h5py.File(tmp_path / "mismatch.h5", "w") as fh:
        fh.create_dataset("features", data=np.zeros((3, 4), np.float32))
        fh.create_dataset("coords", data=np.zeros((2, 2), np.int64))
    with pytest.raises(FeatureFileError, match="3 feature rows but 2 coords"):
        read_features(tmp_path / "mismatch.h5")


# -- the layout and the writer --------------------------------------------------------------


def test_one_slides_files_in_the_layout(tmp_path):
    from hmf.features.io import feature_file, feature_paths, feature_precision

    paths = feature_paths("results/x/features/enc", "{slide}")
    assert paths == (
        "results/x/features/enc/h5_files/{slide}.h5",
        "results/x/features/enc/pt_files/{slide}.pt",
        "results/x/features/enc/stats/{slide}.json",
    )
    assert paths.h5.format(slide="s1") == feature_paths("results/x/features/enc", "s1").h5
    # The readers find files where feature_paths puts them: the pt alone, then the h5 beside it.
    h5, pt, _ = feature_paths(tmp_path, "s1")
    assert feature_file(tmp_path, "s1") == tmp_path / "h5_files" / "s1.h5"  # to be written
    (tmp_path / "pt_files").mkdir()
    torch.save(torch.zeros(2, 3), pt)
    assert feature_file(tmp_path, "s1") == tmp_path / "pt_files" / "s1.pt" and feature_precision(pt) is None
    (tmp_path / "h5_files").mkdir()
    with h5py.File(h5, "w") as fh:
        fh.create_dataset("features", data=np.zeros((2, 3), np.float32))
        fh.attrs["precision"] = "bf16"
    assert feature_file(tmp_path, "s1") == tmp_path / "h5_files" / "s1.h5" and feature_precision(pt) == "bf16"


def test_written_files_read_back(tmp_path):
    from types import SimpleNamespace

    from hmf.features.io import feature_paths, write_feature_files

    encoder = SimpleNamespace(name="enc", weights="random(seed=0)", dim=4, input_size=32)
    h5, pt, _ = feature_paths(tmp_path, "s1")
    view = torch.arange(24, dtype=torch.float32).reshape(6, 4)[::2]  # a view: written as its own rows only
    coords = np.arange(6, dtype=np.int64).reshape(3, 2)
    write_feature_files(h5, pt, view, coords, {"patch_size": 256, "seconds": 1.5}, encoder, {"precision": "fp32"})
    features, got_coords = read_features(h5)
    assert torch.equal(features, view) and np.array_equal(got_coords, coords)
    assert torch.equal(torch.load(pt, weights_only=True), view)
    with h5py.File(h5) as fh:
        assert fh.attrs["encoder"] == "enc" and fh.attrs["dim"] == 4 and fh.attrs["precision"] == "fp32"
        assert dict(fh["coords"].attrs) == {"patch_size": 256}  # timings are left out: same inputs, same bytes
    assert sorted(p.name for p in (tmp_path / "h5_files").iterdir()) == ["s1.h5"]  # no temporary file left
    # The same features give the same .pt bytes on a rerun (torch.save would otherwise name the
    # archive inside after the random temporary file).
    again = feature_paths(tmp_path / "again", "s1")
    write_feature_files(again.h5, again.pt, view, coords, {"patch_size": 256}, encoder, {"precision": "fp32"})
    assert Path(again.pt).read_bytes() == Path(pt).read_bytes()


def test_the_workflow_reads_the_layout_without_torch():
    """rules/common.smk imports hmf.features.io when Snakemake parses the rules: torch stays out."""
    import subprocess
    import sys
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src"
    code = "import sys, hmf.features.io, hmf.devices; assert 'torch' not in sys.modules, 'torch imported'"
    proc = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(src)}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
