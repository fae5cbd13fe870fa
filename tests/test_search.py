"""Beam search and ranking: fast versions equal the loop-based references exactly, ties included."""

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dgi.search.index import SIDIndex
from dgi.search.beam import Beams, beam_search, rank_items, reference_beam_search, reference_rank_items

INF = float("inf")


class TableStep:
    """Log-probs as a fixed function of (query, prefix): a random table indexed by prefix key.

    ``ties`` draws small integers instead of normals, so equal scores are everywhere.
    """

    def __init__(self, sizes: tuple[int, ...], batch: int, g: torch.Generator, ties: bool) -> None:
        self.sizes, self.calls = sizes, []
        self.tables = []
        for j, size in enumerate(sizes):
            shape = (batch, _prod(sizes[:j]), size)
            if ties:
                self.tables.append(torch.randint(-3, 1, shape, generator=g).double())
            else:
                self.tables.append(torch.randn(shape, generator=g, dtype=torch.float64).log_softmax(-1))

    def __call__(self, prefixes: torch.Tensor, parents: torch.Tensor | None = None) -> torch.Tensor:
        self.calls.append(tuple(prefixes.shape))
        keys = torch.zeros(prefixes.shape[:2], dtype=torch.long)
        for level in range(prefixes.shape[-1]):
            keys = keys * self.sizes[level] + prefixes[..., level]
        return self.tables[prefixes.shape[-1]][torch.arange(prefixes.shape[0]).unsqueeze(1), keys]

    def path_score(self, b: int, sid: tuple[int, ...]) -> float:
        """Total log-prob, summed in the same order as the search does."""
        score, key = 0.0, 0
        for j, code in enumerate(sid):
            score += self.tables[j][b, key, code].item()
            key = key * self.sizes[j] + code
        return score


class ParentStep(TableStep):
    """The same table, but each beam's prefix is rebuilt from its parent's (as a caching decoder does):
    its parent's prefix at the previous call plus its own last code. Wrong parents change the result."""

    def __init__(self, table: TableStep) -> None:  # the same tables, its own call log
        self.sizes, self.tables, self.calls = table.sizes, table.tables, []

    def __call__(self, prefixes: torch.Tensor, parents: torch.Tensor | None = None) -> torch.Tensor:
        if prefixes.shape[-1]:
            inherited = self.previous[torch.arange(prefixes.shape[0])[:, None], parents]
            prefixes = torch.cat([inherited, prefixes[..., -1:]], -1)
        self.previous = prefixes
        return super().__call__(prefixes)


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= v
    return out


@st.composite
def problems(draw, ties: bool | None = None):
    depth = draw(st.integers(1, 3))
    sizes = tuple(draw(st.integers(lo, hi)) for lo, hi in ((3, 6), (2, 5), (2, 4))[:depth])
    n_items = draw(st.integers(0, 30))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    codes = torch.stack([torch.randint(k, (n_items,), generator=g) for k in sizes], 1)
    if n_items and draw(st.booleans()):  # force collisions: resample rows with replacement
        codes = codes[torch.randint(n_items, (n_items,), generator=g)]
    batch = draw(st.integers(1, 4))
    ties = draw(st.booleans()) if ties is None else ties
    return SIDIndex.build(codes, sizes), TableStep(sizes, batch, g, ties), batch, draw(st.integers(1, 8)), g


def _assert_beams_equal(a: Beams, b: Beams) -> None:
    assert torch.equal(a.codes, b.codes)
    assert torch.equal(a.scores, b.scores)
    assert len(a.levels) == len(b.levels) and len(a.levels) in (0, a.codes.shape[-1])
    for a_level, b_level in zip(a.levels, b.levels):  # the same kept prefixes, in any order
        assert [_prefix_set(row) for row in a_level] == [_prefix_set(row) for row in b_level]
    if a.levels:
        assert [_prefix_set(row) for row in a.levels[-1]] == [_prefix_set(row) for row in a.codes]


def _prefix_set(rows: torch.Tensor) -> set[tuple[int, ...]]:
    return {tuple(row) for row in rows.tolist() if row[0] >= 0}


def _run_both(index, step, batch, beam, constrained) -> Beams:
    fast = beam_search(step, batch, index, beam, constrained=constrained)
    fast_calls, step.calls = step.calls, []
    ref = reference_beam_search(step, batch, index, beam, constrained=constrained)
    assert fast_calls == step.calls  # same batched calls: one per level, [B, W, j]
    _assert_beams_equal(fast, ref)
    assert fast.codes.shape == (batch, beam, index.depth) and fast.scores.shape == (batch, beam)
    return fast


@settings(max_examples=150, deadline=None)
@given(problems(), st.booleans())
def test_beam_search_matches_reference(problem, constrained) -> None:
    index, step, batch, beam, _ = problem
    beams = _run_both(index, step, batch, beam, constrained)
    assert len(step.calls) <= index.depth
    assert all(shape[0] == batch and shape[2] == j for j, shape in enumerate(step.calls))
    missing = beams.scores == -INF
    assert (beams.codes[missing] == -1).all() and (beams.codes[~missing] >= 0).all()
    if constrained:
        assert index.is_valid(beams.codes[~missing]).all()
    else:
        assert len(step.calls) == index.depth and not missing[:, : min(beam, _prod(index.codebook_sizes))].any()


@settings(max_examples=100, deadline=None)
@given(problems(), st.booleans())
def test_both_searches_name_each_beams_parent(problem, constrained) -> None:
    """A step that trusts the parents it is given scores like one that reads the whole prefix."""
    index, step, batch, beam, _ = problem
    inherit = ParentStep(step)
    for search in (beam_search, reference_beam_search):
        _assert_beams_equal(search(inherit, batch, index, beam, constrained=constrained),
                            search(step, batch, index, beam, constrained=constrained))


@settings(max_examples=80, deadline=None)
@given(problems(ties=True), st.booleans())
def test_beam_search_tie_break_matches_reference(problem, constrained) -> None:
    index, step, batch, beam, _ = problem
    beams = _run_both(index, step, batch, beam, constrained)
    keys = index.sid_keys(beams.codes.clamp(min=0))
    for b in range(batch):  # sorted by (score desc, key asc)
        alive = [(-s, k) for s, k in zip(beams.scores[b].tolist(), keys[b].tolist()) if s > -INF]
        assert alive == sorted(alive)


@settings(max_examples=80, deadline=None)
@given(problems())
def test_wide_constrained_beam_is_exhaustive(problem) -> None:
    index, step, batch, _, _ = problem
    sids = sorted({tuple(s) for s in index.codes.tolist()})
    beam = max(len(sids), 1) + 2
    beams = beam_search(step, batch, index, beam)
    for b in range(batch):
        expected = sorted(sids, key=lambda s: (-step.path_score(b, s), index.sid_keys(torch.tensor(s)).item()))
        n = len(expected)
        assert beams.codes[b, :n].tolist() == [list(s) for s in expected]
        assert beams.scores[b, :n].tolist() == [step.path_score(b, s) for s in expected]
        assert (beams.scores[b, n:] == -INF).all()


def test_beam_search_hand_example() -> None:
    index = SIDIndex.build(torch.tensor([[0, 0], [0, 1], [1, 1], [2, 0]]), (3, 2))
    first = torch.tensor([-1.0, -2.0, -3.0]).log_softmax(0)  # unnormalized scores are fine too
    second = torch.tensor([[-0.1, -5.0], [-0.1, -0.1], [-9.0, -0.2]])  # row = first code

    def step(prefixes: torch.Tensor, parents: torch.Tensor | None) -> torch.Tensor:
        if prefixes.shape[-1] == 0:
            return first.expand(*prefixes.shape[:2], 3)
        return second[prefixes[..., 0]]

    beams = beam_search(step, 1, index, 3)
    # (1,0) and (2,1) are no SIDs, so the weak (0,1) still makes the cut.
    assert beams.codes[0].tolist() == [[0, 0], [1, 1], [0, 1]]
    torch.testing.assert_close(beams.scores[0], first[[0, 1, 0]] + torch.tensor([-0.1, -0.1, -5.0]))
    free = beam_search(step, 1, index, 3, constrained=False)
    assert free.codes[0].tolist() == [[0, 0], [1, 0], [1, 1]]
    assert not index.is_valid(free.codes[0]).all()


def test_beam_search_rejects_bad_arguments() -> None:
    index = SIDIndex.build(torch.tensor([[0, 0]]), (2, 2))
    with pytest.raises(ValueError):
        beam_search(lambda p, _: torch.zeros(*p.shape[:2], 3), 1, index, 2)  # wrong codebook width
    with pytest.raises(ValueError):
        beam_search(lambda p, _: torch.zeros(*p.shape[:2], 2), 1, index, 0)


def test_empty_index_gives_missing_beams() -> None:
    index = SIDIndex.build(torch.empty(0, 2, dtype=torch.long), (2, 2))
    step = lambda p, _: torch.zeros(*p.shape[:2], 2)  # noqa: E731
    for search in (beam_search, reference_beam_search):
        beams = search(step, 2, index, 3)
        assert (beams.codes == -1).all() and (beams.scores == -INF).all()


# ---------------------------------------------------------------- ranking


def _vectors(n: int, d: int, g: torch.Generator, integer: bool) -> torch.Tensor:
    """Integer-valued vectors make every dot product exact (and ties common); else unit vectors."""
    if integer:
        return torch.randint(-1, 2, (n, d), generator=g).double()
    return torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)


@settings(max_examples=150, deadline=None)
@given(problems(), st.booleans(), st.sampled_from(["lexicographic", "fused", "rerank"]),
       st.integers(1, 12), st.sampled_from([0.0, 0.5, 1.0, 3.0]), st.booleans())
def test_rank_items_matches_reference(problem, constrained, rule, k, weight, integer) -> None:
    index, step, batch, beam, g = problem
    beams = beam_search(step, batch, index, beam, constrained=constrained)
    queries, items = _vectors(batch, 4, g, integer), _vectors(index.n_items, 4, g, integer)
    fast = rank_items(beams, index, queries, items, k, rule=rule, fusion_weight=weight)
    ref = reference_rank_items(beams, index, queries, items, k, rule=rule, fusion_weight=weight)
    assert torch.equal(fast.items, ref.items)
    assert torch.equal(fast.beam_scores, ref.beam_scores)
    exact = {"rtol": 0, "atol": 0} if integer else {}
    torch.testing.assert_close(fast.cosines, ref.cosines, equal_nan=True, **exact)
    torch.testing.assert_close(fast.scores, ref.scores, **exact)
    padding = fast.items == -1
    assert fast.cosines[padding].isnan().all() and (fast.scores[padding] == -INF).all()
    assert not padding[:, :-1].gt(padding[:, 1:]).any()  # padding only at the end
    for row in fast.items.tolist():
        real = [i for i in row if i >= 0]
        assert len(real) == len(set(real))


def _rank_example():
    # Beam 0 = SID (1,) holds items 1, 3; beam 1 = SID (0,) holds items 0, 2; beam 2 is missing.
    index = SIDIndex.build(torch.tensor([[0], [1], [0], [1], [2]]), (3,))
    beams = Beams(torch.tensor([[[1], [0], [-1]]]), torch.tensor([[-0.5, -1.0, -INF]]))
    query = torch.tensor([[1.0, 0.0]])
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, 0.6], [1.0, 0.0]])
    return beams, index, query, items


@pytest.mark.parametrize("rule, weight, expected", [
    ("lexicographic", 1.0, [3, 1, 0, 2, -1, -1]),  # beam order first, cosine inside a bucket
    ("fused", 1.0, [3, 0, 2, 1, -1, -1]),          # 0.3, 0.0, -0.4, -0.5
    ("fused", 0.0, [1, 3, 0, 2, -1, -1]),          # beam score only, ties by item id
    ("rerank", 1.0, [0, 3, 2, 1, -1, -1]),         # cosine only; item 4 is in no beam
])
def test_rank_rules_hand_example(rule, weight, expected) -> None:
    beams, index, query, items = _rank_example()
    ranking = rank_items(beams, index, query, items, 6, rule=rule, fusion_weight=weight)
    assert ranking.items[0].tolist() == expected
    cos = {0: 1.0, 1: 0.0, 2: 0.6, 3: 0.8}
    beam_of = {0: -1.0, 1: -0.5, 2: -1.0, 3: -0.5}
    real = [i for i in expected if i >= 0]
    torch.testing.assert_close(ranking.cosines[0, :4], torch.tensor([cos[i] for i in real]))
    torch.testing.assert_close(ranking.beam_scores[0, :4], torch.tensor([beam_of[i] for i in real]))
    final = {"lexicographic": beam_of, "rerank": cos,
             "fused": {i: beam_of[i] + weight * cos[i] for i in real}}[rule]
    torch.testing.assert_close(ranking.scores[0, :4], torch.tensor([final[i] for i in real]))
    assert (ranking.beam_scores[0, 4:] == -INF).all() and ranking.cosines[0, 4:].isnan().all()


def test_rank_items_rejects_bad_arguments() -> None:
    beams, index, query, items = _rank_example()
    with pytest.raises(ValueError):
        rank_items(beams, index, query, items, 3, rule="nope")
    with pytest.raises(ValueError):
        rank_items(beams, index, query, items, 0)
    with pytest.raises(ValueError):
        rank_items(beams, index, query.repeat(2, 1), items, 3)


def test_unconstrained_beams_rank_only_existing_items() -> None:
    index = SIDIndex.build(torch.tensor(list(itertools.product(range(2), range(2))))[:3], (2, 2))
    beams = Beams(torch.tensor([[[1, 1], [0, 1]]]), torch.tensor([[-0.1, -0.2]]))  # (1,1) has no item
    ranking = rank_items(beams, index, torch.ones(1, 2), torch.ones(3, 2), 3)
    assert ranking.items[0].tolist() == [1, -1, -1]
