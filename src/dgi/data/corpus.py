"""A dataset turned into tensors: frozen text embeddings for items and queries, integer example arrays."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
import torch
from torch import Tensor

from dgi.data import Dataset, ExampleArrays, add_indexing_examples, to_arrays
from dgi.data.encoders import EmbeddingCache, TextEncoder


@dataclass
class EncodedCorpus:
    """`splits["train"]` may also hold indexing examples that `dataset` (and so popularity) lacks."""

    dataset: Dataset
    item_embeddings: Tensor            # [n_items, text_dim] frozen text embeddings
    query_embeddings: Tensor           # [n_queries, text_dim] for every distinct query of every split
    splits: dict[str, ExampleArrays]   # query_ids index query_embeddings
    encoder_name: str
    query_texts: list[str] = field(default_factory=list)  # row i of query_embeddings is query_texts[i]

    @cached_property
    def popularity(self) -> np.ndarray:
        """Training interactions per item, counted once: buckets, validation and the search prior all read it."""
        return self.dataset.popularity()

    @property
    def item_ids(self) -> list[str]:
        return [item.id for item in self.dataset.items]

    def encoded_with(self, encoder: TextEncoder) -> EncodedCorpus:
        """The same corpus with item and query texts embedded by `encoder` (a fine-tuned backbone)."""
        items = torch.from_numpy(encoder.encode([item.text for item in self.dataset.items]))
        queries = torch.from_numpy(encoder.encode(self.query_texts)) if self.query_texts else self.query_embeddings
        return replace(self, item_embeddings=items, query_embeddings=queries, encoder_name=encoder.name)


def encode_corpus(dataset: Dataset, encoder: EmbeddingCache, max_history: int,
                  indexing_ratio: float = 0.0, seed: int = 0, indexing_spans: int = 0) -> EncodedCorpus:
    """Encode item texts (or take the items' own embeddings when every item has one) and all queries.

    `indexing_ratio` > 0 adds DSI indexing examples (`add_indexing_examples`, with `indexing_spans` short
    span queries per item) to the train
    arrays only: they are not interactions, so popularity and its buckets ignore them.
    """
    items = dataset.items
    if items and all(item.embedding is not None for item in items):
        item_embeddings = torch.tensor([item.embedding for item in items], dtype=torch.float32)
        item_embeddings = torch.nn.functional.normalize(item_embeddings, dim=-1)
    else:
        item_embeddings = torch.from_numpy(encoder.encode([item.text for item in items]))
    splits, texts, position = {}, [], {}
    for name, examples in add_indexing_examples(dataset, indexing_ratio, seed, indexing_spans).splits.items():
        arrays = to_arrays(examples, dataset.item_index, max_history)
        for text in arrays.query_texts:
            if text not in position:
                position[text] = len(texts)
                texts.append(text)
        remap = np.array([position[text] for text in arrays.query_texts] or [-1], dtype=np.int64)
        arrays.query_ids = np.where(arrays.query_ids >= 0, remap[arrays.query_ids.clip(min=0)], -1)
        splits[name] = arrays
    query_embeddings = torch.from_numpy(encoder.encode(texts)) if texts else torch.zeros(0, item_embeddings.shape[1])
    if query_embeddings.shape[1] != item_embeddings.shape[1]:
        raise ValueError(f"item embeddings have dimension {item_embeddings.shape[1]} but the text encoder "
                         f"{encoder.encoder.name!r} gives {query_embeddings.shape[1]}")
    return EncodedCorpus(dataset, item_embeddings, query_embeddings, splits, encoder.encoder.name, texts)
