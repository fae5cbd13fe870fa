"""Ranking metrics with one convention for the whole project.

Conventions (shared by the fast and the reference implementation):

* ``ranked`` is an int64 array ``[n_queries, depth]`` of item indices, best
  first. ``-1`` marks an empty slot (fewer results). Ranks are positions:
  the item in column ``j`` has rank ``j + 1`` whether or not earlier slots are
  empty. An item may appear at most once per row (``ValueError`` otherwise).
* Relevance is graded: ``qrels[q]`` maps item -> relevance > 0. A 1-D int
  array of targets is the common one-target-per-query case (relevance 1).
  Every query needs at least one relevant item.
* ``hit@k``: 1 if any relevant item is in the top k (HitRate; equals Recall@k
  with one target). ``recall@k``: relevant items in the top k / relevant items.
* ``ndcg@k``: linear gain (gain = relevance) discounted by ``1/log2(rank+1)``;
  IDCG is the DCG of the query's relevant items in ideal order, truncated at
  k (not at ``depth``). This is the Jarvelin & Kekalainen form used by ranx's
  ``ndcg@k``, not ``ndcg_burges`` (gain ``2**rel - 1``).
* ``mrr`` is MRR@depth: 1/rank of the first relevant item in the row, else 0.
* When ``k > depth``, metric@k uses the ``depth`` results that exist.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from dgi.io import write_lines

DEFAULT_KS: tuple[int, ...] = (1, 5, 10, 20)

Qrels = Sequence[Mapping[int, float]]


def single_target_qrels(targets: np.ndarray) -> list[dict[int, float]]:
    """One ``{target: 1.0}`` per query, for code that wants the general form."""
    return [{int(t): 1.0} for t in _validate_targets(targets)]


def _validate_targets(targets: np.ndarray) -> np.ndarray:
    targets = np.asarray(targets)
    if targets.ndim != 1 or not np.issubdtype(targets.dtype, np.integer):
        raise ValueError("targets must be a 1-D integer array")
    if targets.size and targets.min() < 0:
        raise ValueError("targets must be item indices >= 0")
    return targets.astype(np.int64, copy=False)


def _validate_ranked(ranked: np.ndarray) -> np.ndarray:
    """Check shape, padding and uniqueness; a duplicate would be counted twice."""
    ranked = np.asarray(ranked)
    if ranked.ndim != 2 or not np.issubdtype(ranked.dtype, np.integer):
        raise ValueError("ranked must be a 2-D integer array [n_queries, depth]")
    ranked = ranked.astype(np.int64, copy=False)
    if ranked.size == 0:
        return ranked
    if ranked.min() < -1:
        raise ValueError("ranked holds item indices >= 0 or -1 padding")
    srt = np.sort(ranked, axis=1)
    dup = (srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)
    if dup.any():
        row = int(np.flatnonzero(dup.any(axis=1))[0])
        raise ValueError(f"ranked row {row} contains a duplicate item")
    return ranked


def _validate_ks(ks: Iterable[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if any(k < 1 for k in ks):
        raise ValueError("every k must be >= 1")
    return ks


def _flatten_qrels(
    qrels_or_targets: Qrels | np.ndarray, n_queries: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Qrels as parallel (query, item, relevance) arrays for vectorized lookups."""
    if isinstance(qrels_or_targets, np.ndarray):
        qrels_or_targets = _validate_targets(qrels_or_targets)
    if len(qrels_or_targets) != n_queries:
        raise ValueError(f"need relevance for exactly {n_queries} queries")
    if isinstance(qrels_or_targets, np.ndarray):
        return np.arange(n_queries, dtype=np.int64), qrels_or_targets, np.ones(n_queries)
    lengths = [len(q) for q in qrels_or_targets]
    if min(lengths, default=1) == 0:
        raise ValueError("every query needs at least one relevant item")
    qids = np.repeat(np.arange(n_queries, dtype=np.int64), lengths)
    items = np.fromiter(
        (i for q in qrels_or_targets for i in q), dtype=np.int64, count=qids.size
    )
    rels = np.fromiter(
        (r for q in qrels_or_targets for r in q.values()),
        dtype=np.float64,
        count=qids.size,
    )
    if qids.size and items.min() < 0:
        raise ValueError("qrels items must be indices >= 0")
    if not np.all(rels > 0):
        raise ValueError("qrels relevance must be > 0")
    return qids, items, rels


def per_query_metrics(
    ranked: np.ndarray,
    qrels_or_targets: Qrels | np.ndarray,
    ks: Iterable[int] = DEFAULT_KS,
) -> dict[str, np.ndarray]:
    """Vectorized hit@k, recall@k, ndcg@k and mrr, each float64 ``[n_queries]``."""
    ranked = _validate_ranked(ranked)
    ks = _validate_ks(ks)
    n, depth = ranked.shape
    qids, items, rels = _flatten_qrels(qrels_or_targets, n)

    # Gain of every ranked slot via a sorted (query, item) key lookup.
    stride = int(max(items.max(initial=-1), ranked.max(initial=-1))) + 1
    keys = qids * stride + items
    order = np.argsort(keys)
    keys, sorted_rels = keys[order], rels[order]
    slot_keys = np.arange(n, dtype=np.int64)[:, None] * stride + ranked
    pos = np.minimum(np.searchsorted(keys, slot_keys), keys.size - 1)
    found = (ranked >= 0) & (keys[pos] == slot_keys)
    gains = np.where(found, sorted_rels[pos], 0.0)

    # Ideal gains: each query's relevances sorted descending, up to max k.
    kmax = max(ks, default=1)
    by_rel = np.lexsort((-rels, qids))
    q_sorted = qids[by_rel]
    starts = np.searchsorted(q_sorted, q_sorted, side="left")
    rank_in_q = np.arange(q_sorted.size) - starts
    keep = rank_in_q < kmax
    ideal = np.zeros((n, kmax))
    ideal[q_sorted[keep], rank_in_q[keep]] = rels[by_rel][keep]

    n_rel = np.bincount(qids, minlength=n).astype(np.float64)
    discount = 1.0 / np.log2(np.arange(2, max(depth, kmax) + 2))
    zeros = np.zeros((n, 1))
    cum_hits = np.hstack([zeros, np.cumsum(found, axis=1, dtype=np.float64)])
    cum_dcg = np.hstack([zeros, np.cumsum(gains * discount[:depth], axis=1)])
    cum_idcg = np.hstack([zeros, np.cumsum(ideal * discount[:kmax], axis=1)])

    out: dict[str, np.ndarray] = {}
    for k in ks:
        out[f"hit@{k}"] = (cum_hits[:, min(k, depth)] > 0).astype(np.float64)
    for k in ks:
        out[f"recall@{k}"] = cum_hits[:, min(k, depth)] / n_rel
    for k in ks:
        out[f"ndcg@{k}"] = cum_dcg[:, min(k, depth)] / cum_idcg[:, k]
    any_rel = found.any(axis=1)
    first = np.argmax(found, axis=1) if depth else np.zeros(n, dtype=np.int64)
    out["mrr"] = np.where(any_rel, 1.0 / (first + 1.0), 0.0)
    return out


def reference_metrics(
    ranked: np.ndarray, qrels: Qrels, ks: Iterable[int] = DEFAULT_KS
) -> dict[str, np.ndarray]:
    """Slow, loop-by-loop restatement of the definitions, to test the fast path."""
    ranked = _validate_ranked(ranked)
    ks = _validate_ks(ks)
    if len(qrels) != ranked.shape[0]:
        raise ValueError(f"need relevance for exactly {ranked.shape[0]} queries")
    names = [f"{m}@{k}" for m in ("hit", "recall", "ndcg") for k in ks] + ["mrr"]
    out = {name: np.zeros(ranked.shape[0]) for name in names}
    for q, (row, rel) in enumerate(zip(ranked.tolist(), qrels)):
        if not rel or any(i < 0 or r <= 0 for i, r in rel.items()):
            raise ValueError("every query needs relevant items >= 0 with relevance > 0")
        for k in ks:
            top = [item for item in row[:k] if item in rel]
            out[f"hit@{k}"][q] = 1.0 if top else 0.0
            out[f"recall@{k}"][q] = len(top) / len(rel)
            dcg = 0.0
            for rank, item in enumerate(row[:k], start=1):
                if item in rel:
                    dcg += rel[item] / np.log2(rank + 1)
            idcg = 0.0
            ideal = sorted(rel.values(), reverse=True)[:k]
            for rank, gain in enumerate(ideal, start=1):
                idcg += gain / np.log2(rank + 1)
            out[f"ndcg@{k}"][q] = dcg / idcg
        for rank, item in enumerate(row, start=1):
            if item in rel:
                out["mrr"][q] = 1.0 / rank
                break
    return out


def mean_metrics(
    per_query: Mapping[str, np.ndarray], mask: np.ndarray | None = None
) -> dict[str, float]:
    """Average over the (masked) queries; an empty selection gives 0.0 and count 0."""
    count = len(next(iter(per_query.values()))) if per_query else 0
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        count = int(mask.sum())
    out: dict[str, float] = {}
    for name, values in per_query.items():
        selected = values if mask is None else values[mask]
        out[name] = float(selected.mean()) if count else 0.0
    out["count"] = count
    return out


@dataclass
class PopularityBuckets:
    """Item -> popularity bucket, plus a description of each bucket."""

    bucket_of_item: np.ndarray  # int64 [n_items], index into names
    edges: list[dict]  # per bucket: name, min/max_popularity, n_items, share_of_interactions
    names: tuple[str, ...]


def popularity_buckets(
    popularity: np.ndarray, n_head_buckets: int = 4, tail_max: int = 1
) -> PopularityBuckets:
    """Split items into equal-interaction head buckets plus one tail bucket.

    Items with ``popularity <= tail_max`` form the last bucket (``B4`` by
    default). Each other item goes to bucket
    ``floor(n_head_buckets * S / T)``, where ``S`` is the interactions of items
    strictly more popular than it and ``T`` those of all non-tail items. So
    ``B0`` is the few most popular items, each head bucket holds about
    ``1/n_head_buckets`` of ``T``, and items with equal popularity always share
    a bucket (a bucket may overshoot by its last tie group, or be empty when
    there are few distinct popularity values).

    ``share_of_interactions`` is relative to all training interactions, so the
    shares of all buckets sum to 1.
    """
    popularity = np.asarray(popularity)
    if popularity.ndim != 1 or not np.issubdtype(popularity.dtype, np.integer):
        raise ValueError("popularity must be a 1-D integer array of counts")
    if popularity.size and popularity.min() < 0:
        raise ValueError("popularity counts must be >= 0")
    if n_head_buckets < 1:
        raise ValueError("n_head_buckets must be >= 1")
    popularity = popularity.astype(np.int64, copy=False)

    head = popularity > tail_max
    values, counts = np.unique(popularity[head], return_counts=True)
    values, counts = values[::-1], counts[::-1]  # most popular first
    group_total = values * counts
    head_total = int(group_total.sum())
    before = np.cumsum(group_total) - group_total
    group_bucket = (n_head_buckets * before) // max(head_total, 1)

    bucket_of_item = np.full(popularity.size, n_head_buckets, dtype=np.int64)
    value_index = np.searchsorted(-values, -popularity[head])
    bucket_of_item[head] = group_bucket[value_index]

    names = tuple(f"B{b}" for b in range(n_head_buckets + 1))
    total = int(popularity.sum())
    edges = []
    for b, name in enumerate(names):
        pops = popularity[bucket_of_item == b]
        edges.append(
            {
                "name": name,
                "min_popularity": int(pops.min()) if pops.size else None,
                "max_popularity": int(pops.max()) if pops.size else None,
                "n_items": int(pops.size),
                "share_of_interactions": float(pops.sum()) / total if total else 0.0,
            }
        )
    return PopularityBuckets(bucket_of_item=bucket_of_item, edges=edges, names=names)


def bucketed_metrics(
    per_query: Mapping[str, np.ndarray],
    target_items: np.ndarray,
    buckets: PopularityBuckets,
) -> dict[str, dict[str, float]]:
    """Mean metrics per popularity bucket of each query's target item."""
    target_items = _validate_targets(target_items)
    query_bucket = buckets.bucket_of_item[target_items]
    return {
        name: mean_metrics(per_query, query_bucket == b)
        for b, name in enumerate(buckets.names)
    }


def _check_token(value: str, what: str) -> str:
    """TREC files are whitespace-separated, so ids must be single tokens."""
    if not value or any(c.isspace() for c in value):
        raise ValueError(f"{what} {value!r} must be a non-empty token without whitespace")
    return value


def write_trec_run(
    path: str | os.PathLike,
    query_ids: Sequence[str],
    ranked: np.ndarray,
    scores: np.ndarray,
    item_ids: Sequence[str],
    run_name: str,
) -> None:
    """Write ``qid Q0 docid rank score run`` lines, skipping ``-1`` slots.

    Rank is the 1-based column, as in the metrics. Scores must not increase
    along a row, because TREC tools order documents by score, not by rank.
    """
    ranked = _validate_ranked(ranked)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != ranked.shape or len(query_ids) != ranked.shape[0]:
        raise ValueError("query_ids, ranked and scores must agree in shape")
    valid = ranked >= 0
    for q in range(ranked.shape[0]):
        row_scores = scores[q, valid[q]]
        if np.any(row_scores[1:] > row_scores[:-1]) or np.isnan(row_scores).any():
            raise ValueError(f"scores of query {q} must be non-increasing by rank")
    _check_token(run_name, "run_name")

    def lines() -> Iterable[str]:
        for q, qid in enumerate(query_ids):
            _check_token(qid, "query id")
            for j in np.flatnonzero(valid[q]):
                doc = _check_token(item_ids[ranked[q, j]], "item id")
                yield f"{qid} Q0 {doc} {j + 1} {float(scores[q, j])!r} {run_name}\n"

    write_lines(path, lines())


def write_trec_qrels(
    path: str | os.PathLike,
    query_ids: Sequence[str],
    qrels: Qrels | np.ndarray,
    item_ids: Sequence[str],
) -> None:
    """Write ``qid 0 docid relevance`` lines; accepts qrels or a target array."""
    qids, items, rels = _flatten_qrels(qrels, len(query_ids))

    def lines() -> Iterable[str]:
        for q, item, rel in zip(qids.tolist(), items.tolist(), rels.tolist()):
            qid = _check_token(query_ids[q], "query id")
            doc = _check_token(item_ids[item], "item id")
            value = str(int(rel)) if rel.is_integer() else repr(rel)
            yield f"{qid} 0 {doc} {value}\n"

    write_lines(path, lines())
