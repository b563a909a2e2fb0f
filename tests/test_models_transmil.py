"""TransMIL's Nystrom attention on bags with no more tokens than landmarks is exact attention."""

import torch

from hmf.models.transmil import NystromAttention


def test_small_bag_uses_exact_attention():
    torch.manual_seed(0)
    attn = NystromAttention(dim=32, heads=4, landmarks=16, dropout=0.0).eval()
    x = torch.randn(10, 32)
    q, k, v = (t.reshape(10, 4, 8).transpose(0, 1) for t in attn.qkv(x).chunk(3, -1))
    weights = torch.softmax(q @ k.transpose(1, 2) / 8**0.5, dim=-1)
    expected = weights @ v + attn.residual(v.unsqueeze(0))[0]
    expected = attn.out(expected.transpose(0, 1).reshape(10, 32))
    assert torch.allclose(attn(x), expected, atol=1e-5)


def test_large_bag_still_uses_landmarks():
    torch.manual_seed(0)
    attn = NystromAttention(dim=32, heads=4, landmarks=4, dropout=0.0).eval()
    out = attn(torch.randn(50, 32))
    assert out.shape == (50, 32) and torch.isfinite(out).all()


def test_ppeg_is_the_sum_of_its_three_depthwise_convolutions():
    from hmf.models.transmil import PPEG

    torch.manual_seed(0)
    ppeg = PPEG(16)
    x = torch.randn(1 + 25, 16)
    grid = x[1:].T.reshape(1, 16, 5, 5)
    expected = grid + sum(conv(grid) for conv in ppeg.convs)
    got = ppeg(x, 5)
    assert torch.equal(got[0], x[0])
    assert torch.allclose(got[1:], expected.reshape(16, -1).T, atol=1e-5)


def test_recomputed_layers_give_the_same_step():
    """Checkpointed layers (bags of at least checkpoint_tokens) replay the dropout masks: the
    loss and every gradient equal those of the step that keeps the activations."""
    from hmf.models import build_slide_model

    x = torch.randn(300, 24)
    results = []
    for threshold in (None, 100):
        torch.manual_seed(0)
        model = build_slide_model(
            "transmil", 24, 3, {"hidden": 32, "heads": 4, "dropout": 0.5, "checkpoint_tokens": threshold}
        )
        model.train()
        torch.manual_seed(1)
        loss = model.loss(model(x), torch.tensor(2), {})
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert torch.equal(loss_a, loss_b)
    for a, b in zip(grads_a, grads_b):
        assert torch.allclose(a, b, atol=1e-6)
