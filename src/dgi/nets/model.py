"""The DGI model: item tower + context encoder + residual quantizer + SID decoder, trained as one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgi.nets import losses
from dgi.config import Config
from dgi.nets.backbone import FreshText, TextBackbone
from dgi.nets.decoder import CodeHeads, DecoderMemory, SIDDecoder
from dgi.nets.quantizer import Frozen, GradientStrategy, GumbelSoft, Quantized, ResidualQuantizer, StraightThrough
from dgi.nets.towers import Context, ContextEncoder, TextProjection


@dataclass
class NextTokenDetail:
    """Per example and SID level (detached): the training next-token loss and whether argmax was the code."""

    loss: Tensor      # [B, m]
    correct: Tensor   # [B, m] bool
    targets: Tensor   # [B] item index


@dataclass
class Losses:
    terms: dict[str, Tensor]                  # scalar loss terms, weighted by `DGIModel.weighted_total`
    next_token: NextTokenDetail | None = None  # generative phases only


Gather = Callable[[Tensor], tuple[Tensor, int]]
"""A tensor's rows from every training process, in rank order, and where this process's rows start."""


@dataclass
class Batch:
    """One training batch, as indices into the frozen text-embedding tables."""

    targets: Tensor        # [B] item index
    history: Tensor        # [B, L] item index, -1 padded on the left
    query_ids: Tensor      # [B] query index or -1
    rows: Tensor | None = None  # [B] the examples' rows in the training split (for a `ContextCache`)
    # [B] per row, the row of this batch whose history extends this row's (the last of its chain, see
    # `dgi.training.chains`); a causal context encoder then encodes only those rows. None: each row its own.
    sequence_of: Tensor | None = None


class DGIModel(nn.Module):
    def __init__(self, config: Config, text_dim: int, codebook_sizes: list[int], n_items: int = 0) -> None:
        super().__init__()
        m, q = config.model, config.quantizer
        self.config = config
        cosine = m.geometry == "cosine"
        e = config.encoder
        self.text_backbone = TextBackbone(e.model, e.max_length, e.gradient_checkpointing) \
            if m.text_encoder == "trainable" else None
        self.item_tower = TextProjection(text_dim, m.width, normalize=cosine)
        self.query_tower = TextProjection(text_dim, m.width, normalize=cosine)
        self.item_id_embedding = nn.Embedding(n_items, m.width) if m.item_id_embeddings else None
        if self.item_id_embedding is not None:
            nn.init.zeros_(self.item_id_embedding.weight)
        self.context_encoder = ContextEncoder(m.width, m.context_layers, m.attention_heads, m.ffn_multiplier,
                                              m.dropout, config.data.max_history, normalize=cosine,
                                              causal=m.context_attention == "causal")
        self.quantizer = ResidualQuantizer(codebook_sizes, m.width, q.logits, q.gamma_init)
        self.decoder = SIDDecoder(m.width, m.decoder_layers, m.attention_heads, m.ffn_multiplier, m.dropout,
                                  len(codebook_sizes))
        self.heads = CodeHeads(codebook_sizes, m.width, q.heads, q.logits, q.gamma_init, q.head_target)
        # Filled when a frozen (two-stage) quantizer fixes the codes; saved with the weights.
        self.register_buffer("frozen_codes", torch.zeros(0, len(codebook_sizes), dtype=torch.long))

    def load_weights(self, state: dict[str, Tensor]) -> None:
        """load_state_dict, sizing `frozen_codes` first: its length is only known once the codes were fixed."""
        if "frozen_codes" in state:
            self.frozen_codes = state["frozen_codes"].clone()
        self.load_state_dict(state)

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

    def batch_item_vectors(self, item_embeddings: Tensor, *ids: Tensor) -> tuple[Tensor, list[Tensor]]:
        """z_base of every distinct item in `ids` (each a tensor of item indices, -1 = padding), each item
        through the tower once, as a table plus the `ids` re-indexed into it (-1 kept).

        A Beauty batch names ~6,400 item slots (20 history slots, mostly padding, per row, plus the
        targets and sampled negatives) but only ~2,500 distinct items; gradients are the same.
        """
        flat = torch.cat([t.reshape(-1) for t in ids])
        unique, inverse = torch.unique(flat.clamp(min=0), return_inverse=True)
        table = self.item_vectors(item_embeddings[unique], unique)
        inverse = torch.where(flat >= 0, inverse, -1)
        return table, [part.view_as(t) for part, t in zip(inverse.split([t.numel() for t in ids]), ids)]

    def encode_context(self, history: Tensor, query_embeddings: Tensor | None, has_query: Tensor,
                       item_vectors: Tensor) -> Context:
        """history: [B, L] rows of `item_vectors` (z_base table), -1 = padding, left-padded; query_embeddings
        [B, text_dim] (rows ignored where no query).

        Columns that are padding in every row are dropped first: positions are counted from the query
        slot backwards, so each row's output is unchanged and short-history batches cost less.
        """
        mask = history >= 0
        length = int(mask.sum(dim=1).max()) if len(history) else 0
        history, mask = history[:, history.shape[1] - length:], mask[:, history.shape[1] - length:]
        history_vectors = item_vectors[history.clamp(min=0)]
        if history_vectors.dtype == torch.float16:  # a retriever's half-precision catalogue
            history_vectors = history_vectors.float()
        history_vectors = history_vectors * mask[..., None]
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

    def next_decoder_input(self, context_vector: Tensor, chosen: Tensor, newest_codeword: Tensor | None) -> Tensor:
        """Each beam's newest decoder input [B, W, d] as `decoder_inputs` has it, from the sum of the codewords
        chosen so far (`chosen` [B, W, d]) and the newest one (None at step 0)."""
        if newest_codeword is None:
            return context_vector[:, None].expand_as(chosen)
        if self.config.model.decoder_inputs == "residual":
            return context_vector[:, None] - chosen
        return newest_codeword

    def level_logits(self, context: Context, vectors: Tensor) -> list[Tensor]:
        """Teacher-forced logits of every level given the m code vectors [B, m, d]."""
        inputs = self.decoder_inputs(context.vector, vectors[:, :-1])
        memory = self.decoder.memory(context.memory, context.padding, context.sequence)
        hidden = self.decoder(inputs[:, None], memory)[:, 0]
        prefixes = torch.cat([torch.zeros_like(vectors[:, :1]), vectors[:, :-1].cumsum(dim=1)], dim=1)
        return [self.heads(hidden[:, j], j, self.quantizer.codebooks, prefixes[:, j]) for j in range(hidden.shape[1])]

    def step_log_probs(self, context: Context, prefix: Tensor, memory: DecoderMemory | None = None) -> Tensor:
        """Beam-search step: prefix codes [B, W, j] -> log-probs [B, W, K_{j+1}] over the full codebook,
        the whole prefix through the decoder: the plain reference `IncrementalSteps` is tested against.

        `memory` (`decoder.memory(context.memory, context.padding)`) saves recomputing the context's
        cross-attention keys/values at every step."""
        batch, beams, depth = prefix.shape
        vectors = self.quantizer.codewords(prefix.reshape(batch * beams, depth))
        inputs = self.decoder_inputs(context.vector.repeat_interleave(beams, dim=0), vectors)
        hidden = self.decoder(inputs.reshape(batch, beams, depth + 1, -1),
                              memory if memory is not None else self.decoder.memory(context.memory, context.padding))
        prefix = vectors.sum(dim=1).reshape(batch, beams, -1)
        return F.log_softmax(self.heads(hidden[:, :, -1], depth, self.quantizer.codebooks, prefix), dim=-1)

    def incremental_steps(self, context: Context, memory: DecoderMemory) -> IncrementalSteps:
        """A beam-search step function equal to `step_log_probs` that computes only each beam's newest position."""
        return IncrementalSteps(self, context, memory)

    # ----- training --------------------------------------------------------------------------
    def quantize(self, z: Tensor, item_ids: Tensor, tau: float) -> Quantized:
        return self.strategy.quantize(self.quantizer, z, item_ids, tau)

    def forward(self, phase: str, batch: Batch | Tensor, item_embeddings: Tensor, query_embeddings: Tensor,
                tau: float = 1.0, ntp_weights: Tensor | None = None, context: Context | None = None,
                gather: Gather | None = None, text: FreshText | None = None) -> Losses:
        """One training step's losses in `phase` ("dense" | "quantizer" | "joint" | "decoder"): the call
        DistributedDataParallel wraps. For "quantizer", `batch` is a tensor of item indices.

        `text` (a trainable backbone) names the table rows this step encodes afresh, with gradients."""
        if phase == "quantizer":
            return self.quantizer_fit_losses(batch, item_embeddings)
        if phase == "decoder":
            return self.decoder_losses(batch, item_embeddings, query_embeddings, context, ntp_weights)
        if text is not None:
            item_embeddings, query_embeddings = text.tables(self.text_backbone, item_embeddings, query_embeddings)
        return self.losses(batch, item_embeddings, query_embeddings, tau, phase == "joint", ntp_weights, gather)

    def losses(self, batch: Batch, item_embeddings: Tensor, query_embeddings: Tensor, tau: float,
               generative: bool, ntp_weights: Tensor | None = None, gather: Gather | None = None) -> Losses:
        """Every loss term for one batch; `generative=False` is the dense warm-up (InfoNCE only).

        `ntp_weights` [B] weighs each example's next-token loss (see `loss.ntp_popularity_power`).
        `gather` (several processes) returns every process's rows of a tensor and where this one's
        start: in-batch negatives and the code-usage statistics of the diversity term then span the
        global batch."""
        weights = self.config.loss
        negative_ids = torch.randint(len(item_embeddings), (weights.sampled_negatives,), device=batch.targets.device)
        context, table, (targets, negatives) = self._batch_context(batch, item_embeddings, query_embeddings,
                                                                   batch.targets, negative_ids)
        z = table[targets]
        negatives, negative_ids = (table[negatives], negative_ids) if weights.sampled_negatives else (None, None)
        # Dot geometry has no temperature: raw inner products are the logits (the norm is the scale).
        temperature = weights.infonce_temperature if self.config.model.geometry == "cosine" else 1.0
        candidates, candidate_ids, offset = z, batch.targets, 0
        groups = batch.sequence_of if context.sequence is not None else None  # one user's chain: no negatives
        if gather is not None:
            (candidates, offset), (candidate_ids, _) = gather(z), gather(batch.targets)
            groups = gather(groups + offset)[0] if groups is not None else None
        terms = {"infonce": losses.info_nce(context.vector, candidates, candidate_ids, temperature, negatives,
                                            negative_ids, offset, groups)}
        if not generative:
            return Losses(terms)
        quantized = self.quantize(z, batch.targets, tau)
        logits = self.level_logits(context, quantized.vectors)
        per_example = losses.next_token_per_example(logits, quantized.codes)
        terms["ntp"] = self._next_token_objective(logits, quantized.codes, per_example, ntp_weights)
        if self.strategy.trains_quantizer:
            codewords = self.quantizer.codewords(quantized.codes)
            terms["global"] = losses.global_reconstruction(z, quantized.reconstruction)
            terms["local"] = losses.local_commitment(quantized.hard_residuals, codewords, weights.commitment_beta)
            probs = quantized.probs if gather is None else [gather(p)[0] for p in quantized.probs]
            terms["diversity"] = losses.code_diversity(probs)
        correct = losses.next_token_hits(logits, quantized.codes)
        return Losses(terms, NextTokenDetail(per_example.detach(), correct, batch.targets))

    def quantizer_fit_losses(self, item_ids: Tensor, item_embeddings: Tensor) -> Losses:
        """Two-stage (frozen) quantizer fitting: codebooks fitted to the fixed item vectors by reconstruction."""
        with torch.no_grad():
            z = self.item_vectors(item_embeddings[item_ids], item_ids)
        quantized = StraightThrough().quantize(self.quantizer, z, item_ids, 1.0)
        codewords = self.quantizer.codewords(quantized.codes)
        return Losses({"global": losses.global_reconstruction(z, quantized.reconstruction),
                       "local": losses.local_commitment(quantized.hard_residuals, codewords,
                                                        self.config.loss.commitment_beta)})

    def _next_token_objective(self, logits: list[Tensor], codes: Tensor, per_example: Tensor,
                              weights: Tensor | None) -> Tensor:
        """L_NTP as trained: the mean of `per_example` (the plain cross-entropy, which is also logged), or
        of its label-smoothed form, each example weighted by `weights` when given."""
        smoothing = self.config.loss.ntp_label_smoothing
        trained = losses.next_token_per_example(logits, codes, smoothing) if smoothing else per_example
        return _weighted_mean(trained, weights)

    def decoder_losses(self, batch: Batch, item_embeddings: Tensor, query_embeddings: Tensor,
                       context: Context | None = None, ntp_weights: Tensor | None = None) -> Losses:
        """NTP of the decoder alone on the fixed SIDs `frozen_codes`, fed the hard codewords beam search feeds.

        The towers and the quantizer get no gradient (see `train_decoder_only`), so the batch's context
        may come precomputed (`context`, e.g. from a `ContextCache`) instead of being encoded again.
        """
        if context is None:
            with torch.no_grad():
                context = self.batch_context(batch, item_embeddings, query_embeddings)
        codes = self.frozen_codes[batch.targets]
        logits = self.level_logits(context, self.quantizer.codewords(codes))
        per_example = losses.next_token_per_example(logits, codes)
        correct = losses.next_token_hits(logits, codes)
        share = self.config.loss.ntp_dense_targets
        if share:
            objective = self._dense_target_objective(logits, codes, context.vector, item_embeddings, share,
                                                     ntp_weights)
        else:
            objective = self._next_token_objective(logits, codes, per_example, ntp_weights)
        return Losses({"ntp": objective}, NextTokenDetail(per_example.detach(), correct, batch.targets))

    def _dense_target_objective(self, logits: list[Tensor], codes: Tensor, context_vector: Tensor,
                                item_embeddings: Tensor, share: float, weights: Tensor | None) -> Tensor:
        """L_NTP against targets that mix the one-hot code (1 - `share`) with the dense path's distribution
        over the level's codes (`share`, see `losses.dense_code_targets`): the decoder learns the towers'
        geometry for the items and contexts it has not seen, where one-hot targets only teach it the
        training SIDs."""
        with torch.no_grad():
            catalogue = self.catalog_vectors(item_embeddings)
            item_logits = context_vector.float() @ catalogue.float().T / self.config.loss.infonce_temperature
            dense = losses.dense_code_targets(item_logits, self.frozen_codes, codes, self.quantizer.codebook_sizes)
            targets = [(1 - share) * F.one_hot(codes[:, j], level.shape[-1]).float() + share * dense[j]
                       for j, level in enumerate(logits)]
        return _weighted_mean(losses.soft_next_token_per_example(logits, targets), weights)

    def batch_context(self, batch: Batch, item_embeddings: Tensor, query_embeddings: Tensor) -> Context:
        """The context of each row of `batch` (history and query), as the towers encode it now."""
        return self._batch_context(batch, item_embeddings, query_embeddings)[0]

    def decoder_parameters(self) -> list[nn.Parameter]:
        """The SID decoder's and its heads' own parameters (the tied heads' codebooks belong to the quantizer)."""
        return [p for module in (self.decoder, self.heads) for p in module.parameters()]

    def train_decoder_only(self) -> None:
        """Training mode for the decoder and its heads; everything else frozen and in eval mode (no dropout),
        so the decoder learns on exactly the contexts and codewords it will see at inference."""
        self.train()
        trained = {id(p) for p in self.decoder_parameters()}
        for parameter in self.parameters():
            parameter.requires_grad_(id(parameter) in trained)
        for module in (self.item_tower, self.query_tower, self.context_encoder, self.text_backbone):
            if module is not None:
                module.eval()

    def _batch_context(self, batch: Batch, item_embeddings: Tensor, query_embeddings: Tensor,
                       *ids: Tensor) -> tuple[Context, Tensor, list[Tensor]]:
        """The batch's context, the z_base table of its items and `ids` re-indexed into the table.

        With `batch.sequence_of` (causal encoder) only the rows that end a chain are encoded, and every
        other row reads its context off its chain's pass (`ContextEncoder.prefixes`)."""
        chained = batch.sequence_of is not None and self.context_encoder.causal
        encoded = torch.unique(batch.sequence_of) if chained else slice(None)
        query_ids = batch.query_ids[encoded]
        has_query = query_ids >= 0
        queries = query_embeddings[query_ids.clamp(min=0)] if len(query_embeddings) else None
        table, (history, *rows) = self.batch_item_vectors(item_embeddings, batch.history[encoded], *ids)
        context = self.encode_context(history, queries, has_query, table)
        if chained:
            lengths = (batch.history >= 0).sum(dim=1)
            sequence = torch.searchsorted(encoded, batch.sequence_of)
            context = self.context_encoder.prefixes(context, sequence, lengths[batch.sequence_of] - lengths)
        return context, table, rows

    def weighted_total(self, terms: dict[str, Tensor]) -> Tensor:
        w = self.config.loss
        weight = {"infonce": w.infonce, "ntp": w.ntp, "global": w.global_recon, "local": w.local,
                  "diversity": w.diversity}
        return sum(weight[name] * value for name, value in terms.items())


def _weighted_mean(per_example: Tensor, weights: Tensor | None) -> Tensor:
    """The mean of per-example, per-level losses [B, m], each example weighted by `weights` [B] when given."""
    return (per_example * weights[:, None]).mean() if weights is not None else per_example.mean()


class IncrementalSteps:
    """Beam-search steps that keep each beam's state from the step before and compute only its newest position.

    A step's beams are children of the previous step's; the search names each one's parent, and the
    beam takes its parent's decoder keys/values and codeword sum and adds its newest code. Inference
    only (no dropout).
    """

    def __init__(self, model: DGIModel, context: Context, memory: DecoderMemory) -> None:
        self.model, self.context, self.memory = model, context, memory
        self.chosen: Tensor | None = None  # [B, W_prev, d] each previous beam's codewords, summed
        # Per block, per earlier position, (key, value) [B, W_prev or 1, heads, d/heads]; a beam dimension
        # of 1 is shared by all beams of the query (the root's, position 0, always is).
        self.past: list[list[tuple[Tensor, Tensor]]] = [[] for _ in model.decoder.blocks]

    def __call__(self, prefix: Tensor, parents: Tensor | None) -> Tensor:
        batch, beams, depth = prefix.shape
        model, vector = self.model, self.context.vector
        if depth == 0:
            newest_codeword = None
            chosen = vector.new_zeros(batch, beams, vector.shape[-1])
        else:
            # Each beam's parent as a row of the previous step's [B * W_prev] beams: one contiguous gather.
            flat = parents[0] if batch == 1 else \
                (torch.arange(batch, device=prefix.device)[:, None] * self.chosen.shape[1] + parents).flatten()
            newest_codeword = model.quantizer.codebooks[depth - 1][prefix[:, :, -1].long()]
            chosen = _rows(self.chosen, flat, beams) + newest_codeword
            self.past = [[tuple(_rows(state, flat, beams) for state in kv) for kv in block] for block in self.past]
        newest = model.next_decoder_input(vector, chosen, newest_codeword)
        hidden, newest_kv = model.decoder.step(newest.unsqueeze(2), depth, self.memory, self.past)
        for block_past, kv in zip(self.past, newest_kv):
            block_past.append(kv)
        self.chosen = chosen
        return F.log_softmax(model.heads(hidden[:, :, 0], depth, model.quantizer.codebooks, chosen), dim=-1)


def _rows(state: Tensor, flat: Tensor, beams: int) -> Tensor:
    """Per-beam state [B, W_prev, ...] -> that of each beam's parent [B, W, ...] (`flat`: b * W_prev + parent).
    A state with one row per query ([B, 1, ...]) is every beam's parent's already: kept, not copied."""
    if state.shape[1] == 1:
        return state
    return state.flatten(0, 1).index_select(0, flat).unflatten(0, (-1, beams))
