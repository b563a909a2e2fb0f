"""HMF slide model: no label path at inference, filter, bi-cross attention maps, contrastive loss,
and a 50,000-patch bag on the CPU."""

from __future__ import annotations

import inspect
import math
import resource
import time

import pytest
import torch

from hmf.models import build_slide_model
from hmf.models.hmf_slide import kept_count
from hmf.models.losses import prompt_contrastive_loss

D, E, C, PER_CLASS = 32, 16, 4, 3
TINY = {
    "dim": 32,
    "embed_dim": 48,
    "filter_hidden": 32,
    "filter_attn_hidden": 16,
    "bca_heads": 4,
    "encoder_heads": 4,
    "encoder_ff": 64,
}


def make(**params):
    torch.manual_seed(0)
    return build_slide_model("hmf", D, C, {**TINY, **params}, text_dim=E)


def bank():
    g = torch.Generator().manual_seed(1)
    return torch.randn(C * PER_CLASS, E, generator=g), torch.arange(C).repeat_interleave(PER_CLASS)


def test_forward_has_no_label_input():
    params = list(inspect.signature(make().forward).parameters)
    assert params == ["features", "coords", "text"]


def test_eval_logits_do_not_depend_on_labels_or_prompt_classes():
    model = make().eval()
    text, prompt_classes = bank()
    x = torch.randn(40, D)
    with torch.no_grad():
        first = model(x, None, text)["logits"]
        # Losses computed with different labels and prompt-class assignments leave no trace.
        for label, classes in [
            (0, prompt_classes),
            (3, prompt_classes.flip(0)),
            (1, torch.randperm(C * PER_CLASS) % C),
        ]:
            model.loss(model(x, None, text), torch.tensor(label), {"prompt_classes": classes})
        again = model(x, None, text)["logits"]
    assert torch.equal(first, again)


def test_logits_invariant_to_the_order_of_the_text_bank():
    """The bank is a set to the classifier: no position can single out a class."""
    model = make().eval()
    text, _ = bank()
    x = torch.randn(25, D)
    with torch.no_grad():
        a = model(x, None, text)
        b = model(x, None, text[torch.randperm(text.shape[0])])
    assert torch.allclose(a["logits"], b["logits"], atol=1e-5)
    assert torch.allclose(a["bca_attention"], b["bca_attention"], atol=1e-5)


@pytest.mark.parametrize(
    "n,ratio,cap,expected",
    [
        (1, 0.5, None, 1),
        (7, 0.5, None, 4),
        (10, 0.1, None, 1),
        (60, 0.5, None, 30),
        (60, 0.9, 20, 20),
        (3, 0.05, None, 1),
    ],
)
def test_filter_keeps_ceil_ratio_n_capped(n, ratio, cap, expected):
    assert kept_count(n, ratio, cap) == expected == min(max(1, math.ceil(ratio * n)), cap or n)
    model = make(filter_ratio=ratio, max_kept=cap).eval()
    text, _ = bank()
    with torch.no_grad():
        out = model(torch.randn(n, D), None, text)
    kept = out["kept_index"]
    assert kept.numel() == expected and kept.unique().numel() == expected
    # The kept patches are the ones the filter scores highest.
    assert torch.equal(
        torch.sort(out["attention"], descending=True, stable=True).values[:expected], out["attention"][kept]
    )
    bca = out["bca_attention"]
    dropped = torch.ones(n, dtype=torch.bool)
    dropped[kept] = False
    assert torch.all(bca[dropped] == 0)
    assert torch.allclose(bca.sum(), torch.tensor(float(C * PER_CLASS)))  # each text row's weights sum to 1
    assert torch.allclose(out["attention"].sum(), torch.tensor(1.0))


def test_filter_selection_uses_eval_mode_scores_in_training():
    model = make(filter_dropout=0.9)
    text, _ = bank()
    x = torch.randn(30, D)
    model.train()
    kept = [model(x, None, text)["kept_index"] for _ in range(3)]
    assert all(torch.equal(kept[0], k) for k in kept)  # dropout does not move the selection
    out = model(x, None, text)
    assert "filter_logits" in out and out["filter_logits"].shape == (C,)
    model.loss(out, torch.tensor(2), {"prompt_classes": bank()[1]}).backward()
    assert model.filter.head.weight.grad.abs().sum() > 0  # the scorer learns through its own head
    assert model.filter.attention.score.weight.grad.abs().sum() > 0


def test_contrastive_loss_uses_only_the_bags_class_as_positives():
    model = make()
    text, prompt_classes = bank()
    model.train()
    torch.manual_seed(3)
    out = model(torch.randn(12, D), None, text)
    label = torch.tensor(1)
    base = model.loss(out, label, {"prompt_classes": prompt_classes})
    # Reassigning the other classes' descriptions among themselves changes nothing ...
    shuffled = prompt_classes.clone()
    shuffled[prompt_classes == 2], shuffled[prompt_classes == 3] = 3, 2
    assert torch.allclose(model.loss(out, label, {"prompt_classes": shuffled}), base)
    # ... moving a description into or out of the bag's class does.
    moved = prompt_classes.clone()
    moved[0] = 1
    assert not torch.allclose(model.loss(out, label, {"prompt_classes": moved}), base)
    # And the contrastive term is exactly the documented formula.
    sim = out["text_vectors"] @ out["slide_vector"] / 0.07
    pos = (prompt_classes == label).float()
    kl = (pos / pos.sum() * (torch.log(pos.clamp_min(1e-30) / pos.sum()) - torch.log_softmax(sim, 0))).sum()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(sim, pos)
    got = prompt_contrastive_loss(out["slide_vector"], out["text_vectors"], prompt_classes == label)
    assert torch.allclose(got, 0.5 * (kl + bce), atol=1e-5)


def test_contrastive_loss_pulls_the_slide_to_its_class_texts():
    slide = torch.nn.functional.normalize(torch.tensor([1.0, 0.0]), dim=0)
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    aligned = prompt_contrastive_loss(slide, texts, torch.tensor([True, False]))
    opposed = prompt_contrastive_loss(slide, texts, torch.tensor([False, True]))
    assert aligned < opposed
    with pytest.raises(ValueError, match="no description"):
        prompt_contrastive_loss(slide, texts, torch.tensor([False, False]))


def test_missing_text_or_prompt_classes_is_an_error():
    model = make()
    text, _ = bank()
    with pytest.raises(ValueError, match="text embedding bank"):
        model(torch.randn(5, D))
    with pytest.raises(ValueError, match=r"expected \(P, 16\)"):
        model(torch.randn(5, D), None, torch.randn(4, 8))
    out = model(torch.randn(5, D), None, text)
    with pytest.raises(ValueError, match="prompt_classes"):
        model.loss(out, torch.tensor(0), {})
    with pytest.raises(ValueError, match="rows"):
        model.loss(out, torch.tensor(0), {"prompt_classes": torch.arange(3)})


def test_default_sizes_match_the_paper():
    model = build_slide_model("hmf", 1024, 4, text_dim=512)
    text = torch.randn(24, 512)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(9, 1024), None, text)
    assert out["embedding"].shape == (1024,)
    assert model.filter.embed[0].out_features == 512 and model.filter.attention.score.in_features == 256
    assert model.image_in[1].out_features == 512
    assert len(model.encoder.layers) == 2 and model.encoder.layers[0].attn.heads == 4
    assert model.bca.text_to_image.heads == 8


def test_fifty_thousand_patches_on_cpu_with_bounded_memory():
    model = build_slide_model("hmf", 1024, 4, {"max_kept": 2048}, text_dim=512).eval()
    torch.manual_seed(0)
    x = torch.randn(50_000, 1024)
    text = torch.randn(24, 512)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    with torch.no_grad():
        out = model(x, None, text)
    elapsed = time.perf_counter() - start
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert out["logits"].shape == (4,) and out["kept_index"].numel() == 2048
    assert out["attention"].shape == (50_000,) and out["bca_attention"].shape == (50_000,)
    # One 50,000 x 50,000 float matrix alone would be 9.3 GiB.
    assert grown_mib < 1500, grown_mib
    assert elapsed < 30, elapsed


def test_bf16_autocast_keeps_the_fp32_selection():
    """The kept patches are chosen in fp32 even under bf16 autocast: precision never changes them."""
    model = make(filter_ratio=0.3).eval()
    text, _ = bank()
    x = torch.randn(500, D)
    with torch.no_grad():
        fp32 = model(x, None, text)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(x, None, text)
    assert torch.equal(fp32["kept_index"], bf16["kept_index"])
    assert bf16["attention"].dtype == torch.float32
