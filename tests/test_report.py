"""The benchmark report: files, tables, formatting, self-contained HTML, skipped sections, errors, atomicity."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from dgi.evaluation.metrics import popularity_buckets
from dgi.report import fmt_metric, load_results, png_size, write_report
from dgi.report.sections import fmt_duration

KS = [1, 5, 10, 20]
TABLE_KEYS = {**{f"H@{k}": f"hit@{k}" for k in KS}, **{f"N@{k}": f"ndcg@{k}" for k in KS if k > 1}, "MRR": "mrr"}
FIGURES = ["fig1-main-table.png", "fig2-popularity-buckets.png", "fig3-hubness.png", "fig4-sid-index.png",
           "fig5-item-tower-gradients.png"]


# ------------------------------------------------------------ a fake benchmark


def _skewness(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=float)
    centred = x - x.mean()
    return float((centred**3).mean() / max((centred**2).mean(), 1e-12) ** 1.5)


def _metrics(rng: np.random.Generator, hit10: float, shape: float) -> dict[str, float]:
    """Plausible metrics around HitRate@10 = hit10; `shape` > 1 favours deep cut-offs."""
    out = {}
    for k, factor in zip(KS, (0.35, 0.75, 1.0, 1.0 + 0.2 * shape)):
        hit = min(1.0, hit10 * factor * (1 + rng.normal(0, 0.02)))
        out[f"hit@{k}"] = hit
        out[f"recall@{k}"] = hit
        out[f"ndcg@{k}"] = hit if k == 1 else hit * (0.62 - 0.04 * np.log2(k)) / 0.62 * 0.7
    out["mrr"] = out["hit@1"] + 0.3 * (out["hit@10"] - out["hit@1"]) / 2
    return out


def make_fake_bench(root: Path, n_items: int = 600, n_test: int = 400, seed: int = 0,
                    with_ablation: bool = False) -> Path:
    """A realistic benchmark directory: a generative model with an index and gradient norms, a
    dot-product dense model with item norms, popularity without item vectors; two seeds each."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    popularity = np.floor(400.0 / np.arange(1, n_items + 1) ** 1.15).astype(np.int64)
    popularity = popularity[rng.permutation(n_items)]
    buckets = popularity_buckets(popularity)
    specs = [  # name, slug, family, geometry, hit@10, deep-k shape, bucket slope, index, grads, norms
        ("DGI (Gumbel)", "dgi", "generative", "cosine", 0.64, 0.6, 0.06, True, True, "unit"),
        ("Dense (dot product)", "dense-dot", "dense", "dot", 0.58, 2.5, 0.14, False, False, "popular"),
        ("Popularity", "popularity", "heuristic", None, 0.11, 1.0, 0.5, False, False, None),
    ]
    if with_ablation:
        specs.insert(1, ("w/o soft gradient (STE)", "dgi-ste", "generative", "cosine", 0.60, 0.6, 0.09,
                         True, True, "unit"))
    models = []
    for m, (name, slug, family, geometry, hit10, shape, slope, has_index, has_grads, norms) in enumerate(specs):
        per_seed = []
        for s in (0, 1):
            run_rng = np.random.default_rng(1000 * m + s)
            overall = _metrics(run_rng, hit10, shape)
            by_bucket = {}
            for b, bucket_name in enumerate(buckets.names):
                level = max(0.0, hit10 * (1.3 - slope * b * (2 if slug == "popularity" else 1)))
                by_bucket[bucket_name] = _metrics(run_rng, level, shape)
            folder = root / "models" / slug / f"seed-{s}"
            folder.mkdir(parents=True, exist_ok=True)
            if slug == "popularity":
                k_occurrence = np.zeros(n_items, dtype=np.int64)
                k_occurrence[np.argsort(-popularity, kind="stable")[:10]] = n_test
            else:
                weights = (popularity + 2.0) ** (1.3 if geometry == "dot" else 0.45)
                k_occurrence = run_rng.multinomial(n_test * 10, weights / weights.sum())
            arrays = {"k_occurrence": k_occurrence, "popularity": popularity}
            if norms == "unit":
                arrays["item_norms"] = np.ones(n_items) + run_rng.normal(0, 1e-3, n_items)
            elif norms == "popular":
                arrays["item_norms"] = 1.5 + 0.9 * np.log1p(popularity) + run_rng.normal(0, 0.35, n_items)
            np.savez(folder / "hubness.npz", **arrays)
            grad_file = None
            if has_grads:
                steps = np.arange(0, 1500, 5)
                decay = 0.3 if slug == "dgi" else 0.01
                values = decay * 3 * np.exp(-steps / 900) * run_rng.lognormal(0, 0.5, steps.size) + 1e-3
                np.savez(folder / "grad_norms.npz", step=steps, item_tower=values)
                grad_file = f"models/{slug}/seed-{s}/grad_norms.npz"
            index = None
            if has_index:
                usage = [{"level": j, "codebook_size": 64, "used": u, "perplexity": p}
                         for j, (u, p) in enumerate([(0.98, 51.2), (0.91, 40.7), (0.74, 27.9)] if slug == "dgi"
                                                    else [(0.95, 44.0), (0.72, 21.5), (0.41, 9.8)])]
                rate = 0.031 if slug == "dgi" else 0.12
                index = {"collisions": {"n_items": n_items, "n_sids": int(n_items * (1 - rate / 2)),
                                        "unique_share": 1 - rate, "collision_rate": rate,
                                        "largest_bucket": 3, "mean_bucket_size": 1.02},
                         "code_usage": usage}
            per_seed.append({
                "seed": s, "overall": overall, "buckets": by_bucket,
                "train_seconds": None if slug == "popularity" else 800.0 + 100 * m + 7 * s,
                "query_ms": 0.02 + 0.001 * s if slug == "popularity" else 4.0 + m + 0.1 * s,
                "index": index, "invalid_sid_rate": 0.004 if has_index else None,
                "k_occurrence_skewness": _skewness(k_occurrence),
                "files": {"hubness": f"models/{slug}/seed-{s}/hubness.npz", "grad_norms": grad_file},
            })
        keys = list(per_seed[0]["overall"])
        models.append({
            "name": name, "slug": slug, "family": family, "geometry": geometry, "seeds": [0, 1],
            "per_seed": per_seed,
            "mean": {k: float(np.mean([r["overall"][k] for r in per_seed])) for k in keys},
            "std": {k: float(np.std([r["overall"][k] for r in per_seed])) for k in keys},
            "buckets_mean": {b: {k: float(np.mean([r["buckets"][b][k] for r in per_seed])) for k in keys}
                             for b in buckets.names},
        })
    results = {
        "dataset": {"name": "amazon-beauty-search", "items": n_items, "train_examples": 5000,
                    "valid_examples": n_test, "test_examples": n_test, "note": "semi-synthetic queries"},
        "split": "test", "ks": KS, "bucket_edges": buckets.edges,
        "command": "dgi bench --config configs/amazon-beauty-search.yaml --seeds 0 1 --out runs/bench",
        "git_commit": "0123456789abcdef0123456789abcdef01234567",
        "machine": {"platform": "Linux-6.1-x86_64", "cpus": 2, "device": "cpu"}, "wall_seconds": 5432.1,
        "models": models,
    }
    (root / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    return root


def _edit_results(bench: Path, edit) -> dict:
    path = bench / "results.json"
    results = json.loads(path.read_text())
    edit(results)
    path.write_text(json.dumps(results))
    return results


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, list[Path]]:
    bench = make_fake_bench(tmp_path_factory.mktemp("bench"))
    before = _snapshot(bench)
    paths = write_report(bench, html=True)
    after = _snapshot(bench)
    assert {name: after[name] for name in before} == before  # the inputs are only read
    return bench, paths


@pytest.fixture
def fresh_bench(written, tmp_path) -> Path:
    """A private copy of the fake benchmark and its report, for tests that change it."""
    bench = tmp_path / "bench"
    shutil.copytree(written[0], bench)
    return bench


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _main_table(markdown: str) -> tuple[list[str], list[list[str]]]:
    """The first table after the section heading, as header cells and row cells."""
    section = markdown.split("## 1. Main results", 1)[1]
    table = []
    for line in section.splitlines():
        if line.startswith("|"):
            table.append(line)
        elif table:
            break
    split = [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in table]
    return split[0], split[2:]


def _unbold(cell: str) -> tuple[str, bool]:
    if cell.startswith("**") and cell.endswith("**"):
        return cell[2:-2], True
    return cell, False


# ----------------------------------------------------------------------- tests


def test_writes_every_file_and_valid_pngs(written):
    bench, paths = written
    expected = {bench / "report.md", bench / "report.html"} | {bench / "figures" / f for f in FIGURES}
    assert set(paths) == expected
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    for name in FIGURES:
        data = (bench / "figures" / name).read_bytes()
        width, height = png_size(data)
        assert 900 <= width <= 1400, (name, width)
        assert 250 <= height <= 1000, (name, height)
    markdown = (bench / "report.md").read_text()
    for name in FIGURES:
        assert f"](figures/{name})" in markdown
    for text in ("amazon-beauty-search", "semi-synthetic queries", "Split:** test", "dgi bench --config",
                 "0123456789abcdef", "Linux-6.1-x86\\_64", "1 h 30 min 32 s"):
        assert text in markdown
    results = json.loads((bench / "results.json").read_text())
    trained = [run["train_seconds"] for m in results["models"] for run in m["per_seed"] if run["train_seconds"]]
    total = fmt_duration(sum(trained))  # popularity (no training) is left out
    assert f"{total} summed over {len(trained)} trained (model, seed) runs" in markdown


def test_main_table_marks_best_per_column(written):
    bench, _ = written
    results = json.loads((bench / "results.json").read_text())
    headers, rows = _main_table((bench / "report.md").read_text())
    assert [row[0] for row in rows] == [m["name"] for m in results["models"]]
    assert headers[:3] == ["Model", "Type", "Seeds"] and headers[-2:] == ["Train time", "Query ms"]
    assert [row[2] for row in rows] == [str(len(m["per_seed"])) for m in results["models"]]
    assert [h for h in headers if h in TABLE_KEYS] == list(TABLE_KEYS)
    for column, header in enumerate(headers):
        if header in TABLE_KEYS:
            values = [round(m["mean"][TABLE_KEYS[header]], 4) for m in results["models"]]
            want = [v == max(values) for v in values]
        elif header == "Query ms":
            values = [round(float(np.mean([r["query_ms"] for r in m["per_seed"]])), 2) for m in results["models"]]
            want = [v == min(values) for v in values]
        elif header == "Train time":  # popularity has no training time: best among those that train
            values = [np.mean([r["train_seconds"] for r in m["per_seed"]]) if m["per_seed"][0]["train_seconds"]
                      else np.inf for m in results["models"]]
            want = [v == min(values) for v in values]
        else:
            continue
        got = [_unbold(row[column])[1] for row in rows]
        assert got == want, header
    # The fake data has different winners in different columns.
    winners = {tuple(_unbold(row[c])[1] for row in rows) for c, h in enumerate(headers) if h in TABLE_KEYS}
    assert len(winners) >= 2


def test_mean_std_formatting(written, fresh_bench):
    bench, _ = written
    results = json.loads((bench / "results.json").read_text())
    headers, rows = _main_table((bench / "report.md").read_text())
    h10 = headers.index("H@10")
    dgi = results["models"][0]
    cell, _ = _unbold(rows[0][h10])
    assert cell == f"{dgi['mean']['hit@10']:.4f} ± {dgi['std']['hit@10']:.4f}"
    assert re.fullmatch(r"0\.\d{4} ± 0\.\d{4}", cell)
    assert fmt_metric(0.5, 0.01234) == "0.5000 ± 0.0123"
    assert fmt_metric(0.5) == "0.5000"
    assert fmt_metric(float("nan"), 0.1) == "n/a"

    def one_seed_and_a_tie(r):
        pop = r["models"][2]  # popularity is deterministic: one seed, so no std
        pop["seeds"], pop["per_seed"] = [0], pop["per_seed"][:1]
        del pop["std"]
        best = max(m["mean"]["mrr"] for m in r["models"])
        r["models"][1]["mean"]["mrr"] = best  # a tie: both bold

    results = _edit_results(fresh_bench, one_seed_and_a_tie)
    write_report(fresh_bench)
    headers, rows = _main_table((fresh_bench / "report.md").read_text())
    pop = results["models"][2]
    assert rows[2][2] == "1"
    for column in range(3, 11):
        assert "±" not in rows[2][column]
    assert _unbold(rows[2][h10])[0] == f"{pop['mean']['hit@10']:.4f}"
    assert "±" in rows[0][h10]
    mrr = headers.index("MRR")
    assert [_unbold(row[mrr])[1] for row in rows] == [
        round(m["mean"]["mrr"], 4) == round(max(x["mean"]["mrr"] for x in results["models"]), 4)
        for m in results["models"]]
    assert sum(_unbold(row[mrr])[1] for row in rows) >= 2


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self.tags: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in {"src", "href", "srcset", "poster", "data", "action", "xlink:href"}:
                self.urls.append(value or "")
                if tag == "img" and name == "src":
                    self.images.append(value or "")


def test_html_is_self_contained_and_has_every_figure(written):
    bench, _ = written
    page = (bench / "report.html").read_text()
    parser = _Links()
    parser.feed(page)
    assert parser.urls and all(url.startswith(("data:", "#")) for url in parser.urls)
    assert "script" not in parser.tags and "link" not in parser.tags and "iframe" not in parser.tags
    assert "@import" not in page and "url(" not in page
    assert len(parser.images) == len(FIGURES)
    embedded = [base64.b64decode(src.split(",", 1)[1]) for src in parser.images]
    assert embedded == [(bench / "figures" / name).read_bytes() for name in FIGURES]
    assert "<table" in page and "<style>" in page
    # Bold best values are table markup too, and the main table agrees with the markdown one.
    assert page.count('class="num best"') >= len(TABLE_KEYS) + 2


def test_missing_optional_sections_are_notes(fresh_bench):
    assert all((fresh_bench / "figures" / name).is_file() for name in FIGURES)  # stale ones must go

    def strip(r):
        for model in r["models"]:
            for run in model["per_seed"]:
                run["index"] = None
                run["files"]["grad_norms"] = None
                run["invalid_sid_rate"] = None
                hub = np.load(fresh_bench / run["files"]["hubness"])
                np.savez(fresh_bench / run["files"]["hubness"], k_occurrence=hub["k_occurrence"],
                         popularity=hub["popularity"])
        r["models"][2]["per_seed"][0]["files"]["hubness"] = None

    _edit_results(fresh_bench, strip)
    paths = write_report(fresh_bench, html=True)
    names = {p.name for p in paths}
    assert names == {"report.md", "report.html", FIGURES[0], FIGURES[1], FIGURES[2]}
    assert not (fresh_bench / "figures" / FIGURES[3]).exists()
    assert not (fresh_bench / "figures" / FIGURES[4]).exists()
    markdown = (fresh_bench / "report.md").read_text()
    notes = [line for line in markdown.splitlines() if line.startswith("> **Note:**")]
    assert any("no model has a Semantic-ID index" in n for n in notes)
    assert any("no model recorded item-tower gradient norms" in n for n in notes)
    assert any("Norm-vs-popularity panel skipped" in n for n in notes)
    assert any("No hubness distribution for: Popularity" in n for n in notes)
    assert len(notes) == 4
    page = (fresh_bench / "report.html").read_text()
    assert page.count('class="note"') == 4


@pytest.mark.parametrize("edit, field", [
    (lambda r: r["models"][1]["per_seed"][0].pop("query_ms"), "models[1].per_seed[0].query_ms"),
    (lambda r: r["dataset"].pop("name"), "dataset.name"),
    (lambda r: r["models"][0]["mean"].pop("ndcg@10"), "models[0].mean.ndcg@10"),
    (lambda r: r["models"][0]["buckets_mean"].pop("B3"), "models[0].buckets_mean.B3"),
    (lambda r: r["models"][0]["per_seed"][1]["index"]["collisions"].pop("collision_rate"),
     "models[0].per_seed[1].index.collisions.collision_rate"),
    (lambda r: r.update(ks="1,5,10"), "ks"),
    (lambda r: r["machine"].update(cpus="two"), "machine.cpus"),
    (lambda r: r.pop("models"), "models"),
])
def test_malformed_results_raise_naming_the_field(fresh_bench, edit, field):
    _edit_results(fresh_bench, edit)
    before = _snapshot(fresh_bench)
    with pytest.raises(ValueError) as caught:
        write_report(fresh_bench, html=True)
    message = str(caught.value)
    assert str(fresh_bench / "results.json") in message
    assert f"'{field}'" in message
    assert _snapshot(fresh_bench) == before  # the previous report is left as it was


def test_unreadable_inputs_raise(fresh_bench):
    (fresh_bench / "results.json").write_text("{not json")
    with pytest.raises(ValueError, match="results.json: not valid JSON"):
        write_report(fresh_bench)
    with pytest.raises(ValueError, match="results.json: not found"):
        write_report(fresh_bench / "nowhere")


def test_malformed_npz_names_file_and_array(fresh_bench):
    hubness = fresh_bench / "models/dense-dot/seed-0/hubness.npz"
    np.savez(hubness, popularity=np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match=r"hubness\.npz: missing array 'k_occurrence'"):
        write_report(fresh_bench)


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]


def test_writes_are_atomic(written, fresh_bench, monkeypatch):
    assert _leftovers(written[0]) == []
    (fresh_bench / "report.md").write_text("OLD REPORT")
    real_replace = os.replace

    def failing_replace(src, dst):
        if Path(dst).name == "report.md":
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_report(fresh_bench)
    monkeypatch.setattr(os, "replace", real_replace)
    assert (fresh_bench / "report.md").read_text() == "OLD REPORT"
    assert _leftovers(fresh_bench) == []


COMMITTED = sorted((Path(__file__).parents[1] / "benchmarks" / "results").glob("bench-*/results.json"))


@pytest.mark.parametrize("results_file", COMMITTED, ids=[path.parent.name for path in COMMITTED])
def test_committed_benchmark_results_follow_the_contract(results_file):
    """Every committed benchmark directory loads, and every per-seed file it names is committed too."""
    bench = load_results(results_file.parent)
    assert bench.models
    for model in bench.models:
        assert len(model.per_seed) == len(model.seeds)
        for run in model.per_seed:
            for name in (run.files.hubness, run.files.grad_norms):
                assert name is None or (bench.path / name).is_file(), name
