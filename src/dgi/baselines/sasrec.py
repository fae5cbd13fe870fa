"""SASRec (Kang & McAuley, ICDM 2018): causal self-attention over item-ID embeddings, next-item prediction.

The sequential-recommendation reference for ID-based models. It reads only item indices (no text),
so any gain of a content-aware retriever over it comes from the text, and any loss shows what
memorized item IDs alone achieve.

Our choices where the paper leaves room or where this project's protocol differs:
- One training example = one (history prefix -> next item) row of the train split, predicted from the
  last position only, so every prefix the data lists counts once (the paper trains all positions of a
  user's sequence at once, which sees the same prefixes).
- Full softmax cross-entropy over all items instead of the paper's one sampled negative with binary
  cross-entropy; full softmax is the stronger objective when the catalog fits (Beauty: 12k items).
- Pre-LayerNorm blocks (attention and a two-layer ReLU feed-forward of width `hidden`, each with a
  residual), a final LayerNorm, learned absolute positions aligned to the right (the most recent item
  always has the last position), shared input/output item embeddings, scores = raw dot products.
- Row 0 of the embedding table is the padding token and doubles as a learned "no history" state: the
  last position may always attend to itself, so an empty history yields a ranking (and no NaN).
- The epoch with the best validation NDCG@10 (first `eval_examples` examples) is restored after training.
- Batches group examples of similar history length (sorted within random chunks of 50 batches) and drop
  their all-padding columns; the final block computes the last position only. Most Beauty prefixes are
  short (mean 6.7 of 20), so this cuts the Transformer's work about threefold without changing results.
- A query, where an example has one, is ignored: SASRec reads the history alone.

Defaults were chosen on Amazon Beauty validation NDCG@10 (full valid split; seed 0, patience 5; hidden
64/128, dropout 0.1-0.5, lr 5e-4-3e-3, on a GPU): hidden 128, dropout 0.2, lr 1e-3 (valid NDCG@10 .0560,
R@10 .0938; test .0449 / .0764). On one CPU thread the same settings gave valid .0538 / .0923, test
.0426 / .0726 (best epoch 8 of 13). Published SASRec (sampled loss): test .0318 / .0605.
"""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from dgi.data.corpus import EncodedCorpus
from dgi.data.arrays import PAD
from dgi.evaluation.evaluate import relevance
from dgi.methods.base import MethodDetails, SavedState
from dgi.evaluation.metrics import mean_metrics, per_query_metrics


class _Block(nn.Module):
    """Pre-LN causal self-attention + feed-forward, both residual."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.attention_norm = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.attention_out = nn.Linear(hidden, hidden)
        self.feed_forward_norm = nn.LayerNorm(hidden)
        self.feed_forward = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
                                          nn.Linear(hidden, hidden))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor, last_only: bool = False) -> Tensor:
        """x [B, L, d]; mask [B, 1, L or 1, L] additive (0 or -inf; query row, key column).

        `last_only` computes the last position alone (all the final block needs): output [B, 1, d].
        """
        batch, length, hidden = x.shape
        qkv = self.qkv(self.attention_norm(x)).view(batch, length, 3, self.heads, hidden // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [B, heads, L, d_head]
        if last_only:
            q, x, length = q[:, :, -1:], x[:, -1:], 1
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                  dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.attention_out(attended.transpose(1, 2).reshape(batch, length, hidden)))
        return x + self.drop(self.feed_forward(self.feed_forward_norm(x)))


class _SASRec(nn.Module):
    def __init__(self, n_items: int, hidden: int, layers: int, heads: int, dropout: float, max_len: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.items = nn.Embedding(n_items + 1, hidden)  # row 0: padding / "no history"; item i is row i + 1
        self.positions = nn.Embedding(max_len, hidden)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(_Block(hidden, heads, dropout) for _ in range(layers))
        self.final_norm = nn.LayerNorm(hidden)
        # Unit-variance dot products at the start: final LayerNorm output has norm ~sqrt(hidden).
        nn.init.normal_(self.items.weight, std=hidden ** -0.5)
        nn.init.normal_(self.positions.weight, std=hidden ** -0.5)
        self.register_buffer("causal", torch.ones(max_len, max_len, dtype=torch.bool).tril(), persistent=False)

    def item_matrix(self) -> Tensor:
        """Output (= input) embeddings of the real items, [n_items, hidden]."""
        return self.items.weight[1:]

    def forward(self, history: Tensor) -> Tensor:
        """history [B, L <= max_len] item indices left-padded with PAD -> last-position state [B, hidden].

        Leading all-PAD columns may be dropped beforehand: positions count from the right and PAD keys
        are masked, so the result is the same.
        """
        length = history.shape[1]
        valid = history >= 0
        tokens = torch.where(valid, history + 1, torch.zeros_like(history))
        x = self.drop(self.items(tokens) + self.positions.weight[self.max_len - length:])
        # Causal, PAD keys masked, and every position may see itself (no all-masked row, so no NaN).
        diagonal = torch.eye(length, dtype=torch.bool, device=history.device)
        allowed = self.causal[:length, :length] & (valid[:, None, :] | diagonal)
        mask = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device).masked_fill_(~allowed, -math.inf)[:, None]
        for index, block in enumerate(self.blocks):
            last = index == len(self.blocks) - 1
            x = block(x, mask[:, :, -1:] if last else mask, last_only=last)
        return self.final_norm(x[:, -1])


def _trim(history: Tensor, lengths: Tensor) -> Tensor:
    """Drop the leading columns that are PAD in every row (at least one column stays)."""
    return history[:, history.shape[1] - max(int(lengths.max()), 1):]


def _batches(lengths: Tensor, batch_size: int, generator: torch.Generator, chunk_batches: int = 50) -> list[Tensor]:
    """A random epoch of batches of similar history length (cheap to trim).

    Shuffle, sort by length within chunks of `chunk_batches` batches, cut into batches, shuffle the batches.
    """
    order = torch.randperm(len(lengths), generator=generator)
    chunk = torch.arange(len(lengths)) // (batch_size * chunk_batches)
    order = order[torch.argsort(chunk * (int(lengths.max()) + 1) + lengths[order], stable=True)]
    batches = list(order.split(batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def _fit_width(history: np.ndarray, max_len: int) -> np.ndarray:
    """Keep the `max_len` most recent columns, left-padding with PAD when the arrays are narrower."""
    history = history[:, max(history.shape[1] - max_len, 0):]
    if history.shape[1] < max_len:
        pad = np.full((len(history), max_len - history.shape[1]), PAD, dtype=np.int64)
        history = np.concatenate([pad, history], axis=1)
    return np.ascontiguousarray(history, dtype=np.int64)


class SASRecBaseline(SavedState):
    """Train SASRec on the train split, pick the epoch by validation NDCG@10, rank all items by dot product.

    `patience` stops training after that many epochs without a better validation NDCG@10 (None: run
    all `epochs`). Deterministic for a given seed on CPU. After `fit`: `train_seconds` (wall time of
    fit, validation included), `best_epoch` (1-based), `history` (per epoch: loss, valid ndcg@10 and
    hit@10, seconds).
    """

    name = "sasrec"

    def __init__(self, hidden: int = 128, layers: int = 2, heads: int = 2, dropout: float = 0.2, max_len: int = 20,
                 epochs: int = 30, batch_size: int = 256, lr: float = 1e-3, weight_decay: float = 0.0, seed: int = 0,
                 device: str = "cpu", eval_examples: int = 5000, patience: int | None = 5,
                 progress: bool = False) -> None:
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
        if min(hidden, layers, heads, max_len, epochs, batch_size, eval_examples) < 1:
            raise ValueError("hidden, layers, heads, max_len, epochs, batch_size and eval_examples must be >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if patience is not None and patience < 1:
            raise ValueError(f"patience must be >= 1 or None, got {patience}")
        self.hidden, self.layers, self.heads, self.dropout, self.max_len = hidden, layers, heads, dropout, max_len
        self.epochs, self.batch_size, self.lr, self.weight_decay = epochs, batch_size, lr, weight_decay
        self.seed, self.device, self.eval_examples, self.patience = seed, torch.device(device), eval_examples, patience
        self.progress = progress
        self.model: _SASRec | None = None
        self.train_seconds = 0.0
        self.best_epoch = 0
        self.history: list[dict] = []

    def fit(self, corpus: EncodedCorpus) -> SASRecBaseline:
        start = time.perf_counter()
        torch.manual_seed(self.seed)
        n_items = len(corpus.dataset.items)
        model = _SASRec(n_items, self.hidden, self.layers, self.heads, self.dropout, self.max_len).to(self.device)
        self.model = model
        optimizer = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        train = corpus.splits["train"]
        history = torch.from_numpy(_fit_width(train.history, self.max_len))
        lengths = (history >= 0).sum(dim=1)  # on the CPU, where batches are drawn
        history = history.to(self.device)
        targets = torch.from_numpy(np.ascontiguousarray(train.targets, dtype=np.int64)).to(self.device)
        n = len(targets)
        if n == 0:
            raise ValueError("the train split is empty")
        valid = corpus.splits.get("valid")
        n_valid = 0 if valid is None else min(self.eval_examples, len(valid.targets))
        generator = torch.Generator().manual_seed(self.seed)
        self.history, best_score, best_state, self.best_epoch = [], -math.inf, None, 0
        epochs = tqdm(range(1, self.epochs + 1), desc="sasrec", disable=not self.progress)
        for epoch in epochs:
            epoch_start = time.perf_counter()
            model.train()
            total = torch.zeros((), device=self.device)
            for batch in _batches(lengths, self.batch_size, generator):
                state = model(_trim(history[batch.to(self.device)], lengths[batch]))
                loss = F.cross_entropy(state @ model.item_matrix().T, targets[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.detach() * len(batch)
            record = {"epoch": epoch, "loss": float(total) / n}
            if n_valid:
                ranked, _ = self.rank(corpus, "valid", 10, limit=n_valid)
                metrics = mean_metrics(per_query_metrics(ranked, relevance(valid, n_valid), ks=(10,)))
                record.update({"valid_ndcg@10": metrics["ndcg@10"], "valid_hit@10": metrics["hit@10"]})
            record["seconds"] = time.perf_counter() - epoch_start
            self.history.append(record)
            epochs.set_postfix({key: f"{value:.4f}" for key, value in record.items() if key != "epoch"})
            score = record.get("valid_ndcg@10", float(epoch))  # no validation: keep the last epoch
            if score > best_score:
                best_score, self.best_epoch = score, epoch
                best_state = copy.deepcopy(model.state_dict())
            elif self.patience is not None and epoch - self.best_epoch >= self.patience:
                break
        model.load_state_dict(best_state)
        model.eval()
        self.train_seconds = time.perf_counter() - start
        return self

    @torch.inference_mode()
    def rank(self, corpus: EncodedCorpus, split: str, k: int, limit: int | None = None,
             batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of all items by dot product (history items included), -1 / -inf padded beyond the catalog."""
        if self.model is None:
            raise RuntimeError("fit() the baseline first")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        was_training = self.model.training
        self.model.eval()
        arrays = corpus.splits[split]
        history = _fit_width(arrays.history[:limit], self.max_len)
        n = len(history)
        items = self.model.item_matrix()
        depth = min(k, items.shape[0])
        ranked = np.full((n, k), -1, dtype=np.int64)
        scores = np.full((n, k), -np.inf, dtype=np.float64)
        for start in range(0, n, batch_size):
            rows = slice(start, start + batch_size)
            batch = torch.from_numpy(history[rows])
            state = self.model(_trim(batch, (batch >= 0).sum(dim=1)).to(self.device))
            top_scores, top_items = torch.topk(state @ items.T, depth, dim=1)
            ranked[rows, :depth] = top_items.cpu().numpy()
            scores[rows, :depth] = top_scores.double().cpu().numpy()
        self.model.train(was_training)
        return ranked, scores

    def item_norms(self) -> np.ndarray:
        """L2 norm of each item's output embedding [n_items]: SASRec's dot product lets norm act as popularity."""
        if self.model is None:
            raise RuntimeError("fit() the baseline first")
        with torch.no_grad():
            return self.model.item_matrix().norm(dim=1).double().cpu().numpy()

    def details(self, corpus: EncodedCorpus, split: str) -> MethodDetails:
        return MethodDetails(train_seconds=self.train_seconds, item_norms=self.item_norms())

    def state(self) -> tuple[dict, dict[str, Tensor]]:
        """The constructor's parameters (device aside), the catalogue size, the training record and the weights."""
        if self.model is None:
            raise RuntimeError("fit() the baseline first")
        params = {"hidden": self.hidden, "layers": self.layers, "heads": self.heads, "dropout": self.dropout,
                  "max_len": self.max_len, "epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                  "weight_decay": self.weight_decay, "seed": self.seed, "eval_examples": self.eval_examples,
                  "patience": self.patience}
        trained = {"n_items": self.model.items.num_embeddings - 1, "train_seconds": self.train_seconds,
                   "best_epoch": self.best_epoch, "history": self.history}
        return {"params": params, "trained": trained}, dict(self.model.state_dict())

    @classmethod
    def from_state(cls, params: dict, tensors: dict[str, Tensor]) -> SASRecBaseline:
        method, trained = cls(**params["params"]), params["trained"]
        method.model = _SASRec(trained["n_items"], method.hidden, method.layers, method.heads, method.dropout,
                               method.max_len)
        method.model.load_state_dict(tensors)
        method.model.eval()
        method.train_seconds, method.best_epoch, method.history = (trained["train_seconds"], trained["best_epoch"],
                                                                   trained["history"])
        return method
