"""Two-Stage TIGER baseline (Rajput et al. 2023): frozen RQ-VAE Semantic IDs, then a seq2seq retriever.

Stage 1 (`dgi.baselines.rqvae`): an RQ-VAE on the frozen item text embeddings gives each item 3 codes;
items sharing all 3 get a 4th disambiguation code (0, 1, 2, ...), so every item has a unique 4-token
SID. The tokenizer is then frozen: the retrieval loss never reaches it (the "optimization blockage"
DGI removes).

Stage 2: an encoder-decoder Transformer with its own code-token tables (one per level, shared by the
encoder and decoder inputs, not tied to the RQ-VAE codebooks). The encoder reads one context slot
(the projected query text embedding, or a learned "no query" vector) followed by every history item
as its 4 SID tokens, with level and recency-position embeddings. The decoder emits the target's 4
codes with hard teacher forcing; each level has its own untied linear head (unnormalized dot-product
logits), trained with cross-entropy. Retrieval is trie-constrained beam search over the 4-level
SIDIndex; each SID names exactly one item, ranked by beam log-prob, so at most `beam_size` items are
returned per query (the rest is -1 padding).
"""

from __future__ import annotations

import copy
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgi.baselines.rqvae import RQVAE, disambiguate, train_rqvae
from dgi.data.corpus import EncodedCorpus
from dgi.baselines.tiger_nets import NETWORKS, TigerSeq2Seq
from dgi.evaluation.evaluate import relevance
from dgi.search.index import SIDIndex
from dgi.methods.base import MethodDetails, SavedState
from dgi.evaluation.metrics import mean_metrics, per_query_metrics
from dgi.search.beam import Beams, beam_search


_TIGER_PARAMS = ("rq_epochs", "epochs", "width", "layers", "heads", "beam_size", "batch_size", "lr", "seed",
                 "eval_examples", "latent_dim", "rq_hidden", "rq_levels", "rq_codebook_size", "rq_batch_size", "rq_lr",
                 "rq_beta", "kmeans_iterations", "dropout", "weight_decay", "warmup_steps", "ffn_multiplier", "network")


class TigerBaseline(SavedState):
    """Two-Stage generative retrieval: frozen RQ-VAE SIDs + seq2seq Transformer, constrained beam search.

    fit() trains the RQ-VAE for `rq_epochs`, freezes it, then trains the seq2seq model for `epochs`,
    scoring NDCG@10 on the first `eval_examples` validation examples after every epoch and restoring the
    best epoch at the end (the test split is never read).

    Defaults were chosen on Amazon Beauty validation for a budget like DGI's (a few epochs): a 4-epoch
    sweep put lr 2e-3 without dropout and a 2x feed-forward at the top (valid NDCG@10 on the first 2000
    examples .0136; lr 1e-3 .0126, lr 3e-3 .0089, lr 5e-3 .0109, dropout 0.1 .0116, batch 128 .0125).
    The published TIGER trains for far longer; raise `epochs` (and consider dropout) when budget allows.
    """

    name = "tiger"

    def __init__(self, rq_epochs: int = 100, epochs: int = 5, width: int = 128, layers: int = 2, heads: int = 4,
                 beam_size: int = 20, batch_size: int = 256, lr: float = 2e-3, seed: int = 0, device: str = "cpu",
                 eval_examples: int = 2000, progress: bool = False, *, latent_dim: int = 32,
                 rq_hidden: tuple[int, ...] = (256, 128), rq_levels: int = 3, rq_codebook_size: int = 256,
                 rq_batch_size: int = 1024, rq_lr: float = 1e-3, rq_beta: float = 0.25, kmeans_iterations: int = 20,
                 dropout: float = 0.0, weight_decay: float = 0.01, warmup_steps: int = 500,
                 ffn_multiplier: int = 2, network: str = "ours") -> None:
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        if network not in NETWORKS:
            raise ValueError(f"unknown network {network!r}; expected one of {sorted(NETWORKS)}")
        self.rq_epochs, self.epochs = rq_epochs, epochs
        self.width, self.layers, self.heads = width, layers, heads
        self.beam_size, self.batch_size, self.lr, self.seed = beam_size, batch_size, lr, seed
        self.device = torch.device(device)
        self.eval_examples, self.progress = eval_examples, progress
        self.latent_dim, self.rq_hidden, self.rq_levels = latent_dim, tuple(rq_hidden), rq_levels
        self.rq_codebook_size, self.rq_batch_size = rq_codebook_size, rq_batch_size
        self.rq_lr, self.rq_beta = rq_lr, rq_beta
        self.kmeans_iterations, self.dropout, self.weight_decay = kmeans_iterations, dropout, weight_decay
        self.warmup_steps, self.ffn_multiplier, self.network = warmup_steps, ffn_multiplier, network
        self.model: TigerSeq2Seq | None = None
        self.rqvae: RQVAE | None = None
        self.index: SIDIndex | None = None
        self.history: dict = {}

    # ------------------------------------------------------------------------------ training

    def fit(self, corpus: EncodedCorpus) -> TigerBaseline:
        started, cpu_started = time.perf_counter(), time.process_time()
        self._fit_tokenizer(corpus)
        self.rq_seconds = time.perf_counter() - started
        self._fit_seq2seq(corpus)
        self.train_seconds = time.perf_counter() - started
        self.train_cpu_seconds = time.process_time() - cpu_started  # wall time misleads on a shared machine
        return self

    def _fit_tokenizer(self, corpus: EncodedCorpus) -> None:
        self.rqvae, rq_history = train_rqvae(
            corpus.item_embeddings.float(), latent_dim=self.latent_dim, hidden_dims=self.rq_hidden,
            levels=self.rq_levels, codebook_size=self.rq_codebook_size, epochs=self.rq_epochs,
            batch_size=self.rq_batch_size, lr=self.rq_lr, beta=self.rq_beta, kmeans_iterations=self.kmeans_iterations,
            seed=self.seed, device=self.device, log=self._log)
        self.history["rq"] = rq_history
        self.rq_codes = self.rqvae.encode(corpus.item_embeddings.float().to(self.device)).cpu()
        self._index_codes(disambiguate(self.rq_codes))
        self._log(f"SIDs: {self.index_statistics()['collisions']}, level-4 size {self.index.codebook_sizes[-1]}")

    def _index_codes(self, item_codes: Tensor) -> None:
        """The SID index over the items' unique 4-token SIDs (RQ-VAE codes + disambiguation code)."""
        self.item_codes = item_codes
        sizes = [self.rq_codebook_size] * self.rq_levels + [int(item_codes[:, -1].max()) + 1]
        self.index = SIDIndex.build(item_codes, sizes)
        self._item_codes_device = item_codes.to(self.device)

    def _fit_seq2seq(self, corpus: EncodedCorpus) -> None:
        torch.manual_seed(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        train = corpus.splits["train"]
        self.model = NETWORKS[self.network](list(self.index.codebook_sizes), corpus.item_embeddings.shape[1], self.width,
                                  self.layers, self.heads, train.history.shape[1], self.dropout,
                                  self.ffn_multiplier).to(self.device)
        decay = [p for n, p in self.model.named_parameters() if p.dim() >= 2 and "embedding" not in n]
        no_decay = [p for n, p in self.model.named_parameters() if not (p.dim() >= 2 and "embedding" not in n)]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": self.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=self.lr)
        steps_per_epoch = -(-len(train.targets) // self.batch_size)
        total = max(self.epochs * steps_per_epoch, 1)
        warmup = min(self.warmup_steps, total // 10 + 1)

        def schedule(step: int) -> float:  # linear warm-up, then cosine decay to 0 over all epochs
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1.0 + np.cos(np.pi * min((step - warmup) / max(total - warmup, 1), 1.0)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        self.history["epochs"] = []
        best, best_state, self.best_epoch = -1.0, None, -1
        for epoch in range(self.epochs):
            epoch_started, cpu_started = time.perf_counter(), time.process_time()
            self.model.train()
            loss_sum, level_sums, steps = 0.0, np.zeros(self.index.depth), 0
            for rows in self._batches(train.history, generator):
                loss, per_level = self._loss(corpus, "train", rows)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                loss_sum += loss.item()
                level_sums += per_level
                steps += 1
            train_seconds = time.perf_counter() - epoch_started
            valid = self._validate(corpus)
            record = {"epoch": epoch, "loss": loss_sum / max(steps, 1),
                      "level_losses": (level_sums / max(steps, 1)).tolist(), "valid": valid,
                      "train_seconds": train_seconds, "seconds": time.perf_counter() - epoch_started,
                      "cpu_seconds": time.process_time() - cpu_started}
            self.history["epochs"].append(record)
            self._log(f"epoch {epoch + 1}/{self.epochs}: loss {record['loss']:.4f} "
                      f"levels {np.round(record['level_losses'], 3).tolist()} valid ndcg@10 {valid['ndcg@10']:.4f} "
                      f"recall@10 {valid['recall@10']:.4f} ({record['seconds']:.0f}s)")
            if valid["ndcg@10"] > best:
                best, self.best_epoch = valid["ndcg@10"], epoch
                best_state = copy.deepcopy(self.model.state_dict())
        if best_state is not None:
            self.model.load_state_dict(best_state)
        self.model.eval()

    def _batches(self, history: np.ndarray, generator: torch.Generator) -> list[np.ndarray]:
        """Shuffled batches of rows with similar history lengths (less padding), in shuffled order."""
        n = len(history)
        lengths = (history >= 0).sum(axis=1)
        order = torch.randperm(n, generator=generator).numpy()
        chunk = self.batch_size * 32
        batches = []
        for start in range(0, n, chunk):
            rows = order[start:start + chunk]
            rows = rows[np.argsort(lengths[rows], kind="stable")]
            batches += [rows[i:i + self.batch_size] for i in range(0, len(rows), self.batch_size)]
        shuffle = torch.randperm(len(batches), generator=generator).numpy()
        return [batches[i] for i in shuffle]

    def _loss(self, corpus: EncodedCorpus, split: str, rows: np.ndarray) -> tuple[Tensor, np.ndarray]:
        memory_kv, attend = self._encode(corpus, split, rows)
        target = self._item_codes_device[torch.from_numpy(corpus.splits[split].targets[rows]).to(self.device)]
        hidden = self.model.decode(memory_kv, attend, target[:, None, :-1])[:, 0]  # [B, m, d]
        losses = torch.stack([F.cross_entropy(self.model.level_logits(hidden[:, j], j), target[:, j])
                              for j in range(target.shape[1])])
        return losses.mean(), losses.detach().cpu().numpy()

    def _encode(self, corpus: EncodedCorpus, split: str, rows: np.ndarray) -> tuple[list, Tensor]:
        arrays = corpus.splits[split]
        history = arrays.history[rows]
        length = int((history >= 0).sum(axis=1).max()) if len(rows) else 0
        history = torch.from_numpy(history[:, history.shape[1] - length:]).to(self.device)  # drop all-padding columns
        mask = history >= 0
        codes = self._item_codes_device[history.clamp(min=0)]
        query_ids = torch.from_numpy(arrays.query_ids[rows]).to(self.device)
        has_query = query_ids >= 0
        queries = None
        if bool(has_query.any()):
            queries = corpus.query_embeddings[torch.from_numpy(arrays.query_ids[rows]).clamp(min=0)]
            queries = queries.to(self.device).float()
        return self.model.encode(codes, mask, queries, has_query)

    @torch.no_grad()
    def _validate(self, corpus: EncodedCorpus) -> dict[str, float]:
        limit = self.eval_examples
        ranked, _ = self.rank(corpus, "valid", 20, limit)
        return mean_metrics(per_query_metrics(ranked, relevance(corpus.splits["valid"], limit)))

    # ------------------------------------------------------------------------------ search

    @torch.no_grad()
    def beams(self, corpus: EncodedCorpus, split: str, rows: np.ndarray, constrained: bool = True) -> Beams:
        """Beam search for the given rows of `split`; the context is encoded once and shared by all beams."""
        self.model.eval()
        memory_kv, attend = self._encode(corpus, split, rows)

        def step(prefix: Tensor, parents: Tensor | None) -> Tensor:  # the whole prefix each step: no state kept
            hidden = self.model.decode(memory_kv, attend, prefix.to(self.device))[:, :, -1]
            return F.log_softmax(self.model.level_logits(hidden, prefix.shape[-1]).float(), dim=-1).cpu()

        return beam_search(step, len(rows), self.index, self.beam_size, constrained)

    def rank(self, corpus: EncodedCorpus, split: str, k: int,
             limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        if self.model is None:
            raise RuntimeError("fit() the baseline first")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        n = len(corpus.splits[split].targets)
        n = n if limit is None else min(limit, n)
        ranked = np.full((n, k), -1, dtype=np.int64)
        scores = np.full((n, k), -np.inf, dtype=np.float64)
        width = min(k, self.beam_size)
        for start in range(0, n, self.batch_size):
            rows = np.arange(start, min(start + self.batch_size, n))
            beams = self.beams(corpus, split, rows)
            alive = beams.scores > float("-inf")
            codes = beams.codes.masked_fill(~alive[..., None], -1).reshape(-1, self.index.depth)
            items, offsets = self.index.items_of(codes)
            item_of_beam = torch.full((alive.numel(),), -1, dtype=torch.long)
            item_of_beam[offsets.diff() == 1] = items  # every SID names exactly one item
            item_of_beam = item_of_beam.view(alive.shape)
            ranked[rows, :width] = item_of_beam[:, :width].numpy()
            scores[rows, :width] = beams.scores[:, :width].double().numpy()
        return ranked, scores

    def invalid_sid_rate(self, corpus: EncodedCorpus, split: str, limit: int | None = None) -> float:
        """Share of unconstrained beams whose SID names no item: what the trie constraint saves."""
        if self.model is None:
            raise RuntimeError("fit() the baseline first")
        n = len(corpus.splits[split].targets)
        n = n if limit is None else min(limit, n)
        invalid = total = 0
        for start in range(0, n, self.batch_size):
            beams = self.beams(corpus, split, np.arange(start, min(start + self.batch_size, n)), constrained=False)
            live = beams.scores > float("-inf")
            invalid += int((~self.index.is_valid(beams.codes.clamp(min=0)) & live).sum())
            total += int(live.sum())
        return invalid / max(total, 1)

    def index_statistics(self) -> dict:
        """Collisions and code usage of the RQ-VAE's own codes (before the disambiguation level)."""
        if self.index is None:
            raise RuntimeError("fit() the baseline first")
        index = SIDIndex.build(self.rq_codes, [self.rq_codebook_size] * self.rq_levels)
        return {"collisions": index.collision_stats(), "code_usage": index.code_usage()}

    def details(self, corpus: EncodedCorpus, split: str) -> MethodDetails:
        return MethodDetails(train_seconds=self.train_seconds, index=self.index_statistics(),
                             invalid_sid_rate=self.invalid_sid_rate(corpus, split))

    def state(self) -> tuple[dict, dict[str, Tensor]]:
        """The constructor's parameters (device aside), the seq2seq weights and the RQ-VAE's codes. The
        RQ-VAE itself is not kept: ranking the catalogue needs the SIDs it gave, not the encoder."""
        if self.model is None:
            raise RuntimeError("fit() the baseline first")
        params = {name: getattr(self, name) for name in _TIGER_PARAMS}
        params["rq_hidden"] = list(self.rq_hidden)
        trained = {"text_dim": self.model.query_projection.in_features,
                   "max_history": self.model.position_embedding.shape[0], "train_seconds": self.train_seconds,
                   "best_epoch": self.best_epoch, "history": self.history}
        tensors = {f"model.{name}": t for name, t in self.model.state_dict().items()}
        return {"params": params, "trained": trained}, {**tensors, "rq_codes": self.rq_codes}

    @classmethod
    def from_state(cls, params: dict, tensors: dict[str, Tensor]) -> TigerBaseline:
        method, trained = cls(**params["params"]), params["trained"]
        method.rq_codes = tensors["rq_codes"]
        method._index_codes(disambiguate(method.rq_codes))
        method.model = NETWORKS[method.network](list(method.index.codebook_sizes), trained["text_dim"], method.width,
                                    method.layers, method.heads, trained["max_history"], method.dropout,
                                    method.ffn_multiplier)
        method.model.load_state_dict({name.removeprefix("model."): t for name, t in tensors.items()
                                      if name.startswith("model.")})
        method.model.eval()
        method.train_seconds, method.best_epoch, method.history = (trained["train_seconds"], trained["best_epoch"],
                                                                   trained["history"])
        return method

    def _log(self, message: str) -> None:
        if self.progress:
            print(f"[tiger] {message}", file=sys.stderr, flush=True)
