"""Zero-shot dense retrieval: the frozen sentence encoder on "query + recent history titles", no training.

It isolates what the text encoder alone knows, so any gain of a trained retriever over it is learned.
"""

from __future__ import annotations

import numpy as np

from dgi.baselines.bm25 import context_texts
from dgi.baselines.content import ExactKnnBaseline, knn_rank
from dgi.data.corpus import EncodedCorpus
from dgi.data.encoders import EmbeddingCache, cached_encoder


class DenseZeroShotBaseline(ExactKnnBaseline):
    """Encode each example's context text and search the item embeddings exactly (FAISS IndexFlatIP).

    `encoder` must be the corpus's text encoder (same embedding space); by default the cached encoder
    named by the corpus. Examples with neither query nor history fall back to popularity order.
    `exclude_history` drops the example's history items (an item's own title is its nearest text).
    """

    name = "dense-zero-shot"

    def __init__(self, encoder: EmbeddingCache | None = None, history_items: int = 10, exclude_history: bool = False,
                 batch_size: int = 1024) -> None:
        if history_items < 0:
            raise ValueError(f"history_items must be >= 0, got {history_items}")
        super().__init__(exclude_history, batch_size)
        self.encoder = encoder
        self.history_items = history_items

    def params(self) -> dict:  # the encoder is the corpus's: named there, not saved here
        return {**super().params(), "history_items": self.history_items}

    def fit(self, corpus: EncodedCorpus) -> DenseZeroShotBaseline:
        self._corpus_encoder(corpus)
        super().fit(corpus)
        return self

    def _corpus_encoder(self, corpus: EncodedCorpus) -> EmbeddingCache:
        self.encoder = self.encoder or cached_encoder(corpus.encoder_name)
        if self.encoder.encoder.name != corpus.encoder_name:
            raise ValueError(f"encoder {self.encoder.encoder.name!r} differs from the corpus's "
                             f"{corpus.encoder_name!r}: their embeddings are not comparable")
        return self.encoder

    def rank(self, corpus: EncodedCorpus, split: str, k: int, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        index = self._require_fit()
        texts = context_texts(corpus, split, self.history_items, limit)
        has_context = np.array([bool(text) for text in texts], dtype=bool)
        vectors = np.zeros((len(texts), index.d), dtype=np.float32)
        if has_context.any():
            vectors[has_context] = self._corpus_encoder(corpus).encode([text for text in texts if text])
        return knn_rank(index, vectors, has_context, self.fallback, k, self._excluded(corpus, split, limit),
                        self.batch_size)
