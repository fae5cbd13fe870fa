"""One Method interface: every method fits, ranks, saves and loads alike, and a loaded one ranks as before."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dgi.baselines import (BM25Baseline, ContentBaseline, DenseZeroShotBaseline, PopularityBaseline, SASRecBaseline,
                           TigerBaseline)
from dgi.io import CorruptFileError
from dgi.methods.base import Method, MethodDetails
from dgi.methods.dgi_method import DGIMethod
from dgi.methods.registry import load_method

BUILDERS = {
    "popularity": PopularityBaseline,
    "content": lambda: ContentBaseline(mode="last_item", exclude_history=True),
    "bm25": lambda: BM25Baseline(k1=1.2, history_items=3),
    "dense_zero_shot": lambda: DenseZeroShotBaseline(history_items=3),
    "sasrec": lambda: SASRecBaseline(hidden=16, layers=1, heads=2, epochs=2, batch_size=64, patience=None),
    "tiger": lambda: TigerBaseline(rq_epochs=5, epochs=1, width=32, layers=1, heads=2, beam_size=10,
                                   rq_codebook_size=16, eval_examples=50),
}


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_a_saved_baseline_loads_and_ranks_exactly_as_before(kind, tiny_corpus, tmp_path):
    method = BUILDERS[kind]().fit(tiny_corpus)
    assert isinstance(method, Method)
    ranked, scores = method.rank(tiny_corpus, "test", 10, limit=60)
    assert isinstance(method.details(tiny_corpus, "test"), MethodDetails)
    method.save(tmp_path / kind)
    manifest = json.loads((tmp_path / kind / "method.json").read_text())
    assert manifest["method"] == method.name and manifest["format"] == "dgi-method"
    loaded = load_method(tmp_path / kind)
    assert type(loaded) is type(method)
    again, again_scores = loaded.rank(tiny_corpus, "test", 10, limit=60)
    np.testing.assert_array_equal(again, ranked)
    np.testing.assert_allclose(again_scores, scores, rtol=1e-6)


def test_dgi_is_a_method_too_and_its_saved_model_ranks_as_the_run(tiny_config, tiny_corpus, trained_run, tmp_path):
    method = DGIMethod(tiny_config, trained_run).fit(tiny_corpus)  # a finished run: fit only resumes it
    assert isinstance(method, Method)
    assert method.ranked_with == f"generative/{max(method.valid_rule_scores, key=method.valid_rule_scores.get)}"
    ranked, _ = method.rank(tiny_corpus, "test", 10)
    details = method.details(tiny_corpus, "test")
    assert details.ranked_with == method.ranked_with and details.train_seconds > 0
    assert set(details.rules) == {"generative/lexicographic", "generative/fused", "generative/rerank", "dense"}
    method.save(tmp_path / "dgi")
    loaded = load_method(tmp_path / "dgi")
    assert isinstance(loaded, DGIMethod) and loaded.ranked_with == method.ranked_with  # the chosen rule is kept
    again, _ = loaded.rank(tiny_corpus, "test", 10)
    same_first = (again[:, 0] == ranked[:, 0]).mean()
    assert same_first > 0.95  # item vectors are stored in fp16: a near tie may swap


def test_loading_refuses_a_foreign_or_broken_directory(tiny_corpus, tmp_path):
    PopularityBaseline().fit(tiny_corpus).save(tmp_path / "popularity")
    with pytest.raises(CorruptFileError, match="holds a 'popularity' method, not 'bm25'"):
        BM25Baseline.load(tmp_path / "popularity")
    (tmp_path / "popularity" / "method.json").write_text("{broken")
    with pytest.raises(CorruptFileError, match="method.json: unreadable manifest"):
        load_method(tmp_path / "popularity")
    with pytest.raises(CorruptFileError, match="missing: not a saved method directory"):
        load_method(tmp_path / "nothing-here")
