"""The cohort's feature index (``results/<name>/feature_index.csv``): one row per slide of
the sample sheet, in sheet order: its id, its feature file and the bytes of its features
(patches x feature size x 4).

The jobs that read every slide's features (each slide-model training, the QC review) depend on
this one file instead of on every feature file. A plan of a large cohort then resolves one
input per such job rather than one per slide (with the inner models of cross-fitting, dozens
of jobs), and their params no longer list the cohort's slides. The index job itself depends on
every feature file, so a new or changed slide still reaches every job that reads the cohort.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import pandas as pd

from hmf.atomic import write_csv
from hmf.features.io import describe

COLUMNS = ("slide_id", "features", "bytes")


class FeatureIndexError(ValueError):
    """A feature index that is not this module's format, named with the cause."""


def write_feature_index(slide_ids: Sequence[str], feature_files: Sequence[str | os.PathLike], out) -> pd.DataFrame:
    """Index ``feature_files`` (one per slide of ``slide_ids``, in that order) in ``out``."""
    if len(slide_ids) != len(feature_files):
        raise FeatureIndexError(f"{len(slide_ids)} slides but {len(feature_files)} feature files")
    frame = pd.DataFrame(
        {
            "slide_id": list(slide_ids),
            "features": [str(p) for p in feature_files],
            "bytes": [describe(p).nbytes for p in feature_files],
        }
    )
    write_csv(out, frame)
    return frame


def read_feature_index(path) -> pd.DataFrame:
    """The index as written, checked: its columns, one row per slide id."""
    try:
        frame = pd.read_csv(path, dtype={"slide_id": str, "features": str}, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise FeatureIndexError(f"{path}: not a feature index ({err})") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise FeatureIndexError(f"{path}: not a feature index (no column {', '.join(missing)})")
    repeated = sorted(set(frame.loc[frame["slide_id"].duplicated(), "slide_id"]))
    if repeated:
        raise FeatureIndexError(f"{path}: slide(s) {repeated[:5]} listed more than once")
    return frame


def feature_files(path) -> dict[str, str]:
    """Slide id -> feature file, in the index's (sample sheet) order."""
    frame = read_feature_index(path)
    return dict(zip(frame["slide_id"], frame["features"]))


def largest_bag_bytes(path) -> int:
    """The bytes of the cohort's largest bag of features (0 for an empty index)."""
    frame = read_feature_index(path)
    return int(frame["bytes"].max()) if len(frame) else 0
