"""BM25 over item texts with the query plus recent history titles as one bag of words, as in the DGI paper."""

from __future__ import annotations

from pathlib import Path

import bm25s
import numpy as np

from dgi.data.corpus import EncodedCorpus
from dgi.io import atomic_directory
from dgi.methods.base import MethodDetails, read_manifest, write_manifest

INDEX, TOKENIZER = "bm25s", "tokenizer"  # bm25s's own files, in these subdirectories


def context_texts(corpus: EncodedCorpus, split: str, history_items: int, limit: int | None = None) -> list[str]:
    """Each example's query followed by its `history_items` most recent item texts, newest first.

    Newest first so an encoder that truncates long inputs drops the oldest titles; "" when the
    example has neither a query nor a (non-empty) history text.
    """
    items, position = corpus.dataset.items, corpus.dataset.item_index
    texts = []
    for example in corpus.dataset.splits[split][:limit]:
        recent = example.history[-history_items:] if history_items else ()  # [-0:] would keep everything
        parts = [example.query or ""] + [items[position[item_id]].text for item_id in reversed(recent)]
        texts.append("; ".join(part for part in parts if part.strip()))
    return texts


def top_positive(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best `k` items with a positive score, ties to the lower index, padded with -1 / -inf."""
    ranked = np.full(k, -1, dtype=np.int64)
    best = np.full(k, -np.inf)
    matched = np.flatnonzero(scores > 0)  # ascending index, so the stable sort breaks ties by index
    order = matched[np.argsort(-scores[matched], kind="stable")][:k]
    ranked[:order.size], best[:order.size] = order, scores[order]
    return ranked, best


class BM25Baseline:
    """Lexical retrieval with bm25s (English stopwords, no stemming): the classic text-match floor.

    Only items sharing at least one word with the context are returned, so rows may end in -1
    (examples with neither query nor history get an all -1 row). `exclude_history` drops the
    example's history items, which otherwise match their own titles best.
    """

    name = "bm25"

    def __init__(self, k1: float = 1.5, b: float = 0.75, history_items: int = 10, exclude_history: bool = False) -> None:
        if history_items < 0:
            raise ValueError(f"history_items must be >= 0, got {history_items}")
        self.k1, self.b, self.history_items, self.exclude_history = k1, b, history_items, exclude_history
        self.retriever: bm25s.BM25 | None = None

    def fit(self, corpus: EncodedCorpus) -> BM25Baseline:
        # Empty item texts become bm25s's empty token; queries never contain it (allow_empty=False below).
        self.tokenizer = bm25s.tokenization.Tokenizer(stopwords="en")
        tokens = self.tokenizer.tokenize([item.text for item in corpus.dataset.items], update_vocab=True,
                                         show_progress=False)
        self.retriever = bm25s.BM25(k1=self.k1, b=self.b)
        self.retriever.index(self.tokenizer.to_tokenized_tuple(tokens), show_progress=False)
        return self

    def params(self) -> dict:
        return {"k1": self.k1, "b": self.b, "history_items": self.history_items, "exclude_history": self.exclude_history}

    def save(self, directory: str | Path) -> Path:
        """The bm25s index and tokenizer vocabulary in bm25s's own format, beside `method.json`."""
        if self.retriever is None:
            raise RuntimeError("fit() the baseline first")
        with atomic_directory(directory) as tmp:
            write_manifest(tmp, self.name, self.params())
            self.retriever.save(str(tmp / INDEX), show_progress=False)
            (tmp / TOKENIZER).mkdir()
            self.tokenizer.save_vocab(str(tmp / TOKENIZER))
            self.tokenizer.save_stopwords(str(tmp / TOKENIZER))
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path) -> BM25Baseline:
        method = cls(**read_manifest(directory, cls.name))
        method.retriever = bm25s.BM25.load(str(Path(directory) / INDEX), show_progress=False)
        method.tokenizer = bm25s.tokenization.Tokenizer(stopwords=[])
        method.tokenizer.load_vocab(str(Path(directory) / TOKENIZER))
        method.tokenizer.load_stopwords(str(Path(directory) / TOKENIZER))
        return method

    def details(self, corpus: EncodedCorpus, split: str) -> MethodDetails:
        return MethodDetails()

    def rank(self, corpus: EncodedCorpus, split: str, k: int, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        if self.retriever is None:
            raise RuntimeError("fit() the baseline first")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        texts = context_texts(corpus, split, self.history_items, limit)
        # One tokenizer pass for the whole split; words unseen in the catalog cannot match and are dropped.
        queries = self.tokenizer.tokenize(texts, update_vocab=False, allow_empty=False, show_progress=False)
        depth = min(k, len(corpus.dataset.items))
        ranked = np.empty((len(texts), depth), dtype=np.int64)
        scores = np.empty((len(texts), depth), dtype=np.float64)
        history = corpus.splits[split].history
        for row, query in enumerate(queries):
            item_scores = self.retriever.get_scores_from_ids(query).astype(np.float64)
            if self.exclude_history:
                item_scores[history[row][history[row] >= 0]] = 0.0  # zero: top_positive never returns it
            ranked[row], scores[row] = top_positive(item_scores, depth)
        return ranked, scores
