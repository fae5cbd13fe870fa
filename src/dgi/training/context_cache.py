"""The training examples' contexts, encoded once for the decoder phase.

In the decoder phase the towers are frozen and in eval mode, so every example's context (the memory the
decoder cross-attends to, its padding and the pooled vector) is the same in every epoch. Encoding it once
takes the item tower and the context encoder out of the phase's steps. It is held in fp32 as computed,
so the decoder trains on the same inputs as without the cache, up to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dgi.nets.model import Batch, DGIModel
from dgi.nets.towers import Context

MEMORY_BUDGET_BYTES = 4 * 2**30  # above this the contexts are encoded per batch instead


@dataclass
class ContextCache:
    memory: Tensor    # [N, S, d]: S = history slots + the query slot, history right-aligned as in a batch
    padding: Tensor   # [N, S] True where a slot is padding
    vector: Tensor    # [N, d] pooled context z_q

    @staticmethod
    def fits(examples: int, history_slots: int, width: int, budget: int = MEMORY_BUDGET_BYTES) -> bool:
        return examples * (history_slots + 1) * (width + 1) * 4 <= budget

    @classmethod
    @torch.no_grad()
    def build(cls, model: DGIModel, batch: Batch, item_embeddings: Tensor, query_embeddings: Tensor,
              chunk: int = 1024) -> ContextCache:
        """Encode every row of `batch` (all training examples), shortest histories together so that each
        chunk drops most of its padding columns; the model must be in eval mode (no dropout)."""
        n, slots = batch.history.shape[0], batch.history.shape[1] + 1
        width = model.config.model.width
        memory = item_embeddings.new_zeros(n, slots, width)
        padding = torch.ones(n, slots, dtype=torch.bool, device=item_embeddings.device)
        vector = item_embeddings.new_zeros(n, width)
        order = torch.argsort((batch.history >= 0).sum(dim=1), stable=True)
        for rows in order.split(chunk):
            part = Batch(batch.targets[rows], batch.history[rows], batch.query_ids[rows])
            context = model.batch_context(part, item_embeddings, query_embeddings)
            used = context.memory.shape[1]
            memory[rows, slots - used:] = context.memory.float()
            padding[rows, slots - used:] = context.padding
            vector[rows] = context.vector.float()
        return cls(memory, padding, vector)

    def context(self, rows: Tensor) -> Context:
        """The contexts of `rows`, trimmed as `DGIModel.encode_context` trims a batch: the history columns
        that are padding in every row go (the query slot stays), so every tensor has the shape it has
        without the cache and dropout in the decoder draws the same random numbers."""
        padding = self.padding[rows]
        used = int((~padding[:, :-1]).sum(dim=1).max()) + 1 if len(rows) else 1
        start = padding.shape[1] - used
        return Context(self.memory[rows, start:], padding[:, start:], self.vector[rows])
