"""Reading patch features from our files or CLAM's (``h5_files/*.h5`` or ``pt_files/*.pt``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch


class FeatureFileError(ValueError):
    """A feature file is missing or does not hold an (N, D) feature matrix."""


def _check(features: torch.Tensor, path: Path) -> torch.Tensor:
    if features.ndim == 1 and features.numel() == 0:
        features = features.reshape(0, 0)
    if features.ndim != 2:
        raise FeatureFileError(f"feature file {path}: features have shape {tuple(features.shape)}, expected (N, D)")
    return features.to(torch.float32)


def _read_h5(path: Path) -> tuple[torch.Tensor, np.ndarray | None]:
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            if "features" not in fh:
                raise FeatureFileError(f"feature file {path} has no 'features' dataset (keys: {sorted(fh.keys())})")
            features = torch.from_numpy(np.asarray(fh["features"][()]))
            coords = np.asarray(fh["coords"][()], dtype=np.int64).reshape(-1, 2) if "coords" in fh else None
    except OSError as err:
        raise FeatureFileError(f"feature file {path} is not a readable HDF5 file: {err}") from None
    features = _check(features, path)
    if coords is not None and len(coords) != len(features):
        raise FeatureFileError(f"feature file {path}: {len(features)} feature rows but {len(coords)} coords")
    return features, coords


def _read_pt(path: Path) -> tuple[torch.Tensor, np.ndarray | None]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise FeatureFileError(f"feature file {path} cannot be loaded with torch.load: {err}") from None
    coords = None
    if isinstance(obj, dict):
        if "features" not in obj:
            raise FeatureFileError(f"feature file {path}: a dict without a 'features' entry")
        coords = obj.get("coords")
        coords = None if coords is None else np.asarray(coords, dtype=np.int64).reshape(-1, 2)
        obj = obj["features"]
    if isinstance(obj, np.ndarray):
        obj = torch.from_numpy(obj)
    if not isinstance(obj, torch.Tensor):
        raise FeatureFileError(f"feature file {path} holds a {type(obj).__name__}, not a feature tensor")
    return _check(obj, path), coords


def read_features(path: str | os.PathLike) -> tuple[torch.Tensor, np.ndarray | None]:
    """Features (N, D) float32 and level-0 coords (N, 2) int64, or None where the file has none.

    Accepts our ``.h5`` (features, coords and attributes), a CLAM ``.h5`` (features and
    coords only) and a CLAM ``.pt`` (the features tensor alone).
    """
    path = Path(path)
    if not path.is_file():
        raise FeatureFileError(f"feature file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        return _read_h5(path)
    if suffix in (".pt", ".pth"):
        return _read_pt(path)
    raise FeatureFileError(f"feature file {path}: unknown suffix {suffix!r}, expected .h5 or .pt")


def feature_dim(path: str | os.PathLike) -> int:
    """Feature size D of a feature file (the ``dim`` attribute of ours, else the array's width)."""
    path = Path(path)
    if path.suffix.lower() in (".h5", ".hdf5") and path.is_file():
        import h5py

        with h5py.File(path, "r") as fh:
            if "dim" in fh.attrs:
                return int(fh.attrs["dim"])
            if "features" in fh and fh["features"].ndim == 2:
                return int(fh["features"].shape[1])
    return int(read_features(path)[0].shape[1])
