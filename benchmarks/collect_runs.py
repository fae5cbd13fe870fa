"""Collect finished runs (config, per-epoch validation log, test metrics) into one results file.

    python benchmarks/collect_runs.py --out benchmarks/results/NAME.json --command "..." RUN [RUN ...]

Each run must have been evaluated (`dgi eval RUN --split test`; `--test-eval eval-test-lw` reads the test
evaluation a `dgi eval --set search... --out RUN/eval-test-lw` wrote instead, and records its overrides).
The file records the git commit and the machine, so a table in the README can always be traced to what
produced it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import yaml

from dgi.io import write_json
from dgi.provenance import git_commit, machine


def collect(run: Path, test_eval: str = "eval-test") -> dict:
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    folders = {"valid": "eval-valid", "test": test_eval}
    evaluations = {split: json.loads((run / folder / "metrics.json").read_text())
                   for split, folder in folders.items() if (run / folder / "metrics.json").exists()}
    test = evaluations.get("test")
    return {
        "run": str(run),
        "config": yaml.safe_load((run / "config.yaml").read_text()),
        "state": json.loads((run / "state.json").read_text()),
        "epochs": [{key: record.get(key) for key in ("epoch", "phase", "seconds", "losses", "valid", "index")}
                   for record in log],
        "test": None if test is None else {name: method["overall"] for name, method in test["methods"].items()},
        "test_buckets": None if test is None else {name: method["buckets"] for name, method in test["methods"].items()},
        "invalid_sid_rate": None if test is None else test["invalid_sid_rate"],
        "test_search_overrides": None if test is None else test.get("search_overrides", []),
        "valid": {name: method["overall"] for name, method in evaluations["valid"]["methods"].items()}
        if "valid" in evaluations else None,
    }


def summarize(tables: list[dict]) -> dict:
    """Mean and sample std over runs of every metric of every method ({method: {metric: value}} per run)."""
    summary: dict = {}
    for method in tables[0] if tables else {}:
        for metric in tables[0][method]:
            values = np.array([table[method][metric] for table in tables], dtype=float)
            summary.setdefault(method, {})[metric] = {
                "mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                "n": int(len(values))}
    return summary


def summarize_buckets(runs: list[dict]) -> dict:
    """Per method and popularity bucket: mean and std over runs (runs without a test eval skipped)."""
    evaluated = [run["test_buckets"] for run in runs if run["test_buckets"]]
    buckets = next(iter(evaluated[0].values())) if evaluated else {}
    return {bucket: summarize([{method: values[bucket] for method, values in run.items()} for run in evaluated])
            for bucket in buckets}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--command", required=True, help="the exact command(s) that produced the runs")
    parser.add_argument("--note", default="")
    parser.add_argument("--test-eval", default="eval-test", help="each run's folder of test metrics")
    args = parser.parse_args()
    runs = [collect(run, args.test_eval) for run in args.runs]
    write_json(args.out, {
        "command": args.command, "note": args.note, "git_commit": git_commit(), "machine": machine(),
        "runs": runs,
        "test_mean_std": summarize([run["test"] for run in runs if run["test"]]),
        "test_buckets_mean_std": summarize_buckets(runs),
        "train_seconds": [run["state"]["train_seconds"] for run in runs],
    })


if __name__ == "__main__":
    main()
