"""The cohort's feature index: written and read by hmf.features.index, bad files named."""

from __future__ import annotations

import h5py
import pytest

from hmf.features.index import FeatureIndexError, feature_files, largest_bag_bytes, write_feature_index


def _features(path, n, dim=8):
    with h5py.File(path, "w") as fh:
        fh.create_dataset("features", (n, dim), dtype="float32")


def test_index_round_trip_in_sheet_order(tmp_path):
    files = []
    for name, n in (("b", 5), ("a", 40), ("c", 0)):
        _features(tmp_path / f"{name}.h5", n)
        files.append(tmp_path / f"{name}.h5")
    frame = write_feature_index(["b", "a", "c"], files, tmp_path / "index.csv")
    assert list(frame["bytes"]) == [5 * 8 * 4, 40 * 8 * 4, 0]
    assert feature_files(tmp_path / "index.csv") == {"b": str(files[0]), "a": str(files[1]), "c": str(files[2])}
    assert list(feature_files(tmp_path / "index.csv")) == ["b", "a", "c"]
    assert largest_bag_bytes(tmp_path / "index.csv") == 40 * 8 * 4


def test_bad_indexes_are_named(tmp_path):
    _features(tmp_path / "a.h5", 3)
    with pytest.raises(FeatureIndexError, match="2 slides but 1 feature files"):
        write_feature_index(["a", "b"], [tmp_path / "a.h5"], tmp_path / "index.csv")
    assert not (tmp_path / "index.csv").exists()
    (tmp_path / "cols.csv").write_text("slide_id,path\na,a.h5\n")
    with pytest.raises(FeatureIndexError, match=r"cols.csv: not a feature index \(no column features, bytes\)"):
        feature_files(tmp_path / "cols.csv")
    (tmp_path / "twice.csv").write_text("slide_id,features,bytes\na,a.h5,1\na,b.h5,2\n")
    with pytest.raises(FeatureIndexError, match=r"twice.csv: slide\(s\) \['a'\] listed more than once"):
        feature_files(tmp_path / "twice.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(FeatureIndexError, match="empty.csv: not a feature index"):
        largest_bag_bytes(tmp_path / "empty.csv")
