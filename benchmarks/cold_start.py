"""Cold start: items held out of training entirely, indexed afterwards with `add_items`, then searched.

    python benchmarks/cold_start.py --data DATA --out RUN [--share 0.05] [--set section.key=value ...]

1. A seeded share of the catalogue is held out: removed from items.jsonl and from every train and
   valid example (as a target the example goes, in a history the item is dropped), so training never
   sees it.
2. DGI trains on the rest (configs/amazon-beauty.yaml + configs/decoder-phase.yaml + --set).
3. Its exported model directory is loaded and the held-out items are added (text -> encoder ->
   item tower -> quantizer -> SID, no retraining).
4. On test (full catalogue again): every example whose target was held out, and as many examples
   with a trained target (seeded sample), are ranked by the lexicographic and rerank rules and by
   the same model's dense path; HR@10 and NDCG@10 for each group.
Writes benchmarks/results/cold-start-amazon-beauty.json (command, commit, machine, numbers).
"""

from __future__ import annotations

import argparse
import random
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from dgi import pipeline
from dgi.config import load_config
from dgi.data import Dataset, Example, load_dataset
from dgi.io import write_json
from dgi.provenance import git_commit, machine
from dgi.retriever import Retriever

ROOT = Path(__file__).parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "cold-start-amazon-beauty.json"
CONFIGS = [ROOT / "configs" / "amazon-beauty.yaml", ROOT / "configs" / "decoder-phase.yaml"]


def hold_out(dataset: Dataset, share: float, seed: int) -> tuple[Dataset, set[str]]:
    """The dataset without a seeded `share` of its items in items, train and valid; and those items."""
    rng = random.Random(seed)
    cold = set(rng.sample([item.id for item in dataset.items], round(share * len(dataset.items))))

    def warm(examples: list[Example]) -> list[Example]:
        return [Example(e.target, tuple(i for i in e.history if i not in cold), e.query, e.timestamp, e.id)
                for e in examples if e.target not in cold]

    splits = {"train": warm(dataset.splits["train"]), "valid": warm(dataset.splits["valid"]),
              "test": warm(dataset.splits["test"])[:1]}  # training needs a test file; the real test is below
    items = [item for item in dataset.items if item.id not in cold]
    return Dataset(f"{dataset.name}-cold-{share}", items, splits, {**dataset.meta, "held_out": len(cold)}), cold


def rank_hits(retriever: Retriever, examples: list[Example], rule: str, k: int = 10) -> np.ndarray:
    """Rank of each example's target in the top k (0-based), or -1."""
    ranks = []
    for start in range(0, len(examples), 256):
        batch = examples[start:start + 256]
        queries, histories = [e.query for e in batch], [list(e.history) for e in batch]
        ids = [[hit.item_id for hit in row] for row in retriever.search(queries, histories, k=k, rule=rule)]
        ranks += [row.index(e.target) if e.target in row else -1 for row, e in zip(ids, batch)]
    return np.array(ranks)


def summary(ranks: np.ndarray) -> dict:
    hit = ranks >= 0
    ndcg = np.where(hit, 1 / np.log2(np.maximum(ranks, 0) + 2), 0.0)
    return {"hit@10": float(hit.mean()), "ndcg@10": float(ndcg.mean()), "examples": int(len(ranks))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a prepared Beauty dataset")
    parser.add_argument("--out", type=Path, required=True, help="work directory (dataset + run)")
    parser.add_argument("--share", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    full = load_dataset(args.data)
    warm, cold = hold_out(full, args.share, args.seed)
    data_dir, run_dir = args.out / "data", args.out / "run"
    if not (data_dir / "dataset.json").exists():
        warm.save(data_dir)
    config = load_config(CONFIGS, [f"data.path={data_dir}", f"train.seed={args.seed}", *args.overrides])
    started = time.perf_counter()
    if not (run_dir / "model" / "model.json").exists():
        pipeline.resume(run_dir, progress=False) if (run_dir / "state.json").exists() else \
            pipeline.train(config, run_dir, progress=False)
    train_seconds = time.perf_counter() - started
    retriever = Retriever.load(run_dir / "model")
    added_started = time.perf_counter()
    retriever.add_items([item for item in full.items if item.id in cold])
    add_seconds = time.perf_counter() - added_started
    rng = random.Random(args.seed)
    cold_test = [e for e in full.splits["test"] if e.target in cold]
    warm_test = rng.sample([e for e in full.splits["test"] if e.target not in cold], len(cold_test))
    groups = {"held-out targets": cold_test, "trained targets": warm_test}
    results = {group: {rule: summary(rank_hits(retriever, examples, rule))
                       for rule in ("lexicographic", "rerank", "dense")} for group, examples in groups.items()}
    write_json(args.results, {
        "command": shlex.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "git_commit": git_commit(),
        "machine": machine(), "config": config.model_dump(mode="json"), "held_out_items": len(cold),
        "catalogue_items": len(full.items), "train_seconds": train_seconds,
        "add_items_seconds": add_seconds, "results": results,
        "note": "HR@10 / NDCG@10 on all test examples whose target was held out of training, and on as "
                "many seeded test examples whose target was trained; the same model, catalogue and rules."})
    for group, rules in results.items():
        print(group, {rule: f"HR@10 {r['hit@10']:.4f} N@10 {r['ndcg@10']:.4f} (n={r['examples']})"
                      for rule, r in rules.items()})
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
