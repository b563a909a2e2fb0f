"""Attention over long bags: blocked attention with dropout equals the block-wise math (forward
and gradients, the recomputed dropout masks included), and no N x N matrix is held in training."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import torch
import torch.nn.functional as F

from hmf.models import layers
from hmf.models.layers import bounded_attention


def qkv(heads=2, length=40, keys=None, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    keys = keys or length
    return [torch.randn(1, heads, n, dim, generator=g).requires_grad_() for n in (length, keys, keys)]


def gradients(out, inputs, seed=1):
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    return torch.autograd.grad((out * weight).sum(), inputs)


def test_without_dropout_it_is_exact_attention():
    q, k, v = qkv(keys=30)
    expected = torch.softmax(q @ k.transpose(-1, -2) / 8**0.5, -1) @ v
    assert torch.allclose(bounded_attention(q, k, v), expected, atol=1e-6)
    assert torch.allclose(
        bounded_attention(q, k, v, scale=0.1), torch.softmax(0.1 * q @ k.transpose(-1, -2), -1) @ v, atol=1e-6
    )


def test_small_matrices_keep_the_fused_call_with_dropout():
    """Below the threshold the result is exactly F.scaled_dot_product_attention's (same RNG use)."""
    q, k, v = qkv()
    torch.manual_seed(5)
    expected = F.scaled_dot_product_attention(q, k, v, dropout_p=0.3)
    torch.manual_seed(5)
    assert torch.equal(bounded_attention(q, k, v, dropout_p=0.3), expected)


def test_blocked_dropout_attention_matches_the_blockwise_math_and_its_gradients(monkeypatch):
    """Above the threshold queries go in blocks under checkpoint: forward and gradients are those of
    the plain block-wise computation with the same random numbers, so the backward's recomputed
    dropout masks are the forward's."""
    monkeypatch.setattr(layers, "DENSE_ATTENTION_ELEMENTS", 100)
    monkeypatch.setattr(layers, "ATTENTION_BLOCK_ELEMENTS", 2 * 7 * 30)  # blocks of 7 queries
    q, k, v = qkv(length=40, keys=30)
    torch.manual_seed(11)
    out = bounded_attention(q, k, v, dropout_p=0.4)
    grads = gradients(out, (q, k, v))

    torch.manual_seed(11)
    blocks = []
    for q_block in q.split(7, dim=-2):
        weights = torch.softmax(q_block @ k.transpose(-1, -2) / 8**0.5, -1)
        blocks.append(F.dropout(weights, 0.4, training=True) @ v)
    expected = torch.cat(blocks, dim=-2)
    expected_grads = gradients(expected, (q, k, v))
    assert torch.allclose(out, expected, atol=1e-6)
    for got, want in zip(grads, expected_grads):
        assert torch.allclose(got, want, atol=1e-5)
    # The dropout is real: another seed gives other outputs.
    torch.manual_seed(12)
    assert not torch.allclose(bounded_attention(q, k, v, dropout_p=0.4), out)


def test_encoder_layer_with_dropout_trains_6144_tokens_without_the_attention_matrix():
    """A training step of HMF's encoder layer (4 heads, dropout 0.1) over 6,144 tokens, fresh process.

    The math path of F.scaled_dot_product_attention with dropout holds 4 x 6144^2 weights (0.6 GB
    in fp32) several times over; the blocked attention holds a few 64 MB blocks."""
    script = textwrap.dedent("""
        import json, resource, torch
        from hmf.models.layers import TransformerEncoderLayer
        torch.set_num_threads(1)
        torch.manual_seed(0)
        layer = TransformerEncoderLayer(512, 4, 1024, dropout=0.1).train()
        x = torch.randn(6144, 512, requires_grad=True)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        layer(x).square().mean().backward()
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        print(json.dumps({"grown_mib": grown, "finite": bool(torch.isfinite(x.grad).all())}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["finite"]
    assert result["grown_mib"] < 1300, result
