"""The fast building blocks: byte-mask dropout and the explicit attention used in training."""

from __future__ import annotations

import torch

from dgi.nets.layers import Encoder, attention, dropout


def test_dropout_drops_the_rounded_share_and_keeps_the_mean():
    torch.manual_seed(0)
    x = torch.ones(200_000)
    y = dropout(x, 0.1, training=True)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 26 / 256) < 0.003  # p rounded to 26/256
    assert abs(y.mean().item() - 1.0) < 0.01  # inverted: survivors scaled by 256/230
    assert torch.equal(dropout(x, 0.1, training=False), x)
    assert torch.equal(dropout(x, 0.0, training=True), x)


def test_dropout_is_seeded_and_its_gradient_is_the_mask():
    x = torch.randn(3, 7, 11, requires_grad=True)
    torch.manual_seed(1)
    y = dropout(x, 0.3, training=True)
    torch.manual_seed(1)
    assert torch.equal(dropout(x, 0.3, training=True), y)
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert torch.equal(grad == 0, y == 0) and torch.allclose(grad[y != 0], torch.tensor(256 / (256 - 77)))


def test_training_attention_without_dropout_matches_the_fused_kernel():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 5, 8), torch.randn(2, 4, 6, 8), torch.randn(2, 4, 6, 8)
    attend = torch.rand(2, 1, 1, 6) > 0.3
    attend[..., 0] = True
    explicit = attention(q, k, v, attend, 0.0, training=True)
    explicit_with_dropout_off = attention(q, k, v, attend, 0.5, training=False)
    fused = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=attend)
    assert torch.allclose(explicit, fused, atol=1e-5) and torch.allclose(explicit_with_dropout_off, fused, atol=1e-5)
    causal = attention(q, q, q, None, 0.0, training=True, causal=True)
    assert torch.allclose(causal, torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True), atol=1e-5)


def test_fresh_encoder_is_the_identity():
    x = torch.randn(3, 5, 16)
    padding = torch.zeros(3, 5, dtype=torch.bool)
    assert torch.equal(Encoder(16, 2, 4, 2, 0.1).train()(x, padding), x)
