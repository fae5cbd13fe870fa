"""Content kNN: rank items by cosine to the query or the last history item, the first thing a user tries."""

from __future__ import annotations

from typing import Literal

import faiss
import numpy as np
import torch
from torch import Tensor

from dgi.baselines.popularity import PopularityBaseline
from dgi.data.corpus import EncodedCorpus
from dgi.methods.base import SavedState

Mode = Literal["auto", "last_item", "query", "mean"]


def item_index(vectors: np.ndarray) -> faiss.IndexFlatIP:
    """Exact inner-product index; on L2-normalized embeddings inner product is cosine."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return index


def knn_rank(index: faiss.IndexFlatIP, vectors: np.ndarray, has_context: np.ndarray, fallback: PopularityBaseline,
             k: int, exclude: np.ndarray | None = None, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product, batched so memory stays bounded on large splits.

    Rows without context take the popularity order (scores: train counts). `exclude` [n, L] (-1 padded)
    lists items to drop per row; dropped slots move to the end as -1 with score -inf.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n, n_items = len(vectors), index.ntotal
    depth = min(k, n_items)
    search_k = min(depth + (0 if exclude is None else exclude.shape[1]), n_items)
    ranked = np.empty((n, depth), dtype=np.int64)
    scores = np.empty((n, depth), dtype=np.float64)
    for start in range(0, n, batch_size):
        rows = slice(start, start + batch_size)
        size = min(batch_size, n - start)
        batch = np.tile(fallback.order[:search_k], (size, 1))
        batch_scores = np.tile(fallback.scores[:search_k], (size, 1))
        found = np.flatnonzero(has_context[rows])
        if found.size:
            query = np.ascontiguousarray(vectors[rows][found], dtype=np.float32)
            batch_scores[found], batch[found] = index.search(query, search_k)
        if exclude is not None:
            drop = (batch[:, :, None] == exclude[rows][:, None, :]).any(axis=2)
            batch[drop], batch_scores[drop] = -1, -np.inf
            keep_first = np.argsort(drop, axis=1, kind="stable")
            batch = np.take_along_axis(batch, keep_first, axis=1)
            batch_scores = np.take_along_axis(batch_scores, keep_first, axis=1)
        ranked[rows], scores[rows] = batch[:, :depth], batch_scores[:, :depth]
    return ranked, scores


class ExactKnnBaseline(SavedState):
    """Shared part of the embedding baselines: an exact index over the item text embeddings and the
    popularity order for examples without any context. Subclasses say how to embed a context and which
    constructor parameters they take (`params`)."""

    def __init__(self, exclude_history: bool = False, batch_size: int = 1024) -> None:
        self.exclude_history = exclude_history
        self.batch_size = batch_size
        self.index: faiss.IndexFlatIP | None = None

    def fit(self, corpus: EncodedCorpus) -> ExactKnnBaseline:
        self.index = item_index(corpus.item_embeddings.numpy())
        self.fallback = PopularityBaseline().fit(corpus)
        return self

    def params(self) -> dict:
        return {"exclude_history": self.exclude_history, "batch_size": self.batch_size}

    def state(self) -> tuple[dict, dict[str, Tensor]]:
        index = self._require_fit()
        _, fallback = self.fallback.state()
        return self.params(), {"item_vectors": torch.from_numpy(index.reconstruct_n(0, index.ntotal)),
                               **{f"fallback.{name}": t for name, t in fallback.items()}}

    @classmethod
    def from_state(cls, params: dict, tensors: dict[str, Tensor]) -> ExactKnnBaseline:
        method = cls(**params)
        method.index = item_index(tensors["item_vectors"].numpy())
        method.fallback = PopularityBaseline.from_state({}, {name.removeprefix("fallback."): t for name, t in
                                                             tensors.items() if name.startswith("fallback.")})
        return method

    def _require_fit(self) -> faiss.IndexFlatIP:
        if self.index is None:
            raise RuntimeError("fit() the baseline first")
        return self.index

    def _excluded(self, corpus: EncodedCorpus, split: str, limit: int | None) -> np.ndarray | None:
        return corpus.splits[split].history[:limit] if self.exclude_history else None


class ContentBaseline(ExactKnnBaseline):
    """Nearest items to one context vector, by exact cosine over the frozen item text embeddings.

    `mode` picks the context: "auto" (the query when the example has one, else the last history item),
    "last_item", "query", or "mean" (mean of query and last item, renormalized; whichever exists alone
    otherwise). Examples lacking the chosen context fall back to popularity order.

    `exclude_history` drops items of the example's (max_history-truncated) history. Leave-one-out
    protocols usually do NOT exclude, since repeat consumption is a legitimate target; without exclusion
    the "last_item" mode ranks the last item itself first.
    """

    name = "content-knn"

    def __init__(self, mode: Mode = "auto", exclude_history: bool = False, batch_size: int = 1024) -> None:
        if mode not in ("auto", "last_item", "query", "mean"):
            raise ValueError(f"mode must be 'auto', 'last_item', 'query' or 'mean', got {mode!r}")
        super().__init__(exclude_history, batch_size)
        self.mode = mode

    def params(self) -> dict:
        return {**super().params(), "mode": self.mode}

    def rank(self, corpus: EncodedCorpus, split: str, k: int, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        index = self._require_fit()
        arrays = corpus.splits[split]
        history, query_ids = arrays.history[:limit], arrays.query_ids[:limit]
        vectors, has_context = self._contexts(corpus, history, query_ids)
        return knn_rank(index, vectors, has_context, self.fallback, k, self._excluded(corpus, split, limit),
                        self.batch_size)

    def _contexts(self, corpus: EncodedCorpus, history: np.ndarray,
                  query_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One context vector per example (zeros where absent) and whether the example has one."""
        items, queries = corpus.item_embeddings.numpy(), corpus.query_embeddings.numpy()
        n, dim = len(query_ids), items.shape[1]
        last = history[:, -1] if history.shape[1] else np.full(n, -1, dtype=np.int64)
        has_query, has_last = query_ids >= 0, last >= 0
        query_vectors = np.zeros((n, dim), dtype=np.float32)
        query_vectors[has_query] = queries[query_ids[has_query]]
        last_vectors = np.zeros((n, dim), dtype=np.float32)
        last_vectors[has_last] = items[last[has_last]]
        if self.mode == "query":
            return query_vectors, has_query
        if self.mode == "last_item":
            return last_vectors, has_last
        if self.mode == "auto":
            return np.where(has_query[:, None], query_vectors, last_vectors), has_query | has_last
        mean = query_vectors + last_vectors
        norms = np.linalg.norm(mean, axis=1, keepdims=True)
        return mean / np.maximum(norms, 1e-12), has_query | has_last
