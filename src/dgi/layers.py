"""Transformer encoder whose residual branches start at zero (identity at initialization).

A tower that starts as the identity starts at content-similarity quality and improves from there;
random residual branches would bury the input embedding (see METHOD.md, practical notes).
"""

from __future__ import annotations

import torch
from torch import nn


def zero_init_encoder(width: int, layers: int, heads: int, ffn_multiplier: int, dropout: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(width, heads, ffn_multiplier * width, dropout, activation="gelu",
                                       batch_first=True, norm_first=True)
    encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
    for block in encoder.layers:
        _zero(block.self_attn.out_proj, block.linear2)
    return encoder


def _zero(*linears: nn.Linear) -> None:
    with torch.no_grad():
        for linear in linears:
            linear.weight.zero_()
            if linear.bias is not None:
                linear.bias.zero_()
