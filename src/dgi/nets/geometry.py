"""Logit geometries: scaled cosine (DGI) versus raw inner product (the hubness-prone default).

With cosine logits the raw weights are normalized in the forward pass (weight normalization);
the gradient then has no radial component, so a popular item's vector cannot win by growing.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgi.device import full_precision

Geometry = Literal["cosine", "dot"]


class LearnableScale(nn.Module):
    """gamma > 0 kept as log(gamma) so updates are relative; the paper initializes gamma = 30."""

    def __init__(self, init: float) -> None:
        super().__init__()
        self.log_value = nn.Parameter(torch.tensor(math.log(init)))

    def forward(self) -> Tensor:
        return self.log_value.exp()


@full_precision
def similarity_logits(hidden: Tensor, weight: Tensor, geometry: Geometry, scale: Tensor | None = None) -> Tensor:
    """Logits of `hidden` [..., d] against the rows of `weight` [K, d]."""
    if geometry == "cosine":
        assert scale is not None, "cosine logits need a scale"
        return scale * F.normalize(hidden, dim=-1) @ F.normalize(weight, dim=-1).T
    return hidden @ weight.T


@full_precision
def prefix_logits(query: Tensor, prefix: Tensor, codebook: Tensor, scale: Tensor) -> Tensor:
    """scale * cos(query, prefix + codebook[k]) for every k: `query`, `prefix` [..., d], `codebook` [K, d].

    Expanded as (<q, p> + <q, c_k>) / |p + c_k| with |p + c_k|^2 = |p|^2 + 2 <p, c_k> + |c_k|^2, so it
    costs two products with the codebook and never forms the [..., K, d] candidate points.
    """
    unit = F.normalize(query, dim=-1)
    along = (unit * prefix).sum(-1, keepdim=True) + unit @ codebook.T
    squared = prefix.square().sum(-1, keepdim=True) + 2 * prefix @ codebook.T + codebook.square().sum(-1)
    return scale * along / squared.clamp_min(1e-12).sqrt()


@full_precision
def assignment_logits(residual: Tensor, codebook: Tensor, geometry: Geometry, scale: Tensor | None = None) -> Tensor:
    """Quantizer code scores: scaled cosine, or (unnormalized geometry) negative squared distance as in VQ."""
    if geometry == "cosine":
        return similarity_logits(residual, codebook, "cosine", scale)
    return -torch.cdist(residual, codebook).square()
