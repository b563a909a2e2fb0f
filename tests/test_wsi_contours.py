"""GeoJSON contours: round trip, ring orientation and closure, QuPath-style input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hmf.wsi.contours_io import ContoursFileError, read_contours, write_contours
from hmf.wsi.segmentation import Tissue


def signed_area(ring):
    ring = np.asarray(ring, dtype=float)
    x, y = ring[:-1, 0], ring[:-1, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def test_round_trip_with_holes_and_orientation(tmp_path):
    outer = np.array([[0, 0], [0, 100], [100, 100], [100, 0]], dtype=np.int64)  # one winding
    hole = np.array([[10, 10], [20, 10], [20, 20], [10, 20]], dtype=np.int64)  # the other
    write_contours(tmp_path / "c.geojson", [Tissue(outer, [hole])], "s1")
    data = json.loads((tmp_path / "c.geojson").read_text())
    rings = data["features"][0]["geometry"]["coordinates"]
    assert len(rings) == 2 and all(r[0] == r[-1] for r in rings)
    assert signed_area(rings[0]) > 0 > signed_area(rings[1])  # exterior CCW, hole CW (x/y axes)
    back = read_contours(tmp_path / "c.geojson")
    assert len(back) == 1 and len(back[0].holes) == 1
    assert {tuple(p) for p in back[0].contour} == {tuple(p) for p in outer}
    assert {tuple(p) for p in back[0].holes[0]} == {tuple(p) for p in hole}
    assert back[0].area == pytest.approx(100 * 100 - 10 * 10)


def test_reads_qupath_multipolygons_and_skips_other_geometries(tmp_path):
    square = [[0, 0], [50, 0], [50, 50], [0, 50], [0, 0]]
    shifted = [[p[0] + 100, p[1]] for p in square]
    (tmp_path / "q.geojson").write_text(
        json.dumps(
            [
                {
                    "type": "Feature",
                    "geometry": {"type": "MultiPolygon", "coordinates": [[square], [shifted]]},
                    "properties": {"objectType": "annotation"},
                },
                {"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}, "properties": {}},
            ]
        )
    )
    tissues = read_contours(tmp_path / "q.geojson")
    assert len(tissues) == 2 and tissues[1].contour[:, 0].min() == 100


def test_bad_contour_files(tmp_path):
    with pytest.raises(ContoursFileError, match="does not exist"):
        read_contours(tmp_path / "none.geojson")
    (tmp_path / "bad.geojson").write_text("{not json")
    with pytest.raises(ContoursFileError, match="bad.geojson.*not valid JSON"):
        read_contours(tmp_path / "bad.geojson")
