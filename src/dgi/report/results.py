"""The ``results.json`` contract: the dataclasses a benchmark directory is read into, and the checks.

`load_results` reads and validates ``results.json`` (``ValueError`` names the file
and the offending field); `load_npz` reads the per-run ``.npz`` arrays it points to.
Kept apart from the report so that the contract can be read, and changed, in one place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dgi import figures

BUCKET_METRIC = "hit@10"


@dataclass
class SeedRun:
    seed: int
    overall: dict[str, float]
    buckets: dict[str, dict[str, float]]
    train_seconds: float | None
    query_ms: float
    index: dict | None
    invalid_sid_rate: float | None
    skewness: float
    hubness_file: str | None
    grad_norms_file: str | None
    method: str | None = None  # generative models: "generative/<rule>", the rule chosen on validation
    rules: dict[str, dict[str, float]] | None = None  # DGI family: test metrics of every ranking method
    rule_buckets: dict[str, dict[str, float]] | None = None  # ... and their HitRate@10 per bucket


@dataclass
class ModelResult:
    name: str
    slug: str
    family: str
    geometry: str | None
    seeds: list[int]
    runs: list[SeedRun]
    mean: dict[str, float]
    std: dict[str, float]
    buckets_mean: dict[str, dict[str, float]]
    colour: str = ""


@dataclass
class Bench:
    path: Path
    dataset: dict
    split: str
    ks: list[int]
    bucket_edges: list[dict]
    command: str
    git_commit: str
    machine: dict
    wall_seconds: float
    models: list[ModelResult]
    pending: list[dict] = field(default_factory=list)  # (model, seed) runs not finished yet

    @property
    def table_metrics(self) -> list[tuple[str, str]]:
        """(key, column header) of the main table: hit@k for every k, ndcg@k for k > 1, mrr."""
        columns = [(f"hit@{k}", f"H@{k}") for k in self.ks]
        columns += [(f"ndcg@{k}", f"N@{k}") for k in self.ks if k > 1]
        return columns + [("mrr", "MRR")]


_KINDS: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "list": (list,), "object": (dict,),
}


class _Reader:
    """Typed field access that names the file and the dotted path of whatever is missing or wrong."""

    def __init__(self, file: Path):
        self.file = file

    def error(self, message: str) -> ValueError:
        return ValueError(f"{self.file}: {message}")

    def get(self, obj: dict, key: str, where: str, kind: str, *, nullable: bool = False,
            optional: bool = False) -> Any:
        name = f"{where}.{key}" if where else key
        if key not in obj:
            if optional or nullable:
                return None
            raise self.error(f"missing field '{name}'")
        value = obj[key]
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, _KINDS[kind]):
            raise self.error(f"field '{name}' must be {'a' if kind != 'object' else 'an'} {kind}"
                             f"{' or null' if nullable else ''}, got {type(value).__name__}")
        if kind == "number":
            value = float(value)
        return value

    def metrics(self, obj: dict, key: str, where: str, required: list[str]) -> dict[str, float]:
        table = self.get(obj, key, where, "object")
        name = f"{where}.{key}" if where else key
        for metric in required:
            self.get(table, metric, name, "number")
        return {m: float(v) for m, v in table.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}

    def record(self, value: Any, where: str, fields: dict[str, str]) -> None:
        """Check that `value` is an object with these typed fields ("integer?" = integer or null)."""
        if not isinstance(value, dict):
            raise self.error(f"field '{where}' must be an object")
        for key, kind in fields.items():
            self.get(value, key, where, kind.rstrip("?"), nullable=kind.endswith("?"))


def load_results(bench_dir: Path) -> Bench:
    """Read and check ``results.json``; ``ValueError`` names the file and the offending field."""
    bench_dir = Path(bench_dir)
    file = bench_dir / "results.json"
    reader = _Reader(file)
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{file}: not found (is {bench_dir} a benchmark directory?)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise reader.error("top level must be a JSON object")
    get = reader.get

    dataset = get(raw, "dataset", "", "object")
    get(dataset, "name", "dataset", "string")
    for key in ("items", "train_examples", "valid_examples", "test_examples"):
        get(dataset, key, "dataset", "integer")
    get(dataset, "note", "dataset", "string", optional=True, nullable=True)
    ks = get(raw, "ks", "", "list")
    if not ks or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in ks):
        raise reader.error("field 'ks' must be a non-empty list of integers >= 1")
    edges = get(raw, "bucket_edges", "", "list")
    for b, edge in enumerate(edges):
        reader.record(edge, f"bucket_edges[{b}]", {"name": "string", "n_items": "integer", "share_of_interactions":
                                                   "number", "min_popularity": "integer?", "max_popularity": "integer?"})
    machine = get(raw, "machine", "", "object")
    get(machine, "platform", "machine", "string")
    get(machine, "cpus", "machine", "integer")
    get(machine, "device", "machine", "string")
    bench = Bench(
        path=bench_dir, dataset=dataset, split=get(raw, "split", "", "string"), ks=list(ks), bucket_edges=edges,
        command=get(raw, "command", "", "string"), git_commit=get(raw, "git_commit", "", "string"),
        machine=machine, wall_seconds=get(raw, "wall_seconds", "", "number"), models=[],
        pending=get(raw, "pending", "", "list", optional=True) or [],
    )
    bucket_names = [edge["name"] for edge in edges]
    required = [key for key, _ in bench.table_metrics]
    models = get(raw, "models", "", "list")
    if not models:
        raise reader.error("field 'models' must list at least one model")
    for m, model in enumerate(models):
        where = f"models[{m}]"
        if not isinstance(model, dict):
            raise reader.error(f"field '{where}' must be an object")
        seeds = get(model, "seeds", where, "list")
        per_seed = get(model, "per_seed", where, "list")
        if not per_seed:
            raise reader.error(f"field '{where}.per_seed' must list at least one seed")
        runs = [_read_run(reader, run, f"{where}.per_seed[{s}]", bucket_names)
                for s, run in enumerate(per_seed)]
        buckets_mean_raw = get(model, "buckets_mean", where, "object")
        buckets_mean = {name: reader.metrics(buckets_mean_raw, name, f"{where}.buckets_mean", [BUCKET_METRIC])
                        for name in bucket_names}
        several = len(runs) > 1
        bench.models.append(ModelResult(
            name=get(model, "name", where, "string"), slug=get(model, "slug", where, "string"),
            family=get(model, "family", where, "string"),
            geometry=get(model, "geometry", where, "string", nullable=True),
            seeds=[int(s) for s in seeds], runs=runs,
            mean=reader.metrics(model, "mean", where, required),
            std=reader.metrics(model, "std", where, required) if several else
            (reader.metrics(model, "std", where, []) if "std" in model else {}),
            buckets_mean=buckets_mean, colour=figures.colour(m),
        ))
    return bench


def _read_run(reader: _Reader, run: Any, where: str, bucket_names: list[str]) -> SeedRun:
    if not isinstance(run, dict):
        raise reader.error(f"field '{where}' must be an object")
    get = reader.get
    buckets = get(run, "buckets", where, "object")
    files = get(run, "files", where, "object")
    index = get(run, "index", where, "object", nullable=True)
    if index is not None:
        collisions = get(index, "collisions", f"{where}.index", "object")
        for key in ("n_items", "n_sids", "largest_bucket"):
            get(collisions, key, f"{where}.index.collisions", "integer")
        for key in ("unique_share", "collision_rate", "mean_bucket_size"):
            get(collisions, key, f"{where}.index.collisions", "number")
        for lv, level in enumerate(get(index, "code_usage", f"{where}.index", "list")):
            reader.record(level, f"{where}.index.code_usage[{lv}]",
                          {"level": "integer", "codebook_size": "integer", "used": "number", "perplexity": "number"})
    return SeedRun(
        seed=get(run, "seed", where, "integer"),
        overall=reader.metrics(run, "overall", where, []),
        buckets={name: reader.metrics(buckets, name, f"{where}.buckets", [BUCKET_METRIC]) for name in bucket_names},
        train_seconds=get(run, "train_seconds", where, "number", nullable=True),
        query_ms=get(run, "query_ms", where, "number"),
        index=index,
        invalid_sid_rate=get(run, "invalid_sid_rate", where, "number", nullable=True),
        skewness=get(run, "k_occurrence_skewness", where, "number"),
        hubness_file=get(files, "hubness", f"{where}.files", "string", nullable=True),
        grad_norms_file=get(files, "grad_norms", f"{where}.files", "string", nullable=True),
        method=get(run, "method", where, "string", nullable=True),
        rules=get(run, "rules", where, "object", nullable=True),
        rule_buckets=get(run, "rule_buckets", where, "object", nullable=True),
    )


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
