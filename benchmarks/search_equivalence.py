"""A trained run's metrics under the fast beam search and under the plain reference steps, side by side.

    python benchmarks/search_equivalence.py RUN --split test --limit 5000 --out FILE.json

The fast search (`Retriever.beams`) keeps each beam's self-attention keys/values across SID levels
(`IncrementalSteps`); the reference runs the whole prefix through the decoder at every step
(`DGIModel.step_log_probs`). The property tests check the two on random models; this checks that a
trained model's reported metrics do not depend on which one ran, and times both.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

from dgi.evaluation.evaluate import evaluate
from dgi.io import write_json
from dgi.pipeline import load_trained, prepare_corpus
from dgi.provenance import git_commit, machine
from dgi.training.run import RunDirectory


def reference_steps(model):
    """What `model.incremental_steps` is tested against: the full prefix through the decoder each step."""
    return lambda context, memory: (lambda prefix, _: model.step_log_probs(context, prefix, memory))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = RunDirectory(args.run)
    corpus = prepare_corpus(run.config())
    retriever = load_trained(run, corpus)
    results = {}
    for name in ("fast", "reference"):
        if name == "reference":
            retriever.model.incremental_steps = reference_steps(retriever.model)
        started = time.perf_counter()
        with torch.no_grad():
            report, _ = evaluate(retriever, corpus, args.split, limit=args.limit)
        results[name] = {"seconds": round(time.perf_counter() - started, 1),
                         "metrics": {method: values["overall"] for method, values in report["methods"].items()}}
        print(name, results[name]["seconds"], {m: round(v["ndcg@10"], 5) for m, v in results[name]["metrics"].items()},
              flush=True)
    largest = max(abs(value - results["reference"]["metrics"][method][metric])
                  for method, values in results["fast"]["metrics"].items() for metric, value in values.items())
    write_json(args.out, {**results, "largest_metric_difference": largest, "run": str(args.run),
                          "split": args.split, "limit": args.limit, "threads": args.threads,
                          "command": " ".join(["python", *map(shlex.quote, sys.argv)]),
                          "git_commit": git_commit(), "machine": machine()})
    print("largest metric difference", largest)


if __name__ == "__main__":
    main()
