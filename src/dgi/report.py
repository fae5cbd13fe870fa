"""Turn a benchmark directory into a human report: ``report.md``, ``figures/*.png``, ``report.html``.

The benchmark directory holds ``results.json`` (the contract is checked by
`load_results`, which raises ``ValueError`` naming the file and the field) and,
per model and seed, ``hubness.npz`` and optionally ``grad_norms.npz`` at the
paths that ``results.json`` gives relative to the directory.

The report is built once as a list of blocks (headings, tables, figures, notes)
and rendered twice, to Markdown (figures linked as files) and to one
self-contained HTML page (figures inlined as base64 PNG data URIs, CSS inline).
A section without data (no generative model, no gradient norms, ...) becomes a
one-line note. Every file is written atomically (temp file + rename).
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dgi import figures
from dgi.io import atomic_path, write_text

FIGURE_NAMES = {
    "table": "fig1-main-table.png",
    "buckets": "fig2-popularity-buckets.png",
    "hubness": "fig3-hubness.png",
    "index": "fig4-sid-index.png",
    "gradients": "fig5-item-tower-gradients.png",
}
BUCKET_METRIC = "hit@10"
HUBNESS_K = 10


# ---------------------------------------------------------------- the contract


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
        where = f"bucket_edges[{b}]"
        if not isinstance(edge, dict):
            raise reader.error(f"field '{where}' must be an object")
        get(edge, "name", where, "string")
        get(edge, "n_items", where, "integer")
        get(edge, "share_of_interactions", where, "number")
        get(edge, "min_popularity", where, "integer", nullable=True)
        get(edge, "max_popularity", where, "integer", nullable=True)
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
            name = f"{where}.index.code_usage[{lv}]"
            if not isinstance(level, dict):
                raise reader.error(f"field '{name}' must be an object")
            get(level, "level", name, "integer")
            get(level, "codebook_size", name, "integer")
            get(level, "used", name, "number")
            get(level, "perplexity", name, "number")
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


def _load_npz(path: Path, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
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


# ------------------------------------------------------------------ formatting


def fmt_metric(mean: float, std: float | None = None, digits: int = 4) -> str:
    """``0.6543 ± 0.0021``; the ± part is left out when there is no std (one seed)."""
    if not math.isfinite(mean):
        return "n/a"
    if std is None or not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def fmt_duration(seconds: float) -> str:
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min {secs:02d} s"
    return f"{minutes} min {secs:02d} s" if minutes else f"{seconds:.1f} s"


def _rules_text(model: ModelResult) -> str:
    """" · rerank" when every seed chose one ranking rule on validation, " · rerank ×2, fused ×1" otherwise."""
    chosen = [run.method.split("/", 1)[1] for run in model.runs if run.method and "/" in run.method]
    if not chosen:
        return ""
    counts = {rule: chosen.count(rule) for rule in dict.fromkeys(chosen)}
    return " · " + (chosen[0] if len(counts) == 1 else ", ".join(f"{rule} ×{n}" for rule, n in counts.items()))


def _metric_cell(mean: float, std: float | None, bold: bool, digits: int = 4) -> Cell:
    """A metric as a cell: the mean, and the ± std (if any) as its detail; reads as `fmt_metric`."""
    full = fmt_metric(mean, std, digits)
    text, _, detail = full.partition(" ")
    return Cell(text, bold, detail)


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None and math.isfinite(v)]
    return sum(present) / len(present) if present else None


def _best(values: list[float | None], lower: bool, display) -> list[bool]:
    """Which rows hold the best value of a column; rows that display the same text as the best tie."""
    present = [v for v in values if v is not None and math.isfinite(v)]
    if not present:
        return [False] * len(values)
    target = display(min(present) if lower else max(present))
    return [v is not None and math.isfinite(v) and display(v) == target for v in values]


# ------------------------------------------------------------ document blocks


@dataclass
class Cell:
    text: str
    bold: bool = False
    detail: str = ""  # e.g. "± 0.0021": after the text in Markdown, on its own smaller line in HTML

    @property
    def full(self) -> str:
        return f"{self.text} {self.detail}" if self.detail else self.text


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Cell]]
    numeric: list[bool]  # right-align these columns
    caption: str = ""


@dataclass
class FigureBlock:
    number: int
    filename: str
    caption: str
    png: bytes


@dataclass
class Doc:
    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def note(self, text: str) -> None:
        self.blocks.append(("note", text))

    def table(self, table: Table) -> None:
        self.blocks.append(("table", table))

    def figure(self, figure: FigureBlock) -> None:
        self.blocks.append(("figure", figure))

    def facts(self, rows: list[tuple[str, str, bool]]) -> None:
        """(label, value, value is code) pairs, e.g. the run's command and commit."""
        self.blocks.append(("facts", rows))

    @property
    def figures(self) -> list[FigureBlock]:
        return [b for kind, b in self.blocks if kind == "figure"]


# -------------------------------------------------------------- the sections


def _header(doc: Doc, bench: Bench) -> None:
    d = bench.dataset
    dataset = (f"{d['name']}: {d['items']:,} items; {d['train_examples']:,} train / {d['valid_examples']:,} valid / "
               f"{d['test_examples']:,} test examples")
    if d.get("note"):
        dataset += f" ({d['note']})"
    m = bench.machine
    doc.facts([
        ("Dataset", dataset, False),
        ("Split", bench.split, False),
        ("Command", bench.command, True),
        ("Commit", bench.git_commit, True),
        ("Machine", f"{m['platform']}; {m['cpus']} CPUs; device {m['device']}", False),
        ("Wall time", fmt_duration(bench.wall_seconds), False),
    ])
    if bench.pending:
        runs = ", ".join(f"{run.get('model')} seed {run.get('seed')}" for run in bench.pending)
        doc.note(f"Incomplete benchmark: {len(bench.pending)} (model, seed) runs not finished yet ({runs}). "
                 "Means cover the finished seeds only; rerun the command without --report-only to finish.")


def _main_table(doc: Doc, bench: Bench) -> None:
    doc.heading("1. Main results")
    metrics = bench.table_metrics
    models = bench.models
    train = [_mean([r.train_seconds for r in m.runs]) for m in models]
    query = [_mean([r.query_ms for r in m.runs]) for m in models]
    columns: list[list[float | None]] = [[m.mean.get(key) for m in models] for key, _ in metrics]
    best = [_best(col, lower=False, display=lambda v: f"{v:.4f}") for col in columns]
    best += [_best(train, lower=True, display=fmt_seconds), _best(query, lower=True, display=lambda v: f"{v:.2f}")]

    def std(model: ModelResult, key: str) -> float | None:
        return model.std.get(key) if len(model.runs) > 1 else None

    headers = ["Model", "Type"] + [h for _, h in metrics] + ["Train time", "Query ms"]
    rows = []
    for i, model in enumerate(models):
        kind = model.family + (f" · {model.geometry}" if model.geometry else "") + _rules_text(model)
        cells = [Cell(model.name), Cell(kind)]
        cells += [_metric_cell(model.mean[key], std(model, key), best[c][i]) for c, (key, _) in enumerate(metrics)]
        cells.append(Cell(fmt_seconds(train[i]), best[-2][i]))
        cells.append(Cell("—" if query[i] is None else f"{query[i]:.2f}", best[-1][i]))
        rows.append(cells)
    counts = sorted({len(m.runs) for m in models})
    seed_text = " or ".join(str(n) for n in counts) + (" seed" if counts == [1] else " seeds")
    caption = (f"{bench.split.capitalize()} split, mean ± std over {seed_text} (no ± for a model with one seed). "
               "H = HitRate, N = NDCG. Bold: best per column (highest metric, lowest time). "
               "DGI-family ranking rule (lexicographic / fused / rerank) chosen per seed on validation. "
               "Train time and query latency are means over seeds; query ms is per test context.")
    doc.table(Table(headers, rows, [False, False] + [True] * (len(headers) - 2), caption))

    # Figure 1: the same table as an image, std on a second line so the columns stay narrow.
    image_headers = ["Model"] + [h for _, h in metrics] + ["Train", "Query ms"]
    image_rows, image_bold = [], []
    for i, model in enumerate(models):
        row = [model.name]
        for key, _ in metrics:
            s = std(model, key)
            row.append(f"{model.mean[key]:.4f}" + ("" if s is None else f"\n± {s:.4f}"))
        row += [rows[i][-2].text, rows[i][-1].text]
        image_rows.append(row)
        image_bold.append([False] + [best[c][i] for c in range(len(best))])
    png = figures.table_png(
        f"{bench.dataset['name']} · {bench.split} split", image_headers, image_rows, image_bold,
        [m.colour for m in models], footnote="Mean ± std over seeds; bold = best per column (lowest for times).")
    doc.figure(FigureBlock(1, FIGURE_NAMES["table"], "Main results table (same numbers as above).", png))


def _items(n: int) -> str:
    return f"{n:,} item{'' if n == 1 else 's'}"


def _bucket_label(edge: dict) -> str:
    lo, hi = edge.get("min_popularity"), edge.get("max_popularity")
    if lo is None:
        span = "no items"
    elif lo == hi:
        span = f"pop {lo}"
    else:
        span = f"pop {lo}–{hi}"
    return f"{edge['name']}\n{_items(edge['n_items'])} · {span}\n{edge['share_of_interactions']:.1%} of interactions"


RULE_COLUMNS = (("generative/lexicographic", "lex"), ("generative/fused", "fused"),
                ("generative/rerank", "rerank"), ("dense", "dense"))


def _rules(doc: Doc, bench: Bench) -> None:
    """The DGI family under every ranking rule: the ablations compared on equal terms, whatever validation chose."""
    models = [m for m in bench.models if all(run.rules and "generative/lexicographic" in run.rules for run in m.runs)]
    if not models:
        return
    doc.para("The DGI-family models under every ranking rule (test, mean over seeds): lex = lexicographic, the "
             "paper's generative rule (beam order); fused adds the dense cosine to the beam score; rerank "
             "re-scores the items of a wider beam by the dense cosine; dense = the dense path, which scores "
             "every item without the index. The main table uses the rule each seed chose on validation.")
    headers = ["Model", "chosen"] + [f"{label} {metric}" for _, label in RULE_COLUMNS for metric in ("H@10", "N@10")]
    columns = [[float(np.mean([run.rules[method][key] for run in m.runs])) for m in models]
               for method, _ in RULE_COLUMNS for key in ("hit@10", "ndcg@10")]
    rows = _rows_with_best([[Cell(m.name), Cell(_rules_text(m).removeprefix(" · "))] for m in models], columns)
    doc.table(Table(headers, rows, [False, False] + [True] * len(columns),
                    "Every ranking rule, test split, mean over seeds. Bold: best per column."))
    tails = [name for name in ("B3", "B4") if any(e["name"] == name for e in bench.bucket_edges)]
    tailed = [m for m in models if all(run.rule_buckets for run in m.runs)]
    if tails and tailed:
        headers = ["Model"] + [f"{label} {tail}" for _, label in RULE_COLUMNS for tail in tails]
        columns = [[float(np.mean([run.rule_buckets[method][tail] for run in m.runs])) for m in tailed]
                   for method, _ in RULE_COLUMNS for tail in tails]
        rows = _rows_with_best([[Cell(m.name)] for m in tailed], columns)
        doc.table(Table(headers, rows, [False] + [True] * len(columns),
                        "HitRate@10 on the tail buckets under every ranking rule, mean over seeds."))


def _rows_with_best(leading: list[list[Cell]], columns: list[list[float]]) -> list[list[Cell]]:
    """Each row's leading cells, then one 4-digit cell per column with the column's best in bold."""
    best = [_best(col, lower=False, display=lambda v: f"{v:.4f}") for col in columns]
    return [cells + [Cell(f"{columns[c][i]:.4f}", best[c][i]) for c in range(len(columns))]
            for i, cells in enumerate(leading)]


def _buckets(doc: Doc, bench: Bench) -> None:
    doc.heading("2. HitRate@10 by item popularity")
    if not bench.bucket_edges:
        doc.note("Skipped: results.json has no popularity buckets (bucket_edges is empty).")
        return
    names = [edge["name"] for edge in bench.bucket_edges]
    series = []
    for model in bench.models:
        values = [model.buckets_mean[name][BUCKET_METRIC] for name in names]
        errors = None
        if len(model.runs) > 1:
            errors = [float(np.std([r.buckets[name][BUCKET_METRIC] for r in model.runs])) for name in names]
        series.append(figures.BarSeries(model.name, model.colour, values, errors))
    doc.para("Test contexts grouped by the popularity of their target item: B0 holds the few most popular items, "
             "B1-B3 each about a quarter of the remaining head interactions, B4 the items with 0-1 training "
             "interactions. Bars are means over seeds; whiskers are the std over seeds.")
    png = figures.bucket_bars_png([_bucket_label(e) for e in bench.bucket_edges], series, "HitRate@10",
                                  f"HitRate@10 per popularity bucket ({bench.split} split)")
    doc.figure(FigureBlock(2, FIGURE_NAMES["buckets"], "HitRate@10 per popularity bucket (mean over seeds).", png))
    headers = ["Model"] + [f"{e['name']} ({_items(e['n_items'])})" for e in bench.bucket_edges]
    columns = [[m.buckets_mean[name][BUCKET_METRIC] for m in bench.models] for name in names]
    rows = _rows_with_best([[Cell(m.name)] for m in bench.models], columns)
    doc.table(Table(headers, rows, [False] + [True] * len(names), "HitRate@10 per bucket, mean over seeds."))


def _hubness(doc: Doc, bench: Bench) -> None:
    doc.heading("3. Hubness")
    norms, occurrences, stats, missing = [], [], {}, []
    for model in bench.models:
        run = model.runs[0]
        if run.hubness_file is None:
            missing.append(model.name)
            continue
        path = bench.path / run.hubness_file
        if not path.is_file():
            missing.append(f"{model.name} ({run.hubness_file} not found)")
            continue
        arrays = _load_npz(path, ("k_occurrence", "popularity"), ("item_norms",))
        k_occ = arrays["k_occurrence"]
        label = f"{model.name} (skew {run.skewness:.2f})"
        occurrences.append(figures.OccurrenceSeries(label, model.colour, k_occ))
        if "item_norms" in arrays:
            geometry = {"dot": "dot product", "cosine": "cosine"}.get(model.geometry or "", "no geometry")
            marker = {"dot": "o", "cosine": "^"}.get(model.geometry or "", "s")
            norms.append(figures.NormSeries(f"{model.name} [{geometry}]", model.colour, marker,
                                            arrays["popularity"], arrays["item_norms"]))
        total = max(int(k_occ.sum()), 1)
        top = np.sort(k_occ)[::-1][: max(1, len(k_occ) // 100)]
        stats[model.name] = (float((k_occ == 0).mean()), int(k_occ.max(initial=0)), float(top.sum()) / total)

    doc.para(f"N{HUBNESS_K} of an item = the number of test contexts that have it in their top-{HUBNESS_K}. "
             "A hub is an item in far more top-10 lists than its relevance warrants; a large positive skewness "
             "of N10 means a few hubs crowd out the rest. Under dot-product scoring an item's vector norm can "
             "grow with its popularity and make it a hub; cosine scoring removes that lever.")
    if occurrences:
        png = figures.hubness_png(norms, occurrences, HUBNESS_K)
        ccdf = "CCDF of k-occurrence (first seed of each model; legend: skewness of that seed)."
        caption = f"(a) Item-vector norm vs training popularity, (b) {ccdf}" if norms else ccdf[0].upper() + ccdf[1:]
        doc.figure(FigureBlock(3, FIGURE_NAMES["hubness"], caption, png))
        if not norms:
            doc.note("Norm-vs-popularity panel skipped: no model provides item_norms (no model scores with "
                     "item vectors).")
    else:
        doc.note("Hubness figure skipped: no model has a hubness.npz file.")
    if missing:
        doc.note("No hubness distribution for: " + ", ".join(missing) + ".")

    rows = []
    for model in bench.models:
        values = [r.skewness for r in model.runs]
        mean, std = float(np.mean(values)), float(np.std(values)) if len(values) > 1 else None
        rows.append([Cell(model.name), _metric_cell(mean, std, False, digits=2)])
        zero, peak, top_share = stats.get(model.name, (None, None, None))
        rows[-1] += [Cell("—" if zero is None else f"{zero:.1%}"), Cell("—" if peak is None else f"{peak:,}"),
                     Cell("—" if top_share is None else f"{top_share:.1%}")]
    doc.table(Table(["Model", f"N{HUBNESS_K} skewness", f"items never in a top-{HUBNESS_K}",
                     f"max N{HUBNESS_K}", f"top-1% items' share of top-{HUBNESS_K} slots"], rows,
                    [False, True, True, True, True],
                    "Skewness: mean ± std over seeds. Other columns: first seed."))


def _index(doc: Doc, bench: Bench) -> None:
    doc.heading("4. Semantic-ID index health")
    indexed = [m for m in bench.models if m.runs[0].index is not None]
    if not indexed:
        doc.note("Skipped: no model has a Semantic-ID index (no generative model in this benchmark).")
        return
    series, rows = [], []
    for model in indexed:
        run = model.runs[0]
        usage = sorted(run.index["code_usage"], key=lambda level: level["level"])
        collisions = run.index["collisions"]
        series.append(figures.UsageSeries(
            model.name, model.colour, [u["level"] for u in usage], [u["used"] for u in usage],
            [u["perplexity"] / max(u["codebook_size"], 1) for u in usage], collisions["collision_rate"]))
        invalid = run.invalid_sid_rate
        rows.append([Cell(model.name), Cell(f"{collisions['n_items']:,}"), Cell(f"{collisions['n_sids']:,}"),
                     Cell(f"{collisions['unique_share']:.1%}"), Cell(f"{collisions['collision_rate']:.1%}"),
                     Cell(f"{collisions['largest_bucket']:,}"), Cell(f"{collisions['mean_bucket_size']:.2f}"),
                     Cell("—" if invalid is None else f"{invalid:.2%}")])
    doc.para("How the residual quantizer spends its codes (first seed of each model with an index): the share of "
             "each level's codebook that some item uses, the perplexity of the code distribution relative to the "
             "codebook size (1 = uniform use), and the share of items whose Semantic ID is shared with another item.")
    doc.figure(FigureBlock(4, FIGURE_NAMES["index"], "Code usage per quantizer level and SID collision rate.",
                           figures.index_png(series)))
    doc.table(Table(["Model", "items", "distinct SIDs", "unique share", "collision rate", "largest bucket",
                     "mean bucket size", "invalid SID rate"], rows,
                    [False] + [True] * 7,
                    "Invalid SID rate: share of unconstrained beams that name no existing item "
                    "(what constrained decoding prevents)."))


def _gradients(doc: Doc, bench: Bench) -> None:
    doc.heading("5. Item-tower gradient norms")
    series, missing = [], []
    for model in bench.models:
        run = model.runs[0]
        if run.grad_norms_file is None:
            continue
        path = bench.path / run.grad_norms_file
        if not path.is_file():
            missing.append(f"{model.name} ({run.grad_norms_file} not found)")
            continue
        arrays = _load_npz(path, ("step", "item_tower"))
        if arrays["step"].size == 0:
            missing.append(f"{model.name} (no steps recorded)")
            continue
        series.append(figures.CurveSeries(model.name, model.colour, arrays["step"], arrays["item_tower"]))
    if not series:
        doc.note("Skipped: no model recorded item-tower gradient norms."
                 + (" Unreadable: " + ", ".join(missing) + "." if missing else ""))
        return
    doc.para("L2 norm of the gradient on the item tower's parameters at each training step (first seed). "
             "With soft (Gumbel) teacher forcing the next-token loss reaches the item tower; a straight-through "
             "or frozen index passes little or none of it.")
    doc.figure(FigureBlock(5, FIGURE_NAMES["gradients"], "Item-tower gradient norm over training (log scale).",
                           figures.gradient_png(series)))
    if missing:
        doc.note("No gradient norms for: " + ", ".join(missing) + ".")


def build_report(bench: Bench) -> Doc:
    doc = Doc(f"Benchmark report: {bench.dataset['name']}")
    _header(doc, bench)
    for section in (_main_table, _rules, _buckets, _hubness, _index, _gradients):
        section(doc, bench)
    return doc


# --------------------------------------------------------------- rendering


def _md_escape(text: str) -> str:
    for char in "\\`*_|[]<>":
        text = text.replace(char, "\\" + char)
    return text


def _md_code(text: str) -> str:
    """Inline code that survives backticks inside `text` (a longer fence, CommonMark style)."""
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _md_cell(cell: Cell) -> str:
    text = _md_escape(cell.full).replace("\n", "<br>")
    return f"**{text}**" if cell.bold and text else text


def render_markdown(doc: Doc) -> str:
    out = [f"# {_md_escape(doc.title)}", ""]
    for kind, block in doc.blocks:
        if kind == "h2":
            out += [f"## {_md_escape(block)}", ""]
        elif kind == "p":
            out += [_md_escape(block), ""]
        elif kind == "note":
            out += [f"> **Note:** {_md_escape(block)}", ""]
        elif kind == "facts":
            out += [f"- **{label}:** {_md_code(value) if code else _md_escape(value)}" for label, value, code in block]
            out.append("")
        elif kind == "table":
            out.append("| " + " | ".join(_md_escape(h) for h in block.headers) + " |")
            out.append("|" + "|".join("---:" if num else ":---" for num in block.numeric) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            out.append("")
            if block.caption:
                out += [f"_{_md_escape(block.caption)}_", ""]
        elif kind == "figure":
            out += [f"![Figure {block.number}: {_md_escape(block.caption)}](figures/{block.filename})", "",
                    f"_Figure {block.number}. {_md_escape(block.caption)}_", ""]
    return "\n".join(out).rstrip() + "\n"


_CSS = """
:root { color-scheme: light; }
body { margin: 0; background: #f4f5f7; color: #1d2330;
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 32px 48px; background: #fff; }
h1 { font-size: 26px; margin: 8px 0 16px; }
h2 { font-size: 20px; margin: 36px 0 10px; padding-bottom: 4px; border-bottom: 2px solid #e3e6eb; }
p { margin: 8px 0 12px; max-width: 75em; }
code { font: 13px/1.4 ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; background: #f0f2f5;
       padding: 1px 5px; border-radius: 4px; word-break: break-all; }
.facts { border-collapse: collapse; margin: 0 0 8px; }
.facts th { text-align: left; padding: 3px 16px 3px 0; color: #555; font-weight: 600; vertical-align: top;
            white-space: nowrap; }
.facts td { padding: 3px 0; }
.scroll { overflow-x: auto; margin: 10px 0 4px; }
table.data { border-collapse: collapse; font-size: 14px; font-variant-numeric: tabular-nums; }
table.data th, table.data td { padding: 5px 8px; border-bottom: 1px solid #e3e6eb; white-space: nowrap; }
table.data th { background: #eef1f5; text-align: left; font-weight: 600; }
table.data tbody tr:nth-child(even) { background: #fafbfc; }
table.data .num { text-align: right; }
table.data td.best { background: #fff4d6; }
table.data .detail { color: #6b7280; font-size: 12px; font-weight: normal; }
.caption { color: #5a6170; font-size: 13px; margin: 4px 0 16px; }
.note { background: #fff8e6; border-left: 4px solid #f0b429; padding: 6px 12px; color: #5a4a1a; }
figure { margin: 16px 0 24px; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #e3e6eb; }
figcaption { color: #5a6170; font-size: 13px; margin-top: 6px; }
"""


def _html_text(text: str) -> str:
    return html.escape(text).replace("\n", "<br>")


def render_html(doc: Doc) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{html.escape(doc.title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>", "<main>",
             f"<h1>{html.escape(doc.title)}</h1>"]
    for kind, block in doc.blocks:
        if kind == "h2":
            parts.append(f"<h2>{html.escape(block)}</h2>")
        elif kind == "p":
            parts.append(f"<p>{_html_text(block)}</p>")
        elif kind == "note":
            parts.append(f'<p class="note"><strong>Note:</strong> {_html_text(block)}</p>')
        elif kind == "facts":
            rows = "".join(
                f"<tr><th>{html.escape(label)}</th><td>"
                + (f"<code>{html.escape(value)}</code>" if code else html.escape(value)) + "</td></tr>"
                for label, value, code in block)
            parts.append(f'<table class="facts">{rows}</table>')
        elif kind == "table":
            head = "".join(("<th class=\"num\">" if num else "<th>") + f"{html.escape(h)}</th>"
                           for h, num in zip(block.headers, block.numeric))
            body = []
            for row in block.rows:
                cells = []
                for cell, num in zip(row, block.numeric):
                    classes = " ".join(c for c in ("num" if num else "", "best" if cell.bold else "") if c)
                    text = _html_text(cell.text)
                    if cell.detail:
                        text += f'<br><span class="detail">{_html_text(cell.detail)}</span>'
                    attribute = f' class="{classes}"' if classes else ""
                    content = f"<strong>{text}</strong>" if cell.bold else text
                    cells.append(f"<td{attribute}>{content}</td>")
                body.append("<tr>" + "".join(cells) + "</tr>")
            parts.append(f'<div class="scroll"><table class="data"><thead><tr>{head}</tr></thead>'
                         f'<tbody>{"".join(body)}</tbody></table></div>')
            if block.caption:
                parts.append(f'<p class="caption">{_html_text(block.caption)}</p>')
        elif kind == "figure":
            data = base64.b64encode(block.png).decode("ascii")
            width, height = png_size(block.png)
            parts.append(f'<figure id="figure-{block.number}"><img src="data:image/png;base64,{data}" '
                         f'width="{width}" height="{height}" alt="Figure {block.number}: {html.escape(block.caption)}">'
                         f"<figcaption>Figure {block.number}. {html.escape(block.caption)}</figcaption></figure>")
    parts += ["</main>", "</body>", "</html>"]
    return "\n".join(parts) + "\n"


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG image")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


# ------------------------------------------------------------------- entry


def write_report(bench_dir: Path, html: bool = False) -> list[Path]:
    """Write ``report.md`` and ``figures/*.png`` (and ``report.html`` with ``html=True``) into `bench_dir`.

    Returns the written paths. Everything is read and rendered before the first
    write, so a malformed input changes nothing on disk; each file is replaced
    atomically. Figures of this module that the new report no longer has (a
    section now skipped) are removed, so the folder matches the report.
    """
    bench_dir = Path(bench_dir)
    bench = load_results(bench_dir)
    doc = build_report(bench)
    markdown = render_markdown(doc)
    page = render_html(doc) if html else None

    written = []
    figure_dir = bench_dir / "figures"
    figure_dir.mkdir(parents=True, exist_ok=True)
    for block in doc.figures:
        path = figure_dir / block.filename
        with atomic_path(path) as tmp:
            tmp.write_bytes(block.png)
        written.append(path)
    kept = {block.filename for block in doc.figures}
    for name in FIGURE_NAMES.values():
        if name not in kept:
            (figure_dir / name).unlink(missing_ok=True)
    write_text(bench_dir / "report.md", markdown)
    written.append(bench_dir / "report.md")
    if page is not None:
        write_text(bench_dir / "report.html", page)
        written.append(bench_dir / "report.html")
    return written
