"""`dgi benchmark`: every model of a benchmark config on one dataset, same splits and budgets, N seeds.

Layout of the output directory (resumable: a finished (model, seed) is never redone, an interrupted
DGI run continues from its last checkpoint):

    DIR/bench.yaml                          the resolved benchmark config
    DIR/models/<slug>/seed-<s>/result.json  metrics of one model and seed
    DIR/models/<slug>/seed-<s>/hubness.npz  k-occurrence, popularity, item-vector norms
    DIR/models/<slug>/seed-<s>/grad_norms.npz  item-tower gradient norm per step (trained towers)
    DIR/models/<slug>/seed-<s>/model/       the fitted method, saved (`dgi.methods.registry.load_method`)
    DIR/models/<slug>/seed-<s>/run/         the DGI / dual-encoder run directory
    DIR/results.json, report.md, figures/   written at the end (see dgi.report)

A DGI-family model ranks the benchmark split with the rule (lexicographic / fused / rerank) that scores
best by `train.select_metric` on its first `train.eval_examples` validation examples, per seed.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from tqdm.auto import tqdm

from dgi import pipeline
from dgi.config import Config, ConfigError, load_config
from dgi.data.corpus import EncodedCorpus
from dgi.device import set_threads
from dgi.evaluation.evaluate import relevance
from dgi.io import CorruptFileError, save_npz, write_json, write_text
from dgi.methods.base import Method
from dgi.methods.dgi_method import DGIMethod
from dgi.methods.registry import BASELINES
from dgi.evaluation.metrics import DEFAULT_KS, bucketed_metrics, mean_metrics, per_query_metrics, popularity_buckets
from dgi.provenance import git_commit, machine
from dgi.results import BenchmarkResults, DatasetInfo, ModelSummary, RunFiles, SeedResult, field_path

Kind = Literal["dgi", "dual_encoder", "sasrec", "tiger", "popularity", "content", "bm25", "dense_zero_shot"]
FAMILY = {"dgi": "generative", "tiger": "generative", "dual_encoder": "dense", "dense_zero_shot": "dense",
          "sasrec": "sequential", "bm25": "sparse", "content": "heuristic", "popularity": "heuristic"}
TRAINED = {"dgi", "dual_encoder", "sasrec", "tiger"}
HUBNESS_K = 10


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Kind
    overrides: list[str] = Field(default_factory=list, description="dgi / dual_encoder: config overrides")
    params: dict[str, Any] = Field(default_factory=dict, description="other kinds: constructor arguments")
    seeds: int | None = Field(None, ge=1, description="trained kinds: run the first N of the benchmark's seeds")

    @model_validator(mode="after")
    def _seeds_only_for_trained(self) -> ModelSpec:
        if self.seeds is not None and self.kind not in TRAINED:
            raise ValueError(f"{self.name}: `seeds` is for trained models; a {self.kind} model runs once")
        return self

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")

    @property
    def recipe(self) -> dict:
        """What a result was computed with: a finished result is reused only while this stays the same."""
        return {"kind": self.kind, "overrides": self.overrides, "params": self.params}


class BenchConfig(BaseModel):
    """What to compare: the dataset, the DGI base config every DGI-family model starts from, the seeds."""

    model_config = ConfigDict(extra="forbid")

    name: str
    data: Path | None = None
    base: list[Path] = Field(default_factory=list, description="config files for dgi / dual_encoder models")
    overrides: list[str] = Field(default_factory=list, description="applied to every dgi / dual_encoder model")
    note: str = ""
    split: str = "test"
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    device: str = "cpu"
    threads: int | None = None
    models: list[ModelSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_slugs(self) -> BenchConfig:
        slugs = [model.slug for model in self.models]
        duplicates = sorted({slug for slug in slugs if slugs.count(slug) > 1})
        if duplicates:
            raise ValueError(f"model names must differ after slugging: {', '.join(duplicates)}")
        return self


def load_bench_config(path: Path, data: Path | None = None, seeds: list[int] | None = None,
                      device: str | None = None, models: str | None = None) -> BenchConfig:
    """Read a benchmark YAML; relative `base` paths resolve against the current directory or the file's.

    `models` (comma-separated names or slugs) keeps a subset, e.g. to spread one benchmark over processes.
    """
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        config = BenchConfig.model_validate(raw)
    except (OSError, yaml.YAMLError, ValueError) as error:
        raise ConfigError(f"{path}: {error}") from error
    base = [file if file.exists() else Path(path).parent / file for file in config.base]
    update: dict[str, Any] = {"base": base}
    for key, value in (("data", data), ("seeds", seeds), ("device", device)):
        if value is not None:
            update[key] = value
    if models is not None:
        update["models"] = select_models(config.models, models, path)
    config = config.model_copy(update=update)
    if config.data is None:
        raise ConfigError(f"{path}: no dataset: set `data:` or pass --data")
    return config


def run_benchmark(bench: BenchConfig, out: Path, progress: bool = True, command: str | None = None,
                  report_only: bool = False) -> BenchmarkResults:
    """Run every (model, seed) not finished yet, then write results.json and the report.

    `report_only` trains nothing: it reports the finished (model, seed) results and lists the rest as
    pending, so a benchmark that takes days can be looked at (and committed) while it runs.
    """
    started = time.perf_counter()
    out = Path(out)
    recorded_config = yaml.safe_dump(json.loads(bench.model_dump_json()), sort_keys=False)
    if not report_only:
        write_text(out / "bench.yaml", recorded_config)
    if bench.threads:
        set_threads(bench.threads)
    corpus = pipeline.prepare_corpus(dgi_config(bench, bench.models[0], bench.seeds[0]))
    jobs = [] if report_only else [(spec, seed) for spec in bench.models for seed in seeds_of(bench, spec)]
    bar = tqdm(jobs, desc="benchmark", unit="model-seed", disable=not progress)
    for spec, seed in bar:
        bar.set_postfix_str(f"{spec.name} seed {seed}")
        seed_dir = seed_directory(out, spec, seed)
        if finished_result(spec, seed_dir) is None:
            write_json(seed_dir / "result.json", run_one(bench, spec, seed, corpus, seed_dir, progress).model_dump(mode="json"))
    results = collect(bench, out, corpus, time.perf_counter() - started, command or " ".join(sys.argv))
    write_text(out / "bench.yaml", recorded_config)  # what the report describes, also after --report-only
    write_json(out / "results.json", results.model_dump(mode="json"))
    from dgi.report import write_report

    write_report(out, html=True)
    return results


def seed_directory(out: Path, spec: ModelSpec, seed: int) -> Path:
    return out / "models" / spec.slug / f"seed-{seed}"


def finished_result(spec: ModelSpec, seed_dir: Path) -> SeedResult | None:
    """The saved result of this (model, seed), None if it has not finished.

    A result computed with another recipe (kind, overrides, params) than the config's is an error,
    not silently reused: the config changed since, and only deleting the directory reruns it.
    """
    result_file = seed_dir / "result.json"
    if not result_file.exists():
        return None
    try:
        result = SeedResult.model_validate_json(result_file.read_text(encoding="utf-8"))
    except ValidationError as error:
        first = error.errors()[0]
        raise CorruptFileError(result_file, f"field '{field_path(first['loc'])}': {first['msg']}",
                               f"delete {seed_dir} to rerun it") from None
    if result.spec != spec.recipe:
        raise ConfigError(f"{result_file}: computed as {result.spec}, but the config now asks for "
                          f"{spec.recipe}; delete {seed_dir} to rerun it")
    return result


def select_models(specs: list[ModelSpec], selection: str, path: Path) -> list[ModelSpec]:
    """The specs named in a comma-separated `selection`, in config order.

    Names may contain commas themselves ("dual encoder (dot, no sampled negatives)"): pieces are joined
    until they spell a name or a slug.
    """
    by_key = {key: spec for spec in specs for key in (spec.name, spec.slug)}
    chosen, pending = set(), ""
    for piece in selection.split(","):
        pending = f"{pending},{piece}" if pending else piece
        spec = by_key.get(pending.strip())
        if spec is not None:
            chosen.add(spec.slug)
            pending = ""
    if pending.strip() or not chosen:
        raise ConfigError(f"{path}: no model named {pending.strip()!r}; "
                          f"models: {', '.join(spec.slug for spec in specs)}")
    return [spec for spec in specs if spec.slug in chosen]


def seeds_of(bench: BenchConfig, spec: ModelSpec) -> list[int]:
    """Deterministic baselines need one run; trained models get every seed, or the first `spec.seeds`."""
    return bench.seeds[:spec.seeds] if spec.kind in TRAINED else bench.seeds[:1]


def dgi_config(bench: BenchConfig, spec: ModelSpec, seed: int) -> Config:
    """Base files -> bench overrides -> (dual encoder: the same epoch budget, dense only) -> model overrides.

    The dual encoder's budget is every epoch DGI trains: dense + joint + decoder-only epochs."""
    common = [f"data.path={bench.data}", f"train.seed={seed}", f"train.device={bench.device}", *bench.overrides]
    if bench.threads:
        common.append(f"train.threads={bench.threads}")
    if spec.kind == "dual_encoder":
        t = load_config(bench.base, common).train
        common += [f"train.dense_epochs={t.dense_epochs + t.joint_epochs + t.decoder_epochs}", "train.joint_epochs=0",
                   "train.decoder_epochs=0"]
    return load_config(bench.base, [*common, *spec.overrides] if spec.kind in ("dgi", "dual_encoder") else common)


def run_one(bench: BenchConfig, spec: ModelSpec, seed: int, corpus: EncodedCorpus, seed_dir: Path,
            progress: bool) -> SeedResult:
    """Fit (or resume) one model with one seed, rank the benchmark split, save it, its metrics and hubness data.

    Every kind goes through the same `Method` calls: fit, rank, details, save.
    """
    started = time.perf_counter()
    method = make_method(bench, spec, seed, seed_dir, progress)
    fit_started = time.perf_counter()
    method.fit(corpus)
    fit_seconds = time.perf_counter() - fit_started
    query_started = time.perf_counter()
    ranked, _ = method.rank(corpus, bench.split, max(DEFAULT_KS))
    query_seconds = time.perf_counter() - query_started
    details = method.details(corpus, bench.split)
    method.save(seed_dir / "model")
    arrays = corpus.splits[bench.split]
    per_query = per_query_metrics(ranked, relevance(arrays))
    k_occurrence = np.bincount(ranked[:, :HUBNESS_K][ranked[:, :HUBNESS_K] >= 0], minlength=len(corpus.item_ids))
    hubness = {"k_occurrence": k_occurrence, "popularity": corpus.popularity}
    if details.item_norms is not None:
        hubness["item_norms"] = np.asarray(details.item_norms, dtype=np.float32)
    save_npz(seed_dir / "hubness.npz", hubness)
    files = RunFiles(hubness="hubness.npz", grad_norms=None)
    if details.grad_norms is not None:
        norms = details.grad_norms
        trained = norms > 0  # a frozen quantizer's fitting phase leaves the item tower untouched
        save_npz(seed_dir / "grad_norms.npz", {"step": np.arange(1, len(norms) + 1)[trained], "item_tower": norms[trained]})
        files.grad_norms = "grad_norms.npz"
    train_seconds = details.train_seconds if details.train_seconds is not None else \
        (fit_seconds if spec.kind in TRAINED else None)
    query_ms = details.query_ms if details.query_ms is not None else 1000 * query_seconds / max(len(ranked), 1)
    return SeedResult(
        seed=seed, spec=spec.recipe, overall=mean_metrics(per_query),
        buckets=bucketed_metrics(per_query, arrays.targets, popularity_buckets(corpus.popularity)),
        train_seconds=train_seconds, query_ms=query_ms, index=details.index, invalid_sid_rate=details.invalid_sid_rate,
        k_occurrence_skewness=skewness(k_occurrence), files=files, method=details.ranked_with,
        valid_rule_scores=details.valid_rule_scores, rules=details.rules, rule_buckets=details.rule_buckets,
        wall_seconds=time.perf_counter() - started,
        machine=machine(bench.device), git_commit=git_commit())  # a resumed benchmark can span commits


def make_method(bench: BenchConfig, spec: ModelSpec, seed: int, seed_dir: Path, progress: bool) -> Method:
    """The (not yet fitted) method a spec names: DGI-family kinds train a run in `seed_dir/run`; the
    other kinds are built from their params, plus a seed and device if they train."""
    if spec.kind in ("dgi", "dual_encoder"):
        return DGIMethod(dgi_config(bench, spec, seed), seed_dir / "run", bench.device, progress)
    params = dict(spec.params)
    if spec.kind in ("sasrec", "tiger"):
        params.update(seed=seed, device=bench.device, progress=progress)
    return BASELINES[spec.kind](**params)


def skewness(values: np.ndarray) -> float:
    """Sample skewness of the k-occurrence distribution: large and positive = a few hubs everywhere."""
    values = np.asarray(values, dtype=np.float64)
    std = values.std()
    return float(((values - values.mean()) ** 3).mean() / std**3) if std > 0 else 0.0


def collect(bench: BenchConfig, out: Path, corpus: EncodedCorpus, wall_seconds: float,
            command: str) -> BenchmarkResults:
    """Aggregate the finished (model, seed) results; the missing ones are listed under "pending"."""
    dataset = corpus.dataset
    models, pending = [], []
    for spec in bench.models:
        per_seed = []
        for seed in seeds_of(bench, spec):
            result = finished_result(spec, seed_directory(out, spec, seed))
            if result is None:
                pending.append({"model": spec.name, "seed": seed})
                continue
            prefix = f"models/{spec.slug}/seed-{seed}/"
            result.files = RunFiles(**{name: prefix + path if path else None
                                       for name, path in result.files.model_dump().items()})
            per_seed.append(result)
        if not per_seed:
            continue
        models.append(ModelSummary(name=spec.name, slug=spec.slug, kind=spec.kind, spec=spec.recipe,
                                   family=FAMILY[spec.kind], geometry=_geometry(bench, spec),
                                   seeds=[r.seed for r in per_seed], per_seed=per_seed, **_aggregate(per_seed)))
    if not models:
        raise FileNotFoundError(f"{out}: no finished (model, seed) result to report yet")
    return BenchmarkResults(
        dataset=DatasetInfo(name=dataset.name, path=str(bench.data), items=len(dataset.items), note=bench.note,
                            **{f"{split}_examples": len(rows) for split, rows in dataset.splits.items()}),
        split=bench.split, ks=list(DEFAULT_KS), bucket_edges=popularity_buckets(corpus.popularity).edges,
        command=command, git_commit=git_commit(), machine=machine(bench.device), wall_seconds=wall_seconds,
        models=models, pending=pending)


def _aggregate(per_seed: list[SeedResult]) -> dict:
    metrics = per_seed[0].overall.keys()
    stack = {m: np.array([r.overall[m] for r in per_seed]) for m in metrics}
    buckets = {b: {m: float(np.mean([r.buckets[b][m] for r in per_seed])) for m in per_seed[0].buckets[b]}
               for b in per_seed[0].buckets}
    return {"mean": {m: float(v.mean()) for m, v in stack.items()},
            "std": {m: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for m, v in stack.items()},
            "buckets_mean": buckets}


def _geometry(bench: BenchConfig, spec: ModelSpec) -> str | None:
    if spec.kind in ("dgi", "dual_encoder"):
        config = dgi_config(bench, spec, bench.seeds[0])
        return config.model.geometry if spec.kind == "dual_encoder" else config.quantizer.logits
    return {"sasrec": "dot", "tiger": "dot", "content": "cosine", "dense_zero_shot": "cosine"}.get(spec.kind)
