"""Residual quantizer with interchangeable gradient estimators (soft Gumbel / straight-through / frozen)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgi.nets.geometry import Geometry, LearnableScale, assignment_logits


@dataclass
class Quantized:
    codes: Tensor            # [B, m] hard codes along the hard residual chain: the prediction targets
    vectors: Tensor          # [B, m, d] what the decoder is teacher-forced with (soft, ST-hard or hard)
    probs: list[Tensor]      # per level [B, K_j] assignment distributions (for the diversity loss)
    hard_residuals: Tensor   # [B, m, d] r_{j-1} of the hard chain (for the local loss)

    @property
    def reconstruction(self) -> Tensor:
        return self.vectors.sum(dim=1)


class ResidualQuantizer(nn.Module):
    """m codebooks; level j quantizes what levels < j left over."""

    def __init__(self, codebook_sizes: list[int], dim: int, geometry: Geometry, gamma_init: float) -> None:
        super().__init__()
        self.codebook_sizes = list(codebook_sizes)
        self.geometry = geometry
        self.codebooks = nn.ParameterList(nn.Parameter(torch.randn(k, dim) * dim**-0.5) for k in codebook_sizes)
        self.scale = LearnableScale(gamma_init) if geometry == "cosine" else None

    @property
    def levels(self) -> int:
        return len(self.codebooks)

    def logits(self, residual: Tensor, level: int) -> Tensor:
        return assignment_logits(residual, self.codebooks[level], self.geometry, self._scale())

    def _scale(self) -> Tensor | None:
        return self.scale() if self.scale is not None else None

    def hard_chain(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Codes and the residual entering each level, always with hard codewords."""
        codes, residuals = [], []
        residual = z
        for level, codebook in enumerate(self.codebooks):
            residuals.append(residual)
            code = self.logits(residual, level).argmax(dim=-1)
            codes.append(code)
            residual = residual - codebook[code]
        return torch.stack(codes, dim=1), torch.stack(residuals, dim=1)

    @torch.no_grad()
    def encode(self, z: Tensor, batch_size: int = 8192) -> Tensor:
        """Hard SIDs for indexing."""
        return torch.cat([self.hard_chain(chunk)[0] for chunk in z.split(batch_size)]) if len(z) else \
            torch.zeros(0, self.levels, dtype=torch.long)

    def codewords(self, codes: Tensor) -> Tensor:
        """[..., j] codes -> [..., j, d] codeword vectors (j may be 0)."""
        if codes.shape[-1] == 0:
            return self.codebooks[0].new_zeros(*codes.shape, self.codebooks[0].shape[1])
        codes = codes.long()  # an index keeps its codes in a small integer type
        return torch.stack([self.codebooks[j][codes[..., j]] for j in range(codes.shape[-1])], dim=-2)

    @torch.no_grad()
    def kmeans_init(self, z: Tensor, iterations: int, seed: int) -> None:
        """Residual k-means (faiss) over item vectors: each level clusters what the previous left."""
        residual = z.detach().float().cpu().numpy().astype(np.float32)
        for level, size in enumerate(self.codebook_sizes):
            n_clusters = min(size, len(residual))
            kmeans = faiss.Kmeans(residual.shape[1], n_clusters, niter=iterations, seed=seed + level,
                                  min_points_per_centroid=1, max_points_per_centroid=100_000)
            kmeans.train(residual)
            centroids = kmeans.centroids
            if n_clusters < size:  # tiny corpora: spare codes start as jittered copies
                rng = np.random.default_rng(seed + level)
                extra = centroids[rng.integers(0, n_clusters, size - n_clusters)]
                centroids = np.concatenate([centroids, extra + 1e-3 * rng.standard_normal(extra.shape).astype(np.float32)])
            self.codebooks[level].copy_(torch.from_numpy(centroids))
            codes = self.logits(torch.from_numpy(residual).to(self.codebooks[level].device), level).argmax(dim=-1)
            residual = residual - centroids[codes.cpu().numpy()]


class GradientStrategy(Protocol):
    """How the decoder's teacher-forcing vectors (and their gradients) come out of the quantizer."""

    name: str
    trains_quantizer: bool

    def quantize(self, quantizer: ResidualQuantizer, z: Tensor, item_ids: Tensor, tau: float) -> Quantized: ...


class GumbelSoft:
    """DGI: pure soft relaxation, z~_j = softmax((s_j + g) / tau) @ E_j along a soft residual chain."""

    name = "gumbel"
    trains_quantizer = True

    def quantize(self, quantizer: ResidualQuantizer, z: Tensor, item_ids: Tensor, tau: float) -> Quantized:
        codes, hard_residuals = quantizer.hard_chain(z)
        vectors, probs = [], []
        residual = z
        for level, codebook in enumerate(quantizer.codebooks):
            logits = quantizer.logits(residual, level)
            noisy = logits + _gumbel_like(logits) if quantizer.training else logits
            p = F.softmax(noisy / tau, dim=-1)
            soft = p @ codebook
            vectors.append(soft)
            probs.append(p)
            residual = residual - soft
        return Quantized(codes, torch.stack(vectors, dim=1), probs, hard_residuals)


class StraightThrough:
    """Ablation: hard codewords forward, the softmax's gradient backward (biased)."""

    name = "ste"
    trains_quantizer = True

    def quantize(self, quantizer: ResidualQuantizer, z: Tensor, item_ids: Tensor, tau: float) -> Quantized:
        codes, hard_residuals = quantizer.hard_chain(z)
        vectors, probs = [], []
        for level, codebook in enumerate(quantizer.codebooks):
            logits = quantizer.logits(hard_residuals[:, level], level)
            noisy = logits + _gumbel_like(logits) if quantizer.training else logits
            p = F.softmax(noisy / tau, dim=-1)
            one_hot = F.one_hot(codes[:, level], codebook.shape[0]).to(p.dtype)
            vectors.append((one_hot + p - p.detach()) @ codebook)
            probs.append(p)
        return Quantized(codes, torch.stack(vectors, dim=1), probs, hard_residuals)


class Frozen:
    """Two-stage (TIGER-style): codes fixed after the quantizer was fitted; nothing flows back."""

    name = "frozen"
    trains_quantizer = False

    def __init__(self, item_codes: Tensor) -> None:
        self.item_codes = item_codes

    def quantize(self, quantizer: ResidualQuantizer, z: Tensor, item_ids: Tensor, tau: float) -> Quantized:
        codes = self.item_codes[item_ids]
        with torch.no_grad():
            vectors = quantizer.codewords(codes)
        return Quantized(codes, vectors, [], torch.zeros_like(vectors))


def _gumbel_like(logits: Tensor) -> Tensor:
    uniform = torch.rand_like(logits).clamp_(1e-9, 1.0 - 1e-9)
    return -torch.log(-torch.log(uniform))
