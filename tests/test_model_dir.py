"""The self-contained model directory: served with no dataset, cache or run files; refused when damaged."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dgi import pipeline
from dgi.cli import app
from dgi.data import Item
from dgi.io import CorruptFileError, atomic_directory
from dgi.model_dir import CATALOG, MANIFEST, WEIGHTS
from dgi.retriever import Retriever
from dgi.training.run import RunDirectory


@pytest.fixture
def model_copy(trained_run, tmp_path):
    """The run's exported model directory, copied away from the run."""
    return shutil.copytree(RunDirectory(trained_run).model_dir, tmp_path / "shipped")


def _forbid_the_dataset(monkeypatch) -> None:
    def refuse(*_args, **_kwargs):
        raise AssertionError("loading a model directory must not read the dataset")

    monkeypatch.setattr(pipeline, "prepare_corpus", refuse)
    monkeypatch.setattr(pipeline, "load_dataset", refuse)


def test_a_copied_model_directory_searches_like_the_run_without_its_dataset(trained_run, tiny_corpus, model_copy,
                                                                             monkeypatch):
    reference = pipeline.load_trained(RunDirectory(trained_run), tiny_corpus)
    _forbid_the_dataset(monkeypatch)
    shipped = pipeline.load_retriever(model_copy)
    history = [[item.id for item in tiny_corpus.dataset.items[:3]], [tiny_corpus.dataset.items[7].id]]
    queries = [None, tiny_corpus.dataset.items[11].text]
    for rule in ("lexicographic", "rerank"):
        want = reference.search(queries, history, k=10, rule=rule)
        got = shipped.search(queries, history, k=10, rule=rule)
        assert [[h.item_id for h in row] for row in got] == [[h.item_id for h in row] for row in want]
        for got_row, want_row in zip(got, want):  # item vectors travel in fp16
            np.testing.assert_allclose([h.cosine for h in got_row], [h.cosine for h in want_row], atol=2e-3)
    assert torch.equal(shipped.index.codes, reference.index.codes)
    assert shipped.item_texts == reference.item_texts


def test_the_cli_searches_and_exports_a_model_directory(model_copy, tiny_corpus, tmp_path, monkeypatch):
    _forbid_the_dataset(monkeypatch)
    item = tiny_corpus.dataset.items[0]
    result = CliRunner().invoke(app, ["search", str(model_copy), item.text[:40], "--k", "3"])
    assert result.exit_code == 0, result.output
    assert "SID" in result.output
    exported = tmp_path / "again"
    result = CliRunner().invoke(app, ["export", str(model_copy.parent / "missing-run"), str(exported)])
    assert result.exit_code != 0 and not exported.exists()


def test_items_added_after_loading_survive_a_save_and_load(model_copy, tiny_corpus, tmp_path):
    retriever = Retriever.load(model_copy)
    new = Item(id="NEW-1", text=tiny_corpus.dataset.items[3].text + " travel size")
    retriever.add_items([new])
    retriever.save(tmp_path / "grown")
    reloaded = Retriever.load(tmp_path / "grown")
    assert reloaded.item_ids[-1] == "NEW-1" and len(reloaded.item_ids) == len(tiny_corpus.item_ids) + 1
    assert torch.equal(reloaded.index.codes, retriever.index.codes)
    found = reloaded.search([new.text], [[]], k=20, rule="rerank", beam_size=40)[0]
    assert "NEW-1" in [hit.item_id for hit in found]


def test_training_counts_travel_with_the_model_and_correct_every_sid_by_its_prior(model_copy, tiny_corpus):
    retriever = Retriever.load(model_copy)
    assert retriever.item_counts.tolist() == tiny_corpus.popularity.tolist()
    context = retriever.context(torch.zeros(2, 1, dtype=torch.long), tiny_corpus.item_embeddings[[4, 9]],
                                torch.ones(2, dtype=torch.bool))
    every_sid = retriever.index.n_items  # a beam this wide keeps every valid SID: the search is exhaustive
    plain, free = retriever.beams(context, every_sid), retriever.beams(context, 5, constrained=False)
    retriever.search_config = retriever.search_config.model_copy(update={"popularity_correction": 0.5,
                                                                         "level_weights": [1.0, 1.0, 1.0]})
    corrected, free_again = retriever.beams(context, every_sid), retriever.beams(context, 5, constrained=False)
    assert torch.equal(free.codes, free_again.codes)  # unconstrained beams are the decoder's own, uncorrected
    prior = retriever.popularity_prior()
    for row in range(2):
        want = {tuple(sid): score for sid, score in zip(plain.codes[row].tolist(), plain.scores[row].tolist())
                if sid[0] >= 0}
        got = {tuple(sid): score for sid, score in zip(corrected.codes[row].tolist(), corrected.scores[row].tolist())
               if sid[0] >= 0}
        assert got.keys() == want.keys()
        for sid, score in got.items():
            log_prior = sum(float(prior.log_conditional(torch.tensor(sid[:j], dtype=torch.long).view(1, 1, j))[0, 0, sid[j]])
                            for j in range(len(sid)))
            assert score == pytest.approx(want[sid] - 0.5 * log_prior, abs=1e-4)
    retriever.add_items([Item(id="NEW-2", text="a brand new lipstick")])  # no training interactions yet
    assert retriever.item_counts[-1] == 0 and retriever.popularity_prior().index.n_items == len(retriever)


def test_a_model_without_training_counts_refuses_the_popularity_correction(model_copy):
    retriever = Retriever.load(model_copy)
    retriever.item_counts = None
    retriever.search_config = retriever.search_config.model_copy(update={"popularity_correction": 0.5})
    with pytest.raises(ValueError, match="training counts.*dgi export"):
        retriever.search([None], [[retriever.item_ids[0]]], k=3)


def test_catalogue_is_stored_compactly(model_copy):
    from safetensors import safe_open

    with safe_open(str(model_copy / CATALOG), framework="pt") as f:
        assert f.get_slice("item_vectors").get_dtype() == "F16"
        assert f.get_slice("codes").get_dtype() == "U8"  # 256-way codebooks or fewer


@pytest.mark.parametrize("damage", ["truncate-catalog", "empty-weights", "missing-items", "version", "not-json",
                                    "no-manifest"])
def test_a_damaged_model_directory_is_refused_naming_the_file(model_copy, damage):
    manifest = model_copy / MANIFEST
    if damage == "truncate-catalog":
        data = (model_copy / CATALOG).read_bytes()
        (model_copy / CATALOG).write_bytes(data[: len(data) // 2])
        named = CATALOG
    elif damage == "empty-weights":
        (model_copy / WEIGHTS).write_bytes(b"")
        named = WEIGHTS
    elif damage == "missing-items":
        (model_copy / "items.jsonl").unlink()
        named = "items.jsonl"
    elif damage == "version":
        record = json.loads(manifest.read_text())
        manifest.write_text(json.dumps({**record, "version": 99}))
        named = MANIFEST
    elif damage == "not-json":
        manifest.write_text("{ half")
        named = MANIFEST
    else:
        manifest.unlink()
        named = model_copy.name
    with pytest.raises(CorruptFileError) as error:
        Retriever.load(model_copy)
    assert named in str(error.value)


def test_a_different_text_encoder_is_refused_before_it_is_used(model_copy):
    class OtherEncoder:
        name = "some-other-model"

        def encode(self, texts):
            rng = np.random.default_rng(0)
            vectors = rng.normal(size=(len(texts), 384)).astype(np.float32)
            return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    retriever = Retriever.load(model_copy, encoder=OtherEncoder())
    retriever.search([None], [[retriever.item_ids[0]]], k=3)  # no text to encode: fine
    with pytest.raises(CorruptFileError, match="does not match"):
        retriever.search(["a query"], [[]], k=3)


def test_an_atomic_directory_is_complete_or_untouched(tmp_path):
    target = tmp_path / "out"
    with atomic_directory(target) as tmp:
        (tmp / "a").write_text("first")
    with pytest.raises(RuntimeError), atomic_directory(target) as tmp:
        (tmp / "a").write_text("second, half")
        raise RuntimeError("killed")
    assert (target / "a").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_the_readme_python_snippet_runs_verbatim(trained_run, tmp_path, monkeypatch):
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    snippet = readme.split("## Python API", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "shop").symlink_to(trained_run)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    assert namespace["hits"] and namespace["same"].item_ids[-1] == "NEW-1"


def test_export_without_out_rebuilds_the_runs_model_directory(trained_run, tmp_path):
    run = shutil.copytree(trained_run, tmp_path / "old-run")
    shutil.rmtree(run / "model")  # a run trained before model directories existed
    result = CliRunner().invoke(app, ["export", str(run)])
    assert result.exit_code == 0, result.output
    assert Retriever.load(run / "model").item_ids == Retriever.load(RunDirectory(trained_run).model_dir).item_ids
