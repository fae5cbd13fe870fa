"""The DGI model: item tower + context encoder + residual quantizer + SID decoder, trained as one."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgi import losses
from dgi.config import Config
from dgi.decoder import CodeHeads, SIDDecoder
from dgi.quantizer import Frozen, GradientStrategy, GumbelSoft, Quantized, ResidualQuantizer, StraightThrough
from dgi.towers import Context, ContextEncoder, TextProjection


@dataclass
class Batch:
    """One training batch, as indices into the frozen text-embedding tables."""

    targets: Tensor        # [B] item index
    history: Tensor        # [B, L] item index, -1 padded on the left
    query_ids: Tensor      # [B] query index or -1


class DGIModel(nn.Module):
    def __init__(self, config: Config, text_dim: int, codebook_sizes: list[int], n_items: int = 0) -> None:
        super().__init__()
        m, q = config.model, config.quantizer
        self.config = config
        cosine = m.geometry == "cosine"
        self.item_tower = TextProjection(text_dim, m.width, normalize=cosine)
        self.query_tower = TextProjection(text_dim, m.width, normalize=cosine)
        self.item_id_embedding = nn.Embedding(n_items, m.width) if m.item_id_embeddings else None
        if self.item_id_embedding is not None:
            nn.init.zeros_(self.item_id_embedding.weight)
        self.context_encoder = ContextEncoder(m.width, m.context_layers, m.attention_heads, m.ffn_multiplier,
                                              m.dropout, config.data.max_history, normalize=cosine)
        self.quantizer = ResidualQuantizer(codebook_sizes, m.width, q.logits, q.gamma_init)
        self.decoder = SIDDecoder(m.width, m.decoder_layers, m.attention_heads, m.ffn_multiplier, m.dropout,
                                  len(codebook_sizes))
        self.heads = CodeHeads(codebook_sizes, m.width, q.heads, q.logits, q.gamma_init)
        # Filled when a frozen (two-stage) quantizer fixes the codes; saved with the weights.
        self.register_buffer("frozen_codes", torch.zeros(0, len(codebook_sizes), dtype=torch.long))

    # ----- representations -------------------------------------------------------------------
    def init_projections(self, weight: Tensor, bias: Tensor) -> None:
        self.item_tower.init_projection(weight, bias)
        self.query_tower.init_projection(weight, bias)

    def item_vectors(self, item_embeddings: Tensor, ids: Tensor | None = None) -> Tensor:
        """z_base: normalized item-tower output (plus the item's ID vector when the model has them)."""
        offset = None
        if self.item_id_embedding is not None and ids is not None:
            known = ids < self.item_id_embedding.num_embeddings  # items indexed after training have none
            offset = self.item_id_embedding(torch.where(known, ids, 0)) * known[..., None]
        return self.item_tower(item_embeddings, offset)

    def catalog_vectors(self, item_embeddings: Tensor, chunk: int = 8192) -> Tensor:
        """z_base of every item, item i being row i."""
        ids = torch.arange(len(item_embeddings), device=item_embeddings.device)
        return torch.cat([self.item_vectors(e, i) for e, i in zip(item_embeddings.split(chunk), ids.split(chunk))]) \
            if len(item_embeddings) else item_embeddings.new_zeros(0, self.config.model.width)

    def encode_context(self, history: Tensor, query_embeddings: Tensor | None, has_query: Tensor,
                       item_embeddings: Tensor) -> Context:
        """history: [B, L] item indices (-1 = padding); query_embeddings [B, text_dim] (rows ignored where no query)."""
        mask = history >= 0
        ids = history.clamp(min=0)
        history_vectors = self.item_vectors(item_embeddings[ids], ids) * mask[..., None]
        if query_embeddings is None:
            query = history_vectors.new_zeros(len(history), history_vectors.shape[-1])
        else:
            query = self.query_tower(query_embeddings)
        return self.context_encoder(history_vectors, mask, query, has_query)

    # ----- generation ------------------------------------------------------------------------
    @property
    def strategy(self) -> GradientStrategy:
        gradient = self.config.quantizer.gradient
        if gradient == "frozen":
            return Frozen(self.frozen_codes)
        return GumbelSoft() if gradient == "gumbel" else StraightThrough()

    def decoder_inputs(self, context_vector: Tensor, vectors: Tensor) -> Tensor:
        """Step 0 reads z_q; step j reads z_q minus the first j codewords ("residual") or codeword j."""
        if self.config.model.decoder_inputs == "residual":
            following = context_vector[:, None] - vectors.cumsum(dim=1)
        else:
            following = vectors
        return torch.cat([context_vector[:, None], following], dim=1)

    def level_logits(self, context: Context, vectors: Tensor) -> list[Tensor]:
        """Teacher-forced logits of every level given the m code vectors [B, m, d]."""
        inputs = self.decoder_inputs(context.vector, vectors[:, :-1])
        hidden = self.decoder(inputs[:, None], context.memory, context.padding)[:, 0]
        return [self.heads(hidden[:, j], j, self.quantizer.codebooks) for j in range(hidden.shape[1])]

    def step_log_probs(self, context: Context, prefix: Tensor) -> Tensor:
        """Beam-search step: prefix codes [B, W, j] -> log-probs [B, W, K_{j+1}] over the full codebook."""
        batch, beams, depth = prefix.shape
        vectors = self.quantizer.codewords(prefix.reshape(batch * beams, depth))
        inputs = self.decoder_inputs(context.vector.repeat_interleave(beams, dim=0), vectors)
        hidden = self.decoder(inputs.reshape(batch, beams, depth + 1, -1), context.memory, context.padding)
        return F.log_softmax(self.heads(hidden[:, :, -1], depth, self.quantizer.codebooks), dim=-1)

    # ----- training --------------------------------------------------------------------------
    def quantize(self, z: Tensor, item_ids: Tensor, tau: float) -> Quantized:
        return self.strategy.quantize(self.quantizer, z, item_ids, tau)

    def losses(self, batch: Batch, item_embeddings: Tensor, query_embeddings: Tensor, tau: float,
               generative: bool) -> dict[str, Tensor]:
        """Every loss term for one batch; `generative=False` is the dense warm-up (InfoNCE only)."""
        weights = self.config.loss
        has_query = batch.query_ids >= 0
        queries = query_embeddings[batch.query_ids.clamp(min=0)] if len(query_embeddings) else None
        context = self.encode_context(batch.history, queries, has_query, item_embeddings)
        z = self.item_vectors(item_embeddings[batch.targets], batch.targets)
        negative_ids = torch.randint(len(item_embeddings), (weights.sampled_negatives,), device=z.device) \
            if weights.sampled_negatives else None
        negatives = self.item_vectors(item_embeddings[negative_ids], negative_ids) if negative_ids is not None else None
        # Dot geometry has no temperature: raw inner products are the logits (the norm is the scale).
        temperature = weights.infonce_temperature if self.config.model.geometry == "cosine" else 1.0
        terms = {"infonce": losses.info_nce(context.vector, z, batch.targets, temperature, negatives, negative_ids)}
        if not generative:
            return terms
        quantized = self.quantize(z, batch.targets, tau)
        terms["ntp"] = losses.next_token(self.level_logits(context, quantized.vectors), quantized.codes)
        if self.strategy.trains_quantizer:
            codewords = self.quantizer.codewords(quantized.codes)
            terms["global"] = losses.global_reconstruction(z, quantized.reconstruction)
            terms["local"] = losses.local_commitment(quantized.hard_residuals, codewords, weights.commitment_beta)
            terms["diversity"] = losses.code_diversity(quantized.probs)
        return terms

    def weighted_total(self, terms: dict[str, Tensor]) -> Tensor:
        w = self.config.loss
        weight = {"infonce": w.infonce, "ntp": w.ntp, "global": w.global_recon, "local": w.local,
                  "diversity": w.diversity}
        return sum(weight[name] * value for name, value in terms.items())
