"""BEIR loading, graded multi-relevant examples, indexing examples, and graded evaluation end to end."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from dgi.config import ConfigError, load_config
from dgi.data import (
    DataError,
    Dataset,
    Example,
    Item,
    add_indexing_examples,
    load_beir,
    load_dataset,
    to_arrays,
)
from dgi.data.beir import text_spans
from dgi.evaluation.evaluate import relevance
from dgi.evaluation.metrics import mean_metrics, per_query_metrics

FIXTURE = Path(__file__).parent / "fixtures" / "beir-tiny"


@pytest.fixture(scope="module")
def beir() -> Dataset:
    return load_beir(FIXTURE)


def copy_fixture(tmp_path: Path, **files: str | None) -> Path:
    """The fixture with some files replaced ('qrels/dev.tsv' is spelled qrels__dev); None deletes."""
    directory = tmp_path / "beir"
    shutil.copytree(FIXTURE, directory)
    for name, content in files.items():
        path = directory / (name.replace("__", "/") + (".tsv" if "__" in name else ".jsonl"))
        if content is None:
            path.unlink()
        else:
            path.write_text(content)
    return directory


def by_id(examples: list[Example]) -> dict[str, Example]:
    return {example.id: example for example in examples}


def test_fixture_loads_with_expected_counts(beir):
    assert beir.name == "beir-tiny"
    assert len(beir.items) == 32
    assert {split: len(rows) for split, rows in beir.splits.items()} == {"train": 14, "valid": 4, "test": 8}
    assert beir.items[0].text.startswith("Jupiter's Great Red Spot. The Great Red Spot")
    assert beir.items[0].fields == {"title": "Jupiter's Great Red Spot", "metadata": {"source": "hand-written"}}
    untitled = beir.items[beir.item_index["g8"]]
    assert untitled.text.startswith("Watering deeply") and untitled.fields == {"title": ""}
    every_id = {example.id for rows in beir.splits.values() for example in rows}
    assert "q23" not in every_id  # a query without judgments is left out


def test_target_is_the_most_relevant_document_ties_first_in_file(beir):
    test, valid, train = by_id(beir.splits["test"]), by_id(beir.splits["valid"]), by_id(beir.splits["train"])
    assert test["q17"] == Example("b3", query="bread rising and gluten", id="q17",
                                  relevant={"b8": 1.0, "b3": 2.0, "b2": 1.0})
    assert valid["q12"].target == "g3" and valid["q12"].relevant == {"g3": 1.0, "g7": 1.0}
    assert train["q08"].relevant == {"g2": 2.0, "g1": 1.0}  # the score-0 judgment of g6 is skipped
    assert all(example.history == () and example.relevant for example in test.values())


def test_train_split_expands_multi_relevant_queries(beir):
    train = by_id(beir.splits["train"])
    assert [example.id for example in beir.splits["train"]][:6] == ["q01", "q01@a2", "q02", "q02@b2", "q03", "q03@c2"]
    assert train["q01@a2"] == Example("a2", query="what is the giant storm on jupiter", id="q01@a2")
    assert train["q08@g1"].target == "g1" and train["q08@g1"].relevant is None
    assert len(beir.splits["valid"]) == len({example.query for example in beir.splits["valid"]})


def test_graded_qrels_reach_example_arrays(beir):
    index = beir.item_index
    arrays = to_arrays(beir.splits["test"], index, max_history=3)
    q17 = arrays.example_ids.index("q17")
    assert arrays.qrels[q17] == {index["b8"]: 1.0, index["b3"]: 2.0, index["b2"]: 1.0}
    assert arrays.targets[q17] == index["b3"]
    assert relevance(arrays, 2) == arrays.qrels[:2]
    mixed = to_arrays(beir.splits["train"][:2], index, max_history=3)
    assert mixed.qrels == [{index["a1"]: 2.0, index["a2"]: 1.0}, {index["a2"]: 1.0}]
    plain = to_arrays([Example("a1", query="x")], index, max_history=3)
    assert plain.qrels is None
    assert relevance(plain).tolist() == [index["a1"]]


def test_saved_beir_dataset_round_trips(beir, tmp_path):
    beir.save(tmp_path / "saved")
    assert load_dataset(tmp_path / "saved") == beir


def test_missing_train_and_dev_qrels_give_empty_splits(tmp_path):
    dataset = load_beir(copy_fixture(tmp_path, qrels__train=None, qrels__dev=None), name="x")
    assert dataset.name == "x" and dataset.splits["train"] == dataset.splits["valid"] == []
    renamed = load_beir(FIXTURE, valid_split="test", test_split="dev")
    assert renamed.splits["valid"] == load_beir(FIXTURE).splits["test"]


HEADER = "query-id\tcorpus-id\tscore\n"
BAD_BEIR = [
    # (file, content, expected message after the directory)
    ("corpus", '{"_id": "d1", "text": "x"}\n{"_id": "d2", "text": \n',
     "corpus.jsonl:2: invalid JSON: Expecting value (column 1)"),
    ("corpus", '{"text": "x"}\n', "corpus.jsonl:1: field '_id': missing required field"),
    ("corpus", '{"_id": 7, "text": "x"}\n', "corpus.jsonl:1: field '_id': expected a string, got number"),
    ("corpus", '{"_id": "d1", "text": "x"}\n\n{"_id": "d1", "text": "y"}\n',
     "corpus.jsonl:3: field '_id': duplicate document id 'd1' (first seen on line 1)"),
    ("corpus", '{"_id": "d1", "title": ["t"], "text": "x"}\n',
     "corpus.jsonl:1: field 'title': expected a string, got array"),
    ("corpus", '{"_id": "d1", "title": "t"}\n', "corpus.jsonl:1: field 'text': missing required field"),
    ("corpus", "\n", "corpus.jsonl: no documents"),
    ("corpus", None, "corpus.jsonl: file not found"),
    ("queries", '{"_id": "q01", "text": "a"}\n{"_id": "q01", "text": "b"}\n',
     "queries.jsonl:2: field '_id': duplicate query id 'q01' (first seen on line 1)"),
    ("queries", '{"_id": "q01", "text": "  "}\n', "queries.jsonl:1: field 'text': empty query text"),
    ("queries", '{"_id": "", "text": "a"}\n', "queries.jsonl:1: field '_id': empty query id"),
    ("queries", None, "queries.jsonl: file not found"),
    ("qrels__test", "q15\ta6\t1\n",
     "qrels/test.tsv:1: expected the header 'query-id\\tcorpus-id\\tscore', got 'q15\\ta6\\t1'"),
    ("qrels__test", "", "qrels/test.tsv: missing the header 'query-id\\tcorpus-id\\tscore'"),
    ("qrels__train", HEADER + "q01\ta1\n", "qrels/train.tsv:2: expected 3 tab-separated columns, got 2"),
    ("qrels__dev", HEADER + "\nq99\ta1\t1\n", "qrels/dev.tsv:3: field 'query-id': unknown query id 'q99'"),
    ("qrels__test", HEADER + "q15\tzz\t1\n", "qrels/test.tsv:2: field 'corpus-id': unknown corpus id 'zz'"),
    ("qrels__test", HEADER + "q15\ta6\thigh\n", "qrels/test.tsv:2: field 'score': expected a number, got 'high'"),
    ("qrels__test", HEADER + "q15\ta6\tnan\n", "qrels/test.tsv:2: field 'score': non-finite value 'nan'"),
    ("qrels__test", HEADER + "q15\ta6\t1\nq15\ta7\t0\nq15\ta6\t2\n",
     "qrels/test.tsv:4: field 'corpus-id': duplicate judgment of 'a6' for query 'q15' (first seen on line 2)"),
    ("qrels__test", None, "qrels/test.tsv: file not found"),
]


@pytest.mark.parametrize(("name", "content", "expected"), BAD_BEIR)
def test_beir_errors_are_located(tmp_path, name, content, expected):
    directory = copy_fixture(tmp_path, **{name: content})
    with pytest.raises(DataError) as caught:
        load_beir(directory)
    assert str(caught.value) == f"{directory}/{expected}"


ITEMS = '{"id": "a", "text": "red shoe"}\n{"id": "b", "text": "mug"}\n'
BAD_RELEVANT = [
    ('"a"', "expected an object of item id -> relevance, got string"),
    ('{"a": 1, "zz": 1}', "unknown item id 'zz'"),
    ('{"a": 0}', "relevance of 'a' must be finite and > 0, got 0"),
    ('{"a": 1, "b": -2}', "relevance of 'b' must be finite and > 0, got -2"),
    ('{"a": NaN}', "relevance of 'a' must be finite and > 0, got nan"),
    ('{"a": true}', "expected a number for 'a', got boolean"),
    ('{"a": "2"}', "expected a number for 'a', got string"),
    ('{"b": 1}', "does not contain the target 'a'"),
    ("{}", "does not contain the target 'a'"),
]


@pytest.mark.parametrize(("relevant", "message"), BAD_RELEVANT)
def test_relevant_field_errors_are_located(tmp_path, relevant, message):
    (tmp_path / "items.jsonl").write_text(ITEMS)
    (tmp_path / "train.jsonl").write_text('{"target": "a"}\n')
    (tmp_path / "test.jsonl").write_text(f'{{"target": "b"}}\n{{"target": "a", "relevant": {relevant}}}\n')
    with pytest.raises(DataError) as caught:
        load_dataset(tmp_path)
    assert str(caught.value) == f"{tmp_path}/test.jsonl:2: field 'relevant': {message}"


def test_relevant_field_loads_and_round_trips(tmp_path):
    (tmp_path / "items.jsonl").write_text(ITEMS)
    (tmp_path / "train.jsonl").write_text('{"target": "a", "relevant": null}\n')
    (tmp_path / "test.jsonl").write_text('{"target": "b", "relevant": {"a": 1, "b": 2.5}}\n')
    dataset = load_dataset(tmp_path)
    assert dataset.splits["train"][0].relevant is None
    assert dataset.splits["test"][0] == Example("b", id="test-1", relevant={"a": 1.0, "b": 2.5})
    dataset.save(tmp_path / "copy")
    assert load_dataset(tmp_path / "copy").splits == dataset.splits
    with pytest.raises(ValueError, match="not in relevant"):
        Example("a", relevant={"b": 1.0})


def test_indexing_examples_ratio_and_determinism(beir):
    full = add_indexing_examples(beir, 1.0)
    extra = full.splits["train"][len(beir.splits["train"]):]
    assert [example.target for example in extra] == [item.id for item in beir.items]
    assert extra[0] == Example("a1", query=beir.items[0].text, id="index-a1")
    assert full.splits["valid"] is beir.splits["valid"] and full.splits["test"] is beir.splits["test"]
    assert full.meta["indexing"] == {"ratio": 1.0, "seed": 0, "examples": 32}
    assert len(beir.splits["train"]) == 14  # the input is not modified

    def chosen(ratio: float, seed: int) -> list[str]:
        dataset = add_indexing_examples(beir, ratio, seed)
        return [example.target for example in dataset.splits["train"][14:]]

    half = chosen(0.5, 3)
    assert len(half) == 16 and half == chosen(0.5, 3) and half != chosen(0.5, 4)
    assert half == sorted(half, key=beir.item_index.__getitem__)  # corpus order
    assert set(chosen(0.25, 3)) < set(half)  # a smaller ratio picks a subset
    assert add_indexing_examples(beir, 0.0) is beir
    assert load_beir(FIXTURE, indexing_ratio=0.5, seed=3) == add_indexing_examples(beir, 0.5, 3)


def test_indexing_skips_items_without_text_and_rejects_bad_input(beir):
    dataset = Dataset("d", [Item("a", "red shoe"), Item("b", " ")], {"train": [], "test": []}, {})
    assert [example.id for example in add_indexing_examples(dataset, 1.0).splits["train"]] == ["index-a"]
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        add_indexing_examples(dataset, 1.5)
    clashing = Dataset("d", dataset.items, {"train": [Example("b", id="index-a")], "test": []}, {})
    with pytest.raises(ValueError, match="indexing id 'index-a'"):
        add_indexing_examples(clashing, 1.0)
    assert load_config([], ["data.indexing_ratio=0.5"]).data.indexing_ratio == 0.5
    with pytest.raises(ConfigError, match="indexing_ratio"):
        load_config([], ["data.indexing_ratio=2"])


def test_span_indexing_adds_short_seeded_queries_of_each_item_text(beir):
    plain = add_indexing_examples(beir, 1.0).splits["train"][14:]
    spans = add_indexing_examples(beir, 1.0, seed=0, spans=2)
    extra = spans.splits["train"][14:]
    assert spans.meta["indexing"] == {"ratio": 1.0, "seed": 0, "examples": 96, "spans": 2}
    assert extra[::3] == plain  # each item's whole-text example, then its spans
    for item, first, second in zip(beir.items, extra[1::3], extra[2::3]):
        assert (first.id, second.id) == (f"index-{item.id}-span0", f"index-{item.id}-span1")
        words = " ".join(re.findall(r"\w+", item.text.lower()))
        for example in (first, second):
            assert example.target == item.id and f" {example.query} " in f" {words} "
            assert 2 <= len(example.query.split()) <= 4 or example.query == words
    assert spans == add_indexing_examples(beir, 1.0, seed=0, spans=2)
    assert extra != add_indexing_examples(beir, 1.0, seed=1, spans=2).splits["train"][14:]
    rng = np.random.default_rng(0)
    assert text_spans("Red", 2, rng) == ["red", "red"] and text_spans("...", 2, rng) == []
    with pytest.raises(ConfigError, match="indexing_ratio is 0"):
        load_config([], ["data.indexing_spans=2"])
    clashing = Dataset("d", [Item("a", "red shoe"), Item("a-span0", "blue shoe")], {"train": [], "test": []}, {})
    with pytest.raises(ValueError, match="indexing id 'index-a-span0'"):
        add_indexing_examples(clashing, 1.0, spans=1)


@pytest.fixture(scope="module")
def beir_run(beir, embedding_cache, tmp_path_factory):
    """A tiny model trained on the fixture (saved in the dgi format) with one indexing example per item;
    the DSI schedule rule asks for 6 joint steps (3 an epoch) instead of MIN_JOINT_STEPS, to stay fast."""
    from dgi.data.corpus import encode_corpus
    from dgi.pipeline import text_encoder, train

    data = tmp_path_factory.mktemp("beir-data")
    beir.save(data)
    config = load_config([], [
        f"data.path={data}", "data.indexing_ratio=1.0", f"encoder.cache_dir={embedding_cache}",
        "model.width=32", "model.context_layers=1", "model.decoder_layers=1", "model.attention_heads=2",
        "train.batch_size=16", "train.dense_epochs=1", "train.joint_epochs=1", "train.warmup_steps=2",
        "search.beam_size=10", "search.rerank_beam_size=20",
    ])
    corpus = encode_corpus(load_dataset(data), text_encoder(config), config.data.max_history,
                           config.data.indexing_ratio, config.train.seed)
    run = train(config, tmp_path_factory.mktemp("beir-runs") / "dgi", corpus, progress=False, min_joint_steps=6)
    return run, corpus


def test_indexing_examples_reach_training_but_not_popularity(beir_run):
    _, corpus = beir_run
    assert len(corpus.splits["train"].targets) == 14 + 32
    assert corpus.popularity.sum() == 14
    assert corpus.splits["train"].example_ids[-1] == "index-c8"


def test_dsi_run_trains_the_raised_joint_schedule(beir_run):
    run, _ = beir_run
    assert run.config().train.joint_epochs == 2 and run.info()["configured_joint_epochs"] == 1
    assert [json.loads(line)["phase"] for line in run.log_file.read_text().splitlines()] == ["dense", "joint", "joint"]


def test_end_to_end_evaluation_uses_graded_relevance(beir_run):
    from dgi.evaluation.evaluate import evaluate
    from dgi.pipeline import evaluate_run, load_trained

    run, corpus = beir_run
    qrels = corpus.splits["test"].qrels
    assert any(len(judged) == 3 and 2.0 in judged.values() for judged in qrels)
    report, rankings = evaluate(load_trained(run, corpus), corpus, "test")
    for name, (ranked, _) in rankings.items():
        expected = mean_metrics(per_query_metrics(ranked, qrels))
        assert report["methods"][name]["overall"] == pytest.approx(expected), name

    written = evaluate_run(run.path, "test", corpus=corpus)
    for name, method in written["methods"].items():  # metrics.json scores each method's own top 20
        assert {key: method[key] for key in ("overall", "buckets")} == {
            key: report["methods"][name][key] for key in ("overall", "buckets")}, name
    # The corpus has 32 items, fewer than the default depth of 100: every run file lists all of them,
    # a generative rule's own items first (those evaluate ranked), then the dense path's other items.
    rows = {query_id: row for row, query_id in enumerate(corpus.splits["test"].example_ids)}
    for name, (pure, _) in rankings.items():
        listed = np.full((8, 32), -1)
        for line in (run.path / "eval-test" / f"run.{name.replace('/', '-')}.trec").read_text().splitlines():
            query_id, _, doc_id, rank, _, _ = line.split()
            listed[rows[query_id], int(rank) - 1] = corpus.dataset.item_index[doc_id]
        assert (np.sort(listed, axis=1) == np.arange(32)).all(), name
        if name != "dense":  # (the dense path's ties may order differently at another depth)
            live = pure >= 0
            assert (listed[:, :20][live] == pure[live]).all(), name
    default = run.path / "eval-test" / f"run.{written['default_method'].replace('/', '-')}.trec"
    assert (run.path / "eval-test" / "run.trec").read_text() == default.read_text()
