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
def assignment_logits(residual: Tensor, codebook: Tensor, geometry: Geometry, scale: Tensor | None = None) -> Tensor:
    """Quantizer code scores: scaled cosine, or (unnormalized geometry) negative squared distance as in VQ."""
    if geometry == "cosine":
        return similarity_logits(residual, codebook, "cosine", scale)
    return -torch.cdist(residual, codebook).square()
