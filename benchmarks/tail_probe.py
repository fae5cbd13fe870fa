"""Where do a trained model's tail items sit? Score geometry of the dense models of a finished benchmark.

    python benchmarks/tail_probe.py --bench runs/bench-amazon-beauty --seed 0 \
        --out benchmarks/results/tail-probe-amazon-beauty.json

For each dual encoder and DGI run (DGI through its dense path z_q . v) of one seed, over every test
user: the norms of context and item vectors, the logit scale training saw (1 / temperature for
cosine, the typical |u| |v| for dot), the per-user spread of item cosines, and per popularity
bucket the mean cosine of its items with the mean user direction plus the median rank and
HitRate@10 of its test targets (`dgi.evaluation.tail_probe`). It tells a norm-driven tail failure from one with
equal norms without retraining anything.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from dgi import pipeline
from dgi.benchmark import load_bench_config, seed_directory
from dgi.provenance import git_commit, machine
from dgi.io import write_json
from dgi.training.run import RunDirectory
from dgi.evaluation.tail_probe import probe_tail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, required=True, help="a benchmark output directory")
    parser.add_argument("--config", type=Path, help="its benchmark config (default: the bench.yaml it recorded)")
    parser.add_argument("--models", help="comma-separated model names or slugs (default: every finished one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    bench = load_bench_config(args.config or args.bench / "bench.yaml", models=args.models)
    corpus, models = None, {}
    for spec in bench.models:
        run = RunDirectory(seed_directory(args.bench, spec, args.seed) / "run")
        if spec.kind not in ("dgi", "dual_encoder") or not run.best_file.exists():
            continue
        config = run.config()
        corpus = corpus or pipeline.prepare_corpus(config)
        cosine = config.model.geometry == "cosine"
        models[spec.name] = {"geometry": config.model.geometry,
                             **probe_tail(pipeline.load_trained(run, corpus), corpus, bench.split,
                                          config.loss.infonce_temperature if cosine else None)}
        print(spec.name, {key: round(value, 3) for key, value in models[spec.name].items()
                          if isinstance(value, float)})
    if not models:
        raise SystemExit(f"{args.bench}: no finished DGI or dual-encoder run for seed {args.seed}")
    write_json(args.out, {"command": " ".join(["python", *sys.argv]), "git_commit": git_commit(),
                          "machine": machine("cpu"), "benchmark": str(args.bench), "seed": args.seed,
                          "split": bench.split, "models": models})


if __name__ == "__main__":
    main()
