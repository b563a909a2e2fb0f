"""The feature files of a slide, in CLAM's layout: where they are (:func:`feature_paths`), how
they are written (:func:`write_feature_files`) and read, ours and CLAM's or TRIDENT's
(:func:`read_features`, :func:`describe`, :func:`check_feature_folder`), and how their values
are checked (:func:`check_values`: finite, of the expected width, streamed in blocks).

A folder of features holds ``h5_files/<slide>.h5`` (``features`` (N, D) float32, ``coords``
(N, 2) level-0 px, and attributes: encoder, weights, dim, input_size, slide_id, patch_level,
patch_size, precision), ``pt_files/<slide>.pt`` (the features tensor alone, as CLAM writes it)
and, when this workflow wrote them, ``stats/<slide>.json`` (the extraction's figures).

Torch is imported by the functions that need it: the workflow reads the paths when it parses
the rules.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from hmf.atomic import atomic_path, save_torch
from hmf.provenance import stamp

if TYPE_CHECKING:
    import torch

    from hmf.features.encoders import Encoder

H5_DIR, PT_DIR, STATS_DIR = "h5_files", "pt_files", "stats"


# Rows read at a time by check_values (a block of 1024-d float32 features is 64 MiB).
CHECK_BLOCK_ROWS = 16384


class FeatureFileError(ValueError):
    """A feature file is missing, does not hold an (N, D) feature matrix, or holds a value
    that is not finite."""


def first_non_finite(features: np.ndarray) -> tuple[int, int] | None:
    """(row, dim) of the first NaN or infinite value of a 2-d array, or None."""
    bad = ~np.isfinite(features)
    if not bad.any():
        return None
    row, dim = np.argwhere(bad)[0]
    return int(row), int(dim)


def non_finite_error(path, features: np.ndarray, row: int, dim: int, first_row: int = 0) -> FeatureFileError:
    """The error naming a file, the first bad value's row and dim (both from 0) and the value."""
    return FeatureFileError(
        f"feature file {path}: row {first_row + row}, dim {dim} holds {features[row, dim]} (counted from 0; "
        f"features must be finite: re-extract the slide or fix the file)"
    )


class FeaturePaths(NamedTuple):
    """One slide's files in a features folder: its h5 and pt feature files and its extraction stats."""

    h5: str
    pt: str
    stats: str


def feature_paths(folder: str | os.PathLike, slide_id: str) -> FeaturePaths:
    """Where the files of ``slide_id`` are in ``folder`` (CLAM's layout), as ``folder/...``
    strings; ``slide_id`` may be a Snakemake wildcard such as ``{slide}``."""
    return FeaturePaths(
        f"{folder}/{H5_DIR}/{slide_id}.h5", f"{folder}/{PT_DIR}/{slide_id}.pt", f"{folder}/{STATS_DIR}/{slide_id}.json"
    )


def feature_folder(path: str | os.PathLike) -> str:
    """The folder of a file that :func:`feature_paths` placed (its h5, pt or stats file)."""
    return os.path.dirname(os.path.dirname(os.fspath(path)))


def write_feature_files(
    out_h5: str | os.PathLike,
    out_pt: str | os.PathLike,
    features: torch.Tensor,
    coords: np.ndarray,
    coords_attrs: dict,
    encoder: Encoder,
    extra_attrs: dict,
    settings: Any = None,
) -> None:
    """``h5_files/<slide>.h5`` (features, coords, attributes) and ``pt_files/<slide>.pt`` (features).

    The h5 file's attributes carry :func:`hmf.provenance.stamp` of ``settings`` (the encoder
    settings and precision that made it: ``hmf_version``, ``hmf_commit``, ``settings_sha256``);
    the ``.pt`` file is the bare tensor of CLAM's layout and cannot carry attributes.

    Both are written from ``features`` itself (float32, contiguous, a whole storage), without a
    second copy: h5py writes straight from the array's memory and ``torch.save`` from the
    tensor's storage. The ``.pt`` keeps CLAM's layout: the features tensor alone. Each file is
    written under a temporary name and renamed when complete (:func:`hmf.atomic.atomic_path`).
    """
    import h5py
    import torch

    if (
        features.dtype != torch.float32
        or not features.is_contiguous()
        or features.storage_offset() != 0
        or features.untyped_storage().nbytes() != features.numel() * 4
    ):
        # Never the case for encode_patches' output; a view would make torch.save write its whole storage.
        features = features.to(torch.float32).contiguous().clone()
    bad = first_non_finite(features.numpy())
    if bad is not None:  # an encoder's overflow or NaN: never written, so every extracted file is finite
        raise non_finite_error(out_h5, features.numpy(), *bad)
    with atomic_path(out_h5) as tmp:
        with h5py.File(tmp, "w") as fh:
            fh.create_dataset("features", data=features.numpy())
            dset = fh.create_dataset("coords", data=np.asarray(coords, dtype=np.int64).reshape(-1, 2))
            for key, value in coords_attrs.items():
                if key != "seconds":  # keeps the file a pure function of its inputs
                    dset.attrs[key] = value
            fh.attrs["encoder"] = encoder.name
            fh.attrs["weights"] = encoder.weights
            fh.attrs["dim"] = int(encoder.dim)
            fh.attrs["input_size"] = int(encoder.input_size)
            for key, value in extra_attrs.items():
                fh.attrs[key] = value
            for key, value in stamp(settings).items():
                fh.attrs[key] = value
    save_torch(out_pt, features)


def _check(features: torch.Tensor, path: Path) -> torch.Tensor:
    import torch

    if features.ndim == 1 and features.numel() == 0:
        features = features.reshape(0, 0)
    if features.ndim != 2:
        raise FeatureFileError(f"feature file {path}: features have shape {tuple(features.shape)}, expected (N, D)")
    return features.to(torch.float32)


def _read_h5(path: Path) -> tuple[torch.Tensor, np.ndarray | None]:
    import h5py
    import torch

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
    import torch

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


def feature_file(folder: str | os.PathLike, slide_id: str) -> Path:
    """A slide's feature file in CLAM's layout: ``h5_files/<slide>.h5`` where it exists, else
    ``pt_files/<slide>.pt`` where that exists, else the ``.h5`` path (the file to be written)."""
    h5, pt, _ = map(Path, feature_paths(folder, slide_id))
    return pt if pt.is_file() and not h5.is_file() else h5


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


@dataclass(frozen=True)
class FeatureFileInfo:
    """What a feature file holds, read from its header without loading the features."""

    path: Path
    n_patches: int
    dim: int
    has_coords: bool

    @property
    def nbytes(self) -> int:
        """Size of the features as float32 in memory."""
        return self.n_patches * self.dim * 4


def describe(path: str | os.PathLike) -> FeatureFileInfo:
    """Patch count, feature size and whether coordinates are present, from the file's header.

    HDF5 datasets report their shape without being read; a ``.pt`` file is memory-mapped, so
    only the pages torch touches to build the tensor's metadata are read.
    """
    path = Path(path)
    if not path.is_file():
        raise FeatureFileError(f"feature file {path} does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        import h5py

        try:
            with h5py.File(path, "r") as fh:
                if "features" not in fh:
                    raise FeatureFileError(f"feature file {path} has no 'features' dataset (keys: {sorted(fh.keys())})")
                shape = fh["features"].shape
                coords_rows = fh["coords"].shape[0] if "coords" in fh else None
        except OSError as err:
            raise FeatureFileError(f"feature file {path} is not a readable HDF5 file: {err}") from None
    elif suffix in (".pt", ".pth"):
        import torch

        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # a legacy (non-zip) file cannot be mapped: read it whole once
            obj = {"features": read_features(path)[0]}
        coords = obj.get("coords") if isinstance(obj, dict) else None
        obj = obj.get("features") if isinstance(obj, dict) else obj
        if not isinstance(obj, (torch.Tensor, np.ndarray)):
            raise FeatureFileError(f"feature file {path} holds a {type(obj).__name__}, not a feature tensor")
        shape = tuple(obj.shape)
        coords_rows = None if coords is None else len(coords)
    else:
        raise FeatureFileError(f"feature file {path}: unknown suffix {suffix!r}, expected .h5 or .pt")
    if len(shape) == 1 and shape[0] == 0:
        shape = (0, 0)
    if len(shape) != 2:
        raise FeatureFileError(f"feature file {path}: features have shape {tuple(shape)}, expected (N, D)")
    if coords_rows is not None and coords_rows != shape[0]:
        raise FeatureFileError(f"feature file {path}: {shape[0]} feature rows but {coords_rows} coords")
    return FeatureFileInfo(path, int(shape[0]), int(shape[1]), coords_rows is not None)


def _blocks(path: Path, rows: int):
    """(first row, float32 block of up to ``rows`` rows) over a feature file's features, read
    block by block (an h5 dataset slice by slice, a ``.pt`` tensor memory-mapped)."""
    if path.suffix.lower() in (".h5", ".hdf5"):
        import h5py

        with h5py.File(path, "r") as fh:
            dataset = fh["features"]
            for start in range(0, dataset.shape[0] if dataset.ndim == 2 else 0, rows):
                with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: refused
                    yield start, np.asarray(dataset[start : start + rows], dtype=np.float32)
        return
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # a legacy (non-zip) file cannot be mapped
        obj = read_features(path)[0]
    obj = obj.get("features") if isinstance(obj, dict) else obj
    tensor = torch.as_tensor(obj)
    for start in range(0, tensor.shape[0] if tensor.ndim == 2 else 0, rows):
        yield start, tensor[start : start + rows].to(torch.float32).numpy()


def check_values(
    path: str | os.PathLike, dim: int | None = None, block_rows: int = CHECK_BLOCK_ROWS
) -> FeatureFileInfo:
    """Check every value of a feature file: all finite, and (given ``dim``) ``dim`` features
    per row. The features are streamed ``block_rows`` rows at a time, so memory stays bounded
    whatever the file's size. Raises :class:`FeatureFileError` naming the file, and for a value
    that is not finite its row and dim (both counted from 0)."""
    info = describe(path)
    if dim is not None and info.n_patches and info.dim != dim:
        raise FeatureFileError(
            f"feature file {info.path}: features of size {info.dim}, but the training cohort's have size {dim}"
        )
    for start, block in _blocks(info.path, block_rows):
        bad = first_non_finite(block)
        if bad is not None:
            raise non_finite_error(info.path, block, *bad, first_row=start)
    return info


def check_feature_folder(
    folder: str | os.PathLike,
    slide_ids: list[str],
    coords_for: list[str] | tuple[str, ...] = (),
    dim: int | None = None,
) -> dict[str, Path]:
    """The feature file of every slide in an existing folder in CLAM's or TRIDENT's layout
    (``h5_files/<slide>.h5`` with ``features`` and ``coords``, or ``pt_files/<slide>.pt``).

    Checked from the files' headers: every slide has a file, all have one feature size (with
    ``dim``: that size, e.g. the training cohort's for new slides), and every file has
    coordinates when ``coords_for`` (the models that need them) is not empty. Each failure
    names the slide. The values are checked by :func:`check_values` (a job: reading them all
    is too slow for parse time).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FeatureFileError(f"{folder} is not a folder")
    if not (folder / H5_DIR).is_dir() and not (folder / PT_DIR).is_dir():
        raise FeatureFileError(f"{folder} has neither an {H5_DIR}/ nor a {PT_DIR}/ folder (CLAM's layout)")
    files: dict[str, Path] = {}
    dims: dict[int, str] = {}
    for slide_id in slide_ids:
        path = feature_file(folder, slide_id)
        if not path.is_file():
            raise FeatureFileError(
                f"slide {slide_id}: no feature file in {folder} (looked for {H5_DIR}/{slide_id}.h5 "
                f"and {PT_DIR}/{slide_id}.pt)"
            )
        try:
            info = describe(path)
        except FeatureFileError as err:
            raise FeatureFileError(f"slide {slide_id}: {err}") from None
        if dim is not None and info.n_patches and info.dim != dim:
            raise FeatureFileError(
                f"slide {slide_id}: {path} has features of size {info.dim}, but the training cohort's have size {dim}"
            )
        if info.n_patches and info.dim not in dims:
            dims[info.dim] = slide_id
        if len(dims) > 1:
            (dim_a, slide_a), (dim_b, slide_b) = list(dims.items())[:2]
            raise FeatureFileError(
                f"slides {slide_a} and {slide_b} have features of different sizes ({dim_a} and {dim_b})"
            )
        if coords_for and not info.has_coords:
            raise FeatureFileError(
                f"slide {slide_id}: {path} has no patch coordinates, which {', '.join(coords_for)} needs "
                f"(a CLAM h5 file with a 'coords' dataset has them; a .pt file does not)"
            )
        files[slide_id] = path
    return files


def cohort_dim(paths) -> int | None:
    """The feature size of a cohort's files (checked alike by :func:`check_feature_folder`):
    that of the first file with patches, from its header; None when no file has any."""
    for path in paths:
        info = describe(path)
        if info.n_patches:
            return info.dim
    return None


def feature_precision(path: str | os.PathLike) -> str | None:
    """The precision the features of a file were computed in (``fp32`` or ``bf16``), or None
    where the file does not say (CLAM's and TRIDENT's files).

    Read from the ``precision`` attribute of an h5 file. A ``.pt`` file holds the features
    tensor alone (CLAM's layout), so its precision is that of the h5 file of the same slide
    in the same CLAM folder (``pt_files/<slide>.pt`` -> ``h5_files/<slide>.h5``), if any.
    """
    import h5py

    path = Path(path)
    if path.suffix.lower() in (".pt", ".pth"):
        path = Path(feature_paths(path.parent.parent, path.stem).h5)
        if not path.is_file():
            return None
    if not path.is_file():
        raise FeatureFileError(f"feature file {path} does not exist")
    try:
        with h5py.File(path, "r") as fh:
            value = fh.attrs.get("precision")
    except OSError as err:
        raise FeatureFileError(f"feature file {path} is not a readable HDF5 file: {err}") from None
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def check_uniform_precision(paths) -> str | None:
    """The one precision of a cohort's feature files (None when no file records one).

    Features computed in fp32 and in bf16 differ slightly, so a model must not train on a
    mixture; files that record no precision (CLAM's) are not compared. Raises
    :class:`FeatureFileError` naming two slides of different precisions.
    """
    seen: dict[str, Path] = {}
    for path in paths:
        precision = feature_precision(path)
        if precision is None:
            continue
        seen.setdefault(precision, Path(path))
        if len(seen) > 1:
            (prec_a, path_a), (prec_b, path_b) = list(seen.items())[:2]
            raise FeatureFileError(
                f"slides {path_a.stem} and {path_b.stem} have features computed in different precisions "
                f"({prec_a} in {path_a}, {prec_b} in {path_b}); extract every slide with one "
                f"features.precision"
            )
    return next(iter(seen), None)
