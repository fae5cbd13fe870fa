"""What the report says: number formatting, one function per section, and `build_report`.

Each section turns the `BenchmarkResults` read by `dgi.report.results` into blocks of a
`dgi.report.document.Doc`; a section without data becomes a one-line note.
"""

from __future__ import annotations

import math

import numpy as np

from dgi import figures
from dgi.report.document import Cell, Doc, FigureBlock, Table
from dgi.results import BUCKET_METRIC, BenchmarkResults, BucketEdge, ModelSummary, load_npz

FIGURE_NAMES = {
    "table": "fig1-main-table.png",
    "buckets": "fig2-popularity-buckets.png",
    "hubness": "fig3-hubness.png",
    "index": "fig4-sid-index.png",
    "gradients": "fig5-item-tower-gradients.png",
}
HUBNESS_K = 10


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


def _rules_text(model: ModelSummary) -> str:
    """" · rerank" when every seed chose one ranking rule on validation, " · rerank ×2, fused ×1" otherwise."""
    chosen = [run.method.split("/", 1)[1] for run in model.per_seed if run.method and "/" in run.method]
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


# -------------------------------------------------------------- the sections


def _header(doc: Doc, bench: BenchmarkResults) -> None:
    d = bench.dataset
    dataset = (f"{d.name}: {d.items:,} items; {d.train_examples:,} train / {d.valid_examples:,} valid / "
               f"{d.test_examples:,} test examples")
    if d.note:
        dataset += f" ({d.note})"
    m = bench.machine
    trained = [r.train_seconds for model in bench.models for r in model.per_seed if r.train_seconds]
    doc.facts([
        ("Dataset", dataset, False),
        ("Split", bench.split, False),
        ("Command", bench.command, True),
        ("Commit", bench.git_commit, True),
        ("Machine", f"{m.platform}; {m.cpus} CPUs; device {m.device}", False),
        ("Wall time", f"{fmt_duration(bench.wall_seconds)} (this command; finished runs are reused)", False),
        ("Training time", f"{fmt_duration(sum(trained))} summed over {len(trained)} trained (model, seed) runs",
         False),
    ])
    if bench.pending:
        runs = ", ".join(f"{run.get('model')} seed {run.get('seed')}" for run in bench.pending)
        doc.note(f"Incomplete benchmark: {len(bench.pending)} (model, seed) runs not finished yet ({runs}). "
                 "Means cover the finished seeds only; rerun the command without --report-only to finish.")


def _main_table(doc: Doc, bench: BenchmarkResults) -> None:
    doc.heading("1. Main results")
    metrics = bench.table_metrics
    models = bench.models
    train = [_mean([r.train_seconds for r in m.per_seed]) for m in models]
    query = [_mean([r.query_ms for r in m.per_seed]) for m in models]
    columns: list[list[float | None]] = [[m.mean.get(key) for m in models] for key, _ in metrics]
    best = [_best(col, lower=False, display=lambda v: f"{v:.4f}") for col in columns]
    best += [_best(train, lower=True, display=fmt_seconds), _best(query, lower=True, display=lambda v: f"{v:.2f}")]

    def std(model: ModelSummary, key: str) -> float | None:
        return model.std.get(key) if len(model.per_seed) > 1 else None

    headers = ["Model", "Type", "Seeds"] + [h for _, h in metrics] + ["Train time", "Query ms"]
    rows = []
    for i, model in enumerate(models):
        kind = model.family + (f" · {model.geometry}" if model.geometry else "") + _rules_text(model)
        cells = [Cell(model.name), Cell(kind), Cell(str(len(model.per_seed)))]
        cells += [_metric_cell(model.mean[key], std(model, key), best[c][i]) for c, (key, _) in enumerate(metrics)]
        cells.append(Cell(fmt_seconds(train[i]), best[-2][i]))
        cells.append(Cell("—" if query[i] is None else f"{query[i]:.2f}", best[-1][i]))
        rows.append(cells)
    counts = sorted({len(m.per_seed) for m in models})
    numbers = [str(n) for n in counts]
    seed_text = (", ".join(numbers[:-1]) + " or " if len(numbers) > 1 else "") + numbers[-1]
    seed_text += " seed" if counts == [1] else " seeds"
    caption = (f"{bench.split.capitalize()} split, mean ± std over {seed_text} (no ± for a model with one seed). "
               "H = HitRate, N = NDCG. Bold: best per column (highest metric, lowest time). "
               "DGI-family ranking rule (lexicographic / fused / rerank) chosen per seed on validation. "
               "Train time and query latency are means over seeds; query ms is per test context.")
    doc.table(Table(headers, rows, [False, False] + [True] * (len(headers) - 2), caption))

    # Figure 1: the same table as an image, std on a second line so the columns stay narrow.
    image_headers = ["Model", "Seeds"] + [h for _, h in metrics] + ["Train", "Query ms"]
    image_rows, image_bold = [], []
    for i, model in enumerate(models):
        row = [model.name, rows[i][2].text]
        for key, _ in metrics:
            s = std(model, key)
            row.append(f"{model.mean[key]:.4f}" + ("" if s is None else f"\n± {s:.4f}"))
        row += [rows[i][-2].text, rows[i][-1].text]
        image_rows.append(row)
        image_bold.append([False, False] + [best[c][i] for c in range(len(best))])
    png = figures.table_png(
        f"{bench.dataset.name} · {bench.split} split", image_headers, image_rows, image_bold,
        [m.colour for m in models], footnote="Mean ± std over seeds; bold = best per column (lowest for times).")
    doc.figure(FigureBlock(1, FIGURE_NAMES["table"], "Main results table (same numbers as above).", png))


def _items(n: int) -> str:
    return f"{n:,} item{'' if n == 1 else 's'}"


def _bucket_label(edge: BucketEdge) -> str:
    lo, hi = edge.min_popularity, edge.max_popularity
    if lo is None:
        span = "no items"
    elif lo == hi:
        span = f"pop {lo}"
    else:
        span = f"pop {lo}–{hi}"
    return f"{edge.name}\n{_items(edge.n_items)} · {span}\n{edge.share_of_interactions:.1%} of interactions"


RULE_COLUMNS = (("generative/lexicographic", "lex"), ("generative/fused", "fused"),
                ("generative/rerank", "rerank"), ("dense", "dense"))


def _rules(doc: Doc, bench: BenchmarkResults) -> None:
    """The DGI family under every ranking rule: the ablations compared on equal terms, whatever validation chose."""
    models = [m for m in bench.models if all(run.rules and "generative/lexicographic" in run.rules for run in m.per_seed)]
    if not models:
        return
    doc.para("The DGI-family models under every ranking rule (test, mean over seeds): lex = lexicographic, the "
             "paper's generative rule (beam order); fused adds the dense cosine to the beam score; rerank "
             "re-scores the items of a wider beam by the dense cosine; dense = the dense path, which scores "
             "every item without the index. The main table uses the rule each seed chose on validation.")
    headers = ["Model", "chosen"] + [f"{label} {metric}" for _, label in RULE_COLUMNS for metric in ("H@10", "N@10")]
    columns = [[float(np.mean([run.rules[method][key] for run in m.per_seed])) for m in models]
               for method, _ in RULE_COLUMNS for key in ("hit@10", "ndcg@10")]
    rows = _rows_with_best([[Cell(m.name), Cell(_rules_text(m).removeprefix(" · "))] for m in models], columns)
    doc.table(Table(headers, rows, [False, False] + [True] * len(columns),
                    "Every ranking rule, test split, mean over seeds. Bold: best per column."))
    tails = [name for name in ("B3", "B4") if any(e.name == name for e in bench.bucket_edges)]
    tailed = [m for m in models if all(run.rule_buckets for run in m.per_seed)]
    if tails and tailed:
        headers = ["Model"] + [f"{label} {tail}" for _, label in RULE_COLUMNS for tail in tails]
        columns = [[float(np.mean([run.rule_buckets[method][tail] for run in m.per_seed])) for m in tailed]
                   for method, _ in RULE_COLUMNS for tail in tails]
        rows = _rows_with_best([[Cell(m.name)] for m in tailed], columns)
        doc.table(Table(headers, rows, [False] + [True] * len(columns),
                        "HitRate@10 on the tail buckets under every ranking rule, mean over seeds."))


def _rows_with_best(leading: list[list[Cell]], columns: list[list[float]]) -> list[list[Cell]]:
    """Each row's leading cells, then one 4-digit cell per column with the column's best in bold."""
    best = [_best(col, lower=False, display=lambda v: f"{v:.4f}") for col in columns]
    return [cells + [Cell(f"{columns[c][i]:.4f}", best[c][i]) for c in range(len(columns))]
            for i, cells in enumerate(leading)]


def _buckets(doc: Doc, bench: BenchmarkResults) -> None:
    doc.heading("2. HitRate@10 by item popularity")
    if not bench.bucket_edges:
        doc.note("Skipped: results.json has no popularity buckets (bucket_edges is empty).")
        return
    names = [edge.name for edge in bench.bucket_edges]
    series = []
    for model in bench.models:
        values = [model.buckets_mean[name][BUCKET_METRIC] for name in names]
        errors = None
        if len(model.per_seed) > 1:
            errors = [float(np.std([r.buckets[name][BUCKET_METRIC] for r in model.per_seed])) for name in names]
        series.append(figures.BarSeries(model.name, model.colour, values, errors))
    doc.para("Test contexts grouped by the popularity of their target item: B0 holds the few most popular items, "
             "B1-B3 each about a quarter of the remaining head interactions, B4 the items with 0-1 training "
             "interactions. Bars are means over seeds; whiskers are the std over seeds.")
    png = figures.bucket_bars_png([_bucket_label(e) for e in bench.bucket_edges], series, "HitRate@10",
                                  f"HitRate@10 per popularity bucket ({bench.split} split)")
    doc.figure(FigureBlock(2, FIGURE_NAMES["buckets"], "HitRate@10 per popularity bucket (mean over seeds).", png))
    headers = ["Model"] + [f"{e.name} ({_items(e.n_items)})" for e in bench.bucket_edges]
    columns = [[m.buckets_mean[name][BUCKET_METRIC] for m in bench.models] for name in names]
    rows = _rows_with_best([[Cell(m.name)] for m in bench.models], columns)
    doc.table(Table(headers, rows, [False] + [True] * len(names), "HitRate@10 per bucket, mean over seeds."))


def _hubness(doc: Doc, bench: BenchmarkResults) -> None:
    doc.heading("3. Hubness")
    norms, occurrences, stats, missing = [], [], {}, []
    for model in bench.models:
        run = model.per_seed[0]
        if run.files.hubness is None:
            missing.append(model.name)
            continue
        path = bench.path / run.files.hubness
        if not path.is_file():
            missing.append(f"{model.name} ({run.files.hubness} not found)")
            continue
        arrays = load_npz(path, ("k_occurrence", "popularity"), ("item_norms",))
        k_occ = arrays["k_occurrence"]
        label = f"{model.name} (skew {run.k_occurrence_skewness:.2f})"
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
        values = [r.k_occurrence_skewness for r in model.per_seed]
        mean, std = float(np.mean(values)), float(np.std(values)) if len(values) > 1 else None
        rows.append([Cell(model.name), _metric_cell(mean, std, False, digits=2)])
        zero, peak, top_share = stats.get(model.name, (None, None, None))
        rows[-1] += [Cell("—" if zero is None else f"{zero:.1%}"), Cell("—" if peak is None else f"{peak:,}"),
                     Cell("—" if top_share is None else f"{top_share:.1%}")]
    doc.table(Table(["Model", f"N{HUBNESS_K} skewness", f"items never in a top-{HUBNESS_K}",
                     f"max N{HUBNESS_K}", f"top-1% items' share of top-{HUBNESS_K} slots"], rows,
                    [False, True, True, True, True],
                    "Skewness: mean ± std over seeds. Other columns: first seed."))


def _index(doc: Doc, bench: BenchmarkResults) -> None:
    doc.heading("4. Semantic-ID index health")
    indexed = [m for m in bench.models if m.per_seed[0].index is not None]
    if not indexed:
        doc.note("Skipped: no model has a Semantic-ID index (no generative model in this benchmark).")
        return
    series, rows = [], []
    for model in indexed:
        run = model.per_seed[0]
        usage = sorted(run.index.code_usage, key=lambda level: level.level)
        collisions = run.index.collisions
        series.append(figures.UsageSeries(
            model.name, model.colour, [u.level for u in usage], [u.used for u in usage],
            [u.perplexity / max(u.codebook_size, 1) for u in usage], collisions.collision_rate))
        invalid = run.invalid_sid_rate
        rows.append([Cell(model.name), Cell(f"{collisions.n_items:,}"), Cell(f"{collisions.n_sids:,}"),
                     Cell(f"{collisions.unique_share:.1%}"), Cell(f"{collisions.collision_rate:.1%}"),
                     Cell(f"{collisions.largest_bucket:,}"), Cell(f"{collisions.mean_bucket_size:.2f}"),
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


def _gradients(doc: Doc, bench: BenchmarkResults) -> None:
    doc.heading("5. Item-tower gradient norms")
    series, missing = [], []
    for model in bench.models:
        run = model.per_seed[0]
        if run.files.grad_norms is None:
            continue
        path = bench.path / run.files.grad_norms
        if not path.is_file():
            missing.append(f"{model.name} ({run.files.grad_norms} not found)")
            continue
        arrays = load_npz(path, ("step", "item_tower"))
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


def build_report(bench: BenchmarkResults) -> Doc:
    doc = Doc(f"Benchmark report: {bench.dataset.name}")
    _header(doc, bench)
    for section in (_main_table, _rules, _buckets, _hubness, _index, _gradients):
        section(doc, bench)
    return doc
