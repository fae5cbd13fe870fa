"""Fast metrics vs. the loop reference (hypothesis), vs. ranx, and by hand."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dgi.evaluation.metrics import (
    DEFAULT_KS,
    bucketed_metrics,
    mean_metrics,
    per_query_metrics,
    popularity_buckets,
    reference_metrics,
    single_target_qrels,
    write_trec_qrels,
    write_trec_run,
)


def assert_metrics_equal(got: dict, want: dict, tol: float = 1e-12) -> None:
    assert list(got) == list(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=tol, atol=tol, err_msg=name)


@st.composite
def ranking_and_qrels(draw):
    """Rows of distinct items with -1 slots anywhere, and graded qrels that
    include items the ranking never retrieves."""
    n_items = draw(st.integers(1, 30))
    depth = draw(st.integers(0, 12))
    n_queries = draw(st.integers(1, 6))
    ranked = np.full((n_queries, depth), -1, dtype=np.int64)
    qrels = []
    for q in range(n_queries):
        items = draw(st.lists(st.integers(0, n_items - 1), unique=True, max_size=depth))
        slots = draw(st.permutations(range(depth)))[: len(items)]
        ranked[q, slots] = items
        relevance = st.one_of(
            st.integers(1, 3).map(float), st.floats(0.01, 10.0, allow_nan=False)
        )
        qrels.append(
            draw(st.dictionaries(st.integers(0, n_items + 3), relevance, min_size=1, max_size=6))
        )
    ks = draw(st.lists(st.integers(1, 15), min_size=1, max_size=4, unique=True))
    return ranked, qrels, tuple(ks)


@settings(max_examples=300, deadline=None)
@given(ranking_and_qrels())
def test_fast_matches_reference(data):
    ranked, qrels, ks = data
    assert_metrics_equal(per_query_metrics(ranked, qrels, ks), reference_metrics(ranked, qrels, ks))


@settings(max_examples=100, deadline=None)
@given(ranking_and_qrels(), st.data())
def test_target_array_matches_single_target_qrels(data, more):
    ranked, _, ks = data
    n = len(ranked)
    targets = np.array(more.draw(st.lists(st.integers(0, 40), min_size=n, max_size=n)))
    fast = per_query_metrics(ranked, targets, ks)
    assert_metrics_equal(fast, per_query_metrics(ranked, single_target_qrels(targets), ks))
    assert_metrics_equal(fast, reference_metrics(ranked, single_target_qrels(targets), ks))
    for k in ks:  # with one target, hit@k == recall@k
        np.testing.assert_array_equal(fast[f"hit@{k}"], fast[f"recall@{k}"])


def test_hand_computed_single_target():
    ranked = np.array([[4, 7, 2, 9, 1, 3], [2, -1, -1, -1, -1, -1], [-1] * 6])
    m = per_query_metrics(ranked, np.array([2, 2, 2]), ks=(1, 2, 5))
    # Target at rank 3: ndcg@5 = 1/log2(4) = 0.5, mrr = 1/3, no hit in top 2.
    assert m["ndcg@5"][0] == pytest.approx(0.5)
    assert m["mrr"][0] == pytest.approx(1 / 3)
    assert m["hit@2"][0] == 0.0 and m["hit@5"][0] == 1.0
    # Target at rank 1: everything is 1.
    assert all(m[name][1] == 1.0 for name in m)
    # Empty row: everything is 0.
    assert all(m[name][2] == 0.0 for name in m)


def test_hand_computed_graded_and_short_depth():
    ranked = np.array([[5, 1, -1]])
    qrels = [{1: 2.0, 5: 1.0, 8: 3.0}]
    m = per_query_metrics(ranked, qrels, ks=(1, 2, 10))
    ideal2 = 3.0 + 2.0 / math.log2(3)
    assert m["ndcg@2"][0] == pytest.approx((1.0 + 2.0 / math.log2(3)) / ideal2)
    # k beyond depth: DCG uses the 3 slots, IDCG still the ideal top-10.
    ideal10 = ideal2 + 1.0 / math.log2(4)
    assert m["ndcg@10"][0] == pytest.approx((1.0 + 2.0 / math.log2(3)) / ideal10)
    assert m["recall@1"][0] == pytest.approx(1 / 3)
    assert m["recall@10"][0] == pytest.approx(2 / 3)
    assert m["mrr"][0] == 1.0


def test_default_keys_and_dtype():
    m = per_query_metrics(np.array([[0, 1]]), np.array([1]))
    want = [f"{name}@{k}" for name in ("hit", "recall", "ndcg") for k in DEFAULT_KS] + ["mrr"]
    assert list(m) == want
    assert all(v.dtype == np.float64 and v.shape == (1,) for v in m.values())


def test_zero_depth():
    m = per_query_metrics(np.zeros((2, 0), dtype=np.int64), np.array([0, 1]))
    assert all(np.all(v == 0.0) for v in m.values())


@pytest.mark.parametrize(
    "ranked",
    [np.array([[1, 2, 1]]), np.array([[0, -1, 3], [4, -1, 4]])],
)
def test_duplicates_raise(ranked):
    with pytest.raises(ValueError, match="duplicate"):
        per_query_metrics(ranked, np.zeros(len(ranked), dtype=np.int64))
    with pytest.raises(ValueError, match="duplicate"):
        reference_metrics(ranked, [{0: 1.0}] * len(ranked), (1,))


@pytest.mark.parametrize(
    "ranked, qrels",
    [
        (np.array([[0, -2]]), [{0: 1.0}]),  # bad padding value
        (np.array([0, 1]), [{0: 1.0}]),  # not 2-D
        (np.array([[0, 1]]), [{}]),  # no relevant item
        (np.array([[0, 1]]), [{0: 0.0}]),  # relevance must be > 0
        (np.array([[0, 1]]), [{0: 1.0}, {1: 1.0}]),  # wrong number of queries
    ],
)
def test_invalid_inputs_raise(ranked, qrels):
    with pytest.raises(ValueError):
        per_query_metrics(ranked, qrels, (1,))


def test_mean_metrics_and_mask():
    per_query = {"hit@1": np.array([1.0, 0.0, 1.0, 1.0]), "mrr": np.array([1.0, 0.5, 0.25, 1.0])}
    assert mean_metrics(per_query) == {"hit@1": 0.75, "mrr": 0.6875, "count": 4}
    mask = np.array([False, True, True, False])
    assert mean_metrics(per_query, mask) == {"hit@1": 0.5, "mrr": 0.375, "count": 2}
    assert mean_metrics(per_query, np.zeros(4, bool)) == {"hit@1": 0.0, "mrr": 0.0, "count": 0}


# ---------------------------------------------------------------- ranx cross-check


def random_dataset(seed: int, n_queries: int = 200, depth: int = 15, n_items: int = 60):
    """Trailing -1 padding only (ranx has no empty slots); integer grades
    because ranx stores relevance as int."""
    rng = np.random.default_rng(seed)
    ranked = np.full((n_queries, depth), -1, dtype=np.int64)
    qrels = []
    for q in range(n_queries):
        length = rng.integers(0, depth + 1)
        ranked[q, :length] = rng.choice(n_items, size=length, replace=False)
        n_rel = rng.integers(1, 6) if seed % 2 else 1
        rel_items = rng.choice(n_items, size=n_rel, replace=False)
        grades = rng.integers(1, 4, size=n_rel) if seed % 2 else np.ones(1, dtype=int)
        qrels.append({int(i): float(g) for i, g in zip(rel_items, grades)})
    return ranked, qrels


@pytest.mark.parametrize("seed", [0, 1, 3])
def test_matches_ranx(seed):
    ranx = pytest.importorskip("ranx")
    ranked, qrels = random_dataset(seed)
    depth = ranked.shape[1]
    ks = (1, 5, 10, 20)  # 20 > depth: ranx also uses what exists
    # Zero-padded ids: ranx returns per-query scores in sorted query-id order.
    run = ranx.Run.from_dict(
        {
            f"q{q:04d}": {f"d{item}": float(depth - j) for j, item in enumerate(row) if item >= 0}
            for q, row in enumerate(ranked.tolist())
        }
    )
    ranx_qrels = ranx.Qrels.from_dict(
        {f"q{q:04d}": {f"d{i}": int(r) for i, r in rel.items()} for q, rel in enumerate(qrels)}
    )
    names = {f"hit@{k}": f"hit_rate@{k}" for k in ks}
    names |= {f"recall@{k}": f"recall@{k}" for k in ks}
    names |= {f"ndcg@{k}": f"ndcg@{k}" for k in ks}
    names["mrr"] = "mrr"  # our mrr is MRR@depth == ranx mrr over the whole run
    want = ranx.evaluate(ranx_qrels, run, list(names.values()), return_mean=False)
    got = per_query_metrics(ranked, qrels, ks)
    for ours, theirs in names.items():
        np.testing.assert_allclose(got[ours], want[theirs], rtol=1e-12, atol=1e-12, err_msg=ours)


# ---------------------------------------------------------------- popularity buckets


def test_buckets_tail_and_ties():
    popularity = np.array([0, 1, 2, 2, 2, 9, 9, 100, 1, 0])
    b = popularity_buckets(popularity)
    assert b.names == ("B0", "B1", "B2", "B3", "B4")
    assert b.bucket_of_item.dtype == np.int64
    np.testing.assert_array_equal(b.bucket_of_item[popularity <= 1], 4)
    assert set(b.bucket_of_item[popularity >= 2]) <= {0, 1, 2, 3}
    for value in np.unique(popularity):  # equal popularity -> same bucket
        assert len(set(b.bucket_of_item[popularity == value])) == 1
    # Head total 126: 100 starts at 0 -> B0; 9s start at 100/126 -> B3; 2s too.
    assert b.bucket_of_item[7] == 0 and b.bucket_of_item[5] == 3 and b.bucket_of_item[2] == 3
    assert [e["n_items"] for e in b.edges] == [1, 0, 0, 5, 4]
    assert b.edges[1]["min_popularity"] is None and b.edges[1]["share_of_interactions"] == 0.0
    assert sum(e["share_of_interactions"] for e in b.edges) == pytest.approx(1.0)


def test_buckets_zipf_quarters_and_monotone_edges():
    ranks = np.arange(1, 20001)
    popularity = np.round(5000.0 / ranks).astype(np.int64)  # Zipf, long 0/1 tail
    b = popularity_buckets(popularity)
    head = popularity >= 2
    tail_share = popularity[~head].sum() / popularity.sum()
    assert b.edges[4]["share_of_interactions"] == pytest.approx(tail_share)
    assert b.edges[4]["n_items"] == int((~head).sum())
    for edge in b.edges[:4]:
        assert edge["share_of_interactions"] / (1 - tail_share) == pytest.approx(0.25, abs=0.02)
    # B0 holds few, very popular items; buckets do not overlap in popularity.
    assert b.edges[0]["n_items"] < b.edges[1]["n_items"] < b.edges[3]["n_items"]
    for hi, lo in zip(b.edges[:3], b.edges[1:4]):
        assert hi["min_popularity"] > lo["max_popularity"]
    assert b.edges[3]["min_popularity"] == 2


def test_buckets_without_head_items():
    b = popularity_buckets(np.array([0, 1, 1, 0]))
    np.testing.assert_array_equal(b.bucket_of_item, 4)
    assert [e["n_items"] for e in b.edges] == [0, 0, 0, 0, 4]
    b = popularity_buckets(np.zeros(3, dtype=np.int64))
    assert all(e["share_of_interactions"] == 0.0 for e in b.edges)


def test_buckets_few_distinct_values():
    b = popularity_buckets(np.array([5, 5, 5, 3, 3]))
    # Only two tie groups: 5s (share 15/21) in B0, 3s start at 15/21 -> B2.
    np.testing.assert_array_equal(b.bucket_of_item, [0, 0, 0, 2, 2])
    assert [e["n_items"] for e in b.edges] == [3, 0, 2, 0, 0]


def test_bucketed_metrics():
    b = popularity_buckets(np.array([100, 10, 0, 1]))
    per_query = {"hit@1": np.array([1.0, 0.0, 1.0, 0.0]), "mrr": np.array([1.0, 0.5, 1.0, 0.0])}
    targets = np.array([0, 2, 0, 3])
    out = bucketed_metrics(per_query, targets, b)
    assert list(out) == list(b.names)
    assert out["B0"] == {"hit@1": 1.0, "mrr": 1.0, "count": 2}
    assert out["B4"] == {"hit@1": 0.0, "mrr": 0.25, "count": 2}
    assert out["B1"] == {"hit@1": 0.0, "mrr": 0.0, "count": 0}


# ---------------------------------------------------------------- TREC files


def test_trec_run_format_and_order(tmp_path):
    path = tmp_path / "run.trec"
    ranked = np.array([[2, 0, -1], [-1, -1, -1], [1, -1, 2]])
    scores = np.array([[0.9, 0.5, 0.0], [0.0, 0.0, 0.0], [-1.0, 7.0, -2.5]])
    write_trec_run(path, ["u1", "u2", "u3"], ranked, scores, ["a", "b", "c"], "dgi")
    assert path.read_text().splitlines() == [
        "u1 Q0 c 1 0.9 dgi",
        "u1 Q0 a 2 0.5 dgi",
        "u3 Q0 b 1 -1.0 dgi",
        "u3 Q0 c 3 -2.5 dgi",
    ]


def test_trec_run_rejects_scores_out_of_rank_order(tmp_path):
    with pytest.raises(ValueError, match="non-increasing"):
        write_trec_run(
            tmp_path / "r", ["q"], np.array([[0, 1]]), np.array([[1.0, 2.0]]), ["a", "b"], "x"
        )
    with pytest.raises(ValueError, match="whitespace"):
        write_trec_run(tmp_path / "r", ["q 1"], np.array([[0]]), np.array([[1.0]]), ["a"], "x")
    assert list(tmp_path.iterdir()) == []


def test_trec_qrels_format(tmp_path):
    path = tmp_path / "qrels.trec"
    write_trec_qrels(path, ["u1", "u2"], [{2: 1.0, 0: 2.5}, {1: 3.0}], ["a", "b", "c"])
    assert path.read_text().splitlines() == ["u1 0 c 1", "u1 0 a 2.5", "u2 0 b 3"]
    write_trec_qrels(path, ["u1", "u2"], np.array([1, 0]), ["a", "b"])  # overwrites
    assert path.read_text().splitlines() == ["u1 0 b 1", "u2 0 a 1"]


def test_trec_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "run.trec"
    path.write_text("old\n")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        write_trec_run(path, ["q"], np.array([[0]]), np.array([[1.0]]), ["a"], "x")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["run.trec"]  # temp file cleaned up


def test_trec_round_trip_through_ranx(tmp_path):
    ranx = pytest.importorskip("ranx")
    ranked, qrels = random_dataset(5, n_queries=50)
    depth = ranked.shape[1]
    scores = np.tile(np.arange(depth, 0, -1, dtype=np.float64), (len(ranked), 1))
    query_ids = [f"q{q}" for q in range(len(ranked))]
    item_ids = [f"item{i}" for i in range(60)]
    write_trec_run(tmp_path / "run", query_ids, ranked, scores, item_ids, "dgi")
    write_trec_qrels(tmp_path / "qrels", query_ids, qrels, item_ids)
    # Queries with empty rows are absent from the run file; make_comparable adds them.
    run = ranx.Run.from_file(str(tmp_path / "run"), kind="trec")
    ranx_qrels = ranx.Qrels.from_file(str(tmp_path / "qrels"), kind="trec")
    want = ranx.evaluate(ranx_qrels, run, ["ndcg@10", "mrr"], make_comparable=True)
    got = mean_metrics(per_query_metrics(ranked, qrels, (10,)))
    assert got["ndcg@10"] == pytest.approx(want["ndcg@10"], abs=1e-12)
    assert got["mrr"] == pytest.approx(want["mrr"], abs=1e-12)
