"""read_features: our files, CLAM's h5 and pt written by plain h5py/torch, and bad files."""

from __future__ import annotations

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
