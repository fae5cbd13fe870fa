"""End to end on a tiny synthetic catalog with the real text encoder: train, evaluate, resume, search, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dgi import pipeline
from dgi.baselines import PopularityBaseline
from dgi.cli import app
from dgi.data import Item
from dgi.evaluation.metrics import mean_metrics, per_query_metrics
from dgi.pipeline import load_retriever
from dgi.training.run import RunDirectory
from dgi.training.trainer import build_model
from dgi.training.validation import validation_report


@pytest.fixture(scope="module")
def test_report(trained_run, tiny_corpus):
    return pipeline.evaluate_run(trained_run, "test", corpus=tiny_corpus)


def test_dgi_clearly_beats_popularity(test_report, tiny_corpus):
    ranked, _ = PopularityBaseline().fit(tiny_corpus).rank(tiny_corpus, "test", 20)
    popularity = mean_metrics(per_query_metrics(ranked, tiny_corpus.splits["test"].targets))
    dgi = test_report["methods"]["generative/lexicographic"]["overall"]
    assert dgi["hit@10"] > 2 * popularity["hit@10"] and dgi["hit@10"] > popularity["hit@10"] + 0.15
    assert dgi["ndcg@10"] > 2 * popularity["ndcg@10"]


def test_report_has_every_rule_buckets_and_index_health(test_report, trained_run):
    methods = test_report["methods"]
    assert set(methods) == {"generative/lexicographic", "generative/fused", "generative/rerank", "dense"}
    for method in methods.values():
        assert {"hit@1", "hit@5", "hit@10", "hit@20", "ndcg@10", "mrr"} <= set(method["overall"])
        assert set(method["buckets"]) == {"B0", "B1", "B2", "B3", "B4"}
        assert sum(bucket["count"] for bucket in method["buckets"].values()) == test_report["n_examples"]
    assert 0.0 <= test_report["invalid_sid_rate"] <= 1.0
    assert 0.0 < test_report["index"]["collisions"]["unique_share"] <= 1.0
    written = json.loads((trained_run / "eval-test" / "metrics.json").read_text())
    assert written["methods"]["dense"]["overall"] == methods["dense"]["overall"]
    lines = (trained_run / "eval-test" / "run.trec").read_text().splitlines()
    assert lines and len(lines[0].split()) == 6


def test_eval_searches_a_trained_run_differently_without_touching_its_own_evaluation(trained_run, tiny_corpus, tmp_path):
    own = pipeline.evaluate_run(trained_run, "valid", tmp_path / "own", limit=60, corpus=tiny_corpus)
    wide = pipeline.evaluate_run(trained_run, "valid", tmp_path / "wide", limit=60, corpus=tiny_corpus,
                                 search=["search.beam_size=2", "search.fusion_weight=50"])
    assert wide["search_overrides"] == ["search.beam_size=2", "search.fusion_weight=50"] and wide["beam_size"] == 2
    assert wide["methods"]["dense"]["overall"] == own["methods"]["dense"]["overall"]  # the same trained model
    assert wide["methods"]["generative/lexicographic"]["overall"] != own["methods"]["generative/lexicographic"]["overall"]
    with pytest.raises(ValueError, match="only search"):
        pipeline.evaluate_run(trained_run, "valid", tmp_path / "x", corpus=tiny_corpus, search=["model.width=8"])
    with pytest.raises(ValueError, match="--out"):
        pipeline.evaluate_run(trained_run, "valid", corpus=tiny_corpus, search=["search.beam_size=2"])
    result = CliRunner().invoke(app, ["eval", str(trained_run), "--split", "valid", "--set", "train.lr=1"])
    assert result.exit_code != 0 and "only search.* settings" in result.output


def test_run_directory_and_epoch_log(trained_run):
    run = RunDirectory(trained_run)
    for path in (run.config_file, run.info_file, run.best_file, run.last_file, run.index_file, run.log_file):
        assert path.exists(), path
    records = [json.loads(line) for line in run.log_file.read_text().splitlines()]
    assert [r["phase"] for r in records] == ["dense", "joint", "joint"]
    joint = records[-1]
    assert {"infonce", "ntp", "global", "local", "diversity"} <= set(joint["losses"])
    assert joint["gamma_quantizer"] > 0 and len(joint["gamma_heads"]) == 3 and joint["tau"] == pytest.approx(0.1)
    assert len(joint["index"]["code_usage"]) == 3 and "collision_rate" in joint["index"]["collisions"]
    assert {"dense", "generative"} <= set(joint["valid"])
    assert run.state()["best_epoch"] in (2, 3)
    assert not list(trained_run.glob("*.tmp"))


@pytest.mark.parametrize("command", ["train", "eval"])
def test_train_threads_hold_from_the_text_encoding_on(command, tiny_config, trained_run, tmp_path, monkeypatch):
    """The dataset's text encoding runs on train.threads, not on torch's default of every core."""
    import shutil

    import yaml

    class Encoding(Exception):
        pass

    def encode_corpus(*args, **kwargs):
        raise Encoding(torch.get_num_threads())

    monkeypatch.setattr(pipeline, "encode_corpus", encode_corpus)
    config = tiny_config.model_copy(update={"train": tiny_config.train.model_copy(update={"threads": 1})})
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(Encoding) as seen:
            if command == "train":
                pipeline.train(config, tmp_path / "run", progress=False)
            else:
                run = tmp_path / "copy"
                shutil.copytree(trained_run, run)
                saved = yaml.safe_load((run / "config.yaml").read_text())
                saved["train"]["threads"] = 1
                (run / "config.yaml").write_text(yaml.safe_dump(saved))
                pipeline.evaluate_run(run, "valid")
    finally:
        torch.set_num_threads(before)
    assert seen.value.args == (1,)


def test_resume_after_interruption_reproduces_the_uninterrupted_run(tiny_config, tiny_corpus, trained_run,
                                                                    tmp_path, monkeypatch):
    from dgi.training.trainer import Trainer

    original = Trainer._checkpoint
    calls = {"n": 0}

    def interrupt_after_two(self, record):
        original(self, record)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_checkpoint", interrupt_after_two)
    with pytest.raises(KeyboardInterrupt):
        pipeline.train(tiny_config, tmp_path / "run", tiny_corpus, progress=False)
    monkeypatch.setattr(Trainer, "_checkpoint", original)
    assert RunDirectory(tmp_path / "run").state()["epoch"] == 2
    trainer = Trainer(tiny_config, tiny_corpus, RunDirectory(tmp_path / "run"), progress=False)
    trainer.resume()
    trainer.fit()
    from dgi.io import load_tensors

    a = load_tensors(tmp_path / "run" / "last.safetensors")
    b = load_tensors(trained_run / "last.safetensors")
    for name in a:
        if name.startswith("model."):
            assert torch.allclose(a[name], b[name], atol=1e-5), name


def test_python_api_search_and_adding_items(trained_run, tiny_corpus):
    retriever = load_retriever(trained_run)
    example = tiny_corpus.dataset.splits["test"][0]
    hits = retriever.search([example.query], [list(example.history)], k=5)[0]
    assert 0 < len(hits) <= 5
    assert all(retriever.index.is_valid(torch.tensor([hit.sid])).all() for hit in hits)
    assert [hit.beam_score for hit in hits] == sorted((hit.beam_score for hit in hits), reverse=True)

    new = Item(id="NEW-1", text=tiny_corpus.dataset.items[0].text + " limited edition")
    retriever.add_items([new])
    position = retriever.item_ids.index("NEW-1")
    sid = retriever.index.codes[position]
    items, offsets = retriever.index.items_of(sid[None])
    assert position in items[offsets[0]:offsets[1]].tolist()
    found = retriever.search([new.text], [[]], k=20, rule="rerank", beam_size=40)[0]
    assert "NEW-1" in [hit.item_id for hit in found]
    with pytest.raises(ValueError, match="already indexed"):
        retriever.add_items([new])


def test_unknown_history_item_is_a_clear_error(trained_run):
    with pytest.raises(KeyError, match="NOPE"):
        load_retriever(trained_run).search([None], [["NOPE"]])


def test_decoder_phase_trains_only_the_decoder_on_the_best_epochs_fixed_sids(tiny_config, tiny_corpus, trained_run,
                                                                            tmp_path):
    config = tiny_config.model_copy(deep=True)
    config.train.decoder_epochs, config.train.decoder_lr = 2, 3e-3
    run = pipeline.train(config, tmp_path / "decoder", tiny_corpus, progress=False)
    records = [json.loads(line) for line in run.log_file.read_text().splitlines()]
    assert [r["phase"] for r in records] == ["dense", "joint", "joint", "decoder", "decoder"]
    for record in records[1:]:  # every rule, the dense path and the diagnostics, every generative epoch
        valid = record["valid"]
        assert {"dense", "generative/lexicographic", "generative/fused", "generative/rerank"} <= set(valid)
        assert len(valid["beam_recall"]["overall"]) == 3 and len(record["train"]["ntp_accuracy"]["overall"]) == 3
        recall = valid["beam_recall"]["overall"]
        assert 1.0 >= recall[0] >= recall[1] >= recall[2] >= 0.0  # a longer prefix survives less often
        assert 0.0 <= valid["invalid_sid_rate"] <= 1.0 and set(valid["ntp_loss"]["buckets"]) == {f"B{b}" for b in range(5)}
    # It starts from the best joint epoch (the same as trained_run's: same seed and schedule up to there)
    # and leaves the towers, the quantizer and so the SIDs as they were.
    best_joint, last = build_model(config, tiny_corpus), build_model(config, tiny_corpus)
    RunDirectory.load_weights(trained_run / "model.safetensors", best_joint)
    RunDirectory.load_weights(run.last_file, last)
    frozen = ("item_tower", "query_tower", "context_encoder", "quantizer", "item_id_embedding")
    for name, tensor in last.state_dict().items():
        if name.startswith(frozen):
            assert torch.allclose(tensor, best_joint.state_dict()[name], atol=1e-5), name
    with torch.no_grad():
        assert torch.equal(last.frozen_codes, last.quantizer.encode(last.catalog_vectors(tiny_corpus.item_embeddings)))
    assert records[3]["valid"]["dense"] == records[4]["valid"]["dense"]  # towers frozen: the dense path is fixed
    assert records[4]["train"]["ntp_loss"]["overall"] != records[3]["train"]["ntp_loss"]["overall"]


def test_patience_ends_a_phase_and_resets_at_the_next():
    from types import SimpleNamespace

    from dgi.training.trainer import Trainer

    phases = ["dense", "joint", "joint", "joint", "decoder", "decoder"]
    trainer = SimpleNamespace(config=SimpleNamespace(train=SimpleNamespace(patience=1)), selectable={"joint", "decoder"},
                              state={"stale_epochs": 1})
    assert Trainer._next_epoch(trainer, 2, phases) == 4 and trainer.state["stale_epochs"] == 0
    trainer.state["stale_epochs"] = 0
    assert Trainer._next_epoch(trainer, 1, phases) == 2
    trainer.state["stale_epochs"] = 1
    assert Trainer._next_epoch(trainer, 4, phases) == 6
    trainer.config.train.patience = None
    assert Trainer._next_epoch(trainer, 2, phases) == 3


def test_frozen_untied_dot_ablation_trains_and_evaluates(tiny_config, tiny_corpus, tmp_path):
    config = tiny_config.model_copy(deep=True)
    config.quantizer.gradient, config.quantizer.heads, config.quantizer.logits = "frozen", "untied", "dot"
    config.train.joint_epochs = 1
    run = pipeline.train(config, tmp_path / "without-all", tiny_corpus, progress=False)
    records = [json.loads(line) for line in run.log_file.read_text().splitlines()]
    assert [r["phase"] for r in records] == ["dense", "quantizer", "joint"]
    report = pipeline.evaluate_run(run.path, "valid", corpus=tiny_corpus, limit=100)
    assert np.isfinite(report["methods"]["generative/lexicographic"]["overall"]["hit@10"])
    retriever = load_retriever(run.path)
    assert torch.equal(retriever.index.codes.long(), retriever.model.frozen_codes)


def test_cli_synth_eval_and_search(trained_run, tmp_path, tiny_corpus):
    runner = CliRunner()
    result = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "data"), "--items", "300",
                                 "--examples", "2000", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "items.jsonl").exists()
    result = runner.invoke(app, ["eval", str(trained_run), "--split", "valid", "--limit", "50",
                                 "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    assert "hit@10" in result.output and (tmp_path / "eval" / "metrics.json").exists()
    history = ",".join(tiny_corpus.dataset.splits["test"][1].history[-3:])
    result = runner.invoke(app, ["search", str(trained_run), "hiking boots", "--history", history, "--k", "3"])
    assert result.exit_code == 0, result.output
    assert "SID" in result.output


@pytest.mark.parametrize("geometry", ["cosine", "dot"])
def test_dual_encoder_run_has_dense_path_only(tiny_config, tiny_corpus, tmp_path, geometry):
    """train.joint_epochs=0 is the trained dual-encoder baseline: no index, dense evaluation and search."""
    config = tiny_config.model_copy(deep=True)
    config.model.geometry, config.train.joint_epochs, config.train.dense_epochs = geometry, 0, 2
    run = pipeline.train(config, tmp_path / geometry, tiny_corpus, progress=False)
    records = [json.loads(line) for line in run.log_file.read_text().splitlines()]
    assert [r["phase"] for r in records] == ["dense", "dense"]
    assert run.state()["best_epoch"] in (1, 2) and not run.index_file.exists()
    assert all(len(r["item_grad_norm"]) == records[0]["step"] and min(r["item_grad_norm"]) > 0 for r in records)
    report = pipeline.evaluate_run(run.path, "valid", corpus=tiny_corpus, limit=200)
    assert list(report["methods"]) == ["dense"] and "index" not in report
    popularity = _popularity_hit_at_10(tiny_corpus, 200)
    assert report["methods"]["dense"]["overall"]["hit@10"] > popularity + 0.05
    retriever = load_retriever(run.path)
    norms = retriever.item_vectors.norm(dim=-1)
    if geometry == "cosine":
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    else:
        assert norms.std() > 1e-3  # dot geometry keeps the norms free
    hits = retriever.search([None], [[tiny_corpus.item_ids[3]]], k=5)[0]
    assert len(hits) == 5 and all(hit.sid == () for hit in hits)


def test_dot_geometry_with_a_generative_phase_is_rejected():
    from dgi.config import load_config

    with pytest.raises(ValueError, match="joint_epochs=0"):
        load_config([], ["model.geometry=dot", "train.joint_epochs=2"])


def test_device_setting_resolves_or_fails_clearly():
    from dgi.device import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")


def _popularity_hit_at_10(corpus, limit: int) -> float:
    ranked, _ = PopularityBaseline().fit(corpus).rank(corpus, "valid", 10, limit)
    return mean_metrics(per_query_metrics(ranked, corpus.splits["valid"].targets[:limit]))["hit@10"]


def test_lean_validation_scores_the_configured_rule_like_the_full_report(trained_run, tiny_corpus):
    retriever = load_retriever(trained_run)
    full = validation_report(retriever, tiny_corpus, "valid", 150, generative=True)
    lean = validation_report(retriever, tiny_corpus, "valid", 150, generative=True, diagnostics=False)
    rule = f"generative/{retriever.search_config.rule}"
    assert set(lean) == {"dense", rule, "generative"}
    assert lean[rule] == full[rule] == lean["generative"] and lean["dense"] == full["dense"]


def test_search_with_the_dense_rule_is_the_dense_path(trained_run, tiny_corpus):
    retriever = load_retriever(trained_run)
    histories = [list(example.history) for example in tiny_corpus.dataset.splits["test"][:8]]
    hits = retriever.search([None] * 8, histories, k=5, rule="dense")
    history, queries, has_query = retriever._encode_inputs([None] * 8, histories)
    items, scores = retriever.dense(history, queries, has_query, 5)
    assert [[hit.item_id for hit in row] for row in hits] == [[retriever.item_ids[i] for i in row] for row in items.tolist()]
    assert all(hit.sid == () and hit.score == hit.cosine for row in hits for hit in row)
    with pytest.raises(ValueError, match="one of lexicographic, fused, rerank, dense"):
        retriever.search([None], [[]], rule="best")


def test_bf16_decoder_steps_give_valid_beams_close_to_fp32(trained_run, tiny_corpus):
    retriever = load_retriever(trained_run)
    histories = [list(example.history) for example in tiny_corpus.dataset.splits["test"][:64]]
    exact = retriever.search([None] * 64, histories, k=5, rule="lexicographic")
    retriever.search_config = retriever.search_config.model_copy(update={"precision": "bf16"})
    fast = retriever.search([None] * 64, histories, k=5, rule="lexicographic")
    sids = torch.tensor([hit.sid for row in fast for hit in row])
    assert len(sids) == 5 * 64 and bool(retriever.index.is_valid(sids).all())  # constrained: every SID exists
    same_first = sum(a[0].item_id == b[0].item_id for a, b in zip(exact, fast)) / 64
    assert same_first > 0.8  # bf16 may reorder near-tied beams, rarely more


def test_level_weights_scale_each_levels_log_probs_in_the_beam_score(trained_run, tiny_corpus):
    from dgi.search.beam import reference_beam_search

    retriever = load_retriever(trained_run)
    histories = [list(example.history) for example in tiny_corpus.dataset.splits["test"][:16]]
    history, queries, has_query = retriever._encode_inputs([None] * 16, histories)
    with torch.no_grad():
        context = retriever.context(history, queries, has_query)
        plain = retriever.beams(context, 4)
        weights = [1.0, 0.5, 0.25]
        retriever.search_config = retriever.search_config.model_copy(update={"level_weights": weights})
        weighted = retriever.beams(context, 4)
        memory = retriever.model.decoder.memory(context.memory, context.padding)
        reference = reference_beam_search(  # the whole prefix through the decoder, each level's log-probs weighted
            lambda prefix, _: retriever.model.step_log_probs(context, prefix, memory) * weights[prefix.shape[2]],
            16, retriever.index, 4)
        retriever.search_config = retriever.search_config.model_copy(update={"level_weights": [2.0, 1.0, 0.5]})
        doubled = retriever.beams(context, 4)
    assert torch.equal(weighted.codes, reference.codes)
    assert torch.allclose(weighted.scores, reference.scores, atol=1e-4)
    assert not torch.equal(weighted.codes, plain.codes)  # the weights change which beams survive
    assert torch.equal(doubled.codes, weighted.codes)  # one factor on every level changes nothing but the scale
    assert torch.allclose(doubled.scores, 2 * weighted.scores, atol=1e-4)
    retriever.search_config = retriever.search_config.model_copy(update={"level_weights": [1.0, 0.5]})
    with pytest.raises(ValueError, match="level_weights has 2 entries"):
        retriever.beams(context, 4)


def test_level_weights_are_checked_against_the_sid_levels():
    from dgi.config import ConfigError, load_config

    assert load_config([], ["search.level_weights=[1, 0.5, 0.25]"]).search.level_weights == [1.0, 0.5, 0.25]
    with pytest.raises(ConfigError, match="level_weights has 2 entries for 3 SID levels"):
        load_config([], ["search.level_weights=[1, 0.5]"])
    with pytest.raises(ConfigError, match="must all be > 0"):
        load_config([], ["search.level_weights=[1, 0, 1]"])
