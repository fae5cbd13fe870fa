"""The benchmark's result records: what `dgi benchmark` writes (result.json per model and seed, results.json
for the whole benchmark) and what the report reads back, as one typed contract.

pydantic checks the types and the required fields on both sides; `load_results` names the file and the
dotted path of whatever is missing or wrong, and `load_npz` reads the per-run arrays a result points to.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from dgi import figures

BUCKET_METRIC = "hit@10"
Metrics = dict[str, float]


class Record(BaseModel):
    model_config = ConfigDict(extra="ignore")  # older files may carry keys this version no longer writes


class Collisions(Record):
    n_items: int
    n_sids: int
    largest_bucket: int
    unique_share: float
    collision_rate: float
    mean_bucket_size: float


class CodeUsage(Record):
    level: int
    codebook_size: int
    used: float
    perplexity: float


class IndexHealth(Record):
    collisions: Collisions
    code_usage: list[CodeUsage]


class RunFiles(Record):
    hubness: str | None      # paths relative to the benchmark directory (in results.json) or the seed's
    grad_norms: str | None


class Machine(Record):
    model_config = ConfigDict(extra="allow")
    platform: str
    cpus: int
    device: str


class SeedResult(Record):
    """One model trained (or built) with one seed and scored on the benchmark split."""

    seed: int
    spec: dict[str, Any] | None = None    # the recipe it was computed with (kind, overrides, params)
    overall: Metrics
    buckets: dict[str, Metrics]
    train_seconds: float | None
    query_ms: float
    index: IndexHealth | None = None
    invalid_sid_rate: float | None = None
    k_occurrence_skewness: float
    files: RunFiles
    method: str | None = None           # generative: "generative/<rule>", the rule chosen on validation
    valid_rule_scores: Metrics | None = None
    rules: dict[str, Metrics] | None = None          # DGI family: every ranking method's metrics
    rule_buckets: dict[str, Metrics] | None = None   # ... and their hit@10 per bucket
    wall_seconds: float | None = None
    machine: Machine | None = None
    git_commit: str | None = None


class ModelSummary(Record):
    """Every seed of one model, with the mean and standard deviation over seeds."""

    name: str
    slug: str
    kind: str | None = None
    spec: dict[str, Any] | None = None
    family: str
    geometry: str | None
    seeds: list[int]
    per_seed: list[SeedResult] = Field(min_length=1)
    mean: Metrics
    std: Metrics = Field(default_factory=dict)
    buckets_mean: dict[str, Metrics]
    _colour: str = PrivateAttr("")

    @property
    def colour(self) -> str:
        """The model's colour in every figure of the report (set by `load_results`)."""
        return self._colour


class DatasetInfo(Record):
    name: str
    items: int
    train_examples: int
    valid_examples: int
    test_examples: int
    path: str | None = None
    note: str | None = None


class BucketEdge(Record):
    name: str
    n_items: int
    share_of_interactions: float
    min_popularity: int | None
    max_popularity: int | None


class BenchmarkResults(Record):
    dataset: DatasetInfo
    split: str
    ks: list[int] = Field(min_length=1)
    bucket_edges: list[BucketEdge]
    command: str
    git_commit: str
    machine: Machine
    wall_seconds: float
    models: list[ModelSummary] = Field(min_length=1)
    pending: list[dict[str, Any]] = Field(default_factory=list)  # (model, seed) runs not finished yet
    _path: Path = PrivateAttr(Path("."))

    @property
    def path(self) -> Path:
        """The benchmark directory the results were read from (per-run files are relative to it)."""
        return self._path

    @property
    def table_metrics(self) -> list[tuple[str, str]]:
        """(key, column header) of the main table: hit@k for every k, ndcg@k for k > 1, mrr."""
        columns = [(f"hit@{k}", f"H@{k}") for k in self.ks]
        columns += [(f"ndcg@{k}", f"N@{k}") for k in self.ks if k > 1]
        return columns + [("mrr", "MRR")]


def field_path(location: tuple[int | str, ...]) -> str:
    """('models', 1, 'per_seed', 0, 'query_ms') -> 'models[1].per_seed[0].query_ms'."""
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def load_results(bench_dir: str | Path) -> BenchmarkResults:
    """Read and check ``results.json``; ``ValueError`` names the file and the offending field."""
    bench_dir = Path(bench_dir)
    file = bench_dir / "results.json"
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{file}: not found (is {bench_dir} a benchmark directory?)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{file}: not valid JSON ({exc})") from None
    try:
        results = BenchmarkResults.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        raise ValueError(f"{file}: field '{field_path(first['loc'])}': {first['msg']}") from None
    _check_complete(results, file)
    results._path = bench_dir
    for index, model in enumerate(results.models):
        model._colour = figures.colour(index)
    return results


def _check_complete(results: BenchmarkResults, file: Path) -> None:
    """What the types cannot say: every table metric, every bucket, and a std wherever seeds are several."""
    if any(k < 1 for k in results.ks):
        raise ValueError(f"{file}: field 'ks' must list integers >= 1")
    required = [key for key, _ in results.table_metrics]
    buckets = [edge.name for edge in results.bucket_edges]
    for m, model in enumerate(results.models):
        where = f"models[{m}]"
        tables = [("mean", model.mean)] + ([("std", model.std)] if len(model.per_seed) > 1 else [])
        for name, table in tables:
            for metric in required:
                if metric not in table:
                    raise ValueError(f"{file}: missing field '{where}.{name}.{metric}'")
        for bucket in buckets:
            if BUCKET_METRIC not in model.buckets_mean.get(bucket, {}):
                raise ValueError(f"{file}: missing field '{where}.buckets_mean.{bucket}'")
            for s, run in enumerate(model.per_seed):
                if BUCKET_METRIC not in run.buckets.get(bucket, {}):
                    raise ValueError(f"{file}: missing field '{where}.per_seed[{s}].buckets.{bucket}'")


def load_npz(path: Path, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: np.asarray(data[name]) for name in data.files if name in required + optional}
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from None
    for name in required:
        if name not in arrays:
            raise ValueError(f"{path}: missing array '{name}'")
    sizes = {name: a.shape for name, a in arrays.items()}
    if any(a.ndim != 1 for a in arrays.values()) or len({a.size for a in arrays.values()}) > 1:
        raise ValueError(f"{path}: arrays must be 1-D and of equal length, got {sizes}")
    return arrays
