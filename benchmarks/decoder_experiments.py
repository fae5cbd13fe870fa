"""Decoder experiments on validation: variants of the schedule after a shared dense + joint run.

  # a variant: copy a finished (or interrupted) run, change its config, continue it (`dgi train --resume`)
  python benchmarks/decoder_experiments.py variant --base runs/beauty --out runs/exp/decoder-lr2e-3 \
      --set train.decoder_epochs=4 --set train.decoder_lr=2e-3
  # the table: one row per run directory, validation only, plus each run's learning-curve figure
  python benchmarks/decoder_experiments.py table runs/beauty runs/exp/* \
      --out benchmarks/results/decoder-experiments-amazon-beauty
  # the beam width of each rule, on a run's selected model (validation)
  python benchmarks/decoder_experiments.py beams runs/beauty --widths 20,50,100 \
      --out benchmarks/results/decoder-experiments-amazon-beauty/beams.json
  # search settings of a trained run, each a set of search.* overrides (validation): level weights,
  # the fused rule's cosine weight, beam widths
  python benchmarks/decoder_experiments.py search runs/beauty --try "search.level_weights=[1,0.5,0.25]" \
      --try "search.fusion_weight=20 search.beam_size=50" --out benchmarks/results/decoder-experiments-amazon-beauty/search.json
  # per SID level, how well the decoder ranks the target's next code given its true prefix, against the
  # codeword geometry and the dense path's own view of the tree (validation)
  python benchmarks/decoder_experiments.py levels runs/beauty \
      --out benchmarks/results/decoder-experiments-amazon-beauty/levels.json

A variant continues from the base run's last checkpoint, so every variant shares the same towers up to
the end of the base's joint phase (same seed, same data) and differs only in what the overrides change;
a variant that changes the joint phase itself must be trained from scratch (`dgi train`) and is listed
the same way. Nothing here reads the test split.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml

from dgi import pipeline
from dgi.config import apply_overrides, load_config
from dgi.evaluation.evaluate import batches, relevance, split_size
from dgi.evaluation.metrics import DEFAULT_KS, bucketed_metrics, mean_metrics, per_query_metrics, popularity_buckets
from dgi.figures import learning_curves_png
from dgi.io import write_json
from dgi.provenance import git_commit, machine
from dgi.training.run import RunDirectory
from dgi.training.validation import prefix_recall, validation_report

RULES = ("lexicographic", "fused", "rerank")


def run_variant(base: Path, out: Path, overrides: list[str]) -> None:
    if out.exists():
        raise SystemExit(f"{out} exists: pick a new --out (variants are never overwritten)")
    shutil.copytree(base, out, ignore=shutil.ignore_patterns("eval-*"))
    config = apply_overrides(yaml.safe_load((out / "config.yaml").read_text()), overrides)
    load_config([], [], base=config)  # validate before writing
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (out / "variant.json").write_text(json.dumps({"base": str(base), "overrides": overrides}, indent=2))
    pipeline.resume(out, progress=False)


def row(run_dir: Path, metric: str) -> dict:
    run = RunDirectory(run_dir)
    records = [json.loads(line) for line in run.log_file.read_text().splitlines()]
    state = run.state() or {}
    best = next(r for r in records if r["epoch"] == state.get("best_epoch"))
    generative = [r for r in records if "generative/lexicographic" in r["valid"]]
    peak = {f"best {rule}": max((r["valid"][f"generative/{rule}"][metric] for r in generative), default=None)
            for rule in RULES}
    variant = json.loads((run_dir / "variant.json").read_text()) if (run_dir / "variant.json").exists() else {}
    valid = best["valid"]
    return {
        "run": run_dir.name, "overrides": variant.get("overrides", []), "base": variant.get("base"),
        "epochs": [f"{r['epoch']}:{r['phase']}" for r in records], "best_epoch": best["epoch"],
        "selected_on": f"valid {metric} of the configured rule ({run.config().search.rule})",
        "at_best_epoch": {method: valid[method][metric] for method in
                          ("dense", *(f"generative/{rule}" for rule in RULES)) if method in valid},
        "beam_recall": valid.get("beam_recall", {}).get("overall"),
        "rerank_beam_recall": valid.get("rerank_beam_recall", {}).get("overall"),
        "valid_ntp_accuracy": valid.get("ntp_accuracy", {}).get("overall"),
        "train_ntp_accuracy": best.get("train", {}).get("ntp_accuracy", {}).get("overall"),
        "invalid_sid_rate": valid.get("invalid_sid_rate"),
        "peak_over_epochs": peak, "train_seconds": round(state.get("train_seconds", 0.0), 1),
        "per_epoch": [{"epoch": r["epoch"], "phase": r["phase"], "seconds": r["seconds"],
                       **{method: round(r["valid"][method][metric], 5) for method in
                          ("dense", *(f"generative/{rule}" for rule in RULES)) if method in r["valid"]}}
                      for r in records],
    }, records


def write_table(run_dirs: list[Path], out: Path, metric: str, command: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for run_dir in run_dirs:
        result, records = row(run_dir, metric)
        rows.append(result)
        (out / f"curves-{run_dir.name}.png").write_bytes(learning_curves_png(f"{run_dir.name} (validation)", records))
    document = {"command": command, "git_commit": git_commit(), "metric": metric, "split": "valid",
                "machine": {"cpu_count": os.cpu_count(), "load_average_1min": os.getloadavg()[0]}, "rows": rows}
    with tempfile.NamedTemporaryFile("w", dir=out, delete=False, suffix=".tmp") as tmp:
        json.dump(document, tmp, indent=2)
    os.replace(tmp.name, out / "experiments.json")
    lines = ["| run | overrides | best epoch | dense | lexicographic | fused | rerank | beam recall (20) | "
             "valid NTP acc | train NTP acc | train s |", "|---|---|---:|---:|---:|---:|---:|---|---|---|---:|"]
    for r in rows:
        at = r["at_best_epoch"]
        cells = [at.get(m) for m in ("dense", "generative/lexicographic", "generative/fused", "generative/rerank")]
        lines.append("| " + " | ".join([r["run"], "<br>".join(r["overrides"]) or "—", str(r["best_epoch"]),
                                        *(f"{c:.4f}" if c is not None else "—" for c in cells),
                                        _levels(r["beam_recall"]), _levels(r["valid_ntp_accuracy"]),
                                        _levels(r["train_ntp_accuracy"]), f"{r['train_seconds']:.0f}"]) + " |")
    (out / "experiments.md").write_text(f"Validation {metric} at each run's selected epoch.\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


def _trained(run_dir: Path):
    """A run's config, its corpus and its selected model as a retriever."""
    run = RunDirectory(run_dir)
    config = run.config()
    corpus = pipeline.prepare_corpus(config)
    return config, corpus, pipeline.load_trained(run, corpus)


def beam_widths(run_dir: Path, widths: list[int], metric: str = "ndcg@10") -> dict:
    """Validation `metric` of every rule at each beam width, on the run's selected model: the width is a
    search setting, chosen here on validation like the rule. Rerank ranks the union of the beams' buckets,
    so its width and the others' are the same number here."""
    config, corpus, retriever = _trained(run_dir)
    table: dict[str, dict[str, float]] = {}
    for width in widths:
        for rule in RULES:
            retriever.search_config = config.search.model_copy(
                update={"rule": rule, "beam_size": width, "rerank_beam_size": width})
            with torch.no_grad():
                report = validation_report(retriever, corpus, "valid", config.train.eval_examples,
                                           generative=True, diagnostics=False)
            table.setdefault(rule, {})[str(width)] = report["generative"][metric]
            table.setdefault("dense", {})[str(width)] = report["dense"][metric]
    return {"run": str(run_dir), "metric": metric, "split": "valid", "examples": config.train.eval_examples,
            "by_rule_and_width": table}


def search_settings(run_dir: Path, settings: list[list[str]], metric: str = "ndcg@10") -> dict:
    """Validation `metric` and least-popular-bucket HR@10 of every rule, and beam recall per SID level, for
    each search setting (a list of `search.key=value` overrides) on the run's selected model. Each batch's
    context is encoded once for every setting: only the search changes."""
    config, corpus, retriever = _trained(run_dir)
    n, k = split_size(corpus, "valid", config.train.eval_examples), max(DEFAULT_KS)
    split = corpus.splits["valid"]
    with torch.no_grad():
        contexts = [(rows, retriever.context(history, queries, has_query))
                    for rows, history, queries, has_query in batches(corpus, "valid", n, config.search.batch_size)]
    relevant, buckets = relevance(split, n), popularity_buckets(corpus.popularity)
    tail = buckets.names[-1]
    results = []
    for overrides in settings:
        search = pipeline.searched_with(config, overrides).search
        retriever.search_config = search
        ranked = {rule: np.full((n, k), -1, dtype=np.int64) for rule in RULES}
        recall = np.zeros((n, retriever.index.depth), dtype=bool)
        with torch.no_grad():
            for rows, context in contexts:
                beams, wide = retriever.beams(context, search.beam_size), retriever.beams(context, search.rerank_beam_size)
                for rule, rule_beams in (("lexicographic", beams), ("fused", beams), ("rerank", wide)):
                    items = retriever.rank(context, rule_beams, k, rule).items.numpy()
                    ranked[rule][rows, : items.shape[1]] = items
                targets = retriever.index.codes[torch.from_numpy(split.targets[rows])].long()
                recall[rows] = prefix_recall(beams, targets).numpy()
        row = {"overrides": overrides, "beam_recall": [round(float(v), 4) for v in recall.mean(0)]}
        for rule, ranking in ranked.items():
            per_query = per_query_metrics(ranking, relevant)
            row[rule] = {metric: mean_metrics(per_query)[metric],
                         f"{tail}_hit@10": bucketed_metrics(per_query, split.targets[:n], buckets)[tail]["hit@10"]}
        results.append(row)
        print(json.dumps(row), flush=True)
    return {"run": str(run_dir), "metric": metric, "split": "valid", "examples": n, "by_setting": results}


LEVEL_SCORERS = ("decoder", "geometry", "dense")


def level_scores(retriever, context, target_codes: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Per SID level j, three scores [B, K_j] of each valid child of the target's true level-1..j prefix:
    the decoder's teacher-forced logits; the codeword geometry, cos(context, prefix codewords + child's
    codeword) (what a decoder that re-quantises the context would say); and the dense path's view of
    the tree, the best cosine of an item under the child. Invalid children score -inf throughout."""
    model, codes = retriever.model, retriever.index.codes.long()
    logits = model.level_logits(context, model.quantizer.codewords(target_codes))
    cosines = context.vector @ retriever.item_vectors.to(context.vector.dtype).T  # [B, N]
    prefix_sum = torch.zeros_like(context.vector)
    out = []
    for j, codebook in enumerate(model.quantizer.codebooks):
        under = (codes[None, :, :j] == target_codes[:, None, :j]).all(-1)  # [B, N] items under the prefix
        dense = torch.full((len(cosines), len(codebook)), float("-inf")).scatter_reduce(
            1, codes[:, j].expand_as(cosines), cosines.masked_fill(~under, float("-inf")), "amax")
        geometry = torch.nn.functional.normalize(prefix_sum[:, None] + codebook[None], dim=-1) @ context.vector[..., None]
        valid = dense > float("-inf")
        out.append({"decoder": logits[j].masked_fill(~valid, float("-inf")),
                    "geometry": geometry[..., 0].masked_fill(~valid, float("-inf")), "dense": dense})
        prefix_sum = prefix_sum + codebook[target_codes[:, j]]
    return out


def level_recall(run_dir: Path, ks: tuple[int, ...] = (1, 5, 20)) -> dict:
    """Conditional recall@k per SID level, scorer and popularity bucket on validation: whether the
    target's level-j code is among the k best-scored valid children of its true prefix."""
    config, corpus, retriever = _trained(run_dir)
    n = split_size(corpus, "valid", config.train.eval_examples)
    buckets = popularity_buckets(corpus.popularity)
    depth = retriever.index.depth
    hits = {(scorer, k): np.zeros((n, depth), dtype=bool) for scorer in LEVEL_SCORERS for k in ks}
    for rows, history, queries, has_query in batches(corpus, "valid", n, config.search.batch_size):
        with torch.no_grad():
            context = retriever.context(history, queries, has_query)
            targets = retriever.index.codes[torch.from_numpy(corpus.splits["valid"].targets[rows])].long()
            for j, scores in enumerate(level_scores(retriever, context, targets)):
                for scorer, score in scores.items():
                    target = score.gather(1, targets[:, j : j + 1])
                    rank = (score > target).sum(1)  # ties counted in the target's favour
                    for k in ks:
                        hits[scorer, k][rows, j] = (rank < k).numpy()
    bucket = buckets.bucket_of_item[corpus.splits["valid"].targets[:n]]
    groups = {"overall": np.ones(n, dtype=bool)} | {name: bucket == b for b, name in enumerate(buckets.names)}
    table = {scorer: {f"recall@{k}": {group: [round(float(v), 4) for v in hits[scorer, k][mask].mean(0)]
                                      for group, mask in groups.items()} for k in ks} for scorer in LEVEL_SCORERS}
    return {"run": str(run_dir), "split": "valid", "examples": n, "by_scorer": table}


def _levels(values: list[float] | None) -> str:
    return " / ".join(f"{v:.3f}" for v in values) if values else "—"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    variant = commands.add_parser("variant")
    variant.add_argument("--base", type=Path, required=True)
    variant.add_argument("--out", type=Path, required=True)
    variant.add_argument("--set", dest="overrides", action="append", default=[])
    table = commands.add_parser("table")
    table.add_argument("runs", type=Path, nargs="+")
    table.add_argument("--out", type=Path, required=True)
    table.add_argument("--metric", default="ndcg@10")
    beams = commands.add_parser("beams")
    beams.add_argument("run", type=Path)
    beams.add_argument("--widths", default="20,50,100")
    beams.add_argument("--out", type=Path, required=True)
    search = commands.add_parser("search")
    search.add_argument("run", type=Path)
    search.add_argument("--try", dest="settings", action="append", required=True,
                        help="one setting: whitespace-separated search.key=value overrides (repeatable)")
    search.add_argument("--out", type=Path, required=True)
    levels = commands.add_parser("levels")
    levels.add_argument("run", type=Path)
    levels.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "variant":
        run_variant(args.base, args.out, args.overrides)
    elif args.command in ("beams", "levels", "search"):
        if args.command == "levels":
            result = level_recall(args.run)
        elif args.command == "search":
            result = search_settings(args.run, [setting.split() for setting in args.settings])
        else:
            result = beam_widths(args.run, [int(w) for w in args.widths.split(",")])
        write_json(args.out, {"command": " ".join(["python", *map(shlex.quote, sys.argv)]), "git_commit": git_commit(),
                              "machine": machine(), **result})
        print(json.dumps({key: value for key, value in result.items() if key.startswith("by_")}, indent=2))
    else:
        write_table(args.runs, args.out, args.metric, " ".join(["python", *map(shlex.quote, sys.argv)]))


if __name__ == "__main__":
    main()
