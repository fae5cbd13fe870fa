"""Tune the untrained baselines of a benchmark (BM25, content kNN, zero-shot dense) on validation.

    python benchmarks/tune_baselines.py --config configs/bench-amazon-beauty-search.yaml \
        --data data/amazon-beauty-search --out benchmarks/results/tuning-amazon-beauty-search.json

Every setting of a small grid is scored on the first `--limit` validation examples (the subset
DGI selects its epoch on) with the DGI config's `train.select_metric`; the best setting per kind
is printed as the `params:` for the benchmark config's tuned rows. Trained baselines select on
validation by themselves; these have no training, so without this step they would run on library
defaults while DGI runs tuned.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

from dgi import pipeline
from dgi.benchmark import dgi_config, load_bench_config
from dgi.provenance import git_commit, machine
from dgi.evaluation.evaluate import relevance
from dgi.io import write_json
from dgi.methods.registry import BASELINES
from dgi.evaluation.metrics import DEFAULT_KS, mean_metrics, per_query_metrics

EXCLUDE = (False, True)  # whether the history's own items may be recommended again
GRIDS: dict[str, list[dict]] = {
    "bm25": [{"k1": k1, "b": b, "history_items": history, "exclude_history": exclude}
             for k1, b, history, exclude in itertools.product((0.6, 1.2, 1.5, 2.0), (0.3, 0.75, 1.0),
                                                              (0, 1, 3, 10, 20), EXCLUDE)],
    "content": [{"mode": mode, "exclude_history": exclude}
                for mode, exclude in itertools.product(("auto", "last_item", "query", "mean"), EXCLUDE)],
    "dense_zero_shot": [{"history_items": history, "exclude_history": exclude}
                        for history, exclude in itertools.product((0, 1, 3, 10), EXCLUDE)],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="a benchmark config")
    parser.add_argument("--data", type=Path, help="the prepared dataset (default: the config's)")
    parser.add_argument("--limit", type=int, default=5000, help="validation examples to score on")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    bench = load_bench_config(args.config, data=args.data)
    config = dgi_config(bench, bench.models[0], bench.seeds[0])
    corpus = pipeline.prepare_corpus(config)
    metric, relevant = config.train.select_metric, relevance(corpus.splits["valid"], args.limit)
    results = {}
    for kind in dict.fromkeys(spec.kind for spec in bench.models if spec.kind in GRIDS):  # each kind once
        trials = []
        for params in GRIDS[kind]:
            started = time.perf_counter()
            model = BASELINES[kind](**params).fit(corpus)
            ranked, _ = model.rank(corpus, "valid", max(DEFAULT_KS), args.limit)
            trials.append({"params": params, "metrics": mean_metrics(per_query_metrics(ranked, relevant)),
                           "seconds": time.perf_counter() - started})
            print(f"{kind} {params}: {metric} {trials[-1]['metrics'][metric]:.4f}", flush=True)
        results[kind] = {"best": max(trials, key=lambda trial: trial["metrics"][metric])["params"], "trials": trials}
    write_json(args.out, {"command": " ".join(["python", *sys.argv]), "git_commit": git_commit(),
                          "machine": machine("cpu"), "dataset": str(bench.data), "split": "valid",
                          "examples": min(args.limit, len(corpus.splits["valid"].targets)), "metric": metric,
                          "kinds": results})
    for kind, result in results.items():
        print(f"{kind}: params: {json.dumps(result['best'])}")


if __name__ == "__main__":
    main()
