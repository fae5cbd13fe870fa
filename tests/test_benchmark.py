"""`dgi benchmark` end to end on the tiny corpus: two seeds, two small trained models, every figure."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from dgi import pipeline
from dgi.benchmark import BenchConfig, dgi_config, load_bench_config, seeds_of, select_models, skewness
from dgi.cli import app
from dgi.config import ConfigError, dump_config
from dgi.evaluation.tail_probe import probe_tail
from dgi.report import FIGURE_NAMES
from dgi.training.run import RunDirectory


@pytest.fixture(scope="module")
def bench_file(tiny_config, tiny_dataset_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bench-config")
    (folder / "tiny.yaml").write_text(dump_config(tiny_config))
    bench = {"name": "tiny", "data": str(tiny_dataset_dir), "base": ["tiny.yaml"], "seeds": [0, 1],
             "overrides": ["train.joint_epochs=1"],
             "models": [{"name": "DGI", "kind": "dgi"},
                        {"name": "dual encoder (dot)", "kind": "dual_encoder", "overrides": ["model.geometry=dot"]},
                        {"name": "popularity", "kind": "popularity"}]}
    (folder / "bench.yaml").write_text(yaml.safe_dump(bench))
    return folder / "bench.yaml"


@pytest.fixture(scope="module")
def bench_dir(bench_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "out"
    result = CliRunner().invoke(app, ["benchmark", "--config", str(bench_file), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    return out


def test_results_cover_every_model_seed_metric_and_bucket(bench_dir):
    results = json.loads((bench_dir / "results.json").read_text())
    models = {model["name"]: model for model in results["models"]}
    assert list(models) == ["DGI", "dual encoder (dot)", "popularity"]
    assert models["DGI"]["seeds"] == [0, 1] and models["popularity"]["seeds"] == [0]
    for model in models.values():
        for run in model["per_seed"]:
            assert {"hit@1", "hit@10", "ndcg@5", "ndcg@20", "mrr"} <= set(run["overall"])
            assert list(run["buckets"]) == [edge["name"] for edge in results["bucket_edges"]]
            assert (bench_dir / run["files"]["hubness"]).exists()
            assert run["git_commit"] and run["machine"]["cpus"] >= 1
        assert set(model["mean"]) == set(model["per_seed"][0]["overall"])
    dgi, dot = models["DGI"], models["dual encoder (dot)"]
    assert dgi["per_seed"][0]["index"]["collisions"]["n_items"] == results["dataset"]["items"]
    assert dgi["per_seed"][0]["overall"] != dgi["per_seed"][1]["overall"]  # the seeds really differ
    hit = [run["overall"]["hit@10"] for run in dgi["per_seed"]]
    assert dgi["mean"]["hit@10"] == pytest.approx(np.mean(hit))
    assert dgi["std"]["hit@10"] == pytest.approx(np.std(hit, ddof=1))
    assert dot["geometry"] == "dot" and dgi["geometry"] == "cosine" and dot["family"] == "dense"
    assert dgi["mean"]["hit@10"] > models["popularity"]["mean"]["hit@10"]
    assert dot["mean"]["hit@10"] > models["popularity"]["mean"]["hit@10"]
    assert results["git_commit"] and results["command"].startswith("dgi benchmark") and results["pending"] == []


def test_generative_rule_is_chosen_on_validation_per_seed(bench_dir):
    results = json.loads((bench_dir / "results.json").read_text())
    models = {model["name"]: model for model in results["models"]}
    for run in models["DGI"]["per_seed"]:
        scores = run["valid_rule_scores"]
        assert set(scores) == {"lexicographic", "fused", "rerank"}
        assert run["method"] == "generative/" + max(scores, key=scores.get)
        assert run["overall"] == pytest.approx(run["rules"][run["method"]])  # test metrics are that rule's
        assert run["rule_buckets"][run["method"]] == pytest.approx({b: m["hit@10"] for b, m in run["buckets"].items()})
    assert models["dual encoder (dot)"]["per_seed"][0]["method"] == "dense"
    row = next(line for line in (bench_dir / "report.md").read_text().splitlines() if line.startswith("| DGI |"))
    assert all(run["method"].split("/")[1] in row for run in models["DGI"]["per_seed"])  # the report names the rule
    report = (bench_dir / "report.md").read_text()
    assert "Every ranking rule, test split" in report and "on the tail buckets under every ranking rule" in report


def test_hubness_and_gradient_files_hold_what_the_figures_need(bench_dir):
    results = json.loads((bench_dir / "results.json").read_text())
    dot = next(model for model in results["models"] if model["name"] == "dual encoder (dot)")
    run = dot["per_seed"][0]
    hubness = np.load(bench_dir / run["files"]["hubness"])
    n_test = results["dataset"]["test_examples"]
    assert hubness["k_occurrence"].sum() == 10 * n_test  # every test context contributes its top 10
    assert run["k_occurrence_skewness"] == pytest.approx(skewness(hubness["k_occurrence"]))
    assert hubness["item_norms"].std() > 0  # dot geometry: free norms
    grads = np.load(bench_dir / run["files"]["grad_norms"])
    assert len(grads["step"]) == len(grads["item_tower"]) > 0 and (grads["item_tower"] > 0).all()


def test_report_and_every_figure_are_written(bench_dir):
    for name in FIGURE_NAMES.values():
        assert (bench_dir / "figures" / name).stat().st_size > 10_000, name
    html = (bench_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= len(FIGURE_NAMES)
    assert "dual encoder (dot)" in (bench_dir / "report.md").read_text()


def test_rerun_resumes_without_retraining(bench_file, bench_dir):
    before = {path: path.stat().st_mtime_ns for path in bench_dir.glob("models/*/seed-*/result.json")}
    result = CliRunner().invoke(app, ["benchmark", "--config", str(bench_file), "--out", str(bench_dir), "--quiet"])
    assert result.exit_code == 0, result.output
    assert {path: path.stat().st_mtime_ns for path in before} == before


def test_dual_encoder_gets_the_same_epoch_budget_as_dgi(bench_file):
    bench = load_bench_config(bench_file)
    dgi, dual = (dgi_config(bench, spec, 0) for spec in bench.models[:2])
    assert dual.train.joint_epochs == 0
    assert dual.train.dense_epochs == dgi.train.dense_epochs + dgi.train.joint_epochs + dgi.train.decoder_epochs
    with_decoder_phase = bench.model_copy(update={"overrides": [*bench.overrides, "train.decoder_epochs=3"]})
    dgi, dual = (dgi_config(with_decoder_phase, spec, 0) for spec in bench.models[:2])
    assert dual.train.dense_epochs == dgi.train.dense_epochs + dgi.train.joint_epochs + 3 and dual.train.decoder_epochs == 0


def test_bad_bench_configs_are_clear_errors(tmp_path):
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "models": [{"name": "a", "kind": "nope"}]}))
    with pytest.raises(ConfigError, match="bench.yaml"):
        load_bench_config(path)
    with pytest.raises(ValueError, match="differ"):
        BenchConfig(name="x", models=[{"name": "A b", "kind": "popularity"}, {"name": "a-b", "kind": "content"}])
    path.write_text(yaml.safe_dump({"name": "x", "models": [{"name": "a", "kind": "popularity"}]}))
    with pytest.raises(ConfigError, match="no dataset"):
        load_bench_config(path)


def test_a_model_may_run_fewer_of_the_benchmark_seeds():
    bench = BenchConfig(name="x", data="d", seeds=[3, 4, 5], models=[
        {"name": "DGI", "kind": "dgi"}, {"name": "ablation", "kind": "dgi", "seeds": 2},
        {"name": "popularity", "kind": "popularity"}])
    assert [seeds_of(bench, spec) for spec in bench.models] == [[3, 4, 5], [3, 4], [3]]
    assert seeds_of(bench.model_copy(update={"seeds": [7]}), bench.models[1]) == [7]  # --seeds 7
    with pytest.raises(ValueError, match="popularity model runs once"):
        BenchConfig(name="x", models=[{"name": "p", "kind": "popularity", "seeds": 2}])
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        BenchConfig(name="x", models=[{"name": "a", "kind": "dgi", "seeds": 0}])


def test_models_are_selected_by_name_or_slug_even_with_commas_in_names():
    specs = BenchConfig(name="x", data="d", models=[
        {"name": "DGI", "kind": "dgi"}, {"name": "dual encoder (dot, no sampled negatives)", "kind": "dual_encoder"},
        {"name": "popularity", "kind": "popularity"}]).models
    chosen = select_models(specs, "popularity,dual encoder (dot, no sampled negatives)", Path("b.yaml"))
    assert [spec.kind for spec in chosen] == ["dual_encoder", "popularity"]  # config order
    assert select_models(specs, " dgi , popularity", Path("b.yaml")) == [specs[0], specs[2]]
    with pytest.raises(ConfigError, match="b.yaml: no model named 'SASRec'"):
        select_models(specs, "DGI,SASRec", Path("b.yaml"))


def test_report_only_reports_finished_runs_and_lists_pending_ones(bench_file, bench_dir, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(bench_dir, partial)
    (partial / "models" / "dgi" / "seed-1" / "result.json").unlink()
    shutil.rmtree(partial / "models" / "popularity")
    before = {path: path.stat().st_mtime_ns for path in partial.glob("models/*/seed-*/result.json")}
    result = CliRunner().invoke(app, ["benchmark", "--config", str(bench_file), "--out", str(partial),
                                      "--report-only", "--quiet"])
    assert result.exit_code == 0, result.output
    assert {path: path.stat().st_mtime_ns for path in partial.glob("models/*/seed-*/result.json")} == before
    results = json.loads((partial / "results.json").read_text())
    assert [(model["name"], model["seeds"]) for model in results["models"]] == [("DGI", [0]), ("dual encoder (dot)", [0, 1])]
    assert results["pending"] == [{"model": "DGI", "seed": 1}, {"model": "popularity", "seed": 0}]
    assert "Incomplete benchmark: 2 (model, seed) runs not finished yet" in (partial / "report.md").read_text()
    empty = tmp_path / "empty"
    result = CliRunner().invoke(app, ["benchmark", "--config", str(bench_file), "--out", str(empty), "--report-only"])
    assert result.exit_code == 2 and "no finished (model, seed) result" in result.output


def test_a_result_of_another_recipe_is_an_error_not_reused(bench_file, bench_dir, tmp_path):
    changed = tmp_path / "bench.yaml"
    bench = yaml.safe_load(bench_file.read_text())
    bench["base"] = [str(bench_file.parent / name) for name in bench["base"]]
    bench["models"][2]["params"] = {"unused": 1}  # popularity now asks for other constructor arguments
    changed.write_text(yaml.safe_dump(bench))
    copy = tmp_path / "out"
    shutil.copytree(bench_dir, copy)
    for flags in ([], ["--report-only"]):
        result = CliRunner().invoke(app, ["benchmark", "--config", str(changed), "--out", str(copy), "--quiet", *flags])
        assert result.exit_code == 2
        assert "models/popularity/seed-0/result.json: computed as" in result.output
        assert "delete" in result.output and "'params': {'unused': 1}" in result.output
    results = json.loads((bench_dir / "results.json").read_text())
    assert {model["name"]: model["spec"]["kind"] for model in results["models"]} == {
        "DGI": "dgi", "dual encoder (dot)": "dual_encoder", "popularity": "popularity"}
    assert all(run["spec"] == model["spec"] for model in results["models"] for run in model["per_seed"])


def test_probe_tail_agrees_with_the_benchmark_ranking(bench_dir):
    results = json.loads((bench_dir / "results.json").read_text())
    dot = next(model for model in results["models"] if model["name"] == "dual encoder (dot)")["per_seed"][0]
    run = RunDirectory(bench_dir / "models" / "dual-encoder-dot" / "seed-0" / "run")
    corpus = pipeline.prepare_corpus(run.config())
    probe = probe_tail(pipeline.load_trained(run, corpus), corpus, "test", temperature=None)
    for bucket, values in probe["buckets"].items():  # the dense path ranks as the benchmark did
        if values["targets"]:
            assert values["hit@10"] == pytest.approx(dot["buckets"][bucket]["hit@10"]), bucket
    assert sum(values["targets"] for values in probe["buckets"].values()) == len(corpus.splits["test"].targets)
    norms = np.load(bench_dir / dot["files"]["hubness"])["item_norms"]
    assert probe["item_norm_median"] == pytest.approx(float(np.median(norms)), rel=1e-5)
    assert probe["training_logit_scale"] == pytest.approx(probe["context_norm_median"] * probe["item_norm_median"])
    assert 0 < probe["per_user_cosine_std_median"] < 1
