"""Popularity, content kNN and BM25 on a prepared dataset (valid and test, full ranking) -> one results file.

    python benchmarks/heuristic_baselines.py --data DATA --config configs/amazon-beauty.yaml \
        --out benchmarks/results/amazon-beauty-baselines.json

Deterministic, untrained baselines: one run each. Trained baselines (SASRec, TIGER, dual encoders)
run through `dgi benchmark`.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from dgi.baselines import BM25Baseline, ContentBaseline, PopularityBaseline
from dgi.config import load_config
from dgi.evaluation.evaluate import relevance
from dgi.io import write_json
from dgi.evaluation.metrics import bucketed_metrics, mean_metrics, per_query_metrics, popularity_buckets
from dgi.pipeline import prepare_corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--config", type=Path, required=True, help="the DGI config (max_history, encoder)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    corpus = prepare_corpus(load_config([args.config], [f"data.path={args.data}"]))
    buckets = popularity_buckets(corpus.popularity)
    results: dict = {}
    for name, model in (("popularity", PopularityBaseline()), ("content kNN", ContentBaseline()),
                        ("BM25", BM25Baseline())):
        model.fit(corpus)
        for split in ("valid", "test"):
            started = time.perf_counter()
            ranked, _ = model.rank(corpus, split, 20)
            per_query = per_query_metrics(ranked, relevance(corpus.splits[split]))
            results.setdefault(name, {})[split] = {
                "overall": mean_metrics(per_query),
                "buckets": bucketed_metrics(per_query, corpus.splits[split].targets, buckets),
                "query_ms": 1000 * (time.perf_counter() - started) / len(ranked)}
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    write_json(args.out, {"command": " ".join(["python", *sys.argv]), "git_commit": commit or "unknown",
                          "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                      "python": platform.python_version()},
                          "dataset": str(args.data), "bucket_edges": buckets.edges, "models": results})


if __name__ == "__main__":
    main()
