"""Chains of training examples that extend one another, so a causal context encoder reads each user once.

Sequential datasets list every prefix of a user's sequence as its own example (history x1..xt, target
x(t+1)). A causal encoder's state at item t depends on x1..xt alone, so one pass over the longest history
of a chain gives the context of every example in it (`ContextEncoder.prefixes`). Batches keep each chain's
examples consecutive; a chain cut by a batch boundary is two chains, each read off its own last example.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Chains:
    """Every training example in exactly one chain; `members[offsets[c]:offsets[c + 1]]` is chain c, oldest first."""

    parent: Tensor    # [n] the example this one extends by one item (its history = parent's history + target), or -1
    members: Tensor   # [n] examples, chain by chain
    offsets: Tensor   # [chains + 1]
    lengths: Tensor   # [chains] history length of each chain's last example (its encoded tokens)

    @classmethod
    def of(cls, targets: Tensor, history: Tensor, query_ids: Tensor) -> Chains:
        """Link each example to the one it extends. `history` [n, L] is left-padded with -1, as in training
        batches. An example with a query, or with no history, is a chain of its own (its context needs its
        own query slot); one whose history fills all L slots extends none (its oldest item was cut). Where
        several examples extend the same one, the first by row continues the chain, the others start new ones.
        """
        n, slots = history.shape
        lengths = (history >= 0).sum(dim=1)
        no_query = query_ids < 0
        extended = torch.cat([history[:, 1:], targets[:, None]], dim=1)  # history + target, left-padded
        can_be_extended = no_query & (lengths >= 1) & (lengths < slots)
        keys = {row.numpy().tobytes(): int(i) for i, row in zip(can_be_extended.nonzero().flatten(),
                                                                   extended[can_be_extended])}
        parent = torch.full((n,), -1, dtype=torch.long)
        child = torch.full((n,), -1, dtype=torch.long)
        for i in (no_query & (lengths >= 2)).nonzero().flatten().tolist():
            p = keys.get(history[i].numpy().tobytes(), -1)
            if p >= 0 and child[p] < 0:
                parent[i], child[p] = p, i
        chains: list[int] = []
        offsets = [0]
        for head in (parent < 0).nonzero().flatten().tolist():
            member = head
            while member >= 0:
                chains.append(member)
                member = int(child[member])
            offsets.append(len(chains))
        members, offsets_t = torch.tensor(chains, dtype=torch.long), torch.tensor(offsets, dtype=torch.long)
        return cls(parent, members, offsets_t, lengths[members[offsets_t[1:] - 1]])

    @property
    def sizes(self) -> Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def batches(self, batch_size: int, pool_batches: int, generator: torch.Generator) -> list[Tensor]:
        """Every example once, in batches of `batch_size` rows, each chain's examples consecutive: chains in
        random order; with `pool_batches` > 1, each pool of about that many batches' worth of chains sorted
        by length (the batches' padding shrinks) and the batches shuffled, as `length_bucketed` does rows."""
        order = torch.randperm(len(self.sizes), generator=generator)
        if pool_batches > 1:
            pool = (self.sizes[order].cumsum(dim=0) - 1) // (batch_size * pool_batches)
            order = order[torch.sort(pool * (int(self.lengths.max()) + 1) + self.lengths[order], stable=True).indices]
        starts, sizes = self.offsets[order], self.sizes[order]
        within = torch.arange(int(sizes.sum())) - torch.repeat_interleave(sizes.cumsum(dim=0) - sizes, sizes)
        batches = self.members[torch.repeat_interleave(starts, sizes) + within].split(batch_size)
        return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()] if pool_batches > 1 \
            else list(batches)

    def sequence_of(self, rows: Tensor) -> Tensor:
        """For a batch's `rows` (example indices): per row, the position in `rows` of the last row of its run of
        consecutive chain members (`Batch.sequence_of`): the row whose history the causal encoder reads."""
        continues = torch.zeros(len(rows), dtype=torch.bool)
        continues[1:] = self.parent[rows[1:]] == rows[:-1]
        ends = torch.ones(len(rows), dtype=torch.bool)
        ends[:-1] = ~continues[1:]
        end_rows = ends.nonzero().flatten()
        return end_rows[torch.searchsorted(end_rows, torch.arange(len(rows)))]
