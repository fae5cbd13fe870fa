"""SID decoder and its output heads (tied to the codebooks, or own weights).

The decoder runs on [B, W, T, d]: W beams of one query share that query's context memory, so the
cross-attention keys/values are computed once per query and all beams attend to them in one call
(no copy of the memory per beam).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from dgi.nets.geometry import Geometry, LearnableScale, prefix_logits, similarity_logits
from dgi.nets.layers import FeedForward, attention, dropout, merge_heads, split_heads, zero_


class DecoderBlock(nn.Module):
    """Pre-norm block: causal self-attention within a beam, cross-attention to the context, feed-forward.

    With `zero_init` every residual branch's output projection starts at zero, so a fresh block is the
    identity (DGI starts from its dense solution); TIGER keeps PyTorch's default initialization.
    """

    def __init__(self, width: int, heads: int, ffn_multiplier: int, dropout: float, zero_init: bool = True) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.self_norm, self.cross_norm, self.ffn_norm = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.self_qkv = nn.Linear(width, 3 * width)
        self.self_out = nn.Linear(width, width)
        self.cross_query = nn.Linear(width, width)
        self.cross_key_value = nn.Linear(width, 2 * width)
        self.cross_out = nn.Linear(width, width)
        self.ffn = FeedForward(width, ffn_multiplier, dropout)
        if zero_init:
            zero_(self.self_out, self.cross_out, self.ffn.out)

    def memory_key_value(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """[B, S, d] -> keys, values [B, heads, S, d/heads]; computed once per query."""
        key, value = self.cross_key_value(memory).chunk(2, dim=-1)
        return split_heads(key, self.heads), split_heads(value, self.heads)

    def forward(self, x: Tensor, memory_kv: tuple[Tensor, Tensor], memory_attend: Tensor) -> Tensor:
        """x [B, W, T, d]; memory_attend [B, 1, 1, S] True where a context slot may be attended."""
        batch, beams, steps, width = x.shape
        p, training = self.dropout, self.training
        q, k, v = (split_heads(t, self.heads) for t in
                   self.self_qkv(self.self_norm(x)).reshape(batch * beams, steps, 3 * width).chunk(3, dim=-1))
        attended = merge_heads(attention(q, k, v, None, p, training, causal=True))
        x = x + dropout(self.self_out(attended).reshape(x.shape), p, training)
        return self._cross_and_feed_forward(x, memory_kv, memory_attend)

    def _cross_and_feed_forward(self, x: Tensor, memory_kv: tuple[Tensor, Tensor], memory_attend: Tensor) -> Tensor:
        """The block after its self-attention: cross-attention to the context, then the feed-forward."""
        batch, beams, steps, width = x.shape
        p, training = self.dropout, self.training
        query = split_heads(self.cross_query(self.cross_norm(x)).reshape(batch, beams * steps, width), self.heads)
        attended = merge_heads(attention(query, *memory_kv, memory_attend, p, training))
        x = x + dropout(self.cross_out(attended).reshape(x.shape), p, training)
        return x + dropout(self.ffn(self.ffn_norm(x)), p, training)

    def step(self, x: Tensor, past: list[tuple[Tensor, Tensor]], memory_kv: tuple[Tensor, Tensor],
             memory_attend: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Inference on each beam's newest position only: x [B, W, 1, d] and the (key, value) of each of the
        beam's earlier positions ([B, W or 1, heads, d/heads]; W = 1 where all beams of a query share it, as
        they share the root) -> its output and the newest position's (key, value) [B, W, heads, d/heads].
        The same function as `forward` on the whole prefix, at a T-th of the cost.

        Attention over the few positions of a SID is a softmax over T <= m scores, computed position by
        position: no concatenated key/value cache to copy per step, and a shared position stays shared."""
        batch, beams, _, width = x.shape
        head_dim = width // self.heads
        query, key, value = self.self_qkv(self.self_norm(x)).view(batch, beams, 3, self.heads, head_dim).unbind(2)
        if not past:  # a single position attends to itself alone: its value
            attended = value
        else:
            query = query * head_dim**-0.5
            keys, values = [k for k, _ in past] + [key], [v for _, v in past] + [value]
            weights = torch.stack([torch.linalg.vecdot(query, k) for k in keys], -1).softmax(-1)
            first, *rest = weights.unsqueeze(-1).unbind(-2)
            attended = first * values[0]
            for weight, v in zip(rest, values[1:]):
                attended = torch.addcmul(attended, weight, v)
        x = x + self.self_out(attended.reshape(x.shape))
        return self._cross_and_feed_forward(x, memory_kv, memory_attend), (key, value)


@dataclass
class DecoderMemory:
    """What every decoding step of one batch of queries reads from the context: each block's
    cross-attention keys/values and the attend mask. Beam search computes it once, not once per level."""

    key_values: list[tuple[Tensor, Tensor]]
    attend: Tensor  # [B, 1, 1, S] True where a context slot may be attended


class SIDDecoder(nn.Module):
    """Causal decoder over m input vectors per beam, cross-attending to the context memory."""

    def __init__(self, width: int, layers: int, heads: int, ffn_multiplier: int, dropout: float, levels: int) -> None:
        super().__init__()
        self.level_embedding = nn.Parameter(torch.zeros(levels, width))
        self.blocks = nn.ModuleList(DecoderBlock(width, heads, ffn_multiplier, dropout) for _ in range(layers))

    def memory(self, memory: Tensor, memory_padding: Tensor, rows: Tensor | None = None) -> DecoderMemory:
        """memory [B, S, d], memory_padding [B, S] True = padding; with `rows` [B'], memory has a row per
        sequence and example i reads row rows[i] (keys/values projected once per sequence)."""
        key_values = [block.memory_key_value(memory) for block in self.blocks]
        if rows is not None:
            key_values = [(key.index_select(0, rows), value.index_select(0, rows)) for key, value in key_values]
        return DecoderMemory(key_values, ~memory_padding[:, None, None, :])

    def forward(self, inputs: Tensor, memory: Tensor | DecoderMemory, memory_padding: Tensor | None = None) -> Tensor:
        """inputs [B, W, T, d] and the context (memory [B, S, d] with its padding mask, or a `DecoderMemory`
        computed before) -> hidden [B, W, T, d]."""
        states = memory if isinstance(memory, DecoderMemory) else self.memory(memory, memory_padding)
        x = inputs + self.level_embedding[: inputs.shape[2]]
        for block, key_value in zip(self.blocks, states.key_values):
            x = block(x, key_value, states.attend)
        return x

    def step(self, newest: Tensor, position: int, memory: DecoderMemory,
             past: list[list[tuple[Tensor, Tensor]]]) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """Each beam's newest input [B, W, 1, d] at `position` and, per block, the (key, value) of each of its
        earlier positions (see `DecoderBlock.step`; empty lists at position 0) -> its hidden state
        [B, W, 1, d] and every block's (key, value) of the newest position [B, W, heads, d/heads]."""
        x = newest + self.level_embedding[position]
        newest_kv = []
        for block, block_past, key_value in zip(self.blocks, past, memory.key_values):
            x, kv = block.step(x, block_past, key_value, memory.attend)
            newest_kv.append(kv)
        return x, newest_kv


class CodeHeads(nn.Module):
    """Level-j classifier. Tied: the weight IS codebook j (no separate lm_head); untied: own weights."""

    def __init__(self, codebook_sizes: list[int], width: int, sharing: Literal["tied", "untied"],
                 geometry: Geometry, gamma_init: float, target: Literal["codeword", "prefix"] = "codeword") -> None:
        super().__init__()
        self.sharing = sharing
        self.geometry = geometry
        self.target = target
        self.own = nn.ParameterList(nn.Parameter(torch.randn(k, width) * width**-0.5) for k in codebook_sizes) \
            if sharing == "untied" else None
        self.scales = nn.ModuleList(LearnableScale(gamma_init) for _ in codebook_sizes) if geometry == "cosine" else None

    def weight(self, level: int, codebooks: nn.ParameterList) -> Tensor:
        return codebooks[level] if self.own is None else self.own[level]

    def forward(self, hidden: Tensor, level: int, codebooks: nn.ParameterList, prefix: Tensor | None = None) -> Tensor:
        """Level-`level` logits of decoder states `hidden` [..., d]; `prefix` [..., d] is the sum of the
        codewords chosen before this level (what a "prefix" head extends; zeros at level 0)."""
        scale = self.scales[level]() if self.scales is not None else None
        if self.target == "prefix":
            return prefix_logits(hidden + prefix, prefix, codebooks[level], scale)
        return similarity_logits(hidden, self.weight(level, codebooks), self.geometry, scale)
