"""Baselines: valid rankings, exact agreement with brute force, and a clear margin over random on tiny_corpus."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import pytest

from dgi.baselines import BM25Baseline, ContentBaseline, DenseZeroShotBaseline
from dgi.baselines.bm25 import context_texts
from dgi.data.corpus import EncodedCorpus, encode_corpus
from dgi.data import Dataset, Example, Item
from dgi.evaluation.metrics import mean_metrics, per_query_metrics
from dgi.pipeline import text_encoder

# Hand-made shop: item 5 alone has the rare words "zephyr"/"quokka"; item 7 has no text at all.
SHOP_TEXTS = ["stainless steel chef's knife", "red trail running shoe", "organic dark roast whole bean coffee",
              "ground espresso coffee, dark roast", "reflective dog leash", "Zephyr quokka plush toy",
              "plush dog toy", ""]
SHOP_TEST = [Example("0", (), "kitchen knife for cooking", id="knife"),
             Example("3", ("2",), None, id="coffee-history"),
             Example("1", (), None, id="no-context"),
             Example("5", (), "zephyr plush toy", id="rare-words"),
             Example("1", (), "the of", id="stopwords-only")]
SHOP_POPULARITY_ORDER = [6, 4, 1, 0, 2, 3, 5, 7]


class LookupEncoder:
    """Stands in for an EmbeddingCache with fixed query vectors, so expected rankings are exact."""

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.vectors = vectors
        self.encoder = SimpleNamespace(name="lookup")

    def encode(self, texts: list[str]) -> np.ndarray:
        vectors = np.array([self.vectors[text] for text in texts], dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def make_dataset(items: list[Item], test: list[Example],
                 train_targets: tuple[int, ...] = (6, 6, 6, 4, 4, 1)) -> Dataset:
    train = [Example(str(target), id=f"train-{i}") for i, target in enumerate(train_targets)]
    return Dataset("hand-made", items, {"train": train, "valid": [], "test": test}, {})


@pytest.fixture(scope="module")
def encoder(tiny_config):
    return text_encoder(tiny_config)


@pytest.fixture(scope="module")
def shop(encoder) -> EncodedCorpus:
    items = [Item(str(i), text) for i, text in enumerate(SHOP_TEXTS)]
    return encode_corpus(make_dataset(items, SHOP_TEST), encoder, max_history=20)


BASELINES: dict[str, Callable] = {
    "content": lambda encoder: ContentBaseline(),
    "content-exclude-history": lambda encoder: ContentBaseline(exclude_history=True),
    "bm25": lambda encoder: BM25Baseline(),
    "bm25-exclude-history": lambda encoder: BM25Baseline(exclude_history=True),
    "dense": lambda encoder: DenseZeroShotBaseline(encoder, history_items=1),  # short texts keep the CPU encoder fast
    "dense-exclude-history": lambda encoder: DenseZeroShotBaseline(encoder, history_items=1, exclude_history=True),
}


@pytest.fixture(scope="module", params=list(BASELINES))
def fitted(request, tiny_corpus, encoder):
    return BASELINES[request.param](encoder).fit(tiny_corpus)


def assert_valid(ranked: np.ndarray, scores: np.ndarray, rows: int, depth: int, n_items: int) -> None:
    assert ranked.shape == scores.shape == (rows, depth)
    assert ranked.dtype == np.int64 and scores.dtype == np.float64
    assert ((ranked >= -1) & (ranked < n_items)).all()
    valid = ranked >= 0
    assert (valid[:, :-1] >= valid[:, 1:]).all(), "-1 padding must only be at the end"
    ordered = np.sort(ranked, axis=1)
    assert not ((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)).any(), "duplicate item in a row"
    assert (scores[:, 1:] <= scores[:, :-1] + 1e-6)[valid[:, 1:]].all(), "scores must not increase"


def assert_matches_brute_force(ranked: np.ndarray, scores: np.ndarray, reference: np.ndarray) -> None:
    """Equal to a stable numpy argsort of `reference` [n, n_items], up to the order of exact float ties."""
    rows = np.arange(len(reference))[:, None]
    expected = np.argsort(-reference, axis=1, kind="stable")[:, :ranked.shape[1]]
    np.testing.assert_allclose(scores, reference[rows, expected], atol=1e-5)
    np.testing.assert_allclose(reference[rows, ranked], scores, atol=1e-5)
    near_tie = np.isclose(reference[rows, ranked], reference[rows, expected], atol=1e-5)
    assert ((ranked == expected) | near_tie).all()


def drop_history(reference: np.ndarray, history: np.ndarray) -> None:
    """Score every (row, history item) pair of a brute-force reference -inf, in place."""
    rows = np.repeat(np.arange(len(reference)), history.shape[1])
    seen = history.ravel() >= 0
    reference[rows[seen], history.ravel()[seen]] = -np.inf


def test_rankings_are_valid_for_any_k_and_limit(fitted, tiny_corpus):
    n_items, n_test = len(tiny_corpus.item_ids), len(tiny_corpus.splits["test"].targets)
    assert_valid(*fitted.rank(tiny_corpus, "test", 10), n_test, 10, n_items)
    assert_valid(*fitted.rank(tiny_corpus, "test", 1000, limit=37), 37, n_items, n_items)


def test_rankings_are_deterministic(fitted, tiny_corpus, encoder, request):
    refitted = BASELINES[request.node.callspec.params["fitted"]](encoder).fit(tiny_corpus)
    ranked, scores = fitted.rank(tiny_corpus, "test", 20)
    for again in (fitted.rank(tiny_corpus, "test", 20), refitted.rank(tiny_corpus, "test", 20)):
        np.testing.assert_array_equal(again[0], ranked)
        np.testing.assert_array_equal(again[1], scores)


def test_clearly_beats_random(fitted, tiny_corpus):
    ranked, _ = fitted.rank(tiny_corpus, "test", 10)
    metrics = mean_metrics(per_query_metrics(ranked, tiny_corpus.splits["test"].targets, ks=(10,)))
    n_items = len(tiny_corpus.item_ids)
    random_hit = 10 / n_items
    random_ndcg = sum(1 / np.log2(rank + 1) for rank in range(1, 11)) / n_items
    print(f"{fitted.name}: hit@10={metrics['hit@10']:.3f} ndcg@10={metrics['ndcg@10']:.3f}")
    assert metrics["hit@10"] > 3 * random_hit and metrics["ndcg@10"] > 3 * random_ndcg


def basis_corpus() -> EncodedCorpus:
    """Four axis-aligned items plus one halfway between items 0 and 1; the query points at item 1."""
    vectors = [(1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (1, 1, 0, 0), (0, 0, 0, 1)]
    items = [Item(str(i), f"item {i}", embedding=vector) for i, vector in enumerate(vectors)]
    test = [Example("2", ("0",), "toward one", id="both"), Example("2", ("0",), None, id="history-only"),
            Example("2", (), None, id="nothing")]
    dataset = make_dataset(items, test, train_targets=(4, 4, 4, 1, 1, 0))
    return encode_corpus(dataset, LookupEncoder({"toward one": [0, 1, 0, 0]}), max_history=20)


@pytest.mark.parametrize(("mode", "both", "history_only"), [
    ("auto", 1, 0), ("query", 1, None), ("last_item", 0, 0), ("mean", 3, 0)])
def test_content_modes(mode, both, history_only):
    corpus = basis_corpus()
    ranked, scores = ContentBaseline(mode=mode).fit(corpus).rank(corpus, "test", 10)
    assert_valid(ranked, scores, 3, 5, 5)
    assert ranked[0, 0] == both and scores[0, 0] == pytest.approx(1.0)
    if history_only is None:  # the chosen context is missing: popularity order
        np.testing.assert_array_equal(ranked[1], [4, 1, 0, 2, 3])
    else:
        assert ranked[1, 0] == history_only
    np.testing.assert_array_equal(ranked[2], [4, 1, 0, 2, 3])


def test_content_exclude_history_drops_the_history_and_pads():
    corpus = basis_corpus()
    ranked, scores = ContentBaseline(mode="last_item", exclude_history=True).fit(corpus).rank(corpus, "test", 10)
    assert ranked[1, 0] == 3 and scores[1, 0] == pytest.approx(2 ** -0.5)
    assert 0 not in ranked[:2] and (ranked[:2, -1] == -1).all() and np.isneginf(scores[:2, -1]).all()
    np.testing.assert_array_equal(ranked[2], [4, 1, 0, 2, 3])  # no history, nothing to drop


def test_content_finds_the_obvious_item(shop):
    ranked, _ = ContentBaseline().fit(shop).rank(shop, "test", 3)
    assert ranked[0, 0] == 0  # the knife for a knife query
    assert ranked[1, 0] == 2  # no exclusion: the last history item is its own nearest neighbour
    np.testing.assert_array_equal(ranked[2], SHOP_POPULARITY_ORDER[:3])
    excluded, _ = ContentBaseline(exclude_history=True).fit(shop).rank(shop, "test", 3)
    assert excluded[1, 0] == 3  # then the other dark roast coffee


@pytest.mark.parametrize("exclude_history", [False, True])
def test_content_equals_brute_force(tiny_corpus, exclude_history):
    arrays = tiny_corpus.splits["test"]
    items, queries = tiny_corpus.item_embeddings.numpy(), tiny_corpus.query_embeddings.numpy()
    context = np.where((arrays.query_ids >= 0)[:, None], queries[arrays.query_ids], items[arrays.history[:, -1]])
    keep = (arrays.query_ids >= 0) | (arrays.history[:, -1] >= 0)
    reference = context.astype(np.float64) @ items.T.astype(np.float64)
    if exclude_history:
        drop_history(reference, arrays.history)
    ranked, scores = ContentBaseline(exclude_history=exclude_history).fit(tiny_corpus).rank(tiny_corpus, "test", 25)
    assert_matches_brute_force(ranked[keep], scores[keep], reference[keep])


def test_bm25_ranks_the_only_item_with_the_rare_words_first(shop):
    ranked, scores = BM25Baseline().fit(shop).rank(shop, "test", 20)
    assert_valid(ranked, scores, len(SHOP_TEST), len(SHOP_TEXTS), len(SHOP_TEXTS))
    assert list(ranked[3, :3]) == [5, 6, -1]  # "zephyr" only in item 5, "plush toy" also in item 6
    assert ranked[0, 0] == 0 and (ranked[0, 1:] == -1).all()  # only "knife" matches
    assert (ranked[2] == -1).all() and (ranked[4] == -1).all()  # no context, stopwords only


def test_bm25_uses_history_titles_without_a_query(shop):
    ranked, _ = BM25Baseline().fit(shop).rank(shop, "test", 20)
    assert list(ranked[1, :3]) == [2, 3, -1]  # the coffee in the history, then the other dark roast coffee
    without_history, _ = BM25Baseline(history_items=0).fit(shop).rank(shop, "test", 20)
    assert (without_history[1] == -1).all()
    excluded, _ = BM25Baseline(exclude_history=True).fit(shop).rank(shop, "test", 20)
    assert list(excluded[1, :2]) == [3, -1]  # the history's own coffee is dropped
    np.testing.assert_array_equal(excluded[[0, 3]], ranked[[0, 3]])  # rows without history are unchanged


def test_context_texts_put_the_query_first_then_newest_titles(shop):
    assert context_texts(shop, "test", 10, limit=2) == ["kitchen knife for cooking", SHOP_TEXTS[2]]
    history = Example("0", ("1", "7", "2"), "tent", id="h")
    shop_with_history = EncodedCorpus(make_dataset(shop.dataset.items, [history]), shop.item_embeddings,
                                      shop.query_embeddings, shop.splits, shop.encoder_name)
    assert context_texts(shop_with_history, "test", 10) == [f"tent; {SHOP_TEXTS[2]}; {SHOP_TEXTS[1]}"]
    assert context_texts(shop_with_history, "test", 1) == [f"tent; {SHOP_TEXTS[2]}"]


def test_dense_finds_the_obvious_item(shop, encoder):
    ranked, scores = DenseZeroShotBaseline(encoder).fit(shop).rank(shop, "test", 20)
    assert_valid(ranked, scores, len(SHOP_TEST), len(SHOP_TEXTS), len(SHOP_TEXTS))
    assert ranked[0, 0] == 0 and ranked[1, 0] == 2 and ranked[3, 0] == 5
    np.testing.assert_array_equal(ranked[2], SHOP_POPULARITY_ORDER)


@pytest.mark.parametrize("exclude_history", [False, True])
def test_dense_equals_brute_force(tiny_corpus, encoder, exclude_history):
    texts = context_texts(tiny_corpus, "test", 1)
    keep = np.array([bool(text) for text in texts])
    reference = np.zeros((len(texts), len(tiny_corpus.item_ids)))
    reference[keep] = encoder.encode([t for t in texts if t]).astype(np.float64) @ \
        tiny_corpus.item_embeddings.numpy().T.astype(np.float64)
    if exclude_history:
        drop_history(reference, tiny_corpus.splits["test"].history)
    ranked, scores = DenseZeroShotBaseline(encoder, history_items=1, exclude_history=exclude_history) \
        .fit(tiny_corpus).rank(tiny_corpus, "test", 25)
    assert_matches_brute_force(ranked[keep], scores[keep], reference[keep])


def test_dense_rejects_another_encoder(shop):
    with pytest.raises(ValueError, match="not comparable"):
        DenseZeroShotBaseline(LookupEncoder({})).fit(shop)
