"""`dgi demo`: the whole method on the built-in synthetic catalog, DGI against its "w/o all" ablation."""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

from dgi import pipeline
from dgi.baselines import PopularityBaseline
from dgi.config import Config, load_config
from dgi.data import generate_synthetic, load_dataset
from dgi.io import write_json
from dgi.evaluation.metrics import bucketed_metrics, mean_metrics, per_query_metrics, popularity_buckets
from dgi.provenance import machine
from dgi.training.run import RunDirectory

# The paper's "w/o all": frozen two-stage codes, untied output heads, dot-product logits.
ABLATION_WITHOUT_ALL = ["quantizer.gradient=frozen", "quantizer.heads=untied", "quantizer.logits=dot"]


def demo_config(data_dir: Path, seed: int, overrides: list[str] = ()) -> Config:
    preset = resources.files("dgi") / "configs" / "demo.yaml"
    with resources.as_file(preset) as path:
        return load_config([path], [f"data.path={data_dir}", f"train.seed={seed}", *overrides])


def run_demo(out: Path, n_items: int, n_examples: int, seed: int = 0, progress: bool = True) -> dict:
    """Generate data, train both models (reusing finished runs), evaluate on test, write results.json."""
    started = time.perf_counter()
    out = Path(out)
    data_dir = out / "data"
    if not (data_dir / "items.jsonl").exists():
        generate_synthetic(n_items=n_items, n_examples=n_examples, seed=seed).save(data_dir)
    dataset = load_dataset(data_dir)
    corpus = pipeline.prepare_corpus(demo_config(data_dir, seed))
    results: dict = {"dataset": {"name": dataset.name, "path": str(data_dir), "items": len(dataset.items),
                                 **{f"{split}_examples": len(rows) for split, rows in dataset.splits.items()},
                                 "generator": dataset.meta},
                     "models": {}, "machine": machine()}
    for name, slug, overrides in (("dgi", "dgi", []), ("w/o all", "without-all", ABLATION_WITHOUT_ALL)):
        config = demo_config(data_dir, seed, overrides)
        run = RunDirectory(out / "runs" / slug)
        if not _finished(run, config):
            if run.exists():
                pipeline.resume(run.path, progress)
            else:
                pipeline.train(config, run.path, corpus, progress)
        report = pipeline.evaluate_run(run.path, "test", corpus=corpus)
        method = report["methods"][f"generative/{config.search.rule}"]
        results["models"][name] = {"overall": method["overall"], "buckets": method["buckets"],
                                   "train_seconds": run.state()["train_seconds"], "query_ms": method["query_ms"],
                                   "invalid_sid_rate": report["invalid_sid_rate"], "index": report["index"],
                                   "rules": {n: m["overall"] for n, m in report["methods"].items()},
                                   "overrides": overrides}
        if name == "dgi":
            results["models"]["dgi (dense path)"] = {"overall": report["methods"]["dense"]["overall"],
                                                     "buckets": report["methods"]["dense"]["buckets"]}
    results["models"]["popularity"] = _popularity(corpus)
    results["bucket_edges"] = report["bucket_edges"]
    results["wall_seconds"] = time.perf_counter() - started
    write_json(out / "results.json", results)
    return results


def _finished(run: RunDirectory, config: Config) -> bool:
    state = run.state() if run.exists() else None
    t = config.train
    planned = t.dense_epochs + t.joint_epochs + (t.quantizer_epochs if config.quantizer.gradient == "frozen" else 0)
    return bool(state) and state["epoch"] >= planned


def _popularity(corpus) -> dict:
    ranked, _ = PopularityBaseline().fit(corpus).rank(corpus, "test", 20)
    targets = corpus.splits["test"].targets
    per_query = per_query_metrics(ranked, targets)
    return {"overall": mean_metrics(per_query),
            "buckets": bucketed_metrics(per_query, targets, popularity_buckets(corpus.popularity))}
