"""A trainable text backbone: a sentence-transformers encoder fine-tuned with the rest of DGI.

The paper fine-tunes its text encoder end to end. Here the encoder is a submodule of the model, so its
weights are saved, resumed, gathered by DDP and exported like every other part; texts are tokenized
once (`Tokens`) and a training step encodes only the rows it needs gradients for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgi.data.encoders import PACKAGED_MODEL, model_location


@dataclass
class Tokens:
    """Token ids of many texts, padded to a common length with their attention mask."""

    ids: Tensor   # [N, L] int
    mask: Tensor  # [N, L] int, 1 on real tokens

    def rows(self, index: Tensor) -> Tokens:
        """The rows `index`, trimmed to their longest text (short texts cost less)."""
        mask = self.mask[index.to(self.mask.device)]
        length = max(int(mask.sum(dim=1).max()), 1) if len(mask) else 1
        return Tokens(self.ids[index.to(self.ids.device)][:, :length], mask[:, :length])

    def __len__(self) -> int:
        return len(self.ids)


class TextBackbone(nn.Module):
    """Mean-pooled, L2-normalized sentence embeddings with gradients; also a `TextEncoder` (`encode`)."""

    def __init__(self, model: str = PACKAGED_MODEL, max_length: int = 32, checkpointing: bool = True) -> None:
        super().__init__()
        from sentence_transformers import SentenceTransformer  # imported lazily: slow to import

        self.encoder = SentenceTransformer(model_location(model), device="cpu")
        self.encoder.max_seq_length = max_length
        if checkpointing:  # activations of each layer are recomputed in the backward pass, not kept
            self.encoder[0].auto_model.activation_checkpointing_enable({"use_reentrant": False})
        self.name = f"{model} (fine-tuned by dgi)"
        self.dim = int(self.encoder.get_embedding_dimension())

    def tokenize(self, texts: Sequence[str], chunk: int = 4096) -> Tokens:
        """Every text's token ids, capped at the backbone's maximum length (done once per corpus)."""
        length = self.encoder.max_seq_length
        ids = torch.zeros(len(texts), length, dtype=torch.int32)
        mask = torch.zeros(len(texts), length, dtype=torch.int32)
        for start in range(0, len(texts), chunk):
            part = self.encoder.preprocess(list(texts[start:start + chunk]))
            width = part["input_ids"].shape[1]
            ids[start:start + len(part["input_ids"]), :width] = part["input_ids"]
            mask[start:start + len(part["input_ids"]), :width] = part["attention_mask"]
        return Tokens(ids, mask)

    def forward(self, tokens: Tokens) -> Tensor:
        """[N, L] tokens -> [N, dim] unit vectors (float32), differentiable in the backbone's weights."""
        device = next(self.parameters()).device
        features = {"input_ids": tokens.ids.to(device).long(), "attention_mask": tokens.mask.to(device).long()}
        return F.normalize(self.encoder(features)["sentence_embedding"].float(), dim=-1)

    @torch.no_grad()
    def embed(self, tokens: Tokens, batch_size: int = 512) -> Tensor:
        """Every row's vector in eval mode (no dropout, no gradient), longest-first batches, row order kept."""
        was_training = self.training
        self.eval()
        order = torch.argsort(tokens.mask.sum(dim=1), descending=True)
        out = torch.zeros(len(tokens), self.dim)
        for part in order.split(batch_size):
            out[part] = self(tokens.rows(part)).cpu()
        self.train(was_training)
        return out

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """The `TextEncoder` protocol: what search and serving call on new queries and items."""
        return self.embed(self.tokenize(texts)).numpy() if len(texts) else np.zeros((0, self.dim), np.float32)


@dataclass
class FreshText:
    """The rows of the text-embedding tables one training step encodes with the backbone (with gradients):
    the batch's target items and queries. Every other row keeps its vector from the last refresh."""

    items: Tensor        # [n] item indices
    item_tokens: Tokens
    queries: Tensor      # [q] query indices (may be empty)
    query_tokens: Tokens

    def tables(self, backbone: TextBackbone, item_embeddings: Tensor, query_embeddings: Tensor) -> tuple[Tensor, Tensor]:
        """The item and query tables with this step's rows replaced by fresh, differentiable vectors."""
        items = item_embeddings.index_copy(0, self.items, backbone(self.item_tokens).to(item_embeddings.dtype))
        if not len(self.queries):
            return items, query_embeddings
        fresh = backbone(self.query_tokens).to(query_embeddings.dtype)
        return items, query_embeddings.index_copy(0, self.queries, fresh)
