"""Two-Stage TIGER baseline: unique SIDs, a training RQ-VAE, valid constrained rankings, determinism,
a clear margin over popularity on tiny_corpus, and best-epoch restoration."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from dgi.baselines import PopularityBaseline, TigerBaseline
from dgi.baselines.rqvae import disambiguate, kmeans
from dgi.evaluation.evaluate import relevance
from dgi.evaluation.metrics import mean_metrics, per_query_metrics
from dgi.io import load_tensors, save_tensors

SMALL = dict(width=64, layers=1, heads=2, batch_size=64, rq_codebook_size=32, eval_examples=200)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fitted(tiny_corpus) -> TigerBaseline:
    return TigerBaseline(rq_epochs=30, epochs=4, seed=0, **SMALL).fit(tiny_corpus)


def valid_metrics(model, corpus, limit: int | None = None) -> dict[str, float]:
    ranked, _ = model.rank(corpus, "valid", 10, limit)
    return mean_metrics(per_query_metrics(ranked, relevance(corpus.splits["valid"], limit)))


def test_disambiguation_numbers_shared_sids_in_item_order():
    codes = torch.tensor([[1, 2, 3], [1, 2, 3], [0, 0, 0], [1, 2, 3], [0, 0, 1]])
    assert disambiguate(codes)[:, 3].tolist() == [0, 1, 0, 2, 0]
    assert disambiguate(codes)[:, :3].equal(codes)


def test_kmeans_uses_every_code_and_finds_separated_clusters():
    generator = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = (centers[:, None] + 0.1 * torch.randn(3, 50, 2, generator=generator)).reshape(-1, 2)
    found = kmeans(points, 3, 10, torch.Generator().manual_seed(1))
    assert torch.cdist(centers, found).min(dim=1).values.max() < 0.2
    spare = kmeans(points[:2], 4, 3, torch.Generator().manual_seed(1))  # fewer points than codes
    assert spare.shape == (4, 2) and torch.isfinite(spare).all()


def test_every_item_gets_a_unique_four_code_sid(fitted, tiny_corpus):
    n_items = len(tiny_corpus.item_ids)
    assert fitted.index.depth == 4 and fitted.index.n_items == n_items
    assert len(torch.unique(fitted.item_codes, dim=0)) == n_items
    stats = fitted.index.collision_stats()
    assert stats["n_sids"] == n_items and stats["largest_bucket"] == 1
    items, offsets = fitted.index.items_of(fitted.item_codes)
    assert offsets.diff().eq(1).all() and items.equal(torch.arange(n_items))
    # The statistics describe the 3 RQ levels before disambiguation; level 4 is as large as the largest collision.
    report = fitted.index_statistics()
    assert report["collisions"]["n_items"] == n_items and len(report["code_usage"]) == 3
    assert fitted.index.codebook_sizes[3] == report["collisions"]["largest_bucket"]


def test_rq_vae_reconstruction_falls_and_tokenizer_is_frozen(fitted):
    reconstruction = [epoch["reconstruction"] for epoch in fitted.history["rq"]]
    assert reconstruction[-1] < 0.8 * reconstruction[0]
    assert not any(parameter.requires_grad for parameter in fitted.rqvae.parameters())


def test_rankings_are_valid_and_stop_at_the_beam_size(fitted, tiny_corpus):
    n_items, k = len(tiny_corpus.item_ids), fitted.beam_size + 5
    ranked, scores = fitted.rank(tiny_corpus, "valid", k, limit=50)
    assert ranked.shape == scores.shape == (50, k) and ranked.dtype == np.int64 and scores.dtype == np.float64
    assert ((ranked >= -1) & (ranked < n_items)).all()
    assert (ranked[:, fitted.beam_size:] == -1).all() and np.isneginf(scores[:, fitted.beam_size:]).all()
    found = ranked >= 0
    assert (found[:, :-1] >= found[:, 1:]).all(), "-1 padding only at the end"
    assert found[:, 0].all()
    ordered = np.sort(ranked, axis=1)
    assert not ((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)).any(), "duplicate item"
    pairs = found[:, 1:]  # both neighbours are items, so no -inf - -inf
    assert (scores[:, 1:][pairs] <= scores[:, :-1][pairs] + 1e-6).all(), "scores must not increase"
    assert (scores[found] <= 0).all()  # log-probabilities


def test_examples_without_history_or_query_still_rank(fitted, tiny_corpus):
    arrays = tiny_corpus.splits["valid"]
    bare = dataclasses.replace(arrays, history=np.full_like(arrays.history, -1),
                               query_ids=np.full_like(arrays.query_ids, -1))
    corpus = dataclasses.replace(tiny_corpus, splits={**tiny_corpus.splits, "valid": bare})
    ranked, _ = fitted.rank(corpus, "valid", 10, limit=8)
    assert (ranked >= 0).all() and (ranked == ranked[0]).all()  # same empty context, same list


def test_constrained_beams_only_name_existing_sids(fitted, tiny_corpus, monkeypatch):
    calls = []
    encode = fitted.model.encode
    monkeypatch.setattr(fitted.model, "encode", lambda *args: calls.append(len(args[0])) or encode(*args))
    beams = fitted.beams(tiny_corpus, "valid", np.arange(40))
    assert calls == [40], "the context is encoded once per query, not per beam or level"
    alive = beams.scores > float("-inf")
    assert alive.all()
    assert fitted.index.is_valid(beams.codes).all()
    rate = fitted.invalid_sid_rate(tiny_corpus, "valid", 40)
    assert 0.0 <= rate <= 1.0


def test_learns_clearly_beyond_popularity(fitted, tiny_corpus):
    popularity = PopularityBaseline().fit(tiny_corpus)
    ranked, _ = popularity.rank(tiny_corpus, "valid", 10)
    floor = mean_metrics(per_query_metrics(ranked, relevance(tiny_corpus.splits["valid"])))["hit@10"]
    assert valid_metrics(fitted, tiny_corpus)["hit@10"] > floor + 0.15  # seeds 0-2 give margins .24-.36


def test_same_seed_same_model(tiny_corpus):
    runs = [TigerBaseline(rq_epochs=3, epochs=1, seed=3, **{**SMALL, "eval_examples": 20}).fit(tiny_corpus)
            for _ in range(2)]
    assert runs[0].item_codes.equal(runs[1].item_codes)
    assert runs[0].history["epochs"][0]["loss"] == runs[1].history["epochs"][0]["loss"]
    first, second = (run.rank(tiny_corpus, "valid", 10, limit=30) for run in runs)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


def test_validation_selection_restores_the_best_epoch(tiny_corpus, monkeypatch):
    model = TigerBaseline(rq_epochs=2, epochs=3, seed=1, **SMALL)
    scripted, snapshots = iter([0.1, 0.5, 0.2]), []

    def fake_validate(corpus):
        snapshots.append({name: value.clone() for name, value in model.model.state_dict().items()})
        return {"ndcg@10": next(scripted), "recall@10": 0.0}

    monkeypatch.setattr(model, "_validate", fake_validate)
    model.fit(tiny_corpus)
    assert model.best_epoch == 1
    assert [epoch["valid"]["ndcg@10"] for epoch in model.history["epochs"]] == [0.1, 0.5, 0.2]
    restored = model.model.state_dict()
    assert all(restored[name].equal(value) for name, value in snapshots[1].items())
    assert not all(restored[name].equal(value) for name, value in snapshots[2].items())


def test_real_validation_picks_the_highest_ndcg(fitted, tiny_corpus):
    curve = [epoch["valid"]["ndcg@10"] for epoch in fitted.history["epochs"]]
    assert fitted.best_epoch == int(np.argmax(curve))
    restored = valid_metrics(fitted, tiny_corpus, fitted.eval_examples)["ndcg@10"]
    assert restored == pytest.approx(curve[fitted.best_epoch])
    assert fitted.train_seconds > 0


def test_rank_before_fit_raises(tiny_corpus):
    with pytest.raises(RuntimeError):
        TigerBaseline().rank(tiny_corpus, "valid", 10)


def test_t5_blocks_learn_and_round_trip_through_their_state(tiny_corpus, tmp_path):
    """The known-good-decoder check: the same TIGER on `transformers`' T5 stacks learns as ours does, and its
    state, saved to a safetensors file as a benchmark saves it, ranks exactly as the fitted model."""
    model = TigerBaseline(rq_epochs=30, epochs=4, seed=0, network="t5", **SMALL).fit(tiny_corpus)
    assert any(name.startswith("t5.decoder.") for name, _ in model.model.named_parameters())
    popularity = PopularityBaseline().fit(tiny_corpus)
    floor = mean_metrics(per_query_metrics(popularity.rank(tiny_corpus, "valid", 10)[0],
                                           relevance(tiny_corpus.splits["valid"])))["hit@10"]
    assert valid_metrics(model, tiny_corpus)["hit@10"] > floor + 0.15
    params, tensors = model.state()
    save_tensors(tmp_path / "t5.safetensors", tensors)
    loaded = TigerBaseline.from_state(params, load_tensors(tmp_path / "t5.safetensors"))
    assert loaded.network == "t5"
    np.testing.assert_array_equal(loaded.rank(tiny_corpus, "valid", 10, 50)[0], model.rank(tiny_corpus, "valid", 10, 50)[0])


def test_unknown_network_is_refused():
    with pytest.raises(ValueError, match="unknown network"):
        TigerBaseline(network="lstm")
