"""Small corpora: a validation split carved from train, TREC runs per method 100 deep, the DSI schedule rule."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dgi import pipeline
from dgi.config import load_config
from dgi.data import Dataset, carve_message, carve_validation, load_beir
from dgi.evaluation.evaluate import RULES, fill_ranking, rank_split, relevance
from dgi.evaluation.metrics import mean_metrics, per_query_metrics
from dgi.training.run import RunDirectory

FIXTURE = Path(__file__).parent / "fixtures" / "beir-tiny"


def without_dev(tmp_path: Path) -> Path:
    """The BEIR fixture without dev qrels: a corpus that ships no validation split."""
    directory = tmp_path / "beir-no-dev"
    shutil.copytree(FIXTURE, directory)
    (directory / "qrels" / "dev.tsv").unlink()
    return directory


@pytest.fixture
def no_valid(tmp_path) -> Dataset:
    return load_beir(without_dev(tmp_path), indexing_ratio=1.0)


def queries(examples) -> set[str]:
    return {example.query for example in examples}


def test_carve_moves_whole_queries_deterministically(no_valid):
    train = no_valid.splits["train"]
    assert no_valid.splits["valid"] == [] and len(train) == 14 + 32
    carved = carve_validation(no_valid, 0.3, seed=0, max_examples=2000)
    assert carved == carve_validation(no_valid, 0.3, seed=0, max_examples=2000)
    assert any(carve_validation(no_valid, 0.3, seed, 2000).splits["valid"] != carved.splits["valid"]
               for seed in range(1, 6))  # the seed chooses the queries
    kept, valid = carved.splits["train"], carved.splits["valid"]
    info = carved.meta["valid_carve"]
    assert info == {"ratio": 0.3, "seed": 0, "max_examples": 2000, "examples": 14 + 32 - len(kept),
                    "of": 14, "valid_examples": len(valid)}
    assert info["examples"] >= round(0.3 * 14) and len(valid) <= info["examples"]
    # whole queries: no query text on both sides, and every example of a carved query left train
    carved_queries = queries(valid)
    assert carved_queries and not carved_queries & {e.query for e in kept if not e.id.startswith("index-")}
    assert [e for e in train if e.query in carved_queries and not e.id.startswith("index-")] == [
        e for e in train if e not in kept]
    # indexing examples stay in train; a query and its expansions become one example judging every target
    assert sum(e.id.startswith("index-") for e in kept) == 32 and not any(e.id.startswith("index-") for e in valid)
    assert len(valid) == len(carved_queries)
    for example in valid:
        targets = {e.target for e in train if e.query == example.query}
        assert set(example.relevant or {example.target}) == targets
    assert carved.popularity().sum() == len(kept)  # carved examples are no longer interactions
    assert carve_message(info).startswith(f"dataset has no validation split: carved {info['examples']} of 14 "
                                          f"training examples ({info['examples'] / 14:.0%}, whole queries, seed 0)")


def test_carve_cap_ratio_zero_and_an_existing_split(no_valid):
    one = carve_validation(no_valid, 0.5, seed=1, max_examples=1)
    assert len(queries(one.splits["valid"])) == 1  # the cap: the first query already reaches it
    none = carve_validation(no_valid, 0.0, seed=0, max_examples=2000)
    assert none.splits == {**no_valid.splits} and none.meta["valid_carve"]["examples"] == 0
    assert "none was carved" in carve_message(none.meta["valid_carve"])
    with_dev = load_beir(FIXTURE)
    assert carve_validation(with_dev, 0.3, seed=0, max_examples=2000) is with_dev


@pytest.fixture(scope="module")
def beir_config(embedding_cache):
    def config(data: Path, *overrides: str):
        return load_config([], [f"data.path={data}", f"encoder.cache_dir={embedding_cache}",
                                "data.indexing_ratio=1.0", *overrides])
    return config


def saved(dataset: Dataset, directory: Path) -> Path:
    dataset.save(directory)
    return directory


def test_prepare_corpus_carves_before_indexing_and_says_so(beir_config, tmp_path, capsys):
    data = saved(load_beir(without_dev(tmp_path)), tmp_path / "no-dev")  # valid.jsonl is empty
    corpus = pipeline.prepare_corpus(beir_config(data, "data.valid_carve_ratio=0.3"))
    message = capsys.readouterr().err
    assert "dataset has no validation split: carved" in message and "seed 0" in message
    valid, train = corpus.splits["valid"], corpus.splits["train"]
    carved = corpus.dataset.meta["valid_carve"]
    assert len(valid.targets) == carved["valid_examples"] > 0
    assert not set(valid.example_ids) & set(train.example_ids)
    assert sum(i.startswith("index-") for i in train.example_ids) == 32  # indexing: train only
    assert not any(i.startswith("index-") for i in valid.example_ids)
    assert corpus.popularity.sum() == len(train.targets) - 32 == 14 - carved["examples"]

    corpus = pipeline.prepare_corpus(beir_config(saved(load_beir(FIXTURE), tmp_path / "with-dev")))
    assert "validation split" not in capsys.readouterr().err
    assert len(corpus.splits["valid"].targets) == 4 and len(corpus.splits["train"].targets) == 14 + 32
    assert corpus.popularity.sum() == 14


def test_schedule_rule_raises_dsi_joint_epochs_and_never_lowers(capsys):
    dsi = load_config([], ["data.indexing_ratio=0.5", "train.batch_size=16", "train.joint_epochs=3"])
    raised = pipeline.schedule_for(dsi, 46)  # 3 steps an epoch
    assert raised.train.joint_epochs == 500 == -(-pipeline.MIN_JOINT_STEPS // 3)
    assert dsi.train.joint_epochs == 3 and raised.train.model_copy(update={"joint_epochs": 3}) == dsi.train
    assert "train.joint_epochs raised from 3 to 500" in capsys.readouterr().err
    assert pipeline.schedule_for(dsi, 46, min_joint_steps=7).train.joint_epochs == 3  # ceil(7 / 3) = 3: kept
    long = dsi.model_copy(update={"train": dsi.train.model_copy(update={"joint_epochs": 900})})
    assert pipeline.schedule_for(long, 46) is long  # never lowered
    assert pipeline.schedule_for(dsi, 40_000) is dsi  # 2,500 steps an epoch: enough
    plain = load_config([], ["train.batch_size=16"])
    assert pipeline.schedule_for(plain, 46) is plain  # no indexing examples: the configured schedule
    dense = load_config([], ["data.indexing_ratio=1", "train.joint_epochs=0"])
    assert pipeline.schedule_for(dense, 46) is dense  # a dual encoder has no joint phase
    assert capsys.readouterr().err == ""  # only a change is noted
    assert pipeline.schedule_for(dsi, 46, min_joint_steps=10).train.joint_epochs == 4


def test_fill_ranking_appends_unlisted_fallback_items_below():
    ranked = np.array([[3, 1, -1, -1], [-1, -1, -1, -1], [0, 1, 2, 3]])
    scores = np.array([[-0.5, -0.7, -np.inf, -np.inf], [-np.inf] * 4, [4.0, 3.0, 2.0, 1.0]])
    fallback = np.array([[1, 0, 2, 3], [2, 0, 1, 3], [3, 2, 1, 0]])
    fallback_scores = np.array([[0.9, 0.8, 0.7, 0.6]] * 3)
    filled, filled_scores = fill_ranking(ranked, scores, fallback, fallback_scores)
    assert filled.tolist() == [[3, 1, 0, 2], [2, 0, 1, 3], [0, 1, 2, 3]]
    assert np.allclose(filled_scores, [[-0.5, -0.7, -1.7, -1.8], [0.9, 0.8, 0.7, 0.6], [4.0, 3.0, 2.0, 1.0]])


LIMIT = 40


def read_run(path: Path) -> dict[str, list[tuple[str, int, float, str]]]:
    """query id -> [(doc id, rank, score, run name)] in file order, checking every line's form."""
    rows: dict[str, list[tuple[str, int, float, str]]] = {}
    for line in path.read_text().splitlines():
        query_id, q0, doc_id, rank, score, name = line.split(" ")
        assert q0 == "Q0"
        rows.setdefault(query_id, []).append((doc_id, int(rank), float(score), name))
    return rows


def test_eval_writes_a_trec_run_per_method_100_deep(trained_run, tiny_corpus, tmp_path):
    from dgi.cli import app
    from typer.testing import CliRunner

    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["eval", str(trained_run), "--limit", str(LIMIT), "--out", str(out),
                                      "--trec-depth", "100"])
    assert result.exit_code == 0, result.output
    retriever = pipeline.load_trained(RunDirectory(trained_run), tiny_corpus)
    example_ids = tiny_corpus.splits["test"].example_ids[:LIMIT]
    item_index = tiny_corpus.dataset.item_index
    assert len(item_index) >= 100  # so every query lists exactly 100 items
    dense = rank_split(retriever, tiny_corpus, "test", "dense", 100, LIMIT)
    names = [f"generative/{rule}" for rule in RULES] + ["dense"]
    assert sorted(p.name for p in out.glob("*.trec")) == sorted(
        ["run.trec"] + [f"run.{name.replace('/', '-')}.trec" for name in names])
    for name in names:
        path = out / f"run.{name.replace('/', '-')}.trec"
        rows = read_run(path)
        assert list(rows) == example_ids
        method, rule = name.split("/") if "/" in name else (name, None)
        pure = rank_split(retriever, tiny_corpus, "test", method, 100, LIMIT, rule)
        expected = fill_ranking(*pure, *dense)[0] if rule else dense[0]
        for row, lines in zip(expected, rows.values()):
            docs, ranks, row_scores, run_names = zip(*lines)
            assert ranks == tuple(range(1, 101)) and len(set(docs)) == 100
            assert [item_index[doc] for doc in docs] == row.tolist()
            assert all(a >= b for a, b in zip(row_scores, row_scores[1:]))
            assert set(run_names) == {f"dgi-{name.replace('/', '-')}"}
        if rule:  # the rule's own items first, strictly above the dense ones that complete the row
            live = pure[0] >= 0
            assert (expected[live] == pure[0][live]).all() and (~live).any()
            for n_live, lines in zip(live.sum(axis=1), rows.values()):
                assert lines[n_live - 1][2] > lines[n_live][2]
    metrics = json.loads((out / "metrics.json").read_text())
    assert (out / "run.trec").read_text() == (out / f"run.{metrics['default_method'].replace('/', '-')}.trec").read_text()
    relevant = relevance(tiny_corpus.splits["test"], LIMIT)
    for name in names:  # metrics.json: each method's own ranking at k = 20, not the filled one
        method, rule = name.split("/") if "/" in name else (name, None)
        ranked = rank_split(retriever, tiny_corpus, "test", method, 20, LIMIT, rule)[0]
        assert metrics["methods"][name]["overall"] == mean_metrics(per_query_metrics(ranked, relevant)), name
