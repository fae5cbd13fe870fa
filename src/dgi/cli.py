"""`dgi` command line: data synth | prepare | download, train, eval, search, demo, benchmark, report."""

from __future__ import annotations

import functools
import json
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional, TypeVar

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Differentiable Geometric Indexing: end-to-end generative retrieval.", no_args_is_help=True)
data_app = typer.Typer(help="Datasets: generate, prepare, download.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console(width=None if sys.stdout.isatty() else 120)  # logs keep full tables

# Bad input the project reports precisely (DataError, ConfigError and CorruptFileError are ValueErrors that
# name the file, line or field; KeyError names unknown ids): one line and exit code 2, no traceback.
BAD_INPUT_EXIT = 2
BAD_INPUT = (ValueError, KeyError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError)
_debug = {"on": False}
Command = TypeVar("Command", bound=Callable)


@app.callback()
def _options(debug: Annotated[bool, typer.Option("--debug", help="show the traceback of an error")] = False) -> None:
    _debug["on"] = debug or os.environ.get("DGI_DEBUG") == "1"


def reports_bad_input(command: Command) -> Command:
    """Turn the project's own errors into `error: <message>` and exit code 2 (`dgi --debug` re-raises)."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except BAD_INPUT as error:
            if _debug["on"]:
                raise
            message = error.args[0] if isinstance(error, KeyError) and error.args else error
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(BAD_INPUT_EXIT) from None
    return wrapper  # type: ignore[return-value]


@data_app.command("synth")
@reports_bad_input
def data_synth(
    out: Annotated[Path, typer.Option(help="output dataset directory")],
    items: Annotated[int, typer.Option(help="number of items")] = 20_000,
    examples: Annotated[int, typer.Option(help="number of examples (all splits)")] = 150_000,
    zipf: Annotated[float, typer.Option(help="Zipf exponent of item popularity")] = 1.1,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
) -> None:
    """Generate the deterministic synthetic e-commerce dataset."""
    from dgi.data import generate_synthetic

    dataset = generate_synthetic(n_items=items, n_examples=examples, zipf=zipf, seed=seed)
    dataset.save(out)
    sizes = ", ".join(f"{name} {len(rows)}" for name, rows in dataset.splits.items())
    console.print(f"wrote {out}: {len(dataset.items)} items; {sizes}")


@data_app.command("prepare")
@reports_bad_input
def data_prepare(
    name: Annotated[str, typer.Argument(help="amazon-beauty | amazon-beauty-search | amazon-sports | amazon-toys | beir")],
    source: Annotated[Path, typer.Option(help="directory holding the upstream files (see 'dgi data download') "
                                         "or a BEIR-format corpus")],
    out: Annotated[Path, typer.Option(help="output dataset directory")],
    max_history: Annotated[int, typer.Option(help="keep the last N items of each history")] = 20,
    query_seed: Annotated[int, typer.Option(help="seed of the semi-synthetic queries (search variant)")] = 0,
) -> None:
    """Convert upstream Amazon files (leave-one-out splits) or a BEIR-format corpus into a dataset."""
    from dgi.data.amazon import prepare_amazon
    from dgi.data.beir import load_beir

    if name == "beir":
        dataset = load_beir(source)
    else:
        dataset = prepare_amazon(source, name, max_history=max_history, query_seed=query_seed)
    dataset.save(out)
    sizes = ", ".join(f"{split} {len(rows)}" for split, rows in dataset.splits.items())
    console.print(f"wrote {out} ({dataset.name}): {len(dataset.items)} items; {sizes}")


@data_app.command("download")
@reports_bad_input
def data_download(
    name: Annotated[str, typer.Argument(help="amazon-beauty | amazon-beauty-search | amazon-sports | amazon-toys")],
    out: Annotated[Path, typer.Option(help="directory for the upstream files")],
) -> None:
    """Fetch the upstream files of an Amazon dataset, verified by size and sha256."""
    from dgi.data.amazon import DownloadError, download_amazon

    try:
        paths = download_amazon(name, out)
    except (ValueError, DownloadError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    for path in paths:
        console.print(f"{path} ({path.stat().st_size} bytes, sha256 verified)")


@app.command()
@reports_bad_input
def train(
    config: Annotated[Optional[list[Path]], typer.Option("--config", "-c", help="YAML config (repeatable, later wins)")] = None,
    data: Annotated[Optional[Path], typer.Option(help="dataset directory (overrides data.path)")] = None,
    out: Annotated[Optional[Path], typer.Option(help="new run directory")] = None,
    override: Annotated[Optional[list[str]], typer.Option("--set", help="section.key=value (repeatable)")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="continue this interrupted run")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """Train DGI (or continue a run with --resume RUN)."""
    from dgi import pipeline
    from dgi.config import load_config

    if resume is not None:
        run = pipeline.resume(resume, progress=not quiet)
    else:
        if out is None:
            raise typer.BadParameter("--out RUN is required for a new run")
        overrides = list(override or []) + ([f"data.path={data}"] if data else [])
        run = pipeline.train(load_config(config or [], overrides), out, progress=not quiet)
    state = run.state() or {}
    console.print(f"run {run.path}: best epoch {state.get('best_epoch')} "
                  f"(valid {run.config().train.select_metric} {state.get('best_score', float('nan')):.4f}), "
                  f"{state.get('train_seconds', 0):.0f} s training")


@app.command("eval")
@reports_bad_input
def evaluate(
    run: Annotated[Path, typer.Argument(help="run directory")],
    split: Annotated[str, typer.Option(help="train | valid | test")] = "test",
    out: Annotated[Optional[Path], typer.Option(help="output directory (default RUN/eval-SPLIT)")] = None,
    limit: Annotated[Optional[int], typer.Option(help="only the first N examples")] = None,
    # 100 = pipeline.TREC_DEPTH, spelled out because the pipeline (and torch) load only when a command runs
    trec_depth: Annotated[int, typer.Option(min=1, help="results per query in the TREC run files (a generative "
                                            "rule's bucket items, then the dense path's)")] = 100,
    overrides: Annotated[Optional[list[str]], typer.Option("--set", help="search.key=value: search the trained "
                                                           "model differently (needs --out)")] = None,
) -> None:
    """HitRate/NDCG@{1,5,10,20}, MRR, per popularity bucket, invalid-SID rate; metrics.json + a TREC run per method."""
    from dgi import pipeline

    report = pipeline.evaluate_run(run, split, out, limit, trec_depth=trec_depth, search=overrides or [])
    console.print(metrics_table(f"{run} — {split} ({report['n_examples']} examples)",
                                {name: method["overall"] for name, method in report["methods"].items()}))
    if "index" in report:  # a dense-only dual encoder has no SIDs
        console.print(f"invalid-SID rate (unconstrained beams): {report['invalid_sid_rate']:.4f}; "
                      f"collisions: {json.dumps(report['index']['collisions'])}")


@app.command()
@reports_bad_input
def export(
    run: Annotated[Path, typer.Argument(help="run directory")],
    out: Annotated[Optional[Path], typer.Argument(help="model directory to write, replaced atomically if it "
                                                  "exists (default RUN/model, which search and serve use)")] = None,
) -> None:
    """Write a run's best model as a self-contained model directory: search and serve it with no dataset."""
    from dgi import pipeline
    from dgi.training.run import RunDirectory

    path = pipeline.export_model(RunDirectory(run), out=out)
    size = sum(file.stat().st_size for file in path.iterdir())
    console.print(f"wrote {path} ({size / 1e6:.1f} MB)")


@app.command()
@reports_bad_input
def search(
    run: Annotated[Path, typer.Argument(help="model directory (dgi export) or run directory")],
    query: Annotated[str, typer.Argument(help="query text ('' for none)")] = "",
    history: Annotated[str, typer.Option(help="comma-separated item ids, oldest first")] = "",
    k: Annotated[int, typer.Option(min=1, help="number of results")] = 10,
    rule: Annotated[Optional[str], typer.Option(help="lexicographic | fused | rerank | dense")] = None,
    beam: Annotated[Optional[int], typer.Option(min=1, help="beam size")] = None,
) -> None:
    """Search a trained model with a query and/or a history."""
    from dgi.pipeline import load_retriever

    retriever = load_retriever(run)
    items = [item.strip() for item in history.split(",") if item.strip()]
    hits = retriever.search([query or None], [items], k=k, rule=rule, beam_size=beam)[0]
    table = Table(title=f"query={query!r} history={items}")
    for column in ("#", "item", "SID", "beam log-p", "cosine", "text"):
        table.add_column(column)
    for rank, hit in enumerate(hits, 1):
        table.add_row(str(rank), hit.item_id, "-".join(map(str, hit.sid)), f"{hit.beam_score:.3f}",
                      f"{hit.cosine:.3f}", hit.text[:80])
    console.print(table)


@app.command()
@reports_bad_input
def serve(
    model: Annotated[Path, typer.Argument(help="model directory (dgi export) or run directory")],
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port")] = 8000,
    max_k: Annotated[int, typer.Option(min=1, help="largest k a request may ask for")] = 100,
    unknown_history: Annotated[str, typer.Option(help="error | ignore: unknown ids in a history")] = "error",
    threads: Annotated[int, typer.Option(min=1, help="torch threads for search")] = 1,
) -> None:
    """Serve a model over HTTP: POST /search, /search/batch, /items; GET /items/{id}, /healthz, /metrics, /docs."""
    import uvicorn

    from dgi.device import set_threads
    from dgi.model_dir import find_model_dir
    from dgi.serving.app import ServerSettings, create_app

    if unknown_history not in ("error", "ignore"):
        raise typer.BadParameter("--unknown-history must be error or ignore")
    directory = find_model_dir(model)
    if directory is None:
        raise FileNotFoundError(f"{model} holds no model directory: run `dgi export {model}` first")
    set_threads(threads)
    app_ = create_app(directory, ServerSettings(max_k=max_k, unknown_history=unknown_history, warm_up=True))
    console.print(f"serving {directory} on http://{host}:{port} (docs: /docs)")
    uvicorn.run(app_, host=host, port=port, log_level="warning")


@app.command()
@reports_bad_input
def demo(
    out: Annotated[Path, typer.Option(help="output directory")] = Path("runs/demo"),
    items: Annotated[int, typer.Option(help="synthetic items")] = 10_000,
    examples: Annotated[int, typer.Option(help="synthetic examples")] = 80_000,
    seed: Annotated[int, typer.Option(help="seed for data and training")] = 0,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """Synthetic data -> train DGI and 'w/o all' with the same budget -> evaluate -> table + results.json."""
    from dgi.demo import run_demo

    results = run_demo(out, n_items=items, n_examples=examples, seed=seed, progress=not quiet)
    rows = {name: model["overall"] for name, model in results["models"].items()}
    console.print(metrics_table(f"demo — synthetic test split ({results['dataset']['test_examples']} examples)", rows))
    console.print(bucket_table(results["models"]))
    console.print(f"wrote {out / 'results.json'}")


@app.command()
@reports_bad_input
def benchmark(
    config: Annotated[Path, typer.Option("--config", "-c", help="benchmark YAML (configs/bench-*.yaml)")],
    out: Annotated[Path, typer.Option(help="benchmark directory (rerun to resume)")],
    data: Annotated[Optional[Path], typer.Option(help="dataset directory (overrides the config's data)")] = None,
    seeds: Annotated[Optional[str], typer.Option(help="comma-separated seeds (overrides the config's)")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu | cuda | auto (overrides the config's)")] = None,
    models: Annotated[Optional[str], typer.Option(help="comma-separated model names or slugs (default: all)")] = None,
    report_only: Annotated[bool, typer.Option(help="train nothing: report the finished runs, list the rest")] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """Every model of the config, same splits and budgets, N seeds -> results.json, report.md/html, figures."""
    from dgi.benchmark import load_bench_config, run_benchmark

    bench = load_bench_config(config, data, [int(s) for s in seeds.split(",")] if seeds else None, device, models)
    given = {"--data": data, "--seeds": seeds, "--device": device, "--models": models}
    command = " ".join([f"dgi benchmark --config {config} --out {out}",
                        *(f"{flag} {shlex.quote(str(value))}" for flag, value in given.items() if value is not None),
                        *(["--report-only"] if report_only else [])])
    results = run_benchmark(bench, out, progress=not quiet, command=command, report_only=report_only)
    rows = {model.name: model.mean for model in results.models}
    over = "the finished seeds" if results.pending else f"seeds {bench.seeds}"
    console.print(metrics_table(f"{bench.name} — {bench.split} (mean over {over})", rows))
    if results.pending:
        console.print(f"{len(results.pending)} (model, seed) runs not finished yet (listed in the report)")
    console.print(f"wrote {out / 'results.json'}, {out / 'report.md'}, {out / 'report.html'}")


@app.command()
@reports_bad_input
def report(
    bench_dir: Annotated[Path, typer.Argument(help="a `dgi benchmark` output directory")],
    html: Annotated[bool, typer.Option("--html", help="also write one self-contained report.html")] = False,
) -> None:
    """(Re)write report.md, figures/*.png and optionally report.html from DIR/results.json."""
    from dgi.report import write_report

    paths = write_report(bench_dir, html=html)
    for path in paths:
        console.print(str(path))


def metrics_table(title: str, rows: dict[str, dict[str, float]]) -> Table:
    columns = ["hit@1", "hit@5", "hit@10", "hit@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr"]
    table = Table(title=title)
    table.add_column("model")
    for column in columns:
        table.add_column(column, justify="right")
    for name, metrics in rows.items():
        table.add_row(name, *(f"{metrics.get(c, float('nan')):.4f}" for c in columns))
    return table


def bucket_table(models: dict[str, dict]) -> Table:
    table = Table(title="HitRate@10 per popularity bucket (B0 head ... B4 tail: 0-1 training interactions)")
    table.add_column("model")
    names = list(next(iter(models.values()))["buckets"])
    for name in names:
        table.add_column(name, justify="right")
    for model, values in models.items():
        table.add_row(model, *(f"{values['buckets'][b]['hit@10']:.3f} (n={values['buckets'][b]['count']})" for b in names))
    return table


if __name__ == "__main__":
    app()
