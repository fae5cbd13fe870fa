"""The SID tree's popularity prior, for logit adjustment at search time.

A decoder trained on interactions learns log P(SID | context) = log P(context | SID) + log P(SID) + c:
its beams favour codes that many training targets share, which buries the SIDs of rarely seen items
(the tail). Subtracting alpha * log P_train(next code | prefix) at every level (logit adjustment,
Menon et al. 2021) removes alpha of that prior; the levels telescope, so a full SID's correction is
alpha * log P_train(SID). P_train counts each item's training interactions plus a pseudo-count of one,
so unseen items get a finite, small prior.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dgi.search.index import SIDIndex


class PopularityPrior:
    """log P(next code | prefix) of the index's SID tree under the items' training counts."""

    def __init__(self, index: SIDIndex, item_counts: Tensor, pseudo_count: float = 1.0) -> None:
        if item_counts.shape != (index.n_items,):
            raise ValueError(f"item_counts must have one entry per indexed item ({index.n_items}), "
                             f"got shape {tuple(item_counts.shape)}")
        if bool((item_counts < 0).any()):
            raise ValueError("item_counts must be >= 0")
        self.index = index
        self._mass = index.node_mass(item_counts.double() + pseudo_count)

    def log_conditional(self, prefix: Tensor) -> Tensor:
        """[B, W, j] prefixes -> [B, W, K_{j+1}] log P(code | prefix) for the codes that extend a prefix to a
        valid node, 0 for every other code (the constrained search never scores those)."""
        j = prefix.shape[-1]
        codes, nodes, offsets = self.index.next_nodes(prefix)
        rows = torch.repeat_interleave(offsets.diff())
        child = self._mass[j + 1].index_select(0, nodes)
        parent = torch.zeros(offsets.numel() - 1, dtype=torch.float64).index_add_(0, rows, child)  # all its children
        table = torch.zeros(offsets.numel() - 1, self.index.codebook_sizes[j], dtype=torch.float32)
        table[rows, codes] = (child.log() - parent.index_select(0, rows).log()).float()
        return table.view(*prefix.shape[:-1], -1)
