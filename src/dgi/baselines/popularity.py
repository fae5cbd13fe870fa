"""Most-popular items first, the same list for every context: the floor every retriever must clear."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from dgi.data.corpus import EncodedCorpus
from dgi.methods.base import SavedState


class PopularityBaseline(SavedState):
    name = "popularity"

    def __init__(self) -> None:
        self.order: np.ndarray | None = None

    def fit(self, corpus: EncodedCorpus) -> PopularityBaseline:
        popularity = corpus.popularity
        self.order = np.lexsort((np.arange(len(popularity)), -popularity))  # ties: lower index first
        self.scores = popularity[self.order].astype(np.float64)
        return self

    def state(self) -> tuple[dict, dict[str, Tensor]]:
        if self.order is None:
            raise RuntimeError("fit() the baseline first")
        return {}, {"order": torch.from_numpy(self.order), "scores": torch.from_numpy(self.scores)}

    @classmethod
    def from_state(cls, params: dict, tensors: dict[str, Tensor]) -> PopularityBaseline:
        method = cls(**params)
        method.order, method.scores = tensors["order"].numpy(), tensors["scores"].numpy()
        return method

    def rank(self, corpus: EncodedCorpus, split: str, k: int, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        if self.order is None:
            raise RuntimeError("fit() the baseline first")
        n = len(corpus.splits[split].targets) if limit is None else min(limit, len(corpus.splits[split].targets))
        depth = min(k, len(self.order))
        return np.tile(self.order[:depth], (n, 1)), np.tile(self.scores[:depth], (n, 1))
