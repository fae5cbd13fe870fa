"""Evaluation: rank a split with the generative search (every ranking rule) and the dense path, then metrics."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from dgi.data.corpus import EncodedCorpus
from dgi.data import ExampleArrays
from dgi.search.index import SIDIndex
from dgi.evaluation.metrics import DEFAULT_KS, Qrels, bucketed_metrics, mean_metrics, per_query_metrics, popularity_buckets
from dgi.retriever import Retriever
from dgi.search.beam import RULES
from dgi.nets.towers import Context



def relevance(arrays: ExampleArrays, limit: int | None = None) -> Qrels | np.ndarray:
    """What metrics judge the first `limit` rankings against: graded qrels when the split has
    them (several relevant items per query), else the single targets."""
    return (arrays.targets if arrays.qrels is None else arrays.qrels)[:limit]


def split_size(corpus: EncodedCorpus, split: str, limit: int | None = None) -> int:
    """How many examples of `split` an evaluation covers: all, or the first `limit`."""
    n = len(corpus.splits[split].targets)
    return n if limit is None else min(limit, n)


def batches(corpus: EncodedCorpus, split: str, n: int, batch_size: int) -> Iterator[tuple[slice, Tensor, Tensor | None, Tensor]]:
    """(rows, history, query embeddings or None, has_query) for the first `n` examples of `split`."""
    arrays = corpus.splits[split]
    for start in range(0, n, batch_size):
        rows = slice(start, min(start + batch_size, n))
        query_ids = torch.from_numpy(arrays.query_ids[rows]).long()
        has_query = query_ids >= 0
        queries = corpus.query_embeddings[query_ids.clamp(min=0)] if has_query.any() else None
        yield rows, torch.from_numpy(arrays.history[rows]).long(), queries, has_query


def rank_split(retriever: Retriever, corpus: EncodedCorpus, split: str, method: str, k: int,
               limit: int | None = None, rule: str | None = None, beam_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Ranked item indices [n, k] (-1 padded) and their scores for the first `limit` examples of `split`."""
    n = split_size(corpus, split, limit)
    ranked = np.full((n, k), -1, dtype=np.int64)
    scores = np.full((n, k), -np.inf, dtype=np.float64)
    for rows, history, queries, has_query in batches(corpus, split, n, retriever.search_config.batch_size):
        if method == "generative":
            ranking = retriever.generate(history, queries, has_query, k, rule, beam_size)
            items, item_scores = ranking.items, ranking.scores
        else:
            items, item_scores = retriever.dense(history, queries, has_query, k)
        ranked[rows, : items.shape[1]] = items.numpy()
        scores[rows, : items.shape[1]] = item_scores.double().numpy()
    return ranked, scores


def fill_ranking(ranked: np.ndarray, scores: np.ndarray, fallback: np.ndarray,
                 fallback_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row of `ranked` (best first, -1 padding last) completed up to its width with the items of
    the same row of `fallback` that it lacks, in `fallback`'s order (both as `rank_split` returns them).

    A filled item's score is its fallback score shifted so that the first filled one lies 1 below the
    row's last ranked score (unshifted in a row with nothing ranked): scores stay non-increasing along
    the row, so a tool that orders by score keeps the ranks.
    """
    n, depth = ranked.shape
    rows = np.arange(n)
    live = ranked >= 0
    stride = int(max(ranked.max(initial=0), fallback.max(initial=0))) + 1
    listed = np.sort(np.where(live, rows[:, None] * stride + ranked, -1), axis=None)
    probe = rows[:, None] * stride + fallback
    found = listed[np.searchsorted(listed, probe).clip(max=max(listed.size - 1, 0))] == probe
    extra = (fallback >= 0) & ~found
    n_ranked = live.sum(axis=1)
    column = n_ranked[:, None] + np.cumsum(extra, axis=1) - 1
    take = extra & (column < depth)
    last = scores[rows, np.maximum(n_ranked - 1, 0)]
    first = fallback_scores[rows, np.argmax(extra, axis=1)]
    shift = np.where(n_ranked > 0, last - 1.0 - first, 0.0)
    filled, filled_scores = ranked.copy(), scores.astype(np.float64, copy=True)
    at = (np.nonzero(take)[0], column[take])
    filled[at] = fallback[take]
    filled_scores[at] = (fallback_scores + shift[:, None])[take]
    return filled, filled_scores


def filled_rankings(rankings: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """`evaluate`'s rankings with every generative rule completed by the dense path (`fill_ranking`): a
    run file that stopped at the SID buckets would judge a rule on far fewer results than the dense path."""
    dense = rankings["dense"]
    return {method: fill_ranking(*ranking, *dense) if method != "dense" else ranking
            for method, ranking in rankings.items()}


def choose_rule(retriever: Retriever, corpus: EncodedCorpus, metric: str, limit: int | None,
                split: str = "valid") -> tuple[str, dict[str, float]]:
    """The ranking rule with the best `metric` on the first `limit` examples of `split` (validation, never
    test): which rule wins depends on the data and the model, so it is tuned like any hyperparameter."""
    relevant = relevance(corpus.splits[split], limit)
    scores = {}
    for rule in RULES:
        ranked = rank_split(retriever, corpus, split, "generative", max(DEFAULT_KS), limit, rule)[0]
        scores[rule] = float(mean_metrics(per_query_metrics(ranked, relevant))[metric])
    return max(scores, key=scores.__getitem__), scores


def invalid_sid_rate(retriever: Retriever, corpus: EncodedCorpus, split: str, limit: int | None = None) -> float:
    """Share of unconstrained beams that name no existing item: what constraints save the model from."""
    invalid = total = 0
    for _, history, queries, has_query in batches(corpus, split, split_size(corpus, split, limit),
                                                  retriever.search_config.batch_size):
        batch_invalid, batch_total = invalid_beams(retriever, retriever.context(history, queries, has_query))
        invalid, total = invalid + batch_invalid, total + batch_total
    return invalid / max(total, 1)


def invalid_beams(retriever: Retriever, context: Context) -> tuple[int, int]:
    """(beams naming no item, beams) of an unconstrained search at the configured beam size."""
    beams = retriever.beams(context, retriever.search_config.beam_size, constrained=False)
    live = beams.codes[..., 0] >= 0
    return int((~retriever.index.is_valid(beams.codes.clamp(min=0)) & live).sum()), int(live.sum())


def index_statistics(index: SIDIndex) -> dict:
    return {"collisions": index.collision_stats(), "code_usage": index.code_usage()}


def evaluate(retriever: Retriever, corpus: EncodedCorpus, split: str, ks: Sequence[int] = DEFAULT_KS,
             rules: Sequence[str] = RULES, limit: int | None = None,
             depth: int | None = None) -> tuple[dict, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Full report: every ranking rule, the dense path, popularity buckets, invalid-SID rate, index health.

    Metrics use the split's graded qrels when it has them (see `relevance`); popularity buckets
    use each example's target. Returns the report and the rankings (per method, `depth` deep when
    deeper than max(ks): one search serves the metrics, which read the top max(ks), and run files).
    """
    k = max(ks)
    depth = max(k, depth or 0)
    rules = rules if retriever.index is not None else ()  # a dual encoder has the dense path only
    targets = corpus.splits[split].targets[:limit]  # popularity buckets follow the trained-toward item
    relevant = relevance(corpus.splits[split], limit)
    buckets = popularity_buckets(corpus.popularity)
    report: dict = {"split": split, "n_examples": int(len(targets)), "ks": list(ks),
                    "default_rule": retriever.search_config.rule, "beam_size": retriever.search_config.beam_size,
                    "rerank_beam_size": retriever.search_config.rerank_beam_size,
                    "default_method": f"generative/{retriever.search_config.rule}" if rules else "dense",
                    "bucket_edges": buckets.edges, "methods": {}}
    rankings = {}
    methods = [(f"generative/{rule}", "generative", rule) for rule in rules] + [("dense", "dense", None)]
    for name, method, rule in methods:
        started = time.perf_counter()
        ranked, scores = rank_split(retriever, corpus, split, method, depth, limit, rule)
        seconds = time.perf_counter() - started
        per_query = per_query_metrics(ranked[:, :k], relevant, ks)  # the top k of a deeper ranking
        report["methods"][name] = {"overall": mean_metrics(per_query), "buckets": bucketed_metrics(per_query, targets, buckets),
                                   "query_ms": 1000 * seconds / max(len(targets), 1)}
        rankings[name] = (ranked, scores)
    if retriever.index is not None:
        report["invalid_sid_rate"] = invalid_sid_rate(retriever, corpus, split, limit)
        report["index"] = index_statistics(retriever.index)
    return report, rankings
