"""The geometry of a trained dense model's scores: why its tail items rank where they do.

Hubness is usually blamed on item norms; a model can bury its tail with equal norms too. These
numbers tell the two apart without retraining: per popularity bucket, how far the items lean
toward the mean user direction and where their test targets rank, next to the norms, the logit
scale training saw and the per-user spread of item cosines (benchmarks/tail_probe.py).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from dgi.data.corpus import EncodedCorpus
from dgi.evaluation.evaluate import batches, split_size
from dgi.evaluation.metrics import popularity_buckets
from dgi.retriever import Retriever

USERS_PER_CHUNK = 1024  # scores are built a chunk of users at a time, never users x items at once


def context_vectors(retriever: Retriever, corpus: EncodedCorpus, split: str) -> torch.Tensor:
    """z_q of every example of `split`."""
    return torch.cat([retriever.context(history, queries, has_query).vector.cpu() for _, history, queries, has_query
                      in batches(corpus, split, split_size(corpus, split), USERS_PER_CHUNK)])


def probe_tail(retriever: Retriever, corpus: EncodedCorpus, split: str, temperature: float | None) -> dict:
    """Norms, logit scale, per-user cosine spread, and per popularity bucket the items' alignment with the
    mean user direction and the rank of their targets (strictly better-scored items, as in top-k).

    `temperature`: the InfoNCE temperature of a cosine model, None for raw dot-product logits.
    """
    users = context_vectors(retriever, corpus, split)
    items = retriever.item_vectors.cpu().float()
    unit_items, unit_users = F.normalize(items, dim=-1), F.normalize(users, dim=-1)
    targets = torch.as_tensor(corpus.splits[split].targets)
    target_ranks, cosine_spread = [], []
    for start in range(0, len(users), USERS_PER_CHUNK):
        chunk = users[start:start + USERS_PER_CHUNK]
        scores = chunk @ items.T
        target_scores = scores.gather(1, targets[start:start + USERS_PER_CHUNK, None])
        target_ranks.append((scores > target_scores).sum(1))
        cosine_spread.append((unit_users[start:start + USERS_PER_CHUNK] @ unit_items.T).std(1))
    ranks = torch.cat(target_ranks).numpy()
    alignment = (unit_items @ F.normalize(unit_users.mean(0), dim=0)).numpy()
    buckets = popularity_buckets(corpus.popularity)
    target_bucket = buckets.bucket_of_item[targets.numpy()]
    per_bucket = {}
    for index, name in enumerate(buckets.names):
        in_bucket, members = target_bucket == index, buckets.bucket_of_item == index
        per_bucket[name] = {
            "items": int(members.sum()),
            "alignment_with_mean_user": float(alignment[members].mean()) if members.any() else None,
            "targets": int(in_bucket.sum()),
            "target_median_rank": float(np.median(ranks[in_bucket])) if in_bucket.any() else None,
            "hit@10": float((ranks[in_bucket] < 10).mean()) if in_bucket.any() else None}
    user_norm, item_norm = (float(np.median(vectors.norm(dim=-1).numpy())) for vectors in (users, items))
    return {"context_norm_median": user_norm, "item_norm_median": item_norm,
            "training_logit_scale": 1 / temperature if temperature else user_norm * item_norm,
            "per_user_cosine_std_median": float(np.median(torch.cat(cosine_spread).numpy())),
            "buckets": per_bucket}
