"""Transformer building blocks shared by the context encoder and the SID decoder.

Two costs dominated a Beauty training step on CPU (torch.profiler, benchmarks/results/training-speed.json):
torch's Bernoulli sampler (~20 ns an element: 15% of a step) and `nn.MultiheadAttention`'s packed
in-projection (a copy and a zero-fill of [3, L, B, d] per layer and step). `dropout` draws its mask from
random bytes instead, and the blocks below use one fused q/k/v projection with explicit attention.

Every residual branch's output projection starts at zero, so a fresh block is the identity and a
tower starts at content-similarity quality (see METHOD.md, practical notes).
"""

from __future__ import annotations

import math
import sys

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_BYTE = 256
# int64 random_() is uniform on [0, 2**63): seven of its eight bytes are uniform, the most significant is not.
_UNIFORM_BYTES = slice(0, 7) if sys.byteorder == "little" else slice(1, 8)


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout with p rounded to a multiple of 1/256 (0.1 -> 26/256 = 0.1016) on the CPU.

    The mask comes from torch's seeded generator, seven bytes per int64 draw: ~1 ns an element instead of
    ~20 for `F.dropout`. Accelerators keep `F.dropout` (their sampler is fast).
    """
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    dropped = round(p * _BYTE)
    if dropped == 0:
        return x
    n = x.numel()
    words = torch.empty(-(-n // 7), dtype=torch.int64).random_()
    keep = (words.view(torch.uint8).view(-1, 8)[:, _UNIFORM_BYTES] >= dropped).view(-1)[:n].view(x.shape)
    scale = _BYTE / (_BYTE - dropped)
    if x.dtype == torch.float32:  # the scaled mask made outside autograd: one multiplication each way, same values
        return x * keep.to(x.dtype).mul_(scale)
    return x * keep * scale  # bf16 rounds the scale itself; multiplied by the fp32 scalar it is rounded once


def attention(q: Tensor, k: Tensor, v: Tensor, attend: Tensor | None, p: float, training: bool,
              causal: bool = False) -> Tensor:
    """Softmax attention [N, h, T, dh] with dropout on the weights; `attend` (broadcast to [N, h, T, S])
    is True where a key may be attended. Inference uses the fused kernel."""
    if causal:
        allowed = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
        attend = allowed if attend is None else attend & allowed
    if not training or p == 0.0:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attend)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if attend is not None:
        scores = scores.masked_fill(~attend, float("-inf"))
    return dropout(scores.softmax(dim=-1), p, training) @ v


def split_heads(t: Tensor, heads: int) -> Tensor:
    """[N, L, d] -> [N, heads, L, d/heads]."""
    n, length, width = t.shape
    return t.reshape(n, length, heads, width // heads).transpose(1, 2)


def merge_heads(t: Tensor) -> Tensor:
    n, heads, length, head_dim = t.shape
    return t.transpose(1, 2).reshape(n, length, heads * head_dim)


def zero_(*linears: nn.Linear) -> None:
    with torch.no_grad():
        for linear in linears:
            linear.weight.zero_()
            if linear.bias is not None:
                linear.bias.zero_()


class FeedForward(nn.Module):
    def __init__(self, width: int, multiplier: int, dropout_p: float) -> None:
        super().__init__()
        self.dropout_p = dropout_p
        self.hidden = nn.Linear(width, multiplier * width)
        self.out = nn.Linear(multiplier * width, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(dropout(F.gelu(self.hidden(x)), self.dropout_p, self.training))


class EncoderBlock(nn.Module):
    """Pre-norm self-attention + feed-forward over [B, L, d] with a key padding mask."""

    def __init__(self, width: int, heads: int, ffn_multiplier: int, dropout_p: float) -> None:
        super().__init__()
        self.heads, self.dropout_p = heads, dropout_p
        self.attention_norm, self.ffn_norm = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.attention_out = nn.Linear(width, width)
        self.ffn = FeedForward(width, ffn_multiplier, dropout_p)
        zero_(self.attention_out, self.ffn.out)

    def forward(self, x: Tensor, attend: Tensor) -> Tensor:
        """x [B, L, d]; attend [B, 1, 1, L] True where a slot is real."""
        q, k, v = (split_heads(t, self.heads) for t in self.qkv(self.attention_norm(x)).chunk(3, dim=-1))
        attended = merge_heads(attention(q, k, v, attend, self.dropout_p, self.training))
        x = x + dropout(self.attention_out(attended), self.dropout_p, self.training)
        return x + dropout(self.ffn(self.ffn_norm(x)), self.dropout_p, self.training)


class Encoder(nn.Module):
    """A stack of zero-initialized encoder blocks: the identity at initialization."""

    def __init__(self, width: int, layers: int, heads: int, ffn_multiplier: int, dropout_p: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(EncoderBlock(width, heads, ffn_multiplier, dropout_p) for _ in range(layers))

    def forward(self, x: Tensor, padding: Tensor, causal: bool = False) -> Tensor:
        """padding [B, L] True where a slot is padding (its output is computed but meaningless); `causal`:
        each slot attends to the real slots up to itself (and always to itself, so no row is empty)."""
        attend = ~padding[:, None, None, :]
        if causal:
            length = x.shape[1]
            before = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
            attend = attend & before | torch.eye(length, dtype=torch.bool, device=x.device)
        for block in self.blocks:
            x = block(x, attend)
        return x
