"""The DGI loss terms (METHOD.md, "Loss"). Each returns a scalar mean over the batch."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from dgi.device import full_precision


def next_token_per_example(logits: list[Tensor], codes: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy [B, m] of each example's hard code at each level (L_NTP is its mean), optionally
    label-smoothed (this share of the target mass spread evenly over the level's codes)."""
    return torch.stack([F.cross_entropy(level_logits, codes[:, j], reduction="none", label_smoothing=label_smoothing)
                        for j, level_logits in enumerate(logits)], dim=1)


def soft_next_token_per_example(logits: list[Tensor], targets: list[Tensor]) -> Tensor:
    """Cross-entropy [B, m] of each level's logits against a target distribution per level ([B, K_j])."""
    return torch.stack([-(target * F.log_softmax(level_logits.float(), dim=-1)).sum(-1)
                        for level_logits, target in zip(logits, targets)], dim=1)


@torch.no_grad()
def dense_code_targets(item_logits: Tensor, item_codes: Tensor, codes: Tensor, codebook_sizes: list[int]) -> list[Tensor]:
    """The dense path's distribution over each level's codes, given the target's SID prefix.

    item_logits [B, N] score every item for each example, item_codes [N, m] are the items' SIDs and
    codes [B, m] the targets'. Level j's distribution is the softmax over items restricted to those
    sharing the target's first j codes, summed by each item's code j: what a decoder that generated
    exactly the dense ranking's probabilities would predict under teacher forcing. The target item
    is always under its own prefix, so no level is empty.
    """
    item_probs = F.softmax(item_logits.float(), dim=-1)
    under_prefix = torch.ones_like(item_probs, dtype=torch.bool)
    targets = []
    for level, size in enumerate(codebook_sizes):
        mass = item_probs * under_prefix
        per_code = mass.new_zeros(len(mass), size).index_add_(1, item_codes[:, level], mass)
        targets.append(per_code / per_code.sum(-1, keepdim=True))
        under_prefix &= item_codes[None, :, level] == codes[:, level, None]
    return targets


def next_token_hits(logits: list[Tensor], codes: Tensor) -> Tensor:
    """[B, m] bool: whether each level's argmax is the example's hard code (token accuracy)."""
    return torch.stack([level_logits.argmax(-1) == codes[:, j] for j, level_logits in enumerate(logits)], dim=1)


def global_reconstruction(z: Tensor, reconstruction: Tensor) -> Tensor:
    """L_Global: 1 - cos(z_base, sum_j z~_j) — reconstruction by direction, not MSE."""
    return (1.0 - F.cosine_similarity(z, reconstruction, dim=-1)).mean()


def local_commitment(hard_residuals: Tensor, codewords: Tensor, beta: float) -> Tensor:
    """L_Local: ||sg[r] - e||^2 pulls codewords to residuals; beta ||r - sg[e]||^2 commits the encoder."""
    codebook_term = (hard_residuals.detach() - codewords).square().sum(-1)
    commitment = (hard_residuals - codewords.detach()).square().sum(-1)
    return (codebook_term + beta * commitment).sum(-1).mean()


@full_precision
def info_nce(context: Tensor, targets: Tensor, target_ids: Tensor, temperature: float,
             negatives: Tensor | None = None, negative_ids: Tensor | None = None, positive_offset: int = 0,
             groups: Tensor | None = None) -> Tensor:
    """Contrastive loss between normalized z_q and the targets' z_base.

    Negatives are the other rows' targets (in-batch, so sampled by popularity) plus, optionally,
    shared items drawn uniformly from the catalog; an item equal to the row's target is never a negative.
    `targets` may hold more rows than `context` (every process's targets, gathered): context row i's
    positive is then target row `positive_offset + i`. `groups` (one per row of `targets`) keeps rows of
    one group from being each other's negatives: a chain's examples are one user's prefixes, and the
    user's other targets (items bought before and after) are no negatives of its context.
    """
    candidates, candidate_ids = targets, target_ids
    if negatives is not None:
        candidates, candidate_ids = torch.cat([targets, negatives]), torch.cat([target_ids, negative_ids])
    logits = context @ candidates.T / temperature
    columns = positive_offset + torch.arange(len(context), device=logits.device)
    same_item = target_ids[columns][:, None] == candidate_ids[None, :]
    if groups is not None:
        same_item[:, :len(targets)] |= groups[columns][:, None] == groups[None, :]
    positive = torch.zeros_like(same_item)
    positive[torch.arange(len(context), device=logits.device), columns] = True
    logits = logits.masked_fill(same_item & ~positive, float("-inf"))
    return F.cross_entropy(logits, columns)


def code_diversity(probs: list[Tensor]) -> Tensor:
    """L_Div: 1 - H(pbar_j)/log K_j per level, averaged (pbar = batch-mean soft assignment).

    Minimizing sum_k pbar log pbar as in the paper, rescaled to [0, 1] so its weight is comparable across K.
    """
    terms = []
    for p in probs:
        mean = p.mean(dim=0)
        entropy = -(mean * torch.log(mean + 1e-10)).sum()
        terms.append(1.0 - entropy / math.log(p.shape[-1]))
    return torch.stack(terms).mean()
