"""The SID tree's popularity prior (logit adjustment) against counting by hand, and in a retriever's search."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dgi.search.index import SIDIndex
from dgi.search.prior import PopularityPrior


@st.composite
def weighted_indexes(draw) -> tuple[SIDIndex, torch.Tensor, torch.Generator]:
    depth = draw(st.integers(1, 3))
    sizes = tuple(draw(st.integers(2, 5)) for _ in range(depth))
    n_items = draw(st.integers(0, 25))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    codes = torch.stack([torch.randint(k, (n_items,), generator=g) for k in sizes], 1)
    counts = torch.randint(0, 6, (n_items,), generator=g)
    return SIDIndex.build(codes, sizes), counts, g


def reference_log_conditional(index: SIDIndex, counts: torch.Tensor, prefix: tuple[int, ...], code: int) -> float:
    """Slow twin: count the items (each +1) under prefix + (code,) and under prefix; 0 where no item has it."""
    j = len(prefix)
    rows = index.codes.tolist()
    under = sum(c + 1 for sid, c in zip(rows, counts.tolist()) if tuple(sid[: j + 1]) == (*prefix, code))
    total = sum(c + 1 for sid, c in zip(rows, counts.tolist()) if tuple(sid[:j]) == prefix)
    return math.log(under / total) if under else 0.0


@settings(max_examples=60, deadline=None)
@given(weighted_indexes(), st.integers(0, 2))
def test_log_conditional_matches_counting(built, j) -> None:
    index, counts, g = built
    j = min(j, index.depth - 1)
    columns = [torch.randint(-1, k + 1, (3, 4, 1), generator=g) for k in index.codebook_sizes[:j]]
    prefixes = torch.cat([torch.zeros(3, 4, 0, dtype=torch.long), *columns], -1)
    table = PopularityPrior(index, counts).log_conditional(prefixes)
    size = index.codebook_sizes[j]
    assert table.shape == (3, 4, size)
    for row, prefix in zip(table.reshape(12, size).tolist(), prefixes.reshape(12, j).tolist()):
        expected = [reference_log_conditional(index, counts, tuple(prefix), c) for c in range(size)]
        assert row == pytest.approx(expected, abs=1e-6)


@settings(max_examples=40, deadline=None)
@given(weighted_indexes())
def test_levels_telescope_to_the_full_sid_prior(built) -> None:
    """Summed over the levels of an item's SID, the correction is log P_train(SID): its bucket's share."""
    index, counts, _ = built
    prior = PopularityPrior(index, counts)
    total = float((counts + 1).sum())
    for sid in {tuple(row) for row in index.codes.tolist()}:
        summed = sum(float(prior.log_conditional(torch.tensor(sid[:j], dtype=torch.long).view(1, 1, j))[0, 0, sid[j]])
                     for j in range(index.depth))
        bucket = sum(c + 1 for row, c in zip(index.codes.tolist(), counts.tolist()) if tuple(row) == sid)
        assert summed == pytest.approx(math.log(bucket / total), abs=1e-5)


def test_node_mass_sums_items_under_each_node() -> None:
    index = SIDIndex.build(torch.tensor([[0, 1], [0, 2], [1, 0], [0, 1]]), [2, 3])
    mass = index.node_mass(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert [m.tolist() for m in mass] == [[10.0], [7.0, 3.0], [5.0, 2.0, 3.0]]
    codes, nodes, offsets = index.next_nodes(torch.tensor([[0], [1], [-1]]))
    assert (codes.tolist(), nodes.tolist(), offsets.tolist()) == ([1, 2, 0], [0, 1, 2], [0, 2, 3, 3])
    with pytest.raises(ValueError, match="item_weights"):
        index.node_mass(torch.ones(3))


def test_prior_rejects_counts_that_do_not_fit() -> None:
    index = SIDIndex.build(torch.tensor([[0, 1], [1, 0]]), [2, 2])
    with pytest.raises(ValueError, match="one entry per indexed item"):
        PopularityPrior(index, torch.ones(3))
    with pytest.raises(ValueError, match=">= 0"):
        PopularityPrior(index, torch.tensor([1, -1]))
