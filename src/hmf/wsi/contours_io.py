"""Tissue contours as GeoJSON in level-0 pixel coordinates, readable by QuPath.

Each kept tissue region is a ``Feature`` with a ``Polygon`` geometry: the outline as the
exterior ring and its kept holes as interior rings (rings closed, exterior counter-clockwise
and holes clockwise in x/y axes, as RFC 7946 asks). QuPath reads ``properties.objectType``
and ``properties.classification``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from hmf.atomic import write_text
from hmf.wsi.segmentation import Tissue

TISSUE_CLASS = {"name": "Tissue", "color": [0, 200, 0]}


class ContoursFileError(ValueError):
    """A contours GeoJSON file is missing or malformed."""


def _signed_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0].astype(np.float64), ring[:, 1].astype(np.float64)
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _ring(points: np.ndarray, counter_clockwise: bool) -> list[list[int]]:
    pts = np.asarray(points, dtype=np.int64).reshape(-1, 2)
    if (_signed_area(pts) > 0) != counter_clockwise:
        pts = pts[::-1]
    closed = np.vstack([pts, pts[:1]])
    return closed.tolist()


def tissues_to_geojson(tissues: list[Tissue], slide_id: str) -> dict:
    features = []
    for index, tissue in enumerate(tissues):
        rings = [_ring(tissue.contour, True)] + [_ring(h, False) for h in tissue.holes]
        features.append(
            {
                "type": "Feature",
                "id": f"{slide_id}-tissue-{index}",
                "geometry": {"type": "Polygon", "coordinates": rings},
                "properties": {
                    "objectType": "annotation",
                    "name": f"tissue {index}",
                    "classification": dict(TISSUE_CLASS),
                    "isLocked": False,
                    "tissue_id": index,
                    "n_holes": len(tissue.holes),
                },
            }
        )
    return {"type": "FeatureCollection", "slide_id": slide_id, "coordinates": "level-0 pixels", "features": features}


def write_contours(path: str | os.PathLike, tissues: list[Tissue], slide_id: str) -> None:
    write_text(path, json.dumps(tissues_to_geojson(tissues, slide_id)) + "\n")


def read_contours(path: str | os.PathLike) -> list[Tissue]:
    """Tissue regions (level-0 coordinates) from a GeoJSON written here or by QuPath.

    Polygons and MultiPolygons are read; other geometries (points, lines) are ignored.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ContoursFileError(f"contours file {path} does not exist") from None
    except (OSError, json.JSONDecodeError) as err:
        raise ContoursFileError(f"contours file {path} is not valid JSON: {err}") from None
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        features = data.get("features", [])
    elif isinstance(data, dict) and data.get("type") == "Feature":
        features = [data]
    elif isinstance(data, list):
        features = data
    else:
        raise ContoursFileError(f"contours file {path}: expected a GeoJSON FeatureCollection")
    tissues = []
    for feature in features:
        geometry = (feature or {}).get("geometry") or {}
        kind, coords = geometry.get("type"), geometry.get("coordinates")
        polygons = [coords] if kind == "Polygon" else coords if kind == "MultiPolygon" else []
        for polygon in polygons:
            try:
                rings = [np.asarray(r, dtype=np.float64).reshape(-1, 2) for r in polygon]
            except (TypeError, ValueError) as err:
                raise ContoursFileError(f"contours file {path}: malformed polygon: {err}") from None
            rings = [r[:-1] if len(r) > 1 and np.array_equal(r[0], r[-1]) else r for r in rings]
            rings = [np.round(r).astype(np.int64) for r in rings]
            if not rings or len(rings[0]) < 3:
                continue
            tissues.append(Tissue(contour=rings[0], holes=[r for r in rings[1:] if len(r) >= 3]))
    return tissues
