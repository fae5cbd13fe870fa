"""The decoder phase's context cache and the label-smoothed next-token loss."""

from __future__ import annotations

import json

import pytest
import torch

from dgi import pipeline
from dgi.training.context_cache import ContextCache
from dgi.nets.losses import next_token_per_example
from dgi.nets.model import Batch
from test_model import N_QUERIES, TEXT_DIM, make_model


def examples(n: int = 40) -> Batch:
    generator = torch.Generator().manual_seed(3)
    history = torch.randint(0, 50, (n, 20), generator=generator)
    lengths = torch.randint(0, 21, (n,), generator=generator)
    history[torch.arange(20)[None, :] < 20 - lengths[:, None]] = -1  # left-padded, some rows empty
    return Batch(torch.randint(0, 50, (n,), generator=generator), history,
                 torch.randint(-1, N_QUERIES, (n,), generator=generator))


def test_cached_contexts_equal_the_batch_encoding_in_shape_and_value():
    model, items = make_model()
    model.eval()
    queries = torch.nn.functional.normalize(torch.randn(N_QUERIES, TEXT_DIM), dim=-1)
    everything = examples()
    cache = ContextCache.build(model, everything, items, queries, chunk=7)
    for rows in (torch.tensor([0, 5, 9]), torch.arange(40), torch.tensor([11])):
        batch = Batch(everything.targets[rows], everything.history[rows], everything.query_ids[rows])
        with torch.no_grad():
            expected = model.batch_context(batch, items, queries)
        cached = cache.context(rows)
        assert cached.memory.shape == expected.memory.shape  # same shapes: dropout draws the same numbers
        assert torch.equal(cached.padding, expected.padding)
        real = ~expected.padding
        assert torch.allclose(cached.memory[real], expected.memory[real], atol=1e-5)
        assert torch.allclose(cached.vector, expected.vector, atol=1e-5)


def test_the_cache_has_a_memory_budget():
    assert ContextCache.fits(131_413, 20, 128)  # Beauty: about 1.5 GB
    assert not ContextCache.fits(10_000_000, 20, 128)


def test_label_smoothing_zero_is_the_plain_mean_and_positive_spreads_mass():
    generator = torch.Generator().manual_seed(0)
    logits = [torch.randn(6, 8, generator=generator) * 4 for _ in range(3)]
    codes = torch.randint(0, 8, (6, 3), generator=generator)
    plain = next_token_per_example(logits, codes)
    assert torch.allclose(next_token_per_example(logits, codes, 0.0), plain)
    smoothing = 0.2
    by_hand = torch.stack([(1 - smoothing) * torch.nn.functional.cross_entropy(level, codes[:, j], reduction="none")
                           - smoothing * level.log_softmax(-1).mean(-1) for j, level in enumerate(logits)], dim=1)
    assert torch.allclose(next_token_per_example(logits, codes, smoothing), by_hand, atol=1e-6)


def test_decoder_phase_with_the_cache_trains_as_without(tiny_config, tiny_corpus, tmp_path, monkeypatch):
    config = tiny_config.model_copy(deep=True)
    config.train.decoder_epochs, config.train.decoder_lr = 2, 3e-3

    def decoder_records(name: str) -> list[dict]:
        run = pipeline.train(config, tmp_path / name, tiny_corpus, progress=False)
        return [json.loads(line) for line in run.log_file.read_text().splitlines()][-2:]

    cached = decoder_records("cached")
    monkeypatch.setattr(ContextCache, "fits", staticmethod(lambda *args, **kwargs: False))
    uncached = decoder_records("uncached")
    for with_cache, without in zip(cached, uncached):
        assert with_cache["phase"] == without["phase"] == "decoder"
        assert with_cache["losses"]["ntp"] == pytest.approx(without["losses"]["ntp"], rel=1e-4)
        # float rounding may flip a near-tie argmax here and there
        assert with_cache["train"]["ntp_accuracy"]["overall"] == pytest.approx(
            without["train"]["ntp_accuracy"]["overall"], abs=2e-3)


def test_popularity_weights_keep_the_loss_scale_and_with_power_one_weigh_every_item_alike():
    import numpy as np

    from dgi.training.trainer import _popularity_weights

    targets = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    popularity = np.bincount(targets.numpy(), minlength=4)  # item 3 is never a target
    assert _popularity_weights(popularity, targets, 0.0) is None
    for power in (0.5, 1.0):
        weights = _popularity_weights(popularity, targets, power)
        assert weights[targets].mean().item() == pytest.approx(1.0)
        assert weights[0] < weights[1] < weights[2]
    per_item_total = torch.bincount(targets, weights=_popularity_weights(popularity, targets, 1.0)[targets].double())
    assert torch.allclose(per_item_total, per_item_total[0].expand(3))


def test_weighted_next_token_objective_with_unit_weights_is_the_plain_mean():
    model, items = make_model()
    queries = torch.nn.functional.normalize(torch.randn(N_QUERIES, TEXT_DIM), dim=-1)
    batch = examples(12)
    model.eval()
    with torch.no_grad():
        plain = model.losses(batch, items, queries, 1.0, generative=True)
        unit = model.losses(batch, items, queries, 1.0, generative=True, ntp_weights=torch.ones(12))
        doubled = model.losses(batch, items, queries, 1.0, generative=True, ntp_weights=torch.full((12,), 2.0))
    assert torch.allclose(plain.terms["ntp"], unit.terms["ntp"])
    assert torch.allclose(doubled.terms["ntp"], 2 * plain.terms["ntp"])
    assert torch.allclose(plain.terms["ntp"], plain.next_token.loss.mean())
