"""Slide models: shapes, losses, learning on separable bags, determinism, baseline specifics."""

from __future__ import annotations

import pytest
import torch

from hmf.models import SLIDE_MODELS, build_slide_model
from hmf.models.gatmil import grid_neighbours, knn_neighbours

D = 32
TEXT_DIM = 16
# Small widths so that every model trains in well under a second.
TINY = {
    "hmf": {
        "dim": 32,
        "embed_dim": 48,
        "filter_hidden": 32,
        "filter_attn_hidden": 16,
        "bca_heads": 4,
        "encoder_heads": 4,
        "encoder_ff": 64,
    },
    "meanpool": {"hidden": 32},
    "maxpool": {"hidden": 32},
    "abmil": {"hidden": 32, "attn_hidden": 16},
    "gatmil": {"hidden": 32, "heads": 4, "attn_hidden": 16},
    "dsmil": {"q_dim": 16},
    "transmil": {"hidden": 32, "heads": 4},
    "dtfd_maxs": {"hidden": 32, "attn_hidden": 16},
    "dtfd_maxmins": {"hidden": 32, "attn_hidden": 16},
    "dtfd_afs": {"hidden": 32, "attn_hidden": 16},
    "acmil": {"hidden": 32, "attn_hidden": 16},
}


def build(name: str, n_classes: int, **extra):
    return build_slide_model(name, D, n_classes, {**TINY[name], **extra}, text_dim=TEXT_DIM if name == "hmf" else None)


def text_bank(n_classes: int, per_class: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_classes * per_class, TEXT_DIM, generator=g), torch.arange(n_classes).repeat_interleave(
        per_class
    )


def grid_coords(n: int, generator: torch.Generator) -> torch.Tensor:
    cells = torch.randperm(100, generator=generator)[:n]
    return torch.stack([cells // 10, cells % 10], 1) * 256


def separable_bags(n_classes: int, n_bags: int, seed: int = 0):
    """Bags of noise where a few patches carry a class-specific direction."""
    g = torch.Generator().manual_seed(seed)
    bags = []
    for i in range(n_bags):
        label = i % n_classes
        n = int(torch.randint(8, 20, (1,), generator=g))
        x = torch.randn(n, D, generator=g)
        signal = torch.randperm(n, generator=g)[:4]
        x[signal, label] += 6.0
        bags.append((x, grid_coords(n, g), torch.tensor(label)))
    return bags


def context(n_classes: int, prompt_classes=None) -> dict:
    ctx = {"class_weights": torch.linspace(0.5, 1.5, n_classes)}
    if prompt_classes is not None:
        ctx["prompt_classes"] = prompt_classes
    return ctx


def evaluate(model, bags, text, ctx):
    model.eval()
    losses, correct = [], 0
    with torch.no_grad():
        for x, c, y in bags:
            out = model(x, c, text)
            losses.append(float(model.loss(out, y, ctx)))
            correct += int(out["logits"].argmax() == y)
    return sum(losses) / len(losses), correct / len(bags)


def train(model, bags, text, ctx, epochs: int, lr: float = 2e-3):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        model.train()
        for x, c, y in bags:
            optimizer.zero_grad()
            model.loss(model(x, c, text), y, ctx).backward()
            optimizer.step()


@pytest.mark.parametrize("name", SLIDE_MODELS)
@pytest.mark.parametrize("n_classes", [2, 4])
def test_forward_and_loss_on_variable_bags(name, n_classes):
    torch.manual_seed(0)
    model = build(name, n_classes)
    text, prompt_classes = text_bank(n_classes)
    ctx = context(n_classes, prompt_classes)
    g = torch.Generator().manual_seed(0)
    for n in (1, 7, 60):
        x, coords = torch.randn(n, D), grid_coords(n, g)
        for training in (True, False):
            model.train(training)
            model.zero_grad()
            out = model(x, coords, text)
            assert out["logits"].shape == (n_classes,)
            assert out["embedding"].dim() == 1
            if "attention" in out:
                assert out["attention"].shape == (n,)
            loss = model.loss(out, torch.tensor(n_classes - 1), ctx)
            assert loss.dim() == 0 and torch.isfinite(loss)
            loss.backward()
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            assert grads and all(torch.isfinite(gr).all() for gr in grads)
    assert model.requires_text == (name == "hmf")
    assert model.needs_coords == (name == "gatmil")


@pytest.mark.parametrize("name", SLIDE_MODELS)
def test_loss_goes_down_on_separable_bags(name):
    torch.manual_seed(0)
    n_classes = 3
    bags = separable_bags(n_classes, 12)
    text, prompt_classes = text_bank(n_classes)
    ctx = context(n_classes, prompt_classes)
    model = build(name, n_classes)
    before, acc_before = evaluate(model, bags, text, ctx)
    train(model, bags, text, ctx, epochs=6 if name == "hmf" else 12)
    after, acc_after = evaluate(model, bags, text, ctx)
    assert after < before - 0.3 * abs(before), (name, before, after)
    assert acc_after >= 0.75, (name, acc_before, acc_after)


@pytest.mark.parametrize("name", SLIDE_MODELS)
def test_seeded_training_is_deterministic(name):
    bags = separable_bags(2, 4, seed=3)
    text, prompt_classes = text_bank(2)
    logits = []
    for _ in range(2):
        torch.manual_seed(7)
        model = build(name, 2)
        train(model, bags, text, context(2, prompt_classes), epochs=1)
        model.eval()
        with torch.no_grad():
            logits.append(torch.stack([model(x, c, text)["logits"] for x, c, _ in bags]))
    assert torch.equal(logits[0], logits[1])


@pytest.mark.parametrize("name", SLIDE_MODELS)
def test_bad_inputs_are_named(name):
    model = build(name, 2)
    text, _ = text_bank(2)
    with pytest.raises(ValueError, match="D=5"):
        model(torch.randn(4, 5), torch.zeros(4, 2, dtype=torch.long), text)
    with pytest.raises(ValueError, match="empty bag"):
        model(torch.randn(0, D), torch.zeros(0, 2, dtype=torch.long), text)
    out = model(torch.randn(3, D), torch.zeros(3, 2, dtype=torch.long) + torch.arange(3)[:, None], text)
    with pytest.raises(ValueError, match="outside"):
        model.loss(out, torch.tensor(2), context(2, torch.arange(6) % 2))


def test_unknown_and_fixed_parameters_rejected():
    with pytest.raises(ValueError, match="unknown slide model"):
        build_slide_model("clam", D, 2)
    with pytest.raises(ValueError, match=r"models.slide_params.abmil.model.hiden: unknown key \(allowed here: "):
        build_slide_model("abmil", D, 2, {"hiden": 8})
    with pytest.raises(ValueError, match="fixed"):
        build_slide_model("dtfd_afs", D, 2, {"distill": "maxs"})
    with pytest.raises(ValueError, match="text_dim"):
        build_slide_model("hmf", D, 2)
    with pytest.raises(ValueError, match="coords"):
        build("gatmil", 2)(torch.randn(3, D))


def test_grid_graph_is_the_8_neighbourhood():
    # 3 x 3 grid with step 512 plus an isolated patch far away.
    xy = torch.tensor([(i, j) for i in range(3) for j in range(3)] + [(10, 10)]) * 512
    table = grid_neighbours(xy)
    assert table.shape == (10, 9)
    degree = (table >= 0).sum(1) - 1  # without the patch itself
    assert degree[4] == 8  # centre
    assert degree[0] == 3 and degree[1] == 5  # corner, edge
    assert degree[9] == 0
    assert torch.equal(table[:, 0], torch.arange(10))
    centre = set(table[4, 1:].tolist())
    assert centre == set(range(9)) - {4}


def test_knn_graph_has_self_first_and_k_nearest():
    xy = torch.tensor([[0, 0], [1, 0], [5, 0], [20, 0]])
    table = knn_neighbours(xy, k=2)
    assert table.tolist()[0] == [0, 1, 2]
    assert table.tolist()[3] == [3, 2, 1]
    model = build("gatmil", 2, graph="knn", k=2)
    assert model(torch.randn(4, D), xy)["logits"].shape == (2,)


def test_gatmil_uses_the_graph():
    """Moving patches apart (same features) changes the prediction: messages follow the graph."""
    torch.manual_seed(0)
    model = build("gatmil", 2).eval()
    x = torch.randn(9, D)
    packed = torch.tensor([(i, j) for i in range(3) for j in range(3)]) * 256
    with torch.no_grad():
        a = model(x, packed)["logits"]
        b = model(x, packed * 4)["logits"]  # same grid step inferred: identical graph
        c = model(x, torch.tensor([(3 * i, 0) for i in range(9)]) * 256)["logits"]  # no neighbours
    assert torch.allclose(a, b)
    assert not torch.allclose(a, c)


def test_dtfd_eval_split_is_deterministic_and_training_split_random():
    torch.manual_seed(0)
    model = build("dtfd_maxmins", 3)
    x = torch.randn(30, D)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x)["logits"], model(x)["logits"])
        assert model(x)["pseudo_bag_logits"].shape == (4, 3)
        assert model(x[:2])["pseudo_bag_logits"].shape == (2, 3)
    model.train()
    splits = [torch.cat(model.pseudo_bags(30, "cpu")) for _ in range(2)]
    assert not torch.equal(splits[0], splits[1])


def test_acmil_masks_only_in_training():
    torch.manual_seed(0)
    model = build("acmil", 2, n_masked_patch=10, mask_drop=0.6)
    x = torch.randn(40, D)
    model.train()
    weights = model(x)["branch_attention"]
    assert weights.shape == (5, 40)
    assert ((weights < 1e-12).sum(1) == 6).all()  # int(10 * 0.6) patches hidden per branch
    model.eval()
    assert ((model(x)["branch_attention"] < 1e-12).sum(1) == 0).all()


def test_dsmil_loss_is_half_bag_half_max_instance():
    torch.manual_seed(0)
    model = build("dsmil", 3)
    out = model(torch.randn(10, D))
    label = torch.tensor(1)
    ce = torch.nn.functional.cross_entropy
    expected = 0.5 * ce(out["bag_logits"][None], label[None]) + 0.5 * ce(out["max_instance_logits"][None], label[None])
    assert torch.allclose(model.loss(out, label, {}), expected)
    probs = torch.softmax(out["logits"], 0)
    assert torch.allclose(probs.sum(), torch.tensor(1.0))


def test_class_weights_scale_the_loss():
    torch.manual_seed(0)
    model = build("abmil", 2).eval()
    out = model(torch.randn(5, D))
    base = model.loss(out, torch.tensor(1), {})
    weighted = model.loss(out, torch.tensor(1), {"class_weights": torch.tensor([1.0, 3.0])})
    assert torch.allclose(weighted, 3 * base)
    with pytest.raises(ValueError, match="class_weights"):
        model.loss(out, torch.tensor(1), {"class_weights": torch.ones(3)})


@pytest.mark.parametrize("name", SLIDE_MODELS)
def test_runs_under_bf16_autocast(name):
    """The training loop autocasts to bf16 on CUDA; CPU autocast exercises the same dtype mixing."""
    torch.manual_seed(0)
    model = build(name, 4)
    text, prompt_classes = text_bank(4)
    g = torch.Generator().manual_seed(0)
    x, coords = torch.randn(30, D), grid_coords(30, g)
    for training in (True, False):
        model.train(training)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x, coords, text)
            loss = model.loss(out, torch.tensor(2), context(4, prompt_classes))
        assert torch.isfinite(loss.float())
        if training:
            loss.backward()


def test_nystrom_attention_matches_exact_attention_with_one_landmark_per_token():
    from hmf.models.transmil import NystromAttention, iterative_pinv

    torch.manual_seed(0)
    kernel = torch.softmax(torch.randn(2, 16, 16), -1)
    assert (kernel @ iterative_pinv(kernel) @ kernel - kernel).abs().max() < 0.05
    attention = NystromAttention(32, 4, landmarks=20, dropout=0.0).eval()
    torch.nn.init.zeros_(attention.residual.weight)
    x = torch.randn(20, 32)
    q, k, v = (t.reshape(-1, 4, 8).transpose(0, 1) for t in attention.qkv(x).chunk(3, -1))
    exact = torch.softmax(q @ k.transpose(1, 2) / 8**0.5, -1) @ v
    exact = attention.out(exact.transpose(0, 1).reshape(20, -1))
    with torch.no_grad():
        assert (attention(x) - exact).abs().max() < 0.05
        assert attention(torch.randn(45, 32)).shape == (45, 32)  # padded to a multiple of the landmarks


def test_transmil_exact_attention_variant():
    torch.manual_seed(0)
    model = build("transmil", 3, attention="sdpa")
    out = model(torch.randn(11, D))
    assert out["logits"].shape == (3,)
    with pytest.raises(ValueError, match="nystrom"):
        build("transmil", 3, attention="linear")
