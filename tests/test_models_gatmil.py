"""GATMIL's patch graph: the patch step from the coordinates, the 8-neighbourhood across tissue
fragments whose grids are offset from each other, and a 10^5-patch graph in bounded time and memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from hmf.models import build_slide_model
from hmf.models.gatmil import grid_neighbours, knn_neighbours, patch_step

STEP = 256


def fragment(rows: int, cols: int, origin: tuple[int, int]) -> torch.Tensor:
    """A full rows x cols patch grid (x, y) with step 256 starting at ``origin``."""
    ys, xs = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], 1) * STEP + torch.tensor(origin)


def interior(rows: int, cols: int) -> torch.Tensor:
    """Indices (row-major) of the patches of a full grid that are not on its border."""
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    inside = (r > 0) & (r < rows - 1) & (c > 0) & (c < cols - 1)
    return torch.nonzero(inside.reshape(-1))[:, 0]


def neighbour_offsets(coords: torch.Tensor, table: torch.Tensor, index: int) -> set[tuple[int, int]]:
    """The grid offsets (in steps) of a patch's neighbours."""
    return {tuple(((coords[j] - coords[index]) // STEP).tolist()) for j in table[index, 1:].tolist() if j >= 0}


EIGHT = {(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)} - {(0, 0)}


def test_two_offset_fragments_keep_every_interior_8_neighbourhood():
    rows, cols = 6, 7
    first = fragment(rows, cols, (0, 0))
    # CLAM restarts the grid at the second fragment's bounding box: 1000 + 37 px right of the
    # first fragment and 123 px down, a non-multiple of the step on both axes.
    second = fragment(rows, cols, (cols * STEP + 1000 + 37, 123))
    both = torch.cat([first, second])
    assert patch_step(both) == STEP
    one = grid_neighbours(first)
    two = grid_neighbours(both)
    assert two.shape == (both.shape[0], 9) and torch.equal(two[:, 0], torch.arange(both.shape[0]))
    inner = interior(rows, cols)
    for offset in (0, first.shape[0]):
        for i in inner.tolist():
            assert neighbour_offsets(both, two, offset + i) == EIGHT, (offset, i)
    # Same edges per interior patch as on one fragment, and the same graph on the first fragment.
    degree_one = (one[inner, 1:] >= 0).sum(1)
    degree_two = (two[torch.cat([inner, inner + first.shape[0]]), 1:] >= 0).sum(1)
    assert (degree_one == 8).all() and (degree_two == 8).all()
    assert [set(r) for r in two[: first.shape[0]].tolist()] == [set(r) for r in one.tolist()]
    # No edge between the fragments (they are 1037 px apart).
    first_half = two[: first.shape[0], 1:]
    assert (first_half < first.shape[0]).all()


def test_step_is_the_most_common_gap_not_the_smallest():
    g = torch.Generator().manual_seed(0)
    grid = fragment(20, 20, (0, 0))
    holes = grid[torch.randperm(len(grid), generator=g)[:300]]  # tissue with holes
    stray = torch.tensor([[5000 + 3, 7000], [5000 + 10, 7000]])  # two patches 7 px apart
    coords = torch.cat([holes, stray])
    assert patch_step(coords) == STEP
    assert torch.equal(grid_neighbours(coords), grid_neighbours(coords, step=STEP))
    assert patch_step(torch.tensor([[0, 0], [300, 500]])) is None  # no shared row or column
    isolated = grid_neighbours(torch.tensor([[0, 0], [300, 500]]))
    assert isolated.tolist() == [[0] + [-1] * 8, [1] + [-1] * 8]
    with pytest.raises(ValueError, match="step"):
        grid_neighbours(grid, step=0)


def test_duplicate_coordinates_keep_self_first():
    coords = torch.tensor([[0, 0], [0, 0], [256, 0]])
    table = grid_neighbours(coords)
    assert table[:, 0].tolist() == [0, 1, 2]
    assert set(table[0, 1:].tolist()) - {-1} == {1, 2}


def test_knn_graph_caps_distance():
    coords = torch.tensor([[0, 0], [1, 0], [5, 0], [20, 0]])
    assert knn_neighbours(coords, k=2, max_distance=4.5).tolist() == [[0, 1, -1], [1, 0, 2], [2, 1, -1], [3, -1, -1]]
    assert knn_neighbours(coords[:1], k=8).tolist() == [[0]]


def test_model_reads_the_step_per_bag():
    """A bag patched at another magnification (step 512) gets the same graph as at step 256."""
    torch.manual_seed(0)
    model = build_slide_model("gatmil", 16, 2, {"hidden": 16, "heads": 4, "attn_hidden": 8}).eval()
    x = torch.randn(42, 16)
    coords = fragment(6, 7, (0, 0))
    with torch.no_grad():
        a = model(x, coords)["logits"]
        b = model(x, coords * 2 + 11)["logits"]
        c = model(x, coords, patch_step=STEP)["logits"]
        d = model(x, coords, patch_step=STEP / 2)["logits"]  # a step too small: no neighbours
    assert torch.allclose(a, b) and torch.allclose(a, c)
    assert not torch.allclose(a, d)


def test_graph_of_100k_patches_in_bounded_time_and_memory():
    """Grid and k-NN graphs of 10^5 patches in two offset fragments, in a fresh process."""
    script = textwrap.dedent("""
        import json, resource, time, torch
        from hmf.models.gatmil import grid_neighbours, knn_neighbours
        side = 224  # two fragments of 224 x 224 = 100,352 patches
        ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        grid = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1) * 256
        coords = torch.cat([grid, grid + torch.tensor([side * 256 + 1037, 123])])
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        grid_table = grid_neighbours(coords)
        knn_table = knn_neighbours(coords, k=8)
        print(json.dumps({"seconds": time.perf_counter() - started,
                          "grown_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024,
                          "interior_degree": int((grid_table[side + 1, 1:] >= 0).sum()),
                          "edges": int((grid_table[:, 1:] >= 0).sum()), "knn_shape": list(knn_table.shape)}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    side, n = 224, 2 * 224 * 224
    assert result["interior_degree"] == 8 and result["knn_shape"] == [n, 9]
    # Each fragment: 8 per interior patch, 5 per border patch, 3 per corner.
    per_fragment = 8 * (side - 2) ** 2 + 5 * 4 * (side - 2) + 3 * 4
    assert result["edges"] == 2 * per_fragment
    # An N x N matrix would be 40 GB; two (N, 9) tables and a KD-tree are tens of MB.
    assert result["grown_mib"] < 400, result
    assert result["seconds"] < 60, result
