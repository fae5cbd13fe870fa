"""One epoch's validation record: every ranking rule next to the dense path, and where generation loses.

The configured rule alone hid that the decoder was still learning while the towers had peaked, so each
epoch logs all three rules, the unconstrained invalid-SID rate, beam recall per SID level (the share of
targets whose level-1, level-1..2, ... prefix survived the beam) and the teacher-forced next-token loss
and accuracy per level and per popularity bucket. One context encoding per batch serves all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from dgi.data.corpus import EncodedCorpus
from dgi.evaluation.evaluate import batches, invalid_beams, relevance, split_size
from dgi.evaluation.metrics import DEFAULT_KS, mean_metrics, per_query_metrics, popularity_buckets
from dgi.retriever import Retriever
from dgi.search.beam import RULES, Beams



@dataclass
class LevelStats:
    """Per SID level sums of a per-example quantity, overall and per popularity bucket of the target."""

    n_buckets: int
    levels: int
    sums: np.ndarray = field(init=False)     # [n_buckets, levels]
    counts: np.ndarray = field(init=False)   # [n_buckets]

    def __post_init__(self) -> None:
        self.sums = np.zeros((self.n_buckets, self.levels))
        self.counts = np.zeros(self.n_buckets)

    def add(self, values: Tensor, bucket: np.ndarray) -> None:
        """values [B, levels] (one row per example), bucket [B] its target's popularity bucket."""
        np.add.at(self.sums, bucket, values.double().cpu().numpy())
        np.add.at(self.counts, bucket, 1)

    def summary(self, names: tuple[str, ...], digits: int = 4) -> dict:
        def mean(sums: np.ndarray, count: float) -> list[float] | None:
            return [round(float(v), digits) for v in sums / count] if count else None

        return {"overall": mean(self.sums.sum(0), self.counts.sum()),
                "buckets": {name: mean(self.sums[b], self.counts[b]) for b, name in enumerate(names)}}


def prefix_recall(beams: Beams, target_codes: Tensor) -> Tensor:
    """[B, m] bool: whether the target's level-1..j prefix is among the beams the search kept at level j."""
    if not beams.levels:
        return torch.zeros_like(target_codes, dtype=torch.bool)
    return torch.stack([(kept == target_codes[:, None, : j + 1]).all(-1).any(-1)
                        for j, kept in enumerate(beams.levels)], dim=1)


def validation_report(retriever: Retriever, corpus: EncodedCorpus, split: str, limit: int,
                      generative: bool, diagnostics: bool = True) -> dict:
    """Metrics of the dense path and (once an index exists) of the ranking rules, plus the diagnostics.

    `generative` holds the configured rule's metrics: the best epoch is selected on it. Without
    `diagnostics` only the dense path and the configured rule are scored (one beam search per batch).
    """
    config = retriever.search_config
    n = split_size(corpus, split, limit)
    k = max(DEFAULT_KS)
    rules = (RULES if diagnostics else (config.rule,)) if generative else ()
    methods = ["dense"] + [f"generative/{rule}" for rule in rules]
    ranked = {method: np.full((n, k), -1, dtype=np.int64) for method in methods}
    targets = corpus.splits[split].targets[:n]
    buckets = popularity_buckets(corpus.popularity)
    bucket_of = buckets.bucket_of_item[targets]
    depth = retriever.index.depth if generative else 0
    stats = {name: LevelStats(len(buckets.names), depth) for name in
             ("beam_recall", "rerank_beam_recall", "ntp_loss", "ntp_accuracy")}
    invalid = total = 0
    for rows, history, queries, has_query in batches(corpus, split, n, config.batch_size):
        context = retriever.context(history, queries, has_query)
        ranked["dense"][rows] = retriever.dense_from_context(context, k)[0].numpy()
        if not generative:
            continue
        if not diagnostics:
            items = retriever.generate_from_context(context, k).items
            ranked[f"generative/{config.rule}"][rows, : items.shape[1]] = items.numpy()
            continue
        target_codes = retriever.index.codes[torch.from_numpy(targets[rows])].long()
        beams = retriever.beams(context, config.beam_size)
        wide = retriever.beams(context, config.rerank_beam_size)
        for rule, rule_beams in (("lexicographic", beams), ("fused", beams), ("rerank", wide)):
            items = retriever.rank(context, rule_beams, k, rule).items
            ranked[f"generative/{rule}"][rows, : items.shape[1]] = items.numpy()
        stats["beam_recall"].add(prefix_recall(beams, target_codes), bucket_of[rows])
        stats["rerank_beam_recall"].add(prefix_recall(wide, target_codes), bucket_of[rows])
        loss, correct = retriever.teacher_forced(context, target_codes)
        stats["ntp_loss"].add(loss, bucket_of[rows])
        stats["ntp_accuracy"].add(correct, bucket_of[rows])
        batch_invalid, batch_total = invalid_beams(retriever, context)
        invalid, total = invalid + batch_invalid, total + batch_total
    relevant = relevance(corpus.splits[split], limit)
    report: dict = {method: mean_metrics(per_query_metrics(ranking, relevant)) for method, ranking in ranked.items()}
    if generative:
        report["generative"] = report[f"generative/{config.rule}"]
    if generative and diagnostics:
        report["invalid_sid_rate"] = invalid / max(total, 1)
        report["beam_size"], report["rerank_beam_size"] = config.beam_size, config.rerank_beam_size
        report.update({name: stat.summary(buckets.names) for name, stat in stats.items()})
    return report
