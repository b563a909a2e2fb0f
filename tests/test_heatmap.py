"""Attention heatmaps: a tiny HMF checkpoint on a real Aperio slide with a handful of patches."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from matplotlib import colormaps
from PIL import Image

from hmf.models import build_slide_model
from hmf.report.attention import HeatmapError, slide_attention
from hmf.report.heatmap_figures import CMAP, heatmap_figure_size, montage_figure_size, overlay
from hmf.report.heatmaps import render_slide_heatmap
from hmf.training.checkpoints import SlideCheckpoint, load_slide_model, write_checkpoint
from hmf.wsi.patching import write_coords

CLASSES = ["negative", "tumour"]
D, TEXT_DIM, PATCH = 32, 16, 256
PARAMS = {"dim": 32, "embed_dim": 32, "bca_heads": 4, "encoder_ff": 64, "filter_hidden": 32, "filter_attn_hidden": 16}


@pytest.fixture()
def setup(tmp_path, aperio_slide):
    """Checkpoint, text bank, features and coords files for 12 patches on the real slide."""
    import openslide

    torch.manual_seed(0)
    with openslide.OpenSlide(str(aperio_slide)) as handle:
        w0, h0 = handle.dimensions
    xs = np.linspace(0, w0 - PATCH, 4).astype(np.int64)
    ys = np.linspace(0, h0 - PATCH, 3).astype(np.int64)
    coords = np.array([(x, y) for y in ys for x in xs], dtype=np.int64)
    features = torch.randn(len(coords), D)

    model = build_slide_model("hmf", D, len(CLASSES), PARAMS, text_dim=TEXT_DIM)
    checkpoint = tmp_path / "checkpoint.pt"
    write_checkpoint(
        checkpoint,
        SlideCheckpoint(
            model="hmf",
            state_dict=model.state_dict(),
            in_dim=D,
            n_classes=len(CLASSES),
            classes=tuple(CLASSES),
            text_dim=TEXT_DIM,
            params={"model": PARAMS},
            best_epoch=0,
            feature_mean=None,
            feature_std=None,
            best_score=None,
        ),
    )
    prompts = ["a slide without tumour", "normal lymph node", "carcinoma cells", "metastatic tumour"]
    bank = tmp_path / "bank.pt"
    torch.save(
        {
            "prompts": prompts,
            "classes": ["negative", "negative", "tumour", "tumour"],
            "class_names": CLASSES,
            "embeddings": torch.randn(len(prompts), TEXT_DIM),
            "encoder": "test",
            "dim": TEXT_DIM,
        },
        bank,
    )
    features_h5 = tmp_path / "features.h5"
    with h5py.File(features_h5, "w") as fh:
        fh["features"] = features.numpy()
        fh["coords"] = coords
    coords_h5 = tmp_path / "coords.h5"
    write_coords(coords_h5, coords, {"patch_size": PATCH, "patch_level": 0, "downsample": np.array([1.0, 1.0])})
    return {
        "checkpoint": checkpoint,
        "bank": bank,
        "features": features_h5,
        "coords": coords_h5,
        "slide": aperio_slide,
        "coords_array": coords,
        "features_tensor": features,
        "tmp": tmp_path,
    }


def test_heatmap_and_montage_are_drawn(setup):
    out, top = setup["tmp"] / "heat" / "s.png", setup["tmp"] / "heat" / "top" / "s.png"
    summary = render_slide_heatmap(
        setup["checkpoint"],
        setup["features"],
        setup["coords"],
        setup["slide"],
        "s1",
        out,
        top,
        text_bank=setup["bank"],
        true_label="tumour",
        context="fold 0, test slide",
        top_k=5,
        thumbnail_px=400,
    )
    assert out.is_file() and top.is_file()
    with Image.open(out) as image:
        assert image.size == summary.heatmap_size == heatmap_figure_size(3, summary.thumbnail_shape)
        assert max(summary.thumbnail_shape) == 400
        pixels = np.asarray(image.convert("RGB"))
    with Image.open(top) as image:
        assert image.size == montage_figure_size(5) == summary.montage_size
        montage = np.asarray(image.convert("RGB"))
    assert pixels.std() > 10 and montage.std() > 10

    # The top patches are those of the model's own attention, in order.
    model, ckpt = load_slide_model(setup["checkpoint"])
    from hmf.training.slide import load_text_inputs

    text, _ = load_text_inputs(setup["bank"], tuple(CLASSES))
    result = slide_attention(model, list(ckpt.classes), setup["features_tensor"], setup["coords_array"], text)
    assert summary.top_index == list(np.argsort(-result.attention, kind="stable")[:5])
    assert summary.predicted == result.predicted and summary.predicted in CLASSES
    assert np.isclose(result.attention.sum(), 1.0, atol=1e-4)
    assert (result.bca_attention > 0).sum() == int(np.ceil(0.5 * len(setup["coords_array"])))


def test_overlay_colours_follow_the_attention(setup, aperio_slide):
    from hmf.wsi.slide import open_slide

    slide = open_slide(aperio_slide)
    thumb, downsample = slide.read_downsampled(8.0)
    coords = setup["coords_array"]
    scores = np.linspace(0.0, 1.0, len(coords))
    rng = np.random.default_rng(0)
    rng.shuffle(scores)
    tinted = overlay(thumb, coords, (PATCH, PATCH), downsample, scores, alpha=0.5)

    def colour_at(index):  # the colour mixed in at a patch's centre: 2 * out - thumbnail
        x, y = coords[index] + PATCH // 2
        px, py = int(x / downsample[0]), int(y / downsample[1])
        return 2 * tinted[py, px].astype(float) - thumb[py, px].astype(float)

    cmap = colormaps[CMAP]
    high, low = colour_at(int(np.argmax(scores))), colour_at(int(np.argmin(scores)))
    assert np.allclose(high, np.array(cmap(1.0)[:3]) * 255, atol=3)
    assert np.allclose(low, np.array(cmap(0.0)[:3]) * 255, atol=3)
    assert np.abs(high - low).sum() > 150
    # Hidden patches and tissue outside every patch keep the thumbnail's pixels.
    shown = np.ones(len(coords), dtype=bool)
    shown[int(np.argmax(scores))] = False
    partial = overlay(thumb, coords, (PATCH, PATCH), downsample, scores, shown=shown, alpha=0.5)
    x, y = coords[int(np.argmax(scores))] + PATCH // 2
    assert np.array_equal(
        partial[int(y / downsample[1]), int(x / downsample[0])], thumb[int(y / downsample[1]), int(x / downsample[0])]
    )


def test_mismatched_coordinates_are_named(setup):
    with h5py.File(setup["features"], "a") as fh:
        fh["coords"][0] = fh["coords"][0] + 1
    with pytest.raises(HeatmapError, match="features.h5.*differ"):
        render_slide_heatmap(
            setup["checkpoint"],
            setup["features"],
            setup["coords"],
            setup["slide"],
            "s1",
            setup["tmp"] / "a.png",
            setup["tmp"] / "b.png",
            text_bank=setup["bank"],
        )


def test_slide_without_patches_gets_its_thumbnail(setup):
    empty = np.zeros((0, 2), dtype=np.int64)
    with h5py.File(setup["features"], "w") as fh:
        fh["features"] = np.zeros((0, D), dtype=np.float32)
        fh["coords"] = empty
    write_coords(setup["coords"], empty, {"patch_size": PATCH, "patch_level": 0})
    out, top = setup["tmp"] / "e.png", setup["tmp"] / "e_top.png"
    summary = render_slide_heatmap(
        setup["checkpoint"], setup["features"], setup["coords"], setup["slide"], "s1", out, top, text_bank=setup["bank"]
    )
    assert summary.predicted is None and summary.n_patches == 0
    with Image.open(out) as image:
        assert image.size == heatmap_figure_size(2, summary.thumbnail_shape)
    assert top.is_file()
