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
