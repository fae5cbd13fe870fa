"""Most-popular items first, the same list for every context: the floor every retriever must clear."""

from __future__ import annotations

import numpy as np

from dgi.corpus import EncodedCorpus


class PopularityBaseline:
    name = "popularity"

    def __init__(self) -> None:
        self.order: np.ndarray | None = None

    def fit(self, corpus: EncodedCorpus) -> PopularityBaseline:
        popularity = corpus.popularity
        self.order = np.lexsort((np.arange(len(popularity)), -popularity))  # ties: lower index first
        self.scores = popularity[self.order].astype(np.float64)
        return self

    def rank(self, corpus: EncodedCorpus, split: str, k: int, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        if self.order is None:
            raise RuntimeError("fit() the baseline first")
        n = len(corpus.splits[split].targets) if limit is None else min(limit, len(corpus.splits[split].targets))
        depth = min(k, len(self.order))
        return np.tile(self.order[:depth], (n, 1)), np.tile(self.scores[:depth], (n, 1))
