"""SIDIndex: keys, prefix masks and buckets against brute force, statistics, persistence, validation."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from dgi.search.index import SIDIndex

SIZES = (3, 4, 3)
CODES = torch.tensor([[0, 1, 2], [2, 3, 1], [0, 1, 2], [1, 0, 0], [0, 1, 2], [0, 1, 0]])


@pytest.fixture
def index() -> SIDIndex:
    return SIDIndex.build(CODES, SIZES)


@st.composite
def indexes(draw) -> tuple[SIDIndex, torch.Generator]:
    depth = draw(st.integers(1, 3))
    sizes = tuple(draw(st.integers(lo, hi)) for lo, hi in ((2, 6), (2, 5), (2, 4))[:depth])
    n_items = draw(st.integers(0, 30))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    codes = torch.stack([torch.randint(k, (n_items,), generator=g) for k in sizes], 1)
    return SIDIndex.build(codes, sizes), g


def test_keys_are_mixed_radix(index: SIDIndex) -> None:
    assert index.sid_keys(torch.tensor([[0, 1, 2], [2, 3, 1]])).tolist() == [5, 2 * 12 + 3 * 3 + 1]
    assert index.sid_keys(torch.tensor([[2, 3]])).tolist() == [2 * 4 + 3]
    assert index.sid_keys(torch.zeros(2, 5, 0, dtype=torch.long)).tolist() == [[0] * 5] * 2
    assert (index.n_items, index.depth) == (6, 3)


def test_valid_next_hand_example(index: SIDIndex) -> None:
    assert index.valid_next(torch.zeros(1, 0, dtype=torch.long)).tolist() == [[True, True, True]]
    assert index.valid_next(torch.tensor([[0], [1], [-1]])).tolist() == [
        [False, True, False, False], [True, False, False, False], [False] * 4]
    assert index.valid_next(torch.tensor([0, 1])).tolist() == [True, False, True]
    with pytest.raises(ValueError):
        index.valid_next(CODES)


@settings(max_examples=60, deadline=None)
@given(indexes(), st.integers(0, 2))
def test_valid_next_matches_brute_force(built, j) -> None:
    index, g = built
    j = min(j, index.depth - 1)
    sids = {tuple(s) for s in index.codes.tolist()}
    columns = [torch.randint(-1, k + 1, (4, 5, 1), generator=g) for k in index.codebook_sizes[:j]]
    prefixes = torch.cat([torch.zeros(4, 5, 0, dtype=torch.long), *columns], -1)
    mask = index.valid_next(prefixes)
    size = index.codebook_sizes[j]
    assert mask.shape == (4, 5, size)
    for row, prefix in zip(mask.reshape(20, size).tolist(), prefixes.reshape(20, j).tolist()):
        assert row == [any(s[: j + 1] == (*prefix, c) for s in sids) for c in range(size)]


@settings(max_examples=60, deadline=None)
@given(indexes())
def test_items_of_and_is_valid_match_brute_force(built) -> None:
    index, g = built
    queries = torch.stack([torch.randint(-1, k + 1, (12,), generator=g) for k in index.codebook_sizes], 1)
    queries = torch.cat([queries, index.codes[:3]])
    items, offsets = index.items_of(queries)
    assert offsets.shape == (queries.shape[0] + 1,) and offsets[0] == 0
    all_sids = index.codes.tolist()
    for r, sid in enumerate(queries.tolist()):
        expected = [i for i, s in enumerate(all_sids) if s == sid]
        assert items[offsets[r]: offsets[r + 1]].tolist() == expected
        assert index.is_valid(queries[r]).item() == bool(expected)


@settings(max_examples=60, deadline=None)
@given(indexes())
def test_walking_the_tree_finds_every_prefix_and_bucket(built) -> None:
    """From the root, `children` reaches each distinct prefix once, in key order, as brute force over the
    codes says."""
    index, g = built
    sids = index.codes.tolist()
    nodes, prefixes = torch.zeros(1, dtype=torch.long), [()]
    for depth in range(index.depth):
        expected = sorted({tuple(s[: depth + 1]) for s in sids})
        holes = torch.randint(2, (len(nodes),), generator=g).bool() if len(nodes) else torch.zeros(0, dtype=torch.bool)
        codes, children, rows = index.children(nodes.masked_fill(holes, -1), depth)
        kept = [prefix for prefix, hole in zip(prefixes, holes.tolist()) if not hole]
        assert [(*prefixes[r], c) for r, c in zip(rows.tolist(), codes.tolist())] == \
            [prefix for prefix in expected if prefix[:-1] in kept]
        codes, children, rows = index.children(nodes, depth)
        prefixes = [(*prefixes[r], c) for r, c in zip(rows.tolist(), codes.tolist())]
        assert prefixes == expected and children.tolist() == list(range(len(expected)))
        nodes = children


def test_items_of_hand_example(index: SIDIndex) -> None:
    items, offsets = index.items_of(torch.tensor([[0, 1, 2], [1, 1, 1], [2, 3, 1], [-1, 0, 0]]))
    assert items.tolist() == [0, 2, 4, 1] and offsets.tolist() == [0, 3, 3, 4, 4]
    empty = SIDIndex.build(torch.empty(0, 2, dtype=torch.long), (2, 2))
    items, offsets = empty.items_of(torch.tensor([[0, 0], [1, 1]]))
    assert items.tolist() == [] and offsets.tolist() == [0, 0, 0]
    assert not empty.valid_next(torch.zeros(3, 0, dtype=torch.long)).any()


def test_add_items_makes_new_items_findable(index: SIDIndex) -> None:
    new_ids = index.add_items(torch.tensor([[1, 1, 1], [0, 1, 2]]))
    assert new_ids.tolist() == [6, 7] and index.n_items == 8
    items, offsets = index.items_of(torch.tensor([[1, 1, 1], [0, 1, 2]]))
    assert items.tolist() == [6, 0, 2, 4, 7] and offsets.tolist() == [0, 1, 5]
    assert index.valid_next(torch.tensor([1])).tolist() == [True, True, False, False]
    with pytest.raises(ValueError):
        index.add_items(torch.tensor([[3, 0, 0]]))
    assert index.n_items == 8


def test_collision_stats(index: SIDIndex) -> None:
    # Buckets: (0,1,2) x3, (2,3,1), (1,0,0), (0,1,0) -> 4 SIDs for 6 items.
    assert index.collision_stats() == {
        "n_items": 6, "n_sids": 4, "unique_share": 3 / 6, "collision_rate": 1 - 4 / 6,
        "largest_bucket": 3, "mean_bucket_size": 6 / 4,
    }
    empty = SIDIndex.build(torch.empty(0, 1, dtype=torch.long), (4,)).collision_stats()
    assert empty["n_sids"] == 0 and empty["largest_bucket"] == 0


def test_code_usage(index: SIDIndex) -> None:
    usage = index.code_usage()
    assert [u["used"] for u in usage] == [1.0, 3 / 4, 1.0]
    p = torch.tensor([4, 1, 1]) / 6  # level 0: code 0 x4, code 1, code 2
    assert usage[0]["perplexity"] == pytest.approx(math.exp(-(p * p.log()).sum().item()))
    uniform = SIDIndex.build(torch.arange(8).unsqueeze(1), (8,)).code_usage()[0]
    assert uniform["perplexity"] == pytest.approx(8.0) and uniform["used"] == 1.0


def test_save_load_roundtrip(index: SIDIndex, tmp_path) -> None:
    path = tmp_path / "sids.safetensors"
    index.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["sids.safetensors"]  # no temp file left behind
    assert torch.equal(load_file(path)["codes"], CODES)
    loaded = SIDIndex.load(path)
    assert loaded.codebook_sizes == SIZES and torch.equal(loaded.codes.long(), CODES)
    assert loaded.collision_stats() == index.collision_stats()
    index.add_items(torch.tensor([[2, 2, 2]]))
    index.save(path)  # overwrite in place
    assert SIDIndex.load(path).n_items == 7


@pytest.mark.parametrize("codes, sizes", [
    (torch.tensor([[0, 4, 0]]), SIZES),          # code past its codebook
    (torch.tensor([[0, -1, 0]]), SIZES),         # negative code
    (torch.tensor([[0.0, 1.0, 0.0]]), SIZES),    # not integers
    (torch.tensor([[0, 1]]), SIZES),             # wrong depth
    (torch.tensor([0, 1, 2]), SIZES),            # not a table
    (torch.tensor([[0, 0]]), (0, 3)),            # empty codebook
    (torch.tensor([[0, 0]]), ()),                # no levels
    (torch.tensor([[0, 0]]), (2**32, 2**32)),    # keys would overflow int64
])
def test_bad_input_raises(codes, sizes) -> None:
    with pytest.raises(ValueError):
        SIDIndex.build(codes, sizes)


def test_bad_queries_raise(index: SIDIndex) -> None:
    with pytest.raises(ValueError):
        index.sid_keys(torch.tensor([[3, 0]]))
    with pytest.raises(ValueError):
        index.is_valid(torch.tensor([[0, 1]]))
    with pytest.raises(ValueError):
        index.items_of(torch.zeros(2, 2, 3, dtype=torch.long))
    assert SIDIndex.build(torch.tensor([[0, 0]]), (2**31, 2**31)).sid_keys(torch.tensor([[2**31 - 1] * 2])).item() \
        == 2**62 - 1


def test_next_codes_is_sparse_valid_next(index: SIDIndex) -> None:
    prefixes = torch.tensor([[[0, 1], [2, 3]], [[1, 1], [-1, 0]]])
    codes, offsets = index.next_codes(prefixes)
    assert codes.tolist() == [0, 2, 1] and offsets.tolist() == [0, 2, 3, 3, 3]
    mask = index.valid_next(prefixes)
    assert mask.shape == (2, 2, 3) and mask.sum().item() == 3 and mask[0, 0].tolist() == [True, False, True]
