"""What training needs of a trainable text backbone: the corpus tokenized once, each step's fresh rows,
and the full tables re-embedded after every epoch."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dgi.data.corpus import EncodedCorpus
from dgi.nets.backbone import FreshText, TextBackbone, Tokens
from dgi.nets.model import Batch


@dataclass
class TrainableText:
    item_tokens: Tokens
    query_tokens: Tokens
    stale: bool = True            # the tables do not reflect the backbone's current weights
    refresh_seconds: float = 0.0  # spent re-embedding so far (part of the training time)

    @classmethod
    def of(cls, backbone: TextBackbone, corpus: EncodedCorpus) -> TrainableText:
        items = corpus.dataset.items
        if any(item.embedding is not None for item in items):
            raise ValueError("model.text_encoder=trainable fine-tunes on item texts: this dataset gives its items "
                             "embeddings instead")
        if len(corpus.query_texts) != len(corpus.query_embeddings):
            raise ValueError("the corpus lacks its query texts (EncodedCorpus.query_texts): encode it again")
        return cls(backbone.tokenize([item.text for item in items]), backbone.tokenize(corpus.query_texts))

    def fresh(self, batch: Batch) -> FreshText:
        """The batch's distinct targets and queries: the rows its step encodes with gradients."""
        items = torch.unique(batch.targets)
        queries = torch.unique(batch.query_ids[batch.query_ids >= 0])
        return FreshText(items, self.item_tokens.rows(items), queries, self.query_tokens.rows(queries))

    def embed_all(self, backbone: TextBackbone, device: torch.device) -> tuple[Tensor, Tensor]:
        """Every item's and query's vector under the backbone's current weights; the tables go fresh."""
        items = backbone.embed(self.item_tokens).to(device)
        queries = backbone.embed(self.query_tokens).to(device) if len(self.query_tokens) \
            else torch.zeros(0, backbone.dim, device=device)
        self.stale = False
        return items, queries
